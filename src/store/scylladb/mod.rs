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

mod campaigns;
mod claims;
mod connect;
mod contacts;
mod inbound;
mod journey;
mod leases;
pub mod lwt;
mod portfolio;
mod queue;
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
use crate::domain::{ContactKey, DispatchState, Edge, ExclusionReason, ObservedState, OptOutScope};

/// How often a journey write is retried after losing a race to another
/// writer before the conflict is reported.
const CAS_ATTEMPTS: usize = 8;

/// How long a timer entry outlives its due time (its TTL beyond it).
const TIMER_GRACE_SECS: i64 = 30 * 86_400;

/// Concurrent requests of one staging batch or one bucket sweep.
const FAN_OUT: usize = 64;

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

#[async_trait]
impl Store for ScyllaStore {
    async fn ping(&self) -> StoreResult<()> {
        self.exec(&self.st.ping, ("\0ping",), "ping")
            .await
            .map(drop)
    }

    async fn put_campaign(&self, record: &CampaignRecord) -> StoreResult<()> {
        campaigns::put_campaign(self, record).await
    }

    async fn get_campaign(&self, id: &str) -> StoreResult<Option<CampaignRecord>> {
        campaigns::get_campaign(self, id).await
    }

    async fn park_reply(&self, reply: &ParkedReply) -> StoreResult<()> {
        inbound::park_reply(self, reply).await
    }

    async fn parked_replies(&self, limit: usize) -> StoreResult<Vec<ParkedReply>> {
        inbound::parked_replies(self, limit).await
    }

    async fn take_parked_reply(&self, message_id: &str) -> StoreResult<bool> {
        inbound::take_parked_reply(self, message_id).await
    }

    async fn claimed(&self, campaign: &str, shard: u32) -> StoreResult<Vec<ClaimEntry>> {
        claims::claimed(self, campaign, shard).await
    }

    async fn settle_claim(
        &self,
        campaign: &str,
        shard: u32,
        entry: &ClaimEntry,
        message: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        claims::settle_claim(self, campaign, shard, entry, message, at).await
    }

    async fn take_send_slot(
        &self,
        scope: &str,
        contact: &ContactKey,
        send: &str,
        cap: crate::domain::FrequencyCap,
        now: DateTime<Utc>,
    ) -> StoreResult<crate::domain::SlotTake> {
        portfolio::take_send_slot(self, scope, contact, send, cap, now).await
    }

    async fn count_recipient(
        &self,
        contact: &ContactKey,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<RecipientCount> {
        portfolio::count_recipient(self, contact, now, limit).await
    }

    async fn renew_lease(&self, lease: &Lease) -> StoreResult<()> {
        leases::renew_lease(self, lease).await
    }

    async fn release_lease(&self, owner: &str) -> StoreResult<()> {
        leases::release_lease(self, owner).await
    }

    async fn leases(&self) -> StoreResult<Vec<Lease>> {
        leases::leases(self).await
    }

    async fn marker(&self, name: &str) -> StoreResult<bool> {
        leases::marker(self, name).await
    }

    async fn set_marker(&self, name: &str) -> StoreResult<()> {
        leases::set_marker(self, name).await
    }

    async fn learned(&self, kind: &str) -> StoreResult<Vec<(String, String)>> {
        leases::learned(self, kind).await
    }

    async fn set_learned(&self, kind: &str, key: &str, value: Option<&str>) -> StoreResult<()> {
        leases::set_learned(self, kind, key, value).await
    }

    async fn campaign_halt(&self, id: &str) -> StoreResult<Option<CampaignHalt>> {
        campaigns::campaign_halt(self, id).await
    }

    async fn set_campaign_halt(&self, id: &str, halt: Option<&CampaignHalt>) -> StoreResult<()> {
        campaigns::set_campaign_halt(self, id, halt).await
    }

    async fn list_campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        campaigns::list_campaigns(self).await
    }

    async fn set_observed_state(
        &self,
        id: &str,
        state: ObservedState,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        campaigns::set_observed_state(self, id, state, at).await
    }

    async fn delete_campaign(&self, id: &str) -> StoreResult<()> {
        campaigns::delete_campaign(self, id).await
    }

