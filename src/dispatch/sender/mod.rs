//! `SenderActor`: one per WhatsApp phone_number_id.
//!
//! Paces messages with a governor limiter at `per_second × instance share`
//! (adjusted by AIMD on 130429), spaces messages to one recipient with a
//! keyed pair limiter (Meta: error 131056), trips a circuit when its sends
//! keep failing transiently (an outage), sends through the Cloud API client,
//! decides what the answer means and writes the outcome. The actor is glue:
//! [`SenderCore`] does the work on the tokio pool, so the actor's thread
//! never waits on I/O.
//!
//! A send is two steps with the claim in between: [`SenderCore::take_turn`]
//! waits for everything that can make a contact wait (the sender's in-flight
//! slot, the pair limiter, the pace, the circuit), the caller claims the
//! contact, and [`SenderCore::deliver`] writes the request at once and
//! records what came back. So a claimed row is a request on the wire, and a
//! crash or a stop can only leave `unknown` the requests that really left
//! (docs/ARCHITECTURE.md, "Claims").

pub mod pool;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use chrono::Utc;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::decision::{self, ContactFact, Decision};
use super::policy::aimd::Aimd;
use super::policy::backoff::RetryPolicy;
use super::policy::circuit::{Circuit, CircuitSettings, Pass};
use crate::domain::{code, ContactKey, ErrorClass};
use crate::metrics;
use crate::store::{Outcome, Store};
use crate::sync::{MutexExt, RwLockExt};
use crate::whatsapp::client::{SendResult, WhatsAppClient};

/// Settings of one sender (from `[senders]` and `[dispatch]`).
#[derive(Debug, Clone)]
pub struct SenderSettings {
    pub per_second: f64,
    pub pair_interval: Duration,
    pub pair_burst: u32,
    pub max_in_flight: usize,
    pub retry: RetryPolicy,
    pub aimd_decrease_factor: f64,
    pub aimd_increase_per_sec: f64,
    pub circuit: CircuitSettings,
    /// How long 131057 pauses the sender (`dispatch.maintenance_pause_secs`).
    pub maintenance_pause: Duration,
    /// What Meta's quality signals do to marketing sends
    /// (`whatsapp.number_quality`), and how long a 131048 lasts.
    pub quality: crate::domain::NumberQualityPolicy,
    pub quality_hold: Duration,
}

/// A claimed contact to send.
pub struct SendJob {
    /// `/messages`, or `/marketing_messages` for a marketing template.
    pub endpoint: crate::domain::Endpoint,
    /// The template is of category marketing (`whatsapp.number_quality`).
    pub marketing: bool,
    pub campaign: String,
    /// The journey step's id (its metrics label).
    pub step: String,
    pub contact: ContactKey,
    /// The request body, built before the claim.
    pub body: Bytes,
    /// How long a 131049 answer to this send defers the contact (the
    /// `whatsapp.marketing_limit_retry` wait of this attempt); none when
    /// its retries are spent and the failure is final.
    pub deferral: Option<chrono::Duration>,
    /// Earlier tries of this contact that never left (back in the queue
    /// each time): the backoff grows with them.
    pub retries: u32,
}

/// How a job ended, for the campaign that handed it over.
#[derive(Debug, Clone, PartialEq)]
pub enum SendReport {
    /// An outcome was written (its label: accepted, failed, unknown, …).
    Done(&'static str),
    /// The request never left (or was refused with a retryable error); the
    /// contact is pending again, claimable from the retry time.
    Requeued,
    /// The sender is halted; the contact went back to the queue.
    SenderHalted,
    /// A campaign-class error (its code and Meta's message); the contact
    /// went back to the queue.
    CampaignHalted { code: Option<i64>, reason: String },
    /// The outcome could not be written; the claim stays and is settled at
    /// the next start (as unknown) or by a webhook.
    StoreFailed,
    /// `/marketing_messages` refused the template as not a marketing one
    /// (134100, 131055: its category changed at Meta): the contact went back
    /// to the queue and the campaign sends through `/messages` from now on.
    MarketingEndpointRefused { reason: String },
}

/// The sender's go-ahead for one contact: its in-flight slot is held and
/// the pair limiter, the pace and the circuit let it through. Claim, then
/// [`SenderCore::deliver`]; dropped unused, it gives everything back.
pub struct Turn<'a> {
    core: &'a SenderCore,
    _slot: SemaphorePermit<'a>,
    probe: bool,
    used: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.probe && !self.used {
            self.core
                .circuit
                .lock_or_recover()
                .probe_abandoned(monotonic_secs());
        }
    }
}

