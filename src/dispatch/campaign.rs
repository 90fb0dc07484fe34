//! `CampaignActor`: one per campaign, dispatching the shards this process owns.
//!
//! Its pump scans the pending queue of each owned shard in staging order,
//! checks every contact at claim time (schedule, quiet hours in the
//! recipient's timezone, `send_after`, opt-out, suppression, earlier
//! undeliverable status), paces claims at the campaign's rate, claims
//! (pending → claimed plus the engagement compare-and-set for exclusive
//! campaigns) and hands the contact to a sender of the campaign's pool. The
//! claim is the last step before the send, so a crash leaves at most the
//! in-flight contacts claimed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use governor::DefaultDirectRateLimiter;
use tokio::sync::Semaphore;

use super::policy::admission::{self, Admission, CampaignFacts, ContactFacts, WaitReason};
use super::policy::lifecycle::{self, CampaignCounts};
use super::sender::pool::{self, NoSender, SenderMap};
use super::sender::{QueuedSend, SendJob, SendReport};
use crate::domain::{ContactKey, DesiredState, DispatchState, ExclusionReason, ObservedState};
use crate::events::Event;
use crate::ingest::catalog::CatalogEntry;
use crate::metrics;
use crate::store::{
    CampaignHalt, ClaimOutcome, ClaimRequest, DispatchRecord, Outcome, RecipientCount, Store,
};
use crate::sync::{MutexExt, RwLockExt};
use crate::whatsapp::payload::{callback_data, template_message_bytes};

/// Pending contacts read per scan page.
const PAGE: usize = 500;
/// Contacts of a page checked and claimed at once.
const CONCURRENT_CHECKS: usize = 64;
/// Contacts whose retry count is remembered; beyond it the counts start
/// over (a backoff that restarts is harmless, memory that grows is not).
const MAX_RETRY_ENTRIES: usize = 100_000;

/// What the pump asks of the rest of the process.
pub trait DispatchEnv: Send + Sync + 'static {
    /// Audience partitions this process owns now.
    fn owned_shards(&self) -> Vec<u32>;
    /// Whether a campaign's engagement may be taken over (it ended, completed or failed).
    fn releases_engagement(&self, campaign: &str) -> bool;
    /// Suppression of a contact, if any (`wa.suppressions`).
    fn suppression(&self, contact: &ContactKey) -> Option<String>;
    /// Why campaigns must wait now (e.g. the portfolio's daily limit), if so.
    fn portfolio_wait(&self, contact: &ContactKey) -> Option<String>;
    /// `dispatch.portfolio_daily_limit`, kept current by reloads.
    fn portfolio_limit(&self) -> Option<u64>;
    /// The store found the portfolio's window full until `until`.
    fn portfolio_full(&self, until: DateTime<Utc>);
    /// Records a recipient the store counted (or knew) for the portfolio limit.
    fn note_recipient(&self, contact: &ContactKey);
    /// True once the suppression list is loaded (claims wait for it).
    fn suppressions_ready(&self) -> bool;
    /// Publishes events (best effort: the store already holds the truth).
    fn publish(&self, events: Vec<Event>);
    /// True while this instance's lease is safely ahead: claims wait
    /// otherwise (docs/ARCHITECTURE.md, "Leases").
    fn holds_lease(&self) -> bool;
    /// True when the claims of `owner` may be settled (its lease lapsed or
    /// was released; never this instance).
    fn owner_lapsed(&self, owner: &str) -> bool;
    /// `dispatch.resend_unknown_after_secs`: resend an `unknown` contact
    /// that no status webhook settled in this time (None: never).
    fn resend_unknown_after(&self) -> Option<chrono::Duration>;
}

/// How often a campaign looks for `unknown` contacts to resend.
const RESEND_CHECK: Duration = Duration::from_secs(60);

/// How often a campaign settles the claims of instances gone.
const SETTLE_CHECK: Duration = Duration::from_secs(5);

/// How often a halted campaign looks whether its halt was lifted in the store.
const HALT_CHECK: Duration = Duration::from_secs(5);

