//! SMS delivery reports: `POST /sms/reports` on the webhook listener, with
//! HTTP Basic credentials (`sms.report_username`, and the password from
//! `WADISPATCH_SMS_REPORT_PASSWORD`). Each report names its row by its
//! callback data and its step by its message id; it is applied under the
//! same monotonic rule as a WhatsApp status, and answered 200 only once
//! durable (the provider retries otherwise).

use base64::Engine;
use chrono::Utc;

use crate::events::{Event, EventError};
use crate::sms::Reports;

use super::*;

/// The credentials the provider must present.
#[derive(Clone)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl BasicAuth {
    /// Whether an `Authorization` header carries these credentials,
    /// compared in constant time.
    pub fn admits(&self, header: Option<&str>) -> bool {
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let expected = format!("{}:{}", self.username, self.password);
        decoded.len() == expected.len()
            && subtle::ConstantTimeEq::ct_eq(decoded.as_slice(), expected.as_bytes()).into()
    }
}

impl WebhookProcessor {
    /// Verifies, parses and applies one POST of delivery reports.
    pub async fn handle_sms_reports(&self, body: &[u8], authorization: Option<&str>) -> Verdict {
        let Some(auth) = &self.settings.sms_reports else {
            tracing::error!("sms delivery report refused: no password for sms reports is set (WADISPATCH_SMS_REPORT_PASSWORD)");
            return Verdict::Unauthorized;
        };
        if !auth.admits(authorization) {
            metrics::webhook_request("bad_signature");
            return Verdict::Unauthorized;
        }
        let reports: Reports = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                metrics::webhook_request("bad_request");
                return Verdict::BadRequest(format!("not a delivery report body: {e}"));
            }
        };
        match self.apply_reports(reports).await {
            Ok(()) => {
                metrics::webhook_request("ok");
                Verdict::Ok
            }
            Err(e) => {
                metrics::webhook_request("error");
                tracing::error!(error = %e, "sms delivery reports not applied; answering 500 so that they are posted again");
                Verdict::Failed(e.to_string())
            }
        }
    }

    async fn apply_reports(&self, reports: Reports) -> Result<(), ProcessError> {
        let now = Utc::now();
        let mut events = Vec::new();
        for report in &reports.results {
            let applied = match report.update(now) {
                Ok(applied) => applied,
                Err(why) => {
                    rejected::<()>("sms report", why);
                    continue;
                }
            };
            let update = &applied.update;
            if let Some((state, step)) = self
                .apply_status(&applied.campaign, &applied.contact, update)
                .await?
            {
                events.push(Event::Status {
                    campaign_id: applied.campaign.clone(),
                    campaign_kind: self.catalog.kind(&applied.campaign),
                    step,
                    contact: applied.contact.as_str().to_string(),
                    occurrence: applied.contact.occurrence().map(str::to_string),
                    status: state.as_str().to_string(),
                    wamid: update.wamid.clone(),
                    timestamp: update.at,
                    error: update.error_class.as_ref().map(|class| EventError {
                        code: update.error_code,
                        class: Some(class.clone()),
                        message: update.error_message.clone(),
                    }),
                });
            }
        }
        if let (Some(producer), false) = (&self.events, events.is_empty()) {
            producer.publish(&events).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configured_credentials_are_admitted() {
        let auth = BasicAuth {
            username: "wadispatch".into(),
            password: "s3cret".into(),
        };
        let header = |user_pass: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(user_pass)
            )
        };
        assert!(auth.admits(Some(&header("wadispatch:s3cret"))));
        assert!(!auth.admits(Some(&header("wadispatch:s3cre"))));
        assert!(!auth.admits(Some(&header("other:s3cret"))));
        assert!(!auth.admits(Some("Basic not-base64!")));
        assert!(!auth.admits(Some("Bearer s3cret")));
        assert!(!auth.admits(None));
    }
}
