//! Contacts known by a business-scoped user id (BSUID), end to end: staged
//! by user id, sent with `recipient`, their statuses and replies (no phone
//! in them) applied, their STOP recorded; a contact staged by phone whose
//! webhooks carry a user id too is one contact under both, so a campaign
//! addressed to that user id later excludes the opted-out person.

mod common;

use std::time::{Duration, Instant};

use common::*;
use wadispatch::app::{self, Daemon};
use wadispatch::domain::{ContactKey, DispatchState};

const SENDER: &str = "106540352242922";
const USERS: u32 = 40;
const PHONES: u32 = 40;

fn user_id(i: u32) -> String {
    format!("US.{:020}", 13_491_208_655_302_741_000u64 + u64::from(i))
}

fn spec(id: &str) -> String {
    spec_exclusive(id, false)
}

fn spec_exclusive(id: &str, exclusive: bool) -> String {
    format!(
        r#"{{"id":"{id}","state":"active","senders":["{SENDER}"],"exclusive":{exclusive},
            "template":{{"name":"promo","language":"es_MX","category":"marketing","body":["{{{{name}}}}"]}},
            "pacing":{{"per_second":200}}}}"#
    )
}

fn by_user_id(campaign: &str, id: &str) -> String {
    format!(
        r#"{{"campaign_id":"{campaign}","contact":{{"user_id":"{id}","name":"U"}},"variables":{{"name":"U"}}}}"#
    )
}

async fn wait_replied(daemon: &Daemon, id: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = summary(daemon, id).await;
        if s.reached(DispatchState::Replied) == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id}: {} of {n} replied: {:?}",
            s.reached(DispatchState::Replied),
            s.contacts.by_state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_contact_known_by_user_id_is_sent_replied_and_opted_out() {
    app::system().block_on(async {
        // Every delivered message is read and answered STOP; phones get a
        // user id beside them, as Meta reports since 2026.
        let w = World::start_with(&[(SENDER, 200.0)], Vec::new(), |c| {
            c.reply_share = 1.0;
            c.read_share = 1.0;
            c.stop_share = 1.0;
            c.phone_user_ids = true;
        })
        .await;
        let p = w.kafka.producer();
        let topics = &w.config.kafka.topics;
        publish(&p, &topics.campaigns, "uid", &spec("uid")).await;
        let mut audience: Vec<(String, String)> = (0..USERS)
            .map(|i| (user_id(i), by_user_id("uid", &user_id(i))))
            .collect();
        audience.extend((0..PHONES).map(|i| (phone(i), audience_json("uid", i, false))));
        publish_all(&p, &topics.audience, &audience).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        let total = u64::from(USERS + PHONES);
        wait_done(&daemon, "uid", total, Duration::from_secs(90)).await;
        wait_replied(&daemon, "uid", total).await;

        assert_eq!(w.sandbox.stats().accepted, total);
        let s = summary(&daemon, "uid").await;
        assert_eq!(s.reached(DispatchState::Delivered), total);
        for i in 0..USERS {
            let user = ContactKey::raw(user_id(i));
            let r = daemon.store.get_contact(&user).await.unwrap().unwrap();
            assert!(r.opted_out, "{user} opted out by its STOP");
            assert_eq!(r.last_campaign.as_deref(), Some("uid"));
        }
        // Each phone is linked to the user id its webhooks carried, and the
        // STOP reached both.
        let mut linked_ids = Vec::new();
        for i in 0..PHONES {
            let phone = ContactKey::parse_id(&phone(i), None).unwrap();
            let r = daemon.store.get_contact(&phone).await.unwrap().unwrap();
            assert!(r.opted_out);
            let linked = r.linked.unwrap_or_else(|| panic!("{phone} has no user id"));
            assert!(linked.is_user_id());
            let other = daemon.store.get_contact(&linked).await.unwrap().unwrap();
            assert!(other.opted_out, "{linked} opted out with {phone}");
            assert_eq!(other.linked.as_ref(), Some(&phone));
            linked_ids.push(linked);
        }

        // A later campaign addressed by those user ids, and by the first
        // users' ids again: everyone is excluded as opted out, nothing sent.
        publish(&p, &topics.campaigns, "again", &spec("again")).await;
        let audience: Vec<(String, String)> = linked_ids
            .iter()
            .map(|id| (id.as_str().to_string(), by_user_id("again", id.as_str())))
            .chain((0..USERS).map(|i| (user_id(i), by_user_id("again", &user_id(i)))))
            .collect();
        publish_all(&p, &topics.audience, &audience).await;
        let again = wait_done(&daemon, "again", total, Duration::from_secs(60)).await;
        assert_eq!(again.reached(DispatchState::Accepted), 0);
        assert_eq!(
            again
                .contacts
                .by_state
                .get("excluded")
                .copied()
                .unwrap_or(0),
            total,
            "{:?}",
            again.contacts.by_state
        );
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}

/// The engagement of an exclusive campaign holds the person under either
/// identity: a campaign that reaches a phone (whose webhooks named its user
/// id) keeps an exclusive campaign addressed to that user id away, while a
/// non-exclusive one still sends.
#[test]
fn an_exclusive_campaign_holds_the_person_under_both_identities() {
    app::system().block_on(async {
        let w = World::start_with(&[(SENDER, 200.0)], Vec::new(), |c| {
            c.reply_share = 0.0;
            c.phone_user_ids = true;
        })
        .await;
        let p = w.kafka.producer();
        let topics = &w.config.kafka.topics;
        publish(
            &p,
            &topics.campaigns,
            "first",
            &spec_exclusive("first", true),
        )
        .await;
        let audience: Vec<(String, String)> = (0..PHONES)
            .map(|i| (phone(i), audience_json("first", i, false)))
            .collect();
        publish_all(&p, &topics.audience, &audience).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();
        wait_done(&daemon, "first", u64::from(PHONES), Duration::from_secs(90)).await;
        // The statuses carry each phone's user id: wait for every link.
        let mut user_ids = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..PHONES {
            let phone = ContactKey::parse_id(&phone(i), None).unwrap();
            loop {
                let r = daemon.store.get_contact(&phone).await.unwrap();
                if let Some(linked) = r.and_then(|r| r.linked) {
                    user_ids.push(linked);
                    break;
                }
                assert!(Instant::now() < deadline, "{phone} never linked");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        publish(
            &p,
            &topics.campaigns,
            "second",
            &spec_exclusive("second", true),
        )
        .await;
        publish(&p, &topics.campaigns, "third", &spec("third")).await;
        let audience: Vec<(String, String)> = user_ids
            .iter()
            .flat_map(|id| {
                ["second", "third"].map(|c| (id.as_str().to_string(), by_user_id(c, id.as_str())))
            })
            .collect();
        publish_all(&p, &topics.audience, &audience).await;
        let n = u64::from(PHONES);
        let second = wait_done(&daemon, "second", n, Duration::from_secs(60)).await;
        assert_eq!(
            second
                .contacts
                .excluded_by_reason
                .get("engaged_elsewhere")
                .copied(),
            Some(n),
            "{:?}",
            second.contacts
        );
        let third = wait_done(&daemon, "third", n, Duration::from_secs(60)).await;
        assert_eq!(third.reached(DispatchState::Accepted), n);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}
