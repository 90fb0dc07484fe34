//! The HTTP client for `POST {base}/{version}/{phone_number_id}/messages`
//! and what its outcome means for the contact.
//!
//! WhatsApp has no idempotency key: a message whose request reached Meta
//! may have been sent even when no answer came back, and sending it again
//! would reach the customer twice. So [`SendResult`] keeps four outcomes
//! apart (docs/ARCHITECTURE.md, "Error classes"):
//!
//! - [`SendResult::Accepted`]: 2xx with `messages[0].id` (the wamid).
//! - [`SendResult::Rejected`]: Meta (or something in front of it) answered
//!   with an error; the [`ErrorClass`] says what dispatch does next.
//! - [`SendResult::NotSent`]: the request provably never left, safe to
//!   retry.
//! - [`SendResult::Unknown`]: it may have been sent; never resent
//!   automatically, settled by a later status webhook.
//!
//! # Telling "not sent" from "unknown" with reqwest
//!
//! reqwest reports every transport failure as one error type; its
//! `is_connect()` is true when the failure happened while the connection
//! was being set up: DNS resolution, TCP connect (refused, unreachable),
//! the TLS handshake, a proxy CONNECT, or the connect timeout
//! (`connect_timeout` wraps all of these). No byte of the request is
//! written before a connection exists, so those are [`SendResult::NotSent`].
//! Everything else (the request timeout firing after the connection was up,
//! a reset or close while writing or waiting for the response, a broken
//! response body) may have happened after Meta read the request, so it is
//! [`SendResult::Unknown`].
//!
//! Limits of that split, and what covers them:
//!
//! - A pooled keep-alive connection that turns out to be dead. hyper
//!   retries a request on a fresh connection, whatever its method, only
//!   when the pooled connection failed before any of the request was
//!   written; reqwest's default retry policy adds HTTP/2 `REFUSED_STREAM`
//!   and `GOAWAY(NO_ERROR)`, which by RFC 9113 §8.7 mean the server did not
//!   process the stream. Those retries are invisible here and safe. Once
//!   writing began, a reset surfaces as a request error that is not
//!   `is_connect()`, and is classified [`SendResult::Unknown`], even if the
//!   server in fact never read it (the kernel accepted our bytes just as
//!   the server closed an idle connection). Idle connections are dropped
//!   after [`POOL_IDLE_TIMEOUT`], before the usual server keep-alive, to
//!   keep that race rare.
//! - The request timeout also runs during connect. If it fired first, the
//!   error would not be `is_connect()` and a never-sent request would be
//!   `unknown`; [`WhatsAppClient::new`] therefore requires
//!   `connect_timeout < request_timeout`.
//! - A gateway error (HTTP 502, 504) without a Graph API error body means
//!   an intermediary lost the answer of a request that may have reached
//!   the API: [`SendResult::Unknown`], not a transient error to retry.
//! - Redirects are not followed: a 307/308 would send the same POST a
//!   second time to another address.
//!
//! The access token is sent as `Authorization: Bearer …`, marked sensitive
//! in the HTTP layer, and never printed: neither [`ClientSettings`] nor
//! [`WhatsAppClient`] shows it in `Debug`, and no log line contains it.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{redirect, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::domain::{classify_code, classify_http, describe_code, ErrorClass};

/// How long an idle pooled connection is kept. Below the 5 s keep-alive
/// of actix-web (the sandbox) and of many servers, so that the client
/// retires a connection before the server closes it under a request (see
/// the module docs); at campaign rates connections are never idle this
/// long, and a slower sender pays one handshake per message at worst.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Largest response body read. A send response is a few hundred bytes and
/// a Graph error a few kilobytes; anything bigger is not an answer we can
/// use, and reading it unbounded would let a broken proxy exhaust memory.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Longest excerpt of a non-JSON error body kept in [`ApiError::message`].
const BODY_EXCERPT_CHARS: usize = 200;

/// How to reach the Cloud API.
#[derive(Clone)]
pub struct ClientSettings {
    /// Scheme, host and optional path prefix, e.g. `https://graph.facebook.com`
    /// (or the sandbox's `http://127.0.0.1:8090`). A trailing '/' is ignored.
    pub base_url: String,
    /// Graph API version, one path segment, e.g. `v23.0`.
    pub api_version: String,
    /// Access token sent as `Authorization: Bearer <token>`; `None` sends no
    /// `Authorization` header (the sandbox needs none).
    pub token: Option<String>,
    /// Limit for DNS + TCP connect + TLS handshake. Must be shorter than
    /// `request_timeout`.
    pub connect_timeout: Duration,
    /// Limit for the whole request: connect, write, response and body.
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept per host (HTTP/1.1; an HTTP/2
    /// connection carries all requests at once).
    pub max_idle_per_host: usize,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("base_url", &self.base_url)
            .field("api_version", &self.api_version)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_idle_per_host", &self.max_idle_per_host)
            .finish()
    }
}

