//! The durable record of every campaign and every contact's journey.
//!
//! One [`Store`] trait with two backends of identical semantics: [`embedded`]
//! (fjall on local disk, the default for one machine) and, for several
//! instances, [`scylladb`] (ScyllaDB). [`timed::Timed`] wraps either and
//! observes each operation's latency. The conformance suite in `tests/store_conformance.rs`
//! is written once against the trait and run on every backend.
//!
//! Rows are addressed by (campaign, contact). The shard (the Kafka partition the
//! audience record came from) and the staging sequence (its offset) order the
//! pending queue that campaign actors scan from a cursor, so a contact staged
//! late is never skipped by a scan that already went past its contact key.

pub mod embedded;
mod model;
pub mod scylladb;
pub mod timed;

pub use model::*;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{ContactKey, DispatchState, Edge, ObservedState, OptOutScope};

/// Errors a store backend reports. Every one is retryable by the caller unless
/// it says otherwise; none means a write half-happened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A read, write or encoding failed. The message carries the cause's
    /// text (logs print only the message); `source()` returns the cause.
    #[error("store i/o: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("store record {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
    #[error("store is unavailable: {0}")]
    Unavailable(String),
    #[error("store data directory {path} is in use by another wadispatch process (stop it, or point store.embedded.data_dir elsewhere)")]
    Locked { path: String },
}

