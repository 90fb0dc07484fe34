//! Mapping between the store's records and ScyllaDB rows.

use chrono::{DateTime, Utc};
use scylla::value::MaybeUnset;
use scylla::{DeserializeRow, SerializeRow};
use serde::{Deserialize, Serialize};

use crate::domain::{ContactKey, Conversion, DispatchState, Edge, FrozenParams, StepParams, Wait};
use crate::store::{DispatchRecord, StageRequest, StageTimes, StepRecord, StoreError, StoreResult};

/// Dispatch partitions per campaign. Part of the schema: changing it moves
/// every row, so it is fixed.
pub const BUCKETS: i32 = 256;

/// The bucket of a contact: FNV-1a over its key, stable across versions and
/// platforms (it addresses stored rows).
pub fn bucket(contact: &ContactKey) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in contact.as_str().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % BUCKETS as u32) as i32
}

/// The columns every dispatch SELECT returns, in this order.
pub const DISPATCH_COLUMNS: &str = "campaign_id, contact, shard, seq, params, tags, timezone, \
     send_after, staged_at, stage_exclusion, rev, state, reason, wamid, attempts, error_code, \
     error_class, error_message, deferred_until, owner, claimed_at, accepted_at, sent_at, \
     delivered_at, read_at, replied_at, failed_at, excluded_at, staged_journey, journey, sender, \
     pricing, name";

/// `staged_journey`: what staging knows of a multi-step journey.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct StagedJourneyCell {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    next: Vec<Edge>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    later: Vec<StepParams>,
}

/// `journey`: the row's place in its journey once it left the first step
/// or has a timer (null before).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct JourneyCell {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    step: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    next: Vec<Edge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wait: Option<Wait>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    history: Vec<StepRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stopped: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    conversion: Option<Conversion>,
}

impl JourneyCell {
    /// The cell of `record`, or none while it is at its first step without
    /// a timer (its edges are then the staged ones: only a move to another
    /// step, or a stop, changes them).
    fn of(record: &DispatchRecord) -> Option<String> {
        let moved = !record.step.is_empty()
            || record.wait.is_some()
            || !record.history.is_empty()
            || record.stopped.is_some()
            || record.conversion.is_some();
        moved.then(|| {
            serde_json::to_string(&JourneyCell {
                step: record.step.clone(),
                next: record.next.clone(),
                wait: record.wait.clone(),
                history: record.history.clone(),
                stopped: record.stopped.clone(),
                conversion: record.conversion.clone(),
            })
            .unwrap_or_default()
        })
    }
}

/// One row of `dispatches` as read.
#[derive(Debug, Clone, PartialEq, DeserializeRow)]
pub struct DispatchRow {
    pub campaign_id: String,
    pub contact: String,
    pub shard: Option<i32>,
    pub seq: Option<i64>,
    pub params: Option<String>,
    pub tags: Option<Vec<String>>,
    pub timezone: Option<String>,
    pub send_after: Option<DateTime<Utc>>,
    pub staged_at: Option<DateTime<Utc>>,
    pub stage_exclusion: Option<String>,
    pub rev: Option<i64>,
    pub state: Option<String>,
    pub reason: Option<String>,
    pub wamid: Option<String>,
    pub attempts: Option<i32>,
    pub error_code: Option<i64>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub deferred_until: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub replied_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub excluded_at: Option<DateTime<Utc>>,
    pub staged_journey: Option<String>,
    pub journey: Option<String>,
    pub sender: Option<String>,
    pub pricing: Option<String>,
    pub name: Option<String>,
}