pub struct SenderCore {
    pub id: String,
    client: WhatsAppClient,
    store: Arc<dyn Store>,
    settings: RwLock<SenderSettings>,
    share: Mutex<f64>,
    aimd: Mutex<Aimd>,
    limiter: RwLock<Arc<DefaultDirectRateLimiter>>,
    last_rebuild: Mutex<Instant>,
    pair: DefaultKeyedRateLimiter<String>,
    halted: Mutex<Option<String>>,
    is_halted: AtomicBool,
    circuit: Mutex<Circuit>,
    circuit_open: AtomicBool,
    /// Meta put the number in maintenance (131057): until this monotonic
    /// second the sender takes no contact, and why.
    paused: Mutex<Option<(f64, String)>>,
    /// `paused` is set: one load on the hot path while it is not.
    pause_flag: AtomicBool,
    /// Meta's quality signal on the number (131048, FLAGGED, DOWNGRADE):
    /// why, and until which monotonic second (none: until Meta lifts it).
    quality: Mutex<Option<(String, Option<f64>)>>,
    /// `quality` is set: one load on the hot path while it is not.
    quality_flagged: AtomicBool,
    /// Marketing sends of a flagged number under `slow` take a permit of
    /// this limiter too: half the sender's rate.
    marketing_limiter: RwLock<Arc<DefaultDirectRateLimiter>>,
    in_flight: Semaphore,
    /// Sends waiting for the sender's rate take turns here, first come first
    /// served: only the head polls the limiter. Without it every waiting send
    /// woke at each permit and all but one went back to sleep, which at 100
    /// paced senders cost more CPU than the sends themselves.
    pace_queue: tokio::sync::Mutex<()>,
    /// Sends handed to this sender and not finished: the campaign gives the
    /// next contact to the least loaded sender of its pool.
    queued: AtomicUsize,
}

/// Counts a send in [`SenderCore::queued`] from the moment the sender is
/// chosen until dropped (the send finished, or the claim failed).
pub struct QueuedSend(Arc<SenderCore>);

impl QueuedSend {
    pub fn new(core: Arc<SenderCore>) -> Self {
        core.queued.fetch_add(1, Ordering::Relaxed);
        QueuedSend(core)
    }

    pub fn core(&self) -> &Arc<SenderCore> {
        &self.0
    }
}

