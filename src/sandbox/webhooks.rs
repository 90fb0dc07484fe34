//! Signed status and reply webhooks, delivered off the API path.
//!
//! Flow: the API handler `offer`s an accepted message to a bounded queue
//! (never waits: a full queue counts the message's events as dropped). One
//! scheduler task keeps the message timelines — step `k` of a message is due
//! `(k + 1) × status_delay_ms` after acceptance — in one FIFO per step, which
//! stay sorted because acceptance times are; every `webhook_flush_ms` it moves
//! due events into per-lane batches (`webhook_batch_max` events at most).
//! Lane workers sign and POST batches one at a time, retrying in place with
//! exponential backoff. A recipient always maps to the same lane, so its
//! events arrive in order even across retries; Meta does not promise that
//! order, so receivers must still apply statuses monotonically.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::rules::{self, Outcome, Reply, BUTTON_TEXTS, PROFILE_NAMES, REPLY_TEXTS};
use super::stats::{NumberState, Stats};
use super::SandboxConfig;

/// `X-Hub-Signature-256` value: `sha256=<hex HMAC-SHA256(body, app_secret)>`.
pub(crate) fn signature(app_secret: &[u8], body: &[u8]) -> String {
    // HMAC-SHA256 accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret).expect("hmac takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What the webhooks of one accepted message need.
pub(crate) struct MessageInfo {
    pub(crate) wamid: Box<str>,
    /// The phone's digits; empty for a user known by user id only.
    pub(crate) wa_id: Box<str>,
    /// The recipient's business-scoped user id, when it has one.
    pub(crate) user_id: Option<Box<str>>,
    pub(crate) recipient_key: u64,
    pub(crate) biz_opaque: Option<Box<str>>,
    pub(crate) quick_reply_payload: Option<Box<str>>,
    pub(crate) number: Arc<NumberState>,
    /// What Meta bills the message under.
    pub(crate) category: super::PricingCategory,
}

/// An accepted message handed to the dispatcher.
pub(crate) struct Outbound {
    pub(crate) message: Arc<MessageInfo>,
    pub(crate) outcome: Outcome,
    pub(crate) accepted_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Sent,
    Delivered,
    Read,
    Failed(i64),
    Reply(Reply),
}

const MAX_STEPS: usize = 4;

/// The webhooks an outcome produces, in order.
fn steps(outcome: &Outcome) -> ([Option<Step>; MAX_STEPS], usize) {
    let mut out = [None; MAX_STEPS];
    let mut n = 0;
    let mut push = |s| {
        out[n] = Some(s);
        n += 1;
    };
    match *outcome {
        Outcome::Failed(code) => push(Step::Failed(code)),
        Outcome::Delivered {
            delivered_status,
            read,
            reply,
        } => {
            push(Step::Sent);
            if delivered_status {
                push(Step::Delivered);
            }
            if read {
                push(Step::Read);
            }
            if let Some(r) = reply {
                push(Step::Reply(r));
            }
        }
    }
    (out, n)
}

/// Handler side of the dispatcher.
pub(crate) struct WebhookQueue {
    tx: mpsc::Sender<Outbound>,
    stats: Arc<Stats>,
}

impl WebhookQueue {
    /// Hand over an accepted message; never blocks.
    pub(crate) fn offer(&self, outbound: Outbound) {
        if let Err(e) = self.tx.try_send(outbound) {
            let lost = match e {
                mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => {
                    steps(&o.outcome).1
                }
            };
            self.stats.webhooks_dropped.fetch_add(lost as u64, Relaxed);
        }
    }
}

/// Immutable settings of the dispatcher.
struct Settings {
    url: String,
    secret: Vec<u8>,
    waba_id: String,
    display_phone_number: String,
    status_delay: Duration,
    flush_every: Duration,
    batch_max: usize,
    lanes: usize,
    queue_capacity: usize,
    max_attempts: u32,
    retry_base: Duration,
    timeout: Duration,
    nonce: u32,
}

/// Start the scheduler and lane workers on the current runtime.
pub(crate) fn spawn(
    config: &SandboxConfig,
    url: String,
    stats: Arc<Stats>,
    nonce: u32,
) -> std::io::Result<WebhookQueue> {
    let settings = Arc::new(Settings {
        url,
        secret: config.app_secret.as_bytes().to_vec(),
        waba_id: config.waba_id.clone(),
        display_phone_number: config.display_phone_number.clone(),
        status_delay: Duration::from_millis(config.status_delay_ms),
        flush_every: Duration::from_millis(config.webhook_flush_ms.max(1)),
        batch_max: config.webhook_batch_max.max(1),
        lanes: config.webhook_lanes.max(1),
        queue_capacity: config.webhook_queue_capacity.max(1),
        max_attempts: config.webhook_max_attempts.max(1),
        retry_base: Duration::from_millis(config.webhook_retry_base_ms),
        timeout: Duration::from_millis(config.webhook_timeout_ms.max(1)),
        nonce,
    });
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .pool_max_idle_per_host(settings.lanes * 2)
        .build()
        .map_err(std::io::Error::other)?;
    let (tx, rx) = mpsc::channel(settings.queue_capacity);
    let mut lane_txs = Vec::with_capacity(settings.lanes);
    // Each lane may hold its share of the queue capacity in batches; beyond
    // that the receiver is too slow and batches are dropped (counted).
    let lane_capacity =
        (settings.queue_capacity / (settings.batch_max * settings.lanes)).clamp(8, 1024);
    for _ in 0..settings.lanes {
        let (lane_tx, lane_rx) = mpsc::channel(lane_capacity);
        lane_txs.push(lane_tx);
        tokio::spawn(lane(
            lane_rx,
            client.clone(),
            Arc::clone(&settings),
            Arc::clone(&stats),
        ));
    }
    tokio::spawn(schedule(rx, lane_txs, settings, Arc::clone(&stats)));
    Ok(WebhookQueue { tx, stats })
}

/// A message waiting for its next webhook.
struct Pending {
    message: Arc<MessageInfo>,
    steps: [Option<Step>; MAX_STEPS],
    len: usize,
    accepted_at: Instant,
}

/// One event of a batch.
struct Event {
    message: Arc<MessageInfo>,
    step: Step,
    timestamp: u64,
    /// Sequence of inbound messages, for their ids.
    inbound_seq: u64,
}

async fn schedule(
    mut rx: mpsc::Receiver<Outbound>,
    lanes: Vec<mpsc::Sender<Vec<Event>>>,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
) {
    // stages[k] holds messages whose step k is next, due at
    // accepted_at + (k + 1) * status_delay: FIFO order is due order.
    let mut stages: [VecDeque<Pending>; MAX_STEPS] = Default::default();
    let mut pending = 0usize;
    let mut buffers: Vec<Vec<Event>> = (0..lanes.len()).map(|_| Vec::new()).collect();
    let mut ticker = tokio::time::interval(settings.flush_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let inbound_seq = AtomicU64::new(0);
    let mut open = true;
    while open || pending > 0 {
        tokio::select! {
            received = rx.recv(), if open => match received {
                Some(o) => {
                    let (steps, len) = steps(&o.outcome);
                    // Bounds the timelines too, not only the hand-over queue.
                    if pending >= settings.queue_capacity {
                        stats.webhooks_dropped.fetch_add(len as u64, Relaxed);
                    } else {
                        pending += 1;
                        stages[0].push_back(Pending { message: o.message, steps, len, accepted_at: o.accepted_at });
                    }
                }
                None => open = false,
            },
            _ = ticker.tick() => {
                let now = Instant::now();
                let unix = unix_now();
                for k in 0..MAX_STEPS {
                    let due_after = settings.status_delay * (k as u32 + 1);
                    while stages[k].front().is_some_and(|p| p.accepted_at + due_after <= now) {
                        let Some(p) = stages[k].pop_front() else { break };
                        let Some(step) = p.steps[k] else {
                            pending -= 1;
                            continue;
                        };
                        let lane = (rules::mix64(p.message.recipient_key) % lanes.len() as u64) as usize;
                        let seq = if matches!(step, Step::Reply(_)) { inbound_seq.fetch_add(1, Relaxed) + 1 } else { 0 };
                        buffers[lane].push(Event { message: Arc::clone(&p.message), step, timestamp: unix, inbound_seq: seq });
                        if buffers[lane].len() >= settings.batch_max {
                            hand_over(&lanes[lane], &mut buffers[lane], &stats);
                        }
                        if k + 1 < p.len {
                            stages[k + 1].push_back(p);
                        } else {
                            pending -= 1;
                        }
                    }
                }
                for (lane, buffer) in lanes.iter().zip(buffers.iter_mut()) {
                    if !buffer.is_empty() {
                        hand_over(lane, buffer, &stats);
                    }
                }
            }
        }
    }
}

fn hand_over(lane: &mpsc::Sender<Vec<Event>>, buffer: &mut Vec<Event>, stats: &Stats) {
    let batch = std::mem::take(buffer);
    if let Err(e) = lane.try_send(batch) {
        let lost = match e {
            mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b.len(),
        };
        stats.webhooks_dropped.fetch_add(lost as u64, Relaxed);
    }
}

async fn lane(
    mut rx: mpsc::Receiver<Vec<Event>>,
    client: reqwest::Client,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
) {
    while let Some(batch) = rx.recv().await {
        let body = Bytes::from(envelope(&batch, &settings));
        let signature = signature(&settings.secret, &body);
        let replies = batch
            .iter()
            .filter(|e| matches!(e.step, Step::Reply(_)))
            .count() as u64;
        let mut delivered = false;
        for attempt in 1..=settings.max_attempts {
            let result = client
                .post(&settings.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-Hub-Signature-256", &signature)
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(resp) if resp.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(resp) => {
                    tracing::debug!(status = %resp.status(), attempt, "sandbox webhook refused");
                }
                Err(e) => tracing::debug!(error = %e, attempt, "sandbox webhook failed"),
            }
            stats.webhook_failures.fetch_add(1, Relaxed);
            if attempt < settings.max_attempts {
                // Meta retries with exponential backoff for days; the sandbox
                // keeps the same shape over a few seconds.
                tokio::time::sleep(settings.retry_base * 2u32.saturating_pow(attempt - 1)).await;
            }
        }
        if delivered {
            stats.webhook_posts.fetch_add(1, Relaxed);
            stats.webhooks_sent.fetch_add(batch.len() as u64, Relaxed);
            stats.replies_sent.fetch_add(replies, Relaxed);
        } else {
            tracing::warn!(events = batch.len(), url = %settings.url, "sandbox webhook dropped after retries");
            stats
                .webhooks_dropped
                .fetch_add(batch.len() as u64, Relaxed);
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------
// Meta's envelope
// ---------------------------------------------------------------------------

/// Serialise a batch as one `whatsapp_business_account` notification: one
/// change per phone number carrying its statuses, one change per reply.
fn envelope(batch: &[Event], settings: &Settings) -> Vec<u8> {
    let mut changes: Vec<Change<'_>> = Vec::new();
    for event in batch {
        if matches!(event.step, Step::Reply(_)) {
            continue;
        }
        let number = &event.message.number;
        match changes.iter_mut().find(|c| Arc::ptr_eq(c.number, number)) {
            Some(c) => c.statuses.push(event),
            None => changes.push(Change {
                number,
                statuses: vec![event],
                reply: None,
                settings,
            }),
        }
    }
    for event in batch {
        if matches!(event.step, Step::Reply(_)) {
            changes.push(Change {
                number: &event.message.number,
                statuses: Vec::new(),
                reply: Some(event),
                settings,
            });
        }
    }
    let notification = Notification {
        waba_id: &settings.waba_id,
        changes,
    };
    // Serialising plain structs of strings and numbers into memory cannot fail.
    serde_json::to_vec(&notification).expect("webhook envelope serialises")
}

struct Notification<'a> {
    waba_id: &'a str,
    changes: Vec<Change<'a>>,
}

struct Change<'a> {
    number: &'a Arc<NumberState>,
    statuses: Vec<&'a Event>,
    reply: Option<&'a Event>,
    settings: &'a Settings,
}

struct Entry<'a>(&'a Notification<'a>);
struct Value<'a>(&'a Change<'a>);
struct Metadata<'a>(&'a Change<'a>);
struct StatusOut<'a>(&'a Event);
struct StatusError(i64);
struct ErrorData(i64);
struct Pricing(super::PricingCategory);
struct ContactOut<'a>(&'a Event);
struct Profile<'a>(&'a Event);
struct InboundOut<'a>(&'a Event, &'a Settings);
struct Context<'a>(&'a Event, &'a Settings);
struct TextBody(&'static str);
struct ButtonOut<'a>(&'a Event, usize);
struct UnixSecs(u64);