impl DispatchRow {
    /// The record, and the revision its conditional writes compare against.
    /// A row without `staged_at` is a fragment (journey cells of a row whose
    /// staging cells were deleted) and is reported as absent.
    pub fn into_record(self) -> StoreResult<Option<(DispatchRecord, Option<i64>)>> {
        let key = || format!("dispatches/{}/{}", self.campaign_id, self.contact);
        if self.staged_at.is_none() {
            return Ok(None);
        }
        let corrupt = |message: String| StoreError::Corrupt {
            key: key(),
            message,
        };
        let params: FrozenParams = match &self.params {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| corrupt(format!("params are not valid JSON: {e}")))?,
            None => FrozenParams::default(),
        };
        let (state, reason, excluded_at) = match (&self.state, &self.stage_exclusion) {
            (Some(s), _) => (
                s.parse::<DispatchState>()
                    .map_err(|_| corrupt(format!("unknown state {s:?}")))?,
                self.reason.clone(),
                self.excluded_at,
            ),
            (None, Some(reason)) => (
                DispatchState::Excluded,
                Some(reason.clone()),
                self.staged_at,
            ),
            (None, None) => (DispatchState::Pending, None, None),
        };
        let staged: StagedJourneyCell = match &self.staged_journey {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| corrupt(format!("staged_journey is not valid JSON: {e}")))?,
            None => StagedJourneyCell::default(),
        };
        let journey: JourneyCell = match &self.journey {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| corrupt(format!("journey is not valid JSON: {e}")))?,
            None => JourneyCell {
                next: staged.next,
                ..JourneyCell::default()
            },
        };
        let pricing = match &self.pricing {
            Some(json) => Some(
                serde_json::from_str(json)
                    .map_err(|e| corrupt(format!("pricing is not valid JSON: {e}")))?,
            ),
            None => None,
        };
        let shard = u32::try_from(self.shard.unwrap_or_default())
            .map_err(|_| corrupt("negative shard".into()))?;
        let seq = u64::try_from(self.seq.unwrap_or_default())
            .map_err(|_| corrupt("negative seq".into()))?;
        let record = DispatchRecord {
            campaign_id: self.campaign_id,
            contact: ContactKey::from_row(self.contact),
            shard,
            seq,
            state,
            reason,
            wamid: self.wamid,
            attempts: self.attempts.unwrap_or_default().max(0) as u32,
            error_code: self.error_code,
            error_class: self.error_class,
            error_message: self.error_message,
            params,
            tags: self.tags.unwrap_or_default(),
            name: self.name,
            timezone: self.timezone,
            send_after: self.send_after,
            deferred_until: self.deferred_until,
            owner: self.owner,
            times: StageTimes {
                staged: self.staged_at,
                claimed: self.claimed_at,
                accepted: self.accepted_at,
                sent: self.sent_at,
                delivered: self.delivered_at,
                read: self.read_at,
                replied: self.replied_at,
                failed: self.failed_at,
                excluded: excluded_at,
            },
            step: journey.step,
            next: journey.next,
            wait: journey.wait,
            history: journey.history,
            later: staged.later,
            stopped: journey.stopped,
            conversion: journey.conversion,
            sender: self.sender,
            pricing,
        };
        Ok(Some((record, self.rev)))
    }
}

/// The staging cells, written once by a plain INSERT.
#[derive(Debug, Clone, PartialEq, SerializeRow)]
pub struct StageRow {
    pub campaign_id: String,
    pub bucket: i32,
    pub contact: String,
    pub shard: i32,
    pub seq: i64,
    pub params: String,
    pub tags: Vec<String>,
    pub timezone: Option<String>,
    pub send_after: Option<DateTime<Utc>>,
    pub staged_at: DateTime<Utc>,
    pub stage_exclusion: Option<String>,
    pub staged_journey: Option<String>,
    pub name: Option<String>,
}

