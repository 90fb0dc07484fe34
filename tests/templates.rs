//! Template health end to end: Meta pauses a template (its webhook, or a
//! 132015 answer when the webhook never comes) and every campaign that sends
//! it holds before its next claim, across a restart, while campaigns of
//! other templates go on; Meta approves it again and they resume and finish
//! without a contact lost or sent twice.

mod common;

use std::time::Duration;

use common::*;
use wadispatch::app::{self, Daemon};
use wadispatch::domain::DispatchState;

fn spec(id: &str, sender: &str, template: &str, per_second: f64) -> String {
    format!(
        r#"{{"id":"{id}","state":"active","senders":["{sender}"],"exclusive":false,
            "template":{{"name":"{template}","language":"es_MX","body":["{{{{name}}}}"]}},
            "pacing":{{"per_second":{per_second}}}}}"#
    )
}

async fn publish_campaign(w: &World, id: &str, spec: &str, contacts: std::ops::Range<u32>) {
    let p = w.kafka.producer();
    publish(&p, &w.config.kafka.topics.campaigns, id, spec).await;
    let records: Vec<(String, String)> = contacts
        .map(|i| {
            (
                phone(i),
                format!(
                    r#"{{"campaign_id":"{id}","contact":{{"phone":"{}","name":"N{i}"}}}}"#,
                    phone(i)
                ),
            )
        })
        .collect();
    publish_all(&p, &w.config.kafka.topics.audience, &records).await;
}

async fn claims(daemon: &Daemon, id: &str) -> usize {
    daemon
        .store
        .scan_dispatches(id, None, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.times.claimed.is_some())
        .count()
}

/// Meta changes the template in the sandbox; answers the HTTP status the
/// daemon's webhook receiver gave (None when no webhook was posted).
async fn meta_says(w: &World, body: serde_json::Value) -> Option<u64> {
    meta_does(&w.sandbox.base_url(), "templates", body).await
}

