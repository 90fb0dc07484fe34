//! A number's throughput as Meta manages it: 131057 (the number in
//! maintenance) pauses its sender without failing anyone, and a
//! `phone_number_quality_update` with event `THROUGHPUT_UPGRADE` raises a
//! sender with `auto_throughput` to Meta's higher throughput, under its
//! `max_per_second`. The sandbox plays Meta (`POST /sandbox/numbers`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use wadispatch::app::{self, Daemon};
use wadispatch::domain::DispatchState;

const CONTACTS: u32 = 1_500;
const SENDER: &str = "5902";
const SHOWN: &str = "15550783881";

async fn accepted(daemon: &Daemon) -> u64 {
    summary(daemon, "thr")
        .await
        .reached(DispatchState::Accepted)
}

/// Messages accepted over `window`.
async fn sent_over(daemon: &Daemon, window: Duration) -> u64 {
    let before = accepted(daemon).await;
    tokio::time::sleep(window).await;
    accepted(daemon).await - before
}

#[test]
fn maintenance_pauses_the_sender_and_an_upgrade_raises_it() {
    app::system().block_on(async {
        let mut w = World::start(&[(SENDER, 20.0)], Vec::new()).await;
        w.config.dispatch.maintenance_pause_secs = 2.0;
        let sender = w.config.senders.get_mut(SENDER).unwrap();
        sender.display_phone_number = Some(SHOWN.into());
        sender.auto_throughput = true;
        sender.max_per_second = Some(200.0);
        let p = w.kafka.producer();
        let spec = r#"{"id":"thr","state":"active","senders":["5902"],"exclusive":false,
            "template":{"name":"promo","language":"es_MX","body":["{{name}}"]},
            "pacing":{"per_second":1000}}"#;
        publish(&p, &w.config.kafka.topics.campaigns, "thr", spec).await;
        let audience: Vec<(String, String)> = (0..CONTACTS)
            .map(|i| (phone(i), audience_json("thr", i, false)))
            .collect();
        publish_all(&p, &w.config.kafka.topics.audience, &audience).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let state = live(&daemon, "thr").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while accepted(&daemon).await < 20 {
            assert!(Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Meta puts the number in maintenance for 3 s: 131057 pauses the
        // sender (2 s each time), the campaign says why, nobody fails.
        let base = w.sandbox.base_url();
        let body = serde_json::json!({"phone_number_id": SENDER, "maintenance_secs": 3});
        meta_does(&base, "numbers", body).await;
        wait_until(Duration::from_secs(10), "the maintenance wait", || {
            state
                .wait_reason
                .lock()
                .unwrap()
                .as_deref()
                .is_some_and(|r| r.contains("maintenance") && r.contains("131057"))
        })
        .await;
        let paused_at = accepted(&daemon).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            accepted(&daemon).await,
            paused_at,
            "nothing sent while paused"
        );
        let s = summary(&daemon, "thr").await;
        assert_eq!(s.count(DispatchState::Failed), 0, "131057 fails nobody");

        // Back at the configured 20/s.
        wait_until(
            Duration::from_secs(15),
            "the end of the maintenance",
            || {
                let reason = state.wait_reason.lock().unwrap().clone();
                !reason.is_some_and(|r| r.contains("maintenance"))
            },
        )
        .await;
        let before = sent_over(&daemon, Duration::from_secs(2)).await;
        assert!(before <= 20 * 2 + 10, "{before} sent in 2 s at 20/s");

        // Meta upgrades the number: the sender follows, up to 200/s.
        let body = serde_json::json!({"phone_number_id": SENDER, "event": "THROUGHPUT_UPGRADE",
                                      "display_phone_number": SHOWN});
        assert_eq!(meta_does(&base, "numbers", body).await, Some(200));
        let core = daemon.senders.read().unwrap()[SENDER].1.clone();
        wait_until(Duration::from_secs(10), "the sender at 200/s", || {
            (core.configured() - 200.0).abs() < f64::EPSILON
        })
        .await;
        assert_eq!(
            daemon.env.portfolio.limit(),
            None,
            "the upgrade's TIER_UNLIMITED is a throughput, not a messaging limit"
        );
        let after = sent_over(&daemon, Duration::from_secs(2)).await;
        assert!(
            after > 3 * before.max(20),
            "the measured rate rises: {before} then {after} sent in 2 s"
        );
        let s = wait_done(
            &daemon,
            "thr",
            u64::from(CONTACTS),
            Duration::from_secs(120),
        )
        .await;
        assert_eq!(s.count(DispatchState::Failed), 0);
        assert_eq!(w.sandbox.stats().duplicate_recipients, 0);
        assert!(
            w.sandbox
                .stats()
                .rejected_by_code
                .get(&131_057)
                .copied()
                .unwrap_or(0)
                > 0,
            "the sandbox answered 131057"
        );
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

/// `whatsapp.number_quality = "halt"`: Meta flags the number (`FLAGGED`):
/// the marketing campaign stops taking contacts and says why, the utility
/// campaign on the same number goes on; `UNFLAGGED` lets marketing finish.
#[test]
fn a_flagged_number_halts_its_marketing_sends_only() {
    app::system().block_on(async {
        let mut w = World::start(&[(SENDER, 100.0)], Vec::new()).await;
        w.config.whatsapp.number_quality = wadispatch::domain::NumberQualityPolicy::Halt;
        w.config.senders.get_mut(SENDER).unwrap().display_phone_number = Some(SHOWN.into());
        let p = w.kafka.producer();
        for (id, category, per_second) in [("mkt", "marketing", 20), ("utl", "utility", 200)] {
            let spec = format!(
                r#"{{"id":"{id}","state":"active","senders":["5902"],"exclusive":false,
                "template":{{"name":"t_{id}","language":"es_MX","category":"{category}","body":["{{{{name}}}}"]}},
                "pacing":{{"per_second":{per_second}}}}}"#
            );
            publish(&p, &w.config.kafka.topics.campaigns, id, &spec).await;
        }
        let first: u32 = 5_000;
        let audience: Vec<(String, String)> = (0..300)
            .map(|i| (phone(i), audience_json("mkt", i, false)))
            .chain((first..first + 300).map(|i| (phone(i), audience_json("utl", i, false))))
            .collect();
        publish_all(&p, &w.config.kafka.topics.audience, &audience).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let mkt = live(&daemon, "mkt").await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while summary(&daemon, "mkt").await.reached(DispatchState::Accepted) < 10 {
            assert!(Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let base = w.sandbox.base_url();
        let flag = |event: &str| {
            serde_json::json!({"phone_number_id": SENDER, "event": event, "display_phone_number": SHOWN})
        };
        assert_eq!(meta_does(&base, "numbers", flag("FLAGGED")).await, Some(200));
        wait_until(Duration::from_secs(10), "the marketing campaign held", || {
            mkt.wait_reason
                .lock()
                .unwrap()
                .as_deref()
                .is_some_and(|r| r.contains("FLAGGED") && r.contains("halt"))
        })
        .await;
        // Sends claimed before the flag finish; then nothing more.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held_at = summary(&daemon, "mkt").await.reached(DispatchState::Accepted);
        let utl = wait_done(&daemon, "utl", 300, Duration::from_secs(60)).await;
        assert_eq!(utl.reached(DispatchState::Accepted), 300, "utility goes on");
        assert_eq!(
            summary(&daemon, "mkt").await.reached(DispatchState::Accepted),
            held_at,
            "no marketing send while flagged"
        );
        assert!(held_at < 300);
        assert_eq!(meta_does(&base, "numbers", flag("UNFLAGGED")).await, Some(200));
        let s = wait_done(&daemon, "mkt", 300, Duration::from_secs(60)).await;
        assert_eq!(s.reached(DispatchState::Accepted), 300);
        assert_eq!(s.count(DispatchState::Failed), 0);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}
