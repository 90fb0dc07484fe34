//! Latency of every store operation, whatever the backend:
//! `wadispatch_store_operation_duration_seconds{op}`.

use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;
use crate::domain::{ContactKey, DispatchState, Edge, ExclusionReason, ObservedState, OptOutScope};

/// Wraps a backend and observes each call's duration under its method name.
pub struct Timed<S>(pub S);

async fn time<T>(op: &'static str, f: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    crate::metrics::store_op(op, started.elapsed().as_secs_f64());
    out
}

#[async_trait]
impl<S: Store> Store for Timed<S> {
    async fn ping(&self) -> StoreResult<()> {
        time("ping", self.0.ping()).await
    }
    async fn put_campaign(&self, record: &CampaignRecord) -> StoreResult<()> {
        time("put_campaign", self.0.put_campaign(record)).await
    }
    async fn claimed(&self, campaign: &str, shard: u32) -> StoreResult<Vec<ClaimEntry>> {
        time("claimed", self.0.claimed(campaign, shard)).await
    }
    async fn settle_claim(
        &self,
        campaign: &str,
        shard: u32,
        entry: &ClaimEntry,
        message: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        time(
            "settle_claim",
            self.0.settle_claim(campaign, shard, entry, message, at),
        )
        .await
    }
    async fn count_recipient(
        &self,
        contact: &ContactKey,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<RecipientCount> {
        time(
            "count_recipient",
            self.0.count_recipient(contact, now, limit),
        )
        .await
    }
    async fn take_send_slot(
        &self,
        scope: &str,
        contact: &ContactKey,
        send: &str,
        cap: crate::domain::FrequencyCap,
        now: DateTime<Utc>,
    ) -> StoreResult<crate::domain::SlotTake> {
        time(
            "take_send_slot",
            self.0.take_send_slot(scope, contact, send, cap, now),
        )
        .await
    }
    async fn renew_lease(&self, lease: &Lease) -> StoreResult<()> {
        time("renew_lease", self.0.renew_lease(lease)).await
    }
    async fn release_lease(&self, owner: &str) -> StoreResult<()> {
        time("release_lease", self.0.release_lease(owner)).await
    }
    async fn leases(&self) -> StoreResult<Vec<Lease>> {
        time("leases", self.0.leases()).await
    }
    async fn marker(&self, name: &str) -> StoreResult<bool> {
        time("marker", self.0.marker(name)).await
    }
    async fn set_marker(&self, name: &str) -> StoreResult<()> {
        time("set_marker", self.0.set_marker(name)).await
    }
    async fn learned(&self, kind: &str) -> StoreResult<Vec<(String, String)>> {
        time("learned", self.0.learned(kind)).await
    }
    async fn set_learned(&self, kind: &str, key: &str, value: Option<&str>) -> StoreResult<()> {
        time("set_learned", self.0.set_learned(kind, key, value)).await
    }
    async fn park_reply(&self, reply: &ParkedReply) -> StoreResult<()> {
        time("park_reply", self.0.park_reply(reply)).await
    }
    async fn parked_replies(&self, limit: usize) -> StoreResult<Vec<ParkedReply>> {
        time("parked_replies", self.0.parked_replies(limit)).await
    }
    async fn take_parked_reply(&self, message_id: &str) -> StoreResult<bool> {
        time("take_parked_reply", self.0.take_parked_reply(message_id)).await
    }
    async fn get_campaign(&self, id: &str) -> StoreResult<Option<CampaignRecord>> {
        time("get_campaign", self.0.get_campaign(id)).await
    }
    async fn campaign_halt(&self, id: &str) -> StoreResult<Option<CampaignHalt>> {
        time("campaign_halt", self.0.campaign_halt(id)).await
    }
    async fn set_campaign_halt(&self, id: &str, halt: Option<&CampaignHalt>) -> StoreResult<()> {
        time("set_campaign_halt", self.0.set_campaign_halt(id, halt)).await
    }
    async fn list_campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        time("list_campaigns", self.0.list_campaigns()).await
    }
    async fn set_observed_state(
        &self,
        id: &str,
        state: ObservedState,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        time(
            "set_observed_state",
            self.0.set_observed_state(id, state, at),
        )
        .await
    }
    async fn delete_campaign(&self, id: &str) -> StoreResult<()> {
        time("delete_campaign", self.0.delete_campaign(id)).await
    }
    async fn campaign_shards(&self, id: &str) -> StoreResult<Vec<u32>> {
        time("campaign_shards", self.0.campaign_shards(id)).await
    }
    async fn stage_batch(&self, items: &[StageRequest]) -> StoreResult<Vec<StageOutcome>> {
        time("stage_batch", self.0.stage_batch(items)).await
    }
    async fn get_dispatch(
        &self,
        campaign: &str,
        contact: &ContactKey,
    ) -> StoreResult<Option<DispatchRecord>> {
        time("get_dispatch", self.0.get_dispatch(campaign, contact)).await
    }
    async fn due_timers(
        &self,
        campaign: &str,
        shard: u32,
        until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<TimerEntry>> {
        time(
            "due_timers",
            self.0.due_timers(campaign, shard, until, limit),
        )
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
        time(
            "fire_timer",
            self.0.fire_timer(campaign, entry, edges, now, force),
        )
        .await
    }
    async fn scan_pending(
        &self,
        campaign: &str,
        shard: u32,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<PendingEntry>> {
        time(
            "scan_pending",
            self.0.scan_pending(campaign, shard, after, limit),
        )
        .await
    }
    async fn scan_dispatches(
        &self,
        campaign: &str,
        after: Option<&ContactKey>,
        limit: usize,
    ) -> StoreResult<Vec<DispatchRecord>> {
        time(
            "scan_dispatches",
            self.0.scan_dispatches(campaign, after, limit),
        )
        .await
    }
    async fn tally(&self, campaign: &str) -> StoreResult<Option<Vec<(Counter, f64)>>> {
        time("tally", self.0.tally(campaign)).await
    }
    async fn load_cursor(&self, campaign: &str, shard: u32) -> StoreResult<Option<u64>> {
        time("load_cursor", self.0.load_cursor(campaign, shard)).await
    }
    async fn save_cursor(&self, campaign: &str, shard: u32, seq: u64) -> StoreResult<()> {
        time("save_cursor", self.0.save_cursor(campaign, shard, seq)).await
    }
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        time("claim", self.0.claim(request)).await
    }
    async fn record_outcome(
        &self,
        campaign: &str,
        contact: &ContactKey,
        outcome: &Outcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        time(
            "record_outcome",
            self.0.record_outcome(campaign, contact, outcome, at),
        )
        .await
    }
    async fn exclude(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<String>> {
        time("exclude", self.0.exclude(campaign, contact, reason, at)).await
    }
    async fn stop_journey(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<JourneyStop>> {
        time(
            "stop_journey",
            self.0.stop_journey(campaign, contact, reason, at),
        )
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
        time(
            "record_conversion",
            self.0
                .record_conversion(campaign, contact, conversion, stop, at),
        )
        .await
    }
    async fn reached(&self, contact: &ContactKey) -> StoreResult<Vec<crate::domain::Reach>> {
        time("reached", self.0.reached(contact)).await
    }
    async fn requeue(
        &self,
        campaign: &str,
        contact: &ContactKey,
        from: &Requeue,
    ) -> StoreResult<bool> {
        time("requeue", self.0.requeue(campaign, contact, from)).await
    }
    async fn get_contact(&self, contact: &ContactKey) -> StoreResult<Option<ContactRecord>> {
        time("get_contact", self.0.get_contact(contact)).await
    }
    async fn set_opt_out(
        &self,
        contact: &ContactKey,
        scope: OptOutScope,
        opted_out: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        time(
            "set_opt_out",
            self.0.set_opt_out(contact, scope, opted_out, at),
        )
        .await
    }
    async fn lookup_wamid(&self, wamid: &str) -> StoreResult<Option<WamidEntry>> {
        time("lookup_wamid", self.0.lookup_wamid(wamid)).await
    }
    async fn apply_status(
        &self,
        campaign: &str,
        contact: &ContactKey,
        update: &StatusUpdate,
    ) -> StoreResult<StatusApplied> {
        time(
            "apply_status",
            self.0.apply_status(campaign, contact, update),
        )
        .await
    }
    async fn park_status(&self, wamid: &str, update: &StatusUpdate) -> StoreResult<()> {
        time("park_status", self.0.park_status(wamid, update)).await
    }
    async fn mark_undeliverable(&self, contact: &ContactKey, at: DateTime<Utc>) -> StoreResult<()> {
        time("mark_undeliverable", self.0.mark_undeliverable(contact, at)).await
    }
    async fn link_contact(&self, contact: &ContactKey, other: &ContactKey) -> StoreResult<()> {
        time("link_contact", self.0.link_contact(contact, other)).await
    }
}
