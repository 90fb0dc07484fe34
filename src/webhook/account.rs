//! Account updates: `business_capability_update` and
//! `phone_number_quality_update` state the portfolio's messaging limit,
//! which the limit book (shared with dispatch) applies to the portfolio
//! limit at once (docs/ARCHITECTURE.md, "Portfolio limit").

use chrono::{DateTime, Utc};

use super::payload::ChangeValue;
use crate::domain::MessagingLimit;
use crate::events::Event;

use super::*;

pub(super) const CAPABILITY_FIELD: &str = "business_capability_update";
pub(super) const NUMBER_QUALITY_FIELD: &str = "phone_number_quality_update";
/// The `phone_number_quality_update` event of a number raised to Meta's
/// higher throughput.
const THROUGHPUT_UPGRADE: &str = "THROUGHPUT_UPGRADE";

impl WebhookProcessor {
    /// One account update: the messaging limit it states, if any, learned;
    /// a number's throughput upgrade learned.
    pub(super) async fn account_change(
        &self,
        field: &str,
        v: &ChangeValue,
        at: DateTime<Utc>,
    ) -> Result<Vec<Event>, ProcessError> {
        let event = v.event.as_deref().unwrap_or_default();
        if field == NUMBER_QUALITY_FIELD && event == THROUGHPUT_UPGRADE {
            self.throughput_upgrade(v.display_phone_number.as_deref(), at)
                .await?;
        }
        if field == NUMBER_QUALITY_FIELD && crate::domain::quality_flagged(event).is_some() {
            if let Some(number) = v.display_phone_number.as_deref() {
                if self
                    .limits
                    .learn_quality(self.store.as_ref(), number, event, at)
                    .await?
                {
                    tracing::warn!(number, event, "Meta changed the number's quality standing: senders of it follow whatsapp.number_quality");
                    crate::metrics::webhook_status("number_quality");
                }
            }
        }
        // Since October 2025 the limit is the portfolio's; the per-number
        // values of older payloads stand for it when it is absent. On a
        // throughput upgrade `current_limit` is the throughput level
        // (`TIER_UNLIMITED`: higher throughput), not a messaging limit.
        let per_number = match field {
            NUMBER_QUALITY_FIELD if event == THROUGHPUT_UPGRADE => None,
            NUMBER_QUALITY_FIELD => v.current_limit.as_ref(),
            _ => v.max_daily_conversation_per_phone.as_ref(),
        };
        let stated = v
            .max_daily_conversations_per_business
            .as_ref()
            .and_then(MessagingLimit::parse)
            .or_else(|| per_number.and_then(MessagingLimit::parse));
        if field == NUMBER_QUALITY_FIELD {
            if let Some(event) = v.event.as_deref() {
                tracing::info!(number = ?v.display_phone_number, event, "phone number quality update");
            }
        }
        let Some(limit) = stated else {
            return Ok(Vec::new());
        };
        if !self
            .limits
            .learn(self.store.as_ref(), limit, field, at)
            .await?
        {
            return Ok(Vec::new());
        }
        tracing::warn!(%limit, source = field, "Meta stated the portfolio's messaging limit: it applies from the next claim (under dispatch.portfolio_daily_limit when that is lower)");
        crate::metrics::webhook_status("messaging_limit");
        Ok(vec![Event::MessagingLimit {
            limit: match limit {
                MessagingLimit::Users(n) => Some(n),
                MessagingLimit::Unlimited => None,
            },
            source: field.to_string(),
            timestamp: at,
        }])
    }

    /// Meta raised the number shown as `shown` to its higher throughput:
    /// learned for every instance (senders with `auto_throughput` follow).
    async fn throughput_upgrade(
        &self,
        shown: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), ProcessError> {
        let Some(number) = shown else {
            tracing::warn!("a throughput upgrade without display_phone_number: ignored");
            return Ok(());
        };
        if self
            .limits
            .learn_throughput(self.store.as_ref(), number, THROUGHPUT_UPGRADE, at)
            .await?
        {
            tracing::warn!(number, "Meta upgraded the number's throughput: senders of it with auto_throughput = true go up to 1,000 messages per second (under their max_per_second)");
            crate::metrics::webhook_status("throughput_upgrade");
        }
        Ok(())
    }
}