/// Live state of a campaign shared by the actor, its pump and `/campaigns`.
pub struct CampaignState {
    pub id: String,
    pub entry: RwLock<Arc<CatalogEntry>>,
    pub paused_by_operator: AtomicBool,
    pub rate_override: RwLock<Option<f64>>,
    limiter: RwLock<Arc<DefaultDirectRateLimiter>>,
    /// A halt by a campaign-class error, also in the store (it survives
    /// restarts; see `Pump::load_halt`).
    pub halted: Mutex<Option<CampaignHalt>>,
    /// The halt in memory could not be written to the store yet.
    halt_unsaved: AtomicBool,
    pub observed: Mutex<Option<ObservedState>>,
    pub wait_reason: Mutex<Option<String>>,
    pub in_flight: AtomicU64,
    pub dispatched: AtomicU64,
    /// The latest count of the campaign's contacts (for `/campaigns`).
    pub progress: Mutex<Option<Progress>>,
    stop: AtomicBool,
    /// Contacts handed to a sender and not finished (claimed or not yet):
    /// the scan skips them, so one contact never waits in two senders.
    in_hand: Mutex<HashSet<ContactKey>>,
    /// Earlier tries of contacts that went back to the queue unsent, for
    /// their backoff.
    retries: Mutex<HashMap<ContactKey, u32>>,
}

/// A campaign's contacts by state at one moment, with the pace measured since
/// the previous count.
#[derive(Debug, Clone)]
pub struct Progress {
    pub summary: crate::report::CampaignSummary,
    pub at: chrono::DateTime<Utc>,
    sampled: std::time::Instant,
    dispatched: u64,
    /// Sends finished per second by this instance since the previous count.
    pub rate: f64,
    /// Seconds until the pending and deferred contacts are sent: at the
    /// measured pace, or at the configured rate while nothing moved.
    pub eta_seconds: Option<f64>,
}

impl CampaignState {
    pub fn new(entry: Arc<CatalogEntry>, rate_override: Option<f64>, paused: bool) -> Self {
        let rate = rate_override.unwrap_or_else(|| entry.spec.pacing.rate_per_second());
        CampaignState {
            id: entry.spec.id.clone(),
            entry: RwLock::new(entry),
            paused_by_operator: AtomicBool::new(paused),
            rate_override: RwLock::new(rate_override),
            limiter: RwLock::new(Arc::new(super::sender::drained_limiter(rate))),
            halted: Mutex::new(None),
            halt_unsaved: AtomicBool::new(false),
            observed: Mutex::new(None),
            wait_reason: Mutex::new(None),
            in_flight: AtomicU64::new(0),
            dispatched: AtomicU64::new(0),
            progress: Mutex::new(None),
            stop: AtomicBool::new(false),
            in_hand: Mutex::new(HashSet::new()),
            retries: Mutex::new(HashMap::new()),
        }
    }

    /// True when no contact of the campaign may be claimed now, whatever
    /// the contact (stopping, operator pause, halt, spec paused or ended).
    /// Cheap: waiting sends poll it.
    pub fn holds(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            || self.paused_by_operator.load(Ordering::Acquire)
            || self.halted.lock_or_recover().is_some()
            || matches!(
                self.entry.read_or_recover().spec.state,
                DesiredState::Paused | DesiredState::Ended
            )
    }

    /// Why the campaign is halted, if it is.
    pub fn halt_reason(&self) -> Option<String> {
        self.halted
            .lock_or_recover()
            .as_ref()
            .map(|h| h.reason.clone())
    }

