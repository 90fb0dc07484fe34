//! The command line as an operator uses it: `validate` on campaign specs and
//! `requeue` on a stopped daemon's store.

use std::process::Command;

use chrono::Utc;
use wadispatch::domain::{ContactKey, DispatchState, FrozenParams};
use wadispatch::store::{ClaimRequest, Outcome, StageRequest};

fn wadispatch(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wadispatch"))
        .args(args)
        .output()
        .expect("run wadispatch");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_checks_campaign_specs_and_names_unknown_fields() {
    for example in [
        "config/examples/promo.json",
        "config/examples/reminder.json",
        "config/examples/journey.json",
        "config/examples/cart-abandoned.json",
    ] {
        let (ok, out, err) = wadispatch(&["validate", example]);
        assert!(ok, "{example}: {out}{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("typo.json");
    std::fs::write(
        &spec,
        r#"{"id":"typo","senders":["1"],"template":{"name":"t","language":"es"},
            "schedule":{"start":"2099-01-01T09:00:00"},"pacing":{"per_minute":5}}"#,
    )
    .unwrap();
    let (ok, _, err) = wadispatch(&["validate", spec.to_str().unwrap()]);
    assert!(!ok, "a misspelt field is refused");
    assert!(
        err.contains("schedule.start") && err.contains("did you mean start_at?"),
        "{err}"
    );
    assert!(err.contains("pacing.per_minute"), "{err}");
    // --config like every other command.
    let (ok, out, err) = wadispatch(&["validate", "--config", "config/wadispatch.toml"]);
    assert!(ok, "{out}{err}");
}

#[test]
fn requeue_puts_unknown_contacts_back_and_states_the_risk() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("wadispatch.toml");
    std::fs::write(
        &config,
        format!("[store.embedded]\ndata_dir = \"{}\"\n", data.display()),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = wadispatch::config::Config::load(&config).unwrap();
        let store = wadispatch::app::open_store(&cfg).await.unwrap();
        let now = Utc::now();
        let items: Vec<StageRequest> = (0..3)
            .map(|i| StageRequest {
                campaign_id: "rq".into(),
                contact: ContactKey::raw(format!("+5255000000{i}")),
                shard: 0,
                seq: i,
                params: FrozenParams::default(),
                exclusion: None,
                send_after: None,
                timezone: None,
                tags: vec![],
                staged_at: now,
                journey: Default::default(),
            })
            .collect();
        store.stage_batch(&items).await.unwrap();
        for item in &items[..2] {
            store
                .claim(&ClaimRequest {
                    campaign_id: "rq".into(),
                    contact: item.contact.clone(),
                    exclusive: false,
                    replace_engagement: None,
                    owner: "test".into(),
                    now,
                    step: String::new(),
                })
                .await
                .unwrap();
            let outcome = Outcome::Unknown {
                message: "timeout".into(),
            };
            store
                .record_outcome("rq", &item.contact, &outcome, now)
                .await
                .unwrap();
        }
    });
    let cfg = config.to_str().unwrap();
    let (ok, out, err) = wadispatch(&[
        "requeue",
        "--campaign",
        "rq",
        "--state",
        "unknown",
        "--older-than",
        "1h",
        "--config",
        cfg,
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("0 of 0 unknown contacts requeued"),
        "too recent: {out}"
    );
    let (ok, out, err) = wadispatch(&[
        "requeue",
        "--campaign",
        "rq",
        "--state",
        "unknown",
        "--dry-run",
        "--config",
        cfg,
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("2 unknown contacts would be requeued"),
        "{out}"
    );
    let (ok, out, err) = wadispatch(&[
        "requeue",
        "--campaign",
        "rq",
        "--state",
        "unknown",
        "--config",
        cfg,
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("2 of 2 unknown contacts requeued"), "{out}");
    assert!(out.contains("duplicate risk"), "{out}");
    let (ok, _, err) = wadispatch(&[
        "requeue",
        "--campaign",
        "rq",
        "--state",
        "sent",
        "--config",
        cfg,
    ]);
    assert!(!ok);
    assert!(err.contains("only unknown and failed"), "{err}");
    rt.block_on(async {
        let cfg = wadispatch::config::Config::load(&config).unwrap();
        let store = wadispatch::app::open_store(&cfg).await.unwrap();
        let s = wadispatch::report::CampaignSummary::compute(store.as_ref(), "rq")
            .await
            .unwrap();
        assert_eq!(
            s.count(DispatchState::Pending),
            3,
            "{:?}",
            s.contacts.by_state
        );
    });
}
