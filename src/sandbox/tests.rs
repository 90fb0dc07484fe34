//! Black-box tests: a real HTTP client against a started sandbox, and a small
//! actix-web receiver for its webhooks.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::*;

const SECRET: &str = "test-app-secret";
const WAIT: Duration = Duration::from_secs(10);

fn config() -> SandboxConfig {
    SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        app_secret: SECRET.into(),
        status_delay_ms: 2,
        webhook_flush_ms: 2,
        seed: 7,
        ..SandboxConfig::default()
    }
}

/// A config whose webhooks go to `receiver`, with every share at 0 and no
/// failure rules.
fn quiet(receiver: &Receiver) -> SandboxConfig {
    SandboxConfig {
        webhook_url: Some(receiver.url.clone()),
        failure_rules: Vec::new(),
        reply_share: 0.0,
        read_share: 0.0,
        read_without_delivered_share: 0.0,
        stop_share: 0.0,
        button_share: 0.0,
        ..config()
    }
}

fn template(to: &str, opaque: Option<&str>) -> Value {
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": "birthday_promo",
            "language": {"code": "es_MX"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "María"}, {"type": "text", "text": "20%"}]},
                {"type": "button", "sub_type": "quick_reply", "index": "0", "parameters": [{"type": "payload", "payload": "YES"}]}
            ]
        }
    });
    if let Some(o) = opaque {
        body["biz_opaque_callback_data"] = json!(o);
    }
    body
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(sandbox: &SandboxHandle) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: sandbox.base_url(),
        }
    }

    async fn post_raw(&self, path: &str, auth: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("sandbox answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn send(&self, number: &str, body: &Value) -> (u16, Value) {
        self.post_raw(
            &format!("/v21.0/{number}/messages"),
            Some("Bearer test-token"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn wamid(answer: &Value) -> String {
    answer["messages"][0]["id"]
        .as_str()
        .expect("a wamid")
        .to_owned()
}

fn assert_graph_error(status: u16, body: &Value, http: u16, code: i64) {
    assert_eq!(status, http, "{body}");
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert_eq!(e["type"], "OAuthException");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("(#{code}) ")),
        "{body}"
    );
    assert!(e["fbtrace_id"].as_str().is_some_and(|t| !t.is_empty()));
}

// ---------------------------------------------------------------------------
// Webhook receiver
// ---------------------------------------------------------------------------

struct Delivery {
    signature: Option<String>,
    content_type: Option<String>,
    body: web::Bytes,
}

#[derive(Default)]
struct ReceiverState {
    deliveries: Mutex<Vec<Delivery>>,
    notify: Notify,
    /// POSTs to refuse with 500 before accepting.
    refuse: AtomicU64,
}

struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    server: actix_web::dev::ServerHandle,
}

async fn hook(req: HttpRequest, body: web::Bytes, state: web::Data<ReceiverState>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    };
    let refuse = state
        .refuse
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if refuse {
        return HttpResponse::InternalServerError().finish();
    }
    state.deliveries.lock().unwrap().push(Delivery {
        signature: header("x-hub-signature-256"),
        content_type: header("content-type"),
        body,
    });
    state.notify.notify_waiters();
    HttpResponse::Ok().finish()
}

