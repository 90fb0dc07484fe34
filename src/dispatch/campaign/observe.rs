//! What the pump reports: the campaign's counts from the store, its
//! progress and observed state, and a halt loaded from or refreshed in the
//! store.

use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;

use crate::dispatch::policy::lifecycle::{self, CampaignCounts};
use crate::domain::{DispatchState, ObservedState};
use crate::events::Event;
use crate::metrics;
use crate::sync::{MutexExt, RwLockExt};

use super::*;

impl Pump {
    pub(super) async fn counts(&self) -> CampaignCounts {
        // A full scan of the campaign's rows: at most every 5 s, and never
        // more than 5 % of the time (a million rows take about a second to
        // scan), so a paused, idle or finished large campaign does not keep
        // a core busy counting.
        if let Some((fresh_until, c)) = *self.counts_cache.lock_or_recover() {
            if std::time::Instant::now() < fresh_until {
                return c;
            }
        }
        let started = std::time::Instant::now();
        let counts = self.count_now().await;
        let fresh_until =
            std::time::Instant::now() + (started.elapsed() * 20).max(Duration::from_secs(5));
        *self.counts_cache.lock_or_recover() = Some((fresh_until, counts));
        counts
    }

    pub(super) async fn count_now(&self) -> CampaignCounts {
        match crate::report::CampaignSummary::compute(self.store.as_ref(), &self.state.id).await {
            Ok(s) => {
                let counts = CampaignCounts {
                    staged: s.staged,
                    pending: s.count(DispatchState::Pending),
                    claimed: s.count(DispatchState::Claimed),
                    deferred: s.count(DispatchState::Deferred),
                    waiting: s.waiting,
                    triggered: false,
                };
                self.note_progress(s, counts);
                counts
            }
            Err(_) => CampaignCounts {
                staged: 1,
                pending: 1,
                ..Default::default()
            },
        }
    }

    /// Keeps the latest count for `/campaigns` and the progress gauges.
    pub(super) fn note_progress(
        &self,
        summary: crate::report::CampaignSummary,
        counts: CampaignCounts,
    ) {
        let now = std::time::Instant::now();
        let dispatched = self.state.dispatched.load(Ordering::Acquire);
        let mut slot = self.state.progress.lock_or_recover();
        let rate = match slot.as_ref() {
            Some(prev) => {
                let secs = now.duration_since(prev.sampled).as_secs_f64();
                if secs > 0.0 {
                    dispatched.saturating_sub(prev.dispatched) as f64 / secs
                } else {
                    prev.rate
                }
            }
            None => 0.0,
        };
        let remaining = (counts.pending + counts.deferred) as f64;
        let pace = if rate > 0.0 { rate } else { self.state.rate() };
        let eta_seconds = if remaining == 0.0 {
            Some(0.0)
        } else if pace > 0.0 {
            // The portfolio limit may hold the rest longer than the pace.
            let limited = self.env.portfolio_eta(remaining as u64).unwrap_or(0.0);
            Some((remaining / pace).round().max(limited))
        } else {
            None
        };
        let by_state: Vec<(&str, u64)> = DispatchState::ALL
            .iter()
            .map(|s| (s.as_str(), summary.count(*s)))
            .collect();
        // Per step: every state of every step of the journey (zeros too, so
        // that a gauge falls back when its contacts move on).
        let entry = self.state.entry.read_or_recover().clone();
        let by_step: Vec<(&str, &str, u64)> = entry
            .journey
            .row_steps()
            .flat_map(|(raw, name)| {
                let tally = summary.steps.get(raw);
                DispatchState::ALL
                    .iter()
                    .map(move |s| (name, s.as_str(), tally.map_or(0, |t| t.count(*s))))
            })
            .collect();
        let timers: Vec<(&str, u64)> = entry
            .journey
            .row_steps()
            .skip(1)
            .map(|(_, name)| (name, summary.timers.get(name).copied().unwrap_or(0)))
            .collect();
        metrics::campaign_progress(
            &self.state.id,
            &metrics::Progress {
                kind: entry.spec.kind,
                by_state: &by_state,
                by_step: &by_step,
                timers: &timers,
                eta_seconds,
            },
        );
        let cost = self
            .env
            .rate_card()
            .map(|card| summary.billable.estimate(&card, summary.converted));
        if let Some(c) = &cost {
            metrics::campaign_cost(&self.state.id, c);
        }
        *slot = Some(Progress {
            summary,
            at: Utc::now(),
            sampled: now,
            dispatched,
            rate,
            eta_seconds,
            cost,
        });
    }

