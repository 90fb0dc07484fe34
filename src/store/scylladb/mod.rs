//! The ScyllaDB backend: several wadispatch instances on one cluster.
//!
//! Same semantics as the embedded store (the conformance suite runs on both),
//! built on two kinds of writes that never touch the same cells:
//!
//! * **plain writes** for everything that is idempotent or owned by one writer:
//!   staging cells, the pending queue, cursors, campaigns, opt-outs, the wamid
//!   index and parked statuses;
//! * **conditional writes** (LWT, serial consistency `LOCAL_SERIAL`) for every
//!   change of a contact's journey and for the exclusive engagement. Each
//!   journey write is `... IF rev = ?` with the revision read alongside the row
//!   and sets a fresh random revision. That is stricter than `IF state =
//!   'pending'`: a row that went pending → claimed → pending (a retry) between
//!   a read and a write has another revision, so a stale claim cannot win.
//!   An uncertain answer (timeout) is read back at `LOCAL_SERIAL` before
//!   deciding ([`lwt`]).
//!
//! A claim of an exclusive campaign takes two conditional writes on two
//! partitions: the dispatch row first, then the contact's engagement. When the
//! engagement is lost to another campaign the claim is reverted (again
//! conditionally), so only a caller holding both ever sends.

mod connect;
mod journey;
pub mod lwt;
pub mod rows;
mod schema;
mod statements;

pub use schema::{init_schema, schema_statements, SchemaMode, SCHEMA};
use statements::Statements;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use scylla::client::session::Session;
use scylla::DeserializeRow;

use self::lwt::LwtReply;
use self::rows::{DispatchRow, BUCKETS};
use super::*;
use crate::domain::{ContactKey, DispatchState, ExclusionReason, ObservedState, OptOutScope};

/// How often a journey write is retried after losing a race to another
/// writer before the conflict is reported.
const CAS_ATTEMPTS: usize = 8;

/// The one partition of `parked_replies` (replies wait there for seconds).
const REPLY_BUCKET: i32 = 0;

/// Concurrent requests of one staging batch or one bucket sweep.
const FAN_OUT: usize = 64;

/// Slots of the portfolio limit tried per count before it is reported full.
const PORTFOLIO_PROBES: i64 = 8;

/// The ScyllaDB store. Cheap to clone.
#[derive(Clone)]
pub struct ScyllaStore {
    session: Arc<Session>,
    st: Arc<Statements>,
    keyspace: String,
}

fn unavailable(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{context}: {e}"))
}

#[derive(Debug, DeserializeRow)]
struct CampaignRow {
    id: String,
    spec: Option<String>,
    observed_state: Option<String>,
    updated_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
}

impl CampaignRow {
    fn into_record(self) -> StoreResult<Option<CampaignRecord>> {
        let Some(spec) = self.spec else {
            return Ok(None);
        };
        let corrupt = |message: String| StoreError::Corrupt {
            key: format!("campaigns/{}", self.id),
            message,
        };
        let spec = serde_json::from_str(&spec)
            .map_err(|e| corrupt(format!("spec is not valid JSON: {e}")))?;
        let observed_state = match &self.observed_state {
            Some(s) => s
                .parse::<ObservedState>()
                .map_err(|_| corrupt(format!("unknown observed state {s:?}")))?,
            None => ObservedState::Scheduled,
        };
        Ok(Some(CampaignRecord {
            spec,
            observed_state,
            updated_at: self.updated_at.unwrap_or_default(),
            started_at: self.started_at,
        }))
    }
}

#[derive(Debug, Default, DeserializeRow)]
struct ContactRow {
    engaged_campaign: Option<String>,
    opted_out: Option<bool>,
    opted_out_at: Option<DateTime<Utc>>,
    last_campaign: Option<String>,
    undeliverable_at: Option<DateTime<Utc>>,
    marketing_opted_out: Option<bool>,
    marketing_opt_changed_at: Option<DateTime<Utc>>,
}

