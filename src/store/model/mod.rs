//! Rows of the logical tables (docs/ARCHITECTURE.md, "Store"), shared by
//! every backend.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod journey;
mod tally;
#[cfg(test)]
mod tests;

pub use journey::*;
pub use tally::*;

use crate::domain::{
    CampaignSpec, ContactKey, Conversion, DispatchState, Edge, ExclusionReason, FrozenParams,
    ObservedState, Pricing, StepParams, Wait,
};

/// `campaigns (id) → spec, observed_state, updated_at`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CampaignRecord {
    pub spec: CampaignSpec,
    pub observed_state: ObservedState,
    pub updated_at: DateTime<Utc>,
    /// Set the first time the campaign's observed state is `active`; a
    /// campaign that started can no longer be deleted by a tombstone.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
}

/// A reply whose `context.id` (the wamid it answers) was not indexed yet
/// when it arrived: the API answer carrying that wamid is still being
/// written. It waits here until the wamid is known or its wait ends
/// (docs/ARCHITECTURE.md, "Webhooks").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedReply {
    /// Meta's id of the inbound message (the key: a redelivery parks once).
    pub message_id: String,
    /// The wamid it answers.
    pub wamid: String,
    /// The inbound message as Meta sent it (JSON).
    pub message: String,
    pub parked_at: DateTime<Utc>,
}

/// A campaign stopped by a campaign-class error (a missing, paused or
/// disabled template: 132001, 132015, 132016). It survives restarts and
/// holds until a different spec arrives or an operator clears it
/// (docs/ARCHITECTURE.md, "Halts").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignHalt {
    /// Meta's error as the logs and `/campaigns` show it.
    pub reason: String,
    /// `CampaignSpec::digest` of the spec in force when it halted.
    pub spec: String,
    pub at: DateTime<Utc>,
}

/// An instance's lease (docs/ARCHITECTURE.md, "Leases"): while `until` is
/// ahead, the rows `owner` claimed are its own; once it passed (or the
/// lease is gone), the owners of their shards settle them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The claiming instance: `instance id/run`, unique per process run.
    pub owner: String,
    pub until: DateTime<Utc>,
}

/// A claimed row as the claim index lists it (per campaign and shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimEntry {
    pub contact: ContactKey,
    pub owner: String,
    pub claimed_at: DateTime<Utc>,
}

/// A recipient counted against the portfolio limit (unique recipients per
/// rolling 24 h, shared by every instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientCount {
    /// A new recipient of the window: it takes one of the limit's places.
    Counted,
    /// Messaged within the last 24 h already: it costs nothing more.
    Known,
    /// Every place is taken; the first one frees at `until`.
    Full { until: DateTime<Utc> },
}