impl StoreError {
    /// An i/o failure of `context` ("cannot open store at /x"), caused by
    /// `source`.
    pub fn io(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The contract every backend implements. All methods are durable on return:
/// a write acknowledged here survives a process crash (and, with
/// `durability = "power"`, a power loss).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip proving the backend answers (used by `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    // ---- campaigns ----
    async fn put_campaign(&self, record: &CampaignRecord) -> StoreResult<()>;
    async fn get_campaign(&self, id: &str) -> StoreResult<Option<CampaignRecord>>;
    async fn list_campaigns(&self) -> StoreResult<Vec<CampaignRecord>>;
    async fn set_observed_state(
        &self,
        id: &str,
        state: ObservedState,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Deletes a campaign and everything staged for it. Callers check first
    /// that it never started (a tombstone must not erase a journey).
    async fn delete_campaign(&self, id: &str) -> StoreResult<()>;
    /// Shards (audience partitions) that hold contacts of this campaign.
    async fn campaign_shards(&self, id: &str) -> StoreResult<Vec<u32>>;
    /// The campaign's halt, if one is in force.
    async fn campaign_halt(&self, id: &str) -> StoreResult<Option<CampaignHalt>>;
    /// Records (`Some`) or lifts (`None`) the campaign's halt.
    async fn set_campaign_halt(&self, id: &str, halt: Option<&CampaignHalt>) -> StoreResult<()>;

    // ---- staging ----
    /// Idempotent upsert of a batch: a (campaign, contact) already staged is
    /// left as it is (first write wins, parameters stay frozen) and reported
    /// as [`StageOutcome::Duplicate`]. Outcomes are in input order.
    async fn stage_batch(&self, items: &[StageRequest]) -> StoreResult<Vec<StageOutcome>>;

    // ---- dispatch ----
    async fn get_dispatch(
        &self,
        campaign: &str,
        contact: &ContactKey,
    ) -> StoreResult<Option<DispatchRecord>>;
    /// Pending contacts of one shard in staging order, strictly after `after`.
    async fn scan_pending(
        &self,
        campaign: &str,
        shard: u32,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<PendingEntry>>;
    /// Timer entries of one shard due at or before `until`, earliest first
    /// (docs/ARCHITECTURE.md, "Journeys"). Every backend writes an entry
    /// with the row change that sets a wait, before or in the same batch.
    async fn due_timers(
        &self,
        campaign: &str,
        shard: u32,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<TimerEntry>>;
    /// Fires one timer: when the row still waits for that step and it is due
    /// at `now` (or `force`), it moves to the step (`edges` leave it) and a
    /// pending step enters the pending queue. The entry is removed, unless
    /// the row waits for exactly it and it is not due yet. Answers the row's
    /// new state, or `None` when it did not move.
    async fn fire_timer(
        &self,
        campaign: &str,
        entry: &TimerEntry,
        edges: &[Edge],
        now: DateTime<Utc>,
        force: bool,
    ) -> StoreResult<Option<DispatchState>>;
    /// Every dispatch row of a campaign (any state), in contact order, strictly
    /// after `after`; pages of at most `limit`. Reports and counts use this.
    async fn scan_dispatches(
        &self,
        campaign: &str,
        after: Option<&ContactKey>,
        limit: usize,
    ) -> StoreResult<Vec<DispatchRecord>>;
    /// The campaign's counters, kept in the same writes as its rows, when
    /// the backend keeps them (the embedded store); `None` when it does not
    /// (ScyllaDB), and the caller scans the rows instead
    /// (docs/ARCHITECTURE.md, "Progress and counts").
    async fn tally(&self, _campaign: &str) -> StoreResult<Option<Vec<(Counter, f64)>>> {
        Ok(None)
    }
    async fn load_cursor(&self, campaign: &str, shard: u32) -> StoreResult<Option<u64>>;
    async fn save_cursor(&self, campaign: &str, shard: u32, seq: u64) -> StoreResult<()>;

    /// The compare-and-set that makes a double send impossible: pending (or
    /// deferred and due) → claimed, and for an exclusive campaign the contact's
    /// engagement null (or `request.replace_engagement`) → this campaign. Only
    /// a caller that gets [`ClaimOutcome::Claimed`] may send.
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<ClaimOutcome>;
    /// Claimed rows of one shard of a campaign, from the claim index (a
    /// claim adds its row, any change out of `claimed` removes it), so
    /// recovery never scans the campaign. Few rows: at most the sends in
    /// flight of every instance, and the leftovers of instances gone.
    async fn claimed(&self, campaign: &str, shard: u32) -> StoreResult<Vec<ClaimEntry>>;
    /// Settles a claim whose owner is gone: the row becomes `unknown` when
    /// it is still claimed by `entry.owner`, and the index entry goes
    /// either way. True when the row changed.
    async fn settle_claim(
        &self,
        campaign: &str,
        shard: u32,
        entry: &ClaimEntry,
        message: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Final or retry outcome of a claimed contact; also indexes the wamid.
    async fn record_outcome(
        &self,
        campaign: &str,
        contact: &ContactKey,
        outcome: &Outcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// Puts an `unknown` or `failed` contact back to pending (see
    /// [`DispatchRecord::requeue`]); false when the row did not match.
    async fn requeue(
        &self,
        campaign: &str,
        contact: &ContactKey,
        from: &Requeue,
    ) -> StoreResult<bool>;
    /// Marks a pending contact's current step excluded with a reason
    /// (final for that step). Answers the step excluded (`""` for the
    /// first), or `None` when the row was not pending or deferred.
    async fn exclude(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &crate::domain::ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<String>>;
    /// Stops a contact's journey (see [`DispatchRecord::stop`]): a
    /// cancelling event, a conversion. Conditional like a claim, so exactly
    /// one of a stop and a claim of the same step wins. `None` when the row
    /// is absent or had nothing left to stop.
    async fn stop_journey(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &crate::domain::ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<JourneyStop>>;

    /// Credits a goal conversion to one journey (see
    /// [`DispatchRecord::convert`]): once per row, idempotent under
    /// redelivery; with `stop`, the journey stops in the same conditional
    /// write, so exactly one of the stop and a claim of a step wins.
    /// `None` when the row is absent.
    async fn record_conversion(
        &self,
        campaign: &str,
        contact: &ContactKey,
        conversion: &crate::domain::Conversion,
        stop: Option<&crate::domain::ExclusionReason>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<ConversionApplied>>;
    /// The latest accepted message of every campaign (and occurrence) to
    /// `contact` within the longest goal window (90 days): the index
    /// conversions are attributed from, written with each accepted outcome.
    async fn reached(&self, contact: &ContactKey) -> StoreResult<Vec<crate::domain::Reach>>;

    // ---- instances ----
    /// Writes (or extends) `owner`'s lease.
    async fn renew_lease(&self, lease: &Lease) -> StoreResult<()>;
    /// Removes `owner`'s lease (a clean stop): its leftover claims are
    /// settled at once instead of after the lease runs out.
    async fn release_lease(&self, owner: &str) -> StoreResult<()>;
    /// Every lease on record, live or expired.
    async fn leases(&self) -> StoreResult<Vec<Lease>>;
    /// Whether the one-off step `name` was done (e.g. the claim index of a
    /// campaign staged before it existed was built).
    async fn marker(&self, name: &str) -> StoreResult<bool>;
    async fn set_marker(&self, name: &str) -> StoreResult<()>;

    // ---- learned from Meta ----
    /// What Meta's webhooks told the business, of one `kind` (e.g.
    /// `template`: the health of each template), as (key, JSON value) pairs
    /// in key order. Small: a few entries per template or number.
    async fn learned(&self, kind: &str) -> StoreResult<Vec<(String, String)>>;
    /// Records (`Some`) or forgets (`None`) one learned fact.
    async fn set_learned(&self, kind: &str, key: &str, value: Option<&str>) -> StoreResult<()>;

    // ---- the portfolio limit ----
    /// Counts `contact` as a recipient of the 24 h window ending at `now`,
    /// against at most `limit` unique recipients: atomic across instances,
    /// so concurrent calls never count more than `limit`.
    async fn count_recipient(
        &self,
        contact: &ContactKey,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<RecipientCount>;

    /// Takes one of `contact`'s send slots of a frequency cap for `send`
    /// (see [`crate::domain::send_id`]) at `now`: atomic per contact and
    /// scope across instances, idempotent per send. `scope` is `""` for the
    /// portfolio's marketing cap, a campaign id for that campaign's
    /// `trigger.max_per_contact`; each scope has its own slots.
    async fn take_send_slot(
        &self,
        scope: &str,
        contact: &ContactKey,
        send: &str,
        cap: crate::domain::FrequencyCap,
        now: DateTime<Utc>,
    ) -> StoreResult<crate::domain::SlotTake>;

    // ---- contacts and webhooks ----
    async fn get_contact(&self, contact: &ContactKey) -> StoreResult<Option<ContactRecord>>;
    /// Records an opt-out (or opt-in) of `scope` at its event time; an event
    /// older than the latest one applied to that scope changes nothing.
    async fn set_opt_out(
        &self,
        contact: &ContactKey,
        scope: OptOutScope,
        opted_out: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn lookup_wamid(&self, wamid: &str) -> StoreResult<Option<WamidEntry>>;
    /// Applies a webhook status (monotonic, idempotent under redelivery).
    /// A deferral re-queues the contact.
    async fn apply_status(
        &self,
        campaign: &str,
        contact: &ContactKey,
        update: &StatusUpdate,
    ) -> StoreResult<StatusApplied>;
    /// Keeps a status whose wamid is not indexed yet (it overtook the API
    /// answer); it is applied when the wamid is recorded.
    async fn park_status(&self, wamid: &str, update: &StatusUpdate) -> StoreResult<()>;
    /// Keeps a reply until the wamid it answers is indexed.
    async fn park_reply(&self, reply: &ParkedReply) -> StoreResult<()>;
    /// Parked replies, oldest first, at most `limit`.
    async fn parked_replies(&self, limit: usize) -> StoreResult<Vec<ParkedReply>>;
    /// Takes a parked reply out of the store: true when this call removed it
    /// (the caller then owns its processing; several instances may look at
    /// the same reply), false when it was gone already.
    async fn take_parked_reply(&self, message_id: &str) -> StoreResult<bool>;
    /// Records that Meta could not deliver to this contact (131026).
    async fn mark_undeliverable(&self, contact: &ContactKey, at: DateTime<Utc>) -> StoreResult<()>;
    /// Records `other` as the contact's other identity (one side of a
    /// link; the caller writes both).
    async fn link_contact(&self, contact: &ContactKey, other: &ContactKey) -> StoreResult<()>;
}