impl From<ContactRow> for ContactRecord {
    fn from(r: ContactRow) -> Self {
        ContactRecord {
            engaged_campaign: r.engaged_campaign,
            opted_out: r.opted_out.unwrap_or(false),
            opted_out_at: r.opted_out_at.filter(|_| r.opted_out == Some(true)),
            last_campaign: r.last_campaign,
            undeliverable_at: r.undeliverable_at,
            opt_changed_at: r.opted_out_at,
            marketing_opted_out: r.marketing_opted_out.unwrap_or(false),
            marketing_opt_changed_at: r.marketing_opt_changed_at,
        }
    }
}

/// A digest naming a parked status, so a redelivery is stored once.
fn status_id(json: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(json.as_bytes())[..16])
}

#[async_trait]
impl Store for ScyllaStore {
    async fn ping(&self) -> StoreResult<()> {
        self.exec(&self.st.ping, ("\0ping",), "ping")
            .await
            .map(drop)
    }

    async fn put_campaign(&self, record: &CampaignRecord) -> StoreResult<()> {
        let spec = serde_json::to_string(&record.spec)
            .map_err(|e| StoreError::io("cannot encode campaign spec", e))?;
        self.exec(
            &self.st.put_campaign,
            (
                spec,
                record.observed_state.as_str(),
                record.updated_at,
                record.started_at,
                &record.spec.id,
            ),
            "writing a campaign",
        )
        .await
        .map(drop)
    }

    async fn get_campaign(&self, id: &str) -> StoreResult<Option<CampaignRecord>> {
        let rows: Vec<CampaignRow> = self
            .page(&self.st.get_campaign, (id,), 1, "reading a campaign")
            .await?;
        match rows.into_iter().next() {
            Some(row) => row.into_record(),
            None => Ok(None),
        }
    }

    async fn park_reply(&self, reply: &ParkedReply) -> StoreResult<()> {
        // A redelivery keeps the first arrival's wait. Redeliveries come
        // seconds apart, so the read and the write need not be one step.
        let existing: Vec<(Option<String>,)> = self
            .page(
                &self.st.get_parked_reply,
                (REPLY_BUCKET, reply.message_id.as_str()),
                1,
                "reading a parked reply",
            )
            .await?;
        if !existing.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_string(reply).map_err(|e| StoreError::Corrupt {
            key: format!("parked_replies/{}", reply.message_id),
            message: e.to_string(),
        })?;
        self.exec(
            &self.st.park_reply,
            (REPLY_BUCKET, reply.message_id.as_str(), json),
            "parking a reply",
        )
        .await
        .map(drop)
    }