    pub(super) async fn observe(&self, counts: &CampaignCounts) -> ObservedState {
        let entry = self.state.entry.read_or_recover().clone();
        let halted = self.state.halted.lock_or_recover().is_some();
        let counts = CampaignCounts {
            triggered: entry.trigger.is_some(),
            ..*counts
        };
        let mut next = lifecycle::observe(
            entry.spec.state,
            self.state.paused_by_operator.load(Ordering::Acquire),
            halted,
            &entry.spec.schedule,
            &counts,
            Utc::now(),
        );
        // A held template stops a campaign that would claim, never one that
        // ended, completed or waits for other reasons: the book outlives the
        // campaigns, and a template archived after its campaign ended must
        // not keep that campaign's engagements or its window open.
        if lifecycle::may_claim(next) && self.state.template_hold().is_some() {
            next = ObservedState::Failed;
        }
        let prev = *self.state.observed.lock_or_recover();
        if lifecycle::transition(prev, next).is_some() {
            tracing::info!(campaign = %self.state.id, from = ?prev, to = ?next, "campaign state");
            *self.state.observed.lock_or_recover() = Some(next);
            metrics::campaign_state(&self.state.id, next);
            if let Err(e) = self
                .store
                .set_observed_state(&self.state.id, next, Utc::now())
                .await
            {
                tracing::warn!(campaign = %self.state.id, error = %e, "cannot store the campaign state");
            }
            self.env.publish(vec![Event::Campaign {
                campaign_id: self.state.id.clone(),
                campaign_kind: self.state.entry.read_or_recover().spec.kind,
                state: next.as_str().to_string(),
                timestamp: Utc::now(),
            }]);
        }
        next
    }

    /// A halt recorded by an earlier run holds while the spec is the one it
    /// was recorded with; a spec that changed meanwhile lifts it.
    pub(super) async fn load_halt(&self) {
        let id = &self.state.id;
        let halt = loop {
            match self.store.campaign_halt(id).await {
                Ok(h) => break h,
                Err(e) => {
                    tracing::warn!(campaign = %id, error = %e, "cannot read the campaign's halt; nothing is claimed until the store answers");
                    if self.state.stop.load(Ordering::Acquire) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let Some(halt) = halt else { return };
        if halt.spec == self.state.entry.read_or_recover().spec.halt_digest() {
            tracing::error!(campaign = %id, reason = %halt.reason, since = %halt.at, "campaign stays halted by WhatsApp (template problem): fix the template, then publish a changed spec or POST /campaigns/{id}/clear-halt on the admin listener");
            *self.state.halted.lock_or_recover() = Some(halt);
        } else {
            tracing::info!(campaign = %id, reason = %halt.reason, "the spec changed since the campaign was halted: halt lifted");
            if let Err(e) = self.store.set_campaign_halt(id, None).await {
                tracing::warn!(campaign = %id, error = %e, "cannot lift the stored halt; the next start lifts it again");
            }
        }
    }

    /// A halt lifted in the store (by an operator, possibly through another
    /// instance) is lifted here too.
    pub(super) async fn refresh_halt(&self) {
        let Some(halt) = self.state.halted.lock_or_recover().clone() else {
            return;
        };
        if self.state.halt_unsaved.load(Ordering::Acquire) {
            self.save_halt(&halt).await;
            return;
        }
        if let Ok(None) = self.store.campaign_halt(&self.state.id).await {
            tracing::info!(campaign = %self.state.id, "the campaign's halt was lifted in the store");
            *self.state.halted.lock_or_recover() = None;
        }
    }
}
