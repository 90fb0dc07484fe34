//! Embedded backend: fjall (an LSM-tree) in `store.embedded.data_dir`.
//!
//! Single process: an exclusive lock on `wadispatch.lock` in the data
//! directory keeps a second process out (fjall itself does not), because
//! two processes claiming from one directory could both send. Read-modify-write operations
//! (claims, outcomes) take a striped in-process lock keyed by the contact, which
//! is a true compare-and-set here because no other process can write. Every
//! write batch is flushed to the OS before it is acknowledged
//! (`Durability::Process`, survives kill -9) or fsynced (`Durability::Power`).
//!
//! Key layout (0x00 separates fields; campaign ids never contain it). "row"
//! values are in the binary row encoding, "JSON" ones in JSON; either is
//! read from any keyspace, so rows written as JSON by earlier versions stay
//! readable (docs/ARCHITECTURE.md, "Row encoding"):
//! - `campaigns`:  id → CampaignRecord (JSON)
//! - `dispatches`: campaign 0 contact → DispatchRecord (row)
//! - `pending`:    campaign 0 shard(be32) seq(be64) → contact
//! - `shards`:     campaign 0 shard(be32) → ()
//! - `cursors`:    campaign 0 shard(be32) → seq(be64)
//! - `contacts`:   contact → ContactRecord (row)
//! - `wamids`:     wamid → WamidEntry (row)
//! - `parked`:     wamid → [StatusUpdate] (JSON): statuses that overtook their wamid
//! - `claims`:     campaign 0 shard(be32) owner 0 contact → claimed at (row): the claim index
//! - `leases`:     owner → Lease (JSON)
//! - `markers`:    name → done at (JSON)
//! - `recipients`: contact → until (row); `recipient_order`: until(be64 ms) contact → ()
//! - `timers`:     campaign 0 shard(be32) due(be64 ms) contact 0 step → (): journey timers
//! - `send_slots`: contact → [SendSlot] (row): the frequency cap's slots
//! - `tallies`:    campaign 0 counter (MessagePack) → value (f64, be): each
//!   campaign's counts, written in the batches that change its rows

mod caps;
mod journey;
mod keys;
mod tally;
mod timers;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::*;
use crate::domain::{
    ContactKey, DispatchState, Edge, ExclusionReason, FrequencyCap, ObservedState, OptOutScope,
    SlotTake,
};
use keys::*;

/// Memtable size of every keyspace.
const MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;

/// How far an acknowledged write is guaranteed to survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flushed to the OS page cache: survives a crash or kill -9 of the process.
    Process,
    /// fdatasync before acknowledging: survives power loss.
    Power,
}

impl Durability {
    fn mode(self) -> PersistMode {
        match self {
            Durability::Process => PersistMode::Buffer,
            Durability::Power => PersistMode::SyncData,
        }
    }
}