impl StageRow {
    pub fn new(req: &StageRequest) -> StoreResult<StageRow> {
        Ok(StageRow {
            campaign_id: req.campaign_id.clone(),
            bucket: bucket(&req.contact),
            contact: req.contact.row_str().to_owned(),
            shard: i32::try_from(req.shard).map_err(|_| StoreError::Corrupt {
                key: format!("{}/{}", req.campaign_id, req.contact),
                message: format!("shard {} does not fit a CQL int", req.shard),
            })?,
            seq: i64::try_from(req.seq).map_err(|_| StoreError::Corrupt {
                key: format!("{}/{}", req.campaign_id, req.contact),
                message: format!("seq {} does not fit a CQL bigint", req.seq),
            })?,
            params: serde_json::to_string(&req.params)
                .map_err(|e| StoreError::io("cannot encode params", e))?,
            tags: req.tags.clone(),
            timezone: req.timezone.clone(),
            send_after: req.send_after,
            staged_at: req.staged_at,
            stage_exclusion: req.exclusion.as_ref().map(|r| r.to_string()),
            staged_journey: if req.journey.next.is_empty() && req.journey.later.is_empty() {
                None
            } else {
                Some(
                    serde_json::to_string(&StagedJourneyCell {
                        next: req.journey.next.clone(),
                        later: req.journey.later.clone(),
                    })
                    .map_err(|e| StoreError::io("cannot encode a journey", e))?,
                )
            },
            name: req.name.clone(),
        })
    }
}

/// Bound values of the journey write (`UPDATE dispatches SET <journey cells>
/// WHERE <key> IF rev = ?`). Cells that did not change are left unset, so a
/// transition writes only what it changes and never a needless tombstone.
/// Bound by position: the statement names `rev` twice (new value and
/// condition).
#[derive(Debug, Clone, SerializeRow)]
#[scylla(flavor = "enforce_order", skip_name_checks)]
pub struct JourneyWrite {
    pub new_rev: i64,
    pub state: MaybeUnset<String>,
    pub reason: MaybeUnset<Option<String>>,
    pub wamid: MaybeUnset<Option<String>>,
    pub attempts: MaybeUnset<i32>,
    pub error_code: MaybeUnset<Option<i64>>,
    pub error_class: MaybeUnset<Option<String>>,
    pub error_message: MaybeUnset<Option<String>>,
    pub deferred_until: MaybeUnset<Option<DateTime<Utc>>>,
    pub owner: MaybeUnset<Option<String>>,
    pub claimed_at: MaybeUnset<Option<DateTime<Utc>>>,
    pub accepted_at: MaybeUnset<Option<DateTime<Utc>>>,
    pub sent_at: MaybeUnset<Option<DateTime<Utc>>>,
    pub delivered_at: MaybeUnset<Option<DateTime<Utc>>>,
    pub read_at: MaybeUnset<Option<DateTime<Utc>>>,
    pub replied_at: MaybeUnset<Option<DateTime<Utc>>>,
    pub failed_at: MaybeUnset<Option<DateTime<Utc>>>,
    pub excluded_at: MaybeUnset<Option<DateTime<Utc>>>,
    pub journey: MaybeUnset<Option<String>>,
    pub sender: MaybeUnset<Option<String>>,
    pub pricing: MaybeUnset<Option<String>>,
    pub campaign_id: String,
    pub bucket: i32,
    pub contact: String,
    pub expected_rev: Option<i64>,
}

/// The journey statement matching [`JourneyWrite`]'s field order.
pub const JOURNEY_UPDATE: &str = "UPDATE dispatches SET rev = ?, state = ?, reason = ?, \
     wamid = ?, attempts = ?, error_code = ?, error_class = ?, error_message = ?, \
     deferred_until = ?, owner = ?, claimed_at = ?, accepted_at = ?, sent_at = ?, \
     delivered_at = ?, read_at = ?, replied_at = ?, failed_at = ?, excluded_at = ?, \
     journey = ?, sender = ?, pricing = ? WHERE campaign_id = ? AND bucket = ? AND contact = ? IF rev = ?";

/// `pricing`: the current step's pricing as JSON (null until a status
/// carried it).
fn pricing_cell(record: &DispatchRecord) -> Option<String> {
    record
        .pricing
        .as_ref()
        .and_then(|p| serde_json::to_string(p).ok())
}

