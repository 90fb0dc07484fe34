use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::domain::campaign::CampaignSpec;
use crate::domain::state::{DispatchState, StageTimes};

fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap() + chrono::TimeDelta::minutes(minutes)
}

/// A spec of the seed's shape: primary, SMS fallback, follow-up on silence.
fn spec(steps: serde_json::Value) -> CampaignSpec {
    let json = serde_json::json!({
        "id": "reminder",
        "senders": ["1001"],
        "steps": steps,
    });
    CampaignSpec::from_json(json.to_string().as_bytes()).unwrap()
}

fn primary() -> serde_json::Value {
    serde_json::json!({"id": "primary", "template": {"name": "payment_reminder", "language": "es_MX", "body": ["{{name}}"]}})
}

fn problems(spec: &CampaignSpec) -> Vec<String> {
    spec.validate()
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn delays_parse_with_units_and_name_what_is_wrong() {
    assert_eq!(parse_delay("30s"), Ok(30));
    assert_eq!(parse_delay("20m"), Ok(1_200));
    assert_eq!(parse_delay("3d"), Ok(259_200));
    assert_eq!(parse_delay("1d12h"), Ok(129_600));
    assert!(parse_delay("3").unwrap_err().contains("no unit"));
    assert!(parse_delay("3w").unwrap_err().contains("'w' is not a unit"));
    assert!(parse_delay("d").unwrap_err().contains("needs a number"));
    assert!(parse_delay("").unwrap_err().contains("is empty"));
}

#[test]
fn delays_print_as_specs_write_them() {
    for text in ["30s", "20m", "3d", "1d12h", "2h5m7s"] {
        assert_eq!(delay_text(parse_delay(text).unwrap()), text);
    }
    assert_eq!(delay_text(0), "0s");
    assert_eq!(delay_text(86_400 * 7 + 60), "7d1m");
}

#[test]
fn a_spec_without_steps_is_a_one_step_journey() {
    let spec = CampaignSpec::from_json(
        br#"{"id": "c", "senders": ["1"], "template": {"name": "t", "language": "en"}}"#,
    )
    .unwrap();
    assert_eq!(spec.validate(), Ok(()));
    let journey = spec.journey().unwrap();
    assert_eq!(journey.steps.len(), 1);
    assert_eq!(journey.first_id(), PRIMARY_STEP);
    assert!(!journey.has_steps());
    assert!(journey.edges("").is_empty());
}

#[test]
fn the_seed_journey_plans_its_edges_and_moves_the_primary_template() {
    let spec = spec(serde_json::json!([
        primary(),
        {"id": "sms", "channel": "sms", "text": "Hola {{name}}", "when": {"after": "primary", "on": "failed"}},
        {"id": "nudge", "template": {"name": "payment_nudge", "language": "es_MX"},
         "when": {"after": "primary", "on": "no_reply", "delay": "3d"}},
    ]));
    assert_eq!(
        spec.template.name, "payment_reminder",
        "steps[0].template moved to template"
    );
    assert_eq!(spec.steps[0].template, None);
    assert_eq!(problems(&spec), Vec::<String>::new());
    let journey = spec.journey().unwrap();
    assert_eq!(
        journey.edges("primary"),
        vec![
            Edge {
                on: On::Failed,
                delay_secs: 0,
                to: "sms".into()
            },
            Edge {
                on: On::NoReply,
                delay_secs: 259_200,
                to: "nudge".into()
            },
        ]
    );
    assert!(journey.edges("sms").is_empty());
    assert_eq!(journey.name(""), "primary");
    assert_eq!(journey.name("nudge"), "nudge");
    assert_eq!(journey.when_text(""), None);
    assert_eq!(
        journey.when_text("sms").as_deref(),
        Some("on failed of primary")
    );
    assert_eq!(
        journey.when_text("nudge").as_deref(),
        Some("3d after no_reply of primary")
    );
    assert_eq!(journey.entered_on("nudge"), Some(On::NoReply));
    // Stored and read back, the spec is the same (normalised once).
    let again: CampaignSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(again, spec);
}

#[test]
fn validation_names_every_journey_problem() {
    let spec = spec(serde_json::json!([
        {"id": "primary", "template": {"name": "t", "language": "en"}, "when": {"after": "x", "on": "sent"}},
        {"id": "b", "template": {"name": "t2", "language": "en"}, "when": {"after": "nowhere", "on": "sent"}},
        {"id": "c", "channel": "sms", "when": {"after": "primary", "on": "no_reply"}},
        {"id": "d", "channel": "sms", "text": "hi", "when": {"after": "primary", "on": "read", "delay": "91d"}},
        {"id": "e", "channel": "sms", "text": "hi", "when": {"after": "primary", "on": "read", "delay": "1h"}},
        {"id": "Bad Id", "channel": "sms", "text": "hi {{", "when": {"after": "primary", "on": "sent"}},
        {"id": "g", "template": {"name": "", "language": "en"}},
        {"id": "e", "channel": "sms", "text": "x", "when": {"after": "primary", "on": "delivered", "delay": "5x"}},
    ]));
    let found = problems(&spec);
    let expect = [
        "steps[0].when: the first step is the primary message",
        "steps[1].when.after: \"nowhere\" is not the id of a step",
        "steps[2].text is missing",
        "steps[2].when.delay: no_reply needs a delay",
        "steps[3].when.delay: \"91d\" is longer than 90 days",
        "steps[4].when: steps[3] starts after primary on read already",
        "steps[5].id: \"Bad Id\" may contain only",
        "steps[5].text:",
        "steps[6].when is missing",
        "steps[6].template.name is missing",
        "steps[7].id: \"e\" is the id of steps[4] already",
        "steps[7].when.delay: \"5x\": 'x' is not a unit",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "no problem starting {e:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

#[test]
fn cycles_and_too_many_steps_are_named() {
    let spec = spec(serde_json::json!([
        primary(),
        {"id": "a", "channel": "sms", "text": "a", "when": {"after": "b", "on": "sent"}},
        {"id": "b", "channel": "sms", "text": "b", "when": {"after": "a", "on": "sent"}},
        {"id": "c", "channel": "sms", "text": "c", "when": {"after": "c", "on": "sent"}},
    ]));
    let found = problems(&spec);
    assert!(found.iter().any(|p| p == "steps[1].when.after: the steps a → b → a form a cycle; every step must lead back to the first"), "{found:#?}");
    assert!(
        found
            .iter()
            .any(|p| p == "steps[3].when.after: a step cannot follow itself"),
        "{found:#?}"
    );
    assert_eq!(found.len(), 2, "{found:#?}");

    let mut steps = vec![primary()];
    for i in 1..11 {
        steps.push(serde_json::json!({"id": format!("s{i}"), "channel": "sms", "text": "x",
            "when": {"after": if i == 1 { "primary".to_string() } else { format!("s{}", i - 1) }, "on": "sent"}}));
    }
    let found = problems(&spec_of(steps));
    assert_eq!(
        found,
        vec!["steps: has 11 steps; a journey has at most 10, the primary message included"]
    );
}

fn spec_of(steps: Vec<serde_json::Value>) -> CampaignSpec {
    spec(serde_json::Value::Array(steps))
}

#[test]
fn the_primary_is_a_whatsapp_step_given_once() {
    let json = serde_json::json!({
        "id": "c", "senders": ["1"],
        "template": {"name": "t", "language": "en"},
        "steps": [{"id": "p", "channel": "sms", "text": "x", "template": {"name": "u", "language": "en"}}],
    });
    let spec = CampaignSpec::from_json(json.to_string().as_bytes()).unwrap();
    let found = problems(&spec);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("steps[0].template: the primary template is given twice")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("steps[0].channel: the first step is the primary message")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("steps[0].template is for whatsapp steps")),
        "{found:#?}"
    );
}

#[test]
fn unknown_step_fields_are_named_with_their_path() {
    let json = serde_json::json!({
        "id": "c", "senders": ["1"],
        "steps": [primary(), {"id": "s", "channel": "sms", "txt": "x", "when": {"after": "primary", "on": "failed", "dealy": "1d"}}],
    });
    let err = CampaignSpec::from_json_validated(json.to_string().as_bytes()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("steps[1].txt is not a campaign spec field (did you mean text?)"),
        "{text}"
    );
    assert!(
        text.contains("steps[1].when.dealy is not a campaign spec field (did you mean delay?)"),
        "{text}"
    );
}

/// Facts of a step in `state` with every time it would have.
fn facts(state: DispatchState) -> StepFacts<'static> {
    use DispatchState::*;
    let rank = state.delivery_rank();
    StepFacts {
        state,
        reason: None,
        first: true,
        replied_before: false,
        times: Box::leak(Box::new(StageTimes {
            accepted: (rank >= 1).then(|| t(0)),
            sent: (rank >= 2).then(|| t(1)),
            delivered: (rank >= 3).then(|| t(2)),
            read: (rank >= 4).then(|| t(3)),
            replied: (state == Replied).then(|| t(4)),
            failed: (state == Failed).then(|| t(5)),
            excluded: (state == Excluded).then(|| t(6)),
            ..StageTimes::default()
        })),
    }
}

