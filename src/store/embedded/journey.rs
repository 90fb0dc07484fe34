//! The store's operations on fjall, synchronous and under the contact's
//! striped lock where they read, decide and write: staging, claims,
//! outcomes, statuses, requeues, exclusions, scans, the claim index and the
//! portfolio count. `mod.rs` runs them inline or on the blocking pool.

use std::hash::{Hash, Hasher};
use std::sync::MutexGuard;

use chrono::{DateTime, Utc};
use fjall::Keyspace;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::*;
use super::*;
use crate::domain::{ContactKey, DispatchState, ExclusionReason};
use crate::sync::MutexExt;

impl Inner {
    pub(super) fn stripe(&self, contact: &ContactKey) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        contact.as_str().hash(&mut h);
        self.stripes[(h.finish() as usize) % LOCK_STRIPES].lock_or_recover()
    }

    pub(super) fn batch(&self) -> fjall::OwnedWriteBatch {
        self.db.batch().durability(Some(self.durability.mode()))
    }

    pub(super) fn get_json<T: DeserializeOwned>(
        &self,
        ks: &Keyspace,
        key: &[u8],
    ) -> StoreResult<Option<T>> {
        match ks.get(key).map_err(io_err)? {
            Some(v) => decode(key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Removes one key in a batch of its own.
    pub(super) fn remove(&self, ks: &Keyspace, key: Vec<u8>) -> StoreResult<()> {
        let mut batch = self.batch();
        batch.remove(ks, key);
        batch.commit().map_err(io_err)
    }

    /// Every value of a (small) keyspace.
    pub(super) fn all_json<T: DeserializeOwned>(&self, ks: &Keyspace) -> StoreResult<Vec<T>> {
        let mut out = Vec::new();
        for guard in ks.iter() {
            let (k, v) = guard.into_inner().map_err(io_err)?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Writes one encoded value in a batch of its own.
    fn put(&self, ks: &Keyspace, key: &[u8], value: Vec<u8>) -> StoreResult<()> {
        let mut b = self.batch();
        b.insert(ks, key.to_vec(), value);
        b.commit().map_err(io_err)
    }

    /// Writes one value of a per-message keyspace in the binary row
    /// encoding.
    pub(super) fn put_row<T: Serialize>(
        &self,
        ks: &Keyspace,
        key: &[u8],
        value: &T,
    ) -> StoreResult<()> {
        self.put(ks, key, encode_row(value)?)
    }

    pub(super) fn put_json<T: Serialize>(
        &self,
        ks: &Keyspace,
        key: &[u8],
        value: &T,
    ) -> StoreResult<()> {
        self.put(ks, key, encode(value)?)
    }

    pub(super) fn stage_batch(&self, items: &[StageRequest]) -> StoreResult<Vec<StageOutcome>> {
        let _guard = self.staging.lock_or_recover();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut batch = self.batch();
        // The same contact twice inside one batch must collapse too.
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        let mut new_shards = std::collections::HashSet::new();
        let mut counts: std::collections::BTreeMap<&str, super::tally::Counters> =
            Default::default();
        for item in items {
            let key = dispatch_key(&item.campaign_id, &item.contact);
            if !seen.insert(key.clone()) || self.dispatches.contains_key(&key).map_err(io_err)? {
                outcomes.push(StageOutcome::Duplicate);
                continue;
            }
            let record = DispatchRecord::from_stage(item);
            let counters = counts.entry(item.campaign_id.as_str()).or_default();
            for (c, v) in record.tally() {
                *counters.entry(c).or_default() += v;
            }
            batch.insert(&self.dispatches, key, encode_row(&record)?);
            if item.exclusion.is_none() {
                batch.insert(
                    &self.pending,
                    pending_key(&item.campaign_id, item.shard, item.seq),
                    item.contact.row_str().as_bytes().to_vec(),
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
        self.commit_counted(batch, counts)?;
        Ok(outcomes)
    }

    pub(super) fn claim(&self, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        let _guard = self.stripe(&req.contact);
        let key = dispatch_key(&req.campaign_id, &req.contact);
        let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? else {
            return Ok(ClaimOutcome::NotClaimable { state: None });
        };
        if !record.claimable_by(req) {
            return Ok(ClaimOutcome::NotClaimable {
                state: Some(record.state),
            });
        }
        let was = record.tally();
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
                    batch.insert(&self.contacts, ckey.to_vec(), encode_row(&contact)?);
                }
            }
        }
        record.state = DispatchState::Claimed;
        record.attempts += 1;
        record.owner = Some(req.owner.clone());
        record.times.claimed = Some(req.now);
        batch.insert(&self.dispatches, key, encode_row(&record)?);
        batch.insert(
            &self.claims,
            claim_key(&req.campaign_id, record.shard, &req.owner, &req.contact),
            encode_row(&req.now)?,
        );
        batch.remove(
            &self.pending,
            pending_key(&req.campaign_id, record.shard, record.seq),
        );
        self.commit_row(batch, &req.campaign_id, &was, &record)?;
        Ok(ClaimOutcome::Claimed {
            attempts: record.attempts,
        })
    }

    pub(super) fn record_outcome(
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
            Outcome::Accepted { wamid, .. } if wamid.is_empty() => {}
            Outcome::Accepted { wamid, .. } => {
                let entry = WamidEntry {
                    campaign_id: campaign.to_string(),
                    contact: contact.clone(),
                    created_at: at,
                };
                batch.insert(&self.wamids, wamid.as_bytes().to_vec(), encode_row(&entry)?);
                // Statuses that arrived before this answer was written.
                if let Some(parked) =
                    self.get_json::<Vec<StatusUpdate>>(&self.parked, wamid.as_bytes())?
                {
                    for update in &parked {
                        record.apply_status(update);
                    }
                    batch.remove(&self.parked, wamid.as_bytes().to_vec());
                }
                batch.insert(
                    &self.reach,
                    reach_key(campaign, contact),
                    at.timestamp_millis().to_be_bytes().to_vec(),
                );
                let ckey = contact.as_str().as_bytes();
                let mut c: ContactRecord = self.get_json(&self.contacts, ckey)?.unwrap_or_default();
                let occurrence = contact.occurrence().map(str::to_string);
                if c.last_campaign.as_deref() != Some(campaign) || c.last_occurrence != occurrence {
                    c.last_campaign = Some(campaign.to_string());
                    c.last_occurrence = occurrence;
                    batch.insert(&self.contacts, ckey.to_vec(), encode_row(&c)?);
                }
            }
            _ if record.requeued_by(outcome) => {
                batch.insert(
                    &self.pending,
                    pending_key(campaign, record.shard, record.seq),
                    contact.row_str().as_bytes().to_vec(),
                );
            }
            _ => {}
        }
        self.index_wait(&mut batch, before.wait.as_ref(), &record);
        batch.insert(&self.dispatches, key, encode_row(&record)?);
        self.commit_row(batch, campaign, &before.tally(), &record)
    }

    pub(super) fn apply_status(
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
            let (step, state) = record.status_step(update);
            return Ok(StatusApplied::Unchanged {
                state,
                step: step.to_string(),
                sender: record.status_sender(update).map(str::to_string),
            });
        };
        let priced =
            before.status_pricing(update).is_none() && record.status_pricing(update).is_some();
        let mut batch = self.batch();
        if let Some(k) = unclaimed_key(&before, &record) {
            batch.remove(&self.claims, k);
        }
        if to == DispatchState::Deferred {
            batch.insert(
                &self.pending,
                pending_key(campaign, record.shard, record.seq),
                contact.row_str().as_bytes().to_vec(),
            );
        }
        self.index_wait(&mut batch, before.wait.as_ref(), &record);
        batch.insert(&self.dispatches, key, encode_row(&record)?);
        self.commit_row(batch, campaign, &before.tally(), &record)?;
        Ok(StatusApplied::Changed {
            from,
            to,
            step: record.status_step(update).0.to_string(),
            record: Box::new(record),
            priced,
        })
    }

    pub(super) fn park_status(&self, wamid: &str, update: &StatusUpdate) -> StoreResult<()> {
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

    pub(super) fn requeue(
        &self,
        campaign: &str,
        contact: &ContactKey,
        from: &Requeue,
    ) -> StoreResult<bool> {
        let _guard = self.stripe(contact);
        let key = dispatch_key(campaign, contact);
        let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? else {
            return Ok(false);
        };
        let was = record.tally();
        if !record.requeue(from) {
            return Ok(false);
        }
        let mut batch = self.batch();
        batch.insert(
            &self.pending,
            pending_key(campaign, record.shard, record.seq),
            contact.row_str().as_bytes().to_vec(),
        );
        batch.insert(&self.dispatches, key, encode_row(&record)?);
        self.commit_row(batch, campaign, &was, &record)?;
        Ok(true)
    }

    pub(super) fn exclude(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        let _guard = self.stripe(contact);
        let key = dispatch_key(campaign, contact);
        let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? else {
            return Ok(None);
        };
        if !matches!(
            record.state,
            DispatchState::Pending | DispatchState::Deferred
        ) {
            return Ok(None);
        }
        let before = record.wait.clone();
        let was = record.tally();
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
        self.index_wait(&mut batch, before.as_ref(), &record);
        batch.insert(&self.dispatches, key, encode_row(&record)?);
        self.commit_row(batch, campaign, &was, &record)?;
        Ok(Some(record.step))
    }

    pub(super) fn stop_journey(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<JourneyStop>> {
        let _guard = self.stripe(contact);
        let key = dispatch_key(campaign, contact);
        let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? else {
            return Ok(None);
        };
        let was = record.tally();
        let Some(stop) = record.stop(reason, at) else {
            return Ok(None);
        };
        let mut batch = self.batch();
        if stop.excluded {
            batch.remove(
                &self.pending,
                pending_key(campaign, record.shard, record.seq),
            );
        }
        batch.insert(&self.dispatches, key, encode_row(&record)?);
        self.commit_row(batch, campaign, &was, &record)?;
        Ok(Some(stop))
    }

    pub(super) fn record_conversion(
        &self,
        campaign: &str,
        contact: &ContactKey,
        conversion: &crate::domain::Conversion,
        stop: Option<&ExclusionReason>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<ConversionApplied>> {
        let _guard = self.stripe(contact);
        let key = dispatch_key(campaign, contact);
        let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? else {
            return Ok(None);
        };
        let was = record.tally();
        let applied = record.convert(conversion, stop, at);
        let ConversionApplied::Recorded(converted) = &applied else {
            return Ok(Some(applied));
        };
        let mut batch = self.batch();
        if converted.stopped.as_ref().is_some_and(|s| s.excluded) {
            batch.remove(
                &self.pending,
                pending_key(campaign, record.shard, record.seq),
            );
        }
        batch.insert(&self.dispatches, key, encode_row(&record)?);
        self.commit_row(batch, campaign, &was, &record)?;
        Ok(Some(applied))
    }

    pub(super) fn reached(&self, contact: &ContactKey) -> StoreResult<Vec<crate::domain::Reach>> {
        let prefix = reach_prefix(contact);
        let oldest =
            Utc::now() - chrono::Duration::seconds(crate::domain::MAX_GOAL_WINDOW_SECS as i64);
        let mut out = Vec::new();
        for guard in self.reach.prefix(&prefix) {
            let (k, v) = guard.into_inner().map_err(io_err)?;
            let rest = &k[prefix.len()..];
            let corrupt = |message: &str| StoreError::Corrupt {
                key: String::from_utf8_lossy(&k).replace('\0', "/"),
                message: message.into(),
            };
            let split = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| corrupt("reach key without its occurrence"))?;
            let millis = <[u8; 8]>::try_from(&v[..])
                .map(i64::from_be_bytes)
                .map_err(|_| corrupt("reach time is not 8 bytes"))?;
            let Some(at) = DateTime::<Utc>::from_timestamp_millis(millis) else {
                return Err(corrupt("reach time out of range"));
            };
            if at < oldest {
                continue;
            }
            let occurrence = String::from_utf8_lossy(&rest[split + 1..]).into_owned();
            out.push(crate::domain::Reach {
                campaign_id: String::from_utf8_lossy(&rest[..split]).into_owned(),
                occurrence: (!occurrence.is_empty()).then_some(occurrence),
                at,
            });
        }
        Ok(out)
    }

    pub(super) fn scan_pending(
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
                contact: ContactKey::from_row(contact),
            });
        }
        Ok(out)
    }

    pub(super) fn scan_dispatches(
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

    pub(super) fn campaign_shards(&self, campaign: &str) -> StoreResult<Vec<u32>> {
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

    pub(super) fn claimed(&self, campaign: &str, shard: u32) -> StoreResult<Vec<ClaimEntry>> {
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
                contact: ContactKey::from_row(contact),
                owner: owner.to_string(),
                claimed_at: decode(&k, &v)?,
            });
        }
        Ok(out)
    }

    pub(super) fn settle_claim(
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
        if let Some(mut record) = self.get_json::<DispatchRecord>(&self.dispatches, &key)? {
            if record.claimed_by(&entry.owner) {
                let was = record.tally();
                record.apply_outcome(
                    &Outcome::Unknown {
                        message: message.to_string(),
                    },
                    at,
                );
                batch.insert(&self.dispatches, key, encode_row(&record)?);
                self.commit_row(batch, campaign, &was, &record)?;
                return Ok(true);
            }
        }
        batch.commit().map_err(io_err)?;
        Ok(false)
    }

    pub(super) fn count_recipient(
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
            batch.insert(&self.recipients, key.to_vec(), encode_row(&until)?);
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

    pub(super) fn delete_campaign(&self, id: &str) -> StoreResult<()> {
        let prefix = campaign_prefix(id);
        let mut batch = self.batch();
        for ks in [
            &self.dispatches,
            &self.pending,
            &self.shards,
            &self.cursors,
            &self.claims,
            &self.timers,
        ] {
            for guard in ks.prefix(&prefix) {
                batch.remove(ks, guard.key().map_err(io_err)?);
            }
        }
        batch.remove(&self.campaigns, id.as_bytes().to_vec());
        batch.remove(&self.halts, id.as_bytes().to_vec());
        self.forget_tally(batch, id)
    }
}
