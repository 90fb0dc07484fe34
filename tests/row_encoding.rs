//! The embedded store's row encoding (docs/ARCHITECTURE.md, "Row
//! encoding"): a store whose rows are all JSON, as every version before the
//! binary encoding wrote them, opens, is read and dispatches; the rows it
//! rewrites become binary; a row in an encoding this build does not know is
//! refused by name.
//!
//! The fixture `tests/fixtures/store-json` is such a store, written by the
//! embedded store before the binary encoding: the promo campaign
//! (`PROMO_SPEC`), contacts `+5215500000001` to `…06` staged at
//! 2026-12-07 12:00 UTC (1 accepted as `wamid.FIXTURE1`, 2 delivered as
//! `wamid.FIXTURE2`, 3 claimed by `fixture/1` when it stopped, 4 and 5
//! pending, 6 excluded `missing_variable:coupon`), contact 5 opted out of
//! marketing, and the lease of `fixture/1`. Its journal was cut after its
//! last entry (fjall preallocates 64 MiB of zeros).

use std::path::Path;

use chrono::{Duration, TimeZone, Utc};
use wadispatch::domain::{ContactKey, DispatchState};
use wadispatch::report::CampaignSummary;
use wadispatch::store::embedded::{Durability, EmbeddedStore};
use wadispatch::store::*;

const FIXTURE: &str = "tests/fixtures/store-json";

fn contact(n: u32) -> ContactKey {
    ContactKey::raw(format!("+52155{n:08}"))
}

/// A copy of the fixture to open: opening a store writes to it.
fn copy_of_fixture() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE),
        dir.path(),
    );
    dir
}

