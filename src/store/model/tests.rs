//! The row's side of journeys: timers set by outcomes and statuses, the
//! move to the next step, statuses of earlier steps, with a fixed clock.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use super::*;
use crate::domain::{FrozenParam, FrozenStep, On, ParamKind};

fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap() + TimeDelta::minutes(minutes)
}

fn edge(on: On, minutes: u64, to: &str) -> Edge {
    Edge {
        on,
        delay_secs: minutes * 60,
        to: to.into(),
    }
}

fn params(text: &str) -> FrozenParams {
    FrozenParams {
        body: vec![FrozenParam {
            name: None,
            kind: ParamKind::Text(text.into()),
        }],
        ..FrozenParams::default()
    }
}

/// A contact of a journey: primary, then `sms` on failure, `nudge` an hour
/// after the send without a reply; `nudge` has a `tip` a day after it is
/// read.
fn staged() -> DispatchRecord {
    DispatchRecord::from_stage(&StageRequest {
        campaign_id: "c".into(),
        contact: ContactKey::raw("+5215512345678"),
        shard: 0,
        seq: 7,
        params: params("primary"),
        exclusion: None,
        send_after: None,
        timezone: None,
        tags: Vec::new(),
        name: None,
        staged_at: t(0),
        journey: StagedJourney {
            next: vec![edge(On::Failed, 0, "sms"), edge(On::NoReply, 60, "nudge")],
            later: vec![
                StepParams {
                    step: "sms".into(),
                    content: FrozenStep::Text("Hola Ana".into()),
                },
                StepParams {
                    step: "nudge".into(),
                    content: FrozenStep::Template(params("nudge")),
                },
                StepParams {
                    step: "tip".into(),
                    content: FrozenStep::Skip("missing_variable:coupon".into()),
                },
            ],
        },
    })
}

fn claimed(mut r: DispatchRecord, at: DateTime<Utc>) -> DispatchRecord {
    r.state = DispatchState::Claimed;
    r.attempts += 1;
    r.owner = Some("i/1".into());
    r.times.claimed = Some(at);
    r
}

fn status(state: DispatchState, wamid: &str, at: DateTime<Utc>) -> StatusUpdate {
    StatusUpdate {
        state,
        at,
        wamid: Some(wamid.into()),
        error_code: None,
        error_class: None,
        error_message: None,
        defer_until: None,
        deferral: None,
        pricing: None,
    }
}

#[test]
fn a_final_failure_sets_the_fallback_due_at_once_and_promotion_moves_the_row() {
    let mut r = claimed(staged(), t(1));
    assert_eq!(r.wait, None);
    r.apply_outcome(
        &Outcome::Failed {
            code: Some(131026),
            class: "recipient".into(),
            message: "not on WhatsApp".into(),
        },
        t(2),
    );
    assert_eq!(
        r.wait,
        Some(Wait {
            step: "sms".into(),
            due: t(2)
        })
    );
    assert!(
        !r.promote("nudge", Vec::new(), t(3), false),
        "not the step it waits for"
    );
    assert!(!r.promote("sms", Vec::new(), t(1), false), "not due yet");
    assert!(r.promote("sms", Vec::new(), t(2), false));
    assert_eq!(r.step, "sms");
    assert_eq!(r.state, DispatchState::Pending);
    assert_eq!(r.attempts, 0);
    assert_eq!(r.sms_text(), Some("Hola Ana"));
    assert_eq!(r.wait, None);
    assert_eq!(r.history.len(), 1);
    let primary = &r.history[0];
    assert_eq!(
        (primary.step.as_str(), primary.state),
        ("", DispatchState::Failed)
    );
    assert_eq!(primary.error_code, Some(131026));
    assert_eq!(primary.attempts, 1);
    assert!(r.claimable(t(2)));
    assert!(
        !r.promote("sms", Vec::new(), t(9), false),
        "a step starts once"
    );
}

