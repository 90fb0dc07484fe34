use super::*;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const TOKEN: &str = "EAAG-test-token-Zx81";
const SENDER: &str = "106540352242922";

fn settings(base_url: String) -> ClientSettings {
    ClientSettings {
        base_url,
        api_version: "v23.0".into(),
        token: Some(TOKEN.into()),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        max_idle_per_host: 8,
    }
}

fn client(addr: SocketAddr) -> WhatsAppClient {
    WhatsAppClient::new(settings(format!("http://{addr}"))).expect("client")
}

fn body() -> Value {
    serde_json::json!({"messaging_product": "whatsapp", "to": "+5215512345678",
                       "type": "template", "template": {"name": "t", "language": {"code": "en"}}})
}

/// What the server does with each connection.
#[derive(Clone)]
enum Behaviour {
    /// Read the request, answer with this raw HTTP/1.1 response.
    Answer(String),
    /// Read the request and keep the connection open without answering.
    Silent,
    /// Read the request and close the connection without answering.
    Hangup,
    /// Keep the connection open and never read (a server that does not
    /// speak TLS to a TLS client).
    Mute,
    /// Write this garbage as soon as the connection opens.
    Garbage(&'static [u8]),
}

struct Server {
    addr: SocketAddr,
    /// Every request received: head and body as text.
    requests: mpsc::UnboundedReceiver<String>,
}

fn response(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// One send against a server that answers `status` with `body`.
async fn answer(status: &str, content_type: &str, body_text: &str) -> SendResult {
    let server = serve(Behaviour::Answer(response(status, content_type, body_text))).await;
    client(server.addr).send(SENDER, &body()).await
}

async fn serve(behaviour: Behaviour) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Connections held open by Silent/Mute live here.
        let mut parked: Vec<TcpStream> = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            match &behaviour {
                Behaviour::Mute => {
                    parked.push(socket);
                    continue;
                }
                Behaviour::Garbage(bytes) => {
                    let _ = socket.write_all(bytes).await;
                    let _ = socket.flush().await;
                    parked.push(socket);
                    continue;
                }
                _ => {}
            }
            let Some(request) = read_request(&mut socket).await else {
                continue;
            };
            let _ = tx.send(request);
            match &behaviour {
                Behaviour::Answer(raw) => {
                    let _ = socket.write_all(raw.as_bytes()).await;
                    let _ = socket.shutdown().await;
                }
                Behaviour::Silent => parked.push(socket),
                _ => drop(socket),
            }
        }
    });
    Server { addr, requests }
}

/// Reads one HTTP/1.1 request with a Content-Length body.
async fn read_request(socket: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = socket.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(String::from_utf8_lossy(&buf).to_string());
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn graph_error(code: i64, message: &str) -> String {
    serde_json::json!({"error": {
        "message": format!("(#{code}) {message}"),
        "type": "OAuthException",
        "code": code,
        "error_subcode": 2494010,
        "error_data": {"messaging_product": "whatsapp", "details": format!("details of {code}")},
        "error_user_title": "A title",
        "fbtrace_id": "AI5Ob5gDh7tZbkGvzt2rEpn"
    }})
    .to_string()
}

#[tokio::test]
async fn success_is_accepted_with_the_wamid() {
    let ok = r#"{"messaging_product":"whatsapp",
                 "contacts":[{"input":"+5215512345678","wa_id":"5215512345678"}],
                 "messages":[{"id":"wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA",
                              "message_status":"accepted"}]}"#;
    let result = answer("200 OK", "application/json", ok).await;
    assert_eq!(
        result,
        SendResult::Accepted {
            wamid: "wamid.HBgLMTY1MDUwNzY1MjAVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA".into(),
            message_status: Some("accepted".into()),
        }
    );
    assert_eq!(result.label(), "accepted");
}

