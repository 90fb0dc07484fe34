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
        "config/examples/promo-test.json",
        "config/examples/vip-segment.json",
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
                name: None,
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

/// `validate --config` and `WADISPATCH_CONFIG` name the file like every
/// other command; a config is checked whole: every unknown key and wrongly
/// typed value of the file at once, in the file's order, then values that
/// can never work (an override for an id no spec can have, no opt-out
/// keyword).
#[test]
fn validate_reports_every_problem_of_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[kafka]\nbrokerz = \"x\"\n[nonsense]\na = 1\n[dispatch]\nmax_in_flight_per_sender = \"ten\"\nfoo = 1\n",
    )
    .unwrap();
    let (ok, _, err) = wadispatch(&["validate", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("line ")).collect();
    assert_eq!(lines.len(), 4, "{err}");
    assert!(
        lines[0].contains("line 2") && lines[0].contains("kafka.brokerz"),
        "{err}"
    );
    assert!(
        lines[1].contains("line 3") && lines[1].contains("nonsense"),
        "{err}"
    );
    assert!(
        lines[2].contains("line 6") && lines[2].contains("max_in_flight_per_sender"),
        "{err}"
    );
    assert!(
        lines[3].contains("line 7") && lines[3].contains("dispatch.foo"),
        "{err}"
    );

    let never = dir.path().join("never.toml");
    std::fs::write(
        &never,
        "[campaigns.\"x y\"]\nper_second = 5\n[whatsapp]\nopt_out_keywords = []\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wadispatch"))
        .arg("validate")
        .env("WADISPATCH_CONFIG", &never)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "WADISPATCH_CONFIG is read by validate"
    );
    assert!(
        err.contains("campaigns.\"x y\"") && err.contains("is not a campaign id"),
        "{err}"
    );
    assert!(
        err.contains("whatsapp.opt_out_keywords: must list at least one keyword"),
        "{err}"
    );
}

/// `report` and `store check` read: a missing config is said once, a
/// data_dir that holds no store is named and never created, and an unknown
/// campaign lists the ones the store holds.
#[test]
fn read_only_commands_never_create_a_store_and_say_what_is_there() {
    let (ok, _, err) = wadispatch(&[
        "report",
        "--campaign",
        "x",
        "--config",
        "/nonexistent/w.toml",
    ]);
    assert!(!ok);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("check --config or WADISPATCH_CONFIG"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nostore");
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!("[store.embedded]\ndata_dir = \"{}\"\n", data.display()),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    for args in [
        vec!["report", "--campaign", "x", "--config", c],
        vec!["store", "check", "--config", c],
    ] {
        let (ok, _, err) = wadispatch(&args);
        assert!(!ok, "{args:?}");
        assert!(err.contains("there is no wadispatch store in"), "{err}");
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }

    // A store with campaigns: an unknown one is refused with the known ones.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = wadispatch::config::Config::load(&config).unwrap();
        let store = wadispatch::app::open_store(&cfg).await.unwrap();
        for id in ["bday-2026-11", "reminder-2026-11"] {
            let spec = wadispatch::domain::CampaignSpec::from_json(
                format!(
                    r#"{{"id":"{id}","senders":["1"],"template":{{"name":"t","language":"es"}}}}"#
                )
                .as_bytes(),
            )
            .unwrap();
            store
                .put_campaign(&wadispatch::store::CampaignRecord {
                    spec,
                    observed_state: wadispatch::domain::ObservedState::Active,
                    updated_at: Utc::now(),
                    started_at: None,
                })
                .await
                .unwrap();
        }
    });
    drop(rt);
    let (ok, _, err) = wadispatch(&["report", "--campaign", "nope", "--config", c]);
    assert!(!ok);
    assert!(err.contains("campaign nope is not in the store"), "{err}");
    assert!(
        err.contains("it holds: bday-2026-11, reminder-2026-11"),
        "{err}"
    );
}

