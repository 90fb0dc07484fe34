//! Template health in the sandbox: `POST /sandbox/templates` changes what
//! Meta says of a template, as WhatsApp Manager or Meta's quality review
//! would, and posts the signed `message_template_status_update` or
//! `message_template_quality_update` webhook that Meta sends then (shape:
//! Meta's webhook reference for those two fields). While a template is
//! paused, sends of it answer 132015; disabled, 132016; rejected, being
//! deleted or otherwise not approved, 132001.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::rules::{code, ApiError};
use super::server::Shared;
use super::stats::lock;
use super::webhooks::signature;

/// The request of `POST /sandbox/templates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateChange {
    pub name: String,
    pub language: String,
    /// A status event (`PAUSED`, `APPROVED`, `DISABLED`, `REJECTED`, …).
    #[serde(default)]
    pub event: Option<String>,
    /// Meta's `reason` (`NONE` by default).
    #[serde(default)]
    pub reason: Option<String>,
    /// `other_info.title` of a pause (`FIRST_PAUSE`, `UNPAUSE`, …).
    #[serde(default)]
    pub title: Option<String>,
    /// A quality score instead of a status (`GREEN`, `YELLOW`, `RED`).
    #[serde(default)]
    pub quality: Option<String>,
    /// Post the webhook (default true). False changes the status silently,
    /// as for a business not subscribed to template webhooks: the daemon
    /// learns it from the 132015 / 132016 answers.
    #[serde(default = "yes")]
    pub webhook: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize)]
struct ChangeAnswer {
    status: Option<String>,
    quality: Option<String>,
    /// The HTTP status the webhook receiver answered, or null when no
    /// webhook URL is configured or it could not be reached.
    webhook_status: Option<u16>,
}

/// What the sandbox's Meta says of each template, by `name/language`
/// (language folded like the daemon's: `en-US` is `en_us`).
#[derive(Default)]
pub(crate) struct TemplateStates {
    states: Mutex<HashMap<String, (String, Option<String>)>>,
    /// Template ids as Meta numbers them, stable per template.
    ids: Mutex<HashMap<String, u64>>,
}

fn key(name: &str, language: &str) -> String {
    format!(
        "{}/{}",
        name.trim().to_lowercase(),
        language.trim().replace('-', "_").to_lowercase()
    )
}

impl TemplateStates {
    /// The refusal of a send of this template, if its status forbids it.
    pub(crate) fn refusal(&self, name: &str, language: &str) -> Option<ApiError> {
        let states = lock(&self.states);
        let (status, _) = states.get(&key(name, language))?;
        let code = match status.as_str() {
            "APPROVED" | "REINSTATED" | "UNARCHIVED" | "FLAGGED" => return None,
            "PAUSED" => code::TEMPLATE_PAUSED,
            "DISABLED" => code::TEMPLATE_DISABLED,
            _ => code::TEMPLATE_MISSING,
        };
        Some(ApiError::new(
            code,
            format!("template {name:?} ({language}) is {status}"),
        ))
    }

    /// Every template approved again (`POST /sandbox/reset`).
    pub(crate) fn reset(&self) {
        lock(&self.states).clear();
    }

    fn id(&self, k: &str) -> u64 {
        let mut ids = lock(&self.ids);
        let next = 1_689_556_908_129_800 + ids.len() as u64;
        *ids.entry(k.to_string()).or_insert(next)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The webhook body Meta posts for `change`.
fn envelope(shared: &Shared, change: &TemplateChange, id: u64) -> serde_json::Value {
    let (field, value) = match (&change.event, &change.quality) {
        (Some(event), _) => {
            let mut value = serde_json::json!({
                "event": event.to_uppercase(),
                "message_template_id": id,
                "message_template_name": change.name,
                "message_template_language": change.language,
                "reason": change.reason.clone().unwrap_or_else(|| "NONE".into()),
            });
            if let Some(title) = &change.title {
                value["other_info"] = serde_json::json!({
                    "title": title,
                    "description": format!("Your WhatsApp message template {} was {}.", change.name, event.to_lowercase()),
                });
            }
            ("message_template_status_update", value)
        }
        (None, quality) => (
            "message_template_quality_update",
            serde_json::json!({
                "previous_quality_score": "GREEN",
                "new_quality_score": quality.clone().unwrap_or_default().to_uppercase(),
                "message_template_id": id,
                "message_template_name": change.name,
                "message_template_language": change.language,
            }),
        ),
    };
    account_webhook(shared, field, value)
}

/// The body Meta posts for one change of `field` of the business account
/// (templates, limits): an entry of the WABA, stamped now.
pub(super) fn account_webhook(
    shared: &Shared,
    field: &str,
    value: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": shared.config.waba_id,
            "time": unix_now(),
            "changes": [{"value": value, "field": field}],
        }],
    })
}

/// `POST /sandbox/templates`: records the change, then posts its webhook
/// and answers once the receiver did (so a caller knows the daemon has
/// applied it when this returns).
pub(crate) async fn change_template(
    shared: web::Data<Shared>,
    change: web::Json<TemplateChange>,
) -> HttpResponse {
    let change = change.into_inner();
    if change.name.trim().is_empty() || change.language.trim().is_empty() {
        return HttpResponse::BadRequest().body("name and language are required\n");
    }
    if change.event.is_some() == change.quality.is_some() {
        return HttpResponse::BadRequest()
            .body("give either event (a template status) or quality (a score)\n");
    }
    let k = key(&change.name, &change.language);
    let templates = &shared.templates;
    {
        let mut states = lock(&templates.states);
        let entry = states
            .entry(k.clone())
            .or_insert_with(|| ("APPROVED".into(), None));
        if let Some(event) = &change.event {
            entry.0 = event.to_uppercase();
        }
        if let Some(q) = &change.quality {
            entry.1 = Some(q.to_uppercase());
        }
    }
    let body = envelope(&shared, &change, templates.id(&k));
    let webhook_status = match &shared.config.webhook_url {
        Some(url) if change.webhook => post(url, &shared.config.app_secret, &body).await,
        _ => None,
    };
    let (status, quality) = lock(&templates.states)
        .get(&k)
        .cloned()
        .map(|(s, q)| (Some(s), q))
        .unwrap_or_default();
    HttpResponse::Ok().json(ChangeAnswer {
        status,
        quality,
        webhook_status,
    })
}

/// Posts one signed webhook, a few tries; answers the last HTTP status.
pub(super) async fn post(url: &str, secret: &str, body: &serde_json::Value) -> Option<u16> {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let signature = signature(secret.as_bytes(), &body);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let mut last = None;
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        match client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Hub-Signature-256", &signature)
            .body(body.clone())
            .send()
            .await
        {
            Ok(resp) => {
                last = Some(resp.status().as_u16());
                if resp.status().is_success() {
                    break;
                }
            }
            Err(e) => tracing::debug!(error = %e, attempt, "sandbox template webhook failed"),
        }
    }
    last
}