impl Drop for QueuedSend {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The Marketing Messages API's refusal of a template that is not (or no
/// longer) of category marketing at Meta: the request never went out, so
/// the contact goes back to the queue for `/messages`.
fn marketing_endpoint_refusal(job: &SendJob, result: &SendResult) -> Option<String> {
    let crate::domain::Endpoint::MarketingMessages { .. } = job.endpoint else {
        return None;
    };
    match result {
        SendResult::Rejected { error, .. }
            if matches!(
                error.code,
                Some(code::NOT_MARKETING | code::METHOD_NOT_ALLOWED)
            ) =>
        {
            Some(error.describe())
        }
        _ => None,
    }
}

/// Meta's message of a refusal, for logs and `/campaigns`.
fn result_message(result: &SendResult) -> String {
    match result {
        SendResult::Rejected { error, .. } => error.describe(),
        _ => String::new(),
    }
}

/// The slowest pace a limiter keeps: one permit a day. Slower rates are
/// refused by config validation; this only keeps a zero out of governor.
const MIN_RATE: f64 = 1.0 / 86_400.0;

fn quota(rate: f64) -> Quota {
    let rate = if rate.is_finite() {
        rate.max(MIN_RATE)
    } else {
        MIN_RATE
    };
    // Burst of 50 ms worth: enough to absorb scheduling jitter, small enough
    // that a platform limit equal to our rate never sees a spike above it.
    let burst = NonZeroU32::new(((rate / 20.0).ceil() as u32).max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(Duration::from_secs_f64(1.0 / rate))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// A limiter that starts empty: rebuilt on reload or AIMD, it must not
/// grant a fresh burst on top of what was just sent. Campaign pacing uses
/// the same construction.
pub(crate) fn drained_limiter(rate: f64) -> DefaultDirectRateLimiter {
    let q = quota(rate);
    let limiter = RateLimiter::direct(q);
    let _ = limiter.check_n(q.burst_size());
    limiter
}

impl SenderCore {
    pub fn new(
        id: &str,
        client: WhatsAppClient,
        store: Arc<dyn Store>,
        settings: SenderSettings,
        share: f64,
    ) -> Self {
        // Config validation guarantees positive rates and a factor in (0, 1);
        // should that ever slip, fall back to conservative constants.
        let aimd = Aimd::new(settings.per_second, settings.aimd_decrease_factor, settings.aimd_increase_per_sec, 1.0)
            .unwrap_or_else(|e| {
                tracing::error!(sender = id, error = %e, "invalid AIMD settings; using 0.5 and 1 msg/s per second");
                Aimd::new(settings.per_second.max(1.0), 0.5, 1.0, 1.0)
                    .unwrap_or_else(|_| Aimd::new(1.0, 0.5, 1.0, 1.0).expect("constant AIMD settings are valid"))
            });
        let rate = settings.per_second * if share > 0.0 { share } else { 1.0 };
        let pair_quota = Quota::with_period(settings.pair_interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(settings.pair_burst.max(1)).unwrap_or(NonZeroU32::MIN));
        metrics::sender_rate(id, rate, settings.per_second);
        metrics::sender_circuit(id, false);
        SenderCore {
            id: id.to_string(),
            client,
            store,
            in_flight: Semaphore::new(settings.max_in_flight.max(1)),
            circuit: Mutex::new(Circuit::new(settings.circuit)),
            circuit_open: AtomicBool::new(false),
            paused: Mutex::new(None),
            pause_flag: AtomicBool::new(false),
            quality: Mutex::new(None),
            quality_flagged: AtomicBool::new(false),
            marketing_limiter: RwLock::new(Arc::new(drained_limiter(rate / 2.0))),
            settings: RwLock::new(settings),
            share: Mutex::new(share),
            aimd: Mutex::new(aimd),
            limiter: RwLock::new(Arc::new(drained_limiter(rate))),
            last_rebuild: Mutex::new(Instant::now()),
            pair: RateLimiter::keyed(pair_quota),
            halted: Mutex::new(None),
            is_halted: AtomicBool::new(false),
            pace_queue: tokio::sync::Mutex::new(()),
            queued: AtomicUsize::new(0),
        }
    }

    pub fn is_halted(&self) -> bool {
        self.is_halted.load(Ordering::Acquire)
    }

    pub fn halt_reason(&self) -> Option<String> {
        self.halted.lock_or_recover().clone()
    }

    /// True while the circuit is open (an outage): the sender is given no
    /// contacts until a probe gets through, except the probe itself.
    pub fn is_circuit_open(&self) -> bool {
        self.circuit_open.load(Ordering::Acquire)
    }

    /// Why Meta has the number paused now (131057), if it does.
    pub fn paused(&self) -> Option<String> {
        if !self.pause_flag.load(Ordering::Acquire) {
            return None;
        }
        let mut paused = self.paused.lock_or_recover();
        match paused.as_ref() {
            Some((until, why)) if monotonic_secs() < *until => Some(why.clone()),
            Some(_) => {
                *paused = None;
                self.pause_flag.store(false, Ordering::Release);
                None
            }
            None => None,
        }
    }

    /// Pauses the sender for `pause` (131057: the number is in maintenance
    /// or its throughput is being upgraded). Nobody fails: contacts wait.
    pub fn pause(&self, pause: Duration, why: String) {
        let until = monotonic_secs() + pause.as_secs_f64();
        let mut paused = self.paused.lock_or_recover();
        if paused.is_none() {
            tracing::warn!(sender = %self.id, seconds = pause.as_secs(), reason = %why, "sender paused: Meta has the number in maintenance; contacts wait, nobody fails");
        }
        *paused = Some((until, why));
        self.pause_flag.store(true, Ordering::Release);
    }

    /// Meta flagged the number's quality (`why`) for `hold` (none: until
    /// Meta lifts it, [`Self::lift_quality`]).
    pub fn flag_quality(&self, why: String, hold: Option<Duration>) {
        let policy = self.settings.read_or_recover().quality;
        let until = hold.map(|h| monotonic_secs() + h.as_secs_f64());
        let mut quality = self.quality.lock_or_recover();
        if quality.is_none() {
            tracing::warn!(sender = %self.id, reason = %why, policy = policy.as_str(), "Meta flagged the number's quality: marketing sends from it follow whatsapp.number_quality");
        }
        *quality = Some((why, until));
        self.quality_flagged.store(true, Ordering::Release);
    }

    /// Meta lifted its quality flag (UNFLAGGED, UPGRADE).
    pub fn lift_quality(&self) {
        if self.quality.lock_or_recover().take().is_some() {
            tracing::info!(sender = %self.id, "Meta lifted the number's quality flag: marketing sends at the full rate again");
        }
        self.quality_flagged.store(false, Ordering::Release);
    }

    /// Meta's quality signal on the number now, if any.
    pub fn quality(&self) -> Option<String> {
        if !self.quality_flagged.load(Ordering::Acquire) {
            return None;
        }
        let mut quality = self.quality.lock_or_recover();
        match quality.as_ref() {
            Some((_, Some(until))) if monotonic_secs() >= *until => {
                *quality = None;
                self.quality_flagged.store(false, Ordering::Release);
                None
            }
            Some((why, _)) => Some(why.clone()),
            None => None,
        }
    }

    /// Why this sender takes no marketing send now (flagged under `halt`).
    pub fn marketing_held(&self) -> Option<String> {
        let why = self.quality()?;
        (self.settings.read_or_recover().quality == crate::domain::NumberQualityPolicy::Halt)
            .then_some(why)
    }

    /// A marketing send of a flagged number under `slow` waits a permit of
    /// the half-rate limiter first; false when `stop` said so.
    pub async fn marketing_pace(&self, stop: &(dyn Fn() -> bool + Sync)) -> bool {
        if self.quality().is_none()
            || self.settings.read_or_recover().quality != crate::domain::NumberQualityPolicy::Slow
        {
            return true;
        }
        let current = || self.marketing_limiter.read_or_recover().clone();
        wait_turn_unless(current, stop).await
    }

    /// May the pool hand this sender a contact now? Not halted or paused,
    /// and its circuit closed or due for a probe.
    pub fn available(&self) -> bool {
        if self.is_halted() || self.paused().is_some() {
            return false;
        }
        if !self.is_circuit_open() {
            return true;
        }
        match self.circuit.lock_or_recover().state() {
            super::policy::circuit::CircuitState::Open { until, .. } => monotonic_secs() >= until,
            super::policy::circuit::CircuitState::Probing { .. } => false,
            super::policy::circuit::CircuitState::Closed { .. } => true,
        }
    }

    /// Current allowed messages per second (AIMD × instance share). Before
    /// the first assignment the share is unknown (0): nothing can be sent
    /// then anyway (no owned shard), so the full rate stands until the share
    /// arrives, rather than a crawl that waiting sends would inherit.
    pub fn rate(&self) -> f64 {
        let share = *self.share.lock_or_recover();
        self.aimd.lock_or_recover().rate() * if share > 0.0 { share } else { 1.0 }
    }

    pub fn configured(&self) -> f64 {
        self.settings.read_or_recover().per_second
    }

    fn rebuild(&self) {
        let rate = self.rate();
        *self.limiter.write_or_recover() = Arc::new(drained_limiter(rate));
        *self.marketing_limiter.write_or_recover() = Arc::new(drained_limiter(rate / 2.0));
        *self.last_rebuild.lock_or_recover() = Instant::now();
        metrics::sender_rate(&self.id, rate, self.configured());
    }

    /// Reload or rebalance: a new configured rate and/or instance share.
    /// Only what changed is applied: an unchanged rate keeps the AIMD
    /// controller (and a 130429 back-off in progress).
    pub fn reconfigure(&self, per_second: Option<f64>, share: Option<f64>) {
        let mut changed = false;
        if let Some(rate) = per_second.filter(|r| (*r - self.configured()).abs() > f64::EPSILON) {
            self.settings.write_or_recover().per_second = rate;
            // The operator's new rate applies at once, up or down: a fresh
            // controller at that rate (a 130429 lowers it again).
            let s = self.settings.read_or_recover().clone();
            match Aimd::new(rate, s.aimd_decrease_factor, s.aimd_increase_per_sec, 1.0) {
                Ok(a) => *self.aimd.lock_or_recover() = a,
                Err(e) => tracing::error!(sender = %self.id, error = %e, "rate not applied"),
            }
            changed = true;
        }
        if let Some(s) = share {
            let mut current = self.share.lock_or_recover();
            if (*current - s).abs() > f64::EPSILON {
                *current = s;
                changed = true;
            }
        }
        if changed {
            self.rebuild();
        }
    }

    /// Sends handed to this sender and not finished yet.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn set_halted(&self, reason: Option<String>) {
        self.is_halted.store(reason.is_some(), Ordering::Release);
        *self.halted.lock_or_recover() = reason;
    }

    /// Waits for the sender's pace; false when `stop` said so first.
    async fn pace(&self, stop: &(dyn Fn() -> bool + Sync)) -> bool {
        let started = Instant::now();
        let current = || self.limiter.read_or_recover().clone();
        // A permit at hand is taken at once; otherwise wait in line.
        let paced = if current().check().is_ok() {
            true
        } else {
            let _turn = self.pace_queue.lock().await;
            wait_turn_unless(current, stop).await
        };
        metrics::limiter_wait(&self.id, started.elapsed().as_secs_f64());
        paced
    }

    /// Waits until this sender may write a request to `contact` now: its
    /// in-flight slot, the pair limiter (Meta spaces messages to one
    /// recipient, 131056: wait, don't fail), the pace, and the circuit.
    /// `None` when the sender is halted or its circuit open, or `stop`
    /// (checked at least every 50 ms) turned true: the contact was not
    /// claimed, so nothing needs undoing.
    pub async fn take_turn(
        &self,
        contact: &ContactKey,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> Option<Turn<'_>> {
        let slot = tokio::select! {
            slot = self.in_flight.acquire() => slot.ok()?,
            _ = poll_until(stop) => return None,
        };
        let key = contact.as_str().to_string();
        loop {
            if stop() || self.is_halted() || self.paused().is_some() {
                return None;
            }
            match self.pair.check_key(&key) {
                Ok(()) => break,
                Err(not_until) => {
                    use governor::clock::Clock;
                    let wait = not_until.wait_time_from(self.pair.clock().now());
                    tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
                }
            }
        }
        // A pause may have begun while the send waited for its pace.
        if !self.pace(stop).await || self.is_halted() || self.paused().is_some() {
            return None;
        }
        let probe = match self.circuit.lock_or_recover().admit(monotonic_secs()) {
            Pass::Send => false,
            Pass::Probe => true,
            Pass::Wait(_) => return None,
        };
        Some(Turn {
            core: self,
            _slot: slot,
            probe,
            used: false,
        })
    }

    /// Writes the request of a claimed contact and records its outcome. One
    /// attempt: a request known not to have left goes back to the queue as
    /// due for retry (never held claimed through a backoff).
    pub async fn deliver(&self, mut turn: Turn<'_>, job: SendJob) -> SendReport {
        turn.used = true;
        let campaign = job.campaign.as_str();
        let started = Instant::now();
        // `Bytes` clones share the buffer; the job stays whole for finish.
        let result = self
            .client
            .send_to(&self.id, job.endpoint, job.body.clone())
            .await;
        metrics::whatsapp_request(&self.id, started.elapsed().as_secs_f64());
        if let SendResult::Rejected { error, class, .. } = &result {
            metrics::failure(campaign, class.as_str(), error.code);
        }
        self.note_path(&result);
        if let Some(fact) = decision::contact_fact(&result) {
            self.note_contact(&job.contact, &fact).await;
        }
        drop(turn);
        let now = Utc::now();
        if let Some(outcome) = self.spam_rate_limit(&job, &result) {
            return self.finish(&job, outcome, SendReport::Requeued).await;
        }
        if let Some(reason) = marketing_endpoint_refusal(&job, &result) {
            tracing::warn!(sender = %self.id, campaign = %job.campaign, reason = %reason, "the Marketing Messages API refuses the campaign's template as not marketing: its sends go to /messages from now on");
            let outcome = Outcome::Retry {
                code: None,
                not_before: None,
            };
            return self
                .finish(
                    &job,
                    outcome,
                    SendReport::MarketingEndpointRefused { reason },
                )
                .await;
        }
        match decision::decide(&result, job.deferral, now) {
            Decision::Record(mut outcome) => {
                if let Outcome::Accepted { sender, .. } = &mut outcome {
                    *sender = Some(self.id.clone());
                    self.aimd.lock_or_recover().on_success(monotonic_secs());
                    self.maybe_recover();
                }
                let label = outcome_label(&outcome);
                self.finish(&job, outcome, SendReport::Done(label)).await
            }
            Decision::Retry { code, throttled } => {
                if code == Some(code::MAINTENANCE) {
                    let pause = self.settings.read_or_recover().maintenance_pause;
                    self.pause(pause, format!("error 131057: {}", result_message(&result)));
                }
                let (outcome, report) = self.retry_outcome(&result, code, throttled, job.retries);
                self.finish(&job, outcome, report).await
            }
            Decision::HaltSender { code, reason } => {
                tracing::error!(sender = %self.id, code, reason = %reason, "sender halted: fix the account or token, then reload or restart; its campaigns continue on the rest of their pool");
                self.set_halted(Some(reason));
                self.finish(
                    &job,
                    Outcome::Retry {
                        code,
                        not_before: None,
                    },
                    SendReport::SenderHalted,
                )
                .await
            }
            Decision::HaltCampaign { code, reason } => {
                self.finish(
                    &job,
                    Outcome::Retry {
                        code,
                        not_before: None,
                    },
                    SendReport::CampaignHalted { code, reason },
                )
                .await
            }
        }
    }

    /// 131048 (spam rate limit): the request was refused, so the contact
    /// goes back to the queue after a backoff; the number's quality is
    /// flagged for `whatsapp.number_quality_hold_secs`. None for any other
    /// answer.
    fn spam_rate_limit(&self, job: &SendJob, result: &SendResult) -> Option<Outcome> {
        let SendResult::Rejected { error, .. } = result else {
            return None;
        };
        if error.code != Some(code::SPAM_RATE_LIMIT) {
            return None;
        }
        let (hold, retry) = {
            let s = self.settings.read_or_recover();
            (s.quality_hold, s.retry)
        };
        self.flag_quality(format!("error 131048: {}", error.describe()), Some(hold));
        let delay = retry
            .next(job.retries + 1, rand::random::<f64>())
            .unwrap_or(retry.max);
        Some(retry_after(error.code, delay))
    }

    /// The outcome of a retryable answer: back to the queue after a backoff
    /// (130429 also lowers the sender's rate), or `failed` once the retries
    /// of a contact-specific transient answer run out while the sender is
    /// healthy. During an outage (the circuit open) or for a request that
    /// never left, the contact waits instead of failing for good.
    fn retry_outcome(
        &self,
        result: &SendResult,
        code: Option<i64>,
        throttled: bool,
        retries: u32,
    ) -> (Outcome, SendReport) {
        if throttled
            && code == Some(code::THROUGHPUT)
            && self.aimd.lock_or_recover().on_throttled(monotonic_secs())
        {
            tracing::warn!(sender = %self.id, rate = self.rate(), "130429 from WhatsApp: lowering the sender's rate");
            self.rebuild();
        }
        let retry = self.settings.read_or_recover().retry;
        let delay = retry.next(retries + 1, rand::random::<f64>());
        let outcome = match delay {
            Some(delay) => retry_after(code, delay),
            None if !throttled
                && matches!(result, SendResult::Rejected { .. })
                && !self.is_circuit_open() =>
            {
                decision::exhausted(code)
            }
            None => retry_after(code, retry.max),
        };
        let report = if matches!(outcome, Outcome::Retry { .. }) {
            SendReport::Requeued
        } else {
            SendReport::Done(outcome_label(&outcome))
        };
        (outcome, report)
    }

    /// Feeds the circuit: an answer from the API proves the path works
    /// (whatever it says about the contact); a request that never left, a
    /// lost answer or a transient error does not.
    fn note_path(&self, result: &SendResult) {
        let transient = match result {
            SendResult::NotSent { .. } | SendResult::Unknown { .. } => true,
            SendResult::Rejected { class, .. } => *class == ErrorClass::Transient,
            SendResult::Accepted { .. } => false,
        };
        let mut circuit = self.circuit.lock_or_recover();
        if transient {
            if circuit.on_transient(monotonic_secs()) {
                tracing::warn!(sender = %self.id, "sends keep failing transiently (outage?): circuit open, contacts stay pending, probing again shortly");
            }
        } else {
            circuit.on_answer();
        }
        let open = !circuit.is_closed();
        drop(circuit);
        if self.circuit_open.swap(open, Ordering::AcqRel) != open {
            metrics::sender_circuit(&self.id, open);
            if !open {
                tracing::info!(sender = %self.id, "a probe got through: circuit closed, sending again");
            }
        }
    }

    fn maybe_recover(&self) {
        // AIMD recovers continuously; rebuilding the limiter costs a little,
        // so follow the recovered rate at most once a second, and only while
        // below the configured rate.
        if self.last_rebuild.lock_or_recover().elapsed() < Duration::from_secs(1) {
            return;
        }
        let below = {
            let aimd = self.aimd.lock_or_recover();
            aimd.rate() < aimd.configured()
        };
        if below {
            self.rebuild();
        }
    }

    async fn note_contact(&self, contact: &ContactKey, fact: &ContactFact) {
        let now = Utc::now();
        let result = match fact {
            // 131050 in the API answer: marketing messages only.
            ContactFact::OptedOut => {
                self.store
                    .set_opt_out(contact, crate::domain::OptOutScope::Marketing, true, now)
                    .await
            }
            ContactFact::Undeliverable => self.store.mark_undeliverable(contact, now).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record a contact fact; the next send learns it again");
        }
    }

    /// Writes the outcome (retrying the store briefly) and counts it.
    async fn finish(&self, job: &SendJob, outcome: Outcome, report: SendReport) -> SendReport {
        let on = SendTarget {
            campaign: &job.campaign,
            step: &job.step,
            contact: &job.contact,
        };
        finish(self.store.as_ref(), &self.id, on, outcome, report).await
    }

    /// Drops pair-limiter state of recipients not seen for a while.
    pub fn housekeeping(&self) {
        self.pair.retain_recent();
    }
}

/// The contact and journey step a send was for.
#[derive(Clone, Copy)]
pub(crate) struct SendTarget<'a> {
    pub campaign: &'a str,
    /// The step's id (its metrics label).
    pub step: &'a str,
    pub contact: &'a ContactKey,
}

/// Writes a send's outcome (retrying the store briefly) and counts it
/// under `sender`; `report` is what the campaign learns, unless the store
/// cannot be written.
pub(crate) async fn finish(
    store: &dyn Store,
    sender: &str,
    on: SendTarget<'_>,
    outcome: Outcome,
    report: SendReport,
) -> SendReport {
    let SendTarget {
        campaign,
        step,
        contact,
    } = on;
    metrics::dispatch(campaign, step, sender, outcome_label(&outcome));
    let mut delay = Duration::from_millis(50);
    for _ in 0..5 {
        match store
            .record_outcome(campaign, contact, &outcome, Utc::now())
            .await
        {
            Ok(()) => return report,
            Err(e) => {
                tracing::warn!(error = %e, "cannot write a send outcome; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    tracing::error!(campaign, sender, "send outcome not written; the claim is settled as unknown at the next start or by a webhook");
    SendReport::StoreFailed
}

/// Back to the queue, claimable again after `delay`.
pub(crate) fn retry_after(code: Option<i64>, delay: Duration) -> Outcome {
    Outcome::Retry {
        code,
        not_before: chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d)),
    }
}

/// Resolves once `stop()` is true (polled every 50 ms).
pub(crate) async fn poll_until(stop: &(dyn Fn() -> bool + Sync)) {
    while !stop() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for a permit of the limiter `current()` returns, re-reading it at
/// least every 50 ms: a limiter rebuilt by a reload, an AIMD step or a
/// rebalance takes effect for waiting sends too (governor's `until_ready`
/// would keep a send on the old one). The wait is read on the limiter's own
/// clock: making a new clock calibrates it, which costs more than the check.
pub async fn wait_turn(current: impl Fn() -> Arc<DefaultDirectRateLimiter>) {
    wait_turn_unless(current, &|| false).await;
}

/// [`wait_turn`], giving up (false) as soon as `stop()` is true.
pub async fn wait_turn_unless(
    current: impl Fn() -> Arc<DefaultDirectRateLimiter>,
    stop: &(dyn Fn() -> bool + Sync),
) -> bool {
    use governor::clock::Clock;
    loop {
        let limiter = current();
        match limiter.check() {
            Ok(()) => return true,
            Err(_) if stop() => return false,
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
            }
        }
    }
}

/// Seconds on a monotonic clock (AIMD and the circuit measure intervals,
/// not dates).
fn monotonic_secs() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

pub fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Accepted { .. } => "accepted",
        Outcome::Failed { .. } => "failed",
        Outcome::Unknown { .. } => "unknown",
        Outcome::Deferred { .. } => "deferred",
        Outcome::Retry { .. } => "retry",
        Outcome::Excluded { .. } => "excluded",
    }
}

// ---- actix glue ----

pub struct SenderActor {
    pub core: Arc<SenderCore>,
}

impl Actor for SenderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Bounded mailbox: callers wait (`send().await`) when it is full.
        ctx.set_mailbox_capacity(1024);
        ctx.run_interval(Duration::from_secs(30), |actor, _| {
            actor.core.housekeeping()
        });
    }
}

/// A changed rate, a new instance share, or a halt lifted by the operator.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure {
    pub per_second: Option<f64>,
    pub share: Option<f64>,
    /// Lifts a halt: only when the operator changed the sender's `paused`
    /// from true to false (a reload of anything else keeps Meta's halts).
    pub resume: bool,
}

impl Handler<Reconfigure> for SenderActor {
    type Result = ();

    fn handle(&mut self, msg: Reconfigure, _: &mut Self::Context) {
        if msg.resume && self.core.is_halted() {
            tracing::info!(sender = %self.core.id, "sender resumed by reload");
            self.core.set_halted(None);
        }
        self.core.reconfigure(msg.per_second, msg.share);
    }
}