/// One validated audience record, ready to stage.
#[derive(Debug, Clone, PartialEq)]
pub struct StageRequest {
    pub campaign_id: String,
    pub contact: ContactKey,
    /// Kafka partition of the audience record: the contact's shard
    /// (docs/ARCHITECTURE.md, "Data flow").
    pub shard: u32,
    /// Kafka offset of the audience record: orders the pending queue.
    pub seq: u64,
    pub params: FrozenParams,
    pub exclusion: Option<ExclusionReason>,
    pub send_after: Option<DateTime<Utc>>,
    pub timezone: Option<String>,
    pub tags: Vec<String>,
    /// The contact's display name from the audience record (for reports).
    pub name: Option<String>,
    pub staged_at: DateTime<Utc>,
    /// The journey's later steps for this contact (none for a one-step
    /// campaign).
    pub journey: StagedJourney,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageOutcome {
    /// New contact, now pending.
    Staged,
    /// New contact, recorded as excluded with its reason.
    Excluded,
    /// Already staged for this campaign; nothing changed.
    Duplicate,
}

pub use crate::domain::StageTimes;

/// `dispatches ((campaign_id, shard), contact)`: one contact's journey in one campaign.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DispatchRecord {
    pub campaign_id: String,
    pub contact: ContactKey,
    pub shard: u32,
    pub seq: u64,
    pub state: DispatchState,
    /// Exclusion reason (`missing_variable:coupon`, …) when excluded.
    pub reason: Option<String>,
    pub wamid: Option<String>,
    pub attempts: u32,
    pub error_code: Option<i64>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub params: FrozenParams,
    pub tags: Vec<String>,
    /// The contact's display name from the audience record (for reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub timezone: Option<String>,
    pub send_after: Option<DateTime<Utc>>,
    pub deferred_until: Option<DateTime<Utc>>,
    /// Instance that holds the claim (diagnostics for multi-instance runs).
    pub owner: Option<String>,
    pub times: StageTimes,
    /// The journey step the row is at; empty for the first
    /// (docs/ARCHITECTURE.md, "Journeys"). The fields above are that
    /// step's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step: String,
    /// The edges leaving the current step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<Edge>,
    /// The step due next and when: the row's timer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
    /// The steps the contact went through before the current one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StepRecord>,
    /// What the later steps send to this contact, frozen at staging.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub later: Vec<StepParams>,
    /// Why the journey stopped before its end (`cancelled:order_placed`):
    /// no later step follows, whatever happens to the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// The goal conversion credited to this journey (at most one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Conversion>,
    /// The sender (its config id) whose request Meta accepted for the
    /// current step: the business number the contact got the message from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Meta's pricing of the current step's message, from the first status
    /// that carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

impl DispatchRecord {
    pub fn from_stage(req: &StageRequest) -> Self {
        let mut times = StageTimes {
            staged: Some(req.staged_at),
            ..StageTimes::default()
        };
        let (state, reason) = match &req.exclusion {
            Some(reason) => {
                times.excluded = Some(req.staged_at);
                (DispatchState::Excluded, Some(reason.to_string()))
            }
            None => (DispatchState::Pending, None),
        };
        DispatchRecord {
            campaign_id: req.campaign_id.clone(),
            contact: req.contact.clone(),
            shard: req.shard,
            seq: req.seq,
            state,
            reason,
            wamid: None,
            attempts: 0,
            error_code: None,
            error_class: None,
            error_message: None,
            params: req.params.clone(),
            tags: req.tags.clone(),
            name: req.name.clone(),
            timezone: req.timezone.clone(),
            send_after: req.send_after,
            deferred_until: None,
            owner: None,
            times,
            step: String::new(),
            next: req.journey.next.clone(),
            wait: None,
            history: Vec::new(),
            later: req.journey.later.clone(),
            stopped: None,
            conversion: None,
            sender: None,
            pricing: None,
        }
    }

    /// Whether a claim may take this row at `now`: pending, or deferred and
    /// due (same rule on every backend).
    /// A pending row may carry a `deferred_until` too: the retry time of a
    /// send that provably never left (see [`Outcome::Retry`]).
    pub fn claimable(&self, now: DateTime<Utc>) -> bool {
        match self.state {
            DispatchState::Pending | DispatchState::Deferred => {
                self.deferred_until.is_none_or(|t| t <= now)
            }
            _ => false,
        }
    }

    /// Whether `req` may take this row: the step it was built for, and
    /// [`Self::claimable`] at its time.
    pub fn claimable_by(&self, req: &ClaimRequest) -> bool {
        self.step == req.step && self.claimable(req.now)
    }