impl Serialize for Notification<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Notification", 2)?;
        st.serialize_field("object", "whatsapp_business_account")?;
        st.serialize_field("entry", &[Entry(self)])?;
        st.end()
    }
}

impl Serialize for Entry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Entry", 2)?;
        st.serialize_field("id", self.0.waba_id)?;
        st.serialize_field("changes", &self.0.changes)?;
        st.end()
    }
}

impl Serialize for Change<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Change", 2)?;
        st.serialize_field("value", &Value(self))?;
        st.serialize_field("field", "messages")?;
        st.end()
    }
}

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let change = self.0;
        let mut st = s.serialize_struct("Value", 4)?;
        st.serialize_field("messaging_product", "whatsapp")?;
        st.serialize_field("metadata", &Metadata(change))?;
        match change.reply {
            Some(event) => {
                st.serialize_field("contacts", &[ContactOut(event)])?;
                st.serialize_field("messages", &[InboundOut(event, change.settings)])?;
            }
            None => {
                let statuses: Vec<StatusOut<'_>> =
                    change.statuses.iter().map(|e| StatusOut(e)).collect();
                st.serialize_field("statuses", &statuses)?;
            }
        }
        st.end()
    }
}

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Metadata", 2)?;
        st.serialize_field(
            "display_phone_number",
            &self.0.settings.display_phone_number,
        )?;
        st.serialize_field("phone_number_id", &*self.0.number.id)?;
        st.end()
    }
}

