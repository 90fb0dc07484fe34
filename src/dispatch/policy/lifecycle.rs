//! A campaign's observed state (docs/ARCHITECTURE.md, "States"): what the
//! daemon reports after reconciling the upstream's desired state with
//! operator overrides, campaign-level errors, the schedule and the progress
//! of its contacts.
//!
//! The state is recomputed from scratch on every look rather than stepped
//! by events, so a restart, a reload or a new spec on `wa.campaigns` can
//! never leave the machine in a state its inputs do not justify.

use chrono::{DateTime, Utc};

use crate::domain::{DesiredState, ObservedState, Schedule};

/// How many of a campaign's contacts are in each unfinished state, plus
/// how many were staged at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CampaignCounts {
    /// Every contact staged for the campaign, in any state.
    pub staged: u64,
    /// Waiting for their turn.
    pub pending: u64,
    /// Claimed by a sender, outcome not yet written.
    pub claimed: u64,
    /// Waiting for a retry (`deferred{until}`).
    pub deferred: u64,
    /// Waiting for a later step of their journey (a timer).
    pub waiting: u64,
    /// The campaign is triggered: its audience is a stream of events that
    /// never ends, so it never completes by itself.
    pub triggered: bool,
}

impl CampaignCounts {
    /// True when contacts were staged and none has work left: every one is
    /// in a final state and no journey waits for a later step.
    pub fn all_final(&self) -> bool {
        self.staged > 0
            && self.pending == 0
            && self.claimed == 0
            && self.deferred == 0
            && self.waiting == 0
    }
}

/// The campaign's observed state at `now`. First match wins:
///
/// 1. `halted` (a campaign-class error such as a paused or missing
///    template) → `Failed`: nothing can be sent until the spec changes, and
///    an alert must say so whatever else is asked.
/// 2. desired `ended`, or `end_at` reached → `Ended`.
/// 3. desired `paused`, or paused by the operator's config → `Paused`.
/// 4. `start_at` still ahead, or desired `scheduled` without a `start_at`
///    → `Scheduled`. A desired `scheduled` with a `start_at` starts by
///    itself once `start_at` is reached; without one it waits for the
///    upstream to publish `active`.
/// 5. contacts were staged and all are final → `Completed`; else `Active`.
///    A triggered campaign stays `Active` (its next event may come at any
///    time) until it is ended.
///    `Completed` is not terminal: when new contacts are staged the next
///    look finds them pending and the campaign is `Active` again.
///
/// A campaign with nothing staged yet is `Active` (its audience may still
/// be arriving on `wa.audience`).
pub fn observe(
    desired: DesiredState,
    paused_by_operator: bool,
    halted: bool,
    schedule: &Schedule,
    counts: &CampaignCounts,
    now: DateTime<Utc>,
) -> ObservedState {
    if halted {
        return ObservedState::Failed;
    }
    if desired == DesiredState::Ended || schedule.end_utc().is_some_and(|end| now >= end) {
        return ObservedState::Ended;
    }
    if desired == DesiredState::Paused || paused_by_operator {
        return ObservedState::Paused;
    }
    // A scheduled campaign starts by itself at `start_at` (README.md,
    // "Campaign states"); one without `start_at` waits for the upstream to
    // make it active.
    let start = schedule.start_utc();
    if start.is_some_and(|start| now < start)
        || (desired == DesiredState::Scheduled && start.is_none())
    {
        return ObservedState::Scheduled;
    }
    if counts.all_final() && !counts.triggered {
        ObservedState::Completed
    } else {
        ObservedState::Active
    }
}

/// True when the campaign may claim contacts and send: only `Active`.
pub fn may_claim(observed: ObservedState) -> bool {
    observed == ObservedState::Active
}

/// True when a contact engaged by a campaign in this state may be claimed
/// by another exclusive campaign (the engagement lasts until the campaign
/// ends; docs/ARCHITECTURE.md, "States"): only `Ended`.
///
/// `Completed` keeps them: every contact was messaged and conversations
/// (replies routed to the campaign's agent) go on; another exclusive
/// campaign reaching the same people right after would be what
/// exclusivity exists to prevent. `Failed` (a template halt) resumes when
/// the template is fixed, and `Paused` and `Scheduled` resume too, so
/// they keep their contacts.
pub fn releases_engagements(observed: ObservedState) -> bool {
    observed == ObservedState::Ended
}

