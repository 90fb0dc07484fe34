//! `wadispatch campaigns` against a running daemon (a process, its admin
//! listener, the campaigns topic of a MockCluster), then against its store
//! once it stopped; and `audience import --dry-run` checking rows against
//! the spec it reads from the campaigns topic.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;

const CONTACTS: u32 = 300;

/// Runs the binary (on a blocking thread: the test's runtime keeps
/// serving the sandbox meanwhile).
async fn cli(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_wadispatch"))
            .args(&args)
            .output()
            .expect("run wadispatch");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_are_listed_paused_resumed_and_ended_from_the_command_line() {
    let run = Run {
        group: "campaigns-cli",
        senders: &[("8301", 5)],
        ..Run::default()
    };
    let ProcessWorld {
        dir,
        config,
        kafka,
        sandbox,
        path,
        admin_port,
    } = ProcessWorld::start(&run, sandbox_for).await;
    let cfg = path.to_str().unwrap();
    let producer = kafka.producer();
    // Five a second: still sending when it is paused.
    let spec = r#"{"id":"slow","name":"Slow promo","state":"active","senders":["8301"],"pacing":{"per_second":5},
        "template":{"name":"promo","language":"es_MX","category":"marketing","body":["{{name}}","{{coupon}}"]}}"#;
    publish(&producer, &config.kafka.topics.campaigns, "slow", spec).await;
    let audience: Vec<(String, String)> = (0..CONTACTS)
        .map(|i| (phone(i), audience_json("slow", i, true)))
        .collect();
    publish_all(&producer, &config.kafka.topics.audience, &audience).await;

    // Before any daemon: the store is read (it holds nothing yet) and the
    // dry run checks rows against the spec on the topic.
    let csv = dir.path().join("more.csv");
    std::fs::write(
        &csv,
        "phone,name,coupon\n+52 55 9000 0001,Ana,A1\n+52 55 9000 0002,Luis,\n",
    )
    .unwrap();
    let (ok, _, err) = cli(&[
        "audience",
        "import",
        "--campaign",
        "slow",
        "--dry-run",
        "--config",
        cfg,
        csv.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        err.contains("rows checked against the spec of slow on"),
        "{err}"
    );
    assert!(err.contains("line 3: missing_variable:coupon"), "{err}");
    let (ok, _, err) = cli(&[
        "audience",
        "import",
        "--campaign",
        "unknown",
        "--dry-run",
        "--config",
        cfg,
        csv.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{err}");
    assert!(err.contains("has no spec for unknown yet"), "{err}");

    let mut child = spawn(&path);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let views = campaigns(admin_port).await.unwrap_or_default();
        let staged = views
            .iter()
            .find(|c| c["id"] == "slow")
            .map(|c| c["staged"].clone());
        if staged == Some(serde_json::json!(CONTACTS)) && sandbox.stats().accepted > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slow not staged and sending: {views:?}"
        );
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The running daemon's view.
    let (ok, out, err) = cli(&["campaigns", "list", "--config", cfg]).await;
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("from the daemon at http://127.0.0.1:{admin_port}")),
        "{err}"
    );
    let header = out.lines().next().unwrap();
    for column in [
        "ID", "KIND", "DESIRED", "OBSERVED", "PROGRESS", "RATE", "ETA", "WAITING",
    ] {
        assert!(header.contains(column), "{column} in {header}");
    }
    let row = out
        .lines()
        .find(|l| l.starts_with("slow"))
        .expect("a row for slow");
    assert!(row.contains("real") && row.contains("active"), "{row}");
    assert!(row.contains(&format!("/{CONTACTS} ")), "{row}");
    assert!(row.contains("/5.0/s"), "the configured rate: {row}");
    let (ok, out, err) = cli(&["campaigns", "list", "--json", "--config", cfg]).await;
    assert!(ok, "{err}");
    let lines: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(lines[0]["id"], "slow");
    assert_eq!(lines[0]["staged"], CONTACTS);
    assert_eq!(lines[0]["configured_rate"], 5.0);
    let (ok, out, err) = cli(&["campaigns", "show", "slow", "--config", cfg]).await;
    assert!(ok, "{err}");
    assert!(out.contains("campaign  slow (Slow promo), real"), "{out}");
    assert!(out.contains("funnel    staged 300, accepted "), "{out}");
    let (ok, _, err) = cli(&["campaigns", "show", "nope", "--config", cfg]).await;
    assert!(!ok);
    assert!(
        err.contains("does not know campaign nope (it has: slow)"),
        "{err}"
    );

    // Pause: published to the topic, applied by the daemon, nothing more
    // goes out.
    let (ok, out, err) = cli(&["campaigns", "pause", "slow", "--config", cfg]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("state active -> paused, published to"),
        "{out}"
    );
    assert!(
        out.contains("applied it: desired paused, observed paused"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let paused_at = sandbox.stats().accepted;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sandbox.stats().accepted,
        paused_at,
        "sends went on while paused"
    );
    assert!(
        paused_at < u64::from(CONTACTS),
        "the campaign finished before the pause"
    );
    let (ok, out, _) = cli(&["campaigns", "pause", "slow", "--config", cfg]).await;
    assert!(ok);
    assert!(out.contains("already paused: nothing published"), "{out}");
    let (ok, _, err) = cli(&["campaigns", "pause", "nope", "--config", cfg]).await;
    assert!(!ok);
    assert!(
        err.contains("campaign nope has no spec on topic") && err.contains("it holds: slow"),
        "{err}"
    );

    // Resume: it sends again. Every other field is the upstream's.
    let (ok, out, err) = cli(&["campaigns", "resume", "slow", "--config", cfg]).await;
    assert!(ok, "{err}");
    assert!(out.contains("state paused -> active"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.stats().accepted <= paused_at {
        assert!(Instant::now() < deadline, "no send after resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let specs = topic_values(&kafka.brokers, &config.kafka.topics.campaigns).await;
    let last: serde_json::Value = serde_json::from_slice(specs.last().unwrap()).unwrap();
    assert_eq!(last["state"], "active");
    assert_eq!(last["name"], "Slow promo");
    assert_eq!(last["template"]["body"][1], "{{coupon}}");
    assert_eq!(specs.len(), 3, "the upstream's spec, the pause, the resume");

    // End: refused without --yes, then final.
    let (ok, _, err) = cli(&["campaigns", "end", "slow", "--config", cfg]).await;
    assert!(!ok);
    assert!(
        err.contains("cannot be undone") && err.contains("--yes"),
        "{err}"
    );
    let (ok, out, err) = cli(&["campaigns", "end", "slow", "--yes", "--config", cfg]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("applied it: desired ended, observed ended"),
        "{out}"
    );
    let (ok, _, err) = cli(&["campaigns", "resume", "slow", "--config", cfg]).await;
    assert!(!ok);
    assert!(
        err.contains("is ended") && err.contains("new campaign"),
        "{err}"
    );

    // The daemon stopped: the store answers.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let (ok, out, err) = cli(&["campaigns", "list", "--config", cfg]).await;
    assert!(ok, "{err}");
    assert!(
        err.contains("from the store (no daemon answered at"),
        "{err}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with("slow"))
        .expect("a row for slow");
    assert!(row.contains("ended"), "{row}");
    let (ok, out, err) = cli(&["campaigns", "show", "slow", "--json", "--config", cfg]).await;
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["campaign"]["desired_state"], "ended");
    assert_eq!(shown["campaign"]["observed_state"], "ended");
    assert_eq!(shown["summary"]["staged"], CONTACTS);
}

/// Every value of a topic's partition 0, oldest first.
async fn topic_values(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "campaigns-cli-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(&topic, 0, Duration::from_secs(10))
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while (out.len() as i64) < high {
            assert!(Instant::now() < deadline, "topic not read");
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                out.push(m.payload().unwrap_or_default().to_vec());
            }
        }
        out
    })
    .await
    .unwrap()
}