    fn facts<'a>(&self, entry: &'a CatalogEntry) -> CampaignFacts<'a> {
        CampaignFacts {
            desired: entry.spec.state,
            schedule: &entry.spec.schedule,
            paused_by_operator: self.paused_by_operator.load(Ordering::Acquire),
            halted: self.halted.lock_or_recover().is_some(),
            stopping: self.stop.load(Ordering::Acquire),
            marketing: entry.spec.template.category == crate::domain::TemplateCategory::Marketing,
        }
    }

    fn note_retry(&self, contact: &ContactKey, requeued: bool) {
        let mut retries = self.retries.lock_or_recover();
        if requeued {
            if retries.len() >= MAX_RETRY_ENTRIES {
                retries.clear();
            }
            *retries.entry(contact.clone()).or_default() += 1;
        } else if !retries.is_empty() {
            retries.remove(contact);
        }
    }

    pub fn rate(&self) -> f64 {
        let rate_override = *self.rate_override.read_or_recover();
        rate_override.unwrap_or_else(|| self.entry.read_or_recover().spec.pacing.rate_per_second())
    }

    /// Rebuilds the pacing limiter (reload or new spec), without a burst.
    pub fn repace(&self) {
        *self.limiter.write_or_recover() = Arc::new(super::sender::drained_limiter(self.rate()));
    }

    /// Records why the campaign waits (`kind` is the bounded metric label:
    /// `portfolio_limit`, `senders_halted`), or that it no longer does.
    pub fn set_wait(&self, reason: Option<(&'static str, String)>) {
        let mut w = self.wait_reason.lock_or_recover();
        let text = reason.as_ref().map(|(_, r)| r.clone());
        if *w != text {
            match &reason {
                Some((kind, r)) => {
                    tracing::info!(campaign = %self.id, reason = %r, "campaign waits");
                    metrics::campaign_wait(&self.id, Some(kind));
                }
                None => metrics::campaign_wait(&self.id, None),
            }
            *w = text;
        }
    }
}

/// Everything the pump needs.
pub struct Pump {
    pub state: Arc<CampaignState>,
    pub store: Arc<dyn Store>,
    pub senders: SenderMap,
    pub env: Arc<dyn DispatchEnv>,
    pub owner: String,
    pub max_in_flight: usize,
    /// The last full count and the instant until which it is reused.
    pub counts_cache: Mutex<Option<(std::time::Instant, CampaignCounts)>>,
    /// The campaign's claims are all in the claim index (its one-off scan
    /// of older claims is done; see `dispatch/settle.rs`).
    pub claims_indexed: AtomicBool,
}

impl Pump {
    async fn counts(&self) -> CampaignCounts {
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

    async fn count_now(&self) -> CampaignCounts {
        match crate::report::CampaignSummary::compute(self.store.as_ref(), &self.state.id).await {
            Ok(s) => {
                let counts = CampaignCounts {
                    staged: s.staged,
                    pending: s.count(DispatchState::Pending),
                    claimed: s.count(DispatchState::Claimed),
                    deferred: s.count(DispatchState::Deferred),
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
    fn note_progress(&self, summary: crate::report::CampaignSummary, counts: CampaignCounts) {
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
            Some((remaining / pace).round())
        } else {
            None
        };
        let by_state: Vec<(&str, u64)> = DispatchState::ALL
            .iter()
            .map(|s| (s.as_str(), summary.count(*s)))
            .collect();
        metrics::campaign_progress(&self.state.id, &by_state, eta_seconds);
        *slot = Some(Progress {
            summary,
            at: Utc::now(),
            sampled: now,
            dispatched,
            rate,
            eta_seconds,
        });
    }

    async fn observe(&self, counts: &CampaignCounts) -> ObservedState {
        let entry = self.state.entry.read_or_recover().clone();
        let halted = self.state.halted.lock_or_recover().is_some();
        let next = lifecycle::observe(
            entry.spec.state,
            self.state.paused_by_operator.load(Ordering::Acquire),
            halted,
            &entry.spec.schedule,
            counts,
            Utc::now(),
        );
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
                state: next.as_str().to_string(),
                timestamp: Utc::now(),
            }]);
        }
        next
    }