/// Stripes of the read-modify-write lock: enough that unrelated contacts rarely
/// contend, small enough to stay in cache.
const LOCK_STRIPES: usize = 256;

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    durability: Durability,
    campaigns: Keyspace,
    dispatches: Keyspace,
    pending: Keyspace,
    shards: Keyspace,
    cursors: Keyspace,
    contacts: Keyspace,
    wamids: Keyspace,
    parked: Keyspace,
    /// `halts (campaign) → CampaignHalt` (JSON).
    halts: Keyspace,
    /// `replies (message id) → ParkedReply` (JSON).
    replies: Keyspace,
    /// `claims (campaign \0 shard owner \0 contact) → claimed at` (JSON):
    /// the claim index.
    claims: Keyspace,
    /// `leases (owner) → Lease` (JSON).
    leases: Keyspace,
    /// `markers (name) → done at` (JSON).
    markers: Keyspace,
    /// `learned (kind \0 key) → JSON`: what Meta's webhooks told.
    learned: Keyspace,
    /// `recipients (contact) → until` (JSON): the portfolio window.
    recipients: Keyspace,
    /// `recipient_order (until ms be64, contact) → ()`: the same, oldest first.
    recipient_order: Keyspace,
    /// The timer queue of journeys, by (campaign, shard) and due time.
    timers: Keyspace,
    /// `send_slots (contact) → [SendSlot]` (JSON): the frequency cap.
    send_slots: Keyspace,
    /// `reach (contact, campaign, occurrence) → accepted at` (ms, be64):
    /// the latest accepted message of each journey of a contact, read by
    /// conversion attribution.
    reach: Keyspace,
    /// `tallies (campaign \0 counter) → value`: each campaign's counts,
    /// written with its rows (`tally.rs`).
    tallies: Keyspace,
    tally_locks: tally::TallyLocks,
    /// Recipients in the window (None until first counted), under the lock
    /// that serialises every change of the window.
    window: Mutex<Option<u64>>,
    stripes: Vec<Mutex<()>>,
    /// Held for the life of the store: the OS releases it when the process
    /// dies, even on kill -9.
    _lock: std::fs::File,
    /// Serialises staging batches (their existence checks and the batch write).
    staging: Mutex<()>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, durability: Durability, cache_mb: u64) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::io(format!("cannot create data directory {}", dir.display()), e)
        })?;
        let lock_path = dir.join("wadispatch.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(format!("cannot create {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: dir.display().to_string(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::io(
                    format!("cannot lock {}", lock_path.display()),
                    e,
                ))
            }
        }
        let db = Database::builder(dir)
            .cache_size(cache_mb.max(8) * 1024 * 1024)
            .open()
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("lock") || text.contains("Locked") {
                    StoreError::Locked {
                        path: dir.display().to_string(),
                    }
                } else {
                    StoreError::io(format!("cannot open store at {}", dir.display()), e)
                }
            })?;
        // Memtables of 8 MiB instead of fjall's 64: a million staged
        // contacts fill the dispatch and pending keyspaces at once, and each
        // keeps an active and a sealed memtable in memory until flushed.
        // Measured with `cargo bench --bench load` (1,000,000 contacts): RSS
        // 436 MiB at 64 MiB, 307–323 at 16, 255 at 8, ingest rate unchanged.
        let ks = |name: &str| {
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(io_err)
        };
        let inner = Inner {
            campaigns: ks("campaigns")?,
            dispatches: ks("dispatches")?,
            pending: ks("pending")?,
            shards: ks("shards")?,
            cursors: ks("cursors")?,
            contacts: ks("contacts")?,
            wamids: ks("wamids")?,
            parked: ks("parked")?,
            halts: ks("halts")?,
            replies: ks("replies")?,
            claims: ks("claims")?,
            leases: ks("leases")?,
            markers: ks("markers")?,
            learned: ks("learned")?,
            recipients: ks("recipients")?,
            recipient_order: ks("recipient_order")?,
            timers: ks("timers")?,
            send_slots: ks("send_slots")?,
            reach: ks("reach")?,
            tallies: ks("tallies")?,
            tally_locks: Default::default(),
            window: Mutex::new(None),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            staging: Mutex::new(()),
            _lock: lock,
            db,
            durability,
        };
        inner.ensure_tallies()?;
        Ok(EmbeddedStore {
            inner: Arc::new(inner),
        })
    }

    /// Removes `owner`'s entries from the claim index, leaving its claimed
    /// rows as a version without the index wrote them: tests of the upgrade
    /// path (docs/ARCHITECTURE.md, "Leases") start from such a store.
    #[doc(hidden)]
    pub fn forget_claims_of(&self, owner: &str) -> StoreResult<usize> {
        let inner = &self.inner;
        let mut batch = inner.batch();
        let mut n = 0;
        for guard in inner.claims.iter() {
            let k = guard.key().map_err(io_err)?;
            let mut needle = owner.as_bytes().to_vec();
            needle.push(0);
            if k.windows(needle.len()).any(|w| w == needle.as_slice()) {
                batch.remove(&inner.claims, k);
                n += 1;
            }
        }
        batch.commit().map_err(io_err)?;
        Ok(n)
    }

    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::spawn_blocking(move || f(&inner))
                .await
                .map_err(|e| StoreError::io("store task failed", e))?,
            Err(_) => f(&inner),
        }
    }

    /// A single-row operation. Without fsync it is a memtable lookup or
    /// insert plus a buffered journal write, a few microseconds: it runs on
    /// the calling thread, because handing it to the blocking pool costs more
    /// (a thread wake-up each way) than the work. With `Durability::Power`
    /// each write waits for the disk, so it goes to the blocking pool.
    async fn point<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> StoreResult<T> + Send + 'static,
    {
        match self.inner.durability {
            Durability::Process => f(&self.inner),
            Durability::Power => self.blocking(f).await,
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn ping(&self) -> StoreResult<()> {
        self.point(|inner| {
            inner
                .campaigns
                .contains_key(b"\0ping")
                .map(|_| ())
                .map_err(io_err)
        })
        .await
    }

    async fn put_campaign(&self, record: &CampaignRecord) -> StoreResult<()> {
        let record = record.clone();
        self.point(move |inner| {
            inner.put_json(&inner.campaigns, record.spec.id.as_bytes(), &record)
        })
        .await
    }

    async fn get_campaign(&self, id: &str) -> StoreResult<Option<CampaignRecord>> {
        let id = id.to_string();
        self.point(move |inner| inner.get_json(&inner.campaigns, id.as_bytes()))
            .await
    }

    async fn park_reply(&self, reply: &ParkedReply) -> StoreResult<()> {
        if reply.message_id.is_empty() {
            return Err(empty_key("parked reply"));
        }
        let reply = reply.clone();
        self.point(move |inner| {
            let key = reply.message_id.as_bytes();
            let _guard = inner.stripe(&ContactKey::raw(reply.message_id.as_str()));
            // A redelivery keeps the first arrival's wait.
            if inner.replies.contains_key(key).map_err(io_err)? {
                return Ok(());
            }
            inner.put_json(&inner.replies, key, &reply)
        })
        .await
    }

    async fn parked_replies(&self, limit: usize) -> StoreResult<Vec<ParkedReply>> {
        self.blocking(move |inner| {
            let mut out: Vec<ParkedReply> = inner.all_json(&inner.replies)?;
            out.sort_by_key(|r| r.parked_at);
            out.truncate(limit);
            Ok(out)
        })
        .await
    }

    async fn take_parked_reply(&self, message_id: &str) -> StoreResult<bool> {
        if message_id.is_empty() {
            return Ok(false);
        }
        let key = message_id.as_bytes().to_vec();
        self.point(move |inner| {
            let _guard = inner.stripe(&ContactKey::raw(String::from_utf8_lossy(&key)));
            if !inner.replies.contains_key(&key).map_err(io_err)? {
                return Ok(false);
            }
            inner.remove(&inner.replies, key)?;
            Ok(true)
        })
        .await
    }

    async fn campaign_halt(&self, id: &str) -> StoreResult<Option<CampaignHalt>> {
        let id = id.to_string();
        self.point(move |inner| inner.get_json(&inner.halts, id.as_bytes()))
            .await
    }

    async fn claimed(&self, campaign: &str, shard: u32) -> StoreResult<Vec<ClaimEntry>> {
        let campaign = campaign.to_string();
        self.blocking(move |inner| inner.claimed(&campaign, shard))
            .await
    }

    async fn settle_claim(
        &self,
        campaign: &str,
        shard: u32,
        entry: &ClaimEntry,
        message: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let (campaign, entry, message) = (campaign.to_string(), entry.clone(), message.to_string());
        self.point(move |inner| inner.settle_claim(&campaign, shard, &entry, &message, at))
            .await
    }

    async fn count_recipient(
        &self,
        contact: &ContactKey,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<RecipientCount> {
        let contact = contact.clone();
        self.point(move |inner| inner.count_recipient(&contact, now, limit))
            .await
    }

    async fn take_send_slot(
        &self,
        scope: &str,
        contact: &ContactKey,
        send: &str,
        cap: FrequencyCap,
        now: DateTime<Utc>,
    ) -> StoreResult<SlotTake> {
        let (scope, contact, send) = (scope.to_string(), contact.clone(), send.to_string());
        self.point(move |inner| inner.take_send_slot(&scope, &contact, &send, cap, now))
            .await
    }

    async fn renew_lease(&self, lease: &Lease) -> StoreResult<()> {
        let lease = lease.clone();
        self.point(move |inner| inner.put_json(&inner.leases, lease.owner.as_bytes(), &lease))
            .await
    }

    async fn release_lease(&self, owner: &str) -> StoreResult<()> {
        let key = owner.as_bytes().to_vec();
        self.point(move |inner| inner.remove(&inner.leases, key))
            .await
    }

    async fn leases(&self) -> StoreResult<Vec<Lease>> {
        self.blocking(|inner| inner.all_json(&inner.leases)).await
    }

    async fn marker(&self, name: &str) -> StoreResult<bool> {
        let key = name.as_bytes().to_vec();
        self.point(move |inner| inner.markers.contains_key(&key).map_err(io_err))
            .await
    }

    async fn set_marker(&self, name: &str) -> StoreResult<()> {
        let key = name.as_bytes().to_vec();
        self.point(move |inner| inner.put_json(&inner.markers, &key, &Utc::now()))
            .await
    }

    async fn learned(&self, kind: &str) -> StoreResult<Vec<(String, String)>> {
        let mut prefix = kind.as_bytes().to_vec();
        prefix.push(0);
        self.blocking(move |inner| {
            let mut out = Vec::new();
            for guard in inner.learned.prefix(&prefix) {
                let (k, v) = guard.into_inner().map_err(io_err)?;
                out.push((
                    String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn set_learned(&self, kind: &str, key: &str, value: Option<&str>) -> StoreResult<()> {
        let mut k = kind.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(key.as_bytes());
        let value = value.map(|v| v.as_bytes().to_vec());
        self.point(move |inner| match value {
            Some(v) => {
                let mut b = inner.batch();
                b.insert(&inner.learned, k, v);
                b.commit().map_err(io_err)
            }
            None => inner.remove(&inner.learned, k),
        })
        .await
    }

    async fn set_campaign_halt(&self, id: &str, halt: Option<&CampaignHalt>) -> StoreResult<()> {
        let id = id.to_string();
        let halt = halt.cloned();
        self.point(move |inner| match &halt {
            Some(h) => inner.put_json(&inner.halts, id.as_bytes(), h),
            None => inner.remove(&inner.halts, id.as_bytes().to_vec()),
        })
        .await
    }

    async fn list_campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        self.blocking(|inner| inner.all_json(&inner.campaigns))
            .await
    }

    async fn set_observed_state(
        &self,
        id: &str,
        state: ObservedState,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let id = id.to_string();
        self.point(move |inner| {
            let Some(mut record) =
                inner.get_json::<CampaignRecord>(&inner.campaigns, id.as_bytes())?
            else {
                return Ok(());
            };
            record.observed_state = state;
            record.updated_at = at;
            if state == ObservedState::Active && record.started_at.is_none() {
                record.started_at = Some(at);
            }
            inner.put_json(&inner.campaigns, id.as_bytes(), &record)
        })
        .await
    }

    async fn delete_campaign(&self, id: &str) -> StoreResult<()> {
        let id = id.to_string();
        self.blocking(move |inner| inner.delete_campaign(&id)).await
    }

    async fn campaign_shards(&self, id: &str) -> StoreResult<Vec<u32>> {
        let id = id.to_string();
        self.blocking(move |inner| inner.campaign_shards(&id)).await
    }

    async fn stage_batch(&self, items: &[StageRequest]) -> StoreResult<Vec<StageOutcome>> {
        let items = items.to_vec();
        self.blocking(move |inner| inner.stage_batch(&items)).await
    }

    async fn get_dispatch(
        &self,
        campaign: &str,
        contact: &ContactKey,
    ) -> StoreResult<Option<DispatchRecord>> {
        let key = dispatch_key(campaign, contact);
        self.point(move |inner| inner.get_json(&inner.dispatches, &key))
            .await
    }

    async fn due_timers(
        &self,
        campaign: &str,
        shard: u32,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<TimerEntry>> {
        let campaign = campaign.to_string();
        self.blocking(move |s| s.due_timers(&campaign, shard, until, limit))
            .await
    }

    async fn fire_timer(
        &self,
        campaign: &str,
        entry: &TimerEntry,
        edges: &[Edge],
        now: DateTime<Utc>,
        force: bool,
    ) -> StoreResult<Option<DispatchState>> {
        let (campaign, entry, edges) = (campaign.to_string(), entry.clone(), edges.to_vec());
        self.point(move |s| s.fire_timer(&campaign, &entry, edges, now, force))
            .await
    }

    async fn scan_pending(
        &self,
        campaign: &str,
        shard: u32,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<PendingEntry>> {
        let campaign = campaign.to_string();
        self.blocking(move |inner| inner.scan_pending(&campaign, shard, after, limit))
            .await
    }

    async fn scan_dispatches(
        &self,
        campaign: &str,
        after: Option<&ContactKey>,
        limit: usize,
    ) -> StoreResult<Vec<DispatchRecord>> {
        let campaign = campaign.to_string();
        let after = after.cloned();
        self.blocking(move |inner| inner.scan_dispatches(&campaign, after.as_ref(), limit))
            .await
    }

    async fn tally(&self, campaign: &str) -> StoreResult<Option<Vec<(Counter, f64)>>> {
        let campaign = campaign.to_string();
        self.point(move |inner| inner.tally(&campaign).map(Some))
            .await
    }

    async fn load_cursor(&self, campaign: &str, shard: u32) -> StoreResult<Option<u64>> {
        let key = shard_key(campaign, shard);
        self.point(move |inner| {
            Ok(inner
                .cursors
                .get(&key)
                .map_err(io_err)?
                .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
                .map(u64::from_be_bytes))
        })
        .await
    }

    async fn save_cursor(&self, campaign: &str, shard: u32, seq: u64) -> StoreResult<()> {
        let key = shard_key(campaign, shard);
        self.point(move |inner| {
            let mut b = inner.batch();
            b.insert(&inner.cursors, key, seq.to_be_bytes().to_vec());
            b.commit().map_err(io_err)
        })
        .await
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        let request = request.clone();
        self.point(move |inner| inner.claim(&request)).await
    }

    async fn record_outcome(
        &self,
        campaign: &str,
        contact: &ContactKey,
        outcome: &Outcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let (campaign, contact, outcome) = (campaign.to_string(), contact.clone(), outcome.clone());
        self.point(move |inner| inner.record_outcome(&campaign, &contact, &outcome, at))
            .await
    }

    async fn exclude(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        let (campaign, contact, reason) = (campaign.to_string(), contact.clone(), reason.clone());
        self.point(move |inner| inner.exclude(&campaign, &contact, &reason, at))
            .await
    }

    async fn stop_journey(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<JourneyStop>> {
        let (campaign, contact, reason) = (campaign.to_string(), contact.clone(), reason.clone());
        self.point(move |inner| inner.stop_journey(&campaign, &contact, &reason, at))
            .await
    }

    async fn record_conversion(
        &self,
        campaign: &str,
        contact: &ContactKey,
        conversion: &crate::domain::Conversion,
        stop: Option<&ExclusionReason>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<ConversionApplied>> {
        let (campaign, contact, conversion, stop) = (
            campaign.to_string(),
            contact.clone(),
            conversion.clone(),
            stop.cloned(),
        );
        self.point(move |inner| {
            inner.record_conversion(&campaign, &contact, &conversion, stop.as_ref(), at)
        })
        .await
    }

    async fn reached(&self, contact: &ContactKey) -> StoreResult<Vec<crate::domain::Reach>> {
        let contact = contact.clone();
        self.point(move |inner| inner.reached(&contact)).await
    }

    async fn requeue(
        &self,
        campaign: &str,
        contact: &ContactKey,
        from: &Requeue,
    ) -> StoreResult<bool> {
        let (campaign, contact, from) = (campaign.to_string(), contact.clone(), from.clone());
        self.point(move |inner| inner.requeue(&campaign, &contact, &from))
            .await
    }

    async fn get_contact(&self, contact: &ContactKey) -> StoreResult<Option<ContactRecord>> {
        let key = contact.as_str().as_bytes().to_vec();
        self.point(move |inner| inner.get_json(&inner.contacts, &key))
            .await
    }

    async fn set_opt_out(
        &self,
        contact: &ContactKey,
        scope: OptOutScope,
        opted_out: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let contact = contact.clone();
        self.point(move |inner| {
            let _guard = inner.stripe(&contact);
            let key = contact.as_str().as_bytes();
            let mut record: ContactRecord =
                inner.get_json(&inner.contacts, key)?.unwrap_or_default();
            let last = match scope {
                OptOutScope::All => record.opt_changed_at,
                OptOutScope::Marketing => record.marketing_opt_changed_at,
            };
            // An older event redelivered after a newer one changes nothing.
            if last.is_some_and(|last| last > at) {
                return Ok(());
            }
            match scope {
                OptOutScope::All => {
                    record.opted_out = opted_out;
                    record.opted_out_at = opted_out.then_some(at);
                    record.opt_changed_at = Some(at);
                }
                OptOutScope::Marketing => {
                    record.marketing_opted_out = opted_out;
                    record.marketing_opt_changed_at = Some(at);
                }
            }
            inner.put_row(&inner.contacts, key, &record)
        })
        .await
    }

    async fn lookup_wamid(&self, wamid: &str) -> StoreResult<Option<WamidEntry>> {
        if wamid.is_empty() {
            return Ok(None);
        }
        let key = wamid.as_bytes().to_vec();
        self.point(move |inner| inner.get_json(&inner.wamids, &key))
            .await
    }

    async fn apply_status(
        &self,
        campaign: &str,
        contact: &ContactKey,
        update: &StatusUpdate,
    ) -> StoreResult<StatusApplied> {
        let (campaign, contact, update) = (campaign.to_string(), contact.clone(), update.clone());
        self.point(move |inner| inner.apply_status(&campaign, &contact, &update))
            .await
    }

    async fn park_status(&self, wamid: &str, update: &StatusUpdate) -> StoreResult<()> {
        let (wamid, update) = (wamid.to_string(), update.clone());
        self.point(move |inner| inner.park_status(&wamid, &update))
            .await
    }

    async fn mark_undeliverable(&self, contact: &ContactKey, at: DateTime<Utc>) -> StoreResult<()> {
        let contact = contact.clone();
        self.point(move |inner| {
            let _guard = inner.stripe(&contact);
            let key = contact.as_str().as_bytes();
            let mut record: ContactRecord =
                inner.get_json(&inner.contacts, key)?.unwrap_or_default();
            record.undeliverable_at = Some(at);
            inner.put_row(&inner.contacts, key, &record)
        })
        .await
    }

    async fn link_contact(&self, contact: &ContactKey, other: &ContactKey) -> StoreResult<()> {
        let (contact, other) = (contact.recipient(), other.recipient());
        self.point(move |inner| {
            let _guard = inner.stripe(&contact);
            let key = contact.as_str().as_bytes();
            let mut record: ContactRecord =
                inner.get_json(&inner.contacts, key)?.unwrap_or_default();
            if record.linked.as_ref() == Some(&other) {
                return Ok(());
            }
            record.linked = Some(other);
            inner.put_row(&inner.contacts, key, &record)
        })
        .await
    }
}

#[cfg(test)]
mod tests;