    async fn parked_replies(&self, limit: usize) -> StoreResult<Vec<ParkedReply>> {
        let rows: Vec<(Option<String>,)> = self
            .rows(
                &self.st.parked_replies,
                (REPLY_BUCKET,),
                "listing parked replies",
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for json in rows.into_iter().filter_map(|(r,)| r) {
            let reply: ParkedReply =
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    key: "parked_replies".into(),
                    message: e.to_string(),
                })?;
            out.push(reply);
        }
        out.sort_by_key(|r| r.parked_at);
        out.truncate(limit);
        Ok(out)
    }

    async fn take_parked_reply(&self, message_id: &str) -> StoreResult<bool> {
        // A lightweight transaction: of several instances settling the same
        // reply, one removes it and publishes it.
        match self
            .conditional(&self.st.take_parked_reply, (REPLY_BUCKET, message_id))
            .await
        {
            LwtReply::Applied => Ok(true),
            LwtReply::NotApplied => Ok(false),
            // Whether it went is unknown: leave it to the next round (a
            // reply may then be published twice, never zero times).
            LwtReply::Failed(m) | LwtReply::Uncertain(m) => Err(StoreError::Unavailable(format!(
                "taking a parked reply: {m}"
            ))),
        }
    }

    async fn claimed(&self, campaign: &str, shard: u32) -> StoreResult<Vec<ClaimEntry>> {
        let rows: Vec<(String, String, Option<DateTime<Utc>>)> = self
            .rows(
                &self.st.list_claims,
                (campaign, shard as i32),
                "reading the claim index",
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(owner, contact, at)| ClaimEntry {
                contact: ContactKey::raw(contact),
                owner,
                claimed_at: at.unwrap_or_default(),
            })
            .collect())
    }

    async fn settle_claim(
        &self,
        campaign: &str,
        shard: u32,
        entry: &ClaimEntry,
        message: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let outcome = Outcome::Unknown {
            message: message.to_string(),
        };
        let written = self
            .update_journey(campaign, &entry.contact, |current| {
                current.claimed_by(&entry.owner).then(|| {
                    let mut new = current.clone();
                    new.apply_outcome(&outcome, at);
                    new
                })
            })
            .await?;
        self.unindex_claim(campaign, shard, &entry.owner, &entry.contact)
            .await?;
        Ok(matches!(written, Some(Ok(_))))
    }

    async fn count_recipient(
        &self,
        contact: &ContactKey,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<RecipientCount> {
        let known: Vec<(Option<DateTime<Utc>>,)> = self
            .page(
                &self.st.get_recipient,
                (contact.as_str(),),
                1,
                "reading a portfolio recipient",
            )
            .await?;
        if known.first().and_then(|(u,)| *u).is_some_and(|u| u > now) {
            return Ok(RecipientCount::Known);
        }
        let slots = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let cursor: Vec<(Option<i64>,)> = self
            .page(
                &self.st.get_portfolio_cursor,
                (0i32,),
                1,
                "reading the portfolio cursor",
            )
            .await?;
        let next = cursor.first().and_then(|(n,)| *n).unwrap_or(0);
        let until = now + chrono::TimeDelta::hours(24);
        // The slot the cursor names is the oldest; a few after it cover
        // places taken concurrently by other instances.
        for step in 0..slots.min(PORTFOLIO_PROBES) {
            let position = next.saturating_add(step);
            let slot = i32::try_from(position.rem_euclid(slots)).unwrap_or(0);
            let mut reply = self
                .conditional(&self.st.take_slot, (contact.as_str(), until, slot, now))
                .await;
            if reply == LwtReply::NotApplied {
                // Also false for a slot never used: create it then.
                reply = self
                    .conditional(&self.st.first_slot, (slot, contact.as_str(), until))
                    .await;
            }
            match reply {
                LwtReply::Applied => {
                    self.exec(
                        &self.st.put_portfolio_cursor,
                        (position.saturating_add(1), 0i32),
                        "moving the portfolio cursor",
                    )
                    .await?;
                    self.exec(
                        &self.st.put_recipient,
                        (contact.as_str(), until),
                        "recording a portfolio recipient",
                    )
                    .await?;
                    return Ok(RecipientCount::Counted);
                }
                // Taken, or perhaps taken by this very write (an uncertain
                // answer): either way not counted on, which errs on the
                // side of fewer recipients.
                LwtReply::NotApplied | LwtReply::Uncertain(_) => {}
                LwtReply::Failed(m) => {
                    return Err(StoreError::Unavailable(format!(
                        "taking a place of the portfolio limit: {m}"
                    )))
                }
            }
        }
        let oldest = i32::try_from(next.rem_euclid(slots)).unwrap_or(0);
        let row: Vec<(Option<DateTime<Utc>>,)> = self
            .page(&self.st.get_slot, (oldest,), 1, "reading a portfolio slot")
            .await?;
        let frees = row
            .first()
            .and_then(|(u,)| *u)
            .filter(|u| *u > now)
            .unwrap_or(now + chrono::TimeDelta::seconds(1));
        Ok(RecipientCount::Full { until: frees })
    }

    async fn renew_lease(&self, lease: &Lease) -> StoreResult<()> {
        self.exec(
            &self.st.put_lease,
            (0i32, &lease.owner, lease.until),
            "renewing the instance's lease",
        )
        .await
        .map(drop)
    }

    async fn release_lease(&self, owner: &str) -> StoreResult<()> {
        self.exec(
            &self.st.drop_lease,
            (0i32, owner),
            "releasing the instance's lease",
        )
        .await
        .map(drop)
    }

    async fn leases(&self) -> StoreResult<Vec<Lease>> {
        let rows: Vec<(String, Option<DateTime<Utc>>)> = self
            .rows(&self.st.list_leases, (0i32,), "reading instance leases")
            .await?;
        Ok(rows
            .into_iter()
            .map(|(owner, until)| Lease {
                owner,
                until: until.unwrap_or_default(),
            })
            .collect())
    }

    async fn marker(&self, name: &str) -> StoreResult<bool> {
        let rows: Vec<(String,)> = self
            .page(&self.st.get_marker, (name,), 1, "reading a marker")
            .await?;
        Ok(!rows.is_empty())
    }

    async fn set_marker(&self, name: &str) -> StoreResult<()> {
        self.exec(&self.st.put_marker, (name, Utc::now()), "writing a marker")
            .await
            .map(drop)
    }

    async fn campaign_halt(&self, id: &str) -> StoreResult<Option<CampaignHalt>> {
        let rows: Vec<(Option<String>,)> = self
            .page(&self.st.get_halt, (id,), 1, "reading a campaign halt")
            .await?;
        match rows.into_iter().next().and_then(|(h,)| h) {
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: format!("campaign_halts/{id}"),
                    message: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    async fn set_campaign_halt(&self, id: &str, halt: Option<&CampaignHalt>) -> StoreResult<()> {
        match halt {
            Some(h) => {
                let json = serde_json::to_string(h).map_err(|e| StoreError::Corrupt {
                    key: format!("campaign_halts/{id}"),
                    message: e.to_string(),
                })?;
                self.exec(&self.st.put_halt, (id, json), "writing a campaign halt")
                    .await?;
            }
            None => {
                self.exec(&self.st.delete_halt, (id,), "lifting a campaign halt")
                    .await?;
            }
        }
        Ok(())
    }

    async fn list_campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        let rows: Vec<CampaignRow> = self
            .rows(&self.st.list_campaigns, (), "listing campaigns")
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(record) = row.into_record()? {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn set_observed_state(
        &self,
        id: &str,
        state: ObservedState,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let Some(record) = self.get_campaign(id).await? else {
            return Ok(());
        };
        self.exec(
            &self.st.set_observed,
            (state.as_str(), at, id),
            "writing a campaign state",
        )
        .await?;
        if state == ObservedState::Active && record.started_at.is_none() {
            // Any instance's start time will do: it only records that the
            // campaign started (a tombstone can no longer delete it).
            self.exec(&self.st.set_started, (at, id), "marking a campaign started")
                .await?;
        }
        Ok(())
    }

    async fn delete_campaign(&self, id: &str) -> StoreResult<()> {
        // Only campaigns that never started are deleted, so their rows hold
        // staging cells only (plain writes) and plain deletes shadow them.
        let shards = self.campaign_shards(id).await?;
        futures::stream::iter(0..BUCKETS)
            .map(|b| self.exec(&self.st.delete_bucket, (id, b), "deleting dispatch rows"))
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<_>>()
            .await?;
        for shard in shards {
            let shard = shard as i32;
            self.exec(
                &self.st.delete_pending,
                (id, shard),
                "deleting pending entries",
            )
            .await?;
            self.exec(&self.st.delete_cursor, (id, shard), "deleting a cursor")
                .await?;
        }
        self.exec(&self.st.delete_shards, (id,), "deleting shards")
            .await?;
        self.exec(&self.st.delete_halt, (id,), "deleting a campaign halt")
            .await?;
        self.exec(&self.st.delete_campaign, (id,), "deleting a campaign")
            .await
            .map(drop)
    }

    async fn campaign_shards(&self, id: &str) -> StoreResult<Vec<u32>> {
        let rows: Vec<(i32,)> = self
            .rows(&self.st.campaign_shards, (id,), "listing shards")
            .await?;
        let mut shards: Vec<u32> = rows.into_iter().map(|(s,)| s.max(0) as u32).collect();
        shards.sort_unstable();
        Ok(shards)
    }

    async fn stage_batch(&self, items: &[StageRequest]) -> StoreResult<Vec<StageOutcome>> {
        // Duplicates inside the batch: the first occurrence wins.
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        let first: Vec<bool> = items
            .iter()
            .map(|i| seen.insert((i.campaign_id.as_str(), i.contact.as_str())))
            .collect();
        let jobs: Vec<_> = items
            .iter()
            .zip(first)
            .map(|(item, first)| self.stage_one(item, first))
            .collect();
        let outcomes = futures::stream::iter(jobs)
            .buffered(FAN_OUT)
            .collect::<Vec<StoreResult<StageOutcome>>>()
            .await;
        outcomes.into_iter().collect()
    }

    async fn get_dispatch(
        &self,
        campaign: &str,
        contact: &ContactKey,
    ) -> StoreResult<Option<DispatchRecord>> {
        Ok(self
            .read_dispatch(campaign, contact, false)
            .await?
            .map(|(r, _)| r))
    }

    async fn scan_pending(
        &self,
        campaign: &str,
        shard: u32,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<PendingEntry>> {
        let rows: Vec<(i64, String)> = match after {
            Some(seq) => {
                let Ok(seq) = i64::try_from(seq) else {
                    return Ok(Vec::new());
                };
                self.page(
                    &self.st.scan_pending_after,
                    (campaign, shard as i32, seq),
                    limit,
                    "scanning pending contacts",
                )
                .await?
            }
            None => {
                self.page(
                    &self.st.scan_pending,
                    (campaign, shard as i32),
                    limit,
                    "scanning pending contacts",
                )
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(seq, contact)| PendingEntry {
                seq: seq.max(0) as u64,
                contact: ContactKey::raw(contact),
            })
            .collect())
    }

    /// Rows come in (bucket, contact) order, not contact order; `after` (the
    /// last contact of the previous page) resumes in its bucket.
    async fn scan_dispatches(
        &self,
        campaign: &str,
        after: Option<&ContactKey>,
        limit: usize,
    ) -> StoreResult<Vec<DispatchRecord>> {
        let mut out = Vec::new();
        let mut bucket = after.map(rows::bucket).unwrap_or(0);
        let mut resume: Option<String> = after.map(|c| c.as_str().to_owned());
        while out.len() < limit && bucket < BUCKETS {
            let want = limit - out.len();
            let page: Vec<DispatchRow> = match &resume {
                Some(contact) => {
                    self.page(
                        &self.st.scan_bucket_after,
                        (campaign, bucket, contact.as_str()),
                        want,
                        "scanning dispatch rows",
                    )
                    .await?
                }
                None => {
                    self.page(
                        &self.st.scan_bucket,
                        (campaign, bucket),
                        want,
                        "scanning dispatch rows",
                    )
                    .await?
                }
            };
            let exhausted = page.len() < want;
            resume = page.last().map(|r| r.contact.clone());
            for row in page {
                // Fragments (no staging cells) are skipped, but still move
                // the position forward.
                if let Some((record, _)) = row.into_record()? {
                    out.push(record);
                }
            }
            if exhausted {
                bucket += 1;
                resume = None;
            }
        }
        Ok(out)
    }

    async fn load_cursor(&self, campaign: &str, shard: u32) -> StoreResult<Option<u64>> {
        let rows: Vec<(Option<i64>,)> = self
            .page(
                &self.st.load_cursor,
                (campaign, shard as i32),
                1,
                "reading a cursor",
            )
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|(s,)| s)
            .map(|s| s.max(0) as u64))
    }

    async fn save_cursor(&self, campaign: &str, shard: u32, seq: u64) -> StoreResult<()> {
        self.exec(
            &self.st.save_cursor,
            (seq.min(i64::MAX as u64) as i64, campaign, shard as i32),
            "saving a cursor",
        )
        .await
        .map(drop)
    }

    async fn claim(&self, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        // Whether this call wrote the claim's index entry (written before the
        // row's conditional write, so a crash between the two leaves an
        // entry too many, never a claimed row the index does not know).
        let mut indexed = false;
        for _ in 0..CAS_ATTEMPTS {
            let Some((old, rev)) = self
                .read_dispatch(&req.campaign_id, &req.contact, false)
                .await?
            else {
                return Ok(ClaimOutcome::NotClaimable { state: None });
            };
            if !old.claimable(req.now) {
                if indexed && !old.claimed_by(&req.owner) {
                    self.unindex_claim(&req.campaign_id, old.shard, &req.owner, &req.contact)
                        .await?;
                }
                return Ok(ClaimOutcome::NotClaimable {
                    state: Some(old.state),
                });
            }
            // Check the engagement before claiming, so the common refusal
            // costs no write.
            let engaged = if req.exclusive {
                let current = self
                    .get_contact_row(&req.contact)
                    .await?
                    .and_then(|c| c.engaged_campaign);
                match &current {
                    Some(other)
                        if other != &req.campaign_id
                            && req.replace_engagement.as_deref() != Some(other.as_str()) =>
                    {
                        if indexed {
                            self.unindex_claim(
                                &req.campaign_id,
                                old.shard,
                                &req.owner,
                                &req.contact,
                            )
                            .await?;
                        }
                        return Ok(ClaimOutcome::EngagedElsewhere {
                            campaign: other.clone(),
                        });
                    }
                    _ => Some(current),
                }
            } else {
                None
            };
            let mut new = old.clone();
            new.state = DispatchState::Claimed;
            new.attempts += 1;
            new.owner = Some(req.owner.clone());
            new.times.claimed = Some(req.now);
            if !indexed {
                self.index_claim(&old, &req.owner, req.now).await?;
                indexed = true;
            }
            let Some(new_rev) = self.write_journey(&old, &new, rev).await? else {
                // Lost to another writer: look again (it may be claimed now).
                continue;
            };
            if let Some(current) = engaged {
                // Always a conditional write, even when the engagement looks
                // like ours already: a plain read may be stale, and another
                // instance may be replacing it. Only a holder sends.
                let holder = match self.take_engagement(req, current).await {
                    Ok(holder) => holder,
                    Err(e) => {
                        let _ = self.write_journey(&new, &old, Some(new_rev)).await;
                        return Err(e);
                    }
                };
                if let Some(holder) = holder {
                    // Another campaign holds the contact: give the row back.
                    self.write_journey(&new, &old, Some(new_rev)).await?;
                    self.unindex_claim(&req.campaign_id, old.shard, &req.owner, &req.contact)
                        .await?;
                    return Ok(ClaimOutcome::EngagedElsewhere { campaign: holder });
                }
            }
            self.remove_pending(&old).await?;
            return Ok(ClaimOutcome::Claimed {
                attempts: new.attempts,
            });
        }
        Err(StoreError::Unavailable(format!(
            "{}/{}: the claim lost {CAS_ATTEMPTS} conditional writes in a row to concurrent writers",
            req.campaign_id, req.contact
        )))
    }

    async fn record_outcome(
        &self,
        campaign: &str,
        contact: &ContactKey,
        outcome: &Outcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut parked: Vec<StatusUpdate> = Vec::new();
        if let Outcome::Accepted { wamid } = outcome {
            // Index first, so a status arriving from now on finds the row.
            self.exec(
                &self.st.put_wamid,
                (wamid, campaign, contact.as_str(), at),
                "indexing a wamid",
            )
            .await?;
            self.exec(
                &self.st.set_last_campaign,
                (campaign, contact.as_str()),
                "recording the contact's last campaign",
            )
            .await?;
            let rows: Vec<(Option<String>,)> = self
                .rows(&self.st.parked, (wamid,), "reading parked statuses")
                .await?;
            for (json,) in rows {
                if let Some(update) = json.and_then(|j| serde_json::from_str(&j).ok()) {
                    parked.push(update);
                }
            }
        }
        let written = self
            .update_journey(campaign, contact, |current| {
                let mut new = current.clone();
                new.apply_outcome(outcome, at);
                for update in &parked {
                    new.apply_status(update);
                }
                Some(new)
            })
            .await?;
        let Some(Ok((old, new))) = written else {
            return Err(StoreError::Corrupt {
                key: format!("{campaign}/{contact}"),
                message: "outcome for a contact that was never staged".into(),
            });
        };
        self.after_unclaim(&old, &new).await?;
        match outcome {
            Outcome::Accepted { wamid } if !parked.is_empty() => {
                self.exec(&self.st.unpark, (wamid,), "clearing parked statuses")
                    .await?;
            }
            _ if new.requeued_by(outcome) => self.add_pending(&new).await?,
            _ => {}
        }
        Ok(())
    }

    async fn exclude(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let written = self
            .update_journey(campaign, contact, |current| {
                if !matches!(
                    current.state,
                    DispatchState::Pending | DispatchState::Deferred
                ) {
                    return None;
                }
                let mut new = current.clone();
                new.apply_outcome(
                    &Outcome::Excluded {
                        reason: reason.clone(),
                    },
                    at,
                );
                Some(new)
            })
            .await?;
        match written {
            Some(Ok((old, _))) => {
                self.remove_pending(&old).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn requeue(
        &self,
        campaign: &str,
        contact: &ContactKey,
        from: &Requeue,
    ) -> StoreResult<bool> {
        let written = self
            .update_journey(campaign, contact, |current| {
                let mut new = current.clone();
                new.requeue(from).then_some(new)
            })
            .await?;
        match written {
            Some(Ok((_, new))) => {
                self.add_pending(&new).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_contact(&self, contact: &ContactKey) -> StoreResult<Option<ContactRecord>> {
        Ok(self
            .get_contact_row(contact)
            .await?
            .map(ContactRecord::from))
    }

    async fn set_opt_out(
        &self,
        contact: &ContactKey,
        scope: OptOutScope,
        opted_out: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        // `opted_out_at` (`marketing_opt_changed_at`) holds the event time
        // of the scope's latest change (stop or resume): an older event
        // redelivered after a newer one is dropped. Opt changes of one person
        // are rare and seconds apart; the read and the write are not one
        // step, which only matters for two changes of the same contact within
        // the same moment.
        let row = self.get_contact_row(contact).await?;
        let (last, statement) = match scope {
            OptOutScope::All => (row.and_then(|c| c.opted_out_at), &self.st.set_opt_out),
            OptOutScope::Marketing => (
                row.and_then(|c| c.marketing_opt_changed_at),
                &self.st.set_marketing_opt_out,
            ),
        };
        if last.is_some_and(|last| last > at) {
            return Ok(());
        }
        self.exec(
            statement,
            (opted_out, Some(at), contact.as_str()),
            "recording an opt-out",
        )
        .await
        .map(drop)
    }

    async fn lookup_wamid(&self, wamid: &str) -> StoreResult<Option<WamidEntry>> {
        let rows: Vec<(Option<String>, Option<String>, Option<DateTime<Utc>>)> = self
            .page(&self.st.get_wamid, (wamid,), 1, "looking up a wamid")
            .await?;
        Ok(rows.into_iter().next().and_then(|(c, k, at)| {
            Some(WamidEntry {
                campaign_id: c?,
                contact: ContactKey::raw(k?),
                created_at: at.unwrap_or_default(),
            })
        }))
    }

    async fn apply_status(
        &self,
        campaign: &str,
        contact: &ContactKey,
        update: &StatusUpdate,
    ) -> StoreResult<StatusApplied> {
        let written = self
            .update_journey(campaign, contact, |current| {
                let mut new = current.clone();
                new.apply_status(update).map(|_| new)
            })
            .await?;
        match written {
            None => Ok(StatusApplied::Missing),
            Some(Err(current)) => Ok(StatusApplied::Unchanged {
                state: current.state,
            }),
            Some(Ok((old, new))) => {
                self.after_unclaim(&old, &new).await?;
                if new.state == DispatchState::Deferred {
                    self.add_pending(&new).await?;
                }
                Ok(StatusApplied::Changed {
                    from: old.state,
                    to: new.state,
                    record: Box::new(new),
                })
            }
        }
    }

    async fn park_status(&self, wamid: &str, update: &StatusUpdate) -> StoreResult<()> {
        let json = serde_json::to_string(update)
            .map_err(|e| StoreError::io("cannot encode a status", e))?;
        self.exec(
            &self.st.park,
            (wamid, status_id(&json), &json),
            "parking a status",
        )
        .await
        .map(drop)
    }

    async fn mark_undeliverable(&self, contact: &ContactKey, at: DateTime<Utc>) -> StoreResult<()> {
        self.exec(
            &self.st.set_undeliverable,
            (at, contact.as_str()),
            "marking a contact undeliverable",
        )
        .await
        .map(drop)
    }
}