    /// A halt recorded by an earlier run holds while the spec is the one it
    /// was recorded with; a spec that changed meanwhile lifts it.
    async fn load_halt(&self) {
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
    async fn refresh_halt(&self) {
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

    /// Runs until the campaign is stopped.
    pub async fn run(self: Arc<Self>) {
        self.load_halt().await;
        // Nothing is claimed or settled before this instance holds its lease
        // (and so knows everyone's).
        while !self.env.holds_lease() && !self.state.stop.load(Ordering::Acquire) {
            self.state.set_wait(Some((
                "lease",
                "waiting for this instance's lease in the store".into(),
            )));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.state.set_wait(None);
        self.settle_orphans().await;
        // Claim nothing before the suppression list is loaded; the topic is
        // optional, so after 30 s go on without it (and say so).
        let waited = std::time::Instant::now();
        while !self.env.suppressions_ready() && !self.state.stop.load(Ordering::Acquire) {
            if waited.elapsed() > Duration::from_secs(30) {
                tracing::warn!(campaign = %self.state.id, "suppressions topic not read after 30 s (missing?): dispatching without it");
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let in_flight = Arc::new(Semaphore::new(self.max_in_flight));
        let mut cursors: HashMap<u32, Option<u64>> = HashMap::new();
        let mut counts = self.counts().await;
        let mut observed = self.observe(&counts).await;
        metrics::campaign_pending(&self.state.id, counts.pending);
        let mut resend_checked = std::time::Instant::now();
        let mut halt_checked = std::time::Instant::now();
        let mut settle_checked = std::time::Instant::now();
        while !self.state.stop.load(Ordering::Acquire) {
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
                if observed == ObservedState::Ended && counts.pending + counts.deferred > 0 {
                    self.close_window().await;
                    *self.counts_cache.lock_or_recover() = None;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                counts = self.counts().await;
                observed = self.observe(&counts).await;
                continue;
            }
            let mut dispatched = 0u64;
            let mut earliest: Option<DateTime<Utc>> = None;
            let shards = {
                let owned = self.env.owned_shards();
                match self.store.campaign_shards(&self.state.id).await {
                    Ok(s) => s
                        .into_iter()
                        .filter(|x| owned.contains(x))
                        .collect::<Vec<_>>(),
                    Err(_) => Vec::new(),
                }
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
                // Contacts of a page are checked and claimed concurrently:
                // each needs a few store round trips, and the claim is an
                // atomic compare-and-set, so order within a page is free.
                let this: &Arc<Pump> = &self;
                let results: Vec<Considered> = futures::stream::iter(page)
                    .map(|entry| {
                        let in_flight = &in_flight;
                        async move {
                            if this.state.holds() {
                                return Considered::Skipped;
                            }
                            this.consider(&entry.contact, in_flight).await
                        }
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
            counts = if dispatched == 0 {
                self.counts().await
            } else {
                counts
            };
            if dispatched == 0 {
                metrics::campaign_pending(&self.state.id, counts.pending);
                observed = self.observe(&counts).await;
                let sleep = earliest
                    .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
                    .unwrap_or(Duration::from_millis(500))
                    .clamp(Duration::from_millis(50), Duration::from_secs(2));
                tokio::time::sleep(sleep).await;
            } else {
                self.state.set_wait(None);
                observed = self.observe(&counts).await;
            }
        }
        // Paused or stopped: in-flight sends finish on their own.
        let _ = in_flight.acquire_many(self.max_in_flight as u32).await;
    }

    /// Puts back to pending the `unknown` contacts older than
    /// `dispatch.resend_unknown_after_secs` (when set and while the latest
    /// count has any): the operator chose resending over reach lost.
    async fn resend_unknown(&self) {
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
    async fn close_window(&self) {
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

    async fn exclude(&self, contact: &ContactKey, reason: ExclusionReason) {
        if let Ok(true) = self
            .store
            .exclude(&self.state.id, contact, &reason, Utc::now())
            .await
        {
            metrics::exclusion(&self.state.id, reason.label());
            self.env.publish(vec![Event::Excluded {
                campaign_id: self.state.id.clone(),
                contact: contact.to_string(),
                reason: reason.to_string(),
                timestamp: Utc::now(),
            }]);
        }
    }

    /// Admission of one contact at `now` with what is known of it.
    fn admit(
        &self,
        entry: &CatalogEntry,
        row: &DispatchRecord,
        contact: Option<&crate::store::ContactRecord>,
    ) -> Admission {
        let suppression = self.env.suppression(&row.contact);
        let portfolio = self.env.portfolio_wait(&row.contact);
        admission::admit(
            &self.state.facts(entry),
            &ContactFacts {
                key: &row.contact,
                row,
                contact,
                suppression: suppression.as_deref(),
                portfolio_wait: portfolio.as_deref(),
            },
            Utc::now(),
        )
    }

    /// Picks up a pending contact: admission on what the row says, a
    /// sender, the campaign's in-flight slot and pace, then hands it to a
    /// task that waits for the sender's turn and only then claims it.
    async fn consider(
        self: &Arc<Self>,
        contact: &ContactKey,
        in_flight: &Arc<Semaphore>,
    ) -> Considered {
        let id = &self.state.id;
        if self.state.in_hand.lock_or_recover().contains(contact) {
            return Considered::Skipped;
        }
        let Ok(Some(row)) = self.store.get_dispatch(id, contact).await else {
            return Considered::Skipped;
        };
        let entry = self.state.entry.read_or_recover().clone();
        match self.admit(&entry, &row, None) {
            Admission::Ready => {}
            Admission::Wait { until, reason } => {
                if let WaitReason::Portfolio(r) = reason {
                    self.state.set_wait(Some(("portfolio_limit", r)));
                }
                return Considered::Wait(until);
            }
            Admission::Exclude(reason) => {
                self.exclude(contact, reason).await;
                return Considered::Skipped;
            }
            Admission::Hold(_) | Admission::Skip => return Considered::Skipped,
        }
        // Pick a sender first: with none available, don't take a slot.
        let sender = match pool::pick(&self.senders, &entry.spec.senders, contact) {
            Ok(core) => QueuedSend::new(core),
            Err(NoSender::Halted) => {
                self.state.set_wait(Some((
                    "senders_halted",
                    "every sender of the campaign is halted".into(),
                )));
                return Considered::Wait(Utc::now() + chrono::Duration::seconds(5));
            }
            Err(NoSender::Unavailable) => {
                self.state.set_wait(Some((
                    "senders_unavailable",
                    "the campaign's senders are failing transiently (outage): contacts stay pending until a probe gets through".into(),
                )));
                return Considered::Wait(Utc::now() + chrono::Duration::milliseconds(500));
            }
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return Considered::Skipped;
        };
        let holds = || self.state.holds();
        if !super::sender::wait_turn_unless(|| self.state.limiter.read_or_recover().clone(), &holds)
            .await
        {
            return Considered::Skipped;
        }
        if !self.state.in_hand.lock_or_recover().insert(contact.clone()) {
            return Considered::Skipped;
        }
        let job = SendJob {
            campaign: id.clone(),
            contact: contact.clone(),
            body: template_message_bytes(
                &entry.spec.template,
                contact,
                &row.params,
                &callback_data(id, contact),
            ),
            claim: super::decision::claim_number(row.attempts, row.error_code),
            retries: self
                .state
                .retries
                .lock_or_recover()
                .get(contact)
                .copied()
                .unwrap_or(0),
        };
        self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        // The send runs on the tokio pool straight on the sender's core: a
        // round trip through the sender actor's mailbox for every message
        // cost two thread hops and a third of the daemon's CPU per send. The
        // actor keeps the sender's lifecycle and control messages. Every log
        // line of the send carries the campaign and the sender.
        let span = tracing::info_span!("send", campaign = %id, sender = %sender.core().id);
        let pump = self.clone();
        tokio::spawn(async move {
            use tracing::Instrument;
            pump.send(sender, row, job, entry).instrument(span).await;
            drop(permit);
        });
        Considered::Dispatched
    }

    /// The sender's turn, the claim, the request: nothing in between the
    /// last two. A contact whose turn never came (a stop, a halt, an open
    /// circuit) was never claimed and stays pending as it was.
    async fn send(
        &self,
        sender: QueuedSend,
        row: DispatchRecord,
        job: SendJob,
        entry: Arc<CatalogEntry>,
    ) {
        let state = &self.state;
        let holds = || state.holds();
        if let Some(turn) = sender.core().take_turn(&job.contact, &holds).await {
            if self.claim(&row).await {
                let contact = job.contact.clone();
                let report = sender.core().deliver(turn, job).await;
                state.note_retry(&contact, report == SendReport::Requeued);
                if let SendReport::CampaignHalted(reason) = &report {
                    self.halt(reason, &entry).await;
                }
                state.dispatched.fetch_add(1, Ordering::Relaxed);
            }
        }
        state.in_hand.lock_or_recover().remove(&row.contact);
        state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A campaign-class error stops the campaign, in memory at once and in
    /// the store for the next start, bound to the spec the request was built
    /// from.
    async fn halt(&self, reason: &str, entry: &CatalogEntry) {
        let state = &self.state;
        let halt = CampaignHalt {
            reason: reason.to_string(),
            spec: entry.spec.halt_digest(),
            at: Utc::now(),
        };
        if state.entry.read_or_recover().spec.halt_digest() != halt.spec {
            // A request built from a spec replaced since: the new template
            // gets its own chance.
            tracing::info!(campaign = %state.id, reason = %reason, "template error for a spec replaced meanwhile; not halting the new one");
            return;
        }
        if state
            .halted
            .lock_or_recover()
            .as_ref()
            .is_some_and(|h| h.spec == halt.spec)
        {
            return; // another send of the same spec got there first
        }
        tracing::error!(campaign = %state.id, reason = %reason, "campaign halted by WhatsApp (template problem): fix the template, then publish a changed spec or POST /campaigns/{}/clear-halt on the admin listener", state.id);
        *state.halted.lock_or_recover() = Some(halt.clone());
        state.halt_unsaved.store(true, Ordering::Release);
        self.save_halt(&halt).await;
    }

    /// Writes the halt in memory to the store; until that succeeds the halt
    /// is written again on every check (and never lifted by the check).
    async fn save_halt(&self, halt: &CampaignHalt) {
        match self
            .store
            .set_campaign_halt(&self.state.id, Some(halt))
            .await
        {
            Ok(()) => self.state.halt_unsaved.store(false, Ordering::Release),
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, error = %e, "cannot store the campaign's halt yet; it holds in memory and is written again in 5 s");
            }
        }
    }

    /// Claim time: every check again with the contact's current record, the
    /// current spec and overrides, then the compare-and-set. True when this
    /// process now owns the send.
    async fn claim(&self, row: &DispatchRecord) -> bool {
        let contact = &row.contact;
        let record = match self.store.get_contact(contact).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, error = %e, "cannot read the contact before its claim; it stays pending");
                return false;
            }
        };
        let entry = self.state.entry.read_or_recover().clone();
        match self.admit(&entry, row, record.as_ref()) {
            Admission::Ready => {}
            Admission::Exclude(reason) => {
                self.exclude(contact, reason).await;
                return false;
            }
            Admission::Wait { .. } | Admission::Hold(_) | Admission::Skip => return false,
        }
        if !self.env.holds_lease() {
            self.state.set_wait(Some((
                "lease",
                "this instance's lease is not renewed (is the store reachable?): claims wait so that no other instance settles a send still in flight".into(),
            )));
            return false;
        }
        let mut request = ClaimRequest {
            campaign_id: self.state.id.clone(),
            contact: contact.clone(),
            exclusive: entry.spec.exclusive,
            replace_engagement: None,
            owner: self.owner.clone(),
            now: Utc::now(),
        };
        let mut outcome = self.store.claim(&request).await;
        if let Ok(ClaimOutcome::EngagedElsewhere { campaign }) = &outcome {
            if self.env.releases_engagement(campaign) {
                request.replace_engagement = Some(campaign.clone());
                outcome = self.store.claim(&request).await;
            }
        }
        match outcome {
            Ok(ClaimOutcome::Claimed { .. }) => self.count_recipient(contact).await,
            Ok(ClaimOutcome::EngagedElsewhere { .. }) => {
                self.exclude(contact, ExclusionReason::EngagedElsewhere)
                    .await;
                false
            }
            Ok(ClaimOutcome::NotClaimable { .. }) => false,
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, error = %e, "claim failed; the contact stays pending");
                false
            }
        }
    }
}

impl Pump {
    /// After the claim, before the request: the contact takes a place of the
    /// portfolio limit in the store (or is counted already). When the window
    /// is full, or the store does not answer, the claim goes back (the
    /// request never left, so it is no attempt) with a retry time.
    async fn count_recipient(&self, contact: &ContactKey) -> bool {
        let Some(limit) = self.env.portfolio_limit() else {
            return true;
        };
        let now = Utc::now();
        let retry_at = match self.store.count_recipient(contact, now, limit).await {
            Ok(RecipientCount::Counted | RecipientCount::Known) => {
                self.env.note_recipient(contact);
                return true;
            }
            Ok(RecipientCount::Full { until }) => {
                self.env.portfolio_full(until);
                self.state.set_wait(Some((
                    "portfolio_limit",
                    format!("portfolio limit of {limit} unique recipients per 24 h reached"),
                )));
                until
            }
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, error = %e, "cannot count the recipient against the portfolio limit; the contact goes back to pending");
                now + chrono::Duration::seconds(1)
            }
        };
        let back = Outcome::Retry {
            code: None,
            not_before: Some(retry_at),
        };
        if let Err(e) = self
            .store
            .record_outcome(&self.state.id, contact, &back, Utc::now())
            .await
        {
            // The row stays claimed by this live instance; a restart
            // settles it `unknown`, though nothing was sent.
            tracing::error!(campaign = %self.state.id, contact = %contact, error = %e, "cannot give back a claim held for the portfolio limit");
        }
        false
    }
}

enum Considered {
    Dispatched,
    Wait(DateTime<Utc>),
    Skipped,
}

// ---- actix glue ----

pub struct CampaignActor {
    pub pump: Arc<Pump>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl CampaignActor {
    pub fn new(pump: Pump) -> Self {
        CampaignActor {
            pump: Arc::new(pump),
            task: None,
        }
    }
}

impl Actor for CampaignActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
        use tracing::Instrument;
        let span = tracing::info_span!("campaign", campaign = %self.pump.state.id);
        self.task = Some(tokio::spawn(self.pump.clone().run().instrument(span)));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.pump.state.stop.store(true, Ordering::Release);
    }
}

/// Operator and spec changes.
#[derive(Message)]
#[rtype(result = "()")]
pub enum CampaignControl {
    Spec(Arc<CatalogEntry>),
    Override {
        per_second: Option<f64>,
        paused: bool,
    },
    Stop,
}

impl Handler<CampaignControl> for CampaignActor {
    type Result = ();

