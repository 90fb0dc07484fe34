//! The pump's loop: fire the owned shards' due journey timers, scan their
//! pending queues in staging order, pace, consider each contact; settle
//! orphaned claims, resend `unknown` contacts when configured, and close the
//! window at `end_at`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::dispatch::policy::lifecycle;
use crate::domain::{DispatchState, ExclusionReason, ObservedState};
use crate::metrics;
use crate::sync::MutexExt;

use super::*;

impl Pump {
    /// Runs until the campaign is stopped.
    pub async fn run(self: Arc<Self>) {
        self.load_halt().await;
        self.wait_before_claiming().await;
        let in_flight = Arc::new(Semaphore::new(self.max_in_flight));
        let mut cursors: HashMap<u32, Option<u64>> = HashMap::new();
        let mut counts = self.counts().await;
        let mut observed = self.observe(&counts).await;
        metrics::campaign_pending(&self.state.id, counts.pending);
        let started = std::time::Instant::now();
        let turned = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let recount = self.spawn_recount(started, Arc::clone(&turned));
        let mut resend_checked = std::time::Instant::now();
        let mut halt_checked = std::time::Instant::now();
        let mut settle_checked = std::time::Instant::now();
        while !self.state.stop.load(Ordering::Acquire) {
            turned.store(started.elapsed().as_millis() as u64, Ordering::Release);
            if settle_checked.elapsed() >= SETTLE_CHECK {
                settle_checked = std::time::Instant::now();
                self.settle_orphans().await;
            }
            if resend_checked.elapsed() >= RESEND_CHECK {
                resend_checked = std::time::Instant::now();
                self.resend_unknown().await;
            }
            if !lifecycle::may_claim(observed) {
                if observed == ObservedState::Failed && halt_checked.elapsed() >= HALT_CHECK {
                    halt_checked = std::time::Instant::now();
                    self.refresh_halt().await;
                }
                if observed == ObservedState::Ended
                    && counts.pending + counts.deferred + counts.waiting > 0
                {
                    // Waiting journeys start their next step now, which the
                    // window then ends (`outside_window`) like any pending
                    // contact.
                    while self.fire_timers(true).await > 0 {}
                    self.close_window().await;
                    *self.counts_cache.lock_or_recover() = None;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                counts = self.counts().await;
                observed = self.observe(&counts).await;
                continue;
            }
            let fired = self.fire_timers(false).await;
            let (dispatched, earliest) = self.scan_pass(&in_flight, &mut cursors).await;
            // Timers falling due in bulk (a full page fired) fire pass after
            // pass, with no pause between; a trickle waits like the queue.
            if dispatched == 0 && fired < PAGE as u64 {
                counts = self.counts().await;
                metrics::campaign_pending(&self.state.id, counts.pending);
                observed = self.observe(&counts).await;
                let sleep = earliest
                    .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
                    .unwrap_or(Duration::from_millis(500))
                    .clamp(Duration::from_millis(50), Duration::from_secs(2));
                tokio::time::sleep(sleep).await;
            } else {
                self.state.set_wait(None);
                counts = self.counts().await;
                observed = self.observe(&counts).await;
            }
        }
        recount.abort();
        // Paused or stopped: in-flight sends finish on their own.
        let _ = in_flight.acquire_many(self.max_in_flight as u32).await;
    }

    /// Keeps the counts fresh while the loop is busy: a pass over a page of
    /// a slow campaign lasts as long as its pace takes to send the page
    /// (500 contacts at 5 a second: 100 s), and `/campaigns`, the progress
    /// gauges and the ETA must move meanwhile. It counts only when the loop
    /// has not turned (`turned`: milliseconds since `started`) for 3 s; a
    /// loop that turns counts itself and observes the campaign's state with
    /// the same counts. The counts are cached, so this scans the store at
    /// most every 5 s (docs/ARCHITECTURE.md, "Progress and counts").
    fn spawn_recount(
        self: &Arc<Self>,
        started: std::time::Instant,
        turned: Arc<std::sync::atomic::AtomicU64>,
    ) -> tokio::task::JoinHandle<()> {
        let pump = Arc::clone(self);
        tokio::spawn(async move {
            while !pump.state.stop.load(Ordering::Acquire) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let since = started.elapsed().as_millis() as u64 - turned.load(Ordering::Acquire);
                if since < 3_000 {
                    continue;
                }
                let counts = pump.counts().await;
                metrics::campaign_pending(&pump.state.id, counts.pending);
            }
        })
    }