/// A change of observed state, for the store, the
/// `wadispatch_campaign_state` gauge and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before; `None` for a campaign's first observation.
    pub from: Option<ObservedState>,
    /// The state now.
    pub to: ObservedState,
}

impl Transition {
    /// True when this transition frees the campaign's engagements (it enters
    /// a releasing state from one that was not, or is first seen in one):
    /// the moment to let other exclusive campaigns take its contacts.
    pub fn releases_engagements(&self) -> bool {
        releases_engagements(self.to) && !self.from.is_some_and(releases_engagements)
    }
}

/// The transition from `prev` to `next`, or `None` when nothing changed.
///
/// `prev` is `None` for a campaign not observed before (new, or the
/// process just started): its first state is a transition (from `None`), so
/// that the caller stores, reports and publishes it like any other change
/// instead of special-casing the first look.
pub fn transition(prev: Option<ObservedState>, next: ObservedState) -> Option<Transition> {
    if prev == Some(next) {
        None
    } else {
        Some(Transition {
            from: prev,
            to: next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ObservedState::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window() -> Schedule {
        Schedule {
            start_at: Some("2026-11-22T09:00:00Z".into()),
            end_at: Some("2026-11-30T09:00:00Z".into()),
            ..Schedule::default()
        }
    }

    const BEFORE: &str = "2026-11-21T00:00:00Z";
    const DURING: &str = "2026-11-25T00:00:00Z";
    const AFTER: &str = "2026-12-01T00:00:00Z";

    fn in_progress() -> CampaignCounts {
        CampaignCounts {
            staged: 10,
            pending: 4,
            claimed: 1,
            deferred: 0,
            waiting: 0,
            triggered: false,
        }
    }

    fn done() -> CampaignCounts {
        CampaignCounts {
            staged: 10,
            ..CampaignCounts::default()
        }
    }

    #[test]
    fn precedence_table() {
        use DesiredState as D;
        // (desired, operator pause, halted, now, counts, expected)
        let cases = [
            // Failed beats everything, even an ended window.
            (D::Active, false, true, DURING, in_progress(), Failed),
            (D::Ended, true, true, AFTER, done(), Failed),
            (D::Scheduled, false, true, BEFORE, in_progress(), Failed),
            // Ended: desired, or end_at reached, over pause and schedule.
            (D::Ended, false, false, DURING, in_progress(), Ended),
            (D::Ended, true, false, BEFORE, in_progress(), Ended),
            (D::Active, false, false, AFTER, in_progress(), Ended),
            (D::Paused, true, false, AFTER, in_progress(), Ended),
            (D::Active, false, false, AFTER, done(), Ended),
            // Paused: desired or operator, over schedule and completion.
            (D::Paused, false, false, DURING, in_progress(), Paused),
            (D::Active, true, false, DURING, in_progress(), Paused),
            (D::Active, true, false, BEFORE, in_progress(), Paused),
            (D::Scheduled, true, false, DURING, in_progress(), Paused),
            (D::Paused, false, false, DURING, done(), Paused),
            // Scheduled: start_at ahead, over completion; once start_at has
            // passed a scheduled campaign runs by itself.
            (D::Scheduled, false, false, BEFORE, in_progress(), Scheduled),
            (D::Scheduled, false, false, DURING, in_progress(), Active),
            (D::Active, false, false, BEFORE, in_progress(), Scheduled),
            (D::Active, false, false, BEFORE, done(), Scheduled),
            // Inside the window.
            (D::Active, false, false, DURING, in_progress(), Active),
            (D::Active, false, false, DURING, done(), Completed),
            (
                D::Active,
                false,
                false,
                DURING,
                CampaignCounts::default(),
                Active,
            ),
        ];
        for (i, (desired, paused, halted, now, counts, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                observe(desired, paused, halted, &window(), &counts, utc(now)),
                expected,
                "case {i}: {desired} paused={paused} halted={halted} {now} {counts:?}"
            );
        }
    }

    #[test]
    fn window_edges() {
        let s = window();
        let c = in_progress();
        let at_start = utc("2026-11-22T09:00:00Z");
        let at_end = utc("2026-11-30T09:00:00Z");
        let second = chrono::Duration::seconds(1);
        let obs = |now| observe(DesiredState::Active, false, false, &s, &c, now);
        assert_eq!(obs(at_start - second), Scheduled);
        assert_eq!(obs(at_start), Active);
        assert_eq!(obs(at_end - second), Active);
        assert_eq!(obs(at_end), Ended);
        // No schedule at all: active as soon as desired.
        let open = Schedule::default();
        assert_eq!(
            observe(DesiredState::Active, false, false, &open, &c, utc(AFTER)),
            Active
        );
    }

    #[test]
    fn any_unfinished_contact_keeps_it_active() {
        let now = utc(DURING);
        let obs = |counts: CampaignCounts| {
            observe(DesiredState::Active, false, false, &window(), &counts, now)
        };
        assert_eq!(obs(done()), Completed);
        for counts in [
            CampaignCounts {
                pending: 1,
                ..done()
            },
            CampaignCounts {
                claimed: 1,
                ..done()
            },
            CampaignCounts {
                deferred: 1,
                ..done()
            },
            // A journey waiting for its follow-up is not done.
            CampaignCounts {
                waiting: 1,
                ..done()
            },
        ] {
            assert_eq!(obs(counts), Active, "{counts:?}");
        }
    }

    #[test]
    fn completed_goes_back_to_active_when_contacts_arrive() {
        let now = utc(DURING);
        let s = window();
        let mut counts = done();
        let triggered = CampaignCounts {
            triggered: true,
            ..counts
        };
        assert_eq!(
            observe(DesiredState::Active, false, false, &s, &triggered, now),
            ObservedState::Active,
            "a triggered campaign stays active with every occurrence final"
        );
        assert_eq!(
            observe(DesiredState::Ended, false, false, &s, &triggered, now),
            ObservedState::Ended,
        );
        let first = observe(DesiredState::Active, false, false, &s, &counts, now);
        assert_eq!(first, Completed);
        // Ten more contacts staged as pending.
        counts.staged += 10;
        counts.pending += 10;
        let second = observe(DesiredState::Active, false, false, &s, &counts, now);
        assert_eq!(second, Active);
        assert_eq!(
            transition(Some(first), second),
            Some(Transition {
                from: Some(Completed),
                to: Active
            })
        );
        assert!(may_claim(second));
        assert!(!may_claim(first));
    }

    #[test]
    fn only_active_claims() {
        let claiming: Vec<_> = ObservedState::ALL
            .into_iter()
            .filter(|s| may_claim(*s))
            .collect();
        assert_eq!(claiming, [Active]);
    }

    #[test]
    fn only_ended_releases_engagements() {
        let releasing: Vec<_> = ObservedState::ALL
            .into_iter()
            .filter(|s| releases_engagements(*s))
            .collect();
        assert_eq!(releasing, [Ended]);
    }

    #[test]
    fn transitions() {
        // The first look is a transition, so that it gets stored and reported.
        let first = transition(None, Active).unwrap();
        assert_eq!((first.from, first.to), (None, Active));
        assert!(!first.releases_engagements());
        assert!(!transition(None, Completed).unwrap().releases_engagements());
        assert!(transition(None, Ended).unwrap().releases_engagements());
        assert_eq!(transition(Some(Active), Active), None);
        let t = transition(Some(Active), Paused).unwrap();
        assert_eq!((t.from, t.to), (Some(Active), Paused));
        assert!(!t.releases_engagements());
        assert!(transition(Some(Active), Ended)
            .unwrap()
            .releases_engagements());
        assert!(!transition(Some(Paused), Failed)
            .unwrap()
            .releases_engagements());
        assert!(transition(Some(Completed), Ended)
            .unwrap()
            .releases_engagements());
    }
}
