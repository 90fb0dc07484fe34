//! The webhook receiver as Meta drives it: signed POSTs of statuses and
//! customer messages, applied to a real embedded store, events read back
//! from Kafka (mock cluster).

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::*;
use serde_json::json;
use wadispatch::domain::{ContactKey, DispatchState, FrozenParams};
use wadispatch::events::EventsProducer;
use wadispatch::ingest::catalog::CampaignCatalog;
use wadispatch::store::embedded::{Durability, EmbeddedStore};
use wadispatch::store::*;
use wadispatch::webhook::{signature, Verdict, WebhookProcessor, WebhookSettings};

const SECRET: &str = "test-app-secret";
const CAMPAIGN: &str = "bday-2026-11";
/// The sender (phone_number_id) whose requests Meta accepted.
const SENDER: &str = "106540352240001";

struct Harness {
    _dir: tempfile::TempDir,
    kafka: Kafka,
    store: Arc<dyn Store>,
    processor: Arc<WebhookProcessor>,
    events_topic: String,
}

async fn harness() -> Harness {
    harness_waiting(std::time::Duration::ZERO).await
}

/// A harness whose replies wait `reply_context_wait` for their wamid.
async fn harness_waiting(reply_context_wait: std::time::Duration) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), "");
    let kafka = Kafka::start(&config);
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("s"), Durability::Process, 16).unwrap());
    let catalog = CampaignCatalog::default();
    catalog
        .insert(CampaignCatalog::parse(CAMPAIGN, wadispatch::demo::PROMO_SPEC.as_bytes()).unwrap());
    let events = EventsProducer::new(&kafka.brokers, &config.kafka.topics.events, &[]).unwrap();
    let processor = Arc::new(WebhookProcessor::new(
        store.clone(),
        Some(events),
        catalog,
        WebhookSettings {
            app_secret: Some(SECRET.into()),
            verify_token: Some("verify-me".into()),
            opt_out_keywords: vec!["STOP".into(), "baja".into()],
            keyword_scope: wadispatch::domain::OptOutScope::All,
            reply_context_wait,
            marketing_limit_retry: Default::default(),
            sms_reports: None,
        },
    ));
    Harness {
        _dir: dir,
        kafka,
        store,
        processor,
        events_topic: config.kafka.topics.events.clone(),
    }
}

fn contact(n: u32) -> ContactKey {
    ContactKey::raw(format!("+5255{:08}", 30_000_000 + n))
}

fn wa_id(n: u32) -> String {
    format!("5255{:08}", 30_000_000 + n)
}

/// When the test contacts were staged and sent.
fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 15, 0, 0).unwrap()
}

/// Stages contact `n` (pending).
async fn staged(store: &dyn Store, n: u32) {
    store
        .stage_batch(&[StageRequest {
            campaign_id: CAMPAIGN.into(),
            contact: contact(n),
            shard: 0,
            seq: u64::from(n),
            params: FrozenParams::default(),
            exclusion: None,
            send_after: None,
            timezone: None,
            tags: vec![],
            name: None,
            staged_at: t0(),
            journey: Default::default(),
        }])
        .await
        .unwrap();
}

/// Claims staged contact `n` (its request about to leave).
async fn claimed(store: &dyn Store, n: u32) {
    let claim = ClaimRequest {
        campaign_id: CAMPAIGN.into(),
        contact: contact(n),
        exclusive: true,
        replace_engagement: None,
        owner: "t".into(),
        now: t0(),
        step: String::new(),
    };
    assert!(matches!(
        store.claim(&claim).await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
}

/// Records the API answer of claimed contact `n`: wamid `wamid.<n>`.
async fn answered(store: &dyn Store, n: u32) {
    store
        .record_outcome(
            CAMPAIGN,
            &contact(n),
            &Outcome::Accepted {
                wamid: format!("wamid.{n}"),
                sender: Some(SENDER.into()),
                held: None,
            },
            t0(),
        )
        .await
        .unwrap();
}

/// Stages, claims and accepts contact `n` with wamid `wamid.<n>`.
async fn sent(store: &dyn Store, n: u32) {
    staged(store, n).await;
    claimed(store, n).await;
    answered(store, n).await;
}

fn envelope(value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "100", "changes": [{"field": "messages", "value": value}]}]
    }))
    .unwrap()
}

