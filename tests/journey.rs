//! Journeys end to end in one process: Kafka (mock cluster) → ingest with
//! the later steps frozen → the pump firing timers from the store → the
//! sandbox → webhooks back. Each test checks, contact by contact, that a
//! step reached exactly the contacts its condition names, and that the
//! sandbox never got one step twice.

mod common;

use std::time::Duration;

use common::*;
use wadispatch::app::{self, Daemon};
use wadispatch::domain::DispatchState;
use wadispatch::report::CampaignSummary;
use wadispatch::sandbox::FailureRule;
use wadispatch::store::DispatchRecord;

const SENDER: &str = "1001";

/// A journey campaign: the primary template, then `later` steps (JSON).
fn spec(id: &str, later: &str) -> String {
    format!(
        r#"{{"id":"{id}","name":"j","state":"active","senders":["{SENDER}"],
            "pacing":{{"per_second":400}},
            "steps":[{{"id":"primary","template":{{"name":"promo","language":"es_MX","category":"marketing","body":["{{{{name}}}}"]}}}},
                     {later}]}}"#
    )
}

/// A later WhatsApp step of template `name`.
fn step(id: &str, name: &str, after: &str, on: &str, delay: &str) -> String {
    format!(
        r#"{{"id":"{id}","template":{{"name":"{name}","language":"es_MX","category":"marketing","body":["{{{{name}}}}"]}},
            "when":{{"after":"{after}","on":"{on}","delay":"{delay}"}}}}"#
    )
}

/// Contacts ending in 13 fail for good (131026), by webhook, on every
/// message; nobody sends STOP.
async fn world() -> World {
    let rule = FailureRule {
        suffix: "13".into(),
        code: 131026,
        stage: Default::default(),
    };
    World::start(&[(SENDER, 500.0)], vec![rule]).await
}

async fn start(w: &World, id: &str, spec: &str, contacts: u32) -> Daemon {
    let p = w.kafka.producer();
    publish(&p, &w.config.kafka.topics.campaigns, id, spec).await;
    let records: Vec<(String, String)> = (0..contacts)
        .map(|i| {
            let phone = phone(i);
            let value = format!(
                r#"{{"campaign_id":"{id}","contact":{{"phone":"{phone}","name":"N{i}"}}}}"#
            );
            (phone, value)
        })
        .collect();
    publish_all(&p, &w.config.kafka.topics.audience, &records).await;
    let store = app::open_store(&w.config).await.unwrap();
    Daemon::start(w.config.clone(), store).await.unwrap()
}

/// Every row of the campaign once its journeys are all final (no contact
/// pending, claimed, deferred or waiting for a timer).
async fn final_rows(daemon: &Daemon, id: &str, staged: u64) -> Vec<DispatchRecord> {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let s = CampaignSummary::compute(daemon.store.as_ref(), id)
            .await
            .unwrap();
        if s.staged == staged && s.open() == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} not final: {:?}, {} waiting",
            s.contacts.by_state,
            s.waiting
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = daemon
            .store
            .scan_dispatches(id, after.as_ref(), 1_000)
            .await
            .unwrap();
        after = page.last().map(|r| r.contact.clone());
        let done = page.len() < 1_000;
        rows.extend(page);
        if done {
            return rows;
        }
    }
}

