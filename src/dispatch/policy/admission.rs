//! May this contact be claimed now? Every rule that decides whether a staged
//! contact may be sent, in one pure function evaluated twice: when the pump
//! picks the contact from the queue (to spare a sender's slot for a contact
//! that cannot go) and again right before the claim, once every wait is over
//! (campaign pace, in-flight permit, pair limiter, sender pace). The second
//! evaluation is the one that counts: a stop that arrives while a contact
//! waits for its turn (a spec `paused` or `ended`, an operator pause, a
//! halt, quiet hours starting, an opt-out, a suppression) applies before the
//! claim, never after it.

use chrono::{DateTime, Duration, Utc};

use super::schedule::{self, Gate};
use crate::domain::{ContactKey, DesiredState, DispatchState, ExclusionReason, Schedule};
use crate::store::{ContactRecord, DispatchRecord};

/// A contact Meta could not deliver to (131026) is not tried again by any
/// campaign for this long.
pub const UNDELIVERABLE_DAYS: i64 = 30;
/// How long a contact held back by the portfolio limit waits before it is
/// looked at again.
pub const PORTFOLIO_RECHECK_SECS: i64 = 30;

/// What the campaign says right now.
#[derive(Debug, Clone, Copy)]
pub struct CampaignFacts<'a> {
    /// The desired state of the latest valid spec.
    pub desired: DesiredState,
    pub schedule: &'a Schedule,
    /// `[campaigns."<id>"] paused = true` in the config.
    pub paused_by_operator: bool,
    /// Halted by a campaign-class error (template paused, missing, disabled).
    pub halted: bool,
    /// The dispatcher is stopping (shutdown, campaign deleted).
    pub stopping: bool,
    /// The template's category is marketing: marketing-only opt-outs hold it.
    pub marketing: bool,
}

/// What is known about the contact right now.
#[derive(Debug, Clone, Copy)]
pub struct ContactFacts<'a> {
    pub key: &'a ContactKey,
    /// The (campaign, contact) row as last read.
    pub row: &'a DispatchRecord,
    /// The contact's record (opt-out, undeliverable), when read.
    pub contact: Option<&'a ContactRecord>,
    /// Suppression reason from `wa.suppressions`, if any.
    pub suppression: Option<&'a str>,
    /// Why the portfolio's unique-recipient limit holds this contact back.
    pub portfolio_wait: Option<&'a str>,
    /// The row's current step is a follow-up on silence (`no_reply`).
    pub follows_silence: bool,
    /// The row's current step goes by WhatsApp: a number Meta called
    /// undeliverable and the portfolio's limit concern it; an SMS step
    /// neither.
    pub whatsapp: bool,
}

/// Why the campaign as a whole does not send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Stopping,
    Halted,
    Ended,
    Paused,
    /// `state: scheduled` without a `start_at`: waits for the upstream.
    Scheduled,
}

/// Why one contact waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    /// Schedule start, `send_after`, quiet hours or a retry time.
    NotYet,
    /// The portfolio's unique-recipient limit.
    Portfolio(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Claim and send.
    Ready,
    /// Not before `until`; the row stays as it is.
    Wait {
        until: DateTime<Utc>,
        reason: WaitReason,
    },
    /// Never for this campaign: record the exclusion.
    Exclude(ExclusionReason),
    /// The campaign holds every contact; the row stays as it is.
    Hold(Hold),
    /// Not claimable (already claimed elsewhere, final, or gone).
    Skip,
}

