//! The simulated SMS API: `POST /sms/2/text/advanced` with the provider's
//! documented request, answer and error shapes, a rate limit per sender id
//! (429), outcomes by the destination's last digits, and delivery reports
//! posted to each message's `notifyUrl` (with HTTP Basic credentials when
//! the URL carries them).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::stats::lock;
use super::SandboxConfig;

/// What happens to an SMS whose destination ends in a suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmsFate {
    /// Refused in the answer (`REJECTED_DESTINATION`): nothing is sent.
    Rejected,
    /// Taken, then reported `UNDELIVERABLE` (absent subscriber).
    Undeliverable,
}

/// A destination suffix and its fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsRule {
    pub suffix: String,
    pub fate: SmsFate,
}

impl SmsRule {
    /// 77 is rejected, 78 undeliverable; every other number is delivered.
    pub fn defaults() -> Vec<SmsRule> {
        vec![
            SmsRule {
                suffix: "77".into(),
                fate: SmsFate::Rejected,
            },
            SmsRule {
                suffix: "78".into(),
                fate: SmsFate::Undeliverable,
            },
        ]
    }
}

/// The SMS counters of `GET /sandbox/stats` (`sms`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SmsStats {
    /// `POST /sms/2/text/advanced` requests received.
    pub requests: u64,
    /// Messages taken (answered with a message id in the PENDING group).
    pub accepted: u64,
    /// Answered 401 (no or wrong `App` key), 400, 429, or REJECTED.
    pub unauthorized: u64,
    pub bad_requests: u64,
    pub throttled: u64,
    pub rejected: u64,
    /// Distinct destinations that got a message taken.
    pub recipients: u64,
    /// Destinations that got the same campaign (or journey step) more than
    /// once (campaign: `callbackData` before `|`).
    pub duplicate_recipients: u64,
    /// Delivery report POSTs answered 2xx, and those that failed every
    /// attempt.
    pub reports_sent: u64,
    pub reports_failed: u64,
}

