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

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use governor::DefaultDirectRateLimiter;
use tokio::sync::Semaphore;

use super::policy::lifecycle::{self, CampaignCounts};
use super::policy::schedule::{self, Gate};
use super::sender::{QueuedSend, SendJob, SendReport, SenderCore};
use crate::domain::{ContactKey, DispatchState, ExclusionReason, ObservedState};
use crate::events::Event;
use crate::ingest::catalog::CatalogEntry;
use crate::metrics;
use crate::store::{ClaimOutcome, ClaimRequest, Outcome, Store};

/// Pending contacts read per scan page.
const PAGE: usize = 500;
/// Contacts of a page checked and claimed at once.
const CONCURRENT_CHECKS: usize = 64;
/// A contact Meta could not deliver to (131026) is not retried by other
/// campaigns for this long.
const UNDELIVERABLE_DAYS: i64 = 30;

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
    /// Records a unique recipient for the portfolio limit.
    fn note_recipient(&self, contact: &ContactKey);
    /// True once the suppression list is loaded (claims wait for it).
    fn suppressions_ready(&self) -> bool;
    /// Publishes events (best effort: the store already holds the truth).
    fn publish(&self, events: Vec<Event>);
}

/// Live state of a campaign shared by the actor, its pump and `/campaigns`.
pub struct CampaignState {
    pub id: String,
    pub entry: RwLock<Arc<CatalogEntry>>,
    pub paused_by_operator: AtomicBool,
    pub rate_override: RwLock<Option<f64>>,
    limiter: RwLock<Arc<DefaultDirectRateLimiter>>,
    pub halted: Mutex<Option<String>>,
    pub observed: Mutex<Option<ObservedState>>,
    pub wait_reason: Mutex<Option<String>>,
    pub in_flight: AtomicU64,
    pub dispatched: AtomicU64,
    /// The latest count of the campaign's contacts (for `/campaigns`).
    pub progress: Mutex<Option<Progress>>,
    stop: AtomicBool,
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
            observed: Mutex::new(None),
            wait_reason: Mutex::new(None),
            in_flight: AtomicU64::new(0),
            dispatched: AtomicU64::new(0),
            progress: Mutex::new(None),
            stop: AtomicBool::new(false),
        }
    }

    pub fn rate(&self) -> f64 {
        read(&self.rate_override).unwrap_or_else(|| read(&self.entry).spec.pacing.rate_per_second())
    }

    /// Rebuilds the pacing limiter (reload or new spec), without a burst.
    pub fn repace(&self) {
        *self.limiter.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(super::sender::drained_limiter(self.rate()));
    }

    /// Records why the campaign waits (`kind` is the bounded metric label:
    /// `portfolio_limit`, `senders_halted`), or that it no longer does.
    pub fn set_wait(&self, reason: Option<(&'static str, String)>) {
        let mut w = lock(&self.wait_reason);
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

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Everything the pump needs.
pub struct Pump {
    pub state: Arc<CampaignState>,
    pub store: Arc<dyn Store>,
    pub senders: super::registry::SenderMap,
    pub env: Arc<dyn DispatchEnv>,
    pub owner: String,
    pub max_in_flight: usize,
    /// The last full count and the instant until which it is reused.
    pub counts_cache: Mutex<Option<(std::time::Instant, CampaignCounts)>>,
}

impl Pump {
    /// Claimed rows left by an earlier run of this instance become `unknown`:
    /// the request may have left, and WhatsApp has no idempotency key, so
    /// they are never resent automatically; webhooks settle them.
    pub async fn recover(&self) -> usize {
        let mut after = None;
        let mut n = 0;
        loop {
            let page = match self
                .store
                .scan_dispatches(&self.state.id, after.as_ref(), 2_000)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(campaign = %self.state.id, error = %e, "cannot scan for interrupted sends");
                    return n;
                }
            };
            for row in &page {
                if row.state == DispatchState::Claimed
                    && row.owner.as_deref() == Some(self.owner.as_str())
                {
                    let outcome = Outcome::Unknown {
                        message: "claimed when the process stopped; may have been sent, never resent automatically".into(),
                    };
                    if self
                        .store
                        .record_outcome(&self.state.id, &row.contact, &outcome, Utc::now())
                        .await
                        .is_ok()
                    {
                        metrics::dispatch(&self.state.id, "-", "unknown");
                        n += 1;
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == 2_000 => after = Some(last.contact.clone()),
                _ => break,
            }
        }
        if n > 0 {
            tracing::warn!(campaign = %self.state.id, contacts = n, "interrupted sends marked unknown (settled by status webhooks)");
        }
        n
    }

    async fn counts(&self) -> CampaignCounts {
        // A full scan of the campaign's rows: at most every 5 s, and never
        // more than 5 % of the time (a million rows take about a second to
        // scan), so a paused, idle or finished large campaign does not keep
        // a core busy counting.
        if let Some((fresh_until, c)) = *lock(&self.counts_cache) {
            if std::time::Instant::now() < fresh_until {
                return c;
            }
        }
        let started = std::time::Instant::now();
        let counts = self.count_now().await;
        let fresh_until =
            std::time::Instant::now() + (started.elapsed() * 20).max(Duration::from_secs(5));
        *lock(&self.counts_cache) = Some((fresh_until, counts));
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
        let mut slot = lock(&self.state.progress);
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
        let entry = read(&self.state.entry);
        let halted = lock(&self.state.halted).is_some();
        let next = lifecycle::observe(
            entry.spec.state,
            self.state.paused_by_operator.load(Ordering::Acquire),
            halted,
            &entry.spec.schedule,
            counts,
            Utc::now(),
        );
        let prev = *lock(&self.state.observed);
        if lifecycle::transition(prev, next).is_some() {
            tracing::info!(campaign = %self.state.id, from = ?prev, to = ?next, "campaign state");
            *lock(&self.state.observed) = Some(next);
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

    /// Runs until the campaign is stopped.
    pub async fn run(self: Arc<Self>) {
        self.recover().await;
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
        while !self.state.stop.load(Ordering::Acquire) {
            if !lifecycle::may_claim(observed) {
                if observed == ObservedState::Ended && counts.pending + counts.deferred > 0 {
                    self.close_window().await;
                    *lock(&self.counts_cache) = None;
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
                let this: &Pump = &self;
                let results: Vec<Considered> = futures::stream::iter(page)
                    .map(|entry| {
                        let in_flight = &in_flight;
                        async move {
                            if this.state.stop.load(Ordering::Acquire)
                                || this.state.paused_by_operator.load(Ordering::Acquire)
                                || lock(&this.state.halted).is_some()
                            {
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

    async fn consider(&self, contact: &ContactKey, in_flight: &Arc<Semaphore>) -> Considered {
        let id = &self.state.id;
        let Ok(Some(row)) = self.store.get_dispatch(id, contact).await else {
            return Considered::Skipped;
        };
        let now = Utc::now();
        if !matches!(row.state, DispatchState::Pending | DispatchState::Deferred) {
            return Considered::Skipped;
        }
        if let Some(until) = row.deferred_until.filter(|u| *u > now) {
            return Considered::Wait(until);
        }
        let entry = read(&self.state.entry);
        let tz = schedule::contact_timezone(row.timezone.as_deref(), contact);
        match schedule::gate(&entry.spec.schedule, tz, row.send_after, now) {
            Gate::Ready => {}
            Gate::WaitUntil(t) => return Considered::Wait(t),
            Gate::OutsideWindow => {
                self.exclude(contact, ExclusionReason::OutsideWindow).await;
                return Considered::Skipped;
            }
        }
        if let Ok(Some(c)) = self.store.get_contact(contact).await {
            if c.opted_out {
                self.exclude(contact, ExclusionReason::OptedOut).await;
                return Considered::Skipped;
            }
            if c.undeliverable_at
                .is_some_and(|t| now - t < chrono::Duration::days(UNDELIVERABLE_DAYS))
            {
                self.exclude(contact, ExclusionReason::NotWhatsappUser)
                    .await;
                return Considered::Skipped;
            }
        }
        if let Some(reason) = self.env.suppression(contact) {
            self.exclude(contact, ExclusionReason::Suppressed(reason))
                .await;
            return Considered::Skipped;
        }
        if let Some(reason) = self.env.portfolio_wait(contact) {
            self.state.set_wait(Some(("portfolio_limit", reason)));
            return Considered::Wait(now + chrono::Duration::seconds(30));
        }
        // Pick a sender first: with none available, don't claim.
        let Some(sender) = self.pick_sender(&entry, contact).map(QueuedSend::new) else {
            self.state.set_wait(Some((
                "senders_halted",
                "every sender of the campaign is halted".into(),
            )));
            return Considered::Wait(now + chrono::Duration::seconds(5));
        };
        let permit = match in_flight.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => return Considered::Skipped,
        };
        // Campaign pace, then the claim, then the send: nothing in between.
        super::sender::wait_turn(|| read(&self.state.limiter)).await;
        let mut request = ClaimRequest {
            campaign_id: id.clone(),
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
        let claims = match outcome {
            Ok(ClaimOutcome::Claimed { attempts }) => attempts,
            Ok(ClaimOutcome::EngagedElsewhere { .. }) => {
                self.exclude(contact, ExclusionReason::EngagedElsewhere)
                    .await;
                return Considered::Skipped;
            }
            Ok(ClaimOutcome::NotClaimable { .. }) => return Considered::Skipped,
            Err(e) => {
                tracing::warn!(campaign = %id, error = %e, "claim failed; the contact stays pending");
                return Considered::Skipped;
            }
        };
        self.env.note_recipient(contact);
        let job = SendJob {
            campaign: entry,
            contact: contact.clone(),
            params: row.params,
            claims,
            deferred_before: row.error_code == Some(131049),
        };
        let state = self.state.clone();
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        // The send runs on the tokio pool straight on the sender's core: a
        // round trip through the sender actor's mailbox for every message
        // cost two thread hops and a third of the daemon's CPU per send. The
        // actor keeps the sender's lifecycle and control messages. Every log
        // line of the send carries the campaign and the sender.
        let span = tracing::info_span!("send", campaign = %state.id, sender = %sender.core().id);
        tokio::spawn(async move {
            use tracing::Instrument;
            let report = sender.core().clone().process(job).instrument(span).await;
            drop(sender);
            if let SendReport::CampaignHalted(reason) = &report {
                tracing::error!(campaign = %state.id, reason = %reason, "campaign halted by WhatsApp (template problem): fix it, then publish the spec again or restart");
                *lock(&state.halted) = Some(reason.clone());
            }
            state.in_flight.fetch_sub(1, Ordering::Relaxed);
            state.dispatched.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        Considered::Dispatched
    }

    /// The least loaded sender of the pool, skipping halted ones; the scan
    /// starts at a hash of the contact, so equally loaded senders share the
    /// work. A fixed hash per contact left some senders idle while others had
    /// long queues holding the campaign's in-flight permits: with 100 paced
    /// senders the idle ones sent 2–7 % under their rate.
    fn pick_sender(&self, entry: &CatalogEntry, contact: &ContactKey) -> Option<Arc<SenderCore>> {
        let senders = self.senders.read().unwrap_or_else(|p| p.into_inner());
        let pool: Vec<&Arc<SenderCore>> = entry
            .spec
            .senders
            .iter()
            .filter_map(|s| senders.get(s))
            .map(|(_, core)| core)
            .filter(|core| !core.is_halted())
            .collect();
        if pool.is_empty() {
            return None;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        contact.as_str().hash(&mut h);
        let start = (h.finish() as usize) % pool.len();
        (0..pool.len())
            .map(|i| pool[(start + i) % pool.len()])
            .min_by_key(|core| core.queued())
            .cloned()
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
                *state.entry.write().unwrap_or_else(|p| p.into_inner()) = entry;
                // A new spec is the operator's way to resume after a template fix.
                *lock(&state.halted) = None;
                state.repace();
            }
            CampaignControl::Override { per_second, paused } => {
                *state
                    .rate_override
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = per_second;
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
