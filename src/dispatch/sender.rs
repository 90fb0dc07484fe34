//! `SenderActor`: one per WhatsApp phone_number_id.
//!
//! Paces messages with a governor limiter at `per_second × instance share`
//! (adjusted by AIMD on 130429), spaces messages to one recipient with a
//! keyed pair limiter (Meta: error 131056), sends through the Cloud API
//! client, decides what the answer means and writes the outcome. The actor
//! is glue: [`SenderCore`] does the work on the tokio pool, so the actor's
//! thread never waits on I/O.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::Utc;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::decision::{self, ContactFact, Decision};
use super::policy::aimd::Aimd;
use super::policy::backoff::RetryPolicy;
use crate::domain::{ContactKey, FrozenParams};
use crate::ingest::catalog::CatalogEntry;
use crate::metrics;
use crate::store::{Outcome, Store};
use crate::whatsapp::client::{SendResult, WhatsAppClient};
use crate::whatsapp::payload::{callback_data, template_message_bytes};

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
}

/// A claimed contact to send.
pub struct SendJob {
    pub campaign: Arc<CatalogEntry>,
    pub contact: ContactKey,
    pub params: FrozenParams,
    /// Times the contact was claimed.
    pub claims: u32,
    /// Already deferred once for 131049: a second 131049 is final.
    pub deferred_before: bool,
}

