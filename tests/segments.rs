//! Segments: a campaign's `audience` takes the contacts whose tags match
//! every filter (`tags_any`, `tags_all`, `tags_none`, `require_tags`); the
//! others are excluded `not_in_segment`. A valued tag fills
//! `{{tags.customer_id}}`, and a contact without it is excluded
//! `missing_variable:tags.customer_id`.

mod common;

use std::time::Duration;

use common::*;
use wadispatch::app::{self, Daemon};
use wadispatch::domain::{ContactKey, DispatchState};

const SENDER: &str = "106540352242922";

const SPEC: &str = r#"{"id":"seg","state":"active","senders":["106540352242922"],"exclusive":false,
    "audience":{"tags_any":["mx","co"],"tags_all":["vip"],"tags_none":["churned"],"require_tags":true},
    "template":{"name":"promo","language":"es_MX","body":["{{name}}","{{tags.customer_id}}"]},
    "pacing":{"per_second":100}}"#;

fn record(i: u32, tags: &str) -> (String, String) {
    (
        phone(i),
        format!(
            r#"{{"campaign_id":"seg","contact":{{"phone":"{}"}},"variables":{{"name":"N{i}"}},"tags":{tags}}}"#,
            phone(i)
        ),
    )
}

#[test]
fn a_segment_takes_the_contacts_its_tags_select_and_valued_tags_fill_the_template() {
    app::system().block_on(async {
        let w = World::start(&[(SENDER, 200.0)], Vec::new()).await;
        let p = w.kafka.producer();
        let topics = &w.config.kafka.topics;
        publish(&p, &topics.campaigns, "seg", SPEC).await;
        let audience = vec![
            // In the segment, each with its customer id (both shapes).
            record(0, r#"["vip","mx",{"customer_id":"C-0"}]"#),
            record(1, r#"{"VIP":true,"co":null,"customer_id":"C-1"}"#),
            // In the segment, without the valued tag the template reads.
            record(2, r#"["vip","mx"]"#),
            // Outside: no tag of tags_any, not every tag of tags_all, a
            // tag of tags_none, no tag at all.
            record(3, r#"["vip","ar",{"customer_id":"C-3"}]"#),
            record(4, r#"["mx",{"customer_id":"C-4"}]"#),
            record(5, r#"["vip","mx","churned",{"customer_id":"C-5"}]"#),
            record(6, "[]"),
        ];
        publish_all(&p, &topics.audience, &audience).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let s = wait_done(&daemon, "seg", 7, Duration::from_secs(60)).await;
        assert_eq!(s.reached(DispatchState::Accepted), 2, "{:?}", s.contacts);
        let reasons = &s.contacts.excluded_by_reason;
        assert_eq!(
            reasons.get("not_in_segment").copied(),
            Some(4),
            "{reasons:?}"
        );
        assert_eq!(
            reasons.get("missing_variable:tags.customer_id").copied(),
            Some(1),
            "{reasons:?}"
        );
        assert_eq!(w.sandbox.stats().accepted, 2);
        for (i, id) in [(0u32, "C-0"), (1, "C-1")] {
            let key = ContactKey::parse_id(&phone(i), None).unwrap();
            let row = daemon
                .store
                .get_dispatch("seg", &key)
                .await
                .unwrap()
                .unwrap();
            let body = serde_json::to_value(&row.params).unwrap()["body"].clone();
            assert_eq!(body[1]["kind"]["text"], id, "{body}");
            // The row keeps the tags, the valued ones as name=value.
            assert!(
                row.tags.contains(&format!("customer_id={id}")),
                "{:?}",
                row.tags
            );
        }
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}
