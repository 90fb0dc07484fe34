//! Crash safety: `wadispatch run` is killed with SIGKILL at random moments of
//! a campaign and restarted. At the end every contact is final, the sandbox
//! saw nobody twice, and `unknown` stays within the in-flight bound.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use wadispatch::app;
use wadispatch::domain::DispatchState;
use wadispatch::report::CampaignSummary;
use wadispatch::sandbox::{FailureRule, Sandbox, SandboxConfig};

const CONTACTS: u32 = 20_000;
const KILLS: usize = 5;
/// dispatch.max_in_flight_per_sender; a campaign holds at most twice this.
const IN_FLIGHT: usize = 16;

fn spawn(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wadispatch"))
        .args(["run", "--config"])
        .arg(config)
        .env("WADISPATCH_WHATSAPP_TOKEN", "t")
        .env("WADISPATCH_APP_SECRET", "crash-secret")
        .env("WADISPATCH_INSTANCE_ID", "crash-test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wadispatch run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_campaign_never_sends_twice_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), "");
    let kafka = Kafka::start(&config);
    config.kafka.brokers = kafka.brokers.clone();
    let webhook_port = free_port();
    let admin_port = free_port();
    let sandbox = Sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        per_number_mps: 0.0,
        webhook_url: Some(format!("http://127.0.0.1:{webhook_port}/webhook")),
        app_secret: "crash-secret".into(),
        // Final failures only: no 24 h deferral, so the campaign can finish.
        failure_rules: vec![FailureRule {
            suffix: "13".into(),
            code: 131026,
            stage: Default::default(),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let path = dir.path().join("wadispatch.toml");
    std::fs::write(
        &path,
        format!(
            r#"[kafka]
brokers = "{brokers}"
group_id = "crash"

# A killed member keeps its partitions until its session times out: keep
# that short so the restarted instance owns every shard again quickly.
[kafka.client]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"

[store.embedded]
data_dir = "{data}"

[http]
listen = "127.0.0.1:{webhook_port}"

[admin]
listen = "127.0.0.1:{admin_port}"

[whatsapp]
api_base_url = "{api}"

[dispatch]
max_in_flight_per_sender = {IN_FLIGHT}

[senders."5001"]
per_second = 700

[senders."5002"]
per_second = 700
"#,
            brokers = kafka.brokers,
            data = config.store.embedded.data_dir.display(),
            api = sandbox.base_url(),
        ),
    )
    .unwrap();
    let producer = kafka.producer();
    let spec = r#"{"id":"crash","state":"active","senders":["5001","5002"],"exclusive":true,
        "template":{"name":"promo","language":"es_MX","body":["{{name}}"]},"pacing":{"per_second":1000}}"#;
    publish(&producer, &config.kafka.topics.campaigns, "crash", spec).await;
    let records: Vec<(String, String)> = (0..CONTACTS)
        .map(|i| {
            (
                phone(i),
                format!(
                    r#"{{"campaign_id":"crash","contact":{{"phone":"{}","name":"N{i}"}}}}"#,
                    phone(i)
                ),
            )
        })
        .collect();
    publish_all(&producer, &config.kafka.topics.audience, &records).await;

    // Kill at random points of progress, spread over the campaign.
    let mut marks: Vec<u64> = (0..KILLS)
        .map(|k| (k as u64 + 1) * 2_500 + rand::random::<u64>() % 1_500)
        .collect();
    marks.sort();
    for mark in marks {
        let mut child = spawn(&path);
        let deadline = Instant::now() + Duration::from_secs(120);
        while sandbox.stats().accepted < mark {
            assert!(
                Instant::now() < deadline,
                "no progress to {mark} (accepted {})",
                sandbox.stats().accepted
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "the daemon exited on its own"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    // Last run: until the daemon itself reports the campaign completed
    // with every contact staged (its admin listener: the store is the
    // daemon's while it runs), then a clean stop.
    let mut child = spawn(&path);
    let url = format!("http://127.0.0.1:{admin_port}/campaigns");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let view = match reqwest::get(&url).await {
            Ok(r) => r.json::<serde_json::Value>().await.ok(),
            Err(_) => None,
        };
        let done = view.as_ref().and_then(|v| v.as_array()).is_some_and(|all| {
            all.iter().any(|c| {
                c["id"] == "crash"
                    && c["observed_state"] == "completed"
                    && c["staged"] == u64::from(CONTACTS)
            })
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the campaign did not complete: {view:?}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited on its own"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean stop after SIGTERM: {status}");

    let stats = sandbox.stats();
    assert_eq!(
        stats.duplicate_recipients, 0,
        "no contact was sent the campaign twice"
    );
    assert_eq!(stats.per_recipient_max, 1);
    let store = app::open_store(&config).await.unwrap();
    let s = CampaignSummary::compute(store.as_ref(), "crash")
        .await
        .unwrap();
    assert_eq!(s.staged, u64::from(CONTACTS));
    assert_eq!(s.open(), 0, "every contact final: {:?}", s.by_state);
    assert_eq!(
        s.excluded(),
        0,
        "nobody excluded: {:?}",
        s.excluded_by_reason
    );
    let unknown = s.count(DispatchState::Unknown);
    // Everybody but the unknown ones reached the sandbox (the failures too:
    // the sandbox accepts them and fails them by webhook).
    assert!(
        stats.recipients >= u64::from(CONTACTS) - unknown,
        "{} recipients of {CONTACTS}, {unknown} unknown",
        stats.recipients
    );
    let bound = (KILLS * IN_FLIGHT * 2) as u64;
    assert!(
        unknown <= bound,
        "unknown {unknown} above the in-flight bound {bound}"
    );
    // Everything the sandbox accepted is accounted for in the store.
    assert!(
        s.reached(DispatchState::Accepted) + unknown + s.count(DispatchState::Failed)
            >= stats.accepted,
        "{:?} vs {}",
        s.by_state,
        stats.accepted
    );
    eprintln!(
        "crash test: {:?}, unknown {unknown} (bound {bound})",
        s.by_state
    );
}

const PACED_CONTACTS: u32 = 300;

/// The config of the paced test: two senders far slower than the campaign,
/// so contacts queue at the senders (the case where a claim taken before the
/// sender's turn left hundreds of contacts `unknown` at every restart).
fn paced_config(
    path: &std::path::Path,
    brokers: &str,
    data: &std::path::Path,
    webhook_port: u16,
    admin_port: u16,
    api: &str,
) {
    std::fs::write(
        path,
        format!(
            r#"[kafka]
brokers = "{brokers}"
group_id = "paced"
shutdown_timeout_secs = 20

[kafka.client]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"

[store.embedded]
data_dir = "{data}"

[http]
listen = "127.0.0.1:{webhook_port}"

[admin]
listen = "127.0.0.1:{admin_port}"

[whatsapp]
api_base_url = "{api}"
request_timeout_ms = 5000

[dispatch]
max_in_flight_per_sender = 64

[senders."6001"]
per_second = 8

[senders."6002"]
per_second = 8
"#,
            data = data.display(),
        ),
    )
    .unwrap();
}

/// The campaign's observed state from `/campaigns` (None while unreachable).
async fn observed(admin_port: u16) -> Option<String> {
    let body: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{admin_port}/campaigns"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body.as_array()?
        .iter()
        .find(|c| c["id"] == "paced")
        .and_then(|c| c["observed_state"].as_str().map(str::to_string))
}

async fn wait_accepted(sandbox: &wadispatch::sandbox::SandboxHandle, child: &mut Child, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while sandbox.stats().accepted < n {
        assert!(Instant::now() < deadline, "no progress to {n} accepted");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited on its own"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_senders_leave_unknown_only_for_requests_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), "");
    let kafka = Kafka::start(&config);
    config.kafka.brokers = kafka.brokers.clone();
    let webhook_port = free_port();
    let admin_port = free_port();
    // 300 ms per answer, and a platform limit below the senders' rate: the
    // daemon meets 130429 (requests refused unsent, back to the queue).
    let sandbox = Sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        per_number_mps: 6.0,
        latency_ms: 300,
        webhook_url: Some(format!("http://127.0.0.1:{webhook_port}/webhook")),
        app_secret: "crash-secret".into(),
        failure_rules: vec![],
        ..Default::default()
    })
    .await
    .unwrap();
    let path = dir.path().join("wadispatch.toml");
    paced_config(
        &path,
        &kafka.brokers,
        &config.store.embedded.data_dir,
        webhook_port,
        admin_port,
        &sandbox.base_url(),
    );
    let producer = kafka.producer();
    let spec = r#"{"id":"paced","state":"active","senders":["6001","6002"],
        "template":{"name":"promo","language":"es_MX","body":["{{name}}"]},"pacing":{"per_second":1000}}"#;
    publish(&producer, &config.kafka.topics.campaigns, "paced", spec).await;
    let records: Vec<(String, String)> = (0..PACED_CONTACTS)
        .map(|i| {
            (
                phone(i),
                format!(
                    r#"{{"campaign_id":"paced","contact":{{"phone":"{}","name":"N{i}"}}}}"#,
                    phone(i)
                ),
            )
        })
        .collect();
    publish_all(&producer, &config.kafka.topics.audience, &records).await;

    // 1. SIGTERM mid-campaign: a clean stop leaves nothing claimed, nothing
    //    unknown (every request on the wire got its answer first).
    let mut child = spawn(&path);
    wait_accepted(&sandbox, &mut child, 40).await;
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "clean stop after SIGTERM");
    {
        let store = app::open_store(&config).await.unwrap();
        let s = CampaignSummary::compute(store.as_ref(), "paced")
            .await
            .unwrap();
        assert_eq!(
            s.count(DispatchState::Claimed),
            0,
            "after SIGTERM: {:?}",
            s.by_state
        );
        assert_eq!(
            s.count(DispatchState::Unknown),
            0,
            "after SIGTERM: {:?}",
            s.by_state
        );
        assert!(
            s.count(DispatchState::Pending) > 0,
            "the stop came mid-campaign"
        );
    }

    // 2. SIGKILL mid-campaign: what was on the wire is the bound. The
    //    requests that can have left are those the sandbox was answering at
    //    the kill, plus any that reached it just after.
    let mut child = spawn(&path);
    wait_accepted(&sandbox, &mut child, 120).await;
    let before = sandbox.stats();
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = sandbox.stats();
    let on_the_wire = before.in_flight + (after.requests - before.requests);

    // 3. Restart and let it finish.
    let mut child = spawn(&path);
    let deadline = Instant::now() + Duration::from_secs(120);
    while observed(admin_port).await.as_deref() != Some("completed") {
        assert!(Instant::now() < deadline, "the campaign did not complete");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited on its own"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "clean stop after SIGTERM");

    let stats = sandbox.stats();
    assert_eq!(stats.duplicate_recipients, 0, "nobody messaged twice");
    let store = app::open_store(&config).await.unwrap();
    let s = CampaignSummary::compute(store.as_ref(), "paced")
        .await
        .unwrap();
    assert_eq!(s.staged, u64::from(PACED_CONTACTS));
    assert_eq!(s.open(), 0, "every contact final: {:?}", s.by_state);
    assert_eq!(s.count(DispatchState::Excluded), 0, "{:?}", s.by_state);
    assert_eq!(s.count(DispatchState::Failed), 0, "{:?}", s.by_state);
    let unknown = s.count(DispatchState::Unknown);
    assert!(
        unknown <= on_the_wire,
        "unknown {unknown} above the {on_the_wire} requests on the wire at the kill"
    );
    // Everybody but the unknown ones that never reached Meta got it.
    assert!(stats.recipients >= u64::from(PACED_CONTACTS) - unknown);
    assert!(
        stats.rejected_by_code.get(&130429).copied().unwrap_or(0) > 0,
        "the 130429 path ran"
    );
    eprintln!(
        "paced crash test: {:?}, unknown {unknown}, on the wire at the kill {on_the_wire}, 130429 × {}",
        s.by_state,
        stats.rejected_by_code.get(&130429).copied().unwrap_or(0)
    );
}
