//! The journey's timers of the owned shards: each due one moves its row to
//! the next step (pending, to be claimed like any contact, or skipped), and
//! at the campaign's end every one is fired at once so the waiting contacts
//! end `outside_window` (docs/ARCHITECTURE.md, "Journeys").

use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::store::TimerEntry;
use crate::sync::RwLockExt;

use super::*;

/// Pages of due timers fired per shard in one pass of the pump, so a burst
/// of timers falling due at once does not hold back the sends.
const PAGES_PER_PASS: usize = 20;

impl Pump {
    /// Fires the timers of the owned shards due now (`force`: all of them,
    /// due or not; the campaign ended). Answers how many rows moved to a
    /// later step.
    pub(super) async fn fire_timers(&self, force: bool) -> u64 {
        let owned = self.env.owned_shards();
        let Ok(shards) = self.store.campaign_shards(&self.state.id).await else {
            return 0;
        };
        let mut fired = 0;
        for shard in shards.into_iter().filter(|s| owned.contains(s)) {
            for _ in 0..PAGES_PER_PASS {
                let now = Utc::now();
                let until = if force { DateTime::<Utc>::MAX_UTC } else { now };
                let page = match self
                    .store
                    .due_timers(&self.state.id, shard, until, PAGE)
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(campaign = %self.state.id, shard, error = %e, "timer scan failed; retrying");
                        break;
                    }
                };
                let full = page.len() == PAGE;
                fired += futures::stream::iter(page)
                    .map(|entry| self.fire(entry, now, force))
                    .buffer_unordered(CONCURRENT_CHECKS)
                    .fold(0, |n, moved| async move { n + u64::from(moved) })
                    .await;
                if !full {
                    break;
                }
            }
        }
        fired
    }

    /// One timer, through the row's compare-and-set in the store: true when
    /// the row moved to the step the timer names.
    async fn fire(&self, timer: TimerEntry, now: DateTime<Utc>, force: bool) -> bool {
        let edges = self
            .state
            .entry
            .read_or_recover()
            .journey
            .edges(&timer.step);
        match self
            .store
            .fire_timer(&self.state.id, &timer, &edges, now, force)
            .await
        {
            Ok(Some(state)) => {
                // `excluded`: skipped for missing data (the row may wait for
                // the step after it).
                tracing::debug!(campaign = %self.state.id, contact = %timer.contact, step = %timer.step, state = %state, "journey step started");
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, contact = %timer.contact, step = %timer.step, error = %e, "cannot fire a journey timer; it stays and is tried again");
                false
            }
        }
    }
}