/// Settings that cannot make a client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Not an absolute http(s) URL.
    #[error("whatsapp client: base url \"{0}\" is not an http or https url")]
    BaseUrl(String),
    /// Empty, or more than one path segment.
    #[error("whatsapp client: api version \"{0}\" must be one path segment like v23.0")]
    ApiVersion(String),
    /// The token cannot be sent in an HTTP header. The token itself is
    /// not repeated in the message.
    #[error(
        "whatsapp client: access token is empty or has characters an http header cannot carry"
    )]
    Token,
    /// Zero, or a connect timeout that the request timeout would preempt
    /// (a connect failure would then be reported as `unknown`).
    #[error("whatsapp client: connect timeout {connect:?} must be above zero and shorter than the request timeout {request:?}")]
    Timeouts {
        /// The connect timeout given.
        connect: Duration,
        /// The request timeout given.
        request: Duration,
    },
    /// reqwest refused the configuration (e.g. no TLS backend).
    #[error("whatsapp client: cannot build the http client")]
    Build(#[source] reqwest::Error),
}

/// An error answer: a Graph API error body, or what we know of a response
/// without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// `error.code`; `None` when the body was not a Graph API error.
    pub code: Option<i64>,
    /// `error.error_subcode`.
    pub subcode: Option<i64>,
    /// `error.error_user_title`.
    pub title: Option<String>,
    /// `error.message`, or a description of the response that had no
    /// Graph API error body.
    pub message: String,
    /// `error.error_data.details` (Meta's most specific explanation), else
    /// `error.error_user_msg`.
    pub details: Option<String>,
    /// `error.fbtrace_id`, for Meta support.
    pub fbtrace_id: Option<String>,
}

impl ApiError {
    /// One line for logs, alerts and reports:
    /// `error 131026 (not a WhatsApp user or not on a supported version): Message undeliverable (details: ...)`.
    pub fn describe(&self) -> String {
        let mut out = match self.code {
            Some(code) => format!("error {code} ({}): {}", describe_code(code), self.message),
            None => self.message.clone(),
        };
        if let Some(subcode) = self.subcode {
            out.push_str(&format!(" [subcode {subcode}]"));
        }
        if let Some(details) = self.details.as_deref().filter(|d| !d.is_empty()) {
            out.push_str(&format!(" (details: {details})"));
        }
        out
    }

    /// Reads `{"error": {...}}`. `None` when the body has no `error` object.
    fn from_body(body: &Value) -> Option<ApiError> {
        let err = body.get("error")?.as_object()?;
        let text = |key: &str| {
            err.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        // Graph sends `error_data` as an object; older responses and some
        // proxies put a plain string there.
        let details = match err.get("error_data") {
            Some(Value::Object(data)) => data
                .get("details")
                .and_then(Value::as_str)
                .map(str::to_string),
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        }
        .or_else(|| text("error_user_msg"));
        Some(ApiError {
            code: integer(err.get("code")),
            subcode: integer(err.get("error_subcode")),
            title: text("error_user_title").or_else(|| text("title")),
            message: text("message").unwrap_or_default(),
            details,
            fbtrace_id: text("fbtrace_id"),
        })
    }

    fn without_body(message: String) -> ApiError {
        ApiError {
            code: None,
            subcode: None,
            title: None,
            message,
            details: None,
            fbtrace_id: None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A JSON integer, or a string of one (some gateways in front of the Cloud
/// API re-encode codes as strings).
fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The outcome of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Meta took the message: `messages[0].id` of a 2xx answer.
    Accepted {
        /// The message id (`wamid.…`) that status webhooks carry.
        wamid: String,
        /// `messages[0].message_status` when present: `accepted`,
        /// `held_for_quality_assessment` or `paused` (marketing pacing).
        message_status: Option<String>,
    },
    /// An error answer. Nothing was sent.
    Rejected {
        /// The HTTP status of the answer.
        http_status: u16,
        /// What the answer said.
        error: ApiError,
        /// What dispatch does next.
        class: ErrorClass,
    },
    /// The request never reached the server (DNS, refused, connect timeout,
    /// TLS handshake, invalid request): safe to send again.
    NotSent {
        /// What failed, for logs.
        reason: String,
    },
    /// The request may have reached the server but no usable answer came
    /// back: must never be resent automatically (`unknown`;
    /// docs/ARCHITECTURE.md, "Error classes").
    Unknown {
        /// What failed, for logs.
        reason: String,
    },
}

impl SendResult {
    /// The error class of a rejection.
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            SendResult::Rejected { class, .. } => Some(*class),
            _ => None,
        }
    }

    /// A short lowercase name for logs and metric labels: `accepted`,
    /// `rejected`, `not_sent`, `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            SendResult::Accepted { .. } => "accepted",
            SendResult::Rejected { .. } => "rejected",
            SendResult::NotSent { .. } => "not_sent",
            SendResult::Unknown { .. } => "unknown",
        }
    }
}

