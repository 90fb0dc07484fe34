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
//! Key layout (0x00 separates fields; campaign ids never contain it):
//! - `campaigns`:  id → CampaignRecord (JSON)
//! - `dispatches`: campaign 0 contact → DispatchRecord (JSON)
//! - `pending`:    campaign 0 shard(be32) seq(be64) → contact
//! - `shards`:     campaign 0 shard(be32) → ()
//! - `cursors`:    campaign 0 shard(be32) → seq(be64)
//! - `contacts`:   contact → ContactRecord (JSON)
//! - `wamids`:     wamid → WamidEntry (JSON)
//! - `parked`:     wamid → [StatusUpdate] (JSON): statuses that overtook their wamid
//! - `claims`:     campaign 0 shard(be32) owner 0 contact → claimed at (JSON): the claim index
//! - `leases`:     owner → Lease (JSON)
//! - `markers`:    name → done at (JSON)
//! - `recipients`: contact → until (JSON); `recipient_order`: until(be64 ms) contact → ()

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;
use crate::domain::{ContactKey, DispatchState, ExclusionReason, ObservedState, OptOutScope};
use crate::sync::MutexExt;

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
    /// `recipients (contact) → until` (JSON): the portfolio window.
    recipients: Keyspace,
    /// `recipient_order (until ms be64, contact) → ()`: the same, oldest first.
    recipient_order: Keyspace,
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

fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::io("embedded store", e)
}

/// fjall refuses an empty key (it asserts): ids that come from outside are
/// checked before they become one.
fn empty_key(what: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::new(),
        message: format!("a {what} needs a non-empty id"),
    }
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(io_err)
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        message: e.to_string(),
    })
}

fn dispatch_key(campaign: &str, contact: &ContactKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + 1 + contact.as_str().len());
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k.extend_from_slice(contact.as_str().as_bytes());
    k
}

fn campaign_prefix(campaign: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + 1);
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k
}

fn shard_key(campaign: &str, shard: u32) -> Vec<u8> {
    let mut k = campaign_prefix(campaign);
    k.extend_from_slice(&shard.to_be_bytes());
    k
}

