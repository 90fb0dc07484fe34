//! Each campaign's counters, kept in `tallies` in the same write batches as
//! the dispatch rows they count (docs/ARCHITECTURE.md, "Progress and
//! counts"): `campaign 0 counter → value` (the counter in MessagePack, the
//! value an f64, big-endian). A write that changes a row adds the row's
//! counters after the change minus those before it, under the campaign's
//! tally lock, which also keeps the values in memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::Utc;

use super::keys::*;
use super::*;
use crate::sync::MutexExt;

/// Set once every row's counters are in `tallies`: by a new store at its
/// creation, or by the first open of a store written before the counters
/// were kept.
const TALLY_MARKER: &str = "tally-v1";

/// One campaign's counters, as `tallies` holds them.
pub(super) type Counters = BTreeMap<Counter, f64>;

/// The counters of every campaign in use, loaded from `tallies` on first use.
#[derive(Default)]
pub(super) struct TallyLocks(Mutex<HashMap<String, Arc<Mutex<Counters>>>>);

fn tally_key(campaign: &str, counter: &Counter) -> StoreResult<Vec<u8>> {
    let mut k = campaign_prefix(campaign);
    rmp_serde::encode::write(&mut k, counter).map_err(io_err)?;
    Ok(k)
}

impl Inner {
    /// Counts every row into `tallies` unless that was done: the first open
    /// of a store written before the counters were kept reads each row
    /// once. Runs at open, before anything else writes.
    pub(super) fn ensure_tallies(&self) -> StoreResult<()> {
        if self.markers.contains_key(TALLY_MARKER).map_err(io_err)? {
            return Ok(());
        }
        let mut all: BTreeMap<String, Counters> = BTreeMap::new();
        let mut rows = 0u64;
        for guard in self.dispatches.iter() {
            let (k, v) = guard.into_inner().map_err(io_err)?;
            let row: DispatchRecord = decode(&k, &v)?;
            let counters = all.entry(row.campaign_id.clone()).or_default();
            for (c, v) in row.tally() {
                *counters.entry(c).or_default() += v;
            }
            rows += 1;
        }
        let mut batch = self.batch();
        for guard in self.tallies.iter() {
            batch.remove(&self.tallies, guard.key().map_err(io_err)?);
        }
        for (campaign, counters) in &all {
            for (c, v) in counters.iter().filter(|(_, v)| **v != 0.0) {
                batch.insert(
                    &self.tallies,
                    tally_key(campaign, c)?,
                    v.to_be_bytes().to_vec(),
                );
            }
        }
        batch.insert(
            &self.markers,
            TALLY_MARKER.as_bytes().to_vec(),
            encode(&Utc::now())?,
        );
        batch.commit().map_err(io_err)?;
        if rows > 0 {
            tracing::info!(
                rows,
                campaigns = all.len(),
                "counted every row of the store once: campaign counts are kept with the rows from now on"
            );
        }
        Ok(())
    }

    /// The campaign's counters, loaded from `tallies` the first time.
    fn campaign_tally(&self, campaign: &str) -> StoreResult<Arc<Mutex<Counters>>> {
        let mut locks = self.tally_locks.0.lock_or_recover();
        if let Some(t) = locks.get(campaign) {
            return Ok(Arc::clone(t));
        }
        let prefix = campaign_prefix(campaign);
        let mut counters = Counters::new();
        for guard in self.tallies.prefix(&prefix) {
            let (k, v) = guard.into_inner().map_err(io_err)?;
            let corrupt = |message: String| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).replace('\0', "/"),
                message,
            };
            let counter: Counter = rmp_serde::from_slice(&k[prefix.len()..])
                .map_err(|e| corrupt(format!("tally counter: {e}")))?;
            let value: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("tally value is not 8 bytes".into()))?;
            counters.insert(counter, f64::from_be_bytes(value));
        }
        let t = Arc::new(Mutex::new(counters));
        locks.insert(campaign.to_string(), Arc::clone(&t));
        Ok(t)
    }

    /// The campaign's counters, as of the last write acknowledged.
    pub(super) fn tally(&self, campaign: &str) -> StoreResult<Vec<(Counter, f64)>> {
        let t = self.campaign_tally(campaign)?;
        let counters = t.lock_or_recover();
        Ok(counters.iter().map(|(c, v)| (c.clone(), *v)).collect())
    }

    /// Commits `batch` with the change of each campaign's counters it
    /// carries, in the same write. The campaigns' tally locks are held
    /// (in campaign order) from reading the values to the commit, so two
    /// changes of one counter never cross.
    pub(super) fn commit_counted(
        &self,
        mut batch: fjall::OwnedWriteBatch,
        changes: BTreeMap<&str, Counters>,
    ) -> StoreResult<()> {
        let changes: Vec<(&str, Counters)> =
            changes.into_iter().filter(|(_, c)| !c.is_empty()).collect();
        if changes.is_empty() {
            return batch.commit().map_err(io_err);
        }
        let tallies = changes
            .iter()
            .map(|(campaign, _)| self.campaign_tally(campaign))
            .collect::<StoreResult<Vec<_>>>()?;
        let mut held: Vec<_> = tallies.iter().map(|t| t.lock_or_recover()).collect();
        let mut after: Vec<Vec<(Counter, f64)>> = Vec::with_capacity(changes.len());
        for ((campaign, change), counters) in changes.iter().zip(held.iter()) {
            let mut values = Vec::with_capacity(change.len());
            for (c, v) in change {
                let value = counters.get(c).copied().unwrap_or(0.0) + v;
                let key = tally_key(campaign, c)?;
                if value == 0.0 {
                    batch.remove(&self.tallies, key);
                } else {
                    batch.insert(&self.tallies, key, value.to_be_bytes().to_vec());
                }
                values.push((c.clone(), value));
            }
            after.push(values);
        }
        batch.commit().map_err(io_err)?;
        for (counters, values) in held.iter_mut().zip(after) {
            for (c, value) in values {
                if value == 0.0 {
                    counters.remove(&c);
                } else {
                    counters.insert(c, value);
                }
            }
        }
        Ok(())
    }

    /// Commits `batch`, which writes `row` of `campaign`, whose counters
    /// were `was` before the change.
    pub(super) fn commit_row(
        &self,
        batch: fjall::OwnedWriteBatch,
        campaign: &str,
        was: &[(Counter, f64)],
        row: &DispatchRecord,
    ) -> StoreResult<()> {
        let change = tally_change(Some(was), row);
        self.commit_counted(batch, BTreeMap::from([(campaign, change)]))
    }

    /// Adds the removal of every counter of `campaign` to `batch` (the
    /// campaign's rows go in the same batch) and forgets them in memory
    /// once `commit` succeeded.
    pub(super) fn forget_tally(
        &self,
        mut batch: fjall::OwnedWriteBatch,
        campaign: &str,
    ) -> StoreResult<()> {
        let t = self.campaign_tally(campaign)?;
        let mut counters = t.lock_or_recover();
        for guard in self.tallies.prefix(campaign_prefix(campaign)) {
            batch.remove(&self.tallies, guard.key().map_err(io_err)?);
        }
        batch.commit().map_err(io_err)?;
        counters.clear();
        Ok(())
    }
}