/// A Cloud API client: one connection pool shared by every clone.
#[derive(Clone)]
pub struct WhatsAppClient {
    http: reqwest::Client,
    /// `{base_url}/{api_version}`, no trailing '/'.
    base: Arc<str>,
    /// `Bearer <token>`, marked sensitive so the HTTP layer never prints it.
    auth: Option<HeaderValue>,
    request_timeout: Duration,
}

impl fmt::Debug for WhatsAppClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhatsAppClient")
            .field("base", &self.base)
            .field("auth", &self.auth.as_ref().map(|_| "Bearer <redacted>"))
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl WhatsAppClient {
    /// Builds the client: rustls, a keep-alive pool of at most
    /// `max_idle_per_host` idle connections per host, HTTP/2 when the
    /// server offers it through ALPN (HTTP/1.1 otherwise), `TCP_NODELAY`
    /// (a request is one small write; Nagle would hold it back).
    pub fn new(settings: ClientSettings) -> Result<WhatsAppClient, ClientError> {
        let base_url = settings.base_url.trim().trim_end_matches('/');
        let parsed = Url::parse(base_url).map_err(|_| ClientError::BaseUrl(base_url.into()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(ClientError::BaseUrl(base_url.into()));
        }
        let version = settings.api_version.trim();
        if !is_path_segment(version) {
            return Err(ClientError::ApiVersion(settings.api_version.clone()));
        }
        let (connect, request) = (settings.connect_timeout, settings.request_timeout);
        if connect.is_zero() || connect >= request {
            return Err(ClientError::Timeouts { connect, request });
        }
        let auth = match settings.token.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(ClientError::Token),
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| ClientError::Token)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(connect)
            .timeout(request)
            .pool_max_idle_per_host(settings.max_idle_per_host)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .redirect(redirect::Policy::none())
            .user_agent(concat!("wadispatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Build)?;
        Ok(WhatsAppClient {
            http,
            base: Arc::from(format!("{base_url}/{version}")),
            auth,
            request_timeout: request,
        })
    }

    /// Sends a message body (e.g. from
    /// [`crate::whatsapp::template_message`]) from `phone_number_id`.
    pub async fn send(&self, phone_number_id: &str, body: &Value) -> SendResult {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.send_raw(phone_number_id, Bytes::from(bytes)).await,
            // A Value always serialises; kept total rather than panicking.
            Err(e) => SendResult::NotSent {
                reason: format!("message body cannot be serialised: {e}"),
            },
        }
    }

    /// Sends a pre-serialised JSON body (the hot path: see
    /// [`crate::whatsapp::template_message_bytes`]).
    pub async fn send_raw(&self, phone_number_id: &str, body: Bytes) -> SendResult {
        // The id becomes a path segment: anything else ('/', '?', '..')
        // would post the message to another endpoint.
        if !is_path_segment(phone_number_id) {
            return SendResult::NotSent {
                reason: format!(
                    "phone_number_id \"{}\" is not a valid id (letters, digits, '_', '-', '.')",
                    phone_number_id.escape_debug()
                ),
            };
        }
        let url = format!("{}/{phone_number_id}/messages", self.base);
        let mut request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return self.transport_failure(phone_number_id, &e),
        };
        let status = response.status().as_u16();
        match read_limited(response, MAX_RESPONSE_BYTES).await {
            Ok(body) => interpret(status, &body),
            Err(e) => self.body_failure(phone_number_id, status, &e),
        }
    }

    fn transport_failure(&self, sender: &str, e: &reqwest::Error) -> SendResult {
        let chain = error_chain(e);
        if e.is_connect() || e.is_builder() {
            tracing::debug!(sender, error = %chain, "whatsapp send: not sent");
            SendResult::NotSent {
                reason: format!("connection not established: {chain}"),
            }
        } else {
            tracing::debug!(sender, error = %chain, "whatsapp send: outcome unknown");
            let reason = if e.is_timeout() {
                format!(
                    "no answer within the request timeout of {:?}: {chain}",
                    self.request_timeout
                )
            } else {
                format!("request failed after the connection was established: {chain}")
            };
            SendResult::Unknown { reason }
        }
    }

    /// The status line arrived but the body did not.
    fn body_failure(&self, sender: &str, status: u16, e: &reqwest::Error) -> SendResult {
        let chain = error_chain(e);
        tracing::debug!(sender, status, error = %chain, "whatsapp send: response body lost");
        let message = format!("http {status}, response body could not be read: {chain}");
        match status_fallback(status) {
            // The body of an accepted message holds the wamid; without it
            // the message may have been sent.
            Fallback::Unknown => SendResult::Unknown { reason: message },
            Fallback::Class(class) => SendResult::Rejected {
                http_status: status,
                error: ApiError::without_body(message),
                class,
            },
        }
    }
}