    /// Applies an outcome to the row (same rules on every backend).
    ///
    /// An outcome settles a claim, so only a `claimed` row takes its state:
    /// a status webhook may have overtaken the API answer (a `sent`,
    /// `delivered`, `failed` or `deferred` already on the row), and a late
    /// answer or a recovery's `unknown` must never move a row back. Such a
    /// row keeps its state; an `accepted` answer still records the wamid and
    /// its time. `Excluded` applies to pending and deferred rows (the store
    /// checks that before calling).
    pub fn apply_outcome(&mut self, outcome: &Outcome, at: DateTime<Utc>) {
        let claimed = self.state == DispatchState::Claimed;
        match outcome {
            // A late answer to a row that moved on to a later step (its
            // failure came by webhook first and started the fallback)
            // belongs to no step the row is at: the new step has sent
            // nothing yet, and must not take the old message as its own.
            Outcome::Accepted { .. }
                if matches!(
                    self.state,
                    DispatchState::Pending | DispatchState::Deferred | DispatchState::Excluded
                ) => {}
            Outcome::Accepted {
                wamid,
                sender,
                held,
            } => {
                if claimed || self.state == DispatchState::Unknown {
                    self.state = DispatchState::Accepted;
                    self.deferred_until = None;
                    // Meta holds the message (quality assessment, marketing
                    // pacing): accepted, not flowing, until a status moves it.
                    self.reason = held.clone();
                }
                if self.wamid.is_none() || claimed {
                    self.wamid = Some(wamid.clone());
                    if sender.is_some() {
                        self.sender = sender.clone();
                    }
                }
                self.times.accepted.get_or_insert(at);
            }
            _ if !claimed && !matches!(outcome, Outcome::Excluded { .. }) => {}
            Outcome::Failed {
                code,
                class,
                message,
            } => {
                self.state = DispatchState::Failed;
                self.error_code = *code;
                self.error_class = Some(class.clone());
                self.error_message = Some(message.clone());
                self.times.failed = Some(at);
            }
            Outcome::Unknown { message } => {
                self.state = DispatchState::Unknown;
                self.error_message = Some(message.clone());
            }
            Outcome::Deferred { until, code } => {
                self.state = DispatchState::Deferred;
                self.deferred_until = Some(*until);
                self.error_code = *code;
                self.owner = None;
            }
            Outcome::Retry { code, not_before } => {
                // Back to the queue: the claim is released and the contact is
                // picked up again by the scan (its pending entry is re-added)
                // once `not_before` is past. The request never left, so the
                // claim does not count as an attempt: `attempts` counts the
                // requests that may have reached Meta.
                self.attempts = self.attempts.saturating_sub(1);
                self.state = DispatchState::Pending;
                self.error_code = *code;
                self.deferred_until = *not_before;
                self.owner = None;
            }
            Outcome::Excluded { reason } => {
                self.state = DispatchState::Excluded;
                self.reason = Some(reason.to_string());
                self.times.excluded = Some(at);
            }
        }
        self.refresh_wait();
    }

    /// Puts an `unknown` row, or a `failed` one (of `class` when given), back
    /// to `pending` for an operator's requeue or the automatic resend of
    /// `unknown`. False (and no change) for any other row.
    pub fn requeue(&mut self, from: &Requeue) -> bool {
        let matches = self.requeueable(from);
        if matches {
            self.state = DispatchState::Pending;
            self.owner = None;
            self.deferred_until = None;
            self.error_message = Some(format!("requeued from {}", from.state));
        }
        matches
    }

    /// Whether [`Self::requeue`] would take this row.
    pub fn requeueable(&self, from: &Requeue) -> bool {
        self.state == from.state
            && match from.state {
                DispatchState::Unknown => true,
                DispatchState::Failed => from
                    .class
                    .as_deref()
                    .is_none_or(|c| self.error_class.as_deref() == Some(c)),
                _ => false,
            }
    }

    /// Stops the journey for `reason` (a cancelling event, a conversion):
    /// a current step not claimed yet is excluded with it, and no later
    /// step follows (the edges and the timer go). None, and no change, when
    /// there was nothing left to stop: the current step was claimed or
    /// final and no step follows it.
    pub fn stop(&mut self, reason: &ExclusionReason, at: DateTime<Utc>) -> Option<JourneyStop> {
        let unclaimed = matches!(self.state, DispatchState::Pending | DispatchState::Deferred);
        if !unclaimed && self.next.is_empty() && self.wait.is_none() {
            return None;
        }
        if unclaimed {
            self.apply_outcome(
                &Outcome::Excluded {
                    reason: reason.clone(),
                },
                at,
            );
        }
        self.next.clear();
        self.wait = None;
        self.stopped = Some(reason.to_string());
        Some(JourneyStop {
            step: self.step.clone(),
            excluded: unclaimed,
        })
    }

