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

mod account;
mod http;
mod identity;
pub mod payload;
mod replies;
pub mod signature;
mod sms;
mod status;
mod templates;

pub use http::{configure, serve};
pub use identity::contact_from_user_id;
pub use sms::BasicAuth;

use std::sync::Arc;

use crate::domain::{ContactKey, OptOutScope};
use crate::events::EventsProducer;
use crate::ingest::catalog::CampaignCatalog;
use crate::metrics;
use crate::store::{Store, StoreError};
use crate::whatsapp::payload::parse_callback_data;
use payload::{Envelope, Lenient};

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
    /// The credentials SMS delivery reports must carry; `None` refuses
    /// every report.
    pub sms_reports: Option<BasicAuth>,
    /// When a 131049 failure is retried (`whatsapp.marketing_limit_retry`).
    pub marketing_limit_retry: crate::domain::DeferralSchedule,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("app_secret", &self.app_secret.as_ref().map(|_| "***"))
            .field("verify_token", &self.verify_token.as_ref().map(|_| "***"))
            .field("opt_out_keywords", &self.opt_out_keywords)
            .field("keyword_scope", &self.keyword_scope)
            .field(
                "sms_reports",
                &self.sms_reports.as_ref().map(|a| &a.username),
            )
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
    /// What Meta said of each template (shared with dispatch).
    templates: Arc<crate::dispatch::templates::TemplateBook>,
    /// The messaging limit Meta stated (shared with dispatch).
    limits: Arc<crate::dispatch::limits::LimitBook>,
    /// Phone and user id links already stored.
    links: identity::LinkCache,
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
            templates: Arc::default(),
            limits: Arc::default(),
            links: identity::LinkCache::default(),
        }
    }

    /// Shares `limits` with dispatch: a messaging limit Meta states applies
    /// to the portfolio limit at once.
    pub fn with_limits(mut self, limits: Arc<crate::dispatch::limits::LimitBook>) -> Self {
        self.limits = limits;
        self
    }

    /// Shares `templates` with dispatch: template updates then hold and
    /// resume the campaigns that send them.
    pub fn with_templates(
        mut self,
        templates: Arc<crate::dispatch::templates::TemplateBook>,
    ) -> Self {
        self.templates = templates;
        self
    }

    /// The template book this processor teaches.
    pub fn templates(&self) -> &Arc<crate::dispatch::templates::TemplateBook> {
        &self.templates
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
        let mut events = Vec::new();
        for entry in &envelope.entry {
            // Only template and account updates use the entry's time: a bad
            // one rejects those changes alone, never the entry's statuses.
            let entry_at = || payload::parse_timestamp(entry.time.as_ref(), chrono::Utc::now());
            for change in &entry.changes {
                let v = &change.value;
                if let Some(field @ (templates::STATUS_FIELD | templates::QUALITY_FIELD)) =
                    change.field.as_deref()
                {
                    // Rare, and each reads what the others wrote: one at a time.
                    match entry_at() {
                        Ok(at) => events.extend(self.template_change(field, v, at).await?),
                        Err(e) => {
                            rejected::<()>("template update", &e);
                        }
                    }
                    continue;
                }
                if let Some(field @ (account::CAPABILITY_FIELD | account::NUMBER_QUALITY_FIELD)) =
                    change.field.as_deref()
                {
                    match entry_at() {
                        Ok(at) => events.extend(self.account_change(field, v, at).await?),
                        Err(e) => {
                            rejected::<()>("account update", &e);
                        }
                    }
                    continue;
                }
                // Who is who first: a reply by user id then reaches the
                // contact staged by phone, and its opt-out both identities.
                for link in identity::links(v) {
                    self.link(&link).await?;
                }
                for s in v.statuses.iter().filter_map(|s| accepted("status", s)) {
                    work.push(futures::future::Either::Left(self.status(s)));
                }
                let received_by = v
                    .metadata
                    .as_ref()
                    .and_then(|m| m.phone_number_id.as_deref());
                for m in v.messages.iter().filter_map(|m| accepted("message", m)) {
                    work.push(futures::future::Either::Right(
                        futures::future::Either::Left(self.inbound(m, None, received_by)),
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
        for result in futures::future::join_all(work).await {
            events.extend(result?);
        }
        if let (Some(producer), false) = (&self.events, events.is_empty()) {
            producer.publish(&events).await?;
        }
        Ok(())
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

/// An id from a webhook, unless it is empty or blank (which names nothing).
fn present(id: Option<&str>) -> Option<&str> {
    id.map(str::trim).filter(|id| !id.is_empty())
}