/// What a response means, given its status and (bounded) body.
fn interpret(status: u16, body: &Body) -> SendResult {
    let json: Option<Value> = if body.truncated {
        None
    } else {
        serde_json::from_slice(&body.bytes).ok()
    };
    if (200..300).contains(&status) {
        return match json.as_ref().and_then(accepted_message) {
            Some((wamid, message_status)) => SendResult::Accepted {
                wamid,
                message_status,
            },
            None => SendResult::Unknown {
                reason: format!(
                    "http {status} without messages[0].id: {}",
                    excerpt(&body.bytes, body.truncated)
                ),
            },
        };
    }
    if let Some(error) = json.as_ref().and_then(ApiError::from_body) {
        let class = match (error.code.map(classify_code), classify_http(status)) {
            // An unlisted code lands in Data (final for the contact); when
            // the status says throttled or a fault at Meta, trust that
            // rather than failing a contact for good on a passing fault.
            (Some(ErrorClass::Data), Some(by_status)) => by_status,
            (Some(by_code), _) => by_code,
            (None, _) => match status_fallback(status) {
                Fallback::Class(class) => class,
                // A Graph error body is an answer from the API itself: the
                // request was refused, whatever the status.
                Fallback::Unknown => ErrorClass::Transient,
            },
        };
        return SendResult::Rejected {
            http_status: status,
            error,
            class,
        };
    }
    let message = format!(
        "http {status} without an api error body: {}",
        excerpt(&body.bytes, body.truncated)
    );
    match status_fallback(status) {
        Fallback::Unknown => SendResult::Unknown { reason: message },
        Fallback::Class(class) => SendResult::Rejected {
            http_status: status,
            error: ApiError::without_body(message),
            class,
        },
    }
}

/// `messages[0].id` and `messages[0].message_status` of a send response.
fn accepted_message(body: &Value) -> Option<(String, Option<String>)> {
    let message = body.get("messages")?.get(0)?;
    let wamid = message.get("id")?.as_str().filter(|id| !id.is_empty())?;
    let status = message
        .get("message_status")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((wamid.to_string(), status))
}

enum Fallback {
    Class(ErrorClass),
    Unknown,
}

/// The meaning of a status without a usable Graph API error body.
fn status_fallback(status: u16) -> Fallback {
    match status {
        // Success without a wamid, or a gateway that lost the API's answer:
        // the message may have been sent.
        200..=299 | 502 | 504 => Fallback::Unknown,
        // Credentials, permissions, or a base URL / version / sender id
        // that points nowhere: every send from this sender fails alike.
        300..=399 | 401 | 403 | 404 => Fallback::Class(ErrorClass::Sender),
        // The server gave up reading the request: it was not processed.
        408 => Fallback::Class(ErrorClass::Transient),
        // 429 throttled, other 5xx a fault at Meta; anything else is final
        // for this contact, as an unlisted error code is.
        _ => Fallback::Class(classify_http(status).unwrap_or(ErrorClass::Data)),
    }
}

struct Body {
    bytes: Vec<u8>,
    /// More than [`MAX_RESPONSE_BYTES`] arrived; `bytes` holds the start.
    truncated: bool,
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> reqwest::Result<Body> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Body {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        bytes,
        truncated: false,
    })
}

/// The start of a body, on one line, for an error message.
fn excerpt(bytes: &[u8], truncated: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(BODY_EXCERPT_CHARS)
        .collect();
    if out.is_empty() {
        out.push_str("(empty body)");
    } else if truncated || text.chars().count() > BODY_EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// reqwest's Display names only the outermost error ("error sending
/// request"); the cause ("connection refused") is further down the chain.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A non-empty URL path segment that needs no escaping and cannot climb
/// the path: letters, digits, '_', '-', '.', not "." or "..".
fn is_path_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
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

        let held =
            r#"{"messages":[{"id":"wamid.B","message_status":"held_for_quality_assessment"}]}"#;
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
        let client =
            WhatsAppClient::new(settings(format!("https://{}", server.addr))).expect("client");
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
}
