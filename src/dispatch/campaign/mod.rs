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

mod actor;
mod claim;
mod observe;
mod run;
mod sms;
mod state;
mod timers;

pub use actor::*;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::DefaultDirectRateLimiter;

use super::policy::lifecycle::CampaignCounts;
use super::sender::pool::SenderMap;
use crate::domain::{ContactKey, ObservedState};
use crate::events::Event;
use crate::ingest::catalog::CatalogEntry;
use crate::store::{CampaignHalt, Store};

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
    /// Seconds until `remaining` more recipients fit under the portfolio
    /// limit; none without a limit or when they fit now.
    fn portfolio_eta(&self, remaining: u64) -> Option<f64>;
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
    /// `dispatch.marketing_per_contact`, kept current by reloads.
    fn marketing_cap(&self) -> Option<crate::domain::FrequencyCap>;
    /// `dispatch.resend_unknown_after_secs`: resend an `unknown` contact
    /// that no status webhook settled in this time (None: never).
    fn resend_unknown_after(&self) -> Option<chrono::Duration>;
    /// `[pricing]`, kept current by reloads.
    fn rate_card(&self) -> Option<Arc<crate::domain::RateCard>>;
    /// `whatsapp.marketing_limit_retry`: when a 131049 is tried again.
    fn marketing_limit_retry(&self) -> crate::domain::DeferralSchedule;
    /// `whatsapp.marketing_messages` for `campaign` sent by `sender` (their
    /// overrides first), kept current by reloads.
    fn marketing_messages(&self, campaign: &str, sender: &str) -> crate::domain::MarketingMessages;
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
    /// What Meta said of the templates (shared by every campaign).
    pub templates: Arc<crate::dispatch::templates::TemplateBook>,
    /// The book's generation and the spec last checked against it, and
    /// why one of the campaign's templates is held (if one is).
    template_hold: Mutex<TemplateHoldCache>,
    pub observed: Mutex<Option<ObservedState>>,
    pub wait_reason: Mutex<Option<String>>,
    /// The wait is for the campaign's senders (halted, paused by Meta, an
    /// outage): the next sender picked ends it.
    pub(crate) sender_wait: std::sync::atomic::AtomicBool,
    /// Meta said on `/marketing_messages` that the campaign's template is not
    /// a marketing one (134100, 131055): its sends go to `/messages`.
    pub(crate) marketing_endpoint_refused: std::sync::atomic::AtomicBool,
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

/// The answer of the template book for the spec in force, valid while the
/// book's generation and the spec stay the same.
#[derive(Default)]
struct TemplateHoldCache {
    generation: u64,
    /// Kept (not just its address) so that a later spec can never be
    /// taken for it.
    spec: Option<Arc<CatalogEntry>>,
    hold: Option<String>,
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
    /// The billable messages priced by the rate card (`[pricing]`), when
    /// there is one.
    pub cost: Option<crate::domain::CostEstimate>,
}

/// Everything the pump needs.
pub struct Pump {
    pub state: Arc<CampaignState>,
    pub store: Arc<dyn Store>,
    pub senders: SenderMap,
    /// The SMS channel, when `[sms]` configures one.
    pub sms: Option<Arc<crate::dispatch::sms::SmsChannel>>,
    pub env: Arc<dyn DispatchEnv>,
    pub owner: String,
    pub max_in_flight: usize,
    /// The last full count and the instant until which it is reused.
    pub counts_cache: Mutex<Option<(std::time::Instant, CampaignCounts)>>,
    /// The campaign's claims are all in the claim index (its one-off scan
    /// of older claims is done; see `dispatch/settle.rs`).
    pub claims_indexed: AtomicBool,
}

enum Considered {
    Dispatched,
    Wait(DateTime<Utc>),
    Skipped,
}