    fn handle(&mut self, msg: CampaignControl, ctx: &mut Self::Context) {
        let state = &self.pump.state;
        match msg {
            CampaignControl::Spec(entry) => {
                // A changed spec (a fixed template) lifts a halt; the same
                // spec read again (a restart, a catalog refresh) does not.
                let lifted = {
                    let mut halted = state.halted.lock_or_recover();
                    let changed = halted
                        .as_ref()
                        .is_some_and(|h| h.spec != entry.spec.halt_digest());
                    if changed {
                        *halted = None;
                    }
                    changed
                };
                *state.entry.write_or_recover() = entry;
                if lifted {
                    tracing::info!(campaign = %state.id, "a changed spec lifts the campaign's halt");
                    let (store, live) = (self.pump.store.clone(), state.clone());
                    tokio::spawn(async move {
                        let id = &live.id;
                        if let Err(e) = store.set_campaign_halt(id, None).await {
                            tracing::warn!(campaign = %id, error = %e, "cannot lift the stored halt; the next start lifts it again");
                        }
                        // A halt of the new spec may have come in meanwhile:
                        // the check writes it again rather than lift it.
                        if live.halted.lock_or_recover().is_some() {
                            live.halt_unsaved.store(true, Ordering::Release);
                        }
                    });
                }
                state.repace();
            }
            CampaignControl::Override { per_second, paused } => {
                *state.rate_override.write_or_recover() = per_second;
                state.paused_by_operator.store(paused, Ordering::Release);
                state.repace();
            }
            CampaignControl::Stop => {
                state.stop.store(true, Ordering::Release);
                ctx.stop();
            }
        }
    }
}