/// The campaign's observed state as `/campaigns` shows it.
async fn observed(daemon: &Daemon, id: &str) -> String {
    let body: serde_json::Value = reqwest::get(format!("http://{}/campaigns", daemon.admin_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .and_then(|c| c["observed_state"].as_str())
        .unwrap_or_default()
        .to_string()
}

async fn wait_completed(daemon: &Daemon, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while observed(daemon, id).await != "completed" {
        assert!(
            std::time::Instant::now() < deadline,
            "{id}: {}",
            observed(daemon, id).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The record of step `id` ("" is the primary) in a row: its history or
/// the current step.
fn step_state(row: &DispatchRecord, id: &str) -> Option<DispatchState> {
    if row.step == id {
        return Some(row.state);
    }
    row.history.iter().find(|h| h.step == id).map(|h| h.state)
}

fn fails(row: &DispatchRecord) -> bool {
    row.contact.as_str().ends_with("13")
}

#[test]
fn the_follow_up_reaches_exactly_the_contacts_that_did_not_reply() {
    app::system().block_on(async {
        let w = world().await;
        let id = "follow-up";
        let later = step("nudge", "nudge", "primary", "no_reply", "3s");
        let daemon = start(&w, id, &spec(id, &later), 400).await;
        let rows = final_rows(&daemon, id, 400).await;
        let (mut replied, mut silent) = (0, 0);
        for row in &rows {
            let primary = step_state(row, "").unwrap();
            let nudged = step_state(row, "nudge");
            match primary {
                DispatchState::Replied => {
                    replied += 1;
                    assert_eq!(nudged, None, "a reply cancels the follow-up: {row:?}");
                }
                DispatchState::Failed => {
                    assert!(fails(row), "{row:?}");
                    assert_eq!(nudged, None, "no follow-up of a failure: {row:?}");
                }
                _ => {
                    silent += 1;
                    assert!(
                        nudged.is_some_and(|s| s.delivery_rank() > 0),
                        "a silent contact gets the follow-up: {row:?}"
                    );
                }
            }
            assert_eq!(row.wait, None);
        }
        assert!(
            replied > 0 && silent > 0,
            "{replied} replied, {silent} silent"
        );
        let stats = w.sandbox.stats();
        assert_eq!(stats.duplicate_recipients, 0, "no step sent twice");
        assert_eq!(stats.per_recipient_max, 2);
        assert_eq!(
            stats.accepted,
            400 + silent,
            "every primary and each follow-up"
        );
        wait_completed(&daemon, id).await;
        daemon.shutdown(Duration::from_secs(5)).await;
    });
}

#[test]
fn the_fallback_reaches_exactly_the_contacts_whose_message_failed() {
    app::system().block_on(async {
        let w = world().await;
        let id = "fallback";
        let later = step("retry", "promo_b", "primary", "failed", "0s");
        let daemon = start(&w, id, &spec(id, &later), 300).await;
        // Every row final is not enough: an accepted primary whose failure
        // webhook is still on its way looks final until it comes.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let rows = loop {
            let rows = final_rows(&daemon, id, 300).await;
            if rows
                .iter()
                .filter(|r| fails(r))
                .all(|r| step_state(r, "retry").is_some())
            {
                break rows;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the failure webhooks never came"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut fell_back = 0;
        for row in &rows {
            let fallback = step_state(row, "retry");
            if fails(row) {
                fell_back += 1;
                assert_eq!(step_state(row, ""), Some(DispatchState::Failed), "{row:?}");
                // The fallback started, and its claim found the number
                // undeliverable on WhatsApp (the primary's 131026): the
                // rules of every claim spare a second message that cannot
                // arrive. (An SMS fallback is what reaches such contacts.)
                assert_eq!(fallback, Some(DispatchState::Excluded), "{row:?}");
                assert_eq!(row.reason.as_deref(), Some("not_whatsapp_user"));
                assert_eq!(row.history.len(), 1);
            } else {
                assert_eq!(fallback, None, "{row:?}");
                assert!(row.history.is_empty());
            }
        }
        assert_eq!(fell_back, 3, "contacts 13, 113 and 213");
        let stats = w.sandbox.stats();
        assert_eq!(stats.duplicate_recipients, 0);
        assert_eq!(stats.accepted, 300);
        wait_completed(&daemon, id).await;
        daemon.shutdown(Duration::from_secs(5)).await;
    });
}

#[test]
fn a_drip_of_three_steps_goes_in_order_and_completes() {
    app::system().block_on(async {
        let w = world().await;
        let id = "drip";
        let later = format!(
            "{},{}",
            step("tip1", "tip_one", "primary", "sent", "1s"),
            step("tip2", "tip_two", "tip1", "delivered", "1s")
        );
        let daemon = start(&w, id, &spec(id, &later), 200).await;
        let rows = final_rows(&daemon, id, 200).await;
        for row in rows.iter().filter(|r| !fails(r)) {
            assert_eq!(row.step, "tip2", "{row:?}");
            let steps: Vec<&str> = row.history.iter().map(|h| h.step.as_str()).collect();
            assert_eq!(steps, ["", "tip1"], "{row:?}");
            // Each step began its delay after the condition was met (status
            // times as the webhooks give them).
            let (primary, tip1) = (&row.history[0].times, &row.history[1].times);
            let delay = chrono::Duration::seconds(1);
            let sent = primary.sent.or(primary.delivered).or(primary.read);
            assert!(
                sent.is_some_and(|t| t + delay <= tip1.staged.unwrap()),
                "{row:?}"
            );
            let delivered = tip1.delivered.or(tip1.read).or(tip1.replied);
            assert!(
                delivered.is_some_and(|t| t + delay <= row.times.staged.unwrap()),
                "{row:?}"
            );
            assert!(row.state.delivery_rank() > 0, "{row:?}");
        }
        let stats = w.sandbox.stats();
        assert_eq!(stats.duplicate_recipients, 0);
        assert_eq!(stats.per_recipient_max, 3);
        assert_eq!(
            stats.accepted,
            2 + 198 * 3,
            "2 contacts fail at the primary"
        );
        wait_completed(&daemon, id).await;
        daemon.shutdown(Duration::from_secs(5)).await;
    });
}

#[test]
fn ending_the_campaign_ends_the_journeys_still_waiting() {
    app::system().block_on(async {
        let w = world().await;
        let id = "ends";
        let later = step("nudge", "nudge", "primary", "no_reply", "1h");
        let daemon = start(&w, id, &spec(id, &later), 100).await;
        // Every primary out and its follow-up waiting an hour.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s = CampaignSummary::compute(daemon.store.as_ref(), id)
                .await
                .unwrap();
            let replied = s.count(DispatchState::Replied);
            let failed = s.count(DispatchState::Failed);
            if s.staged == 100 && s.waiting > 0 && s.waiting + replied + failed == 100 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(observed(&daemon, id).await, "active", "waiting is not done");
        let ended = spec(id, &later).replace(r#""state":"active""#, r#""state":"ended""#);
        publish(
            &w.kafka.producer(),
            &w.config.kafka.topics.campaigns,
            id,
            &ended,
        )
        .await;
        let rows = final_rows(&daemon, id, 100).await;
        let waited = rows.iter().filter(|r| r.step == "nudge").count();
        assert!(waited > 0);
        for row in rows.iter().filter(|r| r.step == "nudge") {
            assert_eq!(row.state, DispatchState::Excluded, "{row:?}");
            assert_eq!(row.reason.as_deref(), Some("outside_window"));
        }
        assert_eq!(w.sandbox.stats().accepted, 100, "no follow-up went");
        daemon.shutdown(Duration::from_secs(5)).await;
    });
}

/// The world with the sandbox's SMS API as the SMS provider, its delivery
/// reports posted to the daemon's webhook listener.
fn with_sms(w: &mut World) {
    use wadispatch::config::{Secret, SmsConfig};
    let listen = w.config.http.listen.clone();
    w.config.sms = SmsConfig {
        api_base_url: Some(w.sandbox.base_url()),
        api_key: Some(Secret::new("sms-key")),
        default_sender: Some("InfoSMS".into()),
        report_url: Some(format!("http://{listen}/sms/reports")),
        report_password: Some(Secret::new("report-pw")),
        ..SmsConfig::default()
    };
}

#[test]
fn the_sms_fallback_reaches_exactly_the_contacts_whatsapp_failed() {
    app::system().block_on(async {
        // 13 and 78 fail on WhatsApp; by SMS, 78 is undeliverable.
        let rules = ["13", "78"]
            .map(|suffix| FailureRule {
                suffix: suffix.into(),
                code: 131026,
                stage: Default::default(),
            })
            .to_vec();
        let mut w = World::start(&[(SENDER, 500.0)], rules).await;
        with_sms(&mut w);
        let id = "sms-fallback";
        let later = r#"{"id":"sms","channel":"sms","text":"Hola {{name}}, te escribimos por SMS",
                        "when":{"after":"primary","on":"failed"}}"#;
        let daemon = start(&w, id, &spec(id, later), 300).await;
        // An accepted SMS is final until its report says more: wait for the
        // six reports (answered 200 only once applied).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while w.sandbox.stats().sms.reports_sent < 6 {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                w.sandbox.stats().sms
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rows = final_rows(&daemon, id, 300).await;
        let mut by_sms = 0;
        for row in &rows {
            let number = row.contact.as_str();
            let failed_on_whatsapp = number.ends_with("13") || number.ends_with("78");
            let sms = step_state(row, "sms");
            if !failed_on_whatsapp {
                assert_eq!(sms, None, "{row:?}");
                continue;
            }
            by_sms += 1;
            assert_eq!(step_state(row, ""), Some(DispatchState::Failed), "{row:?}");
            assert!(
                row.wamid
                    .as_deref()
                    .is_some_and(|id| id.starts_with("SBXSMS")),
                "{row:?}"
            );
            if number.ends_with("78") {
                assert_eq!(sms, Some(DispatchState::Failed), "{row:?}");
                assert_eq!(row.error_code, Some(27), "absent subscriber: {row:?}");
            } else {
                assert_eq!(sms, Some(DispatchState::Delivered), "{row:?}");
            }
        }
        assert_eq!(by_sms, 6, "13, 113, 213, 78, 178, 278");
        let stats = w.sandbox.stats();
        assert_eq!(stats.sms.accepted, 6);
        assert_eq!(stats.sms.duplicate_recipients, 0);
        assert_eq!(stats.sms.reports_sent, 6);
        assert_eq!(stats.duplicate_recipients, 0);
        assert_eq!(stats.accepted, 300, "WhatsApp: the primaries alone");
        wait_completed(&daemon, id).await;
        funnel_per_step(&daemon, id).await;
        daemon.shutdown(Duration::from_secs(5)).await;
    });
}

/// The funnel of the SMS fallback journey step by step, as `report` and
/// the metrics show it: 300 primaries, 6 of them failed; the fallback
/// reached those 6, delivered to the 3 ending in 13.
async fn funnel_per_step(daemon: &Daemon, id: &str) {
    let store = daemon.store.as_ref();
    let s = CampaignSummary::compute(store, id).await.unwrap();
    let spec = store.get_campaign(id).await.unwrap().unwrap().spec;
    let journey = spec.journey().unwrap();
    let steps = s.steps_view(Some(&journey));
    assert_eq!(steps.len(), 2, "{steps:?}");
    let (primary, sms) = (&steps[0], &steps[1]);
    assert_eq!(
        (primary.step.as_str(), primary.channel),
        ("primary", "whatsapp")
    );
    assert_eq!(primary.entered, 300);
    assert_eq!(primary.tally.count(DispatchState::Failed), 6);
    assert_eq!((sms.step.as_str(), sms.channel), ("sms", "sms"));
    assert_eq!(sms.when.as_deref(), Some("on failed of primary"));
    assert_eq!(sms.entered, 6);
    assert_eq!(sms.tally.reached(DispatchState::Delivered), 3);
    assert_eq!(sms.tally.count(DispatchState::Failed), 3, "the 78s");
    // A message that failed never counts as sent (as for the campaign).
    assert_eq!(sms.ratios.received_by, Some(100.0), "3 delivered of 3 sent");
    assert_eq!(
        (sms.ratios.read_by, sms.ratios.replied_by),
        (None, None),
        "SMS has no read receipts and no replies here"
    );
    let text = s.render(Some(&journey));
    assert!(
        text.contains("step sms (sms, on failed of primary)"),
        "{text}"
    );

    // The export: one column group per step.
    let mut buf = Vec::new();
    let csv = wadispatch::report::Format::Csv;
    let options = wadispatch::report::ExportOptions::default();
    wadispatch::report::export(store, id, csv, Some(&spec), options, &mut buf, None)
        .await
        .unwrap();
    let out = String::from_utf8(buf).unwrap();
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with(
            "contact,occurrence,name,tags,step,primary.template,primary.language,primary.state,primary.reason,"
        ),
        "{header}"
    );
    assert!(
        header.contains(",sms.template,sms.language,sms.state,sms.reason,"),
        "{header}"
    );
    let fallback = out
        .lines()
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|cells| cells[4] == "sms" && cells[7] == "failed" && !cells[5].is_empty())
        .count();
    assert_eq!(fallback, 6, "rows at step sms whose primary failed:\n{out}");

    // The metrics: the fallback's deliveries are counted under its step.
    let metrics = wadispatch::metrics::metrics().render();
    let counted = |step: &str, stage: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("wadispatch_funnel_total{"))
            .filter(|l| l.contains(&format!("campaign=\"{id}\"")))
            .filter(|l| l.contains(&format!("step=\"{step}\"")))
            .filter(|l| l.contains(&format!("stage=\"{stage}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(counted("sms", "delivered"), 3.0, "{metrics}");
    assert_eq!(counted("sms", "failed"), 3.0);
    assert_eq!(counted("primary", "failed"), 6.0);
}
