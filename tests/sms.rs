//! The SMS channel against the sandbox's SMS API: each answer classified
//! (accepted, rejected, throttled, a wrong key, never sent, unknown), and a
//! delivery report posted by the sandbox to the webhook listener's
//! `/sms/reports` updating the journey step that sent it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use wadispatch::domain::{ContactKey, DispatchState, Edge, ErrorClass, FrozenStep, On, StepParams};
use wadispatch::ingest::catalog::CampaignCatalog;
use wadispatch::sandbox::{Sandbox, SandboxConfig, SandboxHandle};
use wadispatch::sms::payload::{destination, request_bytes};
use wadispatch::sms::{SmsClient, SmsMessage, SmsResult, SmsSettings};
use wadispatch::store::embedded::{Durability, EmbeddedStore};
use wadispatch::store::*;
use wadispatch::webhook::{BasicAuth, WebhookProcessor, WebhookSettings};
use wadispatch::whatsapp::payload::step_callback_data;

const KEY: &str = "sandbox-sms-key";

async fn sandbox(per_sender: f64) -> SandboxHandle {
    Sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sms_api_key: Some(KEY.into()),
        sms_per_sender_mps: per_sender,
        status_delay_ms: 20,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn client(base: &str, key: &str, request_timeout: Duration) -> SmsClient {
    SmsClient::new(SmsSettings {
        base_url: base.into(),
        api_key: key.into(),
        connect_timeout: Duration::from_millis(200),
        request_timeout,
    })
    .unwrap()
}

fn body(to: &str, notify_url: Option<&str>, callback: &str) -> bytes::Bytes {
    request_bytes(&SmsMessage {
        from: "InfoSMS",
        to,
        text: "Hola",
        notify_url,
        callback_data: callback,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_sms_api_is_classified() {
    let sb = sandbox(2.0).await;
    let sms = client(&sb.base_url(), KEY, Duration::from_secs(2));
    let accepted = sms
        .send(body("525500000001", None, "c|+525500000001"))
        .await;
    assert!(
        matches!(accepted, SmsResult::Accepted { .. }),
        "{accepted:?}"
    );
    // 77: refused in the answer, final for the contact.
    match sms
        .send(body("525500000077", None, "c|+525500000077"))
        .await
    {
        SmsResult::Rejected { class, code, .. } => {
            assert_eq!((class, code), (ErrorClass::Contact, Some(52)))
        }
        other => panic!("{other:?}"),
    }
    // Two per second from one sender id: the next is throttled, unsent.
    match sms
        .send(body("525500000002", None, "c|+525500000002"))
        .await
    {
        SmsResult::Rejected { class, .. } => assert_eq!(class, ErrorClass::Throttled),
        other => panic!("{other:?}"),
    }
    // A wrong key halts the sender.
    let wrong = client(&sb.base_url(), "nope", Duration::from_secs(2));
    match wrong
        .send(body("525500000003", None, "c|+525500000003"))
        .await
    {
        SmsResult::Rejected {
            class,
            code,
            message,
        } => {
            assert_eq!((class, code), (ErrorClass::Sender, Some(401)));
            assert!(message.contains("UNAUTHORIZED"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let stats = sb.stats().sms;
    assert_eq!(
        (
            stats.accepted,
            stats.rejected,
            stats.throttled,
            stats.unauthorized
        ),
        (1, 1, 1, 1)
    );

    // Nothing listens: never sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = client(
        &format!("http://127.0.0.1:{port}"),
        KEY,
        Duration::from_secs(2),
    );
    assert!(matches!(
        closed.send(body("525500000004", None, "c|x")).await,
        SmsResult::NotSent { .. }
    ));
    // A server that reads the request and never answers: unknown.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = std::thread::spawn(move || {
        let (conn, _) = silent.accept().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        drop(conn);
    });
    let mute = client(&format!("http://{addr}"), KEY, Duration::from_millis(500));
    assert!(matches!(
        mute.send(body("525500000005", None, "c|x")).await,
        SmsResult::Unknown { .. }
    ));
    hold.join().unwrap();
}

/// A contact of a journey whose WhatsApp primary failed, moved to its SMS
/// fallback and claimed there, as the pump does.
async fn at_the_sms_step(store: &dyn Store, campaign: &str, contact: &ContactKey) {
    let request = StageRequest {
        campaign_id: campaign.into(),
        contact: contact.clone(),
        shard: 0,
        seq: 1,
        params: Default::default(),
        exclusion: None,
        send_after: None,
        timezone: None,
        tags: vec![],
        name: None,
        staged_at: Utc::now(),
        journey: StagedJourney {
            next: vec![Edge {
                on: On::Failed,
                delay_secs: 0,
                to: "sms".into(),
            }],
            later: vec![StepParams {
                step: "sms".into(),
                content: FrozenStep::Text("Hola".into()),
            }],
        },
    };
    store.stage_batch(&[request]).await.unwrap();
    let mut claim = ClaimRequest {
        campaign_id: campaign.into(),
        contact: contact.clone(),
        exclusive: false,
        replace_engagement: None,
        owner: "test".into(),
        now: Utc::now(),
        step: String::new(),
    };
    store.claim(&claim).await.unwrap();
    let failed = Outcome::Failed {
        code: Some(131026),
        class: "contact".into(),
        message: "not on WhatsApp".into(),
    };
    store
        .record_outcome(campaign, contact, &failed, Utc::now())
        .await
        .unwrap();
    let timers = store.due_timers(campaign, 0, Utc::now(), 10).await.unwrap();
    assert_eq!(timers.len(), 1);
    store
        .fire_timer(campaign, &timers[0], &[], Utc::now(), false)
        .await
        .unwrap();
    claim.step = "sms".into();
    claim.now = Utc::now();
    assert!(matches!(
        store.claim(&claim).await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_report_updates_the_step_that_sent_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.path(), Durability::Process, 16).unwrap());
    let processor = Arc::new(WebhookProcessor::new(
        store.clone(),
        None,
        CampaignCatalog::default(),
        WebhookSettings {
            app_secret: None,
            verify_token: None,
            opt_out_keywords: vec![],
            keyword_scope: wadispatch::domain::OptOutScope::All,
            reply_context_wait: Duration::ZERO,
            marketing_limit_retry: Default::default(),
            sms_reports: Some(BasicAuth {
                username: "wadispatch".into(),
                password: "report-pw".into(),
            }),
        },
    ));
    let (server, addr) = wadispatch::webhook::serve(processor, "127.0.0.1:0", 1).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    let sb = sandbox(0.0).await;
    let sms = client(&sb.base_url(), KEY, Duration::from_secs(2));
    let notify = format!("http://wadispatch:report-pw@{addr}/sms/reports");

    for (n, delivered) in [("+525500000011", true), ("+525500000078", false)] {
        let contact = ContactKey::raw(n);
        at_the_sms_step(store.as_ref(), "j", &contact).await;
        let to = destination(&contact).unwrap();
        let callback = step_callback_data("j", "sms", &contact);
        let SmsResult::Accepted { message_id } =
            sms.send(body(&to, Some(&notify), &callback)).await
        else {
            panic!("not accepted");
        };
        let accepted = Outcome::Accepted {
            wamid: message_id.clone(),
            sender: None,
            held: None,
        };
        store
            .record_outcome("j", &contact, &accepted, Utc::now())
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let row = loop {
            let row = store.get_dispatch("j", &contact).await.unwrap().unwrap();
            if row.state != DispatchState::Accepted {
                break row;
            }
            assert!(std::time::Instant::now() < deadline, "no report: {row:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(row.step, "sms");
        assert_eq!(row.wamid.as_deref(), Some(message_id.as_str()));
        assert_eq!(
            row.history[0].state,
            DispatchState::Failed,
            "the primary kept"
        );
        if delivered {
            assert_eq!(row.state, DispatchState::Delivered, "{row:?}");
        } else {
            assert_eq!(row.state, DispatchState::Failed, "{row:?}");
            assert_eq!(row.error_code, Some(27));
            assert!(row
                .error_message
                .as_deref()
                .is_some_and(|m| m.contains("Absent Subscriber")));
        }
    }
    // The sandbox counts a report as sent once the listener has answered it,
    // which comes just after the row changed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sb.stats().sms.reports_sent < 2 {
        assert!(std::time::Instant::now() < deadline, "{:?}", sb.stats().sms);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sb.stats().sms.reports_sent, 2);

    // Reports without the credentials change nothing.
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/sms/reports");
    let report = r#"{"results":[{"messageId":"x","callbackData":"j/sms|+525500000011",
        "status":{"groupId":2,"groupName":"UNDELIVERABLE"}}]}"#;
    for auth in [None, Some(("wadispatch", "wrong"))] {
        let mut request = http.post(&url).body(report);
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    let row = store
        .get_dispatch("j", &ContactKey::raw("+525500000011"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DispatchState::Delivered);
    handle.stop(true).await;
}
