//! The ScyllaDB backend through the real `scylla` driver over the CQL
//! protocol, against the in-process `kassandra` server: connection, schema
//! creation, prepared statements, staging, scans and the plain writes.
//!
//! kassandra has no lightweight transactions (nor range restrictions), so
//! claims, outcomes, statuses and exclusions, which are all conditional
//! writes, are not run here. They run in the conformance suite against a real
//! ScyllaDB (`WADISPATCH_TEST_SCYLLA=host:9042`, see tests/store_conformance.rs)
//! and their reply handling is unit-tested in `store::scylladb::lwt`.

#[path = "common/cql.rs"]
mod cql;

use chrono::{TimeZone, Utc};
use cql::CqlServer;
use wadispatch::config::ScyllaStoreConfig;
use wadispatch::domain::{ContactKey, DispatchState, ExclusionReason, FrozenParams, ObservedState};
use wadispatch::store::scylladb::{SchemaMode, ScyllaStore};
use wadispatch::store::*;

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 15, 0, 0).unwrap()
}

fn config(server: &CqlServer, keyspace: &str) -> ScyllaStoreConfig {
    ScyllaStoreConfig {
        nodes: vec![server.addr.to_string()],
        keyspace: keyspace.into(),
        replication_factor: 1,
        create_schema: true,
        ..ScyllaStoreConfig::default()
    }
}

fn req(campaign: &str, n: u32, shard: u32, seq: u64) -> StageRequest {
    StageRequest {
        campaign_id: campaign.into(),
        contact: ContactKey::raw(format!("+52155{n:08}")),
        shard,
        seq,
        params: FrozenParams::default(),
        exclusion: None,
        send_after: None,
        timezone: Some("America/Mexico_City".into()),
        tags: vec!["vip".into()],
        name: None,
        staged_at: t0(),
        journey: Default::default(),
    }
}