#[tokio::test]
async fn message_status_is_optional_and_kept_when_present() {
    let ok = r#"{"messages":[{"id":"wamid.A"}]}"#;
    let result = answer("200 OK", "application/json", ok).await;
    assert_eq!(
        result,
        SendResult::Accepted {
            wamid: "wamid.A".into(),
            message_status: None
        }
    );

    let held = r#"{"messages":[{"id":"wamid.B","message_status":"held_for_quality_assessment"}]}"#;
    let server = serve(Behaviour::Answer(response(
        "200 OK",
        "application/json",
        held,
    )))
    .await;
    let bytes = Bytes::from(serde_json::to_vec(&body()).expect("json"));
    let result = client(server.addr).send_raw(SENDER, bytes).await;
    assert_eq!(
        result,
        SendResult::Accepted {
            wamid: "wamid.B".into(),
            message_status: Some("held_for_quality_assessment".into())
        }
    );
}

#[tokio::test]
async fn request_carries_path_bearer_token_and_body() {
    let ok = r#"{"messages":[{"id":"wamid.A"}]}"#;
    let mut server = serve(Behaviour::Answer(response(
        "200 OK",
        "application/json",
        ok,
    )))
    .await;
    let base = format!("http://{}/", server.addr);
    let client = WhatsAppClient::new(settings(base)).expect("client");
    let sent = body();
    assert!(matches!(
        client.send(SENDER, &sent).await,
        SendResult::Accepted { .. }
    ));
    let request = server.requests.recv().await.expect("a request");
    let (head, payload) = request.split_once("\r\n\r\n").expect("head and body");
    let head_lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with(&format!("POST /v23.0/{SENDER}/messages HTTP/1.1")),
        "{head}"
    );
    let authorization = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_string())
    });
    assert_eq!(authorization, Some(format!("Bearer {TOKEN}")), "{head}");
    assert!(
        head_lower.contains("content-type: application/json"),
        "{head}"
    );
    let received: Value = serde_json::from_str(payload).expect("json body");
    assert_eq!(received, sent);
}

#[tokio::test]
async fn without_a_token_no_authorization_header_is_sent() {
    let ok = r#"{"messages":[{"id":"wamid.A"}]}"#;
    let mut server = serve(Behaviour::Answer(response(
        "200 OK",
        "application/json",
        ok,
    )))
    .await;
    let client = WhatsAppClient::new(ClientSettings {
        token: None,
        ..settings(format!("http://{}", server.addr))
    })
    .expect("client");
    client.send(SENDER, &body()).await;
    let request = server.requests.recv().await.expect("a request");
    assert!(
        !request.to_ascii_lowercase().contains("authorization:"),
        "{request}"
    );
}

#[tokio::test]
async fn each_error_class_from_a_graph_error_body() {
    let cases = [
        (131026, "Message undeliverable", ErrorClass::Contact),
        (130429, "Rate limit hit", ErrorClass::Throttled),
        (
            132001,
            "Template name does not exist in the translation",
            ErrorClass::Campaign,
        ),
        (190, "Access token has expired", ErrorClass::Sender),
        (
            131049,
            "This message was not delivered to maintain healthy ecosystem engagement",
            ErrorClass::Deferred,
        ),
        (
            132000,
            "Number of parameters does not match the expected number of params",
            ErrorClass::Data,
        ),
    ];
    for (code, message, class) in cases {
        let raw = response(
            "400 Bad Request",
            "application/json",
            &graph_error(code, message),
        );
        let server = serve(Behaviour::Answer(raw)).await;
        let result = client(server.addr).send(SENDER, &body()).await;
        let SendResult::Rejected {
            http_status,
            error,
            class: got,
        } = result
        else {
            panic!("code {code}: {result:?}");
        };
        assert_eq!(http_status, 400, "code {code}");
        assert_eq!(got, class, "code {code}");
        assert_eq!(
            error,
            ApiError {
                code: Some(code),
                subcode: Some(2494010),
                title: Some("A title".into()),
                message: format!("(#{code}) {message}"),
                details: Some(format!("details of {code}")),
                fbtrace_id: Some("AI5Ob5gDh7tZbkGvzt2rEpn".into()),
            }
        );
        assert!(
            error.describe().contains(describe_code(code)),
            "{}",
            error.describe()
        );
    }
}