fn status(n: u32, status: &str, ts: i64, errors: Option<serde_json::Value>) -> serde_json::Value {
    let mut s = json!({"id": format!("wamid.{n}"), "status": status, "timestamp": ts.to_string(), "recipient_id": wa_id(n)});
    if let Some(e) = errors {
        s["errors"] = e;
    }
    s
}

fn statuses(list: Vec<serde_json::Value>) -> Vec<u8> {
    envelope(
        json!({"messaging_product": "whatsapp", "metadata": {"phone_number_id": "106540352242922"}, "statuses": list}),
    )
}

async fn post(h: &Harness, body: &[u8]) -> Verdict {
    let sig = signature::sign(SECRET.as_bytes(), body);
    h.processor.handle(body, Some(&sig)).await
}

async fn state(h: &Harness, n: u32) -> DispatchRecord {
    h.store
        .get_dispatch(CAMPAIGN, &contact(n))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_missing_or_tampered_signatures_change_nothing() {
    let h = harness().await;
    sent(h.store.as_ref(), 1).await;
    let body = statuses(vec![status(1, "delivered", 1_790_000_000, None)]);
    assert_eq!(h.processor.handle(&body, None).await, Verdict::Unauthorized);
    let wrong = signature::sign(b"not-the-secret", &body);
    assert_eq!(
        h.processor.handle(&body, Some(&wrong)).await,
        Verdict::Unauthorized
    );
    let good = signature::sign(SECRET.as_bytes(), &body);
    let mut tampered = body.clone();
    let pos = tampered.len() - 10;
    tampered[pos] ^= 0x01;
    assert_eq!(
        h.processor.handle(&tampered, Some(&good)).await,
        Verdict::Unauthorized
    );
    assert_eq!(
        state(&h, 1).await.state,
        DispatchState::Accepted,
        "nothing changed"
    );
    assert_eq!(h.processor.handle(&body, Some(&good)).await, Verdict::Ok);
    assert_eq!(state(&h, 1).await.state, DispatchState::Delivered);
}

/// Empty ids name nothing: a status with `"id": ""` is matched by its
/// callback data (or not at all) and a reply with empty ids is published
/// unattributed; neither is parked under an empty key (the embedded store
/// refuses those, and the fuzz test once found the process aborting on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_ids_are_no_ids() {
    let h = harness_waiting(Duration::from_secs(5)).await;
    sent(h.store.as_ref(), 1).await;
    let mut nameless = status(1, "delivered", 1_790_000_000, None);
    nameless["id"] = json!("");
    nameless["biz_opaque_callback_data"] = json!(wadispatch::whatsapp::payload::callback_data(
        CAMPAIGN,
        &contact(1)
    ));
    let mut stranger = status(2, "delivered", 1_790_000_000, None);
    stranger["id"] = json!("  ");
    stranger["biz_opaque_callback_data"] = json!(null);
    assert_eq!(
        post(&h, &statuses(vec![nameless, stranger])).await,
        Verdict::Ok
    );
    assert_eq!(
        state(&h, 1).await.state,
        DispatchState::Delivered,
        "matched by its callback data"
    );
    let reply = envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "N"}, "wa_id": wa_id(3)}],
        "messages": [{
            "from": wa_id(3), "id": "", "timestamp": "1790000000", "type": "text",
            "text": {"body": "hola"}, "context": {"from": "15550001111", "id": ""}
        }]
    }));
    assert_eq!(post(&h, &reply).await, Verdict::Ok);
    assert!(h.store.parked_replies(10).await.unwrap().is_empty());
}

