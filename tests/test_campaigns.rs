//! Test campaigns (`kind: test`): they send only to the phones their
//! `test_recipients` list (the rest of the audience is excluded
//! `not_a_test_recipient`), follow the rules real campaigns follow (a test
//! number engaged by another exclusive campaign is skipped), and are
//! reported apart: `/campaigns`, the `kind` label of
//! `wadispatch_campaign_contacts`, the events' `campaign_kind`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wadispatch::app::{self, Daemon};
use wadispatch::domain::DispatchState;

const SENDER: &str = "106540352242922";
const AUDIENCE: u32 = 20;

fn spec(id: &str, kind: &str, test_recipients: &[String]) -> String {
    let recipients = serde_json::to_string(test_recipients).unwrap();
    format!(
        r#"{{"id":"{id}","kind":"{kind}","test_recipients":{recipients},"state":"active","senders":["{SENDER}"],
            "template":{{"name":"promo","language":"es_MX","category":"marketing","body":["{{{{name}}}}"]}},
            "pacing":{{"per_second":100}}}}"#
    )
}

async fn campaign_json(base: &str, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: serde_json::Value = reqwest::get(format!("{base}/campaigns"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = list
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id && c["staged"].as_u64() == Some(u64::from(AUDIENCE)))
            .cloned();
        if let Some(c) = found {
            return c;
        }
        assert!(Instant::now() < deadline, "{id} not counted: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn a_test_campaign_sends_to_its_test_recipients_only_and_is_reported_apart() {
    app::system().block_on(async {
        let w = World::start(&[(SENDER, 200.0)], Vec::new()).await;
        let p = w.kafka.producer();
        let topics = &w.config.kafka.topics;
        // A real exclusive campaign reaches contact 1 first.
        publish(&p, &topics.campaigns, "real", &spec("real", "real", &[])).await;
        publish(
            &p,
            &topics.audience,
            &phone(1),
            &audience_json("real", 1, false),
        )
        .await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        wait_done(&daemon, "real", 1, Duration::from_secs(60)).await;
        assert_eq!(w.sandbox.stats().accepted, 1);

        // The test campaign lists contacts 0, 1 and 2 (written as people
        // type them) and its audience is 20 contacts.
        let listed: Vec<String> = [0u32, 1, 2]
            .iter()
            .map(|i| {
                let p = phone(*i);
                format!("{} {} {}", &p[..3], &p[3..5], &p[5..])
            })
            .collect();
        publish(
            &p,
            &topics.campaigns,
            "trial",
            &spec("trial", "test", &listed),
        )
        .await;
        let audience: Vec<(String, String)> = (0..AUDIENCE)
            .map(|i| (phone(i), audience_json("trial", i, false)))
            .collect();
        publish_all(&p, &topics.audience, &audience).await;
        let s = wait_done(
            &daemon,
            "trial",
            u64::from(AUDIENCE),
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(
            s.reached(DispatchState::Accepted),
            2,
            "contacts 0 and 2: {:?}",
            s.contacts
        );
        let reasons = &s.contacts.excluded_by_reason;
        assert_eq!(
            reasons.get("not_a_test_recipient").copied(),
            Some(u64::from(AUDIENCE) - 3),
            "{reasons:?}"
        );
        assert_eq!(
            reasons.get("engaged_elsewhere").copied(),
            Some(1),
            "contact 1 is engaged by the real campaign: {reasons:?}"
        );
        assert_eq!(w.sandbox.stats().accepted, 3, "1 real + 2 test messages");
        for i in [0u32, 2] {
            let digits = phone(i).trim_start_matches('+').to_string();
            let r: serde_json::Value = reqwest::get(format!(
                "{}/sandbox/recipients/{digits}",
                w.sandbox.base_url()
            ))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
            assert_eq!(r["messages"], 1, "{}", phone(i));
        }

        // Reported apart.
        let base = format!("http://{}", daemon.admin_addr);
        let trial = campaign_json(&base, "trial").await;
        assert_eq!(trial["kind"], "test");
        let real = reqwest::get(format!("{base}/campaigns"))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        let real = real
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "real")
            .unwrap()
            .clone();
        assert_eq!(real["kind"], "real");
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(
                r#"wadispatch_campaign_contacts{campaign="trial",kind="test",state="excluded"} 18"#
            ),
            "{}",
            metrics
                .lines()
                .filter(|l| l.contains("campaign_contacts"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(metrics.contains(r#"wadispatch_campaign_contacts{campaign="real",kind="real","#));
        let (brokers, topic) = (w.kafka.brokers.clone(), topics.events.clone());
        let events = tokio::task::spawn_blocking(move || {
            read_until(
                &brokers,
                &topic,
                Duration::from_secs(20),
                "the test campaign's claim-time exclusion and state events",
                |records| {
                    let of = |kind: &str| {
                        records.iter().any(|(_, p, _)| {
                            p.as_deref().is_some_and(|p| {
                                p.contains(&format!(r#""type":"{kind}""#))
                                    && p.contains(r#""campaign_id":"trial""#)
                            })
                        })
                    };
                    of("excluded") && of("campaign")
                },
            )
        })
        .await
        .unwrap();
        let events: Vec<serde_json::Value> = events
            .iter()
            .filter_map(|(_, p, _)| serde_json::from_str::<serde_json::Value>(p.as_deref()?).ok())
            .collect();
        // Staging exclusions (`not_a_test_recipient`) are counted, not
        // published; the claim-time one and the state changes are.
        fn of<'a>(
            events: &'a [serde_json::Value],
            id: &'a str,
        ) -> impl Iterator<Item = &'a serde_json::Value> {
            events.iter().filter(move |e| e["campaign_id"] == id)
        }
        assert!(of(&events, "trial").any(|e| e["type"] == "excluded"
            && e["reason"] == "engaged_elsewhere"
            && e["campaign_kind"] == "test"));
        assert!(
            of(&events, "trial").all(|e| e["campaign_kind"] == "test"),
            "{events:?}"
        );
        assert!(of(&events, "real").all(|e| e.get("campaign_kind").is_none()));
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}