/// The raw values of one keyspace, by key (the store closed).
fn raw_values(dir: &Path, keyspace: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = fjall::Database::builder(dir).open().unwrap();
    let ks = db
        .keyspace(keyspace, fjall::KeyspaceCreateOptions::default)
        .unwrap();
    ks.iter()
        .map(|guard| {
            let (k, v) = guard.into_inner().unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, Durability::Process, 8).unwrap()
}

#[tokio::test]
async fn a_store_of_json_rows_opens_and_dispatches() {
    let dir = copy_of_fixture();
    let rows = raw_values(dir.path(), "dispatches");
    assert_eq!(rows.len(), 6, "the fixture holds six dispatch rows");
    assert!(
        rows.iter().all(|(_, v)| v.first() == Some(&b'{')),
        "every row of the fixture is JSON"
    );

    let store = open(dir.path());
    let campaigns = store.list_campaigns().await.unwrap();
    assert_eq!(campaigns.len(), 1);
    let id = campaigns[0].spec.id.clone();
    // The store was written before counts were kept with the rows: the
    // first open counted them.
    let kept = CampaignSummary::compute(&store, &id).await.unwrap();
    assert_eq!(kept, CampaignSummary::scan(&store, &id).await.unwrap());
    assert_eq!(
        (
            kept.staged,
            kept.count(DispatchState::Pending),
            kept.excluded()
        ),
        (6, 2, 1)
    );
    let states: Vec<(ContactKey, DispatchState)> = store
        .scan_dispatches(&id, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.contact, r.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (contact(1), DispatchState::Accepted),
            (contact(2), DispatchState::Delivered),
            (contact(3), DispatchState::Claimed),
            (contact(4), DispatchState::Pending),
            (contact(5), DispatchState::Pending),
            (contact(6), DispatchState::Excluded),
        ]
    );
    let row = store.get_dispatch(&id, &contact(4)).await.unwrap().unwrap();
    assert_eq!(row.name.as_deref(), Some("Cliente 4"));
    assert!(!row.params.is_empty(), "the frozen parameters survive");
    assert!(
        store
            .get_contact(&contact(5))
            .await
            .unwrap()
            .unwrap()
            .marketing_opted_out
    );
    assert_eq!(
        store
            .lookup_wamid("wamid.FIXTURE1")
            .await
            .unwrap()
            .unwrap()
            .contact,
        contact(1)
    );
    let claimed = store.claimed(&id, 1).await.unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|c| (c.contact.clone(), c.owner.as_str()))
            .collect::<Vec<_>>(),
        vec![(contact(3), "fixture/1")],
        "the claim index of the JSON store is read"
    );
    assert_eq!(store.leases().await.unwrap().len(), 1);

    // Dispatch: claim a pending contact, record the API's answer, then a
    // webhook status for a row the old version accepted.
    let now = Utc.with_ymd_and_hms(2026, 12, 7, 13, 0, 0).unwrap();
    let claim = ClaimRequest {
        campaign_id: id.clone(),
        contact: contact(4),
        exclusive: true,
        replace_engagement: None,
        owner: "after/1".into(),
        now,
        step: String::new(),
    };
    assert!(matches!(
        store.claim(&claim).await.unwrap(),
        ClaimOutcome::Claimed { attempts: 1 }
    ));
    store
        .record_outcome(
            &id,
            &contact(4),
            &Outcome::Accepted {
                wamid: "wamid.AFTER4".into(),
                sender: Some("106540352242922".into()),
                held: None,
            },
            now,
        )
        .await
        .unwrap();
    let read = StatusUpdate {
        state: DispatchState::Read,
        at: now + Duration::seconds(5),
        wamid: Some("wamid.FIXTURE1".into()),
        error_code: None,
        error_class: None,
        error_message: None,
        defer_until: None,
        deferral: None,
        pricing: None,
    };
    assert!(matches!(
        store.apply_status(&id, &contact(1), &read).await.unwrap(),
        StatusApplied::Changed { .. }
    ));
    drop(store);

    // The rows written since are binary, the others still JSON, and the
    // store reads both after a restart.
    let first_bytes: Vec<u8> = raw_values(dir.path(), "dispatches")
        .iter()
        .map(|(_, v)| v[0])
        .collect();
    assert_eq!(
        first_bytes,
        vec![0x01, b'{', b'{', 0x01, b'{', b'{'],
        "rows 1 and 4 were rewritten in the binary encoding, version 1"
    );
    let store = open(dir.path());
    let after = store.scan_dispatches(&id, None, 100).await.unwrap();
    assert_eq!(after[0].state, DispatchState::Read);
    assert_eq!(after[3].state, DispatchState::Accepted);
    assert_eq!(after[3].wamid.as_deref(), Some("wamid.AFTER4"));
    assert_eq!(after[3].name.as_deref(), Some("Cliente 4"));
    assert_eq!(after[3].params, row.params);
    assert_eq!(
        store
            .lookup_wamid("wamid.AFTER4")
            .await
            .unwrap()
            .unwrap()
            .contact,
        contact(4)
    );
    let kept = CampaignSummary::compute(&store, &id).await.unwrap();
    assert_eq!(kept, CampaignSummary::scan(&store, &id).await.unwrap());
    assert_eq!(
        (
            kept.count(DispatchState::Pending),
            kept.reached(DispatchState::Read)
        ),
        (1, 1)
    );
}

#[tokio::test]
async fn a_row_of_an_unknown_encoding_is_refused_by_name() {
    let dir = copy_of_fixture();
    let id = {
        let store = open(dir.path());
        store.list_campaigns().await.unwrap()[0].spec.id.clone()
    };
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db
            .keyspace("dispatches", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let mut key = id.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(contact(4).row_str().as_bytes());
        ks.insert(key, vec![0x07, 0x80]).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let store = open(dir.path());
    let err = store
        .get_dispatch(&id, &contact(4))
        .await
        .expect_err("a row of version 7 cannot be read");
    let text = err.to_string();
    assert!(
        text.contains("row encoding version 7") && text.contains("newer wadispatch"),
        "{text}"
    );
    // The other rows are still read.
    assert!(store
        .get_dispatch(&id, &contact(5))
        .await
        .unwrap()
        .is_some());
}