impl Serialize for StatusOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = self.0;
        let m = &e.message;
        let mut st = s.serialize_struct("Status", 7)?;
        st.serialize_field("id", &*m.wamid)?;
        let status = match e.step {
            Step::Sent => "sent",
            Step::Delivered => "delivered",
            Step::Read => "read",
            Step::Failed(_) => "failed",
            Step::Reply(_) => unreachable!("replies are not statuses"),
        };
        st.serialize_field("status", status)?;
        st.serialize_field("timestamp", &UnixSecs(e.timestamp))?;
        if !m.wa_id.is_empty() {
            st.serialize_field("recipient_id", &*m.wa_id)?;
        }
        // Meta leaves the user id out of a failed status of a message sent
        // to a phone.
        match (&m.user_id, e.step) {
            (Some(_), Step::Failed(_)) if !m.wa_id.is_empty() => {}
            (Some(u), _) => st.serialize_field("recipient_user_id", &**u)?,
            (None, _) => {}
        }
        if let Some(b) = &m.biz_opaque {
            st.serialize_field("biz_opaque_callback_data", &**b)?;
        }
        match e.step {
            Step::Failed(code) => st.serialize_field("errors", &[StatusError(code)])?,
            Step::Sent | Step::Delivered => st.serialize_field("pricing", &Pricing(m.category))?,
            _ => {}
        }
        st.end()
    }
}

