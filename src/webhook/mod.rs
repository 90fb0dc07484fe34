//! The webhook receiver: Meta's delivery statuses and customer messages.
//!
//! `GET /webhook` answers Meta's subscription handshake. `POST /webhook`
//! checks `X-Hub-Signature-256` over the raw body before anything is parsed
//! (401 and no change otherwise), then applies statuses monotonically,
//! attributes replies to campaigns, records opt-outs and publishes events.
//! It answers 200 only once every change is durable in the store and every
//! event is acknowledged by Kafka: on any failure Meta redelivers, and
//! applying the same webhook twice changes nothing.
//!
//! [`WebhookProcessor`] holds the logic and is usable without HTTP (tests,
//! benchmarks); the actix handlers are thin glue.

pub mod payload;
pub mod signature;

use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Duration, Utc};

use crate::domain::{classify_code, code, ContactKey, DispatchState, ErrorClass, OptOutScope};
use crate::events::{Event, EventError, EventsProducer};
use crate::ingest::catalog::CampaignCatalog;
use crate::metrics;
use crate::store::{ParkedReply, StatusApplied, StatusUpdate, Store, StoreError};
use crate::whatsapp::payload::parse_callback_data;
use payload::{parse_timestamp, Envelope, Inbound, Lenient, Status, UserPreference};

/// Meta's retry for 131049 (per-user marketing limit): try again a day later.
const DEFERRAL: i64 = 24 * 3600;

/// Largest webhook body accepted. Meta batches up to a few hundred changes
/// per POST; 1 MiB leaves ample room and bounds what a bad client can send.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct WebhookSettings {
    pub app_secret: Option<String>,
    pub verify_token: Option<String>,
    /// Whole-message keywords that opt a contact out (compared uppercase).
    pub opt_out_keywords: Vec<String>,
    /// What a keyword opt-out covers (`whatsapp.opt_out_keyword_scope`).
    pub keyword_scope: OptOutScope,
    /// How long a reply whose `context.id` is not indexed yet waits for it
    /// (`http.reply_context_wait_ms`) before it goes to the contact's latest
    /// campaign.
    pub reply_context_wait: std::time::Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("app_secret", &self.app_secret.as_ref().map(|_| "***"))
            .field("verify_token", &self.verify_token.as_ref().map(|_| "***"))
            .field("opt_out_keywords", &self.opt_out_keywords)
            .field("keyword_scope", &self.keyword_scope)
            .finish()
    }
}

/// What a POST gets back.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Missing or wrong signature: 401, nothing changed.
    Unauthorized,
    /// Signed but not a webhook: 400.
    BadRequest(String),
    /// Our side failed (store or Kafka): 500, Meta redelivers.
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] crate::events::PublishError),
}

pub struct WebhookProcessor {
    store: Arc<dyn Store>,
    events: Option<EventsProducer>,
    catalog: CampaignCatalog,
    settings: WebhookSettings,
}

impl WebhookProcessor {
    pub fn new(
        store: Arc<dyn Store>,
        events: Option<EventsProducer>,
        catalog: CampaignCatalog,
        mut settings: WebhookSettings,
    ) -> Self {
        settings.opt_out_keywords = settings
            .opt_out_keywords
            .iter()
            .map(|k| k.trim().to_uppercase())
            .collect();
        WebhookProcessor {
            store,
            events,
            catalog,
            settings,
        }
    }

    /// Meta's subscription handshake.
    pub fn verify_subscription(
        &self,
        mode: Option<&str>,
        token: Option<&str>,
        challenge: Option<&str>,
    ) -> Option<String> {
        let expected = self.settings.verify_token.as_deref()?;
        let token = token?;
        let same = token.len() == expected.len()
            && subtle::ConstantTimeEq::ct_eq(token.as_bytes(), expected.as_bytes()).into();
        (mode == Some("subscribe") && same).then(|| challenge.unwrap_or_default().to_string())
    }