#[test]
fn a_late_answer_of_the_step_before_is_not_the_new_steps() {
    // The failure came by webhook before the API answered; the fallback
    // started; then the primary's answer arrives.
    let mut r = claimed(staged(), t(1));
    r.apply_status(&StatusUpdate {
        error_code: Some(131026),
        error_class: Some("contact".into()),
        error_message: Some("not on WhatsApp".into()),
        ..status(DispatchState::Failed, "wamid.P", t(2))
    });
    assert!(r.promote("sms", Vec::new(), t(2), false));
    r.apply_outcome(
        &Outcome::Accepted {
            wamid: "wamid.P".into(),
            sender: None,
            held: None,
        },
        t(3),
    );
    assert_eq!((r.step.as_str(), r.state), ("sms", DispatchState::Pending));
    assert_eq!(r.wamid, None, "the SMS step has sent nothing");
    assert_eq!(r.times.accepted, None);
}

#[test]
fn a_reply_at_any_time_cancels_the_follow_up() {
    let mut r = claimed(staged(), t(1));
    r.apply_outcome(
        &Outcome::Accepted {
            wamid: "w1".into(),
            sender: None,
            held: None,
        },
        t(1),
    );
    assert_eq!(
        r.wait,
        Some(Wait {
            step: "nudge".into(),
            due: t(61)
        }),
        "the follow-up waits from the send"
    );
    r.apply_status(&status(DispatchState::Sent, "w1", t(2)));
    assert_eq!(
        r.wait.as_ref().map(|w| w.due),
        Some(t(62)),
        "timed from `sent` once known"
    );
    r.apply_status(&status(DispatchState::Replied, "w1", t(30)));
    assert_eq!(r.wait, None);
    assert!(
        !r.promote("nudge", Vec::new(), t(62), false),
        "its timer fires nothing"
    );
}

#[test]
fn statuses_of_an_earlier_step_stay_with_it() {
    let mut r = claimed(staged(), t(1));
    r.apply_outcome(
        &Outcome::Accepted {
            wamid: "w1".into(),
            sender: None,
            held: None,
        },
        t(1),
    );
    assert!(r.promote(
        "nudge",
        vec![edge(On::Read, 24 * 60, "tip"), edge(On::NoReply, 60, "x")],
        t(61),
        false
    ));
    assert_eq!(r.params, params("nudge"));
    let mut r = claimed(r, t(62));
    r.apply_outcome(
        &Outcome::Accepted {
            wamid: "w2".into(),
            sender: None,
            held: None,
        },
        t(62),
    );
    assert_eq!(r.wait.as_ref().map(|w| w.step.as_str()), Some("x"));
    // A late read of the primary changes the primary, not the nudge.
    assert!(r
        .apply_status(&status(DispatchState::Read, "w1", t(70)))
        .is_some());
    assert_eq!(r.history[0].state, DispatchState::Read);
    assert_eq!(r.state, DispatchState::Accepted);
    // The status names its own step (metrics, events): the primary's
    // ("" for the first) by its wamid, the current one otherwise.
    let late = status(DispatchState::Read, "w1", t(70));
    assert_eq!(r.status_step(&late), ("", DispatchState::Read));
    let now = status(DispatchState::Delivered, "w2", t(70));
    assert_eq!(r.status_step(&now), ("nudge", DispatchState::Accepted));
    // A reply to the primary cancels the nudge's own follow-up on silence.
    r.apply_status(&status(DispatchState::Replied, "w1", t(71)));
    assert_eq!(r.history[0].state, DispatchState::Replied);
    assert_eq!(r.wait, None);
    // The nudge's read still starts the drip: a step the contact lacks data
    // for is skipped and the journey goes on from there.
    r.apply_status(&status(DispatchState::Read, "w2", t(80)));
    assert_eq!(
        r.wait,
        Some(Wait {
            step: "tip".into(),
            due: t(80 + 24 * 60)
        })
    );
    assert!(r.promote(
        "tip",
        vec![edge(On::Sent, 5, "after-tip")],
        t(80 + 24 * 60),
        false
    ));
    assert_eq!(r.state, DispatchState::Excluded);
    assert_eq!(r.reason.as_deref(), Some("missing_variable:coupon"));
    assert_eq!(
        r.wait,
        Some(Wait {
            step: "after-tip".into(),
            due: t(85 + 24 * 60)
        })
    );
    assert_eq!(r.history.len(), 2);
}