    /// Credits `conversion` to this journey, once: a journey that has one
    /// keeps it (a redelivered record, or a second conversion of the goal,
    /// changes nothing). With `stop` (the goal `stops_journey`), the
    /// journey stops for that reason as [`Self::stop`] does, in the same
    /// change.
    pub fn convert(
        &mut self,
        conversion: &Conversion,
        stop: Option<&ExclusionReason>,
        at: DateTime<Utc>,
    ) -> ConversionApplied {
        if let Some(existing) = &self.conversion {
            return ConversionApplied::Duplicate {
                redelivered: existing.same_as(conversion),
                step: self.step.clone(),
                stopped: stop.is_some_and(|r| self.stopped.as_deref() == Some(&r.to_string())),
            };
        }
        self.conversion = Some(conversion.clone());
        let stopped = stop.and_then(|reason| self.stop(reason, at));
        ConversionApplied::Recorded(Converted {
            step: self.step.clone(),
            stopped,
        })
    }

    /// True when the row is claimed by `owner`.
    pub fn claimed_by(&self, owner: &str) -> bool {
        self.state == DispatchState::Claimed && self.owner.as_deref() == Some(owner)
    }

    /// True when applying `outcome` re-queues the row (its pending entry
    /// must be written back).
    pub fn requeued_by(&self, outcome: &Outcome) -> bool {
        matches!(outcome, Outcome::Retry { .. } | Outcome::Deferred { .. })
            && matches!(self.state, DispatchState::Pending | DispatchState::Deferred)
    }
}

impl DispatchRecord {
    /// Applies a webhook status under the monotonic rule (`sent < delivered <
    /// read < replied`; redelivered or late statuses change nothing). Returns
    /// the (from, to) transition when the row changed.
    pub fn apply_status(
        &mut self,
        update: &StatusUpdate,
    ) -> Option<(DispatchState, DispatchState)> {
        let changed = match self.earlier_step_of(update) {
            Some(i) => {
                let changed = self.history[i].apply_status(update);
                self.refresh_wait();
                changed
            }
            None => {
                let changed = self.apply_current_status(update);
                if changed.is_some() {
                    self.refresh_wait();
                }
                changed
            }
        };
        // The country that prices the message, found once, when its
        // pricing is first recorded.
        let contact = self.contact.clone();
        if let Some(p) = self.status_pricing_mut(update) {
            if p.country.is_none() {
                p.country = crate::domain::region_of(&contact);
            }
        }
        changed
    }

    /// Meta's pricing of the message a status belongs to, once recorded.
    pub fn status_pricing(&self, update: &StatusUpdate) -> Option<&Pricing> {
        match self.earlier_step_of(update) {
            Some(i) => self.history[i].pricing.as_ref(),
            None => self.pricing.as_ref(),
        }
    }

    fn status_pricing_mut(&mut self, update: &StatusUpdate) -> Option<&mut Pricing> {
        match self.earlier_step_of(update) {
            Some(i) => self.history[i].pricing.as_mut(),
            None => self.pricing.as_mut(),
        }
    }

    /// The sender that sent the message a status (or a reply) belongs to.
    pub fn status_sender(&self, update: &StatusUpdate) -> Option<&str> {
        match self.earlier_step_of(update) {
            Some(i) => self.history[i].sender.as_deref(),
            None => self.sender.as_deref(),
        }
    }

    /// The earlier step (its index in the history) a status belongs to:
    /// its wamid names that step's message (a late `read`, a reply to the
    /// primary after the follow-up went). None for the current step.
    fn earlier_step_of(&self, update: &StatusUpdate) -> Option<usize> {
        let wamid = update.wamid.as_deref()?;
        if self.wamid.as_deref() == Some(wamid) {
            return None;
        }
        self.history
            .iter()
            .position(|h| h.wamid.as_deref() == Some(wamid))
    }

    /// The step a status belongs to (`""` for the first) and that step's
    /// state.
    pub fn status_step(&self, update: &StatusUpdate) -> (&str, DispatchState) {
        match self.earlier_step_of(update) {
            Some(i) => (self.history[i].step.as_str(), self.history[i].state),
            None => (self.step.as_str(), self.state),
        }
    }