    /// Verifies, parses and applies one POST body.
    pub async fn handle(&self, body: &[u8], signature: Option<&str>) -> Verdict {
        let Some(secret) = self.settings.app_secret.as_deref() else {
            tracing::error!(
                "webhook refused: whatsapp.app_secret is not set (WADISPATCH_APP_SECRET)"
            );
            return Verdict::Unauthorized;
        };
        if !signature::verify(secret.as_bytes(), body, signature) {
            metrics::webhook_request("bad_signature");
            return Verdict::Unauthorized;
        }
        let envelope: Envelope = match serde_json::from_slice(body) {
            Ok(e) => e,
            Err(e) => {
                metrics::webhook_request("bad_request");
                return Verdict::BadRequest(format!("not a webhook body: {e}"));
            }
        };
        if envelope.object.as_deref() != Some("whatsapp_business_account") {
            metrics::webhook_request("bad_request");
            return Verdict::BadRequest(format!(
                "object {:?} is not whatsapp_business_account",
                envelope.object.as_deref().unwrap_or("(missing)")
            ));
        }
        match self.apply(envelope).await {
            Ok(()) => {
                metrics::webhook_request("ok");
                Verdict::Ok
            }
            Err(e) => {
                metrics::webhook_request("error");
                tracing::error!(error = %e, "webhook not applied; answering 500 so that Meta redelivers it");
                Verdict::Failed(e.to_string())
            }
        }
    }

    async fn apply(&self, envelope: Envelope) -> Result<(), ProcessError> {
        let mut work = Vec::new();
        for entry in &envelope.entry {
            for change in &entry.changes {
                let v = &change.value;
                for s in v.statuses.iter().filter_map(|s| accepted("status", s)) {
                    work.push(futures::future::Either::Left(self.status(s)));
                }
                for m in v.messages.iter().filter_map(|m| accepted("message", m)) {
                    work.push(futures::future::Either::Right(
                        futures::future::Either::Left(self.inbound(m, None)),
                    ));
                }
                for p in v
                    .user_preferences
                    .iter()
                    .filter_map(|p| accepted("user preference", p))
                {
                    work.push(futures::future::Either::Right(
                        futures::future::Either::Right(self.preference(p)),
                    ));
                }
            }
        }
        let mut events = Vec::new();
        for result in futures::future::join_all(work).await {
            events.extend(result?);
        }
        if let (Some(producer), false) = (&self.events, events.is_empty()) {
            producer.publish(&events).await?;
        }
        Ok(())
    }

