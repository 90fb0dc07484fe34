//! The dispatch engine end to end in one process: Kafka (mock cluster) →
//! ingest → store → campaign and sender actors → sandbox → signed webhooks
//! back → store. Assertions are about what users see: every contact final,
//! nobody messaged twice, exclusivity, pause and reload.

mod common;

use std::time::Duration;

use common::*;
use wadispatch::app::{self, Daemon};
use wadispatch::config::{CampaignOverride, SenderConfig};
use wadispatch::domain::DispatchState;
use wadispatch::report::CampaignSummary;
use wadispatch::sandbox::{FailureRule, Sandbox, SandboxConfig};

fn spec(id: &str, senders: &[&str], per_second: f64, exclusive: bool) -> String {
    let senders: Vec<String> = senders.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"{{"id":"{id}","name":"t","state":"active","senders":[{}],"exclusive":{exclusive},
            "template":{{"name":"promo","language":"es_MX","category":"marketing","body":["{{{{name}}}}"]}},
            "pacing":{{"per_second":{per_second}}}}}"#,
        senders.join(",")
    )
}

fn audience(campaign: &str, i: u32) -> (String, String) {
    let p = phone(i);
    (
        p.clone(),
        format!(r#"{{"campaign_id":"{campaign}","contact":{{"phone":"{p}","name":"N{i}"}}}}"#),
    )
}

/// The world of these tests: a sandbox whose failures are all final (no
/// 24 h deferrals, so every contact can end final within the test) and
/// come by webhook.
async fn world(senders: &[(&str, f64)]) -> World {
    let rules = [("13", 131026), ("50", 131050)]
        .into_iter()
        .map(|(suffix, code)| FailureRule {
            suffix: suffix.into(),
            code,
            stage: Default::default(),
        })
        .collect();
    World::start(senders, rules).await
}

async fn publish_campaign(w: &World, id: &str, spec: &str, contacts: std::ops::Range<u32>) {
    let p = w.kafka.producer();
    publish(&p, &w.config.kafka.topics.campaigns, id, spec).await;
    let records: Vec<(String, String)> = contacts.map(|i| audience(id, i)).collect();
    publish_all(&p, &w.config.kafka.topics.audience, &records).await;
}

/// The summary once `failed` contacts of `id` are failed (webhooks arrive
/// after the API answers that end `wait_done`).
async fn wait_failed(daemon: &Daemon, id: &str, failed: u64) -> CampaignSummary {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = summary(daemon, id).await;
        if s.count(DispatchState::Failed) >= failed {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id}: {failed} failures expected: {:?}",
            s.contacts.by_state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_campaign_over_four_senders_completes_without_duplicates() {
    app::system().block_on(async {
        let senders = [
            ("1001", 500.0),
            ("1002", 500.0),
            ("1003", 500.0),
            ("1004", 500.0),
        ];
        let w = world(&senders).await;
        publish_campaign(
            &w,
            "big",
            &spec("big", &["1001", "1002", "1003", "1004"], 2000.0, true),
            0..5_000,
        )
        .await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let s = wait_done(&daemon, "big", 5_000, Duration::from_secs(120)).await;
        let stats = w.sandbox.stats();
        assert_eq!(
            stats.duplicate_recipients, 0,
            "nobody got the campaign twice"
        );
        assert_eq!(stats.per_recipient_max, 1);
        // Nobody was given up on unsent, or left not knowing: every contact
        // got its request, and the API accepted each one (the failures came
        // later, by webhook).
        assert_eq!(
            s.count(DispatchState::Unknown),
            0,
            "{:?}",
            s.contacts.by_state
        );
        assert_eq!(s.excluded(), 0, "{:?}", s.contacts.excluded_by_reason);
        assert_eq!(
            stats.recipients,
            s.reached(DispatchState::Accepted) + s.count(DispatchState::Failed),
            "{:?}",
            s.contacts.by_state
        );
        assert_eq!(stats.recipients, 5_000);
        assert!(
            stats.per_number.len() == 4,
            "all four senders were used: {:?}",
            stats.per_number
        );
        assert!(
            s.count(DispatchState::Failed) > 0,
            "numbers ending in 13 or 50 failed by webhook"
        );
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

#[test]
fn overlapping_exclusive_campaigns_never_reach_the_same_contact() {
    app::system().block_on(async {
        let mut w = world(&[("2001", 800.0), ("2002", 800.0)]).await;
        // ex-b waits (paused) until ex-a has completed: a completed
        // exclusive campaign still holds its contacts.
        w.config.campaigns.insert(
            "ex-b".into(),
            CampaignOverride {
                per_second: None,
                per_hour: None,
                paused: true,
                marketing_messages: None,
            },
        );
        publish_campaign(&w, "ex-a", &spec("ex-a", &["2001"], 800.0, true), 0..1_500).await;
        publish_campaign(
            &w,
            "ex-b",
            &spec("ex-b", &["2002"], 800.0, true),
            500..2_000,
        )
        .await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        wait_done(&daemon, "ex-a", 1_500, Duration::from_secs(120)).await;
        // The failure webhooks come after the answers: wait for all of
        // them (15 numbers ending in 13, 15 in 50), so that ex-b knows what
        // ex-a learned.
        let a = wait_failed(&daemon, "ex-a", 30).await;
        let mut resumed = w.config.clone();
        resumed.campaigns.remove("ex-b");
        daemon.apply(resumed).await;
        wait_done(&daemon, "ex-b", 1_500, Duration::from_secs(120)).await;
        let b = wait_failed(&daemon, "ex-b", 10).await;
        let stats = w.sandbox.stats();
        assert_eq!(
            stats.per_recipient_max, 1,
            "no contact received both exclusive campaigns"
        );
        assert_eq!(a.contacts.excluded_by_reason.get("engaged_elsewhere"), None);
        let engaged = b
            .contacts
            .excluded_by_reason
            .get("engaged_elsewhere")
            .copied()
            .unwrap_or(0);
        // The 1,000 shared contacts (500..1500) are all excluded from ex-b:
        // the 10 ending in 13 as undeliverable and the 10 ending in 50 as
        // (marketing) opted out, both learned from ex-a's failures; the
        // other 980 as engaged by ex-a.
        assert_eq!(b.excluded(), 1_000, "{:?}", b.contacts.excluded_by_reason);
        assert_eq!(engaged, 980, "{:?}", b.contacts.excluded_by_reason);
        assert_eq!(
            b.contacts
                .excluded_by_reason
                .get("not_whatsapp_user")
                .copied(),
            Some(10),
            "{:?}",
            b.contacts.excluded_by_reason
        );
        assert_eq!(
            b.contacts.excluded_by_reason.get("opted_out").copied(),
            Some(10),
            "{:?}",
            b.contacts.excluded_by_reason
        );
        // ex-b reaches its own 500 (1500..2000): 490 accepted and beyond,
        // 10 failed by the sandbox's rules.
        assert_eq!(
            b.reached(DispatchState::Accepted),
            490,
            "{:?}",
            b.contacts.by_state
        );
        assert_eq!(
            b.count(DispatchState::Failed),
            10,
            "{:?}",
            b.contacts.by_state
        );
        assert_eq!(
            a.count(DispatchState::Failed),
            30,
            "{:?}",
            a.contacts.by_state
        );
        assert_eq!(
            a.reached(DispatchState::Accepted),
            1_470,
            "{:?}",
            a.contacts.by_state
        );
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

#[test]
fn pause_sends_nothing_and_resume_finishes() {
    app::system().block_on(async {
        let mut w = world(&[("3001", 200.0)]).await;
        // Paused by the operator from the start.
        w.config.campaigns.insert(
            "paced".into(),
            CampaignOverride {
                per_second: None,
                per_hour: None,
                paused: true,
                marketing_messages: None,
            },
        );
        publish_campaign(
            &w,
            "paced",
            &spec("paced", &["3001"], 400.0, false),
            0..1_000,
        )
        .await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        wait_until(Duration::from_secs(60), "contacts staged", || {
            daemon.pipeline.stats.total() >= 1_000
        })
        .await;
        // The campaign's own count sees every contact pending while it is
        // paused: it has had a pass over them, and nothing reached WhatsApp.
        let state = live(&daemon, "paced").await;
        wait_until(
            Duration::from_secs(30),
            "the paused campaign counted its contacts",
            || {
                let observed = *state.observed.lock().unwrap();
                let pending = state
                    .progress
                    .lock()
                    .unwrap()
                    .as_ref()
                    .map(|p| p.summary.count(DispatchState::Pending));
                observed == Some(wadispatch::domain::ObservedState::Paused)
                    && pending == Some(1_000)
            },
        )
        .await;
        assert_eq!(
            w.sandbox.stats().requests,
            0,
            "a paused campaign sends nothing"
        );
        assert_eq!(
            summary(&daemon, "paced")
                .await
                .count(DispatchState::Pending),
            1_000
        );
        let mut resumed = w.config.clone();
        resumed.campaigns.insert(
            "paced".into(),
            CampaignOverride {
                per_second: None,
                per_hour: None,
                paused: false,
                marketing_messages: None,
            },
        );
        daemon.apply(resumed).await;
        wait_done(&daemon, "paced", 1_000, Duration::from_secs(60)).await;
        assert_eq!(w.sandbox.stats().duplicate_recipients, 0);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

#[test]
fn reload_changes_a_senders_rate_while_running() {
    app::system().block_on(async {
        let w = world(&[("4001", 20.0)]).await;
        publish_campaign(&w, "slow", &spec("slow", &["4001"], 1000.0, false), 0..600).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        wait_until(Duration::from_secs(60), "sending started", || {
            w.sandbox.stats().accepted > 5
        })
        .await;
        let core = daemon
            .senders
            .read()
            .unwrap()
            .get("4001")
            .map(|(_, c)| c.clone())
            .unwrap();
        assert_eq!(core.configured(), 20.0);
        let accepted = || {
            w.sandbox
                .stats()
                .per_number
                .get("4001")
                .copied()
                .unwrap_or(0)
        };
        // Messages the sandbox accepted from the sender over `secs`.
        let rate_over = |secs: u64| async move {
            let before = accepted();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            (accepted() - before) as f64 / secs as f64
        };
        let slow = rate_over(2).await;
        assert!(slow <= 20.0 * 1.25, "20/s configured, {slow:.1}/s measured");
        let mut faster = w.config.clone();
        faster.senders.insert(
            "4001".into(),
            SenderConfig {
                per_second: 500.0,
                paused: false,
                display_name: None,
                display_phone_number: None,
                auto_throughput: false,
                max_per_second: None,
                marketing_messages: None,
            },
        );
        daemon.apply(faster).await;
        wait_until(Duration::from_secs(10), "the new rate applied", || {
            core.configured() == 500.0
        })
        .await;
        let fast = rate_over(1).await;
        assert!(
            fast >= 20.0 * 4.0,
            "500/s configured after the reload, {fast:.1}/s measured (was {slow:.1}/s)"
        );
        wait_done(&daemon, "slow", 600, Duration::from_secs(60)).await;
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

#[test]
fn suppressed_contacts_are_excluded_with_their_reason() {
    app::system().block_on(async {
        let w = world(&[("6001", 500.0)]).await;
        let p = w.kafka.producer();
        for i in [3u32, 4, 5] {
            publish(
                &p,
                &w.config.kafka.topics.suppressions,
                &phone(i),
                r#"{"reason":"open_case"}"#,
            )
            .await;
        }
        publish(
            &p,
            &w.config.kafka.topics.suppressions,
            &phone(6),
            r#"{"reason":"old","until":"2020-01-01T00:00:00Z"}"#,
        )
        .await;
        publish_campaign(&w, "sup", &spec("sup", &["6001"], 500.0, false), 0..200).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let s = wait_done(&daemon, "sup", 200, Duration::from_secs(60)).await;
        assert_eq!(
            s.contacts.excluded_by_reason.get("suppressed:open_case"),
            Some(&3),
            "{:?}",
            s.contacts.excluded_by_reason
        );
        let row = daemon
            .store
            .get_dispatch("sup", &wadispatch::domain::ContactKey::raw(phone(6)))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            row.state,
            DispatchState::Excluded,
            "an expired suppression does not apply"
        );
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.expect("admin endpoint answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// After a small campaign, the admin listener shows it: Prometheus series
/// with the right labels, `/campaigns` with the funnel, health and readiness.
#[test]
fn admin_endpoints_show_a_small_campaign() {
    app::system().block_on(async {
        let w = world(&[("1001", 500.0)]).await;
        publish_campaign(&w, "adm", &spec("adm", &["1001"], 500.0, false), 0..100).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let base = format!("http://{}", daemon.admin_addr);
        wait_done(&daemon, "adm", 100, Duration::from_secs(60)).await;

        assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok\n".into()));
        let (code, body) = get(&format!("{base}/readyz")).await;
        assert_eq!((code, body.as_str()), (200, "ready\n"));

        // Statuses come back by webhook and counts refresh every few seconds:
        // wait until /campaigns shows deliveries.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let campaign = loop {
            let (code, body) = get(&format!("{base}/campaigns")).await;
            assert_eq!(code, 200, "{body}");
            let list: serde_json::Value = serde_json::from_str(&body).unwrap();
            let c = list
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == "adm")
                .cloned()
                .expect("the campaign is listed");
            let delivered = c["funnel"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["stage"] == "delivered")
                .map(|s| s["contacts"].as_u64().unwrap())
                .unwrap();
            if delivered > 0 && c["staged"] == 100 {
                break c;
            }
            assert!(std::time::Instant::now() < deadline, "{c}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(campaign["desired_state"], "active");
        assert_eq!(campaign["pending"], 0);
        assert_eq!(campaign["eta_seconds"], 0.0, "nothing left to send");
        assert_eq!(campaign["configured_rate"], 500.0);
        let funnel = campaign["funnel"].as_array().unwrap();
        let stages: Vec<&str> = funnel
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert_eq!(
            stages,
            [
                "staged",
                "accepted",
                "sent",
                "delivered",
                "read",
                "replied",
                "converted"
            ]
        );
        assert_eq!(campaign["converted"], 0, "no goal, no conversion");
        assert!(campaign.get("goal").is_none(), "no goal in words without one");
        let accepted = &funnel[1];
        let pct = accepted["percent"].as_f64().unwrap();
        let expected = (accepted["contacts"].as_f64().unwrap() / 100.0 * 1000.0).round() / 10.0;
        assert_eq!(pct, expected, "accepted / staged, one decimal");
        // A one-step campaign is one journey step, named by the spec's
        // first step id, with every contact entered there.
        let steps = campaign["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert_eq!(steps[0]["step"], "primary");
        assert_eq!(steps[0]["channel"], "whatsapp");
        assert_eq!(steps[0]["entered"], 100);
        assert_eq!(steps[0]["waiting"], 0);
        assert_eq!(campaign["waiting"], 0);

        let (code, text) = get(&format!("{base}/metrics")).await;
        assert_eq!(code, 200);
        for series in [
            // Process-wide counters: other tests of this binary add to them.
            r#"wadispatch_audience_records_total{result="staged"} "#,
            r#"wadispatch_dispatch_total{campaign="adm",sender="1001",status="accepted",step="primary"}"#,
            r#"wadispatch_funnel_total{campaign="adm",stage="sent",step="primary"}"#,
            r#"wadispatch_funnel_total{campaign="adm",stage="delivered",step="primary"}"#,
            r#"wadispatch_campaign_step_contacts{campaign="adm",state="pending",step="primary"} 0"#,
            r#"wadispatch_campaign_contacts{campaign="adm",kind="real",state="pending"} 0"#,
            r#"wadispatch_campaign_state{campaign="adm",state="completed"} 1"#,
            r#"wadispatch_campaign_pending{campaign="adm"} 0"#,
            r#"wadispatch_campaign_eta_seconds{campaign="adm"} 0"#,
            r#"wadispatch_whatsapp_request_duration_seconds_count{sender="1001"}"#,
            r#"wadispatch_rate_limiter_wait_seconds_count{sender="1001"}"#,
            r#"wadispatch_sender_rate_limit{sender="1001"} 500"#,
            r#"wadispatch_store_operation_duration_seconds_count{op="claim"}"#,
            r#"wadispatch_store_operation_duration_seconds_count{op="stage_batch"}"#,
            r#"wadispatch_webhook_requests_total{result="ok"}"#,
            r#"wadispatch_webhook_statuses_total{result="applied"}"#,
        ] {
            assert!(text.contains(series), "missing {series} in:\n{text}");
        }
        // Never a phone number or a wamid in a label.
        assert!(!text.contains("wamid."), "a wamid leaked into metrics");
        assert!(
            !text.contains(&phone(1)),
            "a phone number leaked into metrics"
        );
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

/// Claim times of every row of a campaign.
async fn claim_times(daemon: &Daemon, id: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    daemon
        .store
        .scan_dispatches(id, None, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.times.claimed)
        .collect()
}

#[test]
fn an_ended_spec_stops_claims_and_sends_at_once() {
    app::system().block_on(async {
        // A slow sender and a fast campaign: most contacts wait for the
        // sender when the spec says `ended`.
        let w = world(&[("4101", 5.0)]).await;
        publish_campaign(
            &w,
            "stop-now",
            &spec("stop-now", &["4101"], 1000.0, false),
            0..200,
        )
        .await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        wait_until(Duration::from_secs(60), "first sends", || {
            w.sandbox.stats().accepted >= 3
        })
        .await;
        let ended = spec("stop-now", &["4101"], 1000.0, false)
            .replace(r#""state":"active""#, r#""state":"ended""#);
        publish(
            &w.kafka.producer(),
            &w.config.kafka.topics.campaigns,
            "stop-now",
            &ended,
        )
        .await;
        let state = live(&daemon, "stop-now").await;
        wait_until(
            Duration::from_secs(30),
            "the ended spec reaches the campaign",
            || state.entry.read().unwrap().spec.state == wadispatch::domain::DesiredState::Ended,
        )
        .await;
        let stopped_at = chrono::Utc::now();
        let requests_at_stop = w.sandbox.stats().requests;
        // The contacts left are closed as outside_window; none is sent.
        let s = wait_done(&daemon, "stop-now", 200, Duration::from_secs(60)).await;
        let late_claims = claim_times(&daemon, "stop-now")
            .await
            .into_iter()
            .filter(|t| *t > stopped_at + chrono::Duration::milliseconds(100))
            .count();
        assert_eq!(late_claims, 0, "no claim after the ended spec arrived");
        let further = w.sandbox.stats().requests - requests_at_stop;
        assert!(
            further <= 1,
            "{further} requests after the ended spec arrived"
        );
        assert!(
            s.contacts
                .excluded_by_reason
                .get("outside_window")
                .copied()
                .unwrap_or(0)
                > 150,
            "{:?}",
            s.contacts.by_state
        );
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

#[test]
fn quiet_hours_that_start_while_a_contact_waits_for_the_pace_hold_it() {
    app::system().block_on(async {
        use chrono::Timelike;
        let w = world(&[("4201", 100.0)]).await;
        // Quiet hours from the next minute boundary at least 30 s away, for
        // two minutes, in UTC; one contact every 20 s (0.05/s).
        let now = chrono::Utc::now();
        let mut from = now.with_second(0).unwrap().with_nanosecond(0).unwrap() + chrono::Duration::minutes(1);
        if from - now < chrono::Duration::seconds(30) {
            from += chrono::Duration::minutes(1);
        }
        let to = from + chrono::Duration::minutes(2);
        let spec = format!(
            r#"{{"id":"quiet","state":"active","senders":["4201"],"exclusive":false,
                "template":{{"name":"promo","language":"es_MX","body":["{{{{name}}}}"]}},
                "schedule":{{"timezone":"UTC","quiet_hours":{{"from":"{}","to":"{}"}}}},
                "pacing":{{"per_second":0.05}}}}"#,
            from.format("%H:%M"),
            to.format("%H:%M")
        );
        // The recipients' clock is UTC too (their +52 numbers would put them
        // in Mexico City otherwise).
        let p = w.kafka.producer();
        publish(&p, &w.config.kafka.topics.campaigns, "quiet", &spec).await;
        let records: Vec<(String, String)> = (0..10)
            .map(|i| {
                let phone = phone(i);
                let value = format!(
                    r#"{{"campaign_id":"quiet","contact":{{"phone":"{phone}","name":"N{i}","timezone":"UTC"}}}}"#
                );
                (phone, value)
            })
            .collect();
        publish_all(&p, &w.config.kafka.topics.audience, &records).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let watch_until = from + chrono::Duration::seconds(25);
        wait_until(Duration::from_secs(150), "25 s into the quiet hours", || {
            chrono::Utc::now() > watch_until
        })
        .await;
        let claims = claim_times(&daemon, "quiet").await;
        assert!(claims.iter().any(|t| *t < from), "it sent before the quiet hours: {claims:?}");
        let inside: Vec<_> = claims.iter().filter(|t| **t >= from && **t < to).collect();
        assert!(inside.is_empty(), "claims inside quiet hours from {from}: {inside:?}");
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

#[test]
fn a_stop_reply_while_the_next_message_waits_excludes_it() {
    app::system().block_on(async {
        // The sender's pace holds the contact for ~5 s after it was picked up.
        let w = world(&[("4301", 0.2)]).await;
        publish_campaign(&w, "after-stop", &spec("after-stop", &["4301"], 100.0, false), 7..8).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let state = live(&daemon, "after-stop").await;
        wait_until(Duration::from_secs(60), "the contact handed to the sender", || {
            state.in_flight.load(std::sync::atomic::Ordering::Acquire) == 1
        })
        .await;
        // The person answers STOP (to an earlier campaign) meanwhile.
        let wa_id = phone(7).trim_start_matches('+').to_string();
        let body = serde_json::to_vec(&serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "messages": [{"from": wa_id, "id": "wamid.in.stop", "type": "text", "text": {"body": "STOP"}}]
            }}]}]
        }))
        .unwrap();
        let sig = wadispatch::webhook::signature::sign(WEBHOOK_SECRET.as_bytes(), &body);
        let answer = reqwest::Client::new()
            .post(format!("http://{}/webhook", daemon.webhook_addr))
            .header("X-Hub-Signature-256", sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
        let s = wait_done(&daemon, "after-stop", 1, Duration::from_secs(30)).await;
        assert_eq!(s.contacts.excluded_by_reason.get("opted_out"), Some(&1), "{:?}", s.contacts.by_state);
        assert_eq!(w.sandbox.stats().requests, 0, "the opted-out person got nothing");
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

#[test]
fn an_api_outage_fails_nobody_and_everyone_is_sent_once_it_ends() {
    app::system().block_on(async {
        // The API's port is closed when the daemon starts: every request
        // fails to connect (never sent) until the sandbox comes up there.
        let mut w = world(&[("4401", 100.0)]).await;
        let api_port = free_port();
        w.config.whatsapp.api_base_url = format!("http://127.0.0.1:{api_port}");
        w.config.dispatch.circuit_open_secs = 0.5;
        w.config.dispatch.circuit_max_open_secs = 2.0;
        publish_campaign(
            &w,
            "outage",
            &spec("outage", &["4401"], 100.0, false),
            0..300,
        )
        .await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let state = live(&daemon, "outage").await;
        let sender = daemon
            .senders
            .read()
            .unwrap()
            .get("4401")
            .unwrap()
            .1
            .clone();
        wait_until(Duration::from_secs(30), "the circuit opens", || {
            sender.is_circuit_open()
        })
        .await;
        wait_until(
            Duration::from_secs(30),
            "the campaign says why it waits",
            || {
                state
                    .wait_reason
                    .lock()
                    .unwrap()
                    .as_deref()
                    .is_some_and(|r| r.contains("outage"))
            },
        )
        .await;
        // Ten seconds of outage: far longer than the retries of one contact.
        let outage_ends = std::time::Instant::now() + Duration::from_secs(10);
        wait_until(Duration::from_secs(15), "ten seconds of outage", || {
            std::time::Instant::now() > outage_ends
        })
        .await;
        let during = summary(&daemon, "outage").await;
        assert_eq!(
            during.count(DispatchState::Failed),
            0,
            "{:?}",
            during.contacts.by_state
        );
        assert_eq!(
            during.count(DispatchState::Unknown),
            0,
            "{:?}",
            during.contacts.by_state
        );
        let port = w.config.http.listen.rsplit(':').next().unwrap().to_string();
        let api = Sandbox::start(SandboxConfig {
            listen: format!("127.0.0.1:{api_port}").parse().unwrap(),
            per_number_mps: 0.0,
            webhook_url: Some(format!("http://127.0.0.1:{port}/webhook")),
            app_secret: WEBHOOK_SECRET.into(),
            failure_rules: vec![],
            ..Default::default()
        })
        .await
        .unwrap();
        let s = wait_done(&daemon, "outage", 300, Duration::from_secs(60)).await;
        let stats = api.stats();
        assert_eq!(
            s.count(DispatchState::Failed),
            0,
            "{:?}",
            s.contacts.by_state
        );
        assert_eq!(
            s.count(DispatchState::Unknown),
            0,
            "{:?}",
            s.contacts.by_state
        );
        assert_eq!(s.excluded(), 0, "{:?}", s.contacts.by_state);
        assert_eq!(stats.recipients, 300, "everyone was sent");
        assert_eq!(stats.per_recipient_max, 1, "nobody twice");
        assert!(!sender.is_circuit_open());
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

#[test]
fn a_reload_of_something_else_keeps_halts_and_the_throttled_rate() {
    app::system().block_on(async {
        let mut w = world(&[("4501", 50.0), ("4502", 50.0)]).await;
        // 4502's requests are refused with 130429 half the time: its AIMD
        // rate drops below the configured 50/s.
        let throttled = Sandbox::start(SandboxConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            per_number_mps: 10.0,
            webhook_url: None,
            ..Default::default()
        })
        .await
        .unwrap();
        w.config.whatsapp.api_base_url = throttled.base_url();
        publish_campaign(
            &w,
            "aimd",
            &spec("aimd", &["4501", "4502"], 100.0, false),
            0..2_000,
        )
        .await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let core = |id: &str| {
            daemon
                .senders
                .read()
                .unwrap()
                .get(id)
                .map(|(_, c)| c.clone())
        };
        wait_until(Duration::from_secs(30), "both senders throttled", || {
            core("4502").is_some_and(|c| c.rate() < 30.0)
                && core("4501").is_some_and(|c| c.rate() < 30.0)
        })
        .await;
        let halted = core("4502").unwrap();
        // A halt Meta imposed on the other sender (as a 190 would).
        let other = core("4501").unwrap();
        other.set_halted(Some("(#190) access token expired".into()));
        let mut reloaded = w.config.clone();
        reloaded.log.level = "debug".into();
        daemon.apply(reloaded).await;
        // Whatever the reload sent the sender actors is handled before an
        // empty reconfiguration sent after it (mailboxes are ordered).
        let actors: Vec<_> = daemon
            .senders
            .read()
            .unwrap()
            .values()
            .map(|(a, _)| a.clone())
            .collect();
        for actor in actors {
            actor
                .send(wadispatch::dispatch::sender::Reconfigure {
                    per_second: None,
                    share: None,
                    resume: false,
                })
                .await
                .unwrap();
        }
        assert!(
            halted.rate() < 30.0,
            "the AIMD back-off survived: {}",
            halted.rate()
        );
        assert!(
            other.is_halted(),
            "Meta's halt survived an unrelated reload"
        );
        // Changing the rate does apply.
        let mut faster = w.config.clone();
        faster.senders.get_mut("4502").unwrap().per_second = 40.0;
        daemon.apply(faster).await;
        wait_until(Duration::from_secs(5), "the new rate", || {
            halted.configured() == 40.0
        })
        .await;
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

/// A template error (132001) halts the campaign; the halt survives a
/// restart, an operator lifts it on the admin listener, and a changed spec
/// lifts it too. The contacts its requests hit stay pending (the error is
/// the template's, not theirs) and are sent once the template is right.
#[test]
fn a_template_halt_survives_a_restart_until_lifted() {
    app::system().block_on(async {
        let mut w = world(&[("4801", 20.0)]).await;
        // Meta knows `promo_v2` only: `promo` does not exist (132001).
        let meta = Sandbox::start(SandboxConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            per_number_mps: 0.0,
            webhook_url: None,
            templates: [(
                "promo_v2".to_string(),
                wadispatch::sandbox::TemplateSpec {
                    body_params: 1,
                    paused: false,
                },
            )]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap();
        w.config.whatsapp.api_base_url = meta.base_url();
        let first = spec("halt", &["4801"], 20.0, false);
        publish_campaign(&w, "halt", &first, 0..150).await;
        let refused = || {
            meta.stats()
                .rejected_by_code
                .get(&132001)
                .copied()
                .unwrap_or(0)
        };

        // A restart in this process keeps the store open: the new daemon
        // knows only what the store holds.
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store.clone())
            .await
            .unwrap();
        let state = live(&daemon, "halt").await;
        wait_until(Duration::from_secs(60), "the first halt", || {
            state.halt_reason().is_some()
        })
        .await;
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
        let before_restart = meta.stats().requests;
        assert!(before_restart >= 1 && refused() == before_restart);

        // The same spec after a restart: still halted, nothing sent. (A new
        // consumer group: the mock broker keeps the old member's partitions
        // until its session times out.)
        let mut again = w.config.clone();
        again.kafka.group_id.push_str("-restarted");
        let daemon = Daemon::start(again, store.clone()).await.unwrap();
        let state = live(&daemon, "halt").await;
        wait_until(Duration::from_secs(30), "the halt read back", || {
            state.halt_reason().is_some()
        })
        .await;
        let admin = format!("http://{}", daemon.admin_addr);
        let (code, body) = get(&format!("{admin}/campaigns")).await;
        assert_eq!(code, 200);
        assert!(body.contains("132001"), "{body}");
        // A window in which a resumed campaign would send dozens.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            meta.stats().requests,
            before_restart,
            "a halted campaign sent after a restart"
        );

        // The operator lifts it (as after a fix in WhatsApp Manager): the
        // next request meets the same error and halts it again.
        let lift = reqwest::Client::new()
            .post(format!("{admin}/campaigns/halt/clear-halt"))
            .send()
            .await
            .unwrap();
        assert_eq!(lift.status().as_u16(), 200);
        assert!(lift.text().await.unwrap().contains("lifted"));
        wait_until(Duration::from_secs(30), "the next refusal", || {
            refused() > before_restart
        })
        .await;
        wait_until(Duration::from_secs(10), "halted again", || {
            state.halt_reason().is_some()
        })
        .await;
        let missing = reqwest::Client::new()
            .post(format!("{admin}/campaigns/nope/clear-halt"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status().as_u16(), 404);

        // A changed spec (the right template) lifts it: every contact is
        // sent, the ones the errors hit included.
        let fixed = first.replace(r#""name":"promo""#, r#""name":"promo_v2""#);
        assert_ne!(fixed, first);
        publish(
            &w.kafka.producer(),
            &w.config.kafka.topics.campaigns,
            "halt",
            &fixed,
        )
        .await;
        let s = wait_done(&daemon, "halt", 150, Duration::from_secs(60)).await;
        assert_eq!(
            s.contacts.by_state.get("accepted").copied(),
            Some(150),
            "{:?}",
            s.contacts.by_state
        );
        assert_eq!(meta.stats().accepted, 150);
        assert_eq!(meta.stats().duplicate_recipients, 0);
        assert!(state.halt_reason().is_none());
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
        assert_eq!(store.campaign_halt("halt").await.unwrap(), None);
    });
}

/// Reloads in a burst reach every actor in full: a reconfigure, an override
/// or a pause is never dropped on a full mailbox (the campaign actor's holds
/// 64, the registry's 16), and the last one wins.
#[test]
fn a_burst_of_reloads_beyond_the_mailboxes_loses_no_change() {
    app::system().block_on(async {
        let w = world(&[("4901", 1.0)]).await;
        publish_campaign(&w, "burst", &spec("burst", &["4901"], 1.0, false), 0..5).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let state = live(&daemon, "burst").await;
        let core = daemon
            .senders
            .read()
            .unwrap()
            .get("4901")
            .unwrap()
            .1
            .clone();
        const BURST: u32 = 300;
        for i in 1..=BURST {
            let mut c = w.config.clone();
            c.senders.get_mut("4901").unwrap().per_second = f64::from(i);
            c.campaigns.insert(
                "burst".into(),
                wadispatch::config::CampaignOverride {
                    per_second: Some(0.5 + f64::from(i)),
                    per_hour: None,
                    // The last one pauses it.
                    paused: i % 2 == 0,
                    marketing_messages: None,
                },
            );
            // No await between them: the actors see the whole burst at once.
            daemon
                .registry
                .do_send(wadispatch::dispatch::registry::ApplyConfig(c));
        }
        wait_until(Duration::from_secs(30), "the last reload applied", || {
            core.configured() == f64::from(BURST)
                && *state.rate_override.read().unwrap() == Some(0.5 + f64::from(BURST))
                && state
                    .paused_by_operator
                    .load(std::sync::atomic::Ordering::Acquire)
        })
        .await;
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

/// Contacts `range` of `campaign` staged straight into `store` (shard 0, as
/// an earlier run left them) and claimed by `owner(i)`.
async fn staged_and_claimed(
    store: &dyn wadispatch::store::Store,
    campaign: &str,
    range: std::ops::Range<u32>,
    owner: impl Fn(u32) -> &'static str,
) {
    use wadispatch::domain::{ContactKey, FrozenParams};
    use wadispatch::store::{ClaimOutcome, ClaimRequest, StageRequest};
    let now = chrono::Utc::now();
    let staged: Vec<StageRequest> = range
        .clone()
        .map(|i| StageRequest {
            campaign_id: campaign.into(),
            contact: ContactKey::raw(phone(i)),
            shard: 0,
            seq: u64::from(i),
            params: FrozenParams::default(),
            exclusion: None,
            send_after: None,
            timezone: None,
            tags: Vec::new(),
            name: None,
            staged_at: now,
            journey: Default::default(),
        })
        .collect();
    store.stage_batch(&staged).await.unwrap();
    for i in range {
        let claimed = store
            .claim(&ClaimRequest {
                campaign_id: campaign.into(),
                contact: ContactKey::raw(phone(i)),
                exclusive: false,
                replace_engagement: None,
                owner: owner(i).into(),
                now,
                step: String::new(),
            })
            .await
            .unwrap();
        assert!(
            matches!(claimed, ClaimOutcome::Claimed { .. }),
            "{i}: {claimed:?}"
        );
    }
}

/// A pod renamed by its Deployment never comes back under its old name: its
/// claims are settled by the instance that owns their shards once its lease
/// lapsed (here it never had one) or was released, and not while it is live.
#[test]
fn claims_of_an_instance_gone_are_settled_once_its_lease_lapses() {
    use wadispatch::domain::ContactKey;
    use wadispatch::store::Lease;
    app::system().block_on(async {
        let w = world(&[("4801", 50.0)]).await;
        let store = app::open_store(&w.config).await.unwrap();
        // Contacts 0..10 were staged and claimed by two earlier pods: a/… died
        // without a lease on record, c/… still renews one.
        let now = chrono::Utc::now();
        staged_and_claimed(store.as_ref(), "pods", 0..10, |i| {
            if i < 5 {
                "pod-a/dead"
            } else {
                "pod-c/live"
            }
        })
        .await;
        store
            .renew_lease(&Lease {
                owner: "pod-c/live".into(),
                until: now + chrono::Duration::seconds(600),
            })
            .await
            .unwrap();
        publish_campaign(&w, "pods", &spec("pods", &["4801"], 50.0, false), 10..60).await;

        let daemon = Daemon::start_as(w.config.clone(), store.clone(), "pod-b")
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let s = summary(&daemon, "pods").await;
            if s.staged == 60
                && s.count(DispatchState::Pending) == 0
                && s.count(DispatchState::Unknown) == 5
            {
                assert_eq!(
                    s.count(DispatchState::Claimed),
                    5,
                    "the live pod's claims stay: {:?}",
                    s.contacts.by_state
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                s.contacts.by_state
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for i in 0..5 {
            let row = store
                .get_dispatch("pods", &ContactKey::raw(phone(i)))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(row.state, DispatchState::Unknown, "contact {i}");
        }
        assert_eq!(
            store
                .claimed("pods", 0)
                .await
                .unwrap()
                .iter()
                .filter(|e| e.owner == "pod-c/live")
                .count(),
            5
        );

        // The live pod stops cleanly: its claims are settled within a few
        // seconds (the next lease read and settle pass), and the campaign completes.
        store.release_lease("pod-c/live").await.unwrap();
        let s = wait_done(&daemon, "pods", 60, Duration::from_secs(30)).await;
        assert_eq!(
            s.count(DispatchState::Unknown),
            10,
            "{:?}",
            s.contacts.by_state
        );
        assert!(store.claimed("pods", 0).await.unwrap().is_empty());
        let stats = w.sandbox.stats();
        assert_eq!(
            stats.requests, 50,
            "only the contacts nobody had claimed were sent"
        );
        assert_eq!(stats.duplicate_recipients, 0);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
        // A clean stop releases this run's lease.
        assert!(!store
            .leases()
            .await
            .unwrap()
            .iter()
            .any(|l| l.owner.starts_with("pod-b/")));
    });
}

/// Rows claimed by a version without the claim index (the owner is a bare
/// host name, with no lease) are found by one scan of the campaign the first
/// time it runs here, then never scanned for again.
#[test]
fn claims_taken_before_the_claim_index_existed_are_settled_once() {
    use wadispatch::domain::{CampaignSpec, ObservedState};
    use wadispatch::store::embedded::{Durability, EmbeddedStore};
    use wadispatch::store::{CampaignRecord, Store};
    app::system().block_on(async {
        let w = world(&[("4801", 50.0)]).await;
        let text = spec("legacy", &["4801"], 50.0, false);
        let now = chrono::Utc::now();
        {
            let old =
                EmbeddedStore::open(&w.config.store.embedded.data_dir, Durability::Process, 8)
                    .unwrap();
            old.put_campaign(&CampaignRecord {
                spec: CampaignSpec::from_json(text.as_bytes()).unwrap(),
                observed_state: ObservedState::Active,
                updated_at: now,
                started_at: Some(now),
            })
            .await
            .unwrap();
            staged_and_claimed(&old, "legacy", 0..5, |_| "old-host").await;
            assert_eq!(old.forget_claims_of("old-host").unwrap(), 5);
            assert!(old.claimed("legacy", 0).await.unwrap().is_empty());
        }
        publish_campaign(&w, "legacy", &text, 5..30).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store.clone())
            .await
            .unwrap();
        let s = wait_done(&daemon, "legacy", 30, Duration::from_secs(60)).await;
        assert_eq!(
            s.count(DispatchState::Unknown),
            5,
            "{:?}",
            s.contacts.by_state
        );
        assert_eq!(w.sandbox.stats().requests, 25);
        assert!(store.marker("claim-index/legacy").await.unwrap());
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

/// Contacts (by phone) of `campaigns` that got a request: every state but
/// pending and excluded.
async fn reached(daemon: &Daemon, campaigns: &[&str]) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for id in campaigns {
        for row in daemon
            .store
            .scan_dispatches(id, None, 100_000)
            .await
            .unwrap()
        {
            if !matches!(row.state, DispatchState::Pending | DispatchState::Excluded) {
                out.insert(row.contact.to_string());
            }
        }
    }
    out
}

/// The portfolio limit is counted in the store: two campaigns racing for a
/// window of 20 unique recipients reach 20 people together (contacts they
/// share count once), and a restart in the middle of the window sends to
/// nobody new.
#[test]
fn the_portfolio_limit_holds_across_campaigns_and_a_restart() {
    app::system().block_on(async {
        let mut w = world(&[("4801", 50.0), ("4802", 50.0)]).await;
        w.config.dispatch.portfolio_daily_limit = Some(20);
        publish_campaign(&w, "pf-a", &spec("pf-a", &["4801"], 50.0, false), 0..30).await;
        publish_campaign(&w, "pf-b", &spec("pf-b", &["4802"], 50.0, false), 15..45).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store.clone())
            .await
            .unwrap();
        let a = live(&daemon, "pf-a").await;
        let b = live(&daemon, "pf-b").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while reached(&daemon, &["pf-a", "pf-b"]).await.len() < 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "the window never filled"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let waits = |s: &std::sync::Arc<wadispatch::dispatch::campaign::CampaignState>| {
            s.wait_reason
                .lock()
                .unwrap()
                .as_deref()
                .is_some_and(|r| r.contains("portfolio limit of 20"))
        };
        wait_until(
            Duration::from_secs(20),
            "both campaigns wait for the limit",
            || waits(&a) && waits(&b),
        )
        .await;
        let before = reached(&daemon, &["pf-a", "pf-b"]).await;
        assert_eq!(before.len(), 20, "{before:?}");
        assert!(w.sandbox.stats().recipients <= 20);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);

        // A restart in the middle of the window: the count is read back.
        let mut again = w.config.clone();
        again.kafka.group_id.push_str("-restarted");
        let daemon = Daemon::start(again, store.clone()).await.unwrap();
        let a = live(&daemon, "pf-a").await;
        wait_until(
            Duration::from_secs(30),
            "the restarted campaign waits for the limit",
            || waits(&a),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = reached(&daemon, &["pf-a", "pf-b"]).await;
        assert_eq!(after, before, "nobody new after the restart");
        let stats = w.sandbox.stats();
        assert!(
            stats.recipients <= 20,
            "{} unique recipients",
            stats.recipients
        );
        assert_eq!(stats.duplicate_recipients, 0);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

/// `dispatch.marketing_per_contact = {count = 1, per = "24h"}` across two
/// marketing campaigns sharing 200 contacts, running at once: each shared
/// contact gets exactly one of them (whichever claims it first), the other
/// excludes it `frequency_cap`; a utility campaign over the same contacts
/// is not capped. A restart keeps the count (the slots are in the store).
#[test]
fn the_marketing_cap_per_contact_holds_across_campaigns_and_a_restart() {
    app::system().block_on(async {
        let mut w =
            World::start(&[("4901", 300.0), ("4902", 300.0), ("4903", 300.0)], vec![]).await;
        w.config.dispatch.marketing_per_contact = Some(wadispatch::config::CapConfig {
            count: 1,
            per: "24h".into(),
        });
        publish_campaign(&w, "cap-a", &spec("cap-a", &["4901"], 300.0, false), 0..400).await;
        publish_campaign(
            &w,
            "cap-b",
            &spec("cap-b", &["4902"], 300.0, false),
            200..600,
        )
        .await;
        let utility = spec("cap-u", &["4903"], 300.0, false).replace("marketing", "utility");
        publish_campaign(&w, "cap-u", &utility, 300..500).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store.clone())
            .await
            .unwrap();
        let a = wait_done(&daemon, "cap-a", 400, Duration::from_secs(120)).await;
        let b = wait_done(&daemon, "cap-b", 400, Duration::from_secs(120)).await;
        let u = wait_done(&daemon, "cap-u", 200, Duration::from_secs(120)).await;
        let capped = |s: &CampaignSummary| {
            s.contacts
                .excluded_by_reason
                .get("frequency_cap")
                .copied()
                .unwrap_or(0)
        };
        assert_eq!(
            capped(&a) + capped(&b),
            200,
            "{:?} {:?}",
            a.contacts,
            b.contacts
        );
        assert_eq!(a.excluded() + b.excluded(), 200, "no other exclusion");
        assert_eq!(
            a.reached(DispatchState::Accepted) + b.reached(DispatchState::Accepted),
            600,
            "400 + 400 rows, 200 of them capped"
        );
        assert_eq!(capped(&u), 0);
        assert_eq!(
            u.reached(DispatchState::Accepted),
            200,
            "utility is not capped"
        );
        // Contact by contact: a shared contact got exactly one of them.
        for i in 200..400 {
            let contact = wadispatch::domain::ContactKey::raw(phone(i));
            let got = |row: Option<wadispatch::store::DispatchRecord>| {
                row.is_some_and(|r| r.state != DispatchState::Excluded)
            };
            let in_a = got(store.get_dispatch("cap-a", &contact).await.unwrap());
            let in_b = got(store.get_dispatch("cap-b", &contact).await.unwrap());
            assert!(in_a ^ in_b, "{contact}: cap-a {in_a}, cap-b {in_b}");
        }
        assert_eq!(w.sandbox.stats().duplicate_recipients, 0);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);

        // After a restart a third marketing campaign finds the slots taken:
        // every one of its contacts had its one message today.
        publish_campaign(&w, "cap-c", &spec("cap-c", &["4901"], 300.0, false), 0..50).await;
        let mut again = w.config.clone();
        again.kafka.group_id.push_str("-restarted");
        let daemon = Daemon::start(again, store).await.unwrap();
        let c = wait_done(&daemon, "cap-c", 50, Duration::from_secs(60)).await;
        assert_eq!(capped(&c), 50, "{:?}", c.contacts);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}