fn changed<T: Clone + PartialEq>(old: &T, new: &T) -> MaybeUnset<T> {
    if old == new {
        MaybeUnset::Unset
    } else {
        MaybeUnset::Set(new.clone())
    }
}

impl JourneyWrite {
    /// The write taking `old` (read at revision `expected_rev`) to `new`.
    /// The state is always written: a row staged pending has no state cell.
    pub fn between(
        old: &DispatchRecord,
        new: &DispatchRecord,
        expected_rev: Option<i64>,
        new_rev: i64,
    ) -> JourneyWrite {
        let (o, n) = (&old.times, &new.times);
        JourneyWrite {
            new_rev,
            state: MaybeUnset::Set(new.state.as_str().to_owned()),
            reason: changed(&old.reason, &new.reason),
            wamid: changed(&old.wamid, &new.wamid),
            attempts: changed(
                &(old.attempts.min(i32::MAX as u32) as i32),
                &(new.attempts.min(i32::MAX as u32) as i32),
            ),
            error_code: changed(&old.error_code, &new.error_code),
            error_class: changed(&old.error_class, &new.error_class),
            error_message: changed(&old.error_message, &new.error_message),
            deferred_until: changed(&old.deferred_until, &new.deferred_until),
            owner: changed(&old.owner, &new.owner),
            claimed_at: changed(&o.claimed, &n.claimed),
            accepted_at: changed(&o.accepted, &n.accepted),
            sent_at: changed(&o.sent, &n.sent),
            delivered_at: changed(&o.delivered, &n.delivered),
            read_at: changed(&o.read, &n.read),
            replied_at: changed(&o.replied, &n.replied),
            failed_at: changed(&o.failed, &n.failed),
            excluded_at: changed(&o.excluded, &n.excluded),
            journey: changed(&JourneyCell::of(old), &JourneyCell::of(new)),
            sender: changed(&old.sender, &new.sender),
            pricing: changed(&pricing_cell(old), &pricing_cell(new)),
            campaign_id: new.campaign_id.clone(),
            bucket: bucket(&new.contact),
            contact: new.contact.row_str().to_owned(),
            expected_rev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ExclusionReason;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, h, 0, 0).unwrap()
    }

