//! The journey's state machine: from what a contact's current step did,
//! which step comes next and when. Pure: the caller gives the facts and
//! the clock.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::plan::Edge;
use super::spec::On;
use crate::domain::state::{DispatchState, StageTimes};

/// A step a contact waits for: its timer. The row holds it (the truth);
/// the store's timer queue indexes it by due time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    pub step: String,
    pub due: DateTime<Utc>,
}

/// What the journey reads of the contact's current step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepFacts<'a> {
    pub state: DispatchState,
    /// The exclusion reason, as stored (`missing_variable:coupon`).
    pub reason: Option<&'a str>,
    /// The primary message: an exclusion of it ends the journey (as a
    /// one-step campaign), whatever the reason.
    pub first: bool,
    /// The contact replied to an earlier step's message: no follow-up on
    /// silence applies any more.
    pub replied_before: bool,
    /// When the step reached each state.
    pub times: &'a StageTimes,
}

/// How the current step stands for the journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEnd {
    /// Not settled yet (pending, claimed, deferred, unknown): nothing follows
    /// until it is.
    Open,
    /// Failed for good (or the contact is not on WhatsApp) at this time.
    Failed(DateTime<Utc>),
    /// Skipped for missing data at this time: the journey goes on.
    Skipped(DateTime<Utc>),
    /// Excluded for a stop (opt-out, suppression, window, …): the journey
    /// ends.
    Stopped,
    /// On the delivery ladder.
    Reached,
}

/// Exclusion reasons (by label) that skip a later step instead of ending
/// the journey: the contact lacks what that step needs.
const SKIP_REASONS: &[&str] = &["missing_variable", "invalid_field"];

/// Exclusion reasons that are a failure of the step: the fallback follows.
const FAILED_REASONS: &[&str] = &["not_whatsapp_user"];

impl StepFacts<'_> {
    pub fn end(&self) -> StepEnd {
        let label = self
            .reason
            .map(|r| r.split(':').next().unwrap_or(r))
            .unwrap_or("");
        match self.state {
            DispatchState::Failed => StepEnd::Failed(self.times.failed.unwrap_or_default()),
            DispatchState::Excluded if FAILED_REASONS.contains(&label) => {
                StepEnd::Failed(self.times.excluded.unwrap_or_default())
            }
            DispatchState::Excluded if !self.first && SKIP_REASONS.contains(&label) => {
                StepEnd::Skipped(self.times.excluded.unwrap_or_default())
            }
            DispatchState::Excluded => StepEnd::Stopped,
            s if s.delivery_rank() > 0 => StepEnd::Reached,
            _ => StepEnd::Open,
        }
    }

    /// When the condition `on` was met, if it was.
    pub fn met_at(&self, on: On) -> Option<DateTime<Utc>> {
        let rank = self.state.delivery_rank();
        let first_of = |times: &[Option<DateTime<Utc>>]| times.iter().flatten().next().copied();
        match (self.end(), on) {
            (StepEnd::Failed(at), On::Failed) => Some(at),
            (StepEnd::Skipped(_), On::NoReply) if self.replied_before => None,
            (StepEnd::Skipped(at), On::NoReply | On::Sent | On::Delivered | On::Read) => Some(at),
            (StepEnd::Reached, On::NoReply)
                if self.state != DispatchState::Replied && !self.replied_before =>
            {
                first_of(&[
                    self.times.sent,
                    self.times.accepted,
                    self.times.delivered,
                    self.times.read,
                ])
            }
            (StepEnd::Reached, On::Sent) if rank >= 2 => first_of(&[
                self.times.sent,
                self.times.delivered,
                self.times.read,
                self.times.replied,
            ]),
            (StepEnd::Reached, On::Delivered) if rank >= 3 => {
                first_of(&[self.times.delivered, self.times.read, self.times.replied])
            }
            (StepEnd::Reached, On::Read) if rank >= 4 => {
                first_of(&[self.times.read, self.times.replied])
            }
            _ => None,
        }
    }
}

/// The step that follows the current one and when: of the edges whose
/// condition is met, the one due first (the earlier edge on a tie). A
/// journey is a path: when one follower starts, the others of the same
/// step no longer apply.
pub fn next_wait(edges: &[Edge], facts: &StepFacts<'_>) -> Option<Wait> {
    edges
        .iter()
        .filter_map(|edge| {
            let at = facts.met_at(edge.on)?;
            let delay = TimeDelta::try_seconds(i64::try_from(edge.delay_secs).ok()?)?;
            Some(Wait {
                step: edge.to.clone(),
                due: at.checked_add_signed(delay)?,
            })
        })
        .min_by_key(|w| w.due)
}

/// Whether a timer for `wait` fires at `now`: its row still waits for the
/// same step, and it is due. The row decides, never the timer entry alone:
/// an entry left behind by a reply or a changed plan fires nothing.
pub fn fires(row_wait: Option<&Wait>, step: &str, now: DateTime<Utc>) -> bool {
    row_wait.is_some_and(|w| w.step == step && w.due <= now)
}