    fn apply_current_status(
        &mut self,
        update: &StatusUpdate,
    ) -> Option<(DispatchState, DispatchState)> {
        let from = self.state;
        // 131049 (Meta's per-user marketing limit): tried again on the
        // schedule while it has retries left (`attempts` counts this one);
        // otherwise the failure is final.
        let retry_at = match (update.deferral, update.defer_until) {
            (Some(schedule), _) => {
                schedule.next(self.attempts.max(1), self.times.staged, update.at)
            }
            (None, Some(until)) if self.attempts < 2 => Some(until),
            _ => None,
        };
        if let Some(until) = retry_at {
            if matches!(
                from,
                DispatchState::Claimed
                    | DispatchState::Unknown
                    | DispatchState::Accepted
                    | DispatchState::Sent
            ) {
                self.state = DispatchState::Deferred;
                self.deferred_until = Some(until);
                if from == DispatchState::Accepted {
                    self.reason = None;
                }
                self.error_code = update.error_code;
                self.error_class = update.error_class.clone();
                self.error_message = update.error_message.clone();
                self.owner = None;
                return Some((from, DispatchState::Deferred));
            }
        }
        let to = from.advance(update.state)?;
        self.state = to;
        if from == DispatchState::Accepted {
            // A held message that moved on is held no more.
            self.reason = None;
        }
        if self.wamid.is_none() {
            self.wamid = update.wamid.clone();
        }
        if self.pricing.is_none() {
            self.pricing = update.pricing.clone();
        }
        self.times.reached(to, update.at);
        if to == DispatchState::Failed {
            (self.error_code, self.error_class, self.error_message) = update.error();
        }
        Some((from, to))
    }
}

/// What [`DispatchRecord::stop`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JourneyStop {
    /// The step the row is at (`""` for the first).
    pub step: String,
    /// That step was not claimed yet and is now excluded; false when its
    /// message had left (only the steps after it were stopped).
    pub excluded: bool,
}

/// What [`DispatchRecord::convert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversionApplied {
    /// The conversion is now the journey's.
    Recorded(Converted),
    /// The journey had its conversion already: nothing changed.
    Duplicate {
        /// It is this very conversion (the record was read again after a
        /// restart, see [`Conversion::same_as`]): its event may not have
        /// been published.
        redelivered: bool,
        /// The step the row is at.
        step: String,
        /// The journey was stopped by the conversion's goal.
        stopped: bool,
    },
}

/// A conversion recorded on a journey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// The step the row was at (`""` for the first).
    pub step: String,
    /// What the conversion stopped, when its goal stops the journey and
    /// something was left to stop.
    pub stopped: Option<JourneyStop>,
}

/// Which rows a requeue takes back to `pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeue {
    /// `Unknown` or `Failed`.
    pub state: DispatchState,
    /// For `Failed`: only this error class (e.g. `transient`).
    pub class: Option<String>,
}

/// A status learned from a webhook (or a reply, as `Replied`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusUpdate {
    pub state: DispatchState,
    pub at: DateTime<Utc>,
    pub wamid: Option<String>,
    pub error_code: Option<i64>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    /// A failure retried at this time (131049), whatever the attempt: the
    /// form of statuses parked by earlier versions.
    pub defer_until: Option<DateTime<Utc>>,
    /// A failure retried on this schedule (131049): the row's attempt
    /// decides when, or whether, it is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferral: Option<crate::domain::DeferralSchedule>,
    /// Meta's pricing of the message, when the status carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