/// The sandbox checks its settings before it says it listens, never panics
/// on a rate no clock can count, and prints the port it bound.
#[test]
fn the_sandbox_refuses_bad_rates_first_and_prints_its_real_port() {
    for rate in ["1e-300", "-1"] {
        let (ok, _, err) = wadispatch(&[
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            &format!("--per-number-mps={rate}"),
        ]);
        assert!(!ok, "{rate}");
        assert!(
            err.contains("per_number_mps is") && err.contains("must be 0 (no limit) or from 0.001"),
            "{err}"
        );
        assert!(
            !err.contains("listening"),
            "said it listens before checking: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_wadispatch"))
        .args(["sandbox", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let line = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map(Result::unwrap)
        .find(|l| l.starts_with("sandbox listening on"))
        .expect("the listening line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(!line.contains(":0 "), "{line}");
    let port: u16 = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line}"));
    assert!(port > 0);
    // Logs to a pipe (not a terminal) carry no colour codes.
    assert!(!line.contains('\u{1b}'), "{line:?}");
}

/// `run` with every broker down says so once per 30 s, not a thousand
/// times a second.
#[test]
fn run_with_kafka_down_logs_the_outage_at_a_bounded_rate() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("w.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[store.embedded]\ndata_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[whatsapp]\napp_secret = \"x\"\ntoken = \"t\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wadispatch"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The start waits up to 10 s for the compacted topics' metadata.
    std::thread::sleep(std::time::Duration::from_secs(16));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let outage = text
        .lines()
        .filter(|l| l.contains("AllBrokersDown"))
        .count();
    assert!(outage >= 1, "the outage is reported: {text}");
    assert!(
        outage <= 8,
        "{outage} AllBrokersDown lines in 16 s:\n{text}"
    );
    assert!(
        text.contains("every Kafka broker is unreachable"),
        "the state is said in words: {text}"
    );
    assert!(!text.contains('\u{1b}'), "no colour codes in a file");
}

/// A stopped daemon's store with campaign `rt`: four contacts tagged `vip`
/// and `customer_id=C-<i>`; the first accepted, two failed with 131026 and
/// Meta's words, the last excluded. Answers the config file.
fn report_fixture(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let config = dir.join("wadispatch.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[store.embedded]\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = wadispatch::config::Config::load(&config).unwrap();
        let store = wadispatch::app::open_store(&cfg).await.unwrap();
        let now = Utc::now();
        let items: Vec<StageRequest> = (0..4)
            .map(|i| StageRequest {
                campaign_id: "rt".into(),
                contact: ContactKey::raw(format!("+52550000001{i}")),
                shard: 0,
                seq: i,
                params: FrozenParams::default(),
                exclusion: (i == 3).then_some(wadispatch::domain::ExclusionReason::NotInSegment),
                send_after: None,
                timezone: None,
                tags: vec!["vip".into(), format!("customer_id=C-{i}")],
                name: None,
                staged_at: now,
                journey: Default::default(),
            })
            .collect();
        store.stage_batch(&items).await.unwrap();
        for (i, item) in items[..3].iter().enumerate() {
            store
                .claim(&ClaimRequest {
                    campaign_id: "rt".into(),
                    contact: item.contact.clone(),
                    exclusive: false,
                    replace_engagement: None,
                    owner: "test".into(),
                    now,
                    step: String::new(),
                })
                .await
                .unwrap();
            let outcome = if i == 0 {
                Outcome::Accepted {
                    wamid: "wamid.0".into(),
                    sender: Some("1".into()),
                    held: None,
                }
            } else {
                Outcome::Failed {
                    code: Some(131_026),
                    class: "contact".into(),
                    message: "Message undeliverable.".into(),
                }
            };
            store
                .record_outcome("rt", &item.contact, &outcome, now)
                .await
                .unwrap();
        }
    });
    drop(rt);
    config
}

/// The export of a campaign's failed and excluded contacts is an audience
/// again: `audience import --state failed --state excluded` takes those
/// rows (their contacts and tags, the export's quote before `+` taken off)
/// and leaves the rest; `--problems-out` writes every problem; a broker
/// that cannot be reached is said in seconds.
#[test]
fn a_report_of_failures_is_imported_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = report_fixture(dir.path());
    let cfg = config.to_str().unwrap();
    let export = dir.path().join("rt.csv");
    let (ok, out, err) = wadispatch(&[
        "report",
        "--campaign",
        "rt",
        "--out",
        export.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert!(ok, "{out}{err}");
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(
        text.contains("'+52550000001"),
        "phones are escaped for spreadsheets: {text}"
    );
    assert!(
        text.contains("Message undeliverable."),
        "Meta's words are kept: {text}"
    );

    let problems = dir.path().join("problems.csv");
    let (ok, _, err) = wadispatch(&[
        "audience",
        "import",
        "--campaign",
        "again",
        "--state",
        "failed",
        "--state",
        "excluded",
        "--dry-run",
        "--problems-out",
        problems.to_str().unwrap(),
        "--config",
        cfg,
        export.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("rows read: 4"), "{err}");
    assert!(err.contains("records to produce: 3"), "{err}");
    assert!(
        err.contains("rows of other states left out (--state): 1"),
        "{err}"
    );
    assert!(err.contains("0 problems written to"), "{err}");

    // For real: the brokers are down, which the metadata probe says before
    // any record is produced.
    let (ok, _, err) = wadispatch(&[
        "audience",
        "import",
        "--campaign",
        "again",
        "--state",
        "failed",
        "--config",
        cfg,
        export.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("cannot reach the brokers at 127.0.0.1:1 within 5 s"),
        "{err}"
    );
    assert!(!err.contains("MessageTimedOut"), "{err}");
}

/// `--dry-run --spec` checks every row as staging will: the example
/// audience's ten rows without a coupon are named with their lines before
/// anything is produced, and `--problems-out` has all 30 problems.
#[test]
fn a_dry_run_with_the_spec_names_every_row_staging_would_exclude() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("problems.csv");
    let (ok, _, err) = wadispatch(&[
        "audience",
        "import",
        "--campaign",
        "bday-2026-11",
        "--dry-run",
        "--spec",
        "config/examples/promo.json",
        "--problems-out",
        out.to_str().unwrap(),
        "--config",
        "/nonexistent-so-defaults.toml",
        "config/examples/audience.csv",
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("would be excluded at staging (checked against the campaign's spec): 10"),
        "{err}"
    );
    assert!(err.contains("line 51: missing_variable:coupon"), "{err}");
    let problems = std::fs::read_to_string(&out).unwrap();
    assert_eq!(problems.lines().count(), 31, "a header and 30 problems");
    assert!(problems.contains("9901,would be excluded: missing_variable:coupon"));
    // The spec of another campaign is refused.
    let (ok, _, err) = wadispatch(&[
        "audience",
        "import",
        "--campaign",
        "other",
        "--dry-run",
        "--spec",
        "config/examples/promo.json",
        "config/examples/audience.csv",
    ]);
    assert!(!ok);
    assert!(
        err.contains("is the spec of campaign bday-2026-11, not of other"),
        "{err}"
    );
}

/// Workbooks both ways: an audience workbook made here (a phone typed as a
/// number, a date cell for `send_after`, a second sheet chosen by
/// `--sheet`) is read with the spreadsheet's row numbers, and a report
/// written as `.xlsx` holds the CSV's columns as plain text and reads back
/// as an audience of its failed rows.
#[test]
fn workbooks_are_imported_and_reports_are_written_as_workbooks() {
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let dir = tempfile::tempdir().unwrap();
    let book_path = dir.path().join("audience.xlsx");
    let mut book = Workbook::new();
    let sheet = book.add_worksheet().set_name("main").unwrap();
    for (col, name) in ["phone", "name", "coupon", "send_after"].iter().enumerate() {
        sheet.write_string(0, col as u16, *name).unwrap();
    }
    sheet.write_number(1, 0, 5215512345678.0).unwrap();
    sheet.write_string(1, 1, "Ana").unwrap();
    sheet.write_string(1, 2, "A-1").unwrap();
    let date = Format::new().set_num_format("yyyy-mm-dd hh:mm");
    let at = ExcelDateTime::parse_from_str("2026-12-24 09:30:00").unwrap();
    sheet.write_datetime_with_format(1, 3, &at, &date).unwrap();
    sheet.write_string(2, 0, "+52 55 1234 5679").unwrap();
    sheet.write_string(2, 1, "Luis").unwrap();
    let vip = book.add_worksheet().set_name("VIP").unwrap();
    vip.write_string(0, 0, "phone").unwrap();
    vip.write_string(0, 1, "name").unwrap();
    for i in 1..=3u32 {
        vip.write_string(i, 0, format!("+52 55 1234 00{i:02}"))
            .unwrap();
        vip.write_string(i, 1, format!("V{i}")).unwrap();
    }
    book.save(&book_path).unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        r#"{"id":"xl","senders":["1"],"template":{"name":"promo","language":"es_MX","category":"marketing","body":["{{name}}","{{coupon}}"]}}"#,
    )
    .unwrap();
    let nowhere = "/nonexistent-so-defaults.toml";
    let (ok, _, err) = wadispatch(&[
        "audience",
        "import",
        "--campaign",
        "xl",
        "--dry-run",
        "--spec",
        spec.to_str().unwrap(),
        "--config",
        nowhere,
        book_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("rows read: 2"), "{err}");
    assert!(
        err.contains("line 3: missing_variable:coupon"),
        "the sheet's row 3: {err}"
    );
    assert!(
        err.contains("line 2: contact.phone: \"5215512345678\" has no country code"),
        "a phone typed as a number is read whole, without its +: {err}"
    );
    assert!(
        err.contains("1 phones are numbers in the sheet, which drops their leading +"),
        "{err}"
    );
    assert!(
        !err.contains("send_after"),
        "a date cell is a send_after: {err}"
    );
    let (ok, _, err) = wadispatch(&[
        "audience",
        "import",
        "--campaign",
        "xl",
        "--dry-run",
        "--sheet",
        "vip",
        "--config",
        nowhere,
        book_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("rows read: 3"), "{err}");
    let (ok, _, err) = wadispatch(&[
        "audience",
        "import",
        "--campaign",
        "xl",
        "--dry-run",
        "--sheet",
        "nope",
        "--config",
        nowhere,
        book_path.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("has no sheet \"nope\"; its sheets are: main, VIP"),
        "{err}"
    );

    let config = report_fixture(dir.path());
    let cfg = config.to_str().unwrap();
    let export = dir.path().join("rt.xlsx");
    let (ok, _, err) = wadispatch(&[
        "report",
        "--campaign",
        "rt",
        "--format",
        "xlsx",
        "--out",
        export.to_str().unwrap(),
        "--config",
        cfg,
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("4 contacts written to"), "{err}");
    let mut read: calamine::Xlsx<_> = calamine::open_workbook(&export).unwrap();
    let range = calamine::Reader::worksheet_range(&mut read, "contacts").unwrap();
    let rows: Vec<Vec<String>> = range
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    assert_eq!(rows.len(), 5, "a header and four contacts");
    assert_eq!(
        rows[0],
        wadispatch::report::ContactRow::COLUMNS
            .map(String::from)
            .to_vec()
    );
    let failed: Vec<&Vec<String>> = rows.iter().filter(|r| r[6] == "failed").collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed[0][0].starts_with("+52550000001"),
        "text cells, no quote: {:?}",
        failed[0]
    );
    assert_eq!(failed[0][10], "Message undeliverable.");
    let (ok, _, err) = wadispatch(&[
        "audience",
        "import",
        "--campaign",
        "again",
        "--state",
        "failed",
        "--dry-run",
        "--config",
        cfg,
        export.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("rows read: 4"), "{err}");
    assert!(err.contains("records to produce: 2"), "{err}");
    assert!(!err.contains("invalid phone"), "{err}");
    // A workbook is binary: --summary stays text or JSON.
    let (ok, _, err) = wadispatch(&[
        "report",
        "--campaign",
        "rt",
        "--summary",
        "--format",
        "xlsx",
        "--config",
        cfg,
    ]);
    assert!(!ok);
    assert!(err.contains("--summary is text or JSON"), "{err}");
}
