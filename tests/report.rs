//! Reports as operators read them: one row per contact with a human reason,
//! and the funnel summary with the products' percentages.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use wadispatch::domain::{
    CampaignSpec, ContactKey, DispatchState, ExclusionReason, FrozenParam, FrozenParams, ParamKind,
};
use wadispatch::report::{export, CampaignSummary, ExportOptions, Format};
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
            params: FrozenParams {
                body: vec![FrozenParam {
                    name: Some("coupon".into()),
                    kind: ParamKind::Text(format!("=C{n}")),
                }],
                ..FrozenParams::default()
            },
            exclusion,
            send_after: None,
            timezone: None,
            tags: vec![],
            name: Some(format!("Contact {n}")),
            staged_at: at,
            journey: Default::default(),
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
        step: String::new(),
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
        deferral: None,
        pricing: None,
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
                    sender: Some("106540352242922".into()),
                    held: None,
                },
                Utc::now(),
            )
            .await
            .unwrap();
        // Meta's pricing of the message comes with its first status.
        let sent = StatusUpdate {
            pricing: wadispatch::domain::Pricing::from_status(
                Some("marketing"),
                Some(n != 4),
                Some("PMP"),
                Some(if n == 4 {
                    "free_entry_point"
                } else {
                    "regular"
                }),
            ),
            ..status(DispatchState::Sent)
        };
        store.apply_status("rep", &contact(n), &sent).await.unwrap();
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
    // Two journeys reach the goal, one of them in another currency.
    for (n, value, currency) in [(6, 500.0, "MXN"), (7, 20.5, "USD")] {
        let conversion = wadispatch::domain::Conversion {
            goal: "payment_made".into(),
            at: chrono::Utc::now(),
            value: Some(value),
            currency: Some(currency.into()),
        };
        store
            .record_conversion("rep", &contact(n), &conversion, None, chrono::Utc::now())
            .await
            .unwrap()
            .unwrap();
    }

    let spec = CampaignSpec::from_json(
        br#"{"id":"rep","senders":["1"],"template":{"name":"promo","language":"es_MX","parameter_format":"named","body":{"coupon":"{{coupon}}"}}}"#,
    )
    .unwrap();
    let mut buf = Vec::new();
    let with_variables = ExportOptions { variables: true };
    let n = export(
        &store,
        "rep",
        Format::Csv,
        Some(&spec),
        with_variables,
        &mut buf,
        None,
    )
    .await
    .unwrap();
    assert_eq!(n, 8);
    let text = String::from_utf8(buf).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "contact,occurrence,name,tags,template,language,state,reason,error_code,message,provider_message,wamid,sender,billing,staged_at,claimed_at,accepted_at,sent_at,delivered_at,read_at,replied_at,failed_at,excluded_at,converted_goal,converted_at,conversion_value,conversion_currency,variables"
    );
    assert!(
        text.contains(",Contact 4,,promo,es_MX,sent,"),
        "name, template and language: {text}"
    );
    // The frozen variables (a cell escaped only where it starts like a formula).
    assert!(
        text.contains(",coupon==C4\n") || text.ends_with(",coupon==C4"),
        "{text}"
    );
    // Without the flag, no variables column.
    let mut plain = Vec::new();
    export(
        &store,
        "rep",
        Format::Csv,
        Some(&spec),
        ExportOptions::default(),
        &mut plain,
        None,
    )
    .await
    .unwrap();
    let plain = String::from_utf8(plain).unwrap();
    assert!(plain
        .lines()
        .next()
        .unwrap()
        .ends_with(",conversion_currency"));
    assert!(!plain.contains("=C4"), "{plain}");
    let row = |n: u32| {
        text.lines()
            // Spreadsheet-safe: the `+` of a phone gets a leading quote.
            .find(|l| l.starts_with(&format!("'{}", contact(n).as_str())))
            .unwrap()
            .to_string()
    };
    assert!(
        row(4).contains(",wamid.4,106540352242922,free,"),
        "the sender and a free message: {}",
        row(4)
    );
    assert!(
        row(5).contains(",wamid.5,106540352242922,marketing,"),
        "{}",
        row(5)
    );
    assert!(
        row(0).contains("excluded,missing_variable:coupon,,missing variable value: coupon"),
        "{}",
        row(0)
    );
    assert!(
        row(7).contains("replied") && row(7).contains("wamid.7"),
        "{}",
        row(7)
    );
    assert!(row(6).ends_with(",500,MXN,coupon==C6"), "{}", row(6));
    assert!(row(7).contains(",payment_made,") && row(7).ends_with(",20.5,USD,coupon==C7"));
    assert!(
        row(5).ends_with(",,,,,coupon==C5"),
        "no conversion: {}",
        row(5)
    );

    let mut s = CampaignSummary::compute(&store, "rep").await.unwrap();
    // Three billable marketing messages (4's was free), priced per country.
    assert_eq!(s.billable.total(), 3);
    let card: wadispatch::domain::RateCard =
        toml::from_str("currency = \"USD\"\n[rates.marketing]\n\"*\" = 0.025\n").unwrap();
    s.price(&card);
    let cost = s.cost.clone().unwrap();
    assert_eq!((cost.total, cost.per_conversion), (0.075, Some(0.0375)));
    let v = s.view(None);
    assert_eq!(s.reached(DispatchState::Sent), 4);
    assert_eq!(v.ratios.received_by, Some(75.0), "3 delivered of 4 sent");
    assert_eq!(v.ratios.read_by, Some(66.7), "2 read of 3 delivered");
    assert_eq!(v.ratios.replied_by, Some(33.3), "1 replied of 3 delivered");
    assert_eq!(v.not_sent_to, 4, "1 excluded + 3 failed");
    assert_eq!(s.converted, 2);
    assert_eq!(
        v.conversion_rate,
        wadispatch::report::ratio(2, s.reached(DispatchState::Accepted))
    );
    assert!(v.conversion_rate.is_some());
    assert_eq!(s.conversion_value.get("MXN"), Some(&500.0));
    assert_eq!(s.conversion_value.get("USD"), Some(&20.5));
    let text = s.render(None);
    assert!(
        text.contains("converted") && text.contains("value (MXN)"),
        "{text}"
    );
    assert!(text.contains("500.00"), "{text}");
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["open"], 0);
    assert_eq!(json["staged"], 8);
    assert_eq!(json["received_by"], 75.0);
    assert_eq!(json["billable"]["marketing"], 3);
    assert_eq!(json["cost"]["total"], 0.075);
    // A one-step campaign is one step, named as the spec's first.
    assert_eq!(json["steps"].as_array().unwrap().len(), 1);
    assert_eq!(json["steps"][0]["step"], "primary");
    assert_eq!(json["steps"][0]["entered"], 8);
    assert!(!s.render(None).contains("step by step"));
    assert!(json.get("kind").is_none(), "no kind unless the spec said");
    // A test campaign says so in the summary's heading and JSON.
    let mut test = s.clone();
    test.kind = Some(wadispatch::domain::CampaignKind::Test);
    assert!(test
        .render(None)
        .starts_with(&format!("campaign {} (test campaign)\n", s.campaign_id)));
    assert_eq!(
        serde_json::to_value(test.view(None)).unwrap()["kind"],
        "test"
    );
}