fn pending_key(campaign: &str, shard: u32, seq: u64) -> Vec<u8> {
    let mut k = shard_key(campaign, shard);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn claim_key(campaign: &str, shard: u32, owner: &str, contact: &ContactKey) -> Vec<u8> {
    let mut k = shard_key(campaign, shard);
    k.extend_from_slice(owner.as_bytes());
    k.push(0);
    k.extend_from_slice(contact.as_str().as_bytes());
    k
}

/// The index entry of a row that leaves `claimed` (`before` is the row as
/// it was), to remove in the same batch as the row's change.
fn unclaimed_key(before: &DispatchRecord, after: &DispatchRecord) -> Option<Vec<u8>> {
    let owner = before.owner.as_deref()?;
    (before.state == DispatchState::Claimed && after.state != DispatchState::Claimed)
        .then(|| claim_key(&before.campaign_id, before.shard, owner, &before.contact))
}

fn recipient_order_key(until: DateTime<Utc>, contact: &ContactKey) -> Vec<u8> {
    let ms = u64::try_from(until.timestamp_millis()).unwrap_or(0);
    let mut k = ms.to_be_bytes().to_vec();
    k.extend_from_slice(contact.as_str().as_bytes());
    k
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
            recipients: ks("recipients")?,
            recipient_order: ks("recipient_order")?,
            window: Mutex::new(None),
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            staging: Mutex::new(()),
            _lock: lock,
            db,
            durability,
        };
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

impl Inner {
    fn stripe(&self, contact: &ContactKey) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        contact.as_str().hash(&mut h);
        self.stripes[(h.finish() as usize) % LOCK_STRIPES].lock_or_recover()
    }

    fn batch(&self) -> fjall::OwnedWriteBatch {
        self.db.batch().durability(Some(self.durability.mode()))
    }

    fn get_json<T: DeserializeOwned>(&self, ks: &Keyspace, key: &[u8]) -> StoreResult<Option<T>> {
        match ks.get(key).map_err(io_err)? {
            Some(v) => decode(key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Removes one key in a batch of its own.
    fn remove(&self, ks: &Keyspace, key: Vec<u8>) -> StoreResult<()> {
        let mut batch = self.batch();
        batch.remove(ks, key);
        batch.commit().map_err(io_err)
    }

    /// Every value of a (small) keyspace.
    fn all_json<T: DeserializeOwned>(&self, ks: &Keyspace) -> StoreResult<Vec<T>> {
        let mut out = Vec::new();
        for guard in ks.iter() {
            let (k, v) = guard.into_inner().map_err(io_err)?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    fn put_json<T: Serialize>(&self, ks: &Keyspace, key: &[u8], value: &T) -> StoreResult<()> {
        let mut b = self.batch();
        b.insert(ks, key.to_vec(), encode(value)?);
        b.commit().map_err(io_err)
    }

    fn stage_batch(&self, items: &[StageRequest]) -> StoreResult<Vec<StageOutcome>> {
        let _guard = self.staging.lock_or_recover();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut batch = self.batch();
        // The same contact twice inside one batch must collapse too.
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        let mut new_shards = std::collections::HashSet::new();
        for item in items {
            let key = dispatch_key(&item.campaign_id, &item.contact);
            if !seen.insert(key.clone()) || self.dispatches.contains_key(&key).map_err(io_err)? {
                outcomes.push(StageOutcome::Duplicate);
                continue;
            }
            let record = DispatchRecord::from_stage(item);
            batch.insert(&self.dispatches, key, encode(&record)?);
            if item.exclusion.is_none() {
                batch.insert(
                    &self.pending,
                    pending_key(&item.campaign_id, item.shard, item.seq),
                    item.contact.as_str().as_bytes().to_vec(),
                );
                outcomes.push(StageOutcome::Staged);
            } else {
                outcomes.push(StageOutcome::Excluded);
            }
            new_shards.insert((item.campaign_id.as_str(), item.shard));
        }
        for (campaign, shard) in new_shards {
            batch.insert(&self.shards, shard_key(campaign, shard), Vec::new());
        }
        batch.commit().map_err(io_err)?;
        Ok(outcomes)
    }

    fn claim(&self, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        let _guard = self.stripe(&req.contact);
        let key = dispatch_key(&req.campaign_id, &req.contact);
        let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? else {
            return Ok(ClaimOutcome::NotClaimable { state: None });
        };
        if !record.claimable(req.now) {
            return Ok(ClaimOutcome::NotClaimable {
                state: Some(record.state),
            });
        }
        let mut batch = self.batch();
        if req.exclusive {
            let ckey = req.contact.as_str().as_bytes();
            let mut contact: ContactRecord =
                self.get_json(&self.contacts, ckey)?.unwrap_or_default();
            match &contact.engaged_campaign {
                Some(other)
                    if other != &req.campaign_id
                        && req.replace_engagement.as_deref() != Some(other.as_str()) =>
                {
                    return Ok(ClaimOutcome::EngagedElsewhere {
                        campaign: other.clone(),
                    });
                }
                Some(other) if other == &req.campaign_id => {}
                _ => {
                    contact.engaged_campaign = Some(req.campaign_id.clone());
                    batch.insert(&self.contacts, ckey.to_vec(), encode(&contact)?);
                }
            }
        }
        record.state = DispatchState::Claimed;
        record.attempts += 1;
        record.owner = Some(req.owner.clone());
        record.times.claimed = Some(req.now);
        batch.insert(&self.dispatches, key, encode(&record)?);
        batch.insert(
            &self.claims,
            claim_key(&req.campaign_id, record.shard, &req.owner, &req.contact),
            encode(&req.now)?,
        );
        batch.remove(
            &self.pending,
            pending_key(&req.campaign_id, record.shard, record.seq),
        );
        batch.commit().map_err(io_err)?;
        Ok(ClaimOutcome::Claimed {
            attempts: record.attempts,
        })
    }

    fn record_outcome(
        &self,
        campaign: &str,
        contact: &ContactKey,
        outcome: &Outcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let _guard = self.stripe(contact);
        let key = dispatch_key(campaign, contact);
        let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? else {
            return Err(StoreError::Corrupt {
                key: format!("{campaign}/{contact}"),
                message: "outcome for a contact that was never staged".into(),
            });
        };
        let before = record.clone();
        record.apply_outcome(outcome, at);
        let mut batch = self.batch();
        if let Some(k) = unclaimed_key(&before, &record) {
            batch.remove(&self.claims, k);
        }
        match outcome {
            // An empty wamid from the API indexes nothing (fjall refuses
            // empty keys); the callback data still correlates statuses.
            Outcome::Accepted { wamid } if wamid.is_empty() => {}
            Outcome::Accepted { wamid } => {
                let entry = WamidEntry {
                    campaign_id: campaign.to_string(),
                    contact: contact.clone(),
                    created_at: at,
                };
                batch.insert(&self.wamids, wamid.as_bytes().to_vec(), encode(&entry)?);
                // Statuses that arrived before this answer was written.
                if let Some(parked) =
                    self.get_json::<Vec<StatusUpdate>>(&self.parked, wamid.as_bytes())?
                {
                    for update in &parked {
                        record.apply_status(update);
                    }
                    batch.remove(&self.parked, wamid.as_bytes().to_vec());
                }
                let ckey = contact.as_str().as_bytes();
                let mut c: ContactRecord = self.get_json(&self.contacts, ckey)?.unwrap_or_default();
                if c.last_campaign.as_deref() != Some(campaign) {
                    c.last_campaign = Some(campaign.to_string());
                    batch.insert(&self.contacts, ckey.to_vec(), encode(&c)?);
                }
            }
            _ if record.requeued_by(outcome) => {
                batch.insert(
                    &self.pending,
                    pending_key(campaign, record.shard, record.seq),
                    contact.as_str().as_bytes().to_vec(),
                );
            }
            _ => {}
        }
        batch.insert(&self.dispatches, key, encode(&record)?);
        batch.commit().map_err(io_err)
    }

    fn apply_status(
        &self,
        campaign: &str,
        contact: &ContactKey,
        update: &StatusUpdate,
    ) -> StoreResult<StatusApplied> {
        let _guard = self.stripe(contact);
        let key = dispatch_key(campaign, contact);
        let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? else {
            return Ok(StatusApplied::Missing);
        };
        let before = record.clone();
        let Some((from, to)) = record.apply_status(update) else {
            return Ok(StatusApplied::Unchanged {
                state: record.state,
            });
        };
        let mut batch = self.batch();
        if let Some(k) = unclaimed_key(&before, &record) {
            batch.remove(&self.claims, k);
        }
        if to == DispatchState::Deferred {
            batch.insert(
                &self.pending,
                pending_key(campaign, record.shard, record.seq),
                contact.as_str().as_bytes().to_vec(),
            );
        }
        batch.insert(&self.dispatches, key, encode(&record)?);
        batch.commit().map_err(io_err)?;
        Ok(StatusApplied::Changed {
            from,
            to,
            record: Box::new(record),
        })
    }

    fn park_status(&self, wamid: &str, update: &StatusUpdate) -> StoreResult<()> {
        if wamid.is_empty() {
            return Err(empty_key("parked status"));
        }
        // Parking is keyed by wamid; the stripe of the wamid string is enough
        // to serialise concurrent parks of the same message.
        let _guard = self.stripe(&ContactKey::raw(wamid));
        let mut parked: Vec<StatusUpdate> = self
            .get_json(&self.parked, wamid.as_bytes())?
            .unwrap_or_default();
        if !parked.contains(update) {
            parked.push(update.clone());
        }
        self.put_json(&self.parked, wamid.as_bytes(), &parked)
    }

    fn requeue(&self, campaign: &str, contact: &ContactKey, from: &Requeue) -> StoreResult<bool> {
        let _guard = self.stripe(contact);
        let key = dispatch_key(campaign, contact);
        let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? else {
            return Ok(false);
        };
        if !record.requeue(from) {
            return Ok(false);
        }
        let mut batch = self.batch();
        batch.insert(
            &self.pending,
            pending_key(campaign, record.shard, record.seq),
            contact.as_str().as_bytes().to_vec(),
        );
        batch.insert(&self.dispatches, key, encode(&record)?);
        batch.commit().map_err(io_err)?;
        Ok(true)
    }

    fn exclude(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let _guard = self.stripe(contact);
        let key = dispatch_key(campaign, contact);
        let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? else {
            return Ok(false);
        };
        if !matches!(
            record.state,
            DispatchState::Pending | DispatchState::Deferred
        ) {
            return Ok(false);
        }
        record.apply_outcome(
            &Outcome::Excluded {
                reason: reason.clone(),
            },
            at,
        );
        let mut batch = self.batch();
        batch.remove(
            &self.pending,
            pending_key(campaign, record.shard, record.seq),
        );
        batch.insert(&self.dispatches, key, encode(&record)?);
        batch.commit().map_err(io_err)?;
        Ok(true)
    }

    fn scan_pending(
        &self,
        campaign: &str,
        shard: u32,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<PendingEntry>> {
        let start = match after {
            Some(seq) => match seq.checked_add(1) {
                Some(next) => pending_key(campaign, shard, next),
                None => return Ok(Vec::new()),
            },
            None => shard_key(campaign, shard),
        };
        let end = match shard.checked_add(1) {
            Some(next) => shard_key(campaign, next),
            None => {
                let mut k = campaign_prefix(campaign);
                k.extend_from_slice(&[0xff; 5]);
                k
            }
        };
        let mut out = Vec::with_capacity(limit.min(4096));
        for guard in self.pending.range(start..end) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = guard.into_inner().map_err(io_err)?;
            let seq_bytes: [u8; 8] = k
                .get(k.len().saturating_sub(8)..)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    message: "pending key too short".into(),
                })?;
            let contact = String::from_utf8(v.to_vec()).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                message: e.to_string(),
            })?;
            out.push(PendingEntry {
                seq: u64::from_be_bytes(seq_bytes),
                contact: ContactKey::raw(&contact),
            });
        }
        Ok(out)
    }

    fn scan_dispatches(
        &self,
        campaign: &str,
        after: Option<&ContactKey>,
        limit: usize,
    ) -> StoreResult<Vec<DispatchRecord>> {
        let prefix = campaign_prefix(campaign);
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        let start = match after {
            Some(contact) => {
                let mut k = dispatch_key(campaign, contact);
                k.push(0); // strictly after
                k
            }
            None => prefix,
        };
        let mut out = Vec::with_capacity(limit.min(4096));
        for guard in self.dispatches.range(start..end) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = guard.into_inner().map_err(io_err)?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    fn campaign_shards(&self, campaign: &str) -> StoreResult<Vec<u32>> {
        let mut shards = Vec::new();
        for guard in self.shards.prefix(campaign_prefix(campaign)) {
            let k = guard.key().map_err(io_err)?;
            let tail: [u8; 4] = k
                .get(k.len().saturating_sub(4)..)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    message: "shard key too short".into(),
                })?;
            shards.push(u32::from_be_bytes(tail));
        }
        Ok(shards)
    }

    fn claimed(&self, campaign: &str, shard: u32) -> StoreResult<Vec<ClaimEntry>> {
        let prefix = shard_key(campaign, shard);
        let mut out = Vec::new();
        for guard in self.claims.prefix(&prefix) {
            let (k, v) = guard.into_inner().map_err(io_err)?;
            let tail = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let Some((owner, contact)) = tail.split_once('\0') else {
                return Err(StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).replace('\0', "/"),
                    message: "claim index key without an owner".into(),
                });
            };
            out.push(ClaimEntry {
                contact: ContactKey::raw(contact),
                owner: owner.to_string(),
                claimed_at: decode(&k, &v)?,
            });
        }
        Ok(out)
    }

    fn settle_claim(
        &self,
        campaign: &str,
        shard: u32,
        entry: &ClaimEntry,
        message: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let _guard = self.stripe(&entry.contact);
        let key = dispatch_key(campaign, &entry.contact);
        let mut batch = self.batch();
        batch.remove(
            &self.claims,
            claim_key(campaign, shard, &entry.owner, &entry.contact),
        );
        let mut changed = false;
        if let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? {
            if record.claimed_by(&entry.owner) {
                record.apply_outcome(
                    &Outcome::Unknown {
                        message: message.to_string(),
                    },
                    at,
                );
                batch.insert(&self.dispatches, key, encode(&record)?);
                changed = true;
            }
        }
        batch.commit().map_err(io_err)?;
        Ok(changed)
    }

    fn count_recipient(
        &self,
        contact: &ContactKey,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<RecipientCount> {
        let mut window = self.window.lock_or_recover();
        let mut batch = self.batch();
        // Recipients whose 24 h ended leave the window, oldest first.
        let mut left = 0u64;
        let mut first_until = None;
        for guard in self.recipient_order.iter() {
            let k = guard.key().map_err(io_err)?;
            let ms = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    message: "recipient order key too short".into(),
                })?;
            let until = i64::try_from(ms)
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_default();
            if until > now {
                first_until = Some(until);
                break;
            }
            batch.remove(&self.recipients, k[8..].to_vec());
            batch.remove(&self.recipient_order, k);
            left += 1;
        }
        let count = match *window {
            Some(n) => n.saturating_sub(left),
            None => (self.recipient_order.len().map_err(io_err)? as u64).saturating_sub(left),
        };
        let key = contact.as_str().as_bytes();
        let previous = self.get_json::<DateTime<Utc>>(&self.recipients, key)?;
        let (outcome, count) = if previous.is_some_and(|until| until > now) {
            (RecipientCount::Known, count)
        } else if count >= limit {
            let until = first_until.unwrap_or(now + chrono::TimeDelta::hours(24));
            (RecipientCount::Full { until }, count)
        } else {
            let until = now + chrono::TimeDelta::hours(24);
            if let Some(old) = previous {
                batch.remove(&self.recipient_order, recipient_order_key(old, contact));
            }
            batch.insert(&self.recipients, key.to_vec(), encode(&until)?);
            batch.insert(
                &self.recipient_order,
                recipient_order_key(until, contact),
                Vec::new(),
            );
            (RecipientCount::Counted, count + 1)
        };
        batch.commit().map_err(io_err)?;
        *window = Some(count);
        Ok(outcome)
    }

    fn delete_campaign(&self, id: &str) -> StoreResult<()> {
        let prefix = campaign_prefix(id);
        let mut batch = self.batch();
        for ks in [
            &self.dispatches,
            &self.pending,
            &self.shards,
            &self.cursors,
            &self.claims,
        ] {
            for guard in ks.prefix(&prefix) {
                batch.remove(ks, guard.key().map_err(io_err)?);
            }
        }
        batch.remove(&self.campaigns, id.as_bytes().to_vec());
        batch.remove(&self.halts, id.as_bytes().to_vec());
        batch.commit().map_err(io_err)
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
    ) -> StoreResult<bool> {
        let (campaign, contact, reason) = (campaign.to_string(), contact.clone(), reason.clone());
        self.point(move |inner| inner.exclude(&campaign, &contact, &reason, at))
            .await
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
            inner.put_json(&inner.contacts, key, &record)
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
            inner.put_json(&inner.contacts, key, &record)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory that cannot be created says which and why, and
    /// keeps the operating system's error as its source.
    #[test]
    fn an_open_failure_keeps_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let Err(e) = EmbeddedStore::open(&file.join("store"), Durability::Process, 8) else {
            panic!("a store under a file opened");
        };
        let text = e.to_string();
        assert!(text.contains("cannot create data directory"), "{text}");
        let source = std::error::Error::source(&e).expect("the cause is kept");
        assert!(
            source.downcast_ref::<std::io::Error>().is_some(),
            "{source:?}"
        );
    }
}