/// How a job ended, for the campaign that handed it over.
#[derive(Debug, Clone, PartialEq)]
pub enum SendReport {
    /// An outcome was written (its label: accepted, failed, unknown, …).
    Done(&'static str),
    /// The sender is halted; the contact went back to the queue.
    SenderHalted,
    /// A campaign-class error; the contact went back to the queue.
    CampaignHalted(String),
    /// The outcome could not be written; the claim stays and is settled at
    /// the next start (as unknown) or by a webhook.
    StoreFailed,
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

fn quota(rate: f64) -> Quota {
    let rate = rate.max(0.01);
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
        SenderCore {
            id: id.to_string(),
            client,
            store,
            in_flight: Semaphore::new(settings.max_in_flight.max(1)),
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
        lock(&self.halted).clone()
    }

    /// Current allowed messages per second (AIMD × instance share). Before
    /// the first assignment the share is unknown (0): nothing can be sent
    /// then anyway (no owned shard), so the full rate stands until the share
    /// arrives, rather than a crawl that waiting sends would inherit.
    pub fn rate(&self) -> f64 {
        let share = *lock(&self.share);
        lock(&self.aimd).rate() * if share > 0.0 { share } else { 1.0 }
    }

    pub fn configured(&self) -> f64 {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .per_second
    }

    fn rebuild(&self) {
        let rate = self.rate();
        *self.limiter.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(drained_limiter(rate));
        *lock(&self.last_rebuild) = Instant::now();
        metrics::sender_rate(&self.id, rate, self.configured());
    }

    /// Reload: a new configured rate and/or instance share.
    pub fn reconfigure(&self, per_second: Option<f64>, share: Option<f64>) {
        if let Some(rate) = per_second {
            self.settings
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .per_second = rate;
            // The operator's new rate applies at once, up or down: a fresh
            // controller at that rate (a 130429 lowers it again).
            let s = self
                .settings
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match Aimd::new(rate, s.aimd_decrease_factor, s.aimd_increase_per_sec, 1.0) {
                Ok(a) => *lock(&self.aimd) = a,
                Err(e) => tracing::error!(sender = %self.id, error = %e, "rate not applied"),
            }
        }
        if let Some(s) = share {
            *lock(&self.share) = s;
        }
        self.rebuild();
    }

    /// Sends handed to this sender and not finished yet.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn set_halted(&self, reason: Option<String>) {
        self.is_halted.store(reason.is_some(), Ordering::Release);
        *lock(&self.halted) = reason;
    }

    async fn pace(&self) {
        let started = Instant::now();
        let current = || {
            self.limiter
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        // A permit at hand is taken at once; otherwise wait in line.
        if current().check().is_err() {
            let _turn = self.pace_queue.lock().await;
            wait_turn(current).await;
        }
        metrics::limiter_wait(&self.id, started.elapsed().as_secs_f64());
    }

    /// Sends one claimed contact and records its outcome.
    pub async fn process(self: Arc<Self>, job: SendJob) -> SendReport {
        let Ok(_permit) = self.in_flight.acquire().await else {
            return SendReport::SenderHalted;
        };
        let campaign = job.campaign.spec.id.clone();
        if self.is_halted() {
            return self
                .finish(
                    &campaign,
                    &job.contact,
                    Outcome::Retry { code: None },
                    SendReport::SenderHalted,
                )
                .await;
        }
        // Meta spaces messages to one recipient (131056): wait, don't fail.
        self.pair
            .until_key_ready(&job.contact.as_str().to_string())
            .await;
        let body = template_message_bytes(
            &job.campaign.spec.template,
            &job.contact,
            &job.params,
            &callback_data(&campaign, &job.contact),
        );
        let retry = self
            .settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .retry;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.pace().await;
            let started = Instant::now();
            let result = self.client.send_raw(&self.id, body.clone()).await;
            metrics::whatsapp_request(&self.id, started.elapsed().as_secs_f64());
            if let SendResult::Rejected { error, class, .. } = &result {
                metrics::failure(&campaign, class.as_str(), error.code);
            }
            if let Some(fact) = decision::contact_fact(&result) {
                self.note_contact(&job.contact, &fact).await;
            }
            match decision::decide(&result, if job.deferred_before { 2 } else { 1 }, Utc::now()) {
                Decision::Record(outcome) => {
                    if matches!(outcome, Outcome::Accepted { .. }) {
                        lock(&self.aimd).on_success(monotonic_secs());
                        self.maybe_recover();
                    }
                    let label = outcome_label(&outcome);
                    return self
                        .finish(&campaign, &job.contact, outcome, SendReport::Done(label))
                        .await;
                }
                Decision::Retry { code, throttled } => {
                    if throttled
                        && code == Some(130429)
                        && lock(&self.aimd).on_throttled(monotonic_secs())
                    {
                        tracing::warn!(sender = %self.id, rate = self.rate(), "130429 from WhatsApp: lowering the sender's rate");
                        self.rebuild();
                    }
                    match retry.next(attempt, rand::random::<f64>()) {
                        Some(delay) => tokio::time::sleep(delay).await,
                        None => {
                            let outcome = decision::exhausted(code, throttled);
                            let label = outcome_label(&outcome);
                            return self
                                .finish(&campaign, &job.contact, outcome, SendReport::Done(label))
                                .await;
                        }
                    }
                }
                Decision::HaltSender { code, reason } => {
                    tracing::error!(sender = %self.id, code, reason = %reason, "sender halted: fix the account or token, then reload or restart; its campaigns continue on the rest of their pool");
                    self.set_halted(Some(reason));
                    return self
                        .finish(
                            &campaign,
                            &job.contact,
                            Outcome::Retry { code },
                            SendReport::SenderHalted,
                        )
                        .await;
                }
                Decision::HaltCampaign { code, reason } => {
                    return self
                        .finish(
                            &campaign,
                            &job.contact,
                            Outcome::Retry { code },
                            SendReport::CampaignHalted(reason),
                        )
                        .await;
                }
            }
        }
    }

    fn maybe_recover(&self) {
        // AIMD recovers continuously; rebuilding the limiter costs a little,
        // so follow the recovered rate at most once a second, and only while
        // below the configured rate.
        if lock(&self.last_rebuild).elapsed() < Duration::from_secs(1) {
            return;
        }
        let below = {
            let aimd = lock(&self.aimd);
            aimd.rate() < aimd.configured()
        };
        if below {
            self.rebuild();
        }
    }

    async fn note_contact(&self, contact: &ContactKey, fact: &ContactFact) {
        let now = Utc::now();
        let result = match fact {
            ContactFact::OptedOut => self.store.set_opt_out(contact, true, now).await,
            ContactFact::Undeliverable => self.store.mark_undeliverable(contact, now).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot record a contact fact; the next send learns it again");
        }
    }

    /// Writes the outcome (retrying the store briefly) and counts it.
    async fn finish(
        &self,
        campaign: &str,
        contact: &ContactKey,
        outcome: Outcome,
        report: SendReport,
    ) -> SendReport {
        metrics::dispatch(campaign, &self.id, outcome_label(&outcome));
        let mut delay = Duration::from_millis(50);
        for _ in 0..5 {
            match self
                .store
                .record_outcome(campaign, contact, &outcome, Utc::now())
                .await
            {
                Ok(()) => {
                    return report;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write a send outcome; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        tracing::error!(campaign, sender = %self.id, "send outcome not written; the claim is settled as unknown at the next start or by a webhook");
        SendReport::StoreFailed
    }

    /// Drops pair-limiter state of recipients not seen for a while.
    pub fn housekeeping(&self) {
        self.pair.retain_recent();
    }
}

/// Waits for a permit of the limiter `current()` returns, re-reading it at
/// least every 50 ms: a limiter rebuilt by a reload, an AIMD step or a
/// rebalance takes effect for waiting sends too (governor's `until_ready`
/// would keep a send on the old one). The wait is read on the limiter's own
/// clock: making a new clock calibrates it, which costs more than the check.
pub async fn wait_turn(current: impl Fn() -> Arc<DefaultDirectRateLimiter>) {
    use governor::clock::Clock;
    loop {
        let limiter = current();
        match limiter.check() {
            Ok(()) => return,
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
            }
        }
    }
}

/// Seconds on a monotonic clock (AIMD measures intervals, not dates).
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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

#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconfigure {
    pub per_second: Option<f64>,
    pub share: Option<f64>,
    /// `Some(false)` lifts a halt (operator action through reload).
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
