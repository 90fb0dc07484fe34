//! Template updates: `message_template_status_update` and
//! `message_template_quality_update` teach the template book (shared with
//! dispatch) whether a template may be sent, so its campaigns hold before
//! their next claim and resume once Meta approves it again
//! (docs/ARCHITECTURE.md, "Template health").

use chrono::{DateTime, Utc};

use super::payload::ChangeValue;
use crate::domain::{TemplateHealth, TemplateRef, TemplateSignal};
use crate::events::Event;
use crate::metrics;

use super::*;

/// The change fields this module reads.
pub(super) const STATUS_FIELD: &str = "message_template_status_update";
pub(super) const QUALITY_FIELD: &str = "message_template_quality_update";

impl WebhookProcessor {
    /// One template change. A change that names no template, or carries
    /// neither a status nor a score, is rejected alone.
    pub(super) async fn template_change(
        &self,
        field: &str,
        v: &ChangeValue,
        at: DateTime<Utc>,
    ) -> Result<Vec<Event>, ProcessError> {
        let (Some(name), Some(language)) = (
            present(v.message_template_name.as_deref()),
            present(v.message_template_language.as_deref()),
        ) else {
            return Ok(rejected(
                "template update",
                "no message_template_name or message_template_language",
            ));
        };
        let template = TemplateRef::new(name, language);
        let (signal, label) = match (field, v.event.as_deref(), v.new_quality_score.as_deref()) {
            (STATUS_FIELD, Some(event), _) => {
                let event = event.trim().to_uppercase();
                let label = if TemplateHealth::status_known(&event) {
                    event.clone()
                } else {
                    tracing::warn!(template = %template, status = %event, "a template status this version does not know: it does not hold the template's campaigns");
                    "OTHER".to_string()
                };
                (
                    TemplateSignal::Status {
                        event,
                        reason: status_reason(v),
                    },
                    label,
                )
            }
            (QUALITY_FIELD, _, Some(score)) => {
                let score = score.trim().to_uppercase();
                let label = match score.as_str() {
                    "GREEN" | "YELLOW" | "RED" | "UNKNOWN" => format!("quality_{score}"),
                    _ => "quality_OTHER".to_string(),
                };
                (TemplateSignal::Quality { score }, label)
            }
            _ => {
                return Ok(rejected(
                    "template update",
                    "no event (status update) or new_quality_score (quality update)",
                ))
            }
        };
        metrics::template_update(&label);
        let Some(health) = self
            .templates
            .learn(self.store.as_ref(), &template, &signal, at)
            .await?
        else {
            // Redelivered or older than what is known.
            return Ok(Vec::new());
        };
        let held = self
            .templates
            .first_hold(std::slice::from_ref(&health.template));
        match &held {
            Some(why) => {
                tracing::warn!(template = %template, reason = %why, "template held: the campaigns that send it hold before their next claim")
            }
            None => {
                tracing::info!(template = %template, status = ?health.status, quality = ?health.quality, "template may be sent")
            }
        }
        Ok(vec![Event::Template {
            template: health.template.name.clone(),
            language: health.template.language.clone(),
            status: health.status.clone(),
            quality: health.quality.clone(),
            reason: health.reason.clone(),
            held,
            timestamp: at,
        }])
    }
}

/// Meta's reason in words: `reason` unless `NONE`, then `other_info`
/// (`FIRST_PAUSE: …`).
fn status_reason(v: &ChangeValue) -> Option<String> {
    let reason = v
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty() && *r != "NONE");
    let other = v.other_info.as_ref().and_then(|o| {
        let text: Vec<&str> = [o.title.as_deref(), o.description.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        (!text.is_empty()).then(|| text.join(": "))
    });
    match (reason, other) {
        (Some(r), Some(o)) => Some(format!("{r} ({o})")),
        (Some(r), None) => Some(r.to_string()),
        (None, o) => o,
    }
}