    /// Replies parked for their `context.id`: those whose wamid is now
    /// indexed, or whose wait ended (then the contact's latest campaign),
    /// are taken out of the store (one instance wins each), processed and
    /// published. A failure parks the reply again for the next round.
    /// Returns how many were settled.
    pub async fn settle_parked_replies(&self) -> usize {
        let parked = match self.store.parked_replies(500).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list parked replies; trying again");
                return 0;
            }
        };
        let wait = chrono::Duration::from_std(self.settings.reply_context_wait)
            .unwrap_or(chrono::Duration::zero());
        let mut settled = 0;
        for reply in parked {
            let due = Utc::now() - reply.parked_at >= wait
                || matches!(self.store.lookup_wamid(&reply.wamid).await, Ok(Some(_)));
            if !due {
                continue;
            }
            match self.store.take_parked_reply(&reply.message_id).await {
                Ok(true) => {}
                Ok(false) => continue, // another instance took it
                Err(e) => {
                    tracing::warn!(message_id = %reply.message_id, error = %e, "cannot take a parked reply; trying again");
                    continue;
                }
            }
            let message: Inbound = match serde_json::from_str(&reply.message) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(message_id = %reply.message_id, error = %e, "a parked reply does not parse; dropped");
                    continue;
                }
            };
            let published = match self.inbound(&message, Some(reply.parked_at)).await {
                Ok(events) => match &self.events {
                    Some(producer) if !events.is_empty() => {
                        producer.publish(&events).await.map_err(ProcessError::from)
                    }
                    _ => Ok(()),
                },
                Err(e) => Err(e),
            };
            match published {
                Ok(()) => settled += 1,
                Err(e) => {
                    tracing::warn!(message_id = %reply.message_id, error = %e, "cannot settle a parked reply; it waits for the next round");
                    if let Err(e) = self.store.park_reply(&reply).await {
                        tracing::error!(message_id = %reply.message_id, error = %e, "a reply could not be parked again and is lost to the agent");
                    }
                }
            }
        }
        settled
    }

    /// Settles parked replies every `every` until the processor is dropped
    /// elsewhere (the task ends with the runtime).
    pub async fn run_parked_replies(self: Arc<Self>, every: std::time::Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.settle_parked_replies().await;
        }
    }

    /// Resolves the (campaign, contact) of a message we sent.
    /// Looks up by wamid first, then by callback data.
    async fn correlate(
        &self,
        wamid: Option<&str>,
        callback: Option<&str>,
    ) -> Result<Option<(String, ContactKey)>, StoreError> {
        if let Some(w) = wamid {
            if let Some(entry) = self.store.lookup_wamid(w).await? {
                return Ok(Some((entry.campaign_id, entry.contact)));
            }
        }
        Ok(callback.and_then(parse_callback_data))
    }

    async fn status(&self, s: &Status) -> Result<Vec<Event>, ProcessError> {
        // An empty id names no message: the status is matched by its
        // callback data alone, and never parked under "".
        let wamid = present(s.id.as_deref());
        let Some(state) = funnel_state(s.status.as_deref()) else {
            return Ok(Vec::new());
        };
        let at = match parse_timestamp(s.timestamp.as_ref(), Utc::now()) {
            Ok(at) => at,
            Err(e) => return Ok(rejected("status", &e)),
        };
        let update = status_update(s, wamid, state, at);
        let callback = s.biz_opaque_callback_data.as_deref();
        let Some((campaign, contact)) = self.correlate_or_park(wamid, callback, &update).await?
        else {
            return Ok(Vec::new());
        };
        let mut events = self.contact_facts(&update, &campaign, &contact).await?;
        if let Some(state) = self.apply_status(&campaign, &contact, &update).await? {
            events.push(Event::Status {
                campaign_id: campaign,
                contact: contact.to_string(),
                status: state.as_str().to_string(),
                wamid: s.id.clone(),
                timestamp: at,
                error: matches!(state, DispatchState::Failed | DispatchState::Deferred).then(
                    || EventError {
                        code: update.error_code,
                        class: update.error_class.clone(),
                        message: update.error_message.clone(),
                    },
                ),
            });
        }
        Ok(events)
    }

    /// The campaign and contact of a status, by wamid or callback data.
    /// A status whose wamid is not indexed yet (its API answer is not
    /// written) is parked for it, then looked up once more: the answer may
    /// have been written between the lookup and the park, after its writer
    /// read the parked statuses, and the status would wait for nobody.
    async fn correlate_or_park(
        &self,
        wamid: Option<&str>,
        callback: Option<&str>,
        update: &StatusUpdate,
    ) -> Result<Option<(String, ContactKey)>, ProcessError> {
        if let Some(found) = self.correlate(wamid, callback).await? {
            return Ok(Some(found));
        }
        let Some(w) = wamid else {
            metrics::webhook_status("uncorrelated");
            return Ok(None);
        };
        self.store.park_status(w, update).await?;
        match self.store.lookup_wamid(w).await? {
            Some(entry) => Ok(Some((entry.campaign_id, entry.contact))),
            None => {
                metrics::webhook_status("parked");
                Ok(None)
            }
        }
    }

    /// What a failed status says of the contact beyond this campaign:
    /// 131050 opts it out of marketing (with its `opt_out` event), 131026
    /// marks it undeliverable.
    async fn contact_facts(
        &self,
        update: &StatusUpdate,
        campaign: &str,
        contact: &ContactKey,
    ) -> Result<Vec<Event>, ProcessError> {
        let (DispatchState::Failed, Some(code)) = (update.state, update.error_code) else {
            return Ok(Vec::new());
        };
        let at = update.at;
        if ErrorClass::marks_opt_out(code) {
            // 131050: the person stopped marketing messages only.
            self.store
                .set_opt_out(contact, OptOutScope::Marketing, true, at)
                .await?;
            return Ok(vec![Event::OptOut {
                contact: contact.to_string(),
                opted_out: true,
                scope: OptOutScope::Marketing,
                source: "error_131050".into(),
                campaign_id: Some(campaign.to_string()),
                timestamp: at,
            }]);
        }
        if code == code::NOT_WHATSAPP_USER {
            self.store.mark_undeliverable(contact, at).await?;
        }
        Ok(Vec::new())
    }

    /// Applies a status to the contact's row; answers the state to publish:
    /// a change, or a redelivery of the same status.
    async fn apply_status(
        &self,
        campaign: &str,
        contact: &ContactKey,
        update: &StatusUpdate,
    ) -> Result<Option<DispatchState>, ProcessError> {
        Ok(
            match self.store.apply_status(campaign, contact, update).await? {
                StatusApplied::Changed { to, .. } => {
                    metrics::funnel(campaign, to);
                    if to == DispatchState::Failed {
                        let class = update.error_class.as_deref().unwrap_or("unknown");
                        metrics::failure(campaign, class, update.error_code);
                    }
                    metrics::webhook_status("applied");
                    Some(to)
                }
                StatusApplied::Unchanged { state } => {
                    metrics::webhook_status("duplicate");
                    // Meta redelivers a webhook we did not answer 200, e.g.
                    // when publishing its events failed: publish the same
                    // status event again (at-least-once; consumers
                    // de-duplicate by wamid and status). A stale status
                    // (sent after read) publishes nothing.
                    (state == update.state).then_some(state)
                }
                StatusApplied::Missing => {
                    metrics::webhook_status("unknown_contact");
                    None
                }
            },
        )
    }

    fn is_opt_out_keyword(&self, text: Option<&str>) -> bool {
        text.map(|t| t.trim().to_uppercase())
            .is_some_and(|t| self.settings.opt_out_keywords.contains(&t))
    }

    /// One inbound message. `parked` is when it was parked, for a reply
    /// taken back from the store; a new one whose `context.id` is not
    /// indexed yet is parked (nothing published yet) instead of being
    /// attributed to a guess.
    async fn inbound(
        &self,
        m: &Inbound,
        parked: Option<chrono::DateTime<Utc>>,
    ) -> Result<Vec<Event>, ProcessError> {
        let Some(from) = m.from.as_deref() else {
            return Ok(Vec::new());
        };
        let at = match parse_timestamp(m.timestamp.as_ref(), Utc::now()) {
            Ok(at) => at,
            Err(e) => return Ok(rejected("message", &e)),
        };
        let context = present(m.context.as_ref().and_then(|c| c.id.as_deref()));
        let sender = contact_from_wa_id(from);
        // The campaign message it answers, else the contact's latest campaign.
        let correlated = self.correlate(context, None).await?;
        let (kind, text, payload) = m.content();
        let opts_out =
            self.is_opt_out_keyword(text.as_deref()) || self.is_opt_out_keyword(payload.as_deref());
        if correlated.is_none()
            && self
                .park_for_context(m, context, parked, &sender, opts_out, at)
                .await?
        {
            return Ok(Vec::new());
        }
        let (campaign, contact) = match correlated {
            Some((campaign, contact)) => (Some(campaign), contact),
            None => {
                let last = self
                    .store
                    .get_contact(&sender)
                    .await?
                    .and_then(|c| c.last_campaign);
                (last, sender)
            }
        };
        if let Some(campaign) = &campaign {
            self.mark_replied(campaign, &contact, at).await?;
        }
        let mut events = Vec::new();
        if opts_out {
            let scope = self.settings.keyword_scope;
            self.store.set_opt_out(&contact, scope, true, at).await?;
            events.push(Event::OptOut {
                contact: contact.to_string(),
                opted_out: true,
                scope,
                source: "keyword".into(),
                campaign_id: campaign.clone(),
                timestamp: at,
            });
        }
        let entry = campaign.as_deref().and_then(|c| self.catalog.get(c));
        events.push(Event::Reply {
            campaign_id: campaign,
            contact: contact.to_string(),
            agent: entry
                .as_ref()
                .and_then(|e| e.spec.reply_routing.as_ref().map(|r| r.agent.clone())),
            tags: entry
                .as_ref()
                .map(|e| e.spec.tags.clone())
                .unwrap_or_default(),
            message_id: m.id.clone().unwrap_or_default(),
            in_reply_to: context.map(String::from),
            kind,
            text,
            payload,
            timestamp: at,
        });
        Ok(events)
    }

    /// A reply to a message whose wamid is not indexed yet waits for it
    /// (`http.reply_context_wait_ms`): it is parked and answers true. A STOP
    /// holds from now on, not from when the reply is settled (its `opt_out`
    /// event is published then). A parked reply taken back after its wait
    /// (`parked` set) is not parked again: it goes to the contact's latest
    /// campaign.
    async fn park_for_context(
        &self,
        m: &Inbound,
        context: Option<&str>,
        parked: Option<chrono::DateTime<Utc>>,
        sender: &ContactKey,
        opts_out: bool,
        at: chrono::DateTime<Utc>,
    ) -> Result<bool, ProcessError> {
        let (Some(wamid), Some(id)) = (context, present(m.id.as_deref())) else {
            return Ok(false);
        };
        if parked.is_some() {
            metrics::webhook_status("reply_unattributed");
            return Ok(false);
        }
        if self.settings.reply_context_wait.is_zero() {
            return Ok(false);
        }
        if opts_out {
            self.store
                .set_opt_out(sender, self.settings.keyword_scope, true, at)
                .await?;
        }
        self.store
            .park_reply(&ParkedReply {
                message_id: id.to_string(),
                wamid: wamid.to_string(),
                message: serde_json::to_string(m).unwrap_or_default(),
                parked_at: Utc::now(),
            })
            .await?;
        metrics::webhook_status("reply_parked");
        Ok(true)
    }

    async fn mark_replied(
        &self,
        campaign: &str,
        contact: &ContactKey,
        at: chrono::DateTime<Utc>,
    ) -> Result<(), ProcessError> {
        let update = StatusUpdate {
            state: DispatchState::Replied,
            at,
            wamid: None,
            error_code: None,
            error_class: None,
            error_message: None,
            defer_until: None,
        };
        if let StatusApplied::Changed { to, .. } =
            self.store.apply_status(campaign, contact, &update).await?
        {
            metrics::funnel(campaign, to);
        }
        Ok(())
    }

    async fn preference(&self, p: &UserPreference) -> Result<Vec<Event>, ProcessError> {
        let (Some(wa_id), Some(value)) = (p.wa_id.as_deref(), p.value.as_deref()) else {
            return Ok(Vec::new());
        };
        if p.category
            .as_deref()
            .is_some_and(|c| c != "marketing_messages")
        {
            return Ok(Vec::new());
        }
        let opted_out = match value {
            "stop" => true,
            "resume" => false,
            _ => return Ok(Vec::new()),
        };
        let at = match parse_timestamp(p.timestamp.as_ref(), Utc::now()) {
            Ok(at) => at,
            Err(e) => return Ok(rejected("user preference", &e)),
        };
        let contact = contact_from_wa_id(wa_id);
        // A `marketing_messages` preference covers marketing templates only.
        self.store
            .set_opt_out(&contact, OptOutScope::Marketing, opted_out, at)
            .await?;
        Ok(vec![Event::OptOut {
            contact: contact.to_string(),
            opted_out,
            scope: OptOutScope::Marketing,
            source: "user_preferences".into(),
            campaign_id: None,
            timestamp: at,
        }])
    }
}