/// The decision for one contact at `now`. The order matters only for which
/// reason is reported: campaign stops first (nothing of the contact is
/// written while the campaign holds), then the row's own state, the
/// schedule on the recipient's clock, and the contact's facts.
pub fn admit(
    campaign: &CampaignFacts<'_>,
    contact: &ContactFacts<'_>,
    now: DateTime<Utc>,
) -> Admission {
    if campaign.stopping {
        return Admission::Hold(Hold::Stopping);
    }
    if campaign.halted {
        return Admission::Hold(Hold::Halted);
    }
    match campaign.desired {
        DesiredState::Ended => return Admission::Hold(Hold::Ended),
        DesiredState::Paused => return Admission::Hold(Hold::Paused),
        DesiredState::Scheduled if campaign.schedule.start_at.is_none() => {
            return Admission::Hold(Hold::Scheduled)
        }
        _ => {}
    }
    if campaign.paused_by_operator {
        return Admission::Hold(Hold::Paused);
    }
    let row = contact.row;
    if !matches!(row.state, DispatchState::Pending | DispatchState::Deferred) {
        return Admission::Skip;
    }
    if contact.follows_silence && row.history.iter().any(|h| h.times.replied.is_some()) {
        // The reply came after the follow-up's timer fired: it still
        // cancels the follow-up.
        return Admission::Exclude(ExclusionReason::Replied);
    }
    if let Some(until) = row.deferred_until.filter(|u| *u > now) {
        return Admission::Wait {
            until,
            reason: WaitReason::NotYet,
        };
    }
    let tz = schedule::contact_timezone(row.timezone.as_deref(), contact.key);
    match schedule::gate(campaign.schedule, tz, row.send_after, now) {
        Gate::Ready => {}
        Gate::WaitUntil(until) => {
            return Admission::Wait {
                until,
                reason: WaitReason::NotYet,
            }
        }
        Gate::OutsideWindow => return Admission::Exclude(ExclusionReason::OutsideWindow),
    }
    if let Some(c) = contact.contact {
        if c.opted_out_of(campaign.marketing) {
            return Admission::Exclude(ExclusionReason::OptedOut);
        }
        if contact.whatsapp
            && c.undeliverable_at
                .is_some_and(|t| now - t < Duration::days(UNDELIVERABLE_DAYS))
        {
            return Admission::Exclude(ExclusionReason::NotWhatsappUser);
        }
    }
    if let Some(reason) = contact.suppression {
        return Admission::Exclude(ExclusionReason::Suppressed(reason.to_string()));
    }
    if let Some(reason) = contact.portfolio_wait.filter(|_| contact.whatsapp) {
        return Admission::Wait {
            until: now + Duration::seconds(PORTFOLIO_RECHECK_SECS),
            reason: WaitReason::Portfolio(reason.to_string()),
        };
    }
    Admission::Ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FrozenParams;
    use crate::store::{StageRequest, StageTimes};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn row(key: &ContactKey) -> DispatchRecord {
        let mut r = DispatchRecord::from_stage(&StageRequest {
            campaign_id: "c".into(),
            contact: key.clone(),
            shard: 0,
            seq: 1,
            params: FrozenParams::default(),
            exclusion: None,
            send_after: None,
            timezone: None,
            tags: vec![],
            name: None,
            staged_at: at("2026-11-22T10:00:00Z"),
            journey: Default::default(),
        });
        r.times = StageTimes::default();
        r
    }

    fn schedule(json: &str) -> Schedule {
        serde_json::from_str(json).unwrap()
    }

    fn facts(schedule: &Schedule) -> CampaignFacts<'_> {
        CampaignFacts {
            desired: DesiredState::Active,
            schedule,
            paused_by_operator: false,
            halted: false,
            stopping: false,
            marketing: true,
        }
    }

    /// What is known of a contact with nothing against it.
    fn bare<'a>(key: &'a ContactKey, row: &'a DispatchRecord) -> ContactFacts<'a> {
        ContactFacts {
            key,
            row,
            contact: None,
            suppression: None,
            portfolio_wait: None,
            follows_silence: false,
            whatsapp: true,
        }
    }

    fn key() -> ContactKey {
        ContactKey::raw("+5215512345678")
    }

    #[test]
    fn a_pending_contact_with_nothing_against_it_is_ready() {
        let s = schedule(r#"{"timezone":"UTC"}"#);
        let k = key();
        let r = row(&k);
        let c = bare(&k, &r);
        assert_eq!(
            admit(&facts(&s), &c, at("2026-11-22T12:00:00Z")),
            Admission::Ready
        );
    }

    #[test]
    fn every_campaign_stop_holds_before_anything_of_the_contact() {
        let s = schedule(r#"{"timezone":"UTC"}"#);
        let k = key();
        let r = row(&k);
        // Even an opted-out contact is not excluded while the campaign holds.
        let opted = ContactRecord {
            opted_out: true,
            ..Default::default()
        };
        let c = ContactFacts {
            contact: Some(&opted),
            ..bare(&k, &r)
        };
        let now = at("2026-11-22T12:00:00Z");
        let cases = [
            (
                CampaignFacts {
                    stopping: true,
                    ..facts(&s)
                },
                Hold::Stopping,
            ),
            (
                CampaignFacts {
                    halted: true,
                    ..facts(&s)
                },
                Hold::Halted,
            ),
            (
                CampaignFacts {
                    desired: DesiredState::Ended,
                    ..facts(&s)
                },
                Hold::Ended,
            ),
            (
                CampaignFacts {
                    desired: DesiredState::Paused,
                    ..facts(&s)
                },
                Hold::Paused,
            ),
            (
                CampaignFacts {
                    paused_by_operator: true,
                    ..facts(&s)
                },
                Hold::Paused,
            ),
            (
                CampaignFacts {
                    desired: DesiredState::Scheduled,
                    ..facts(&s)
                },
                Hold::Scheduled,
            ),
        ];
        for (campaign, hold) in cases {
            assert_eq!(admit(&campaign, &c, now), Admission::Hold(hold));
        }
        assert_eq!(
            admit(&facts(&s), &c, now),
            Admission::Exclude(ExclusionReason::OptedOut)
        );
    }

    #[test]
    fn quiet_hours_starting_make_a_ready_contact_wait_until_they_end() {
        let s = schedule(r#"{"timezone":"UTC","quiet_hours":{"from":"21:00","to":"08:00"}}"#);
        let k = key();
        let mut r = row(&k);
        r.timezone = Some("UTC".into());
        let c = bare(&k, &r);
        assert_eq!(
            admit(&facts(&s), &c, at("2026-11-22T20:59:59Z")),
            Admission::Ready
        );
        assert_eq!(
            admit(&facts(&s), &c, at("2026-11-22T21:00:00Z")),
            Admission::Wait {
                until: at("2026-11-23T08:00:00Z"),
                reason: WaitReason::NotYet
            }
        );
    }

    #[test]
    fn a_retry_time_on_a_pending_row_is_waited_for() {
        let s = schedule(r#"{"timezone":"UTC"}"#);
        let k = key();
        let mut r = row(&k);
        r.deferred_until = Some(at("2026-11-22T12:00:05Z"));
        let c = bare(&k, &r);
        assert_eq!(
            admit(&facts(&s), &c, at("2026-11-22T12:00:00Z")),
            Admission::Wait {
                until: at("2026-11-22T12:00:05Z"),
                reason: WaitReason::NotYet
            }
        );
        assert_eq!(
            admit(&facts(&s), &c, at("2026-11-22T12:00:05Z")),
            Admission::Ready
        );
    }

    #[test]
    fn contact_facts_exclude_and_the_portfolio_waits() {
        let s = schedule(r#"{"timezone":"UTC"}"#);
        let k = key();
        let r = row(&k);
        let now = at("2026-11-22T12:00:00Z");
        let undeliverable = ContactRecord {
            undeliverable_at: Some(now - Duration::days(UNDELIVERABLE_DAYS - 1)),
            ..Default::default()
        };
        let c = ContactFacts {
            contact: Some(&undeliverable),
            ..bare(&k, &r)
        };
        assert_eq!(
            admit(&facts(&s), &c, now),
            Admission::Exclude(ExclusionReason::NotWhatsappUser)
        );
        // An SMS step reaches a number WhatsApp could not.
        let sms = ContactFacts {
            whatsapp: false,
            ..c
        };
        assert_eq!(admit(&facts(&s), &sms, now), Admission::Ready);
        let old = ContactRecord {
            undeliverable_at: Some(now - Duration::days(UNDELIVERABLE_DAYS)),
            ..Default::default()
        };
        let c = ContactFacts {
            contact: Some(&old),
            ..c
        };
        assert_eq!(admit(&facts(&s), &c, now), Admission::Ready);
        let c = ContactFacts {
            suppression: Some("open_case"),
            ..c
        };
        assert_eq!(
            admit(&facts(&s), &c, now),
            Admission::Exclude(ExclusionReason::Suppressed("open_case".into()))
        );
        let c = ContactFacts {
            suppression: None,
            portfolio_wait: Some("limit"),
            ..c
        };
        assert_eq!(
            admit(&facts(&s), &c, now),
            Admission::Wait {
                until: now + Duration::seconds(30),
                reason: WaitReason::Portfolio("limit".into())
            }
        );
        // The portfolio's limit counts WhatsApp recipients only.
        let sms = ContactFacts {
            whatsapp: false,
            ..c
        };
        assert_eq!(admit(&facts(&s), &sms, now), Admission::Ready);
    }

    #[test]
    fn rows_that_are_not_waiting_are_skipped_and_a_closed_window_excludes() {
        let s = schedule(r#"{"timezone":"UTC","end_at":"2026-11-22T11:00:00"}"#);
        let k = key();
        let mut r = row(&k);
        let now = at("2026-11-22T12:00:00Z");
        let c = bare(&k, &r);
        assert_eq!(
            admit(&facts(&s), &c, now),
            Admission::Exclude(ExclusionReason::OutsideWindow)
        );
        r.state = DispatchState::Claimed;
        let c = bare(&k, &r);
        assert_eq!(admit(&facts(&s), &c, now), Admission::Skip);
    }

    #[test]
    fn a_marketing_opt_out_holds_marketing_templates_only() {
        let s = schedule(r#"{"timezone":"UTC"}"#);
        let k = key();
        let r = row(&k);
        let now = at("2026-11-22T12:00:00Z");
        let marketing_only = ContactRecord {
            marketing_opted_out: true,
            ..Default::default()
        };
        let everything = ContactRecord {
            opted_out: true,
            ..Default::default()
        };
        fn with<'a>(base: ContactFacts<'a>, c: &'a ContactRecord) -> ContactFacts<'a> {
            ContactFacts {
                contact: Some(c),
                ..base
            }
        }
        let utility = CampaignFacts {
            marketing: false,
            ..facts(&s)
        };
        assert_eq!(
            admit(&facts(&s), &with(bare(&k, &r), &marketing_only), now),
            Admission::Exclude(ExclusionReason::OptedOut)
        );
        assert_eq!(
            admit(&utility, &with(bare(&k, &r), &marketing_only), now),
            Admission::Ready
        );
        assert_eq!(
            admit(&utility, &with(bare(&k, &r), &everything), now),
            Admission::Exclude(ExclusionReason::OptedOut)
        );
    }

    #[test]
    fn a_reply_after_the_timer_fired_still_cancels_the_follow_up() {
        use crate::store::StepRecord;
        let s = schedule(r#"{"timezone":"UTC"}"#);
        let k = key();
        let now = at("2026-11-22T12:00:00Z");
        let mut r = row(&k);
        r.step = "nudge".into();
        r.history.push(StepRecord {
            step: String::new(),
            state: DispatchState::Delivered,
            reason: None,
            wamid: Some("wamid.1".into()),
            attempts: 1,
            error_code: None,
            error_class: None,
            error_message: None,
            times: StageTimes::default(),
            sender: None,
            pricing: None,
        });
        let silence = ContactFacts {
            follows_silence: true,
            ..bare(&k, &r)
        };
        assert_eq!(admit(&facts(&s), &silence, now), Admission::Ready);
        r.history[0].times.replied = Some(now);
        let silence = ContactFacts {
            follows_silence: true,
            ..bare(&k, &r)
        };
        assert_eq!(
            admit(&facts(&s), &silence, now),
            Admission::Exclude(ExclusionReason::Replied)
        );
        // A drip step is not about silence: the reply does not stop it.
        assert_eq!(admit(&facts(&s), &bare(&k, &r), now), Admission::Ready);
    }
}