/// With no app secret configured nothing can be verified: every POST is
/// refused, signed or not, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_app_secret_every_post_is_refused() {
    let h = harness().await;
    sent(h.store.as_ref(), 1).await;
    let catalog = CampaignCatalog::default();
    catalog
        .insert(CampaignCatalog::parse(CAMPAIGN, wadispatch::demo::PROMO_SPEC.as_bytes()).unwrap());
    let unverifiable = WebhookProcessor::new(
        h.store.clone(),
        None,
        catalog,
        WebhookSettings {
            app_secret: None,
            verify_token: Some("verify-me".into()),
            opt_out_keywords: vec!["STOP".into()],
            keyword_scope: wadispatch::domain::OptOutScope::All,
            reply_context_wait: Duration::ZERO,
            marketing_limit_retry: Default::default(),
            sms_reports: None,
        },
    );
    let body = statuses(vec![status(1, "delivered", 1_790_000_000, None)]);
    let signed = signature::sign(SECRET.as_bytes(), &body);
    let empty_key = signature::sign(b"", &body);
    for sig in [
        None,
        Some(signed.as_str()),
        Some(empty_key.as_str()),
        Some("sha256="),
    ] {
        assert_eq!(
            unverifiable.handle(&body, sig).await,
            Verdict::Unauthorized,
            "signature {sig:?}"
        );
    }
    assert_eq!(
        state(&h, 1).await.state,
        DispatchState::Accepted,
        "nothing changed"
    );
    // The same body is applied by a processor that has the secret.
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert_eq!(state(&h, 1).await.state, DispatchState::Delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_are_monotonic_and_idempotent() {
    let h = harness().await;
    for n in 1..=3 {
        sent(h.store.as_ref(), n).await;
    }
    // Out of order: read arrives first, then delivered, then sent.
    assert_eq!(
        post(&h, &statuses(vec![status(1, "read", 300, None)])).await,
        Verdict::Ok
    );
    assert_eq!(
        post(
            &h,
            &statuses(vec![
                status(1, "delivered", 200, None),
                status(1, "sent", 100, None)
            ])
        )
        .await,
        Verdict::Ok
    );
    let r = state(&h, 1).await;
    assert_eq!(
        r.state,
        DispatchState::Read,
        "a late delivered/sent never downgrades read"
    );
    assert_eq!(r.times.read.unwrap().timestamp(), 300);
    // Read without delivered is normal.
    assert_eq!(
        post(
            &h,
            &statuses(vec![
                status(2, "sent", 100, None),
                status(2, "read", 200, None)
            ])
        )
        .await,
        Verdict::Ok
    );
    assert_eq!(state(&h, 2).await.state, DispatchState::Read);
    // Redelivery of the same webhook changes nothing.
    let body = statuses(vec![status(3, "delivered", 150, None)]);
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    let before = state(&h, 3).await;
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert_eq!(state(&h, 3).await, before);
    // The redelivered status is published again (at-least-once events), and
    // a stale one (sent after read) is not: wait for the events that must
    // come (the redelivery is the last post), then look for the stale one.
    let count = |events: &[ReadRecord], wamid: &str, status: &str| {
        events
            .iter()
            .filter_map(|(_, p, _)| serde_json::from_str::<serde_json::Value>(p.as_deref()?).ok())
            .filter(|e| e["type"] == "status" && e["wamid"] == wamid && e["status"] == status)
            .count()
    };
    let events = read_until(
        &h.kafka.brokers,
        &h.events_topic,
        Duration::from_secs(30),
        "both events of the redelivered status",
        |read| {
            count(read, "wamid.3", "delivered") >= 2
                && count(read, "wamid.1", "read") >= 1
                && count(read, "wamid.2", "read") >= 1
        },
    );
    assert_eq!(count(&events, "wamid.3", "delivered"), 2);
    assert_eq!(
        count(&events, "wamid.1", "sent"),
        0,
        "a stale status was published"
    );
    assert_eq!(
        count(&events, "wamid.1", "delivered"),
        0,
        "a stale status was published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_statuses_classify_and_mark_contacts() {
    let h = harness().await;
    for n in 1..=3 {
        sent(h.store.as_ref(), n).await;
    }
    let err = |code: i64| {
        Some(
            json!([{"code": code, "title": "t", "message": "m", "error_data": {"details": format!("details {code}")}}]),
        )
    };
    let body = statuses(vec![
        status(1, "failed", 100, err(131026)),
        status(2, "failed", 100, err(131050)),
        status(3, "failed", 100, err(131049)),
    ]);
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    let r1 = state(&h, 1).await;
    assert_eq!(
        (r1.state, r1.error_code, r1.error_class.as_deref()),
        (DispatchState::Failed, Some(131026), Some("contact"))
    );
    assert_eq!(r1.error_message.as_deref(), Some("details 131026"));
    assert!(h
        .store
        .get_contact(&contact(1))
        .await
        .unwrap()
        .unwrap()
        .undeliverable_at
        .is_some());
    let r2 = state(&h, 2).await;
    assert_eq!(r2.state, DispatchState::Failed);
    let c2 = h.store.get_contact(&contact(2)).await.unwrap().unwrap();
    assert!(
        c2.marketing_opted_out && !c2.opted_out,
        "131050 is an opt-out of marketing only: {c2:?}"
    );
    let r3 = state(&h, 3).await;
    assert_eq!(
        r3.state,
        DispatchState::Deferred,
        "131049: retried a day later first"
    );
    assert_eq!(r3.deferred_until.unwrap().timestamp(), 100 + 24 * 3600);
    let pending = h.store.scan_pending(CAMPAIGN, 0, None, 10).await.unwrap();
    assert_eq!(
        pending.len(),
        1,
        "the deferred contact is back in the queue"
    );
}

/// 131049 on the default schedule (`whatsapp.marketing_limit_retry`: 24 h,
/// then twice as long each time, at most 168 h after staging): the contact
/// is deferred 24 h, then 48 h, and the third refusal is final because its
/// retry would come too late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_131049_is_retried_after_growing_waits_until_too_old() {
    let h = harness().await;
    let n = 31;
    staged(h.store.as_ref(), n).await;
    let hours = |x: i64| t0() + chrono::Duration::hours(x);
    let limited = |at: chrono::DateTime<Utc>| {
        statuses(vec![status(
            n,
            "failed",
            at.timestamp(),
            Some(json!([{"code": 131049, "title": "t", "message": "m",
                         "error_data": {"details": "per-user marketing limit"}}])),
        )])
    };
    for (claim_at, refused_at, retry_at) in [(0, 1, Some(25)), (25, 26, Some(74)), (74, 75, None)] {
        let claim = ClaimRequest {
            now: hours(claim_at),
            ..ClaimRequest {
                campaign_id: CAMPAIGN.into(),
                contact: contact(n),
                exclusive: true,
                replace_engagement: None,
                owner: "t".into(),
                now: t0(),
                step: String::new(),
            }
        };
        assert!(
            matches!(
                h.store.claim(&claim).await.unwrap(),
                ClaimOutcome::Claimed { .. }
            ),
            "claimable at +{claim_at} h"
        );
        answered(h.store.as_ref(), n).await;
        assert_eq!(post(&h, &limited(hours(refused_at))).await, Verdict::Ok);
        let row = state(&h, n).await;
        match retry_at {
            Some(_) => assert_eq!(
                (row.state, row.deferred_until),
                (DispatchState::Deferred, retry_at.map(hours)),
                "attempt {}",
                row.attempts
            ),
            None => assert_eq!(
                (row.state, row.error_code),
                (DispatchState::Failed, Some(131049)),
                "a retry at +171 h is past the 168 h age"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_attributed_published_and_stop_opts_out() {
    let h = harness().await;
    sent(h.store.as_ref(), 1).await;
    sent(h.store.as_ref(), 2).await;
    // Reply to the campaign message (context.id), and a reply without context.
    let body = envelope(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": wa_id(1)}],
        "messages": [
            {"from": wa_id(1), "id": "wamid.in.1", "timestamp": "500", "type": "text", "text": {"body": "¿Hasta cuándo vale?"}, "context": {"from": "15550000000", "id": "wamid.1"}},
            {"from": wa_id(2), "id": "wamid.in.2", "timestamp": "501", "type": "text", "text": {"body": " stop "}}
        ]
    }));
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert_eq!(state(&h, 1).await.state, DispatchState::Replied);
    assert_eq!(
        state(&h, 2).await.state,
        DispatchState::Replied,
        "attributed to the contact's latest campaign"
    );
    assert!(
        h.store
            .get_contact(&contact(2))
            .await
            .unwrap()
            .unwrap()
            .opted_out,
        "STOP opts out"
    );
    assert!(
        !h.store
            .get_contact(&contact(1))
            .await
            .unwrap()
            .unwrap()
            .opted_out
    );

    let events = read_all(
        &h.kafka.brokers,
        &h.events_topic,
        3,
        Duration::from_secs(20),
    );
    let parsed: Vec<serde_json::Value> = events
        .iter()
        .map(|(_, p, _)| serde_json::from_str(p.as_deref().unwrap()).unwrap())
        .collect();
    let reply = parsed
        .iter()
        .find(|e| e["type"] == "reply" && e["message_id"] == "wamid.in.1")
        .expect("reply event");
    assert_eq!(reply["campaign_id"], CAMPAIGN);
    assert_eq!(reply["agent"], "promo-agent");
    assert_eq!(reply["in_reply_to"], "wamid.1");
    assert_eq!(reply["text"], "¿Hasta cuándo vale?");
    assert_eq!(reply["contact"], contact(1).as_str());
    assert!(parsed.iter().any(|e| e["type"] == "opt_out"
        && e["contact"] == contact(2).as_str()
        && e["source"] == "keyword"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_that_overtakes_its_wamid_is_parked_then_applied() {
    let h = harness().await;
    staged(h.store.as_ref(), 9).await;
    // Delivered arrives before the API answer (no callback data either).
    assert_eq!(
        post(&h, &statuses(vec![status(9, "delivered", 100, None)])).await,
        Verdict::Ok
    );
    assert_eq!(state(&h, 9).await.state, DispatchState::Pending);
    claimed(h.store.as_ref(), 9).await;
    answered(h.store.as_ref(), 9).await;
    assert_eq!(
        state(&h, 9).await.state,
        DispatchState::Delivered,
        "the parked status was applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_preferences_opt_out_and_back_in() {
    let h = harness().await;
    let body = envelope(
        json!({"user_preferences": [{"wa_id": wa_id(5), "category": "marketing_messages", "value": "stop", "timestamp": 1_790_000_000}]}),
    );
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    let c = h.store.get_contact(&contact(5)).await.unwrap().unwrap();
    assert!(c.opted_out_of(true), "marketing templates are held");
    assert!(!c.opted_out_of(false), "utility templates still go");
    let body = envelope(
        json!({"user_preferences": [{"wa_id": wa_id(5), "category": "marketing_messages", "value": "resume", "timestamp": 1_790_000_100}]}),
    );
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert!(!h
        .store
        .get_contact(&contact(5))
        .await
        .unwrap()
        .unwrap()
        .opted_out_of(true));
}

/// A reply that arrives before the API answer carrying the wamid it
/// answers was recorded waits for it, then goes to that campaign and its
/// agent; one whose wamid never comes goes to the latest campaign after the
/// wait.
/// What the agent needs of a reply (payload shapes of Meta's messages
/// webhook references): the business number that received it, a media's id
/// and type, a location, a Flow's answer, also for a reply that waited for
/// its wamid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_carry_media_locations_flows_and_the_receiving_number() {
    let h = harness_waiting(Duration::from_secs(3)).await;
    for n in [11, 12] {
        sent(h.store.as_ref(), n).await;
    }
    staged(h.store.as_ref(), 13).await;
    claimed(h.store.as_ref(), 13).await;
    let body = envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "messages": [
            {"from": wa_id(11), "id": "wamid.in.11", "timestamp": "500", "type": "image",
             "image": {"caption": "mi comprobante", "mime_type": "image/jpeg", "sha256": "SfIn=", "id": "1003383421387256"}},
            {"from": wa_id(12), "id": "wamid.in.12", "timestamp": "501", "type": "location",
             "location": {"latitude": 19.4326, "longitude": -99.1332, "name": "Sucursal Centro", "address": "Av. Juárez 10"}},
            {"from": wa_id(13), "id": "wamid.in.13", "timestamp": "502", "type": "interactive",
             "context": {"from": "15550783881", "id": "wamid.13"},
             "interactive": {"type": "nfm_reply", "nfm_reply": {"name": "flow", "body": "Sent",
                             "response_json": "{\"flow_token\": \"pay-13\", \"amount\": \"500\"}"}}}
        ]
    }));
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    // The Flow's answer waits for the wamid it answers; then it is settled.
    assert_eq!(h.store.parked_replies(10).await.unwrap().len(), 1);
    answered(h.store.as_ref(), 13).await;
    assert_eq!(h.processor.settle_parked_replies().await, 1);

    let events = read_all(
        &h.kafka.brokers,
        &h.events_topic,
        3,
        Duration::from_secs(20),
    );
    let reply = |id: &str| -> serde_json::Value {
        events
            .iter()
            .map(|(_, p, _)| {
                serde_json::from_str::<serde_json::Value>(p.as_deref().unwrap()).unwrap()
            })
            .find(|e| e["type"] == "reply" && e["message_id"] == id)
            .unwrap_or_else(|| panic!("no reply event for {id}: {events:?}"))
    };
    let image = reply("wamid.in.11");
    assert_eq!(image["received_by"], "106540352242922");
    assert_eq!(
        image["sent_by"], SENDER,
        "the sender that sent the campaign message"
    );
    assert_eq!(image["kind"], "image");
    assert_eq!(image["text"], "mi comprobante");
    assert_eq!(image["media"]["id"], "1003383421387256");
    assert_eq!(image["media"]["mime_type"], "image/jpeg");
    assert!(image.get("location").is_none(), "{image}");
    let location = reply("wamid.in.12");
    assert_eq!(location["location"]["latitude"], 19.4326);
    assert_eq!(location["location"]["address"], "Av. Juárez 10");
    assert_eq!(location["text"], "Sucursal Centro");
    let flow = reply("wamid.in.13");
    assert_eq!(flow["received_by"], "106540352242922", "kept while parked");
    assert_eq!(flow["sent_by"], SENDER);
    assert_eq!(flow["campaign_id"], CAMPAIGN);
    assert_eq!(flow["interactive"]["type"], "nfm_reply");
    assert_eq!(flow["interactive"]["response"]["flow_token"], "pay-13");
}

/// A status with Meta's `pricing` object (shape: the status webhook
/// reference, per-message pricing since July 2025).
fn priced(n: u32, status: &str, ts: i64, billable: bool, kind: &str) -> serde_json::Value {
    let mut s = self::status(n, status, ts, None);
    s["pricing"] = json!({"billable": billable, "pricing_model": "PMP",
                          "category": "marketing", "type": kind});
    s
}

fn billable_metric(category: &str) -> u64 {
    wadispatch::metrics::metrics()
        .billable_messages
        .with_label_values(&[CAMPAIGN, category])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pricing_is_kept_once_per_message_and_prices_the_campaign() {
    let h = harness().await;
    for n in [21, 22, 23] {
        sent(h.store.as_ref(), n).await;
    }
    let before = billable_metric("marketing");
    // 21: sent, then delivered (both priced) and the sent redelivered;
    // 22: delivered first (its sent skipped), billable; 23: a free entry
    // point (not billable).
    let body = statuses(vec![
        priced(21, "sent", 600, true, "regular"),
        priced(21, "delivered", 601, true, "regular"),
        priced(21, "sent", 600, true, "regular"),
        priced(22, "delivered", 602, true, "regular"),
        priced(23, "sent", 603, false, "free_entry_point"),
    ]);
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert_eq!(post(&h, &body).await, Verdict::Ok, "a redelivered POST");
    let p = state(&h, 21).await.pricing.expect("pricing kept");
    assert_eq!(p.category, "marketing");
    assert!(p.billable);
    assert_eq!(p.model.as_deref(), Some("PMP"));
    assert_eq!(p.country.as_deref(), Some("MX"), "from the phone number");
    assert_eq!(state(&h, 21).await.sender.as_deref(), Some(SENDER));
    let free = state(&h, 23).await.pricing.expect("pricing kept");
    assert!(!free.billable);
    assert_eq!(free.kind.as_deref(), Some("free_entry_point"));
    assert_eq!(
        billable_metric("marketing") - before,
        2,
        "one per billable message, whatever the redeliveries"
    );
    let mut summary = wadispatch::report::CampaignSummary::compute(h.store.as_ref(), CAMPAIGN)
        .await
        .unwrap();
    assert_eq!(summary.billable.total(), 2);
    let card: wadispatch::domain::RateCard =
        toml::from_str("currency = \"USD\"\n[rates.marketing]\nMX = 0.0436\n\"*\" = 0.025\n")
            .unwrap();
    summary.price(&card);
    let cost = summary.cost.clone().unwrap();
    assert_eq!(cost.total, 0.0872);
    assert_eq!(cost.unpriced, 0);
    let text = summary.render(None);
    assert!(text.contains("estimated cost (USD)"), "{text}");
    assert!(text.contains("0.09"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_overtakes_its_wamid_waits_for_it() {
    let h = harness_waiting(Duration::from_secs(3)).await;
    staged(h.store.as_ref(), 7).await;
    claimed(h.store.as_ref(), 7).await;
    // Contact 8 answers a message we know nothing of; its latest campaign is ours.
    sent(h.store.as_ref(), 8).await;
    let body = envelope(json!({
        "messaging_product": "whatsapp",
        "messages": [
            {"from": wa_id(7), "id": "wamid.in.7", "timestamp": "500", "type": "text", "text": {"body": "sí"}, "context": {"id": "wamid.7"}},
            {"from": wa_id(8), "id": "wamid.in.8", "timestamp": "501", "type": "text", "text": {"body": "hola"}, "context": {"id": "wamid.elsewhere"}}
        ]
    }));
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert_eq!(h.store.parked_replies(10).await.unwrap().len(), 2);
    // A STOP that waits for its wamid opts the contact out at once.
    let stop = envelope(json!({
        "messaging_product": "whatsapp",
        "messages": [{"from": wa_id(6), "id": "wamid.in.6", "timestamp": "502", "type": "text", "text": {"body": "STOP"}, "context": {"id": "wamid.6"}}]
    }));
    assert_eq!(post(&h, &stop).await, Verdict::Ok);
    assert!(h
        .store
        .get_contact(&contact(6))
        .await
        .unwrap()
        .is_some_and(|c| c.opted_out));
    assert!(h.store.take_parked_reply("wamid.in.6").await.unwrap());
    assert_eq!(
        h.processor.settle_parked_replies().await,
        0,
        "both still wait"
    );
    // Redelivered by Meta meanwhile: parked once.
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert_eq!(h.store.parked_replies(10).await.unwrap().len(), 2);
    assert_eq!(state(&h, 7).await.state, DispatchState::Claimed);

    // The API answer arrives: contact 7's reply goes to its campaign.
    answered(h.store.as_ref(), 7).await;
    assert_eq!(h.processor.settle_parked_replies().await, 1);
    assert_eq!(state(&h, 7).await.state, DispatchState::Replied);
    let left = h.store.parked_replies(10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].message_id, "wamid.in.8");

    // Contact 8's wamid never comes: after the wait, its latest campaign.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.processor.settle_parked_replies().await == 0 {
        assert!(std::time::Instant::now() < deadline, "the wait never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.store.parked_replies(10).await.unwrap().is_empty());
    assert_eq!(state(&h, 8).await.state, DispatchState::Replied);

    // Asking for one more than expected: a reply published twice shows.
    let events = read_all(
        &h.kafka.brokers,
        &h.events_topic,
        3,
        Duration::from_secs(10),
    );
    let replies: Vec<serde_json::Value> = events
        .iter()
        .map(|(_, p, _)| serde_json::from_str(p.as_deref().unwrap()).unwrap())
        .filter(|e: &serde_json::Value| e["type"] == "reply")
        .collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    for r in &replies {
        assert_eq!(r["campaign_id"], CAMPAIGN, "{r}");
        assert_eq!(r["agent"], "promo-agent", "{r}");
    }
    assert!(replies
        .iter()
        .any(|r| r["message_id"] == "wamid.in.7" && r["in_reply_to"] == "wamid.7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bodies_never_panic() {
    let h = harness().await;
    sent(h.store.as_ref(), 1).await;
    let mut corpus: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"{}".to_vec(),
        b"{\"object\":\"page\"}".to_vec(),
        b"{\"object\":\"whatsapp_business_account\",\"entry\":5}".to_vec(),
        b"{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[{\"value\":{\"statuses\":[{}]}}]}]}".to_vec(),
        b"{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[{\"value\":{\"messages\":[{\"from\":\"x\"}]}}]}]}".to_vec(),
        statuses(vec![json!({"id": "wamid.1", "status": "delivered", "timestamp": "not a number"})]),
        statuses(vec![json!({"id": 5, "status": []})]),
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"changes\":[{\"value\":{\"statuses\":[{\"id\":\"\u{0}\"}]}}]}]}".as_bytes().to_vec(),
    ];
    // Deterministic pseudo-random mutations of a valid body.
    let valid = statuses(vec![status(1, "read", 100, None)]);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..300 {
        let mut b = valid.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] = (x >> 32) as u8;
        }
        corpus.push(b);
    }
    for body in corpus {
        let verdict = post(&h, &body).await;
        assert!(
            matches!(verdict, Verdict::Ok | Verdict::BadRequest(_)),
            "{verdict:?} for {:?}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_handshake_and_status_codes() {
    let h = harness().await;
    sent(h.store.as_ref(), 1).await;
    let (server, addr) = wadispatch::webhook::serve(h.processor.clone(), "127.0.0.1:0", 1).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/webhook");
    let ok = http
        .get(&url)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "verify-me"),
            ("hub.challenge", "1158201444"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    let bad = http
        .get(&url)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "nope"),
            ("hub.challenge", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    let body = statuses(vec![status(1, "delivered", 100, None)]);
    let unsigned = http.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let post_signed = |body: Vec<u8>| {
        http.post(&url)
            .header(
                "X-Hub-Signature-256",
                signature::sign(SECRET.as_bytes(), &body),
            )
            .body(body)
            .send()
    };
    assert_eq!(post_signed(body).await.unwrap().status(), 200);
    assert_eq!(
        post_signed(b"not json".to_vec()).await.unwrap().status(),
        400
    );
    handle.stop(true).await;
}

fn field_envelope(field: &str, value: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "100", "changes": [{"field": field, "value": value}]}]
    }))
    .unwrap()
}

async fn record(h: &Harness, contact: &ContactKey) -> ContactRecord {
    h.store
        .get_contact(contact)
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Business-scoped user ids, with the payloads of Meta's "Business-scoped
/// user IDs" page (June 2026) and its August 2026 changelog: a status that
/// carries both the phone and the user id links them; a username's reply
/// (no `from`, no context) then reaches the campaign of the contact staged
/// by phone and its STOP opts out both identities; a changed user id
/// (`user_changed_user_id`, and the older `user_id_update` field) keeps
/// the link and the opt-outs; a `user_preferences` by user id reaches the
/// phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_and_a_user_id_are_one_contact_once_a_webhook_links_them() {
    let h = harness().await;
    sent(h.store.as_ref(), 7).await;
    let user = ContactKey::raw("US.13491208655302741918");
    let mut delivered = status(7, "delivered", 600, None);
    delivered["recipient_user_id"] = json!(user.as_str());
    assert_eq!(post(&h, &statuses(vec![delivered])).await, Verdict::Ok);
    assert_eq!(state(&h, 7).await.state, DispatchState::Delivered);
    assert_eq!(record(&h, &contact(7)).await.linked.as_ref(), Some(&user));
    assert_eq!(record(&h, &user).await.linked.as_ref(), Some(&contact(7)));

    // A username's STOP: no phone, no context.
    let body = envelope(json!({
        "messaging_product": "whatsapp",
        "metadata": {"phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Sheena", "username": "sheena.n"}, "user_id": user.as_str()}],
        "messages": [{"from_user_id": user.as_str(), "id": "wamid.in.u1", "timestamp": "700", "type": "text", "text": {"body": "STOP"}}]
    }));
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert_eq!(
        state(&h, 7).await.state,
        DispatchState::Replied,
        "the reply by user id reached the row staged by phone"
    );
    assert!(
        record(&h, &contact(7)).await.opted_out,
        "the phone opted out"
    );
    assert!(record(&h, &user).await.opted_out, "the user id opted out");

    // The user id changes (a system message since August 2026): the new
    // one is the phone's, and carries the opt-out.
    let newer = ContactKey::raw("US.13491208655302741919");
    let body = envelope(json!({
        "messaging_product": "whatsapp",
        "messages": [{"id": "wamid.in.sys", "timestamp": "800", "type": "system",
            "system": {"body": "User changed", "type": "user_changed_user_id",
                       "previous_user_id": user.as_str(), "user_id": newer.as_str()}}]
    }));
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert_eq!(record(&h, &contact(7)).await.linked.as_ref(), Some(&newer));
    assert!(
        record(&h, &newer).await.opted_out,
        "the opt-out moved along"
    );
    assert_eq!(
        state(&h, 7).await.state,
        DispatchState::Replied,
        "a system message is no reply"
    );

    // Meta's first form of the same news: the `user_id_update` field.
    let newest = ContactKey::raw("US.13491208655302741920");
    let body = field_envelope(
        "user_id_update",
        json!({
            "messaging_product": "whatsapp",
            "contacts": [{"profile": {"name": "Sheena"}, "wa_id": wa_id(7)}],
            "user_id_update": [{"wa_id": wa_id(7), "detail": "User id for Sheena has been updated.",
                "user_id": {"previous": newer.as_str(), "current": newest.as_str()}, "timestamp": "900"}]
        }),
    );
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert_eq!(record(&h, &contact(7)).await.linked.as_ref(), Some(&newest));
    assert_eq!(record(&h, &newest).await.linked.as_ref(), Some(&contact(7)));

    // A marketing preference by user id reaches the phone.
    let body = envelope(json!({"user_preferences": [{"user_id": newest.as_str(),
        "category": "marketing_messages", "value": "stop", "timestamp": 1_790_000_000}]}));
    assert_eq!(post(&h, &body).await, Verdict::Ok);
    assert!(record(&h, &contact(7)).await.marketing_opted_out);

    let events = read_all(
        &h.kafka.brokers,
        &h.events_topic,
        4,
        Duration::from_secs(20),
    );
    let reply = events
        .iter()
        .map(|(_, p, _)| serde_json::from_str::<serde_json::Value>(p.as_deref().unwrap()).unwrap())
        .find(|e| e["type"] == "reply")
        .expect("a reply event");
    assert_eq!(reply["contact"], contact(7).as_str());
    assert_eq!(reply["user_id"], user.as_str());
    assert_eq!(reply["campaign_id"], CAMPAIGN);
}