#[tokio::test]
async fn throttling_by_http_status() {
    // 429 carrying Meta's code, and a bare 429 from something in front.
    let raw = response(
        "429 Too Many Requests",
        "application/json",
        &graph_error(130429, "Rate limit hit"),
    );
    let server = serve(Behaviour::Answer(raw)).await;
    let result = client(server.addr).send(SENDER, &body()).await;
    assert_eq!(result.class(), Some(ErrorClass::Throttled));

    let result = answer("429 Too Many Requests", "text/plain", "").await;
    let SendResult::Rejected {
        http_status,
        error,
        class,
    } = result
    else {
        panic!("{result:?}");
    };
    assert_eq!(
        (http_status, class, error.code),
        (429, ErrorClass::Throttled, None)
    );
}

#[tokio::test]
async fn server_error_with_html_is_transient() {
    let html = "<html><body><h1>500 Internal Server Error</h1>\n<p>Sorry, something went wrong.</p></body></html>";
    let result = answer("500 Internal Server Error", "text/html", html).await;
    let SendResult::Rejected {
        http_status,
        error,
        class,
    } = result
    else {
        panic!("{result:?}");
    };
    assert_eq!(http_status, 500);
    assert_eq!(class, ErrorClass::Transient);
    assert_eq!(error.code, None);
    assert!(error.message.contains("http 500"), "{}", error.message);
    assert!(
        error.message.contains("Internal Server Error"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn gateway_timeout_without_api_body_is_unknown() {
    let result = answer("504 Gateway Timeout", "text/html", "<html>504</html>").await;
    assert!(matches!(result, SendResult::Unknown { .. }), "{result:?}");
}

#[tokio::test]
async fn unauthorised_without_api_body_halts_the_sender() {
    let result = answer("401 Unauthorized", "text/plain", "no").await;
    assert_eq!(result.class(), Some(ErrorClass::Sender), "{result:?}");
}

#[tokio::test]
async fn lenient_error_bodies() {
    // A code sent as a string, no subcode, details only in error_user_msg.
    let body_text = r#"{"error":{"message":"(#131056) pair rate limit hit","code":"131056",
                                   "error_user_msg":"too many messages to this user"}}"#;
    let result = answer("400 Bad Request", "application/json", body_text).await;
    let SendResult::Rejected { error, class, .. } = result else {
        panic!("{result:?}");
    };
    assert_eq!(class, ErrorClass::Throttled);
    assert_eq!(error.code, Some(131056));
    assert_eq!(
        error.details.as_deref(),
        Some("too many messages to this user")
    );

    // An unlisted code on a 503 is a fault at Meta, not a bad contact.
    let result = answer(
        "503 Service Unavailable",
        "application/json",
        &graph_error(999_999, "mystery"),
    )
    .await;
    assert_eq!(result.class(), Some(ErrorClass::Transient), "{result:?}");
}

#[tokio::test]
async fn unparseable_success_is_unknown() {
    for text in [
        "not json",
        r#"{"messages":[]}"#,
        r#"{"messages":[{"id":""}]}"#,
        "",
    ] {
        let result = answer("200 OK", "application/json", text).await;
        assert!(
            matches!(result, SendResult::Unknown { .. }),
            "{text:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn oversized_success_body_is_unknown() {
    let huge = format!(
        r#"{{"messages":[{{"id":"wamid.A"}}],"pad":"{}"}}"#,
        "x".repeat(MAX_RESPONSE_BYTES)
    );
    let result = answer("200 OK", "application/json", &huge).await;
    assert!(matches!(result, SendResult::Unknown { .. }), "{result:?}");
}

#[tokio::test]
async fn connection_refused_is_not_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let result = client(addr).send(SENDER, &body()).await;
    let SendResult::NotSent { reason } = &result else {
        panic!("{result:?}");
    };
    assert!(reason.to_ascii_lowercase().contains("refused"), "{reason}");
}

#[tokio::test]
async fn tls_handshake_failure_is_not_sent() {
    let server = serve(Behaviour::Garbage(
        b"HTTP/1.1 400 Bad Request\r\n\r\nthis is not tls",
    ))
    .await;
    let client = WhatsAppClient::new(settings(format!("https://{}", server.addr))).expect("client");
    let result = client.send(SENDER, &body()).await;
    assert!(matches!(result, SendResult::NotSent { .. }), "{result:?}");
}

#[tokio::test]
async fn connect_timeout_is_not_sent() {
    // TCP connects but the TLS handshake never completes.
    let server = serve(Behaviour::Mute).await;
    let client = WhatsAppClient::new(ClientSettings {
        connect_timeout: Duration::from_millis(200),
        request_timeout: Duration::from_secs(10),
        ..settings(format!("https://{}", server.addr))
    })
    .expect("client");
    let result = client.send(SENDER, &body()).await;
    let SendResult::NotSent { reason } = &result else {
        panic!("{result:?}");
    };
    assert!(reason.contains("timed out"), "{reason}");
}

#[tokio::test]
async fn no_answer_after_the_request_was_written_is_unknown() {
    let mut server = serve(Behaviour::Silent).await;
    let client = WhatsAppClient::new(ClientSettings {
        connect_timeout: Duration::from_millis(100),
        request_timeout: Duration::from_millis(300),
        ..settings(format!("http://{}", server.addr))
    })
    .expect("client");
    let result = client.send(SENDER, &body()).await;
    let SendResult::Unknown { reason } = &result else {
        panic!("{result:?}");
    };
    assert!(reason.contains("timeout"), "{reason}");
    // The server did receive it: exactly why it must not be resent.
    assert!(server.requests.recv().await.is_some());
}

#[tokio::test]
async fn hangup_after_the_request_was_written_is_unknown() {
    let server = serve(Behaviour::Hangup).await;
    let result = client(server.addr).send(SENDER, &body()).await;
    assert!(matches!(result, SendResult::Unknown { .. }), "{result:?}");
}

#[tokio::test]
async fn an_invalid_sender_id_is_never_posted() {
    let mut server = serve(Behaviour::Silent).await;
    let client = client(server.addr);
    for id in ["", "..", "123/../../me", "12?x=1", "1 2"] {
        let result = client.send(id, &body()).await;
        assert!(
            matches!(result, SendResult::NotSent { .. }),
            "{id:?}: {result:?}"
        );
    }
    assert!(server.requests.try_recv().is_err());
}

#[test]
fn debug_never_shows_the_token() {
    let settings = settings("http://127.0.0.1:9".into());
    let shown = format!("{settings:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
    let client = WhatsAppClient::new(settings).expect("client");
    let shown = format!("{client:?} {client:#?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("127.0.0.1:9/v23.0"), "{shown}");
}

#[test]
fn invalid_settings_are_refused() {
    let base = || settings("https://graph.facebook.com".into());
    let cases = [
        ClientSettings {
            base_url: "graph.facebook.com".into(),
            ..base()
        },
        ClientSettings {
            base_url: "ftp://graph.facebook.com".into(),
            ..base()
        },
        ClientSettings {
            api_version: "".into(),
            ..base()
        },
        ClientSettings {
            api_version: "v23.0/x".into(),
            ..base()
        },
        ClientSettings {
            token: Some("".into()),
            ..base()
        },
        ClientSettings {
            token: Some("line\nbreak".into()),
            ..base()
        },
        ClientSettings {
            connect_timeout: Duration::from_secs(5),
            ..base()
        },
        ClientSettings {
            connect_timeout: Duration::ZERO,
            ..base()
        },
    ];
    for settings in cases {
        let shown = format!("{settings:?}");
        let err = WhatsAppClient::new(settings).expect_err(&shown);
        let message = err.to_string();
        assert!(message.starts_with("whatsapp client: "), "{message}");
        assert!(!message.contains("line\nbreak"), "{message}");
    }
    assert!(WhatsAppClient::new(base()).is_ok());
}

#[test]
fn describe_names_the_code_and_details() {
    let error = ApiError {
        code: Some(131026),
        subcode: None,
        title: None,
        message: "(#131026) Message undeliverable".into(),
        details: Some("Message Undeliverable.".into()),
        fbtrace_id: None,
    };
    assert_eq!(
        error.describe(),
        "error 131026 (not a WhatsApp user or not on a supported version): (#131026) Message undeliverable (details: Message Undeliverable.)"
    );
    assert_eq!(error.to_string(), error.describe());
    let bare = ApiError::without_body("http 500 without an api error body: oops".into());
    assert_eq!(bare.describe(), "http 500 without an api error body: oops");
}
