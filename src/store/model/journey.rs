//! A row's journey: the step it is at, the steps before it, its timer and
//! the move to the next step (docs/ARCHITECTURE.md, "Journeys").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::*;
use crate::domain::{fires, next_wait, FrozenStep, StepFacts};

/// What staging stores of a journey with more than one step: the edges
/// leaving the primary message, and what each later step sends to this
/// contact (frozen like the primary's parameters).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StagedJourney {
    pub next: Vec<Edge>,
    pub later: Vec<StepParams>,
}

/// A journey step the contact went through, as its row keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// The step's id; empty for the first.
    #[serde(default)]
    pub step: String,
    pub state: DispatchState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The wamid (or the SMS provider's message id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wamid: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default)]
    pub times: StageTimes,
    /// The sender that sent this step's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// Meta's pricing of this step's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

impl StepRecord {
    /// A status of this earlier step's message, under the same monotonic
    /// rule as the current step's.
    pub(super) fn apply_status(
        &mut self,
        update: &StatusUpdate,
    ) -> Option<(DispatchState, DispatchState)> {
        let from = self.state;
        let to = from.advance(update.state)?;
        self.state = to;
        self.times.reached(to, update.at);
        if self.pricing.is_none() {
            self.pricing = update.pricing.clone();
        }
        if to == DispatchState::Failed {
            (self.error_code, self.error_class, self.error_message) = update.error();
        }
        Some((from, to))
    }
}

impl DispatchRecord {
    /// What the journey reads of the current step.
    pub fn facts(&self) -> StepFacts<'_> {
        StepFacts {
            state: self.state,
            reason: self.reason.as_deref(),
            first: self.step.is_empty(),
            replied_before: self.history.iter().any(|h| h.times.replied.is_some()),
            times: &self.times,
        }
    }

    /// Recomputes the row's timer from the current step (after any change
    /// of its state): the step due next, or none.
    pub fn refresh_wait(&mut self) {
        self.wait = next_wait(&self.next, &self.facts());
    }

    /// Moves the row to the step its timer names (`edges` are the ones
    /// leaving that step in the spec in force): the current step goes to the
    /// history and the new one starts `pending` with the content staged for
    /// it, or `excluded` (skipped) when the contact lacks what it needs.
    /// False, and no change, unless the row waits for `step` and it is due
    /// at `now` (or `force`: the campaign ended, and the step is ended at
    /// its claim as `outside_window`).
    pub fn promote(
        &mut self,
        step: &str,
        edges: Vec<Edge>,
        now: DateTime<Utc>,
        force: bool,
    ) -> bool {
        // An ended campaign fires every wait now, due or not.
        let at = if force { DateTime::<Utc>::MAX_UTC } else { now };
        if !fires(self.wait.as_ref(), step, at) {
            return false;
        }
        self.history.push(StepRecord {
            step: std::mem::take(&mut self.step),
            state: self.state,
            reason: self.reason.take(),
            wamid: self.wamid.take(),
            attempts: std::mem::take(&mut self.attempts),
            error_code: self.error_code.take(),
            error_class: self.error_class.take(),
            error_message: self.error_message.take(),
            times: std::mem::take(&mut self.times),
            sender: self.sender.take(),
            pricing: self.pricing.take(),
        });
        self.step = step.to_string();
        self.next = edges;
        self.wait = None;
        self.deferred_until = None;
        self.owner = None;
        self.times.staged = Some(now);
        let content = self
            .later
            .iter()
            .find(|p| p.step == step)
            .map(|p| p.content.clone());
        match content {
            Some(FrozenStep::Template(params)) => {
                self.params = params;
                self.state = DispatchState::Pending;
            }
            Some(FrozenStep::Text(_)) => {
                self.params = FrozenParams::default();
                self.state = DispatchState::Pending;
            }
            Some(FrozenStep::Skip(reason)) => self.skip(reason, now),
            // Staged before the spec had this step: nothing frozen for it.
            None => self.skip(
                ExclusionReason::InvalidField(format!("steps.{step}")).to_string(),
                now,
            ),
        }
        true
    }

    fn skip(&mut self, reason: String, now: DateTime<Utc>) {
        self.params = FrozenParams::default();
        self.state = DispatchState::Excluded;
        self.reason = Some(reason);
        self.times.excluded = Some(now);
        self.refresh_wait();
    }

    /// The SMS text of the current step, when it is an SMS step.
    pub fn sms_text(&self) -> Option<&str> {
        self.later
            .iter()
            .find(|p| p.step == self.step)
            .and_then(|p| match &p.content {
                FrozenStep::Text(text) => Some(text.as_str()),
                _ => None,
            })
    }
}

/// An entry of the timer queue of one (campaign, shard), ordered by due
/// time: the index of a row's `wait`. The row decides whether it fires
/// (`DispatchRecord::promote`); an entry the row no longer names fires
/// nothing and is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerEntry {
    pub shard: u32,
    pub due: DateTime<Utc>,
    pub contact: ContactKey,
    pub step: String,
}

impl TimerEntry {
    /// The entry of `record`'s wait, if it has one.
    pub fn of(record: &DispatchRecord) -> Option<TimerEntry> {
        record.wait.as_ref().map(|w| TimerEntry {
            shard: record.shard,
            due: w.due,
            contact: record.contact.clone(),
            step: w.step.clone(),
        })
    }

    /// The entry a change of a row from `before` to `after` adds to the
    /// queue: a new wait (a wait dropped leaves its entry, which fires
    /// nothing).
    pub fn added(before: Option<&Wait>, after: &DispatchRecord) -> Option<TimerEntry> {
        (after.wait.as_ref() != before)
            .then(|| TimerEntry::of(after))
            .flatten()
    }
}