    fn staged_row() -> DispatchRow {
        DispatchRow {
            campaign_id: "c1".into(),
            contact: "+5215512345678".into(),
            shard: Some(3),
            seq: Some(42),
            params: Some("{}".into()),
            tags: Some(vec!["vip".into()]),
            timezone: Some("America/Mexico_City".into()),
            send_after: None,
            staged_at: Some(t(9)),
            stage_exclusion: None,
            rev: None,
            state: None,
            reason: None,
            wamid: None,
            attempts: None,
            error_code: None,
            error_class: None,
            error_message: None,
            deferred_until: None,
            owner: None,
            claimed_at: None,
            accepted_at: None,
            sent_at: None,
            delivered_at: None,
            read_at: None,
            replied_at: None,
            failed_at: None,
            excluded_at: None,
            staged_journey: None,
            journey: None,
            sender: None,
            pricing: None,
            name: Some("Ana".into()),
        }
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        // Pinned values: a change here would orphan every stored row.
        assert_eq!(bucket(&ContactKey::raw("+5215512345678")), 82);
        assert_eq!(bucket(&ContactKey::raw("")), (0x811c_9dc5u32 % 256) as i32);
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let b = bucket(&ContactKey::raw(format!("+52155{i:08}")));
            assert!((0..BUCKETS).contains(&b));
            seen.insert(b);
        }
        assert_eq!(
            seen.len(),
            BUCKETS as usize,
            "10,000 contacts reach every bucket"
        );
    }

    #[test]
    fn a_staged_row_without_state_is_pending() {
        let (record, rev) = staged_row().into_record().unwrap().unwrap();
        assert_eq!(record.state, DispatchState::Pending);
        assert_eq!((record.shard, record.seq, rev), (3, 42, None));
        assert_eq!(record.tags, vec!["vip".to_string()]);
        assert_eq!(record.name.as_deref(), Some("Ana"));
        assert_eq!(record.times.staged, Some(t(9)));
    }

    #[test]
    fn a_stage_exclusion_reads_as_excluded_at_staging_time() {
        let mut row = staged_row();
        row.stage_exclusion = Some(ExclusionReason::OptedOut.to_string());
        let (record, _) = row.into_record().unwrap().unwrap();
        assert_eq!(record.state, DispatchState::Excluded);
        assert_eq!(record.reason.as_deref(), Some("opted_out"));
        assert_eq!(record.times.excluded, Some(t(9)));
    }

    #[test]
    fn journey_cells_override_staging() {
        let mut row = staged_row();
        row.state = Some("delivered".into());
        row.rev = Some(-5);
        row.wamid = Some("wamid.X".into());
        row.attempts = Some(1);
        row.delivered_at = Some(t(10));
        let (record, rev) = row.into_record().unwrap().unwrap();
        assert_eq!(record.state, DispatchState::Delivered);
        assert_eq!(rev, Some(-5));
        assert_eq!(record.wamid.as_deref(), Some("wamid.X"));
        assert_eq!(record.times.delivered, Some(t(10)));
    }

    #[test]
    fn fragments_and_corrupt_rows() {
        let mut fragment = staged_row();
        fragment.staged_at = None;
        assert!(fragment.into_record().unwrap().is_none());
        let mut bad = staged_row();
        bad.state = Some("teleported".into());
        assert!(matches!(bad.into_record(), Err(StoreError::Corrupt { .. })));
        let mut bad_json = staged_row();
        bad_json.params = Some("{".into());
        assert!(bad_json.into_record().is_err());
    }

    /// `Some(value)` for a cell the write sets, `None` for one it leaves.
    fn set<T: Clone>(cell: &MaybeUnset<T>) -> Option<T> {
        match cell {
            MaybeUnset::Set(v) => Some(v.clone()),
            MaybeUnset::Unset => None,
        }
    }

    #[test]
    fn a_claim_writes_only_what_changes() {
        let (old, _) = staged_row().into_record().unwrap().unwrap();
        let mut new = old.clone();
        new.state = DispatchState::Claimed;
        new.attempts = 1;
        new.owner = Some("i-1".into());
        new.times.claimed = Some(t(11));
        let w = JourneyWrite::between(&old, &new, None, 99);
        assert_eq!(set(&w.state), Some("claimed".into()));
        assert_eq!(set(&w.attempts), Some(1));
        assert_eq!(set(&w.owner), Some(Some("i-1".into())));
        assert_eq!(set(&w.claimed_at), Some(Some(t(11))));
        assert_eq!(set(&w.wamid), None);
        assert_eq!(set(&w.failed_at), None);
        assert_eq!((w.expected_rev, w.new_rev), (None, 99));
        assert_eq!(w.bucket, bucket(&old.contact));
    }

    #[test]
    fn clearing_a_cell_writes_null() {
        let (mut old, _) = staged_row().into_record().unwrap().unwrap();
        old.owner = Some("i-1".into());
        let mut new = old.clone();
        new.owner = None;
        let w = JourneyWrite::between(&old, &new, Some(1), 2);
        assert_eq!(set(&w.owner), Some(None));
    }

    #[test]
    fn stage_rows_keep_every_staging_field() {
        let req = StageRequest {
            campaign_id: "c1".into(),
            contact: ContactKey::raw("+5215512345678"),
            shard: 3,
            seq: 42,
            params: FrozenParams::default(),
            exclusion: Some(ExclusionReason::OptedOut),
            send_after: Some(t(12)),
            timezone: None,
            tags: vec!["a".into()],
            name: Some("Ana".into()),
            staged_at: t(9),
            journey: Default::default(),
        };
        let row = StageRow::new(&req).unwrap();
        assert_eq!(row.bucket, 82);
        assert_eq!((row.shard, row.seq), (3, 42));
        assert_eq!(row.name.as_deref(), Some("Ana"));
        assert_eq!(row.stage_exclusion.as_deref(), Some("opted_out"));
        assert_eq!(row.send_after, Some(t(12)));
        let too_big = StageRequest {
            seq: u64::MAX,
            ..req
        };
        assert!(StageRow::new(&too_big).is_err());
    }

    #[test]
    fn a_journey_lives_in_its_two_cells() {
        use crate::domain::{Edge, FrozenStep, On, StepParams, Wait};
        let next = vec![Edge {
            on: On::NoReply,
            delay_secs: 3_600,
            to: "nudge".into(),
        }];
        let later = vec![StepParams {
            step: "nudge".into(),
            content: FrozenStep::Text("hi".into()),
        }];
        let mut req = StageRequest {
            campaign_id: "c1".into(),
            contact: ContactKey::raw("+5215512345678"),
            shard: 0,
            seq: 1,
            params: FrozenParams::default(),
            exclusion: None,
            send_after: None,
            timezone: None,
            tags: Vec::new(),
            name: None,
            staged_at: t(9),
            journey: Default::default(),
        };
        assert_eq!(
            StageRow::new(&req).unwrap().staged_journey,
            None,
            "a one-step row"
        );
        req.journey.next = next.clone();
        req.journey.later = later.clone();
        let staged = StageRow::new(&req).unwrap().staged_journey;
        // Read back before any journey write: the staged edges.
        let row = DispatchRow {
            staged_journey: staged,
            ..staged_row()
        };
        let (old, _) = row.clone().into_record().unwrap().unwrap();
        assert_eq!((old.next.clone(), old.later.clone()), (next.clone(), later));
        assert_eq!(old.wait, None);
        // A timer is a journey write of its own cell, read back whole.
        let mut new = old.clone();
        new.wait = Some(Wait {
            step: "nudge".into(),
            due: t(11),
        });
        let write = JourneyWrite::between(&old, &new, Some(1), 2);
        let Some(Some(cell)) = set(&write.journey) else {
            panic!("the journey cell is written when the timer is set");
        };
        let (back, _) = DispatchRow {
            journey: Some(cell),
            ..row
        }
        .into_record()
        .unwrap()
        .unwrap();
        assert_eq!(back.wait, new.wait);
        assert_eq!(back.next, next);
        // Unchanged, it is not written at all.
        assert!(set(&JourneyWrite::between(&new, &new, Some(2), 3).journey).is_none());
    }

    #[test]
    fn the_sender_and_the_pricing_have_cells_of_their_own() {
        let (old, _) = staged_row().into_record().unwrap().unwrap();
        let mut new = old.clone();
        new.sender = Some("106540352242922".into());
        new.pricing = crate::domain::Pricing::from_status(
            Some("utility"),
            Some(false),
            Some("PMP"),
            Some("free_customer_service"),
        );
        let write = JourneyWrite::between(&old, &new, None, 1);
        let Some(Some(sender)) = set(&write.sender) else {
            panic!("the sender cell is written");
        };
        let Some(Some(pricing)) = set(&write.pricing) else {
            panic!("the pricing cell is written");
        };
        let (back, _) = DispatchRow {
            sender: Some(sender),
            pricing: Some(pricing),
            ..staged_row()
        }
        .into_record()
        .unwrap()
        .unwrap();
        assert_eq!(
            (back.sender, back.pricing),
            (new.sender.clone(), new.pricing.clone())
        );
        let same = JourneyWrite::between(&new, &new, Some(1), 2);
        assert!(set(&same.sender).is_none() && set(&same.pricing).is_none());
        let bad = DispatchRow {
            pricing: Some("{".into()),
            ..staged_row()
        };
        assert!(bad.into_record().is_err(), "an unreadable cell is reported");
    }
}