/// A campaign run by the daemon against the sandbox, whose failure rules
/// fail one contact with a code of each error class (two refused by the
/// API, the rest by `failed` status webhooks): each CSV row carries the
/// class and code the daemon derived from what came back, with the code's
/// human-readable message (README, "Error classes"), and the
/// summary counts failures by class. Nothing here is written by the test.
#[test]
fn every_error_class_has_its_row_and_message() {
    use wadispatch::app::{self, Daemon};
    use wadispatch::domain::{classify_code, describe_code, ErrorClass};
    use wadispatch::sandbox::{FailureRule, FailureStage};

    // (contact index, code, stage): the index's last three digits are the
    // rule's suffix (`common::phone`).
    let cases = [
        (101, 131026, FailureStage::Api),
        (102, 132000, FailureStage::Api),
        (103, 131050, FailureStage::Webhook),
        (104, 130429, FailureStage::Webhook),
        (105, 131000, FailureStage::Webhook),
        (106, 132012, FailureStage::Webhook),
        (107, 132001, FailureStage::Webhook),
        (108, 131031, FailureStage::Webhook),
        (109, 131049, FailureStage::Webhook),
    ];
    let classes: std::collections::HashSet<ErrorClass> =
        cases.iter().map(|c| classify_code(c.1)).collect();
    assert_eq!(classes.len(), ErrorClass::ALL.len(), "a case per class");
    let without_coupon = 110;
    let accepted = [100, 111, 112];
    let total = (cases.len() + 1 + accepted.len()) as u64;

    app::system().block_on(async {
        let rules = cases
            .iter()
            .map(|&(i, code, stage)| FailureRule {
                suffix: format!("{i}"),
                code,
                stage,
            })
            .collect();
        let w = common::World::start(&[("106540352242922", 50.0)], rules).await;
        let p = w.kafka.producer();
        let topics = &w.config.kafka.topics;
        common::publish(&p, &topics.campaigns, "rep", &common::campaign_spec("rep")).await;
        let records: Vec<(String, String)> = (100..=112)
            .map(|i| {
                (
                    common::phone(i),
                    common::audience_json("rep", i, i != without_coupon),
                )
            })
            .collect();
        common::publish_all(&p, &topics.audience, &records).await;
        let store = app::open_store(&w.config).await.unwrap();
        let daemon = Daemon::start(w.config.clone(), store).await.unwrap();

        // Final: everyone but the deferred contact, who waits a day for
        // its one retry, and every webhook failure recorded.
        let webhook_failures = cases
            .iter()
            .filter(|c| c.2 == FailureStage::Webhook && classify_code(c.1) != ErrorClass::Deferred)
            .count() as u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let s = loop {
            let s = CampaignSummary::compute(daemon.store.as_ref(), "rep")
                .await
                .unwrap();
            if s.staged == total
                && s.open() == 1
                && s.count(DispatchState::Deferred) == 1
                && s.count(DispatchState::Failed) == webhook_failures + 2
            {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not settled: {:?}",
                s.contacts.by_state
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        let mut buf = Vec::new();
        export(
            daemon.store.as_ref(),
            "rep",
            Format::Csv,
            None,
            ExportOptions::default(),
            &mut buf,
            None,
        )
        .await
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let row = |i: u32| {
            text.lines()
                // Spreadsheet-safe: the `+` of a phone gets a leading quote.
                .find(|l| l.starts_with(&format!("'{}", common::phone(i))))
                .unwrap_or_else(|| panic!("no row for {i}:\n{text}"))
                .to_string()
        };
        for (i, code, _) in cases {
            let class = classify_code(code);
            let state = if class == ErrorClass::Deferred {
                "deferred"
            } else {
                "failed"
            };
            let r = row(i);
            assert!(
                r.contains(&format!("{state},{},{code},", class.as_str())),
                "{r}"
            );
            assert!(r.contains(describe_code(code)), "{r}");
        }
        let r = row(without_coupon);
        assert!(
            r.contains("excluded,missing_variable:coupon,,missing variable value: coupon"),
            "{r}"
        );
        for i in accepted {
            let r = row(i);
            assert!(r.contains(",wamid."), "{r}");
        }
        // Two codes each of the contact and data classes, one of the others.
        let mut expected = std::collections::BTreeMap::new();
        for (_, code, _) in cases {
            let class = classify_code(code);
            if class != ErrorClass::Deferred {
                *expected.entry(class.as_str().to_string()).or_insert(0u64) += 1;
            }
        }
        assert_eq!(s.contacts.failed_by_class, expected);
        // The summary breaks failures down by code, each said in words.
        let text = s.render(None);
        assert!(text.contains("failures by code:"), "{text}");
        for (_, code, _) in cases {
            if classify_code(code) != ErrorClass::Deferred {
                assert!(
                    s.contacts.failed_by_code.contains_key(&code.to_string()),
                    "{code}: {:?}",
                    s.contacts.failed_by_code
                );
                assert!(
                    text.lines()
                        .any(|l| l.trim_start().starts_with(&code.to_string())
                            && l.contains(describe_code(code))),
                    "{code}: {text}"
                );
            }
        }
        assert_eq!(s.excluded(), 1, "{:?}", s.contacts.excluded_by_reason);
        // The sandbox had one request for each contact but the excluded
        // one, and accepted all but the two the API refused.
        let stats = w.sandbox.stats();
        assert_eq!(stats.requests, total - 1);
        assert_eq!(stats.recipients, total - 3);
        assert_eq!(stats.duplicate_recipients, 0);
        assert!(daemon.shutdown(Duration::from_secs(10)).await);
    });
}