#[test]
fn a_paused_template_holds_its_campaign_before_the_next_claim_until_approved() {
    app::system().block_on(async {
        let w = World::start(&[("4901", 100.0), ("4902", 100.0)], Vec::new()).await;
        publish_campaign(&w, "tpl-a", &spec("tpl-a", "4901", "promo", 40.0), 0..400).await;
        publish_campaign(
            &w,
            "tpl-c",
            &spec("tpl-c", "4902", "other", 20.0),
            1_000..1_300,
        )
        .await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let a = live(&daemon, "tpl-a").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while claims(&daemon, "tpl-a").await < 60 {
            assert!(std::time::Instant::now() < deadline, "tpl-a never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Meta pauses it (the webhook names the language with a dash).
        let answered = meta_says(
            &w,
            serde_json::json!({"name": "promo", "language": "es-MX", "event": "PAUSED",
                               "title": "FIRST_PAUSE"}),
        )
        .await;
        assert_eq!(answered, Some(200));
        let why = a.halt_reason().expect("held once the webhook is answered");
        // The sandbox pauses the template, then posts the webhook: a request
        // answered 132015 in between may hold it first (and the webhook,
        // stamped a second earlier, then adds nothing).
        assert!(
            why.contains("template promo (es_MX) PAUSED by Meta: FIRST_PAUSE")
                || why.contains("template promo (es_MX) PAUSED (answer 132015)"),
            "{why}"
        );
        // A request claimed before the webhook may still be on its way.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held_at = claims(&daemon, "tpl-a").await;
        let other_at = claims(&daemon, "tpl-c").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            claims(&daemon, "tpl-a").await,
            held_at,
            "no claim while the template is paused"
        );
        assert!(held_at < 400, "the pause came before the end");
        assert!(
            claims(&daemon, "tpl-c").await > other_at + 20,
            "a campaign of another template goes on"
        );
        let admin = format!("http://{}", daemon.admin_addr);
        let campaigns: serde_json::Value = reqwest::get(format!("{admin}/campaigns"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let view = campaigns
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "tpl-a")
            .unwrap();
        assert!(
            view["halted"].as_str().unwrap().contains("PAUSED"),
            "{view}"
        );
        wait_until(Duration::from_secs(10), "observed failed", || {
            *a.observed.lock().unwrap() == Some(wadispatch::domain::ObservedState::Failed)
        })
        .await;
        let templates: serde_json::Value = reqwest::get(format!("{admin}/templates"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(templates[0]["status"], "PAUSED", "{templates}");
        assert!(templates[0]["held"].is_string(), "{templates}");

        // Approved again: it resumes and every contact is sent once.
        let answered = meta_says(
            &w,
            serde_json::json!({"name": "promo", "language": "es_MX", "event": "APPROVED",
                               "title": "UNPAUSE"}),
        )
        .await;
        assert_eq!(answered, Some(200));
        assert_eq!(a.halt_reason(), None);
        let s = wait_done(&daemon, "tpl-a", 400, Duration::from_secs(120)).await;
        assert_eq!(
            s.reached(DispatchState::Accepted),
            400,
            "{:?}",
            s.contacts.by_state
        );
        wait_done(&daemon, "tpl-c", 300, Duration::from_secs(120)).await;
        let stats = w.sandbox.stats();
        assert_eq!(stats.duplicate_recipients, 0);
        use wadispatch::domain::ObservedState;
        wait_until(Duration::from_secs(10), "completed", || {
            *a.observed.lock().unwrap() == Some(ObservedState::Completed)
        })
        .await;
        // The template archived after its campaign completed: the campaign
        // stays completed (it would claim nothing anyway).
        let answered = meta_says(
            &w,
            serde_json::json!({"name": "promo", "language": "es_MX", "event": "ARCHIVED"}),
        )
        .await;
        assert_eq!(answered, Some(200));
        assert!(a.template_hold().is_some(), "archived holds the template");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            *a.observed.lock().unwrap(),
            Some(ObservedState::Completed),
            "a completed campaign is not failed by a template it no longer sends"
        );
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

/// Without the webhook, the first 132015 answers teach the daemon: every
/// campaign of the template holds (the second one without meeting the
/// error itself), the hold survives a restart, and the approval resumes
/// both; the contacts the answers hit go back to pending and are sent.
#[test]
fn a_132015_answer_holds_every_campaign_of_the_template_across_a_restart() {
    app::system().block_on(async {
        let w = World::start(&[("4911", 100.0), ("4912", 100.0)], Vec::new()).await;
        publish_campaign(&w, "err-a", &spec("err-a", "4911", "promo", 30.0), 0..300).await;
        publish_campaign(
            &w,
            "err-b",
            &spec("err-b", "4912", "promo", 30.0),
            1_000..1_300,
        )
        .await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store.clone())
            .await
            .unwrap();
        let (a, b) = (live(&daemon, "err-a").await, live(&daemon, "err-b").await);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while claims(&daemon, "err-a").await < 30 || claims(&daemon, "err-b").await < 30 {
            assert!(std::time::Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let silent = meta_says(
            &w,
            serde_json::json!({"name": "promo", "language": "es_MX", "event": "PAUSED",
                               "webhook": false}),
        )
        .await;
        assert_eq!(silent, None, "no webhook posted");
        wait_until(Duration::from_secs(10), "both campaigns held", || {
            a.halt_reason().is_some() && b.halt_reason().is_some()
        })
        .await;
        let why = a.halt_reason().unwrap();
        assert!(why.contains("PAUSED (answer 132015)"), "{why}");
        let refused = w.sandbox.stats().rejected_by_code[&132015];
        assert!(refused >= 1, "the hold came from an answer");
        assert!(daemon.shutdown(Duration::from_secs(10)).await);

        // A restart reads the hold back: nothing is sent.
        let mut again = w.config.clone();
        again.kafka.group_id.push_str("-restarted");
        let daemon = Daemon::start(again, store.clone()).await.unwrap();
        let a = live(&daemon, "err-a").await;
        assert!(a.halt_reason().is_some(), "held from the first claim on");
        let requests = w.sandbox.stats().requests;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(w.sandbox.stats().requests, requests, "a held campaign sent");

        let answered = meta_says(
            &w,
            serde_json::json!({"name": "promo", "language": "es_MX", "event": "APPROVED"}),
        )
        .await;
        assert_eq!(answered, Some(200));
        for id in ["err-a", "err-b"] {
            let s = wait_done(&daemon, id, 300, Duration::from_secs(120)).await;
            assert_eq!(
                s.reached(DispatchState::Accepted),
                300,
                "{id}: the contacts 132015 hit were sent later: {:?}",
                s.contacts.by_state
            );
        }
        assert_eq!(w.sandbox.stats().duplicate_recipients, 0);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}