    async fn campaign_shards(&self, id: &str) -> StoreResult<Vec<u32>> {
        campaigns::campaign_shards(self, id).await
    }

    async fn stage_batch(&self, items: &[StageRequest]) -> StoreResult<Vec<StageOutcome>> {
        queue::stage_batch(self, items).await
    }

    async fn get_dispatch(
        &self,
        campaign: &str,
        contact: &ContactKey,
    ) -> StoreResult<Option<DispatchRecord>> {
        queue::get_dispatch(self, campaign, contact).await
    }

    async fn due_timers(
        &self,
        campaign: &str,
        shard: u32,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<TimerEntry>> {
        queue::due_timers(self, campaign, shard, until, limit).await
    }

    async fn fire_timer(
        &self,
        campaign: &str,
        entry: &TimerEntry,
        edges: &[Edge],
        now: DateTime<Utc>,
        force: bool,
    ) -> StoreResult<Option<DispatchState>> {
        queue::fire_timer(self, campaign, entry, edges, now, force).await
    }

    async fn scan_pending(
        &self,
        campaign: &str,
        shard: u32,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<PendingEntry>> {
        queue::scan_pending(self, campaign, shard, after, limit).await
    }

    async fn scan_dispatches(
        &self,
        campaign: &str,
        after: Option<&ContactKey>,
        limit: usize,
    ) -> StoreResult<Vec<DispatchRecord>> {
        queue::scan_dispatches(self, campaign, after, limit).await
    }

    async fn load_cursor(&self, campaign: &str, shard: u32) -> StoreResult<Option<u64>> {
        queue::load_cursor(self, campaign, shard).await
    }

    async fn save_cursor(&self, campaign: &str, shard: u32, seq: u64) -> StoreResult<()> {
        queue::save_cursor(self, campaign, shard, seq).await
    }

    async fn claim(&self, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        claims::claim(self, req).await
    }

    async fn record_outcome(
        &self,
        campaign: &str,
        contact: &ContactKey,
        outcome: &Outcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        claims::record_outcome(self, campaign, contact, outcome, at).await
    }

    async fn exclude(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        claims::exclude(self, campaign, contact, reason, at).await
    }

    async fn stop_journey(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<JourneyStop>> {
        claims::stop_journey(self, campaign, contact, reason, at).await
    }

    async fn record_conversion(
        &self,
        campaign: &str,
        contact: &ContactKey,
        conversion: &crate::domain::Conversion,
        stop: Option<&ExclusionReason>,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<ConversionApplied>> {
        claims::record_conversion(self, campaign, contact, conversion, stop, at).await
    }

    async fn reached(&self, contact: &ContactKey) -> StoreResult<Vec<crate::domain::Reach>> {
        claims::reached(self, contact).await
    }

    async fn requeue(
        &self,
        campaign: &str,
        contact: &ContactKey,
        from: &Requeue,
    ) -> StoreResult<bool> {
        claims::requeue(self, campaign, contact, from).await
    }

    async fn get_contact(&self, contact: &ContactKey) -> StoreResult<Option<ContactRecord>> {
        contacts::get_contact(self, contact).await
    }

    async fn set_opt_out(
        &self,
        contact: &ContactKey,
        scope: OptOutScope,
        opted_out: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        contacts::set_opt_out(self, contact, scope, opted_out, at).await
    }

    async fn lookup_wamid(&self, wamid: &str) -> StoreResult<Option<WamidEntry>> {
        inbound::lookup_wamid(self, wamid).await
    }

    async fn apply_status(
        &self,
        campaign: &str,
        contact: &ContactKey,
        update: &StatusUpdate,
    ) -> StoreResult<StatusApplied> {
        inbound::apply_status(self, campaign, contact, update).await
    }

    async fn park_status(&self, wamid: &str, update: &StatusUpdate) -> StoreResult<()> {
        inbound::park_status(self, wamid, update).await
    }

    async fn mark_undeliverable(&self, contact: &ContactKey, at: DateTime<Utc>) -> StoreResult<()> {
        contacts::mark_undeliverable(self, contact, at).await
    }

    async fn link_contact(&self, contact: &ContactKey, other: &ContactKey) -> StoreResult<()> {
        contacts::link_contact(self, &contact.recipient(), &other.recipient()).await
    }
}