/// The funnel state a status names; `None` for statuses outside the
/// funnel (deleted, warning, played, ...).
fn funnel_state(status: Option<&str>) -> Option<DispatchState> {
    match status? {
        "sent" => Some(DispatchState::Sent),
        "delivered" => Some(DispatchState::Delivered),
        "read" => Some(DispatchState::Read),
        "failed" => Some(DispatchState::Failed),
        _ => None,
    }
}

/// The store's update for a status: its error's code, class and message
/// (Meta's details, else its message or title, else the code's own
/// description), and for a failed 131049 the time of the one retry.
fn status_update(
    s: &Status,
    wamid: Option<&str>,
    state: DispatchState,
    at: chrono::DateTime<Utc>,
) -> StatusUpdate {
    let error = s.errors.first();
    let code = error.and_then(|e| e.code);
    let class = code.map(classify_code);
    let message = error.map(|e| {
        e.error_data
            .as_ref()
            .and_then(|d| d.details.clone())
            .or_else(|| e.message.clone())
            .or_else(|| e.title.clone())
            .unwrap_or_else(|| {
                code.map(crate::domain::describe_code)
                    .unwrap_or("failed")
                    .to_string()
            })
    });
    StatusUpdate {
        state,
        at,
        wamid: wamid.map(String::from),
        error_code: code,
        error_class: class.map(|c| c.as_str().to_string()),
        error_message: message,
        defer_until: (state == DispatchState::Failed && class == Some(ErrorClass::Deferred))
            .then(|| at.checked_add_signed(Duration::seconds(DEFERRAL)))
            .flatten(),
    }
}