impl Receiver {
    async fn start(refuse_first: u64) -> Self {
        let state = Arc::new(ReceiverState::default());
        state.refuse.store(refuse_first, SeqCst);
        let data = web::Data::from(Arc::clone(&state));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/hook", web::post().to(hook))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://{addr}/hook"),
            state,
            server: handle,
        }
    }

    /// Every `value` of every delivery, in arrival order.
    fn values(&self) -> Vec<Value> {
        let deliveries = self.state.deliveries.lock().unwrap();
        let mut out = Vec::new();
        for d in deliveries.iter() {
            let v: Value = serde_json::from_slice(&d.body).expect("webhook body is JSON");
            assert_eq!(v["object"], "whatsapp_business_account");
            for entry in v["entry"].as_array().unwrap() {
                for change in entry["changes"].as_array().unwrap() {
                    assert_eq!(change["field"], "messages");
                    out.push(change["value"].clone());
                }
            }
        }
        out
    }

    fn statuses(&self) -> Vec<Value> {
        self.values()
            .iter()
            .flat_map(|v| v["statuses"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// (contact, message) pairs of inbound messages.
    fn inbound(&self) -> Vec<(Value, Value)> {
        self.values()
            .iter()
            .filter(|v| v["messages"].is_array())
            .map(|v| (v["contacts"][0].clone(), v["messages"][0].clone()))
            .collect()
    }

    /// Status names of a message, in arrival order.
    fn timeline(&self, wamid: &str) -> Vec<String> {
        self.statuses()
            .iter()
            .filter(|s| s["id"] == wamid)
            .map(|s| s["status"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn wait_until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let notified = self.state.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for {what}; got {:?}", self.values());
            }
        }
    }

    async fn stop(self) {
        self.server.stop(false).await;
    }
}

/// Poll the sandbox's counters until `cond` holds.
async fn wait_stats(
    sandbox: &SandboxHandle,
    what: &str,
    cond: impl Fn(&SandboxStats) -> bool,
) -> SandboxStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = sandbox.stats();
        if cond(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; stats {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_number_limit_answers_130429_above_the_rate_and_not_below() {
    let sandbox = Sandbox::start(SandboxConfig {
        per_number_mps: 10.0,
        ..config()
    })
    .await
    .unwrap();
    let api = Arc::new(Api::new(&sandbox));

    // Below the rate: 10 messages paced at 5/s, on a fresh number (the
    // limit at and just above its rate is tested with a clock of its own in
    // `stats::tests`).
    let mut pace = tokio::time::interval(Duration::from_millis(200));
    for i in 0..10 {
        pace.tick().await;
        let (status, body) = api
            .send("111", &template(&format!("1555100{i:04}"), None))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // A burst of 60 at once on another number: the first second's worth
    // (burst = 10) passes, the rest is refused.
    let started = std::time::Instant::now();
    let sends: Vec<_> = (0..60)
        .map(|i| {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                api.send("222", &template(&format!("1555200{i:04}"), None))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for send in sends {
        let (status, body) = send.await.unwrap();
        match status {
            200 => ok += 1,
            _ => {
                assert_graph_error(status, &body, 400, 130_429);
                assert_eq!(body["error"]["error_data"]["messaging_product"], "whatsapp");
                limited += 1;
            }
        }
    }
    // At most the burst plus what the rate refilled meanwhile.
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as u64;
    assert!(
        ok >= 10 && ok <= 10 + refilled,
        "{ok} accepted in a burst of 60 at 10 mps, {refilled} refilled"
    );
    assert_eq!(ok + limited, 60);

    let stats = sandbox.stats();
    assert_eq!(stats.rejected_by_code.get(&130_429), Some(&limited));
    assert_eq!(stats.per_number.get("111"), Some(&10));
    assert_eq!(stats.per_number.get("222"), Some(&ok));
    // Requests per number count the refused ones too.
    assert_eq!(stats.requests_per_number.get("111"), Some(&10));
    assert_eq!(stats.requests_per_number.get("222"), Some(&60));
    assert_eq!(stats.requests, 70);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_limit_answers_131056_to_a_quick_second_message() {
    let sandbox = Sandbox::start(SandboxConfig {
        pair_burst: 1,
        ..config()
    })
    .await
    .unwrap();
    let api = Api::new(&sandbox);
    let (status, _) = api
        .send("111", &template("+15553000001", Some("c1|a")))
        .await;
    assert_eq!(status, 200);
    let (status, body) = api
        .send("111", &template("+15553000001", Some("c2|a")))
        .await;
    assert_graph_error(status, &body, 400, 131_056);
    // Another recipient, or the same one from another business number, is
    // a different pair.
    assert_eq!(
        api.send("111", &template("+15553000002", None)).await.0,
        200
    );
    assert_eq!(
        api.send("333", &template("+15553000001", None)).await.0,
        200
    );

    let stats = sandbox.stats();
    assert_eq!(stats.rejected_by_code.get(&131_056), Some(&1));
    assert_eq!(stats.accepted, 3);
    assert_eq!(
        stats.per_recipient_max, 2,
        "the refused message is not counted"
    );
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_limit_allows_metas_burst_of_45_by_default() {
    let sandbox = Sandbox::start(SandboxConfig {
        per_number_mps: 0.0,
        ..config()
    })
    .await
    .unwrap();
    let api = Api::new(&sandbox);
    for i in 0..45 {
        let (status, body) = api
            .send("111", &template("15553000009", Some(&format!("c{i}|x"))))
            .await;
        assert_eq!(status, 200, "message {i}: {body}");
    }
    let (status, body) = api
        .send("111", &template("15553000009", Some("c45|x")))
        .await;
    assert_graph_error(status, &body, 400, 131_056);
    sandbox.stop().await;
}

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_ending_in_13_is_accepted_then_fails_by_webhook_with_131026() {
    let receiver = Receiver::start(0).await;
    let cfg = SandboxConfig {
        failure_rules: FailureRule::meta_defaults(),
        ..quiet(&receiver)
    };
    let sandbox = Sandbox::start(cfg).await.unwrap();
    let api = Api::new(&sandbox);
    let (status, answer) = api
        .send("111", &template("+15554000013", Some("bday|+15554000013")))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["messages"][0]["message_status"], "accepted");
    let id = wamid(&answer);

    receiver
        .wait_until("a failed status", |r| !r.timeline(&id).is_empty())
        .await;
    let failed = receiver
        .statuses()
        .into_iter()
        .find(|s| s["id"] == id.as_str())
        .unwrap();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["recipient_id"], "15554000013");
    assert_eq!(failed["biz_opaque_callback_data"], "bday|+15554000013");
    let error = &failed["errors"][0];
    assert_eq!(error["code"], 131_026);
    assert!(error["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(error["error_data"]["details"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert!(failed["timestamp"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(receiver.timeline(&id), ["failed"], "no sent before failed");

    // A rule can also fail the API call itself.
    drop(sandbox);
    let mut cfg = quiet(&receiver);
    cfg.failure_rules.push(FailureRule {
        suffix: "48".into(),
        code: 131_048,
        stage: FailureStage::Api,
    });
    let sandbox = Sandbox::start(cfg).await.unwrap();
    let (status, body) = Api::new(&sandbox)
        .send("111", &template("15554000048", None))
        .await;
    assert_graph_error(status, &body, 400, 131_048);
    assert_eq!(sandbox.stats().accepted, 0);
    sandbox.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_with_the_app_secret() {
    let receiver = Receiver::start(0).await;
    let sandbox = Sandbox::start(quiet(&receiver)).await.unwrap();
    let api = Api::new(&sandbox);
    for i in 0..5 {
        assert_eq!(
            api.send("111", &template(&format!("1555500000{i}"), None))
                .await
                .0,
            200
        );
    }
    receiver
        .wait_until("10 statuses", |r| r.statuses().len() == 10)
        .await;
    {
        let deliveries = receiver.state.deliveries.lock().unwrap();
        for d in deliveries.iter() {
            assert_eq!(d.content_type.as_deref(), Some("application/json"));
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(&d.body);
            let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(d.signature.as_deref(), Some(expected.as_str()));

            let mut other = Hmac::<Sha256>::new_from_slice(b"another secret").unwrap();
            other.update(&d.body);
            assert_ne!(
                d.signature.as_deref(),
                Some(format!("sha256={}", hex::encode(other.finalize().into_bytes())).as_str())
            );
        }
    }
    sandbox.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_arrive_sent_delivered_read_per_recipient() {
    let receiver = Receiver::start(0).await;
    let sandbox = Sandbox::start(SandboxConfig {
        read_share: 1.0,
        ..quiet(&receiver)
    })
    .await
    .unwrap();
    let api = Api::new(&sandbox);
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, answer) = api
            .send("111", &template(&format!("155560{i:05}"), Some("c|x")))
            .await;
        assert_eq!(status, 200);
        ids.push(wamid(&answer));
    }
    receiver
        .wait_until("60 statuses", |r| r.statuses().len() == 60)
        .await;
    for id in &ids {
        assert_eq!(receiver.timeline(id), ["sent", "delivered", "read"], "{id}");
    }
    let statuses = receiver.statuses();
    assert!(statuses
        .iter()
        .all(|s| s["biz_opaque_callback_data"] == "c|x"));
    assert!(statuses
        .iter()
        .filter(|s| s["status"] == "sent")
        .all(|s| s["pricing"]["category"].is_string()));
    let stats = wait_stats(&sandbox, "60 events counted", |s| s.webhooks_sent == 60).await;
    assert_eq!(stats.webhook_failures, 0);
    assert_eq!(stats.webhooks_dropped, 0);
    sandbox.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_without_delivered_when_its_share_is_one() {
    let receiver = Receiver::start(0).await;
    let cfg = SandboxConfig {
        read_share: 1.0,
        read_without_delivered_share: 1.0,
        ..quiet(&receiver)
    };
    let sandbox = Sandbox::start(cfg).await.unwrap();
    let (_, answer) = Api::new(&sandbox)
        .send("111", &template("15557000001", None))
        .await;
    let id = wamid(&answer);
    receiver
        .wait_until("read", |r| {
            r.timeline(&id).last().is_some_and(|s| s == "read")
        })
        .await;
    assert_eq!(receiver.timeline(&id), ["sent", "read"]);
    sandbox.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_point_at_the_campaign_message() {
    let receiver = Receiver::start(0).await;
    let text = SandboxConfig {
        reply_share: 1.0,
        ..quiet(&receiver)
    };
    let button = SandboxConfig {
        reply_share: 1.0,
        button_share: 1.0,
        ..quiet(&receiver)
    };
    let stop = SandboxConfig {
        reply_share: 1.0,
        stop_share: 1.0,
        ..quiet(&receiver)
    };
    for (cfg, kind) in [(text, "text"), (button, "button"), (stop, "stop")] {
        let sandbox = Sandbox::start(cfg).await.unwrap();
        let (_, answer) = Api::new(&sandbox)
            .send("111", &template("+15558000001", None))
            .await;
        let id = wamid(&answer);
        let find = |r: &Receiver| {
            r.inbound()
                .into_iter()
                .find(|(_, m)| m["context"]["id"] == id.as_str())
        };
        receiver.wait_until("a reply", |r| find(r).is_some()).await;
        let (contact, message) = find(&receiver).unwrap();
        assert_eq!(contact["wa_id"], "15558000001");
        assert!(contact["profile"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty()));
        assert_eq!(message["from"], "15558000001");
        assert_eq!(
            message["context"]["from"],
            sandbox.config().display_phone_number.as_str()
        );
        assert!(message["id"].as_str().unwrap().starts_with("wamid.in."));
        assert!(message["timestamp"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok());
        match kind {
            "text" => {
                assert_eq!(message["type"], "text");
                assert!(message["text"]["body"]
                    .as_str()
                    .is_some_and(|b| !b.is_empty() && b != "STOP"));
            }
            "button" => {
                assert_eq!(message["type"], "button");
                assert_eq!(
                    message["button"]["payload"], "YES",
                    "echoes the request's quick-reply payload"
                );
                assert!(message["button"]["text"].is_string());
            }
            _ => assert_eq!(message["text"]["body"], "STOP"),
        }
        // A reply comes after the message was read.
        assert_eq!(receiver.timeline(&id), ["sent", "delivered", "read"]);
        wait_stats(&sandbox, "the reply counted", |s| s.replies_sent == 1).await;
        sandbox.stop().await;
    }
    receiver.stop().await;
}

/// What the pure rules predict for the first message to `to`: the status
/// timeline and whether a reply follows.
fn predicted(cfg: &SandboxConfig, to: &str) -> (Vec<String>, bool) {
    let recipient = rules::Recipient::parse(to).unwrap();
    let shares = rules::Shares {
        read: cfg.read_share,
        read_without_delivered: cfg.read_without_delivered_share,
        reply: cfg.reply_share,
        stop: cfg.stop_share,
        button: cfg.button_share,
    };
    let failure = rules::webhook_failure(&cfg.failure_rules, &recipient.wa_id);
    match rules::decide(cfg.seed, recipient.key, 1, &shares, failure) {
        rules::Outcome::Failed(_) => (vec!["failed".to_owned()], false),
        rules::Outcome::Delivered {
            delivered_status,
            read,
            reply,
        } => {
            let mut t = vec!["sent".to_owned()];
            if delivered_status {
                t.push("delivered".to_owned());
            }
            if read {
                t.push("read".to_owned());
            }
            (t, reply.is_some())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_follow_the_seed_reproducibly() {
    let receiver = Receiver::start(0).await;
    let cfg = SandboxConfig {
        read_share: 0.5,
        reply_share: 0.3,
        button_share: 0.5,
        read_without_delivered_share: 0.3,
        failure_rules: FailureRule::meta_defaults(),
        ..quiet(&receiver)
    };
    let recipients: Vec<String> = (0..40).map(|i| format!("155590{i:05}")).collect();
    let expected: Vec<(Vec<String>, bool)> =
        recipients.iter().map(|to| predicted(&cfg, to)).collect();
    let events: usize = expected
        .iter()
        .map(|(t, r)| t.len() + usize::from(*r))
        .sum();
    // The mix really is mixed, failures included (…013 ends in 13).
    assert!(
        expected.iter().any(|(t, _)| t.len() == 3) && expected.iter().any(|(t, _)| t.len() == 2)
    );
    assert!(expected.iter().any(|(_, r)| *r) && expected.iter().any(|(t, _)| t == &["failed"]));

    for run in 0..2 {
        receiver.state.deliveries.lock().unwrap().clear();
        let sandbox = Sandbox::start(cfg.clone()).await.unwrap();
        let api = Api::new(&sandbox);
        let mut ids = Vec::new();
        for to in &recipients {
            ids.push(wamid(&api.send("111", &template(to, None)).await.1));
        }
        receiver
            .wait_until("every predicted event", |r| {
                r.statuses().len() + r.inbound().len() == events
            })
            .await;
        for ((id, to), (timeline, replied)) in ids.iter().zip(&recipients).zip(&expected) {
            assert_eq!(&receiver.timeline(id), timeline, "run {run}, {to}");
            let got_reply = receiver
                .inbound()
                .iter()
                .any(|(_, m)| m["context"]["id"] == id.as_str());
            assert_eq!(got_reply, *replied, "run {run}, {to}");
        }
        sandbox.stop().await;
    }
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_webhooks_are_retried_and_counted() {
    let receiver = Receiver::start(2).await;
    let cfg = SandboxConfig {
        webhook_retry_base_ms: 5,
        ..quiet(&receiver)
    };
    let sandbox = Sandbox::start(cfg).await.unwrap();
    let (_, answer) = Api::new(&sandbox)
        .send("111", &template("15551100001", None))
        .await;
    let id = wamid(&answer);
    receiver
        .wait_until("both statuses", |r| r.timeline(&id).len() == 2)
        .await;
    let stats = wait_stats(&sandbox, "delivery counted", |s| s.webhooks_sent == 2).await;
    assert_eq!(stats.webhook_failures, 2);
    assert_eq!(stats.webhooks_dropped, 0);
    sandbox.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_that_keep_failing_are_dropped_without_slowing_the_api() {
    let receiver = Receiver::start(u64::MAX).await;
    let cfg = SandboxConfig {
        webhook_max_attempts: 2,
        webhook_retry_base_ms: 1,
        ..quiet(&receiver)
    };
    let sandbox = Sandbox::start(cfg).await.unwrap();
    let api = Api::new(&sandbox);
    for i in 0..3 {
        assert_eq!(
            api.send("111", &template(&format!("155512000{i:02}"), None))
                .await
                .0,
            200
        );
    }
    let stats = wait_stats(&sandbox, "6 events dropped", |s| s.webhooks_dropped == 6).await;
    assert_eq!(stats.webhooks_sent, 0);
    assert!(stats.webhook_failures >= 2);
    sandbox.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_webhook_queue_drops_and_counts_instead_of_blocking() {
    let receiver = Receiver::start(0).await;
    // One timeline at a time, due in a minute: the others cannot queue.
    let cfg = SandboxConfig {
        webhook_queue_capacity: 1,
        status_delay_ms: 60_000,
        ..quiet(&receiver)
    };
    let sandbox = Sandbox::start(cfg).await.unwrap();
    let api = Api::new(&sandbox);
    for i in 0..3 {
        assert_eq!(
            api.send("111", &template(&format!("155513000{i:02}"), None))
                .await
                .0,
            200
        );
    }
    let stats = wait_stats(&sandbox, "4 events dropped", |s| s.webhooks_dropped == 4).await;
    assert_eq!(stats.accepted, 3);
    sandbox.stop().await;
    receiver.stop().await;
}

// ---------------------------------------------------------------------------
// Ledger and control endpoints
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_recipients_count_the_same_campaign_twice() {
    let sandbox = Sandbox::start(SandboxConfig {
        pair_interval_secs: 0.0,
        ..config()
    })
    .await
    .unwrap();
    let api = Api::new(&sandbox);
    // Different campaigns to one recipient: not a duplicate.
    assert_eq!(
        api.send("111", &template("15551400001", Some("spring|a")))
            .await
            .0,
        200
    );
    assert_eq!(
        api.send("111", &template("15551400001", Some("summer|a")))
            .await
            .0,
        200
    );
    assert_eq!(sandbox.stats().duplicate_recipients, 0);
    // The same campaign twice: one duplicate recipient, however many repeats.
    for _ in 0..3 {
        assert_eq!(
            api.send("111", &template("+1 555 140 0002", Some("spring|b")))
                .await
                .0,
            200
        );
    }
    // Without callback data the campaign is the template name.
    assert_eq!(api.send("111", &template("15551400003", None)).await.0, 200);
    assert_eq!(api.send("222", &template("15551400003", None)).await.0, 200);

    let stats: SandboxStats = serde_json::from_value(api.get("/sandbox/stats").await).unwrap();
    assert_eq!(stats, sandbox.stats());
    assert_eq!(stats.duplicate_recipients, 2);
    assert_eq!(stats.recipients, 3);
    assert_eq!(stats.per_recipient_max, 3);
    assert_eq!(stats.accepted, 7);

    let r = api.get("/sandbox/recipients/+15551400002").await;
    assert_eq!(r, json!({"recipient": "15551400002", "messages": 3}));
    assert_eq!(
        api.get("/sandbox/recipients/15559999999").await["messages"],
        0
    );

    let (status, _) = api.post_raw("/sandbox/reset", None, Vec::new()).await;
    assert_eq!(status, 200);
    assert_eq!(sandbox.stats(), SandboxStats::default());
    assert_eq!(
        api.get("/sandbox/recipients/15551400002").await["messages"],
        0
    );
    sandbox.stop().await;
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_auth_answers_401_with_code_190() {
    let sandbox = Sandbox::start(SandboxConfig {
        access_token: Some("right".into()),
        ..config()
    })
    .await
    .unwrap();
    let api = Api::new(&sandbox);
    let body = serde_json::to_vec(&template("15551500001", None)).unwrap();
    for auth in [
        None,
        Some("Bearer "),
        Some("Basic abc"),
        Some("Bearer wrong"),
    ] {
        let (status, answer) = api
            .post_raw("/v21.0/111/messages", auth, body.clone())
            .await;
        assert_graph_error(status, &answer, 401, 190);
        assert!(
            answer["error"].get("error_data").is_none(),
            "Graph token errors carry no error_data"
        );
    }
    let (status, _) = api
        .post_raw("/v21.0/111/messages", Some("Bearer right"), body)
        .await;
    assert_eq!(status, 200);
    let stats = sandbox.stats();
    assert_eq!(stats.rejected_by_code.get(&190), Some(&4));
    assert_eq!(stats.accepted, 1);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_in_recipient_is_answered_with_user_id() {
    let sandbox = Sandbox::start(config()).await.unwrap();
    let api = Api::new(&sandbox);
    // A user id in `recipient`: the answer's contact has `user_id`, no
    // `wa_id` (Meta's "Business-scoped user IDs").
    let mut by_user_id = template("15551600001", None);
    by_user_id.as_object_mut().unwrap().remove("to");
    by_user_id["recipient"] = json!("US.13491208655302741918");
    let (status, body) = api.send("111", &by_user_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["contacts"][0],
        json!({"input": "US.13491208655302741918", "user_id": "US.13491208655302741918"})
    );
    assert_eq!(sandbox.stats().accepted, 1);
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_answer_400_with_a_graph_error() {
    let sandbox = Sandbox::start(config()).await.unwrap();
    let api = Api::new(&sandbox);
    let auth = Some("Bearer t");
    let (status, body) = api
        .post_raw("/v21.0/111/messages", auth, b"{not json".to_vec())
        .await;
    assert_graph_error(status, &body, 400, 100);
    assert!(body["error"]["error_data"]["details"]
        .as_str()
        .unwrap()
        .contains("JSON"));

    let mut no_to = template("15551600001", None);
    no_to.as_object_mut().unwrap().remove("to");
    let (status, body) = api.send("111", &no_to).await;
    assert_graph_error(status, &body, 400, 100);
    assert_eq!(
        body["error"]["error_data"]["details"],
        "the parameter to (or recipient) is required"
    );

    let mut unknown_type = template("15551600001", None);
    unknown_type["template"]["components"][0]["parameters"][0] =
        json!({"type": "emoji", "text": "x"});
    let (status, body) = api.send("111", &unknown_type).await;
    assert_graph_error(status, &body, 400, 100);

    let mut empty = template("15551600001", None);
    empty["template"]["components"][0]["parameters"] = json!([]);
    let (status, body) = api.send("111", &empty).await;
    assert_graph_error(status, &body, 400, 132_000);

    let mut blank = template("15551600001", None);
    blank["template"]["components"][0]["parameters"][0]["text"] = json!("");
    let (status, body) = api.send("111", &blank).await;
    assert_graph_error(status, &body, 400, 131_008);

    let (status, body) = api
        .post_raw(
            "/21.0/111/messages",
            auth,
            serde_json::to_vec(&template("15551600001", None)).unwrap(),
        )
        .await;
    assert_graph_error(status, &body, 400, 2500);

    let stats = sandbox.stats();
    assert_eq!(stats.accepted, 0);
    assert_eq!(stats.rejected_by_code.get(&100), Some(&3));
    assert_eq!(stats.rejected_by_code.get(&132_000), Some(&1));
    assert_eq!(stats.rejected_by_code.get(&131_008), Some(&1));
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_share_of_one_fails_every_request() {
    let sandbox = Sandbox::start(SandboxConfig {
        http_5xx_share: 1.0,
        ..config()
    })
    .await
    .unwrap();
    let api = Api::new(&sandbox);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        let (status, body) = api
            .send("111", &template(&format!("155517000{i:02}"), None))
            .await;
        assert!(status == 500 || status == 503, "{status} {body}");
        assert_eq!(body["error"]["is_transient"], true);
        seen.insert(status);
    }
    assert_eq!(seen.len(), 2, "both 500 and 503 occur");
    let stats = sandbox.stats();
    assert_eq!(
        (stats.http_5xx, stats.accepted, stats.requests),
        (20, 0, 20)
    );
    sandbox.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_comes_after_the_message_took_effect() {
    let cfg = SandboxConfig {
        latency_ms: 300,
        latency_jitter_ms: 50,
        ..config()
    };
    let sandbox = Sandbox::start(cfg).await.unwrap();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let result = impatient
        .post(format!("{}/v21.0/111/messages", sandbox.base_url()))
        .bearer_auth("t")
        .json(&template("15551900001", None))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    // The client saw a timeout, the platform accepted the message: the
    // daemon's "unknown" case.
    wait_stats(&sandbox, "the message accepted", |s| s.accepted == 1).await;

    let started = std::time::Instant::now();
    let (status, _) = Api::new(&sandbox)
        .send("111", &template("15551900002", None))
        .await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sandbox.stop().await;
}

// ---------------------------------------------------------------------------
// Hosting
// ---------------------------------------------------------------------------

#[actix_rt::test]
async fn runs_inside_an_actix_system_and_stops() {
    let sandbox = Sandbox::start(config()).await.unwrap();
    assert!(sandbox.base_url().starts_with("http://127.0.0.1:"));
    let api = Api::new(&sandbox);
    let (status, answer) = api.send("111", &template("+15551800001", None)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["messaging_product"], "whatsapp");
    assert_eq!(
        answer["contacts"][0],
        json!({"input": "+15551800001", "wa_id": "15551800001"})
    );
    assert!(wamid(&answer).starts_with("wamid."));
    let addr = sandbox.addr();
    sandbox.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "port closed after stop"
    );
}

#[tokio::test]
async fn invalid_settings_are_refused() {
    let bad_share = SandboxConfig {
        reply_share: 1.5,
        ..config()
    };
    let err = Sandbox::start(bad_share).await.err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("reply_share"));
    let bad_rule = SandboxConfig {
        failure_rules: vec![FailureRule {
            suffix: "1x".into(),
            code: 1,
            stage: FailureStage::Api,
        }],
        ..config()
    };
    assert!(Sandbox::start(bad_rule).await.is_err());
    let taken = Sandbox::start(config()).await.unwrap();
    let same_port = SandboxConfig {
        listen: taken.addr(),
        ..config()
    };
    assert!(
        Sandbox::start(same_port).await.is_err(),
        "a taken port is an error, not a hang"
    );
    taken.stop().await;
}

#[test]
fn config_reads_from_json_with_defaults() {
    let cfg: SandboxConfig = serde_json::from_value(json!({
        "listen": "127.0.0.1:0",
        "per_number_mps": 20,
        "failure_rules": [{"suffix": "13", "code": 131026}, {"suffix": "47", "code": 131047, "stage": "api"}],
        "templates": {"birthday_promo": {"body_params": 2}}
    }))
    .unwrap();
    assert_eq!(cfg.per_number_mps, 20.0);
    assert_eq!(cfg.failure_rules[1].stage, FailureStage::Api);
    assert_eq!(cfg.pair_burst, 45);
    assert_eq!(cfg.status_delay_ms, 20);
    assert!(
        serde_json::from_value::<SandboxConfig>(json!({"reply_shares": 1})).is_err(),
        "typos are refused"
    );
    assert_eq!(
        SandboxConfig::default().failure_rules,
        FailureRule::meta_defaults()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_in_maintenance_answers_131057_then_a_throughput_upgrade_lifts_its_limit() {
    let sandbox = Sandbox::start(SandboxConfig {
        per_number_mps: 1.0,
        per_number_burst: Some(1),
        ..config()
    })
    .await
    .unwrap();
    let api = Api::new(&sandbox);
    let change = |body: Value| {
        let api = &api;
        async move {
            api.post_raw("/sandbox/numbers", None, serde_json::to_vec(&body).unwrap())
                .await
        }
    };
    let (status, _) = change(json!({"phone_number_id": "333", "maintenance_secs": 0.5})).await;
    assert_eq!(status, 200);
    let (status, body) = api.send("333", &template("15553000001", None)).await;
    assert_graph_error(status, &body, 400, 131_057);
    let (status, _) = api.send("444", &template("15553000002", None)).await;
    assert_eq!(status, 200, "another number is not in maintenance");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = api.send("333", &template("15553000003", None)).await;
    assert_eq!(status, 200, "the maintenance is over: {body}");
    // At 1 message per second a second one is refused, until Meta upgrades
    // the number to 1,000 per second.
    let (status, body) = api.send("333", &template("15553000004", None)).await;
    assert_graph_error(status, &body, 400, 130_429);
    let (status, answer) =
        change(json!({"phone_number_id": "333", "event": "THROUGHPUT_UPGRADE"})).await;
    assert_eq!(
        (status, answer["per_number_mps"].as_f64()),
        (200, Some(1000.0))
    );
    for i in 0..20 {
        let (status, body) = api
            .send("333", &template(&format!("155531{i:05}"), None))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = change(json!({"phone_number_id": "333"})).await;
    assert_eq!(status, 400, "a change says what to change");
}
