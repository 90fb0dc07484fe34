//! Settling claims left by instances that are gone (docs/ARCHITECTURE.md,
//! "Leases").
//!
//! The owner of a shard reads the shard's claim index and settles every
//! entry whose owner's lease lapsed or was released: the row becomes
//! `unknown` (the request may have left, and WhatsApp has no idempotency
//! key, so it is never resent automatically; webhooks settle it). The claim
//! is the last step before the request, so a claimed row always means a
//! request that may be on the wire: none of them is put back to pending.

use chrono::Utc;

use super::campaign::Pump;
use crate::domain::DispatchState;
use crate::metrics;
use crate::store::ClaimEntry;
use crate::sync::MutexExt;

/// Why a settled row is `unknown`, as its error message says.
const SETTLED: &str =
    "claimed by an instance that stopped; may have been sent, never resent automatically";

/// Dispatch rows read per page by the one-off scan of a campaign staged
/// before the claim index existed.
const LEGACY_PAGE: usize = 2_000;

impl Pump {
    /// Settles the claims of lapsed owners in the shards this instance owns.
    /// Returns how many rows became `unknown`.
    pub async fn settle_orphans(&self) -> usize {
        let id = &self.state.id;
        let mut settled = self.index_legacy_claims().await;
        let owned = self.env.owned_shards();
        let shards = match self.store.campaign_shards(id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(campaign = %id, error = %e, "cannot list the campaign's shards to settle claims of stopped instances; trying again later");
                return settled;
            }
        };
        for shard in shards.into_iter().filter(|s| owned.contains(s)) {
            let entries = match self.store.claimed(id, shard).await {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(campaign = %id, shard, error = %e, "cannot read the claim index; trying again later");
                    continue;
                }
            };
            for entry in entries {
                if self.env.owner_lapsed(&entry.owner) {
                    settled += self.settle(shard, &entry).await;
                }
            }
        }
        if settled > 0 {
            tracing::warn!(campaign = %id, contacts = settled, "sends interrupted by a stopped instance marked unknown (settled by status webhooks)");
            *self.counts_cache.lock_or_recover() = None;
        }
        settled
    }

    async fn settle(&self, shard: u32, entry: &ClaimEntry) -> usize {
        match self
            .store
            .settle_claim(&self.state.id, shard, entry, SETTLED, Utc::now())
            .await
        {
            Ok(true) => {
                // Which step was interrupted, for its label: read once, on
                // this rare path only.
                let row = self
                    .store
                    .get_dispatch(&self.state.id, &entry.contact)
                    .await;
                let step = row.ok().flatten().map(|r| r.step).unwrap_or_default();
                metrics::dispatch(&self.state.id, &self.step_name(&step), "-", "unknown");
                1
            }
            Ok(false) => 0,
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, contact = %entry.contact, error = %e, "cannot settle an interrupted send; trying again later");
                0
            }
        }
    }

    /// A campaign that claimed contacts before the claim index existed may
    /// hold claimed rows the index does not know: one scan of its rows
    /// settles those of lapsed owners, then a marker says it is done.
    async fn index_legacy_claims(&self) -> usize {
        let id = &self.state.id;
        if self
            .claims_indexed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return 0; // known from an earlier pass: no store read every 5 s
        }
        let marker = format!("claim-index/{id}");
        match self.store.marker(&marker).await {
            Ok(true) => {
                self.claims_indexed
                    .store(true, std::sync::atomic::Ordering::Release);
                return 0;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(campaign = %id, error = %e, "cannot read the claim index marker; trying again later");
                return 0;
            }
        }
        // A campaign that never started claimed nothing: nothing to scan.
        let started = match self.store.get_campaign(id).await {
            Ok(r) => r.is_some_and(|r| r.started_at.is_some()),
            Err(e) => {
                tracing::warn!(campaign = %id, error = %e, "cannot read the campaign before settling claims older than the claim index; trying again later");
                return 0;
            }
        };
        let settled = if started {
            match self.settle_unindexed().await {
                Some(n) => n,
                None => return 0,
            }
        } else {
            0
        };
        match self.store.set_marker(&marker).await {
            Ok(()) => self
                .claims_indexed
                .store(true, std::sync::atomic::Ordering::Release),
            Err(e) => {
                tracing::warn!(campaign = %id, error = %e, "cannot record that the claim index is complete; the scan runs again");
            }
        }
        settled
    }

    /// One scan of the campaign's rows; None when it could not finish.
    async fn settle_unindexed(&self) -> Option<usize> {
        let id = &self.state.id;
        let mut settled = 0;
        let mut after = None;
        loop {
            let page = match self
                .store
                .scan_dispatches(id, after.as_ref(), LEGACY_PAGE)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(campaign = %id, error = %e, "cannot scan for claims older than the claim index; trying again later");
                    return None;
                }
            };
            for row in &page {
                let Some(owner) = row.owner.as_deref() else {
                    continue;
                };
                if row.state == DispatchState::Claimed && self.env.owner_lapsed(owner) {
                    let entry = ClaimEntry {
                        contact: row.contact.clone(),
                        owner: owner.to_string(),
                        claimed_at: row.times.claimed.unwrap_or_default(),
                    };
                    settled += self.settle(row.shard, &entry).await;
                }
            }
            match page.last() {
                Some(last) if page.len() == LEGACY_PAGE => after = Some(last.contact.clone()),
                _ => break,
            }
        }
        Some(settled)
    }
}