/// The item when it parsed; a rejected one is logged and counted, and the
/// rest of the POST still applies (Meta would redeliver the whole POST on an
/// error answer, and the bad item would never parse).
fn accepted<'a, T>(kind: &str, item: &'a Lenient<T>) -> Option<&'a T> {
    match item {
        Lenient::Ok(t) => Some(t),
        Lenient::Bad(e) => {
            rejected::<()>(kind, e);
            None
        }
    }
}

fn rejected<T>(kind: &str, why: &str) -> Vec<T> {
    tracing::warn!(
        kind,
        error = why,
        "webhook item rejected; the rest of the POST applies"
    );
    metrics::webhook_status("rejected");
    Vec::new()
}

/// A `wa_id` is the phone's digits without '+'; normalise it like staged
/// contacts (so `521…` Mexican ids match `+52…` keys), else keep it as is.
pub fn contact_from_wa_id(wa_id: &str) -> ContactKey {
    let candidate = if wa_id.starts_with('+') || !wa_id.bytes().all(|b| b.is_ascii_digit()) {
        wa_id.to_string()
    } else {
        format!("+{wa_id}")
    };
    ContactKey::parse_id(&candidate, None).unwrap_or_else(|_| ContactKey::raw(wa_id))
}

// ---- actix glue ----

