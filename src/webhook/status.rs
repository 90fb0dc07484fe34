//! Status webhooks: a status correlated to its contact (or parked for its
//! wamid), what a failure says of the contact, and the state applied under
//! the monotonic rule.

use chrono::Utc;

use super::payload::{parse_timestamp, Status};
use crate::domain::{classify_code, code, ContactKey, DispatchState, ErrorClass, OptOutScope};
use crate::events::{Event, EventError};
use crate::metrics;
use crate::store::{StatusApplied, StatusUpdate};

use super::*;

impl WebhookProcessor {
    pub(super) async fn status(&self, s: &Status) -> Result<Vec<Event>, ProcessError> {
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
        let update = status_update(s, wamid, state, at, self.settings.marketing_limit_retry);
        let callback = s.biz_opaque_callback_data.as_deref();
        let Some((campaign, contact)) = self.correlate_or_park(wamid, callback, &update).await?
        else {
            return Ok(Vec::new());
        };
        let mut events = self.contact_facts(&update, &campaign, &contact).await?;
        if let Some((state, step)) = self.apply_status(&campaign, &contact, &update).await? {
            events.push(Event::Status {
                campaign_kind: self.catalog.kind(&campaign),
                campaign_id: campaign,
                step,
                contact: contact.as_str().to_string(),
                occurrence: contact.occurrence().map(str::to_string),
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
    pub(super) async fn correlate_or_park(
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
    pub(super) async fn contact_facts(
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
            self.set_person_opt_out(contact, OptOutScope::Marketing, true, at)
                .await?;
            return Ok(vec![Event::OptOut {
                contact: contact.as_str().to_string(),
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

    /// Applies a status to the contact's row; answers the state to publish
    /// (a change, or a redelivery of the same status) and the journey step
    /// it belongs to.
    pub(super) async fn apply_status(
        &self,
        campaign: &str,
        contact: &ContactKey,
        update: &StatusUpdate,
    ) -> Result<Option<(DispatchState, String)>, ProcessError> {
        Ok(
            match self.store.apply_status(campaign, contact, update).await? {
                StatusApplied::Changed {
                    to,
                    step,
                    priced,
                    record,
                    ..
                } => {
                    let step = self.catalog.step_name(campaign, &step);
                    metrics::funnel(campaign, &step, to);
                    if let Some(p) = record
                        .status_pricing(update)
                        .filter(|p| priced && p.billable)
                    {
                        metrics::billable(campaign, &p.category);
                    }
                    if to == DispatchState::Failed {
                        let class = update.error_class.as_deref().unwrap_or("unknown");
                        metrics::failure(campaign, class, update.error_code);
                    }
                    metrics::webhook_status("applied");
                    Some((to, step))
                }
                StatusApplied::Unchanged { state, step, .. } => {
                    metrics::webhook_status("duplicate");
                    // Meta redelivers a webhook we did not answer 200, e.g.
                    // when publishing its events failed: publish the same
                    // status event again (at-least-once; consumers
                    // de-duplicate by wamid and status). A stale status
                    // (sent after read) publishes nothing.
                    (state == update.state)
                        .then(|| (state, self.catalog.step_name(campaign, &step)))
                }
                StatusApplied::Missing => {
                    metrics::webhook_status("unknown_contact");
                    None
                }
            },
        )
    }
}

/// The funnel state a status names; `None` for statuses outside the
/// funnel (deleted, warning, played, ...).
pub(super) fn funnel_state(status: Option<&str>) -> Option<DispatchState> {
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
/// description), and for a failed 131049 the schedule of its retries (the
/// row knows which attempt it was).
pub(super) fn status_update(
    s: &Status,
    wamid: Option<&str>,
    state: DispatchState,
    at: chrono::DateTime<Utc>,
    retry: crate::domain::DeferralSchedule,
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
        defer_until: None,
        deferral: (state == DispatchState::Failed && class == Some(ErrorClass::Deferred))
            .then_some(retry),
        pricing: s.pricing.as_ref().and_then(|p| p.pricing()),
    }
}