fn campaign(id: &str) -> CampaignRecord {
    let spec = wadispatch::domain::CampaignSpec::from_json(
        &std::fs::read("config/examples/promo.json").expect("example spec"),
    )
    .expect("example spec parses");
    let mut spec = spec;
    spec.id = id.into();
    CampaignRecord {
        spec,
        observed_state: ObservedState::Scheduled,
        updated_at: t0(),
        started_at: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_over_cql_protocol() {
    let server = CqlServer::start();
    let store = ScyllaStore::connect(&config(&server, "wadispatch_k"), SchemaMode::Apply)
        .await
        .expect("schema applied and statements prepared through the driver");
    store.ping().await.unwrap();

    // A second connection in verify mode finds every table.
    let mut verify = config(&server, "wadispatch_k");
    verify.create_schema = false;
    ScyllaStore::connect(&verify, SchemaMode::Verify)
        .await
        .expect("an applied schema verifies");

    // A journey's staged cells come back with the row (its journey writes
    // are conditional: they run in the conformance suite).
    let mut journey = req("k-journey", 1, 0, 1);
    journey.journey = StagedJourney {
        next: vec![wadispatch::domain::Edge {
            on: wadispatch::domain::On::NoReply,
            delay_secs: 60,
            to: "nudge".into(),
        }],
        later: vec![wadispatch::domain::StepParams {
            step: "nudge".into(),
            content: wadispatch::domain::FrozenStep::Text("hola".into()),
        }],
    };
    store
        .stage_batch(std::slice::from_ref(&journey))
        .await
        .unwrap();
    let row = store
        .get_dispatch("k-journey", &journey.contact)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.next, row.later),
        (journey.journey.next, journey.journey.later)
    );
    assert_eq!((row.step.as_str(), row.wait), ("", None));

    // A triggered campaign's occurrences are rows of their own, keyed and
    // queued with their occurrence, a cancel staged first among them.
    let of = |occ: &str| req("k-cart", 5, 0, 0).contact.with_occurrence(occ);
    let occurrence = |occ: &str, seq: u64| StageRequest {
        contact: of(occ),
        ..req("k-cart", 5, 0, seq)
    };
    let cancel = StageRequest {
        exclusion: Some(ExclusionReason::Cancelled("order_placed".into())),
        ..occurrence("cart-c", 3)
    };
    let outcomes = store
        .stage_batch(&[
            occurrence("cart-a", 1),
            occurrence("cart-b", 2),
            cancel,
            occurrence("cart-a", 4),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            StageOutcome::Staged,
            StageOutcome::Staged,
            StageOutcome::Excluded,
            StageOutcome::Duplicate
        ]
    );
    let queued: Vec<_> = store
        .scan_pending("k-cart", 0, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.contact)
        .collect();
    assert_eq!(queued, vec![of("cart-a"), of("cart-b")]);
    let cancelled = store
        .get_dispatch("k-cart", &of("cart-c"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.contact, of("cart-c"));
    assert_eq!(cancelled.reason.as_deref(), Some("cancelled:order_placed"));
    assert_eq!(
        store
            .scan_dispatches("k-cart", None, 10)
            .await
            .unwrap()
            .len(),
        3
    );

    // Campaigns.
    store.put_campaign(&campaign("k-promo")).await.unwrap();
    let got = store.get_campaign("k-promo").await.unwrap().unwrap();
    assert_eq!(got, campaign("k-promo"));
    store
        .set_observed_state("k-promo", ObservedState::Active, t0())
        .await
        .unwrap();
    let got = store.get_campaign("k-promo").await.unwrap().unwrap();
    assert_eq!(got.observed_state, ObservedState::Active);
    assert_eq!(
        got.started_at,
        Some(t0()),
        "first activation marks the start"
    );
    assert_eq!(store.list_campaigns().await.unwrap().len(), 1);
    assert!(store.get_campaign("absent").await.unwrap().is_none());

    // Staging: new, excluded, duplicate (in the batch and across batches).
    let mut excluded = req("k-promo", 2, 1, 11);
    excluded.exclusion = Some(ExclusionReason::MissingVariable("coupon".into()));
    let batch = vec![req("k-promo", 1, 0, 10), excluded, req("k-promo", 1, 0, 12)];
    let outcomes = store.stage_batch(&batch).await.unwrap();
    assert_eq!(
        outcomes,
        vec![
            StageOutcome::Staged,
            StageOutcome::Excluded,
            StageOutcome::Duplicate
        ]
    );
    let again = store.stage_batch(&batch[..2]).await.unwrap();
    assert_eq!(
        again,
        vec![StageOutcome::Duplicate, StageOutcome::Duplicate]
    );

    let row = store
        .get_dispatch("k-promo", &ContactKey::raw("+5215500000001"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, DispatchState::Pending);
    assert_eq!((row.shard, row.seq), (0, 10));
    assert_eq!(row.tags, vec!["vip".to_string()]);
    assert_eq!(row.timezone.as_deref(), Some("America/Mexico_City"));
    assert_eq!(row.times.staged, Some(t0()));
    let ex = store
        .get_dispatch("k-promo", &ContactKey::raw("+5215500000002"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ex.state, DispatchState::Excluded);
    assert_eq!(ex.reason.as_deref(), Some("missing_variable:coupon"));

    // The pending queue holds only the pending contact; shards are recorded.
    let pending = store.scan_pending("k-promo", 0, None, 100).await.unwrap();
    assert_eq!(
        pending,
        vec![PendingEntry {
            seq: 10,
            contact: ContactKey::raw("+5215500000001")
        }]
    );
    assert!(store
        .scan_pending("k-promo", 1, None, 100)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.campaign_shards("k-promo").await.unwrap(), vec![0, 1]);

    // A bigger campaign scanned across every bucket, one page.
    let many: Vec<StageRequest> = (100..400u32)
        .map(|i| req("k-scan", i, i % 3, u64::from(i)))
        .collect();
    let outcomes = store.stage_batch(&many).await.unwrap();
    assert!(outcomes.iter().all(|o| *o == StageOutcome::Staged));
    let all = store.scan_dispatches("k-scan", None, 10_000).await.unwrap();
    assert_eq!(all.len(), 300);
    let mut contacts: Vec<_> = all.iter().map(|r| r.contact.as_str().to_owned()).collect();
    contacts.sort();
    contacts.dedup();
    assert_eq!(contacts.len(), 300, "every row once");
    assert!(all.iter().all(|r| r.campaign_id == "k-scan"));
    let first = store.scan_dispatches("k-scan", None, 5).await.unwrap();
    assert_eq!(first.len(), 5, "a page stops at its limit");

    // Cursors.
    assert_eq!(store.load_cursor("k-scan", 2).await.unwrap(), None);
    store.save_cursor("k-scan", 2, 250).await.unwrap();
    assert_eq!(store.load_cursor("k-scan", 2).await.unwrap(), Some(250));

    // Contacts: opt-out round trip and undeliverable.
    let who = ContactKey::raw("+5215500000099");
    assert!(store.get_contact(&who).await.unwrap().is_none());
    store
        .set_opt_out(&who, wadispatch::domain::OptOutScope::All, true, t0())
        .await
        .unwrap();
    let c = store.get_contact(&who).await.unwrap().unwrap();
    assert!(c.opted_out);
    assert_eq!(c.opted_out_at, Some(t0()));
    store.mark_undeliverable(&who, t0()).await.unwrap();
    assert_eq!(
        store
            .get_contact(&who)
            .await
            .unwrap()
            .unwrap()
            .undeliverable_at,
        Some(t0())
    );
    store
        .set_opt_out(&who, wadispatch::domain::OptOutScope::All, false, t0())
        .await
        .unwrap();
    assert!(!store.get_contact(&who).await.unwrap().unwrap().opted_out);
    store
        .set_opt_out(&who, wadispatch::domain::OptOutScope::Marketing, true, t0())
        .await
        .unwrap();
    let c = store.get_contact(&who).await.unwrap().unwrap();
    assert!(c.marketing_opted_out && !c.opted_out);
    // The identity linked to the contact (a business-scoped user id).
    let user = ContactKey::raw("US.13491208655302741918");
    store.link_contact(&who, &user).await.unwrap();
    let c = store.get_contact(&who).await.unwrap().unwrap();
    assert_eq!(c.linked, Some(user));
    assert!(c.marketing_opted_out, "the other cells are kept");

    // Parked statuses are stored once per distinct status.
    let update = StatusUpdate {
        state: DispatchState::Delivered,
        at: t0(),
        wamid: Some("wamid.K1".into()),
        error_code: None,
        error_class: None,
        error_message: None,
        defer_until: None,
        deferral: None,
        pricing: None,
    };
    store.park_status("wamid.K1", &update).await.unwrap();
    store.park_status("wamid.K1", &update).await.unwrap();
    assert!(store.lookup_wamid("wamid.K1").await.unwrap().is_none());

    // Leases and markers (plain writes); the claim index starts empty.
    // (Claims themselves are lightweight transactions: the conformance
    // suite covers the index against ScyllaDB.)
    let lease = |owner: &str, secs| wadispatch::store::Lease {
        owner: owner.into(),
        until: t0() + chrono::Duration::seconds(secs),
    };
    store.renew_lease(&lease("a/1", 15)).await.unwrap();
    store.renew_lease(&lease("b/2", 15)).await.unwrap();
    store.renew_lease(&lease("a/1", 20)).await.unwrap();
    store.release_lease("b/2").await.unwrap();
    assert_eq!(store.leases().await.unwrap(), vec![lease("a/1", 20)]);
    assert!(store.claimed("k-promo", 0).await.unwrap().is_empty());
    assert!(!store.marker("claim-index/k-promo").await.unwrap());
    store.set_marker("claim-index/k-promo").await.unwrap();
    assert!(store.marker("claim-index/k-promo").await.unwrap());
    // What Meta told: written, replaced, listed per kind, forgotten.
    store
        .set_learned(
            "template",
            "promo\u{1f}es_mx",
            Some(r#"{"status":"PAUSED"}"#),
        )
        .await
        .unwrap();
    store
        .set_learned(
            "template",
            "promo\u{1f}es_mx",
            Some(r#"{"status":"APPROVED"}"#),
        )
        .await
        .unwrap();
    store
        .set_learned("limit", "portfolio", Some("2000"))
        .await
        .unwrap();
    assert_eq!(
        store.learned("template").await.unwrap(),
        vec![(
            "promo\u{1f}es_mx".to_string(),
            r#"{"status":"APPROVED"}"#.to_string()
        )]
    );
    store.set_learned("limit", "portfolio", None).await.unwrap();
    assert!(store.learned("limit").await.unwrap().is_empty());

    // Deleting a campaign that never started removes its rows.
    let halt = wadispatch::store::CampaignHalt {
        reason: "(#132015) Template is paused".into(),
        spec: "ab12".into(),
        at: t0(),
    };
    store
        .set_campaign_halt("k-scan", Some(&halt))
        .await
        .unwrap();
    assert_eq!(store.campaign_halt("k-scan").await.unwrap(), Some(halt));
    assert_eq!(store.campaign_halt("k-promo").await.unwrap(), None);
    let parked = wadispatch::store::ParkedReply {
        message_id: "wamid.in.K".into(),
        wamid: "wamid.K2".into(),
        message: "{}".into(),
        parked_at: t0(),
    };
    // (Taking one back is a lightweight transaction, which this server does
    // not have: the conformance suite covers it against ScyllaDB.)
    store.park_reply(&parked).await.unwrap();
    let redelivered = wadispatch::store::ParkedReply {
        parked_at: t0() + chrono::Duration::seconds(30),
        ..parked.clone()
    };
    store.park_reply(&redelivered).await.unwrap();
    assert_eq!(store.parked_replies(10).await.unwrap(), vec![parked]);
    store.delete_campaign("k-scan").await.unwrap();
    assert_eq!(store.campaign_halt("k-scan").await.unwrap(), None);
    assert!(store
        .scan_dispatches("k-scan", None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .scan_pending("k-scan", 0, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store.campaign_shards("k-scan").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_schema_is_reported_with_what_to_run() {
    let server = CqlServer::start();
    let mut cfg = config(&server, "never_created");
    cfg.create_schema = false;
    let err = ScyllaStore::connect(&cfg, SchemaMode::Verify)
        .await
        .err()
        .expect("no keyspace, no store");
    let text = err.to_string();
    assert!(text.contains("wadispatch store init"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_names_the_nodes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = ScyllaStoreConfig {
        nodes: vec![format!("127.0.0.1:{port}")],
        request_timeout_ms: 1_000,
        ..ScyllaStoreConfig::default()
    };
    let err = ScyllaStore::connect(&cfg, SchemaMode::Verify)
        .await
        .err()
        .expect("nothing listens there");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("store.scylla.nodes"), "{text}");
}
