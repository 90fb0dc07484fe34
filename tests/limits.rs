//! The messaging limit learned from Meta: a `business_capability_update`
//! lowers the portfolio limit mid-campaign (the campaign waits with the
//! reason, at exactly the limit's number of recipients), the limit is kept
//! across a restart, and an unlimited one lets the campaign finish.

mod common;

use std::time::Duration;

use common::*;
use wadispatch::app::{self, Daemon};
use wadispatch::domain::DispatchState;
use wadispatch::report::CampaignSummary;

const CONTACTS: u32 = 300;
const LIMIT: u64 = 120;

async fn claims(daemon: &Daemon, id: &str) -> u64 {
    let s = CampaignSummary::compute(daemon.store.as_ref(), id)
        .await
        .unwrap();
    s.staged - s.count(DispatchState::Pending) - s.excluded()
}

/// Meta states the limit; answers the HTTP status of the daemon's receiver.
async fn meta_states(w: &World, limit: serde_json::Value, field: &str) -> Option<u64> {
    let body = serde_json::json!({"limit": limit, "field": field});
    meta_does(&w.sandbox.base_url(), "limits", body).await
}

/// Claims given back at the limit may be on their way back to pending for a
/// moment: the count settles at exactly the limit, and stays there.
async fn settles_at_the_limit(daemon: &Daemon) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while claims(daemon, "lim").await != LIMIT {
        assert!(
            std::time::Instant::now() < deadline,
            "{} claimed, the limit is {LIMIT}",
            claims(daemon, "lim").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        claims(daemon, "lim").await,
        LIMIT,
        "exactly the limit's recipients"
    );
}

#[test]
fn a_limit_stated_by_meta_holds_the_campaign_at_its_number_of_recipients() {
    app::system().block_on(async {
        let mut w = World::start(&[("5901", 100.0)], Vec::new()).await;
        // The configured limit is the ceiling (and what holds until Meta
        // says otherwise); recipients are counted from the first send.
        w.config.dispatch.portfolio_daily_limit = Some(10_000);
        let p = w.kafka.producer();
        let spec = r#"{"id":"lim","state":"active","senders":["5901"],"exclusive":false,
            "template":{"name":"promo","language":"es_MX","body":["{{name}}"]},
            "pacing":{"per_second":40}}"#;
        publish(&p, &w.config.kafka.topics.campaigns, "lim", spec).await;
        let audience: Vec<(String, String)> = (0..CONTACTS)
            .map(|i| (phone(i), audience_json("lim", i, false)))
            .collect();
        publish_all(&p, &w.config.kafka.topics.audience, &audience).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store.clone())
            .await
            .unwrap();
        let state = live(&daemon, "lim").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while claims(&daemon, "lim").await < 30 {
            assert!(std::time::Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            meta_states(&w, serde_json::json!(LIMIT), "business_capability_update").await,
            Some(200)
        );
        assert_eq!(daemon.env.portfolio.limit(), Some(LIMIT));
        wait_until(Duration::from_secs(30), "the campaign waits for the limit", || {
            state
                .wait_reason
                .lock()
                .unwrap()
                .as_deref()
                .is_some_and(|r| r.contains("120 unique recipients per 24 h (Meta's messaging limit, from business_capability_update"))
        })
        .await;
        settles_at_the_limit(&daemon).await;
        assert_eq!(w.sandbox.stats().recipients, LIMIT);
        // The ETA counts the limit: the rest waits for places to free, about
        // a day from now, not the few seconds its pace would take.
        wait_until(Duration::from_secs(30), "an ETA that counts the limit", || {
            state
                .progress
                .lock()
                .unwrap()
                .as_ref()
                .and_then(|p| p.eta_seconds)
                .is_some_and(|eta| eta > 20.0 * 3600.0)
        })
        .await;
        let metrics = reqwest::get(format!("http://{}/metrics", daemon.admin_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(metrics.contains("wadispatch_portfolio_limit 120"), "gauge");
        assert!(daemon.shutdown(Duration::from_secs(10)).await);

        // A restart knows the limit before its first claim.
        let mut again = w.config.clone();
        again.kafka.group_id.push_str("-restarted");
        let daemon = Daemon::start(again, store.clone()).await.unwrap();
        assert_eq!(daemon.env.portfolio.limit(), Some(LIMIT));
        let state = live(&daemon, "lim").await;
        wait_until(Duration::from_secs(30), "waiting again", || {
            state.wait_reason.lock().unwrap().is_some()
        })
        .await;
        settles_at_the_limit(&daemon).await;

        // Meta lifts it (a tier, through the number's quality update).
        assert_eq!(
            meta_states(&w, serde_json::json!("TIER_UNLIMITED"), "phone_number_quality_update")
                .await,
            Some(200)
        );
        assert_eq!(daemon.env.portfolio.limit(), Some(10_000), "the ceiling");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while claims(&daemon, "lim").await < u64::from(CONTACTS) {
            assert!(std::time::Instant::now() < deadline, "never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(w.sandbox.stats().duplicate_recipients, 0);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}
