//! Reports as operators read them: one row per contact with a human reason,
//! and the funnel summary with the products' percentages.

use chrono::{TimeZone, Utc};
use wadispatch::domain::{ContactKey, DispatchState, ExclusionReason, FrozenParams};
use wadispatch::report::{export, CampaignSummary, Format};
use wadispatch::store::embedded::{Durability, EmbeddedStore};
use wadispatch::store::*;

fn contact(n: u32) -> ContactKey {
    ContactKey::raw(format!("+5255{:08}", 40_000_000 + n))
}

async fn journey(store: &dyn Store, n: u32, exclusion: Option<ExclusionReason>) {
    let at = Utc.with_ymd_and_hms(2026, 11, 22, 15, 0, 0).unwrap();
    store
        .stage_batch(&[StageRequest {
            campaign_id: "rep".into(),
            contact: contact(n),
            shard: 0,
            seq: u64::from(n),
            params: FrozenParams::default(),
            exclusion,
            send_after: None,
            timezone: None,
            tags: vec![],
            staged_at: at,
        }])
        .await
        .unwrap();
}

async fn claim(store: &dyn Store, n: u32) {
    let r = ClaimRequest {
        campaign_id: "rep".into(),
        contact: contact(n),
        exclusive: false,
        replace_engagement: None,
        owner: "t".into(),
        now: Utc::now(),
    };
    assert!(matches!(
        store.claim(&r).await.unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
}

fn status(state: DispatchState) -> StatusUpdate {
    StatusUpdate {
        state,
        at: Utc::now(),
        wamid: None,
        error_code: None,
        error_class: None,
        error_message: None,
        defer_until: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_rows_carry_reasons_and_the_summary_its_percentages() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), Durability::Process, 16).unwrap();
    // 0: missing variable; 1: not a WhatsApp user (failed 131026);
    // 2: opted out (failed 131050); 3: template data error (132000);
    // 4..=7: accepted, 5..=7 delivered, 6..=7 read, 7 replied.
    journey(
        &store,
        0,
        Some(ExclusionReason::MissingVariable("coupon".into())),
    )
    .await;
    for n in 1..=7 {
        journey(&store, n, None).await;
        claim(&store, n).await;
    }
    for (n, code, class) in [
        (1, 131026, "contact"),
        (2, 131050, "contact"),
        (3, 132000, "data"),
    ] {
        store
            .record_outcome(
                "rep",
                &contact(n),
                &Outcome::Failed {
                    code: Some(code),
                    class: class.into(),
                    message: "m".into(),
                },
                Utc::now(),
            )
            .await
            .unwrap();
    }
    for n in 4..=7 {
        store
            .record_outcome(
                "rep",
                &contact(n),
                &Outcome::Accepted {
                    wamid: format!("wamid.{n}"),
                },
                Utc::now(),
            )
            .await
            .unwrap();
        store
            .apply_status("rep", &contact(n), &status(DispatchState::Sent))
            .await
            .unwrap();
    }
    for n in 5..=7 {
        store
            .apply_status("rep", &contact(n), &status(DispatchState::Delivered))
            .await
            .unwrap();
    }
    for n in 6..=7 {
        store
            .apply_status("rep", &contact(n), &status(DispatchState::Read))
            .await
            .unwrap();
    }
    store
        .apply_status("rep", &contact(7), &status(DispatchState::Replied))
        .await
        .unwrap();

    let mut buf = Vec::new();
    let n = export(&store, "rep", Format::Csv, &mut buf, None)
        .await
        .unwrap();
    assert_eq!(n, 8);
    let text = String::from_utf8(buf).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "contact,state,reason,error_code,message,wamid,staged_at,claimed_at,accepted_at,sent_at,delivered_at,read_at,replied_at,failed_at,excluded_at"
    );
    let row = |n: u32| {
        text.lines()
            .find(|l| l.starts_with(contact(n).as_str()))
            .unwrap()
            .to_string()
    };
    assert!(
        row(0).contains("excluded,missing_variable:coupon,,missing variable value: coupon"),
        "{}",
        row(0)
    );
    assert!(row(1).contains("failed,contact,131026,"), "{}", row(1));
    assert!(
        row(1).to_lowercase().contains("whatsapp user"),
        "{}",
        row(1)
    );
    assert!(
        row(2).contains("131050") && row(2).contains("opted out"),
        "{}",
        row(2)
    );
    assert!(row(3).contains("failed,data,132000,"), "{}", row(3));
    assert!(
        row(7).contains("replied") && row(7).contains("wamid.7"),
        "{}",
        row(7)
    );

    let s = CampaignSummary::compute(&store, "rep").await.unwrap();
    let v = s.view();
    assert_eq!(s.reached(DispatchState::Sent), 4);
    assert_eq!(v.received_by, Some(75.0), "3 delivered of 4 sent");
    assert_eq!(v.read_by, Some(66.7), "2 read of 3 delivered");
    assert_eq!(v.replied_by, Some(33.3), "1 replied of 3 delivered");
    assert_eq!(v.not_sent_to, 4, "1 excluded + 3 failed");
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["open"], 0);
    assert_eq!(json["staged"], 8);
}

/// One contact failed with a code of each error class: the CSV row carries
/// the class, the code and the human-readable message of DESIGN §4, and the
/// summary counts failures by class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_class_has_its_row_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), Durability::Process, 16).unwrap();
    let cases = [
        (20, 130429, "throttled", "throughput limit reached"),
        (21, 131000, "transient", "something went wrong at WhatsApp"),
        (22, 131049, "deferred", "per-user marketing limit"),
        (23, 131026, "contact", "not a WhatsApp user"),
        (24, 132012, "data", "template parameter format mismatch"),
        (
            25,
            132001,
            "campaign",
            "template does not exist in this language",
        ),
        (26, 131031, "sender", "business account locked"),
    ];
    let classes: Vec<&str> = wadispatch::domain::ErrorClass::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    for (_, code, class, _) in cases {
        assert_eq!(
            wadispatch::domain::classify_code(code).as_str(),
            class,
            "code {code}"
        );
    }
    assert_eq!(
        classes.len(),
        cases.len(),
        "one case per class: {classes:?}"
    );
    for (n, code, class, _) in cases {
        journey(&store, n, None).await;
        claim(&store, n).await;
        store
            .record_outcome(
                "rep",
                &contact(n),
                &Outcome::Failed {
                    code: Some(code),
                    class: class.into(),
                    message: String::new(),
                },
                Utc::now(),
            )
            .await
            .unwrap();
    }
    let mut buf = Vec::new();
    export(&store, "rep", Format::Csv, &mut buf, None)
        .await
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    for (n, code, class, message) in cases {
        let row = text
            .lines()
            .find(|l| l.starts_with(contact(n).as_str()))
            .unwrap();
        assert!(row.contains(&format!("failed,{class},{code},")), "{row}");
        assert!(row.contains(message), "{row} lacks \"{message}\"");
    }
    let s = CampaignSummary::compute(&store, "rep").await.unwrap();
    for (_, _, class, _) in cases {
        assert_eq!(s.failed_by_class.get(class), Some(&1), "{class}");
    }
    assert_eq!(s.view().not_sent_to, 7);
}
