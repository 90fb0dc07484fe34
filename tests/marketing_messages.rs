//! The Marketing Messages API: with `whatsapp.marketing_messages = "auto"`
//! marketing templates go to `/marketing_messages` (priced `marketing_lite`
//! by Meta) and every other template to `/messages`; a template Meta holds as
//! utility while the spec says marketing is refused there once (134100) and
//! goes to `/messages` from then on, nobody failing; with `"always"` an
//! account not onboarded halts the campaign with Meta's 134102. The sandbox
//! plays Meta.

mod common;

use std::time::Duration;

use common::*;
use wadispatch::app::{self, Daemon};
use wadispatch::domain::{DispatchState, MarketingMessages};
use wadispatch::sandbox::PricingCategory;

const CONTACTS: u32 = 60;

fn spec(id: &str, template: &str, category: &str) -> String {
    format!(
        r#"{{"id":"{id}","state":"active","senders":["5903"],"exclusive":false,
            "template":{{"name":"{template}","language":"es_MX","category":"{category}","body":["{{{{name}}}}"]}},
            "pacing":{{"per_second":200}}}}"#
    )
}

async fn stage(w: &World, id: &str, template: &str, category: &str, first: u32) {
    let p = w.kafka.producer();
    publish(
        &p,
        &w.config.kafka.topics.campaigns,
        id,
        &spec(id, template, category),
    )
    .await;
    let audience: Vec<(String, String)> = (first..first + CONTACTS)
        .map(|i| (phone(i), audience_json(id, i, false)))
        .collect();
    publish_all(&p, &w.config.kafka.topics.audience, &audience).await;
}

#[test]
fn marketing_templates_take_the_marketing_messages_api() {
    app::system().block_on(async {
        let mut w = World::start_with(&[("5903", 200.0)], Vec::new(), |s| {
            s.categories = [
                ("promo".to_string(), PricingCategory::Marketing),
                ("reminder".to_string(), PricingCategory::Utility),
                ("promo_misfiled".to_string(), PricingCategory::Utility),
            ]
            .into();
        })
        .await;
        w.config.whatsapp.marketing_messages = MarketingMessages::Auto;
        stage(&w, "mkt", "promo", "marketing", 0).await;
        stage(&w, "utl", "reminder", "utility", 1_000).await;
        stage(&w, "mis", "promo_misfiled", "marketing", 2_000).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        for id in ["mkt", "utl", "mis"] {
            let s = wait_done(&daemon, id, u64::from(CONTACTS), Duration::from_secs(90)).await;
            assert_eq!(s.count(DispatchState::Failed), 0, "{id}: nobody fails");
            assert_eq!(
                s.reached(DispatchState::Accepted),
                u64::from(CONTACTS),
                "{id}"
            );
        }
        let stats = w.sandbox.stats();
        assert_eq!(
            stats.marketing_messages,
            u64::from(CONTACTS),
            "only the marketing campaign's messages took /marketing_messages"
        );
        assert_eq!(stats.accepted, 3 * u64::from(CONTACTS));
        assert_eq!(stats.duplicate_recipients, 0);
        assert!(
            stats.rejected_by_code.get(&134_100).copied().unwrap_or(0) >= 1,
            "the misfiled template was refused there: {:?}",
            stats.rejected_by_code
        );
        // Meta prices what went through the Marketing Messages API as
        // marketing_lite.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for id in ["mkt", "mis"] {
            while summary(&daemon, id).await.billable.total() < u64::from(CONTACTS) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{id}: statuses with their pricing"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let billed = summary(&daemon, "mkt").await.billable.by_category();
        assert_eq!(billed.get("marketing_lite"), Some(&u64::from(CONTACTS)));
        let billed = summary(&daemon, "mis").await.billable.by_category();
        assert_eq!(
            billed.get("utility"),
            Some(&u64::from(CONTACTS)),
            "{billed:?}"
        );
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

#[test]
fn strict_sends_of_an_account_not_onboarded_halt_the_campaign() {
    app::system().block_on(async {
        let mut w = World::start_with(&[("5903", 200.0)], Vec::new(), |s| {
            s.marketing_messages_onboarded = false;
        })
        .await;
        w.config.whatsapp.marketing_messages = MarketingMessages::Always;
        stage(&w, "strict", "promo", "marketing", 0).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let state = live(&daemon, "strict").await;
        wait_until(
            Duration::from_secs(30),
            "the campaign halted by 134102",
            || state.halt_reason().is_some_and(|r| r.contains("134102")),
        )
        .await;
        let s = summary(&daemon, "strict").await;
        assert_eq!(s.reached(DispatchState::Accepted), 0, "nothing went out");
        assert_eq!(s.count(DispatchState::Failed), 0, "nobody failed");
        assert_eq!(w.sandbox.stats().accepted, 0);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}