fn edge(on: On, minutes: u64, to: &str) -> Edge {
    Edge {
        on,
        delay_secs: minutes * 60,
        to: to.into(),
    }
}

#[test]
fn every_condition_starts_its_step_from_its_own_time() {
    use DispatchState::*;
    let cases = [
        (On::Failed, Failed, Some(t(5))),
        (On::Failed, Delivered, None),
        (On::NoReply, Accepted, Some(t(0))),
        (On::NoReply, Sent, Some(t(1))),
        (On::NoReply, Read, Some(t(1))),
        (On::NoReply, Replied, None),
        (On::NoReply, Failed, None),
        (On::Sent, Accepted, None),
        (On::Sent, Sent, Some(t(1))),
        (On::Sent, Read, Some(t(1))),
        (On::Delivered, Sent, None),
        (On::Delivered, Delivered, Some(t(2))),
        (On::Read, Delivered, None),
        (On::Read, Read, Some(t(3))),
        (On::Read, Replied, Some(t(3))),
    ];
    for (on, state, met) in cases {
        assert_eq!(facts(state).met_at(on), met, "{on:?} at {state:?}");
        let wait = next_wait(&[edge(on, 10, "next")], &facts(state));
        assert_eq!(
            wait.map(|w| w.due),
            met.map(|m| m + chrono::TimeDelta::minutes(10)),
            "{on:?} at {state:?}"
        );
    }
    // Read without delivered (normal on WhatsApp) still counts as delivered.
    let mut times = facts(DispatchState::Read).times.clone();
    times.delivered = None;
    let read = StepFacts {
        times: &times,
        ..facts(DispatchState::Read)
    };
    assert_eq!(read.met_at(On::Delivered), Some(t(3)));
    // Nothing follows a step that is not settled.
    for open in [Pending, Claimed, Deferred, Unknown] {
        assert_eq!(
            next_wait(&On::ALL.map(|on| edge(on, 0, "x")), &facts(open)),
            None,
            "{open:?}"
        );
    }
}