#[derive(serde::Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn get_webhook(
    processor: web::Data<WebhookProcessor>,
    query: web::Query<Handshake>,
) -> HttpResponse {
    match processor.verify_subscription(
        query.mode.as_deref(),
        query.token.as_deref(),
        query.challenge.as_deref(),
    ) {
        Some(challenge) => {
            metrics::webhook_request("verified");
            HttpResponse::Ok()
                .content_type("text/plain")
                .body(challenge)
        }
        None => {
            metrics::webhook_request("forbidden");
            HttpResponse::Forbidden().body("verify token does not match")
        }
    }
}

async fn post_webhook(
    processor: web::Data<WebhookProcessor>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let started = Instant::now();
    let signature = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    let verdict = processor.handle(&body, signature).await;
    metrics::webhook_duration(started.elapsed().as_secs_f64());
    match verdict {
        Verdict::Ok => HttpResponse::Ok().finish(),
        Verdict::Unauthorized => {
            HttpResponse::Unauthorized().body("bad or missing X-Hub-Signature-256")
        }
        Verdict::BadRequest(m) => HttpResponse::BadRequest().body(m),
        Verdict::Failed(m) => HttpResponse::InternalServerError().body(m),
    }
}

/// Routes of the webhook receiver, for the daemon's HTTP listener.
pub fn configure(processor: web::Data<WebhookProcessor>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(processor)
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .route("/webhook", web::get().to(get_webhook))
            .route("/webhook", web::post().to(post_webhook));
    }
}

/// Starts the webhook listener on `listen` (port 0 picks a free one); the
/// caller spawns the returned server. Also returns the bound address.
pub fn serve(
    processor: Arc<WebhookProcessor>,
    listen: &str,
    workers: usize,
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let data = web::Data::from(processor);
    let http = actix_web::HttpServer::new(move || {
        actix_web::App::new().configure(configure(data.clone()))
    })
    .workers(workers)
    .disable_signals()
    // Meta redelivers anything we do not answer: a stop need not wait long.
    .shutdown_timeout(2)
    .bind(listen)?;
    let addr = http
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other(format!("no address bound for {listen}")))?;
    Ok((http.run(), addr))
}

/// An id from a webhook, unless it is empty or blank (which names nothing).
fn present(id: Option<&str>) -> Option<&str> {
    id.map(str::trim).filter(|id| !id.is_empty())
}
