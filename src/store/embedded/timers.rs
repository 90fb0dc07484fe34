//! The timer queue of journeys on fjall: entries written in the batch of the
//! row change that sets a wait, scanned by due time, fired through the row.

use chrono::{DateTime, Utc};

use super::keys::*;
use super::*;
use crate::domain::{DispatchState, Edge};

impl Inner {
    /// Adds the timer entry of a wait the row change sets, in its batch.
    pub(super) fn index_wait(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        before: Option<&crate::domain::Wait>,
        after: &DispatchRecord,
    ) {
        if let Some(entry) = TimerEntry::added(before, after) {
            batch.insert(
                &self.timers,
                timer_key(&after.campaign_id, &entry),
                Vec::new(),
            );
        }
    }

    pub(super) fn due_timers(
        &self,
        campaign: &str,
        shard: u32,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<TimerEntry>> {
        let prefix = shard_key(campaign, shard);
        let mut out = Vec::new();
        for guard in self.timers.prefix(&prefix) {
            if out.len() >= limit {
                break;
            }
            let key = guard.key().map_err(io_err)?;
            let entry = timer_entry(prefix.len(), shard, &key)?;
            if entry.due > until {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    pub(super) fn fire_timer(
        &self,
        campaign: &str,
        entry: &TimerEntry,
        edges: Vec<Edge>,
        now: DateTime<Utc>,
        force: bool,
    ) -> StoreResult<Option<DispatchState>> {
        let _guard = self.stripe(&entry.contact);
        let key = dispatch_key(campaign, &entry.contact);
        let mut batch = self.batch();
        let mut moved = None;
        let mut keep = false;
        if let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? {
            // Declined while the row waits for exactly this entry: not due
            // yet, so it stays queued.
            keep = TimerEntry::of(&record).as_ref() == Some(entry);
            let was = record.tally();
            if record.promote(&entry.step, edges, now, force) {
                keep = false;
                if record.state == DispatchState::Pending {
                    batch.insert(
                        &self.pending,
                        pending_key(campaign, record.shard, record.seq),
                        entry.contact.row_str().as_bytes().to_vec(),
                    );
                }
                self.index_wait(&mut batch, None, &record);
                batch.insert(&self.dispatches, key, encode_row(&record)?);
                moved = Some((record.state, was, record));
            }
        }
        if !keep {
            batch.remove(&self.timers, timer_key(campaign, entry));
        }
        match moved {
            Some((state, was, record)) => {
                self.commit_row(batch, campaign, &was, &record)?;
                Ok(Some(state))
            }
            None => {
                batch.commit().map_err(io_err)?;
                Ok(None)
            }
        }
    }
}