#[test]
fn a_reply_cancels_the_follow_up_and_leaves_the_drip() {
    let edges = [
        edge(On::NoReply, 60, "nudge"),
        edge(On::Read, 24 * 60, "tip"),
    ];
    let silent = facts(DispatchState::Read);
    assert_eq!(
        next_wait(&edges, &silent),
        Some(Wait {
            step: "nudge".into(),
            due: t(61)
        })
    );
    let replied = facts(DispatchState::Replied);
    assert_eq!(
        next_wait(&edges, &replied),
        Some(Wait {
            step: "tip".into(),
            due: t(3 + 24 * 60)
        })
    );
    // The timer entry of the cancelled follow-up fires nothing.
    assert!(!fires(
        next_wait(&edges, &replied).as_ref(),
        "nudge",
        t(100)
    ));
    assert!(fires(next_wait(&edges, &silent).as_ref(), "nudge", t(61)));
    assert!(
        !fires(next_wait(&edges, &silent).as_ref(), "nudge", t(60)),
        "not before it is due"
    );
}

#[test]
fn not_on_whatsapp_is_a_failure_and_missing_data_skips_a_later_step() {
    let edges = [edge(On::Failed, 0, "sms"), edge(On::Sent, 5, "next")];
    let mut unreachable = facts(DispatchState::Excluded);
    unreachable.reason = Some("not_whatsapp_user");
    assert_eq!(unreachable.end(), StepEnd::Failed(t(6)));
    assert_eq!(
        next_wait(&edges, &unreachable),
        Some(Wait {
            step: "sms".into(),
            due: t(6)
        })
    );

    let mut skipped = facts(DispatchState::Excluded);
    skipped.reason = Some("missing_variable:coupon");
    skipped.first = false;
    assert_eq!(skipped.end(), StepEnd::Skipped(t(6)));
    assert_eq!(
        next_wait(&edges, &skipped),
        Some(Wait {
            step: "next".into(),
            due: t(11)
        }),
        "goes on, timed from the skip"
    );

    // The primary without its data ends the journey, as a one-step campaign.
    skipped.first = true;
    assert_eq!(skipped.end(), StepEnd::Stopped);
    assert_eq!(next_wait(&edges, &skipped), None);
    // Stops end it at any step.
    for stop in [
        "opted_out",
        "suppressed:legal",
        "outside_window",
        "engaged_elsewhere",
    ] {
        let mut stopped = facts(DispatchState::Excluded);
        stopped.reason = Some(stop);
        stopped.first = false;
        assert_eq!(next_wait(&edges, &stopped), None, "{stop}");
    }
}

