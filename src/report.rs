//! Funnel summaries computed by scanning a campaign's dispatch rows.
//!
//! Counts come from the store, never from counters kept on the side, so a
//! summary is right after any crash or restart (DESIGN §5).

use std::collections::BTreeMap;

use crate::domain::DispatchState;
use crate::store::{Store, StoreResult};

/// Rows per scan page: large enough to amortise a round trip, small enough to
/// keep memory flat on a 10M-contact campaign.
const PAGE: usize = 2_000;

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CampaignSummary {
    pub campaign_id: String,
    /// Every contact recorded for the campaign (pending, excluded or beyond).
    pub staged: u64,
    pub by_state: BTreeMap<String, u64>,
    /// Exclusions by reason (`missing_variable:coupon`, …).
    pub excluded_by_reason: BTreeMap<String, u64>,
    /// Failures by error class.
    pub failed_by_class: BTreeMap<String, u64>,
    /// Contacts that reached each funnel stage or a later one (a `read`
    /// contact was also sent and delivered, even without that webhook).
    pub reached: BTreeMap<String, u64>,
}

/// Funnel stages in order.
pub const FUNNEL: [DispatchState; 5] = [
    DispatchState::Accepted,
    DispatchState::Sent,
    DispatchState::Delivered,
    DispatchState::Read,
    DispatchState::Replied,
];

impl CampaignSummary {
    pub async fn compute(store: &dyn Store, campaign: &str) -> StoreResult<Self> {
        let mut summary = CampaignSummary {
            campaign_id: campaign.to_string(),
            ..Default::default()
        };
        let mut after = None;
        loop {
            let page = store
                .scan_dispatches(campaign, after.as_ref(), PAGE)
                .await?;
            for row in &page {
                summary.staged += 1;
                *summary
                    .by_state
                    .entry(row.state.as_str().to_string())
                    .or_default() += 1;
                for stage in FUNNEL {
                    if row.state.delivery_rank() >= stage.delivery_rank()
                        && row.state.delivery_rank() > 0
                    {
                        *summary
                            .reached
                            .entry(stage.as_str().to_string())
                            .or_default() += 1;
                    }
                }
                match row.state {
                    DispatchState::Excluded => {
                        let reason = row.reason.clone().unwrap_or_else(|| "unknown".into());
                        *summary.excluded_by_reason.entry(reason).or_default() += 1;
                    }
                    DispatchState::Failed => {
                        let class = row.error_class.clone().unwrap_or_else(|| "unknown".into());
                        *summary.failed_by_class.entry(class).or_default() += 1;
                    }
                    _ => {}
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.contact.clone()),
                _ => break,
            }
        }
        Ok(summary)
    }

    pub fn count(&self, state: DispatchState) -> u64 {
        self.by_state.get(state.as_str()).copied().unwrap_or(0)
    }

    pub fn excluded(&self) -> u64 {
        self.excluded_by_reason.values().sum()
    }

    pub fn reached(&self, stage: DispatchState) -> u64 {
        self.reached.get(stage.as_str()).copied().unwrap_or(0)
    }

    /// Contacts not yet in a final state (pending, claimed, deferred).
    pub fn open(&self) -> u64 {
        self.count(DispatchState::Pending)
            + self.count(DispatchState::Claimed)
            + self.count(DispatchState::Deferred)
    }
}