#[test]
fn stops_end_the_journey_and_an_ended_campaign_forces_the_wait() {
    let mut r = claimed(staged(), t(1));
    r.apply_outcome(
        &Outcome::Excluded {
            reason: ExclusionReason::OptedOut,
        },
        t(1),
    );
    assert_eq!(r.wait, None, "an opt-out at the claim ends the journey");

    let mut r = claimed(staged(), t(1));
    r.apply_outcome(
        &Outcome::Accepted {
            wamid: "w1".into(),
            sender: None,
            held: None,
        },
        t(1),
    );
    assert!(!r.promote("nudge", Vec::new(), t(5), false));
    assert!(
        r.promote("nudge", Vec::new(), t(5), true),
        "forced when the campaign ended"
    );
    assert_eq!(
        r.state,
        DispatchState::Pending,
        "its claim ends it as outside_window"
    );

    // A step staged before the spec had it is skipped with the reason.
    let mut r = claimed(staged(), t(1));
    r.later.clear();
    r.apply_outcome(
        &Outcome::Accepted {
            wamid: "w1".into(),
            sender: None,
            held: None,
        },
        t(1),
    );
    assert!(r.promote("nudge", Vec::new(), t(61), false));
    assert_eq!(r.reason.as_deref(), Some("invalid_field:steps.nudge"));
}

#[test]
fn a_conversion_is_the_journeys_once_and_may_stop_what_is_left() {
    let paid = crate::domain::Conversion {
        goal: "payment_made".into(),
        at: t(30),
        value: Some(500.0),
        currency: Some("MXN".into()),
    };
    let stop = ExclusionReason::Converted("payment_made".into());
    // Sent, the follow-up's timer set: the conversion stops the follow-up.
    let mut r = claimed(staged(), t(1));
    r.apply_outcome(
        &Outcome::Accepted {
            wamid: "w1".into(),
            sender: None,
            held: None,
        },
        t(1),
    );
    assert!(r.wait.is_some());
    let applied = r.convert(&paid, Some(&stop), t(31));
    assert_eq!(
        applied,
        ConversionApplied::Recorded(Converted {
            step: String::new(),
            stopped: Some(JourneyStop {
                step: String::new(),
                excluded: false,
            }),
        })
    );
    assert_eq!(
        r.state,
        DispatchState::Accepted,
        "the message that left stays"
    );
    assert_eq!((r.wait.as_ref(), r.next.len()), (None, 0));
    assert_eq!(r.stopped.as_deref(), Some("converted:payment_made"));
    assert_eq!(r.conversion.as_ref(), Some(&paid));
    // The same record again, and another conversion: the first stays.
    assert_eq!(
        r.convert(&paid, Some(&stop), t(32)),
        ConversionApplied::Duplicate {
            redelivered: true,
            step: String::new(),
            stopped: true,
        }
    );
    let other = crate::domain::Conversion {
        value: Some(90.0),
        ..paid.clone()
    };
    assert!(matches!(
        r.convert(&other, Some(&stop), t(33)),
        ConversionApplied::Duplicate {
            redelivered: false,
            ..
        }
    ));
    assert_eq!(r.conversion.as_ref().and_then(|c| c.value), Some(500.0));

    // Not claimed yet: excluded with the reason.
    let mut r = staged();
    let applied = r.convert(&paid, Some(&stop), t(31));
    assert!(matches!(
        applied,
        ConversionApplied::Recorded(Converted {
            stopped: Some(JourneyStop { excluded: true, .. }),
            ..
        })
    ));
    assert_eq!(
        (r.state, r.reason.as_deref()),
        (DispatchState::Excluded, Some("converted:payment_made"))
    );

    // A goal that does not stop the journey only records.
    let mut r = staged();
    assert_eq!(
        r.convert(&paid, None, t(31)),
        ConversionApplied::Recorded(Converted {
            step: String::new(),
            stopped: None,
        })
    );
    assert_eq!(r.state, DispatchState::Pending);
    assert!(!r.next.is_empty());
}