#[test]
fn the_first_follower_due_wins() {
    let edges = [
        edge(On::NoReply, 3 * 24 * 60, "nudge"),
        edge(On::Delivered, 60, "tip"),
        edge(On::Sent, 60, "same"),
    ];
    let wait = next_wait(&edges, &facts(DispatchState::Delivered)).unwrap();
    assert_eq!(
        wait,
        Wait {
            step: "same".into(),
            due: t(61)
        }
    );
}

#[test]
fn later_steps_freeze_per_contact_or_skip_with_the_reason() {
    use std::collections::BTreeMap;
    let spec = spec(serde_json::json!([
        primary(),
        {"id": "sms", "channel": "sms", "text": "Hola {{name}}, {{amount}}", "when": {"after": "primary", "on": "failed"}},
        {"id": "nudge", "template": {"name": "n", "language": "es_MX", "body": ["{{name}}"]},
         "when": {"after": "primary", "on": "no_reply", "delay": "1d"}},
    ]));
    let journey = spec.journey().unwrap();
    let mut variables = BTreeMap::new();
    variables.insert("name".to_string(), "Ana".to_string());
    let contact = crate::domain::ContactKey::raw("+5215512345678");
    let values = crate::domain::ContactValues {
        variables: &variables,
        phone: Some("+5215512345678"),
        name: None,
        timezone: None,
        user_id: None,
        tags: &crate::domain::NO_TAGS,
    };
    let frozen = journey.freeze_later(values, &contact);
    assert_eq!(frozen.len(), 2);
    assert_eq!(frozen[0].step, "sms");
    assert_eq!(
        frozen[0].content,
        FrozenStep::Skip("missing_variable:amount".into())
    );
    assert_eq!(frozen[1].step, "nudge");
    assert!(matches!(&frozen[1].content, FrozenStep::Template(p) if p.body.len() == 1));
}