    /// Nothing is claimed or settled before this instance holds its lease
    /// (and so knows everyone's), and nothing is claimed before the
    /// suppression list is loaded; the topic is optional, so after 30 s the
    /// pump goes on without it (and says so).
    async fn wait_before_claiming(&self) {
        while !self.env.holds_lease() && !self.state.stop.load(Ordering::Acquire) {
            self.state.set_wait(Some((
                "lease",
                "waiting for this instance's lease in the store".into(),
            )));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.state.set_wait(None);
        self.settle_orphans().await;
        let waited = std::time::Instant::now();
        while !self.env.suppressions_ready() && !self.state.stop.load(Ordering::Acquire) {
            if waited.elapsed() > Duration::from_secs(30) {
                tracing::warn!(campaign = %self.state.id, "suppressions topic not read after 30 s (missing?): dispatching without it");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One pass over the pending queues of the shards this process owns, a
    /// page each from its cursor: answers the contacts dispatched and the
    /// earliest time a waiting one may go.
    async fn scan_pass(
        self: &Arc<Self>,
        in_flight: &Arc<Semaphore>,
        cursors: &mut HashMap<u32, Option<u64>>,
    ) -> (u64, Option<DateTime<Utc>>) {
        let mut dispatched = 0u64;
        let mut earliest: Option<DateTime<Utc>> = None;
        let owned = self.env.owned_shards();
        let shards = match self.store.campaign_shards(&self.state.id).await {
            Ok(s) => s.into_iter().filter(|x| owned.contains(x)).collect(),
            Err(_) => Vec::new(),
        };
        for shard in shards {
            let after = cursors.get(&shard).copied().flatten();
            let page = match self
                .store
                .scan_pending(&self.state.id, shard, after, PAGE)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(campaign = %self.state.id, error = %e, "pending scan failed; retrying");
                    continue;
                }
            };
            if page.len() < PAGE {
                // End of the queue: the next pass starts over, so contacts
                // re-queued behind the cursor (retries, deferrals) are seen.
                cursors.insert(shard, None);
            } else {
                cursors.insert(shard, page.last().map(|e| e.seq));
            }
            // Contacts of a page are checked and claimed concurrently: each
            // needs a few store round trips, and the claim is an atomic
            // compare-and-set, so order within a page is free.
            let results: Vec<Considered> = futures::stream::iter(page)
                .map(|entry| async move {
                    if self.state.holds() {
                        return Considered::Skipped;
                    }
                    self.consider(&entry.contact, in_flight).await
                })
                .buffer_unordered(CONCURRENT_CHECKS)
                .collect()
                .await;
            for r in results {
                match r {
                    Considered::Dispatched => dispatched += 1,
                    Considered::Wait(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
                    Considered::Skipped => {}
                }
            }
        }
        (dispatched, earliest)
    }

    /// Puts back to pending the `unknown` contacts older than
    /// `dispatch.resend_unknown_after_secs` (when set and while the latest
    /// count has any): the operator chose resending over reach lost.
    pub(super) async fn resend_unknown(&self) {
        let Some(age) = self.env.resend_unknown_after() else {
            return;
        };
        let any = self
            .state
            .progress
            .lock_or_recover()
            .as_ref()
            .is_some_and(|p| p.summary.count(DispatchState::Unknown) > 0);
        if !any
            || !lifecycle::may_claim(
                self.state
                    .observed
                    .lock_or_recover()
                    .unwrap_or(ObservedState::Scheduled),
            )
        {
            return;
        }
        let from = crate::store::Requeue {
            state: DispatchState::Unknown,
            class: None,
        };
        match crate::requeue::requeue(
            self.store.as_ref(),
            &self.state.id,
            &from,
            Some(age),
            false,
            Utc::now(),
            |_| {},
        )
        .await
        {
            Ok(s) if s.requeued > 0 => {
                tracing::warn!(campaign = %self.state.id, contacts = s.requeued, "unknown contacts not settled by a webhook in time are resent (dispatch.resend_unknown_after_secs; a duplicate is possible)");
                *self.counts_cache.lock_or_recover() = None;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, error = %e, "cannot look for unknown contacts to resend")
            }
        }
    }

    /// The campaign ended before these contacts were sent: they become
    /// `outside_window` (final, visible in the report) instead of waiting.
    pub(super) async fn close_window(&self) {
        let owned = self.env.owned_shards();
        let shards = self
            .store
            .campaign_shards(&self.state.id)
            .await
            .unwrap_or_default();
        for shard in shards.into_iter().filter(|s| owned.contains(s)) {
            let mut after = None;
            loop {
                let Ok(page) = self
                    .store
                    .scan_pending(&self.state.id, shard, after, PAGE)
                    .await
                else {
                    break;
                };
                for entry in &page {
                    self.exclude(&entry.contact, ExclusionReason::OutsideWindow)
                        .await;
                }
                if page.len() < PAGE {
                    break;
                }
                after = page.last().map(|e| e.seq);
            }
        }
    }
}