impl Serialize for StatusError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Error", 5)?;
        st.serialize_field("code", &self.0)?;
        st.serialize_field("title", rules::title(self.0))?;
        st.serialize_field("message", rules::title(self.0))?;
        st.serialize_field("error_data", &ErrorData(self.0))?;
        st.serialize_field("href", rules::ERROR_CODES_HREF)?;
        st.end()
    }
}

impl Serialize for ErrorData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ErrorData", 1)?;
        st.serialize_field("details", rules::default_details(self.0))?;
        st.end()
    }
}

impl Serialize for Pricing {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Per-message pricing as reported since mid-2025; receivers must
        // ignore what they do not use.
        let mut st = s.serialize_struct("Pricing", 4)?;
        st.serialize_field("billable", &true)?;
        st.serialize_field("pricing_model", "PMP")?;
        st.serialize_field("category", self.0.as_str())?;
        st.serialize_field("type", "regular")?;
        st.end()
    }
}

impl Serialize for ContactOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = &self.0.message;
        let mut st = s.serialize_struct("Contact", 3)?;
        st.serialize_field("profile", &Profile(self.0))?;
        if !m.wa_id.is_empty() {
            st.serialize_field("wa_id", &*m.wa_id)?;
        }
        if let Some(u) = &m.user_id {
            st.serialize_field("user_id", &**u)?;
        }
        st.end()
    }
}