/// The SMS side of a running sandbox.
pub(crate) struct SmsSim {
    key: Option<String>,
    rules: Vec<SmsRule>,
    report_delay: Duration,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    http: reqwest::Client,
    seq: AtomicU64,
    nonce: u32,
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    stats: SmsStats,
    /// (campaign key, destination) → messages taken.
    ledger: HashMap<(String, String), u32>,
    destinations: HashSet<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    #[serde(default)]
    messages: Vec<RequestMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestMessage {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    destinations: Vec<RequestDestination>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    notify_url: Option<String>,
    #[serde(default)]
    callback_data: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RequestDestination {
    #[serde(default)]
    to: String,
}

fn service_exception(status: u16, id: &str, text: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap_or_default())
        .json(json!({"requestError": {"serviceException": {"messageId": id, "text": text}}}))
}

impl SmsSim {
    pub(crate) fn new(config: &SandboxConfig, nonce: u32) -> std::io::Result<SmsSim> {
        let limiter = NonZeroU32::new(config.sms_per_sender_mps.round() as u32)
            .map(|rate| RateLimiter::keyed(Quota::per_second(rate)));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.webhook_timeout_ms))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(SmsSim {
            key: config.sms_api_key.clone(),
            rules: config.sms_rules.clone(),
            report_delay: Duration::from_millis(config.status_delay_ms),
            limiter,
            http,
            seq: AtomicU64::new(0),
            nonce,
            counters: Mutex::new(Counters::default()),
        })
    }

    pub(crate) fn stats(&self) -> SmsStats {
        let c = lock(&self.counters);
        SmsStats {
            recipients: c.destinations.len() as u64,
            ..c.stats.clone()
        }
    }

    pub(crate) fn reset(&self) {
        *lock(&self.counters) = Counters::default();
    }

    fn count(&self, f: impl FnOnce(&mut SmsStats)) {
        f(&mut lock(&self.counters).stats);
    }

    fn authorized(&self, req: &HttpRequest) -> bool {
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        match (header.strip_prefix("App ").map(str::trim), &self.key) {
            (Some(key), Some(expected)) => key == expected,
            (Some(key), None) => !key.is_empty(),
            (None, _) => false,
        }
    }

    /// Records a message taken, and a duplicate when its destination already
    /// got this campaign (or step).
    fn take(&self, to: &str, callback: Option<&str>) {
        let campaign = callback
            .and_then(|c| c.split('|').next())
            .unwrap_or_default()
            .to_string();
        let mut c = lock(&self.counters);
        c.stats.accepted += 1;
        c.destinations.insert(to.to_string());
        let n = c.ledger.entry((campaign, to.to_string())).or_default();
        *n += 1;
        if *n == 2 {
            c.stats.duplicate_recipients += 1;
        }
    }

    fn fate(&self, to: &str) -> Option<SmsFate> {
        self.rules
            .iter()
            .find(|r| to.ends_with(&r.suffix))
            .map(|r| r.fate)
    }

    fn answer(self: &Arc<Self>, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        self.count(|s| s.requests += 1);
        if !self.authorized(req) {
            self.count(|s| s.unauthorized += 1);
            return service_exception(401, "UNAUTHORIZED", "Invalid login details");
        }
        let message = serde_json::from_slice::<Request>(body)
            .ok()
            .and_then(|r| r.messages.into_iter().next());
        let Some(message) = message.filter(|m| {
            m.destinations.len() == 1
                && !m.destinations[0].to.is_empty()
                && m.destinations[0].to.bytes().all(|b| b.is_ascii_digit())
                && m.text.as_deref().is_some_and(|t| !t.is_empty())
        }) else {
            self.count(|s| s.bad_requests += 1);
            return service_exception(
                400,
                "BAD_REQUEST",
                "one message with one destination (digits) and a text is required",
            );
        };
        let from = message.from.clone().unwrap_or_default();
        if let Some(limiter) = &self.limiter {
            if limiter.check_key(&from).is_err() {
                self.count(|s| s.throttled += 1);
                return service_exception(429, "TOO_MANY_REQUESTS", "Too many requests");
            }
        }
        let to = message.destinations[0].to.clone();
        let message_id = format!(
            "SBXSMS{:08X}{:010X}",
            self.nonce,
            self.seq.fetch_add(1, Relaxed) + 1
        );
        let fate = self.fate(&to);
        if fate == Some(SmsFate::Rejected) {
            self.count(|s| s.rejected += 1);
            return HttpResponse::Ok().json(json!({"messages": [{
                "to": to, "messageId": message_id,
                "status": {"groupId": 5, "groupName": "REJECTED", "id": 52,
                           "name": "REJECTED_DESTINATION", "description": "Invalid destination address"}
            }]}));
        }
        self.take(&to, message.callback_data.as_deref());
        if let Some(url) = message.notify_url.clone() {
            let report = self.report(&message_id, &to, message.callback_data, fate);
            let sim = Arc::clone(self);
            tokio::spawn(async move { sim.deliver_report(url, report).await });
        }
        HttpResponse::Ok().json(json!({"bulkId": format!("bulk-{message_id}"), "messages": [{
            "to": to, "messageId": message_id,
            "status": {"groupId": 1, "groupName": "PENDING", "id": 26,
                       "name": "PENDING_ACCEPTED", "description": "Message sent to next instance"}
        }]}))
    }

    /// The report body of one message, in the provider's documented
    /// shape (written here, not shared with the client that parses it).
    fn report(
        &self,
        message_id: &str,
        to: &str,
        callback_data: Option<String>,
        fate: Option<SmsFate>,
    ) -> serde_json::Value {
        let (status, error) = match fate {
            Some(SmsFate::Undeliverable) => (
                json!({"groupId": 2, "groupName": "UNDELIVERABLE", "id": 9,
                       "name": "UNDELIVERABLE_NOT_DELIVERED", "description": "Message sent not delivered"}),
                json!({"groupId": 1, "groupName": "HANDSET_ERRORS", "id": 27, "name": "EC_ABSENT_SUBSCRIBER",
                       "description": "Absent Subscriber", "permanent": false}),
            ),
            _ => (
                json!({"groupId": 3, "groupName": "DELIVERED", "id": 5,
                       "name": "DELIVERED_TO_HANDSET", "description": "Message delivered to handset"}),
                json!({"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR",
                       "description": "No Error", "permanent": false}),
            ),
        };
        let now = chrono::Utc::now();
        let done = now + chrono::Duration::from_std(self.report_delay).unwrap_or_default();
        // The provider's format: 2019-11-09T16:00:00.000+0000.
        let time =
            |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string();
        json!({"results": [{
            "bulkId": format!("bulk-{message_id}"), "messageId": message_id, "to": to,
            "sentAt": time(now), "doneAt": time(done), "smsCount": 1,
            "price": {"pricePerMessage": 0.01, "currency": "EUR"},
            "callbackData": callback_data, "status": status, "error": error,
        }]})
    }

    /// Posts one report, with a few retries; Basic credentials come from the
    /// URL's user info.
    async fn deliver_report(&self, url: String, body: serde_json::Value) {
        tokio::time::sleep(self.report_delay).await;
        let Ok(mut parsed) = reqwest::Url::parse(&url) else {
            self.count(|s| s.reports_failed += 1);
            return;
        };
        let user = parsed.username().to_string();
        let password = parsed.password().map(str::to_string);
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        for attempt in 0..5u32 {
            let mut request = self.http.post(parsed.clone()).json(&body);
            if !user.is_empty() {
                request = request.basic_auth(&user, password.as_deref());
            }
            if let Ok(r) = request.send().await {
                if r.status().is_success() {
                    self.count(|s| s.reports_sent += 1);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        self.count(|s| s.reports_failed += 1);
    }
}

/// `POST /sms/2/text/advanced`.
pub(crate) async fn send_sms(
    req: HttpRequest,
    body: web::Bytes,
    sim: web::Data<SmsSim>,
) -> HttpResponse {
    sim.into_inner().answer(&req, &body)
}