#[test]
fn a_row_without_journey_fields_reads_as_a_one_step_journey() {
    let mut r = staged();
    r.next.clear();
    r.later.clear();
    let json = serde_json::to_string(&r).unwrap();
    for field in [
        "\"step\"",
        "\"next\"",
        "\"wait\"",
        "\"history\"",
        "\"later\"",
    ] {
        assert!(
            !json.contains(field),
            "{field} written for a one-step row: {json}"
        );
    }
    let back: DispatchRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn a_held_message_is_accepted_not_flowing_until_a_status_moves_it() {
    let mut r = claimed(staged(), t(1));
    r.apply_outcome(
        &Outcome::Accepted {
            wamid: "w1".into(),
            sender: Some("106540352242922".into()),
            held: Some("held_for_quality_assessment".into()),
        },
        t(1),
    );
    assert_eq!(r.state, DispatchState::Accepted);
    assert_eq!(r.reason.as_deref(), Some("held_for_quality_assessment"));
    assert_eq!(r.sender.as_deref(), Some("106540352242922"));
    let mut sent = status(DispatchState::Sent, "w1", t(5));
    sent.pricing = Some(crate::domain::Pricing {
        category: "marketing".into(),
        billable: true,
        model: Some("PMP".into()),
        kind: Some("regular".into()),
        country: None,
    });
    assert!(r.apply_status(&sent).is_some());
    assert_eq!(r.reason, None, "sent: held no more");
    let pricing = r.status_pricing(&sent).expect("recorded");
    assert_eq!(pricing.country.as_deref(), Some("MX"), "{pricing:?}");
    // The step's sender and pricing go with it into the history.
    assert!(r.promote("nudge", Vec::new(), t(70), false));
    assert_eq!(r.sender, None);
    assert_eq!(r.pricing, None);
    assert_eq!(r.history[0].sender.as_deref(), Some("106540352242922"));
    assert_eq!(
        r.status_pricing(&sent).map(|p| p.category.as_str()),
        Some("marketing"),
        "a status of the primary finds its pricing in the history"
    );
}

#[test]
fn a_linked_identity_adds_its_opt_outs() {
    let mut phone = ContactRecord::default();
    let user = ContactRecord {
        opted_out: true,
        opted_out_at: Some(chrono::Utc::now()),
        marketing_opted_out: true,
        ..Default::default()
    };
    phone.merge_linked(&user);
    assert!(phone.opted_out_of(false));
    assert_eq!(phone.opted_out_at, user.opted_out_at);
    assert!(phone.marketing_opted_out);
    // Nothing is taken back by an identity that did not opt out.
    let mut out = user.clone();
    out.merge_linked(&ContactRecord::default());
    assert!(out.opted_out && out.marketing_opted_out);
}

/// A claim moves one contact from `pending` to `claimed`, for the campaign
/// and for its first step, and changes no other counter; the counters of a
/// new row are its own.
#[test]
fn a_change_counts_the_row_after_minus_the_row_before() {
    let mut row = staged();
    let fresh = tally_change(None, &row);
    assert_eq!(fresh.get(&Counter::Staged), Some(&1.0));
    let was = row.tally();
    row.state = DispatchState::Claimed;
    let change = tally_change(Some(&was), &row);
    let state = |step: Option<&str>, state| Counter::State {
        step: step.map(str::to_string),
        state,
    };
    assert_eq!(
        change,
        std::collections::BTreeMap::from([
            (state(None, DispatchState::Pending), -1.0),
            (state(None, DispatchState::Claimed), 1.0),
            (state(Some(""), DispatchState::Pending), -1.0),
            (state(Some(""), DispatchState::Claimed), 1.0),
        ])
    );
    assert!(tally_change(Some(&row.tally()), &row).is_empty());
}