impl Serialize for Profile<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = (rules::mix64(self.0.message.recipient_key) % PROFILE_NAMES.len() as u64) as usize;
        let mut st = s.serialize_struct("Profile", 2)?;
        st.serialize_field("name", PROFILE_NAMES[i])?;
        // A user known by user id only has a username (that is why Meta
        // hides the phone).
        if self.0.message.wa_id.is_empty() {
            st.serialize_field(
                "username",
                &format_args!(
                    "{}.{:04}",
                    PROFILE_NAMES[i].to_lowercase().replace(' ', "_"),
                    self.0.message.recipient_key % 10_000
                ),
            )?;
        }
        st.end()
    }
}

impl Serialize for InboundOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (e, settings) = (self.0, self.1);
        let mut st = s.serialize_struct("Message", 6)?;
        st.serialize_field("context", &Context(e, settings))?;
        if !e.message.wa_id.is_empty() {
            st.serialize_field("from", &*e.message.wa_id)?;
        }
        if let Some(u) = &e.message.user_id {
            st.serialize_field("from_user_id", &**u)?;
        }
        st.serialize_field(
            "id",
            &format_args!("wamid.in.{:08x}.{}", settings.nonce, e.inbound_seq),
        )?;
        st.serialize_field("timestamp", &UnixSecs(e.timestamp))?;
        match e.step {
            Step::Reply(Reply::Button(i)) => {
                st.serialize_field("type", "button")?;
                st.serialize_field("button", &ButtonOut(e, i))?;
            }
            Step::Reply(Reply::Stop) => {
                st.serialize_field("type", "text")?;
                st.serialize_field("text", &TextBody("STOP"))?;
            }
            Step::Reply(Reply::Text(i)) => {
                st.serialize_field("type", "text")?;
                st.serialize_field("text", &TextBody(REPLY_TEXTS[i % REPLY_TEXTS.len()]))?;
            }
            _ => unreachable!("only replies are inbound messages"),
        }
        st.end()
    }
}

impl Serialize for Context<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Context", 2)?;
        st.serialize_field("from", &self.1.display_phone_number)?;
        st.serialize_field("id", &*self.0.message.wamid)?;
        st.end()
    }
}

impl Serialize for TextBody {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Text", 1)?;
        st.serialize_field("body", self.0)?;
        st.end()
    }
}

impl Serialize for ButtonOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = BUTTON_TEXTS[self.1 % BUTTON_TEXTS.len()];
        // Meta echoes the payload the business set on the quick-reply button;
        // without one, the payload is the button text.
        let payload = self
            .0
            .message
            .quick_reply_payload
            .as_deref()
            .unwrap_or(text);
        let mut st = s.serialize_struct("Button", 2)?;
        st.serialize_field("payload", payload)?;
        st.serialize_field("text", text)?;
        st.end()
    }
}

impl Serialize for UnixSecs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Meta sends unix seconds as a string.
        s.collect_str(&self.0)
    }
}

#[cfg(test)]
mod tests;