impl StatusUpdate {
    /// The error code, class and message a failure carries.
    fn error(&self) -> (Option<i64>, Option<String>, Option<String>) {
        (
            self.error_code,
            self.error_class.clone(),
            self.error_message.clone(),
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum StatusApplied {
    /// The step the status belongs to (`""` for the first) went from
    /// `from` to `to`.
    Changed {
        from: DispatchState,
        to: DispatchState,
        step: String,
        record: Box<DispatchRecord>,
        /// This status recorded the message's pricing (it had none).
        priced: bool,
    },
    /// Already at or past this status (redelivery, out of order): the
    /// step's state and the sender that sent it.
    Unchanged {
        state: DispatchState,
        step: String,
        sender: Option<String>,
    },
    /// No such (campaign, contact).
    Missing,
}

/// An entry of the pending queue of one (campaign, shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    pub seq: u64,
    pub contact: ContactKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub campaign_id: String,
    pub contact: ContactKey,
    /// Exclusive campaigns take the contact's engagement as part of the claim.
    pub exclusive: bool,
    /// The engagement held by a campaign known to have ended: it may be
    /// replaced (compare-and-set from that value).
    pub replace_engagement: Option<String>,
    pub owner: String,
    pub now: DateTime<Utc>,
    /// The journey step the claim is for (the row's `step`; empty for the
    /// first): a row that moved on to another step since it was read is
    /// not claimed, so a request built for one step never goes out as
    /// another's.
    pub step: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The caller owns the send.
    Claimed { attempts: u32 },
    /// The row is not claimable (already claimed, final, not yet due, or absent).
    NotClaimable { state: Option<DispatchState> },
    /// An exclusive campaign holds the contact.
    EngagedElsewhere { campaign: String },
}

/// What happened to a claimed contact.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Accepted {
        wamid: String,
        /// The sender whose request was accepted (the SMS sender for an SMS
        /// step).
        sender: Option<String>,
        /// Meta's `message_status` when it is not `accepted`:
        /// `held_for_quality_assessment` or `paused`. Kept as the row's
        /// `reason` until a status moves it on.
        held: Option<String>,
    },
    Failed {
        code: Option<i64>,
        class: String,
        message: String,
    },
    /// Sent, no usable answer: never resent automatically.
    Unknown { message: String },
    Deferred {
        until: DateTime<Utc>,
        code: Option<i64>,
    },
    /// Not sent (or refused with a retryable error, which Meta answers
    /// without sending): back to pending, claimable again from `not_before`.
    Retry {
        code: Option<i64>,
        not_before: Option<DateTime<Utc>>,
    },
    /// Found ineligible at claim time (opt-out, suppression, …).
    Excluded { reason: ExclusionReason },
}

/// `contacts (contact) → engaged_campaign, opt-outs, last campaign, …`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContactRecord {
    pub engaged_campaign: Option<String>,
    /// Opted out of everything (scope `all`).
    pub opted_out: bool,
    pub opted_out_at: Option<DateTime<Utc>>,
    /// Opted out of marketing templates only (131050, `user_preferences`).
    #[serde(default)]
    pub marketing_opted_out: bool,
    /// Event time of the latest marketing opt-out or opt-in applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketing_opt_changed_at: Option<DateTime<Utc>>,
    /// Campaign of the last message accepted for this contact: replies
    /// without a `context.id` are attributed to it.
    #[serde(default)]
    pub last_campaign: Option<String>,
    /// The occurrence of that message's row, when its campaign is a
    /// triggered one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_occurrence: Option<String>,
    /// Set when Meta reported 131026 for this contact.
    #[serde(default)]
    pub undeliverable_at: Option<DateTime<Utc>>,
    /// Event time of the latest opt-out or opt-in of scope `all` applied (an
    /// older one arriving later is ignored). ScyllaDB keeps it in
    /// `opted_out_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_changed_at: Option<DateTime<Utc>>,
    /// The contact's other identity, once a webhook showed both: the
    /// business-scoped user id of a phone, the phone (or the newer user id)
    /// of a user id. Opt-outs, engagement and replies of either apply to
    /// the person (docs/ARCHITECTURE.md, "Business-scoped user ids").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked: Option<ContactKey>,
}

impl ContactRecord {
    /// Whether a template of this category may not reach the contact.
    pub fn opted_out_of(&self, marketing: bool) -> bool {
        self.opted_out || (marketing && self.marketing_opted_out)
    }

    /// Adds what the linked identity's record says of the person: an
    /// opt-out of either holds (the webhook writes both, this covers a
    /// write that reached one side only).
    pub fn merge_linked(&mut self, other: &ContactRecord) {
        if other.opted_out && !self.opted_out {
            self.opted_out = true;
            self.opted_out_at = other.opted_out_at;
        }
        self.marketing_opted_out |= other.marketing_opted_out;
    }
}

/// `wamids (wamid) → campaign_id, contact`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WamidEntry {
    pub campaign_id: String,
    pub contact: ContactKey,
    pub created_at: DateTime<Utc>,
}
