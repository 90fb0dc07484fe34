//! Reads and writes of one contact's journey under the revision rule
//! (every change `IF rev = ?`), staging, the pending queue, the claim index
//! and the exclusive engagement: the building blocks of `impl Store`.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;

use super::contacts::ContactRow;
use super::lwt::LwtReply;
use super::rows::{DispatchRow, JourneyWrite, StageRow};
use super::*;
use crate::domain::{ContactKey, DispatchState};

impl ScyllaStore {
    pub(super) async fn exec(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
        what: &str,
    ) -> StoreResult<QueryResult> {
        self.session
            .execute_unpaged(st, values)
            .await
            .map_err(|e| unavailable(what, e))
    }

    pub(super) async fn rows<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
        what: &str,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let pager = self
            .session
            .execute_iter(st.clone(), values)
            .await
            .map_err(|e| unavailable(what, e))?;
        pager
            .rows_stream::<R>()
            .map_err(|e| unavailable(what, e))?
            .map_err(|e| unavailable(what, e))
            .try_collect()
            .await
    }

    /// One page of at most `limit` rows.
    pub(super) async fn page<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
        limit: usize,
        what: &str,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut st = st.clone();
        st.set_page_size(limit.clamp(1, 5_000) as i32);
        let mut paging = scylla::response::PagingState::start();
        // A page may come back short (size cap, tombstones) or even empty
        // with more to come: follow the paging state until `limit` rows or
        // the end.
        loop {
            let (result, next) = self
                .session
                .execute_single_page(&st, &values, paging)
                .await
                .map_err(|e| unavailable(what, e))?;
            let rows = result
                .into_rows_result()
                .map_err(|e| unavailable(what, e))?;
            for row in rows.rows::<R>().map_err(|e| unavailable(what, e))? {
                out.push(row.map_err(|e| unavailable(what, e))?);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(state) => paging = state,
                std::ops::ControlFlow::Break(()) => return Ok(out),
            }
        }
    }

    pub(super) async fn read_dispatch(
        &self,
        campaign: &str,
        contact: &ContactKey,
        serial: bool,
    ) -> StoreResult<Option<(DispatchRecord, Option<i64>)>> {
        let st = if serial {
            &self.st.get_dispatch_serial
        } else {
            &self.st.get_dispatch
        };
        let rows: Vec<DispatchRow> = self
            .page(
                st,
                (campaign, rows::bucket(contact), contact.row_str()),
                1,
                "reading a dispatch row",
            )
            .await?;
        match rows.into_iter().next() {
            Some(row) => row.into_record(),
            None => Ok(None),
        }
    }

    /// One conditional write; `[applied]` is the first column of its answer.
    pub(super) async fn conditional(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
    ) -> LwtReply {
        match self.session.execute_unpaged(st, values).await {
            Ok(result) => {
                let rows = match result.into_rows_result() {
                    Ok(rows) => rows,
                    Err(e) => {
                        return LwtReply::Failed(format!(
                            "a conditional write returned no rows ({e}); the server does not support lightweight transactions"
                        ))
                    }
                };
                match rows.maybe_first_row::<scylla::value::Row>() {
                    Ok(Some(row)) => {
                        match lwt::applied_flag(row.columns.first().and_then(|c| c.as_ref())) {
                            Ok(reply) => reply,
                            Err(e) => LwtReply::Failed(e.to_string()),
                        }
                    }
                    Ok(None) => {
                        LwtReply::Failed("a conditional write returned an empty result".into())
                    }
                    Err(e) => LwtReply::Failed(format!("unreadable [applied]: {e}")),
                }
            }
            Err(e) => lwt::classify(&e),
        }
    }

    /// Writes `new` over `old` if the row is still at `expected`. Returns
    /// the revision this write set when it won, `None` when it lost.
    pub(super) async fn write_journey(
        &self,
        old: &DispatchRecord,
        new: &DispatchRecord,
        expected: Option<i64>,
    ) -> StoreResult<Option<i64>> {
        // The timer entry of a new wait goes first: a crash between the two
        // leaves an entry the row does not name (it fires nothing), never a
        // wait without its entry.
        if let Some(entry) = TimerEntry::added(old.wait.as_ref(), new) {
            self.index_timer(&new.campaign_id, &entry).await?;
        }
        let new_rev: i64 = rand::random();
        let write = JourneyWrite::between(old, new, expected, new_rev);
        let reply = self.conditional(&self.st.journey, &write).await;
        let won = lwt::resolve(reply, new_rev, || async {
            Ok(self
                .read_dispatch(&new.campaign_id, &new.contact, true)
                .await?
                .and_then(|(_, rev)| rev))
        })
        .await?;
        Ok(won.then_some(new_rev))
    }

    /// Read-modify-write of a dispatch row until it wins or `change` declines.
    /// `change` gets the current record and returns the new one, or `None` to
    /// leave the row alone. Returns the (old, new) pair that was written.
    pub(super) async fn update_journey<F>(
        &self,
        campaign: &str,
        contact: &ContactKey,
        mut change: F,
    ) -> StoreResult<Option<Result<(DispatchRecord, DispatchRecord), DispatchRecord>>>
    where
        F: FnMut(&DispatchRecord) -> Option<DispatchRecord>,
    {
        for _ in 0..CAS_ATTEMPTS {
            let Some((old, rev)) = self.read_dispatch(campaign, contact, false).await? else {
                return Ok(None);
            };
            let Some(new) = change(&old) else {
                return Ok(Some(Err(old)));
            };
            if self.write_journey(&old, &new, rev).await?.is_some() {
                return Ok(Some(Ok((old, new))));
            }
        }
        Err(StoreError::Unavailable(format!(
            "{campaign}/{contact}: {CAS_ATTEMPTS} conditional writes in a row lost to concurrent writers"
        )))
    }

    pub(super) async fn stage_one(
        &self,
        item: &StageRequest,
        first: bool,
    ) -> StoreResult<StageOutcome> {
        if !first {
            return Ok(StageOutcome::Duplicate);
        }
        let row = StageRow::new(item)?;
        // First write wins: a row already staged keeps its frozen parameters.
        // Staging cells are plain writes; two instances staging the same new
        // contact at once write the same record from the same Kafka offset.
        type Existing = (
            Option<DateTime<Utc>>,
            Option<String>,
            Option<String>,
            Option<i32>,
            Option<i64>,
        );
        let existing: Vec<Existing> = self
            .page(
                &self.st.stage_exists,
                (&row.campaign_id, row.bucket, &row.contact),
                1,
                "checking a staged contact",
            )
            .await?;
        if let Some((Some(_), state, exclusion, shard, seq)) = existing.into_iter().next() {
            // Staged and never touched since: its queue entry may be missing
            // if the earlier staging failed between the two writes. Re-adding
            // it is idempotent.
            if let (None, None, Some(shard), Some(seq)) = (state, exclusion, shard, seq) {
                self.exec(
                    &self.st.add_pending,
                    (&row.campaign_id, shard, seq, &row.contact),
                    "re-queueing a staged contact",
                )
                .await?;
            }
            return Ok(StageOutcome::Duplicate);
        }
        self.exec(
            &self.st.add_shard,
            (&row.campaign_id, row.shard),
            "recording a shard",
        )
        .await?;
        self.exec(&self.st.stage, &row, "staging a contact").await?;
        if item.exclusion.is_some() {
            return Ok(StageOutcome::Excluded);
        }
        self.exec(
            &self.st.add_pending,
            (&row.campaign_id, row.shard, row.seq, &row.contact),
            "queueing a contact",
        )
        .await?;
        Ok(StageOutcome::Staged)
    }

    pub(super) async fn add_pending(&self, record: &DispatchRecord) -> StoreResult<()> {
        self.exec(
            &self.st.add_pending,
            (
                &record.campaign_id,
                record.shard as i32,
                record.seq as i64,
                record.contact.row_str(),
            ),
            "re-queueing a contact",
        )
        .await
        .map(drop)
    }

    pub(super) async fn index_timer(&self, campaign: &str, entry: &TimerEntry) -> StoreResult<()> {
        let ttl = (entry.due - Utc::now()).num_seconds().max(0) + TIMER_GRACE_SECS;
        self.exec(
            &self.st.put_timer,
            (
                campaign,
                entry.shard as i32,
                entry.due,
                entry.contact.row_str(),
                entry.step.as_str(),
                i32::try_from(ttl).unwrap_or(i32::MAX),
            ),
            "indexing a journey timer",
        )
        .await
        .map(drop)
    }

    pub(super) async fn unindex_timer(
        &self,
        campaign: &str,
        entry: &TimerEntry,
    ) -> StoreResult<()> {
        self.exec(
            &self.st.delete_timer,
            (
                campaign,
                entry.shard as i32,
                entry.due,
                entry.contact.row_str(),
                entry.step.as_str(),
            ),
            "removing a fired timer",
        )
        .await
        .map(drop)
    }

    pub(super) async fn remove_pending(&self, record: &DispatchRecord) -> StoreResult<()> {
        self.exec(
            &self.st.remove_pending,
            (&record.campaign_id, record.shard as i32, record.seq as i64),
            "removing a pending entry",
        )
        .await
        .map(drop)
    }

    pub(super) async fn index_claim(
        &self,
        record: &DispatchRecord,
        owner: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.exec(
            &self.st.add_claim,
            (
                &record.campaign_id,
                record.shard as i32,
                owner,
                record.contact.row_str(),
                at,
            ),
            "indexing a claim",
        )
        .await
        .map(drop)
    }

    pub(super) async fn unindex_claim(
        &self,
        campaign: &str,
        shard: u32,
        owner: &str,
        contact: &ContactKey,
    ) -> StoreResult<()> {
        self.exec(
            &self.st.drop_claim,
            (campaign, shard as i32, owner, contact.row_str()),
            "removing a claim from the index",
        )
        .await
        .map(drop)
    }

    /// The index entry goes once the row left `claimed` (`old` is the row
    /// before the write that won).
    pub(super) async fn after_unclaim(
        &self,
        old: &DispatchRecord,
        new: &DispatchRecord,
    ) -> StoreResult<()> {
        match old.owner.as_deref() {
            Some(owner)
                if old.state == DispatchState::Claimed && new.state != DispatchState::Claimed =>
            {
                self.unindex_claim(&old.campaign_id, old.shard, owner, &old.contact)
                    .await
            }
            _ => Ok(()),
        }
    }

    pub(super) async fn get_contact_row(
        &self,
        contact: &ContactKey,
    ) -> StoreResult<Option<ContactRow>> {
        let rows: Vec<ContactRow> = self
            .page(
                &self.st.get_contact,
                (contact.as_str(),),
                1,
                "reading a contact",
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Compare-and-set of the contact's engagement from `from` to `to`.
    pub(super) async fn engage(
        &self,
        contact: &ContactKey,
        from: Option<&str>,
        to: &str,
    ) -> StoreResult<bool> {
        let reply = self
            .conditional(&self.st.engage, (to, contact.as_str(), from))
            .await;
        match reply {
            LwtReply::Applied => Ok(true),
            LwtReply::NotApplied => Ok(false),
            LwtReply::Failed(message) => Err(StoreError::Unavailable(message)),
            LwtReply::Uncertain(_) => {
                // The engagement carries no revision: an uncertain write won
                // if the contact is now engaged to `to`.
                let row = self.serial_contact(contact).await?;
                Ok(row.and_then(|c| c.engaged_campaign).as_deref() == Some(to))
            }
        }
    }

    /// Takes (or confirms) the contact's engagement for the claiming
    /// campaign with conditional writes. `Ok(None)`: this campaign holds it;
    /// `Ok(Some(other))`: another campaign does.
    pub(super) async fn take_engagement(
        &self,
        req: &ClaimRequest,
        mut expected: Option<String>,
    ) -> StoreResult<Option<String>> {
        for _ in 0..CAS_ATTEMPTS {
            if self
                .engage(&req.contact, expected.as_deref(), &req.campaign_id)
                .await?
            {
                return Ok(None);
            }
            // Not applied: look at the current holder at LOCAL_SERIAL (it
            // sees every committed conditional write).
            let current = self
                .serial_contact(&req.contact)
                .await?
                .and_then(|c| c.engaged_campaign);
            match current {
                Some(c) if c == req.campaign_id => expected = Some(c),
                Some(c) if req.replace_engagement.as_deref() == Some(c.as_str()) => {
                    expected = Some(c)
                }
                Some(c) => return Ok(Some(c)),
                None => expected = None,
            }
        }
        Err(StoreError::Unavailable(format!(
            "{}: the engagement lost {CAS_ATTEMPTS} conditional writes in a row",
            req.contact
        )))
    }

    pub(super) async fn serial_contact(
        &self,
        contact: &ContactKey,
    ) -> StoreResult<Option<ContactRow>> {
        let mut st = self.st.get_contact.clone();
        st.set_consistency(Consistency::LocalSerial);
        let rows: Vec<ContactRow> = self
            .page(&st, (contact.as_str(),), 1, "reading a contact back")
            .await?;
        Ok(rows.into_iter().next())
    }
}
