//! Audience ingest against a real Kafka protocol peer (librdkafka's mock
//! cluster): staging exactly once, the DLQ, rebalances, broker outages,
//! SIGKILL and SIGTERM of a `wadispatch run` child process.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use wadispatch::app::{self, Pipeline};
use wadispatch::domain::{ContactKey, DispatchState};
use wadispatch::store::Store;

/// Keyed records, unique valid (campaign, contact) pairs, malformed count.
type Workload = (Vec<(String, String)>, HashSet<(String, String)>, usize);

/// Builds `n` records over two campaigns plus duplicates and malformed ones.
fn workload(n: u32) -> Workload {
    let mut records = Vec::new();
    let mut unique = HashSet::new();
    for i in 0..n {
        let campaign = if i % 2 == 0 { "camp-a" } else { "camp-b" };
        records.push((phone(i), audience_json(campaign, i, i % 97 != 0)));
        unique.insert((campaign.to_string(), phone(i)));
    }
    // Replays of earlier records (same campaign and contact).
    for i in (0..n).step_by(500) {
        let campaign = if i % 2 == 0 { "camp-a" } else { "camp-b" };
        records.push((phone(i), audience_json(campaign, i, true)));
    }
    let malformed = vec![
        ("k-bad-1".to_string(), "{not json".to_string()),
        (
            "k-bad-2".to_string(),
            r#"{"contact":{"phone":"+525512345678"}}"#.to_string(),
        ),
        ("k-bad-3".to_string(), "[1,2,3]".to_string()),
        (
            "k-bad-4".to_string(),
            format!(r#"{{"campaign_id":"camp-a","x":"{}"}}"#, "y".repeat(70_000)),
        ),
    ];
    let bad = malformed.len();
    records.extend(malformed);
    (records, unique, bad)
}

/// Held by the two tests that move tens of thousands of records through two
/// group members each: run side by side on two cores, one of them starves
/// the other's rebalance and shutdown.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Keyed records and the unique valid (campaign, contact) pairs among them.
type ValidWorkload = (Vec<(String, String)>, HashSet<(String, String)>);

/// `workload(n)` without its malformed records.
fn valid_workload(n: u32) -> ValidWorkload {
    let (records, unique, _) = workload(n);
    let valid = records
        .into_iter()
        .filter(|(k, _)| !k.starts_with("k-bad"))
        .collect();
    (valid, unique)
}

/// After a pipeline stopped: every unique valid pair is staged; the
/// dead-letter topic's records (at least one expected).
async fn staged_and_dead_lettered(
    kafka: &Kafka,
    config: &wadispatch::config::Config,
    store: &dyn Store,
    unique: &HashSet<(String, String)>,
) -> Vec<ReadRecord> {
    let staged = staged_pairs(store, &["camp-a", "camp-b"]).await;
    assert_eq!(staged.len(), unique.len());
    read_all(
        &kafka.brokers,
        &config.kafka.topics.audience_dlq,
        1,
        Duration::from_secs(20),
    )
}

async fn seed_campaigns(kafka: &Kafka, config: &wadispatch::config::Config) {
    let p = kafka.producer();
    for id in ["camp-a", "camp-b"] {
        publish(&p, &config.kafka.topics.campaigns, id, &campaign_spec(id)).await;
    }
}

async fn staged_pairs(
    store: &dyn Store,
    campaigns: &[&str],
) -> HashMap<(String, String), DispatchState> {
    let mut out = HashMap::new();
    for c in campaigns {
        let mut after: Option<ContactKey> = None;
        loop {
            let page = store
                .scan_dispatches(c, after.as_ref(), 1000)
                .await
                .unwrap();
            for r in &page {
                let prev = out.insert((c.to_string(), r.contact.as_str().to_string()), r.state);
                assert!(prev.is_none(), "contact staged twice");
            }
            match page.last() {
                Some(l) if page.len() == 1000 => after = Some(l.contact.clone()),
                _ => break,
            }
        }
    }
    out
}

/// A short session timeout for the tests that move partitions between two
/// consumers: the mock coordinator waits up to the session timeout for every
/// member to rejoin, 45 s by default, which on a loaded machine outlasts the
/// tests' deadlines. Heartbeats come from librdkafka's own thread, so a busy
/// test process still keeps its membership.
fn quick_rebalance(mut config: wadispatch::config::Config) -> wadispatch::config::Config {
    config
        .kafka
        .client
        .insert("session.timeout.ms".into(), "6000".into());
    config
        .kafka
        .client
        .insert("heartbeat.interval.ms".into(), "1000".into());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_stage_every_valid_contact_exactly_once() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let probe = test_config(dir.path(), "");
    let kafka = Kafka::start(&probe);
    let config = quick_rebalance(test_config(dir.path(), &kafka.brokers));
    seed_campaigns(&kafka, &config).await;
    let (records, unique, bad) = workload(50_000);
    publish_all(&kafka.producer(), &config.kafka.topics.audience, &records).await;

    let store = app::open_store(&config).await.unwrap();
    let a = Pipeline::start_beside(&config, store.clone())
        .await
        .unwrap();
    let b = Pipeline::start_beside(&config, store.clone())
        .await
        .unwrap();
    let total = records.len() as u64;
    let (sa, sb) = (a.stats.clone(), b.stats.clone());
    wait_until(Duration::from_secs(120), "all records consumed", || {
        sa.total() + sb.total() >= total
    })
    .await;
    // Generous budgets on a machine busy with other tests.
    assert!(a.shutdown(Duration::from_secs(30)).await);
    // a's partitions move to b: stop b once that rebalance is over (a close
    // during a rebalance waits for the group, up to the deadline).
    wait_until(Duration::from_secs(60), "b owns every partition", || {
        sb.owned_shards().len() == AUDIENCE_PARTITIONS as usize
    })
    .await;
    assert!(b.shutdown(Duration::from_secs(30)).await);
    assert!(
        sa.total() > 0 && sb.total() > 0,
        "both group members did work: {} / {}",
        sa.total(),
        sb.total()
    );

    let staged = staged_pairs(store.as_ref(), &["camp-a", "camp-b"]).await;
    let keys: HashSet<(String, String)> = staged.keys().cloned().collect();
    assert_eq!(
        keys, unique,
        "every valid (campaign, contact) staged exactly once"
    );
    let excluded = staged
        .values()
        .filter(|s| **s == DispatchState::Excluded)
        .count();
    let expected_excluded = (0..50_000u32).filter(|i| i % 97 == 0).count();
    assert_eq!(
        excluded, expected_excluded,
        "missing coupon → excluded, not dropped"
    );
    let dup = sa.duplicate.load(Ordering::Relaxed) + sb.duplicate.load(Ordering::Relaxed);
    assert_eq!(dup, 100, "replays collapsed");

    let dlq = read_all(
        &kafka.brokers,
        &config.kafka.topics.audience_dlq,
        bad,
        Duration::from_secs(20),
    );
    assert_eq!(dlq.len(), bad);
    for (key, _, headers) in &dlq {
        assert!(key.as_deref().unwrap_or_default().starts_with("k-bad"));
        assert!(!headers["error"].is_empty());
        assert!(headers["source.partition"].parse::<i32>().is_ok());
        assert!(headers["source.offset"].parse::<i64>().is_ok());
    }
    let errors: Vec<&str> = dlq.iter().map(|(_, _, h)| h["error"].as_str()).collect();
    assert!(
        errors.iter().any(|e| e.contains("names no campaign")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("over the limit of 65536")),
        "{errors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_joining_mid_stream_loses_nothing() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&test_config(dir.path(), ""));
    let config = quick_rebalance(test_config(dir.path(), &kafka.brokers));
    seed_campaigns(&kafka, &config).await;
    let (records, unique, _) = workload(20_000);
    let (first, second) = records.split_at(records.len() / 2);
    let producer = kafka.producer();
    publish_all(&producer, &config.kafka.topics.audience, first).await;

    let store = app::open_store(&config).await.unwrap();
    let a = Pipeline::start_beside(&config, store.clone())
        .await
        .unwrap();
    let sa = a.stats.clone();
    wait_until(
        Duration::from_secs(60),
        "first consumer started staging",
        || sa.total() > 1_000,
    )
    .await;
    let b = Pipeline::start_beside(&config, store.clone())
        .await
        .unwrap();
    let sb = b.stats.clone();
    wait_until(
        Duration::from_secs(60),
        "the joining consumer got partitions",
        || sb.assigned.load(Ordering::Acquire),
    )
    .await;
    publish_all(&producer, &config.kafka.topics.audience, second).await;
    // Records of revoked partitions may be read twice (at-least-once), so wait
    // for the store to hold everything rather than for a count of reads.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let staged = staged_pairs(store.as_ref(), &["camp-a", "camp-b"]).await;
        if staged.len() == unique.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} staged",
            staged.len(),
            unique.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(a.shutdown(Duration::from_secs(10)).await);
    assert!(b.shutdown(Duration::from_secs(10)).await);
    assert!(sb.total() > 0, "the joining consumer received partitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_resumes_after_a_broker_outage() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&test_config(dir.path(), ""));
    let config = test_config(dir.path(), &kafka.brokers);
    seed_campaigns(&kafka, &config).await;
    let (records, unique, _) = workload(6_000);
    let (first, second) = records.split_at(3_000);
    let producer = kafka.producer();
    publish_all(&producer, &config.kafka.topics.audience, first).await;
    let store = app::open_store(&config).await.unwrap();
    let p = Pipeline::start(&config, store.clone()).await.unwrap();
    let s = p.stats.clone();
    wait_until(Duration::from_secs(60), "first half consumed", || {
        s.total() >= 3_000
    })
    .await;
    for broker in 1..=3 {
        kafka.cluster.broker_down(broker).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // an outage has to last a while to be one
    for broker in 1..=3 {
        kafka.cluster.broker_up(broker).unwrap();
    }
    publish_all(&producer, &config.kafka.topics.audience, second).await;
    let total = records.len() as u64;
    wait_until(
        Duration::from_secs(120),
        "second half consumed after the outage",
        || s.total() >= total,
    )
    .await;
    assert!(p.shutdown(Duration::from_secs(10)).await);
    let staged = staged_pairs(store.as_ref(), &["camp-a", "camp-b"]).await;
    assert_eq!(staged.len(), unique.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_goes_to_the_dlq_cut_with_its_size_and_hash() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&test_config(dir.path(), ""));
    let config = test_config(dir.path(), &kafka.brokers);
    seed_campaigns(&kafka, &config).await;
    // 2 MB: twice what a producer with librdkafka's defaults may write.
    let huge = format!(
        r#"{{"campaign_id":"camp-a","contact":{{"phone":"{}"}},"x":"{}"}}"#,
        phone(1),
        "y".repeat(2_000_000)
    );
    let big: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("message.max.bytes", "4000000")
        .create()
        .unwrap();
    let (partition, offset) = publish(&big, &config.kafka.topics.audience, "k-huge", &huge).await;
    let (valid, unique) = valid_workload(500);
    publish_all(&kafka.producer(), &config.kafka.topics.audience, &valid).await;

    let store = app::open_store(&config).await.unwrap();
    let p = Pipeline::start(&config, store.clone()).await.unwrap();
    let s = p.stats.clone();
    wait_until(
        Duration::from_secs(60),
        "the oversized record dead-lettered and the rest staged",
        || s.dlq.load(Ordering::Relaxed) == 1 && s.total() > valid.len() as u64,
    )
    .await;
    assert!(s.troubles().is_empty(), "{:?}", s.troubles());
    assert!(p.shutdown(Duration::from_secs(10)).await);
    let dlq = staged_and_dead_lettered(&kafka, &config, store.as_ref(), &unique).await;
    assert_eq!(dlq.len(), 1);
    let (key, payload, headers) = &dlq[0];
    assert_eq!(key.as_deref(), Some("k-huge"));
    let payload = payload.as_deref().unwrap();
    assert!(payload.len() < 1_000_000, "cut to fit: {}", payload.len());
    assert!(huge.starts_with(payload), "the head of the original");
    assert_eq!(headers["original.size"], huge.len().to_string());
    assert_eq!(
        headers["original.sha256"],
        hex::encode(sha2::Sha256::digest(huge.as_bytes()))
    );
    assert_eq!(headers["source.partition"], partition.to_string());
    assert_eq!(headers["source.offset"], offset.to_string());
    assert!(headers["error"].contains("over the limit"), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_that_keeps_failing_holds_its_records_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), "");
    config.kafka.topics.audience_dlq = "wa.audience.dlq.missing".into();
    let kafka = Kafka::start(&config);
    config.kafka.brokers = kafka.brokers.clone();
    // As if the topic did not exist (the mock broker creates topics on use).
    kafka
        .cluster
        .topic_error(
            &config.kafka.topics.audience_dlq,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
    seed_campaigns(&kafka, &config).await;
    let producer = kafka.producer();
    let (bad_partition, bad_offset) = publish(
        &producer,
        &config.kafka.topics.audience,
        "k-bad-1",
        "{not json",
    )
    .await;
    let (valid, unique) = valid_workload(2_000);
    publish_all(&producer, &config.kafka.topics.audience, &valid).await;

    let store = app::open_store(&config).await.unwrap();
    let p = Pipeline::start(&config, store.clone()).await.unwrap();
    let s = p.stats.clone();
    // The other records are staged while the dead letter waits.
    wait_until(Duration::from_secs(60), "the valid records staged", || {
        s.staged.load(Ordering::Relaxed)
            + s.excluded.load(Ordering::Relaxed)
            + s.duplicate.load(Ordering::Relaxed)
            >= valid.len() as u64
    })
    .await;
    wait_until(Duration::from_secs(60), "the DLQ failure reported", || {
        s.dead_letters.lock().unwrap().is_some()
    })
    .await;
    let reason = wadispatch::admin::not_ready(store.as_ref(), &s, Duration::from_secs(2))
        .await
        .expect("not ready while the DLQ refuses records");
    assert!(
        reason.contains("dead-letter topic wa.audience.dlq.missing: 1 audience records"),
        "{reason}"
    );
    assert_eq!(
        wadispatch::metrics::metrics()
            .dead_letters_unwritten
            .with_label_values(&["wa.audience.dlq.missing"])
            .get(),
        1
    );
    assert_eq!(s.dlq.load(Ordering::Relaxed), 0);
    // The loop keeps going (the watchdog's heartbeat moves).
    let beat = s.heartbeat.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(30), "the ingest loop alive", || {
        s.heartbeat.load(Ordering::Relaxed) > beat + 2
    })
    .await;
    // Nothing passes the record that is not written yet.
    wait_until(Duration::from_secs(10), "offsets committed", || {
        committed(
            &kafka.brokers,
            &config.kafka.group_id,
            &config.kafka.topics.audience,
            AUDIENCE_PARTITIONS,
        )
        .len()
            > 1
    })
    .await;
    let held = committed(
        &kafka.brokers,
        &config.kafka.group_id,
        &config.kafka.topics.audience,
        AUDIENCE_PARTITIONS,
    );
    assert!(
        held.get(&bad_partition).is_none_or(|&c| c <= bad_offset),
        "committed {held:?} past the unwritten dead letter at {bad_offset}"
    );

    // The topic appears: the letter is written, the reason goes away.
    kafka
        .cluster
        .topic_error(
            &config.kafka.topics.audience_dlq,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
        )
        .unwrap();
    wait_until(Duration::from_secs(90), "the dead letter written", || {
        s.dlq.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(s.dead_letters.lock().unwrap().is_none());
    assert!(
        wadispatch::admin::not_ready(store.as_ref(), &s, Duration::from_secs(2))
            .await
            .is_none()
    );
    assert!(p.shutdown(Duration::from_secs(10)).await);
    let dlq = staged_and_dead_lettered(&kafka, &config, store.as_ref(), &unique).await;
    assert!(!dlq.is_empty());
    assert!(dlq.iter().all(|(k, _, _)| k.as_deref() == Some("k-bad-1")));
}

/// `wadispatch run` under a systemd-like supervisor (a notify socket and a
/// 3 s watchdog) while the DLQ refuses records: `READY=1`, then `STATUS=`
/// names the failing DLQ and `WATCHDOG=1` keeps coming (no restart loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_is_fed_and_status_says_why_while_the_dlq_refuses_records() {
    const DLQ: &str = "wa.audience.dlq.refused";
    let dir = tempfile::tempdir().unwrap();
    let mut probe = test_config(dir.path(), "");
    probe.kafka.topics.audience_dlq = DLQ.into();
    let kafka = Kafka::start(&probe);
    kafka
        .cluster
        .topic_error(
            DLQ,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
    seed_campaigns(&kafka, &probe).await;
    let config = write_config(dir.path(), &kafka.brokers, "watchdog-test");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[kafka.topics]\naudience_dlq = \"{DLQ}\"\n"));
    std::fs::write(&config, text).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wadispatch"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "3000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wadispatch run");
    publish(
        &kafka.producer(),
        &probe.kafka.topics.audience,
        "k-bad-1",
        "{not json",
    )
    .await;
    let (mut ready, mut status, mut pings_after_status) = (false, None, 0);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !(ready && status.is_some() && pings_after_status >= 3) {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        ready |= message.contains("READY=1");
        if message.contains(&format!(
            "STATUS=waiting: dead-letter topic {DLQ}: 1 audience records"
        )) {
            status.get_or_insert(message.clone());
        }
        if message == "WATCHDOG=1" && status.is_some() {
            pings_after_status += 1;
        }
    }
    unsafe_kill(child.id() as i32, 15);
    let exited = child.wait().unwrap();
    assert!(ready, "READY=1 while the DLQ refuses records");
    let status = status.expect("a STATUS= naming the failing DLQ");
    assert!(status.contains("nothing is lost"), "{status}");
    assert!(
        pings_after_status >= 3,
        "the watchdog is fed while the DLQ fails ({pings_after_status} pings)"
    );
    assert!(exited.success(), "clean exit after SIGTERM: {exited:?}");
}

fn write_config(dir: &std::path::Path, brokers: &str, group: &str) -> std::path::PathBuf {
    let path = dir.join("wadispatch.toml");
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{group}\"\nunknown_campaign_wait_secs = 2\nstage_batch_size = 500\n\n[store.embedded]\ndata_dir = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n# These tests are about ingest: nothing is sent (and never off this machine).\n[whatsapp]\napi_base_url = \"http://127.0.0.1:9\"\n\n[campaigns.\"camp-a\"]\npaused = true\n\n[campaigns.\"camp-b\"]\npaused = true\n\n[log]\nlevel = \"info\"\n",
        dir.join("store").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_daemon(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wadispatch"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wadispatch run")
}

/// Every valid record below the committed offset of its partition is in the store.
async fn committed_never_passes_unstaged(
    store: &dyn Store,
    produced: &[(String, i32, i64)],
    payloads: &HashMap<String, String>,
    committed: &HashMap<i32, i64>,
) -> usize {
    let mut checked = 0;
    for (key, partition, offset) in produced {
        let Some(&c) = committed.get(partition) else {
            continue;
        };
        if *offset >= c {
            continue;
        }
        // Malformed records are dead-lettered, not staged.
        if key.starts_with("k-bad") {
            continue;
        }
        let Some(payload) = payloads.get(key) else {
            continue;
        };
        let Some(campaign) = ["camp-a", "camp-b"]
            .into_iter()
            .find(|c| payload.contains(c))
        else {
            continue;
        };
        let row = store
            .get_dispatch(campaign, &ContactKey::raw(key))
            .await
            .unwrap();
        assert!(
            row.is_some(),
            "offset {offset} of partition {partition} committed (at {c}) but {key} is not staged"
        );
        checked += 1;
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_never_commits_past_unstaged_records() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&test_config(dir.path(), ""));
    let config = test_config(dir.path(), &kafka.brokers);
    seed_campaigns(&kafka, &config).await;
    let (records, unique, _) = workload(30_000);
    let payloads: HashMap<String, String> = records.iter().cloned().collect();
    let produced = publish_all(&kafka.producer(), &config.kafka.topics.audience, &records).await;
    let group = format!("kill-{}", std::process::id());
    let cfg_path = write_config(dir.path(), &kafka.brokers, &group);
    let topic = config.kafka.topics.audience.clone();

    // Kill it as soon as anything was committed, i.e. mid-stream.
    let mut child = spawn_daemon(&cfg_path);
    let brokers = kafka.brokers.clone();
    wait_until(Duration::from_secs(60), "a first commit", || {
        !committed(&brokers, &group, &topic, AUDIENCE_PARTITIONS).is_empty()
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = committed(&kafka.brokers, &group, &topic, AUDIENCE_PARTITIONS);
    {
        let store = app::open_store(&config).await.unwrap();
        let checked =
            committed_never_passes_unstaged(store.as_ref(), &produced, &payloads, &at_kill).await;
        assert!(checked > 0, "the kill happened after some commits");
    }

    // Restart: everything ends staged, and commits still never pass unstaged work.
    let mut child = spawn_daemon(&cfg_path);
    let ends: HashMap<i32, i64> = produced.iter().fold(HashMap::new(), |mut m, (_, p, o)| {
        let e = m.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
        m
    });
    wait_until(
        Duration::from_secs(120),
        "every partition committed to its end",
        || {
            let c = committed(&brokers, &group, &topic, AUDIENCE_PARTITIONS);
            ends.iter().all(|(p, end)| c.get(p) == Some(end))
        },
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let store = app::open_store(&config).await.unwrap();
    let staged = staged_pairs(store.as_ref(), &["camp-a", "camp-b"]).await;
    assert_eq!(staged.len(), unique.len(), "nothing lost across the kill");
    let final_commits = committed(&kafka.brokers, &group, &topic, AUDIENCE_PARTITIONS);
    committed_never_passes_unstaged(store.as_ref(), &produced, &payloads, &final_commits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_ingest_exits_cleanly_with_offsets_committed() {
    let dir = tempfile::tempdir().unwrap();
    let kafka = Kafka::start(&test_config(dir.path(), ""));
    let config = test_config(dir.path(), &kafka.brokers);
    seed_campaigns(&kafka, &config).await;
    let (records, _, _) = workload(30_000);
    let payloads: HashMap<String, String> = records.iter().cloned().collect();
    let produced = publish_all(&kafka.producer(), &config.kafka.topics.audience, &records).await;
    let group = format!("term-{}", std::process::id());
    let cfg_path = write_config(dir.path(), &kafka.brokers, &group);
    let topic = config.kafka.topics.audience.clone();
    let mut child = spawn_daemon(&cfg_path);
    let brokers = kafka.brokers.clone();
    wait_until(Duration::from_secs(60), "ingest under way", || {
        !committed(&brokers, &group, &topic, AUDIENCE_PARTITIONS).is_empty()
    })
    .await;
    // SIGTERM mid-stream.
    let pid = child.id() as i32;
    assert_eq!(unsafe_kill(pid, 15), 0);
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("wadispatch did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean shutdown exits 0, got {status}");
    let commits = committed(&kafka.brokers, &group, &topic, AUDIENCE_PARTITIONS);
    assert!(!commits.is_empty());
    let store = app::open_store(&config).await.unwrap();
    committed_never_passes_unstaged(store.as_ref(), &produced, &payloads, &commits).await;
    // And the final commit is not behind the staged work: the first record
    // of every contact that was staged lies below its partition's commit.
    let mut seen = HashSet::new();
    let mut staged = 0;
    for (key, partition, offset) in &produced {
        if key.starts_with("k-bad") || !seen.insert(key.clone()) {
            continue;
        }
        let campaign = if payloads[key].contains("camp-a") {
            "camp-a"
        } else {
            "camp-b"
        };
        if store
            .get_dispatch(campaign, &ContactKey::raw(key.as_str()))
            .await
            .unwrap()
            .is_some()
        {
            staged += 1;
            let c = commits.get(partition).copied().unwrap_or(0);
            assert!(
                *offset < c,
                "{key} at {partition}/{offset} is staged but the final commit is {c}"
            );
        }
    }
    assert!(staged > 0, "records were staged before the exit");
}

fn unsafe_kill(pid: i32, sig: i32) -> i32 {
    // Sends a signal with the `kill` command: no libc dependency needed.
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    if status.success() {
        0
    } else {
        1
    }
}

/// Two `wadispatch run` processes with their own embedded stores in one
/// consumer group would both send to the contacts that move between them:
/// the one that joins second never holds every partition, stages nothing
/// and exits with an error that says what to do; the first stages everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_embedded_instance_in_the_group_is_refused() {
    use wadispatch::store::embedded::{Durability, EmbeddedStore};
    let _heavy = HEAVY.lock().await;
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let probe = test_config(first_dir.path(), "");
    let kafka = Kafka::start(&probe);
    seed_campaigns(&kafka, &probe).await;
    let (records, unique, _) = workload(2_000);
    publish_all(&kafka.producer(), &probe.kafka.topics.audience, &records).await;
    let configs: Vec<std::path::PathBuf> = [first_dir.path(), second_dir.path()]
        .iter()
        .map(|dir| {
            let path = write_config(dir, &kafka.brokers, "pair-test");
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str("\n[kafka.client]\n\"session.timeout.ms\" = \"6000\"\n");
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let mut first = spawn_daemon(&configs[0]);
    // The first holds every partition before the second joins.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let started = Instant::now();
    let second = Command::new(env!("CARGO_BIN_EXE_wadispatch"))
        .args(["run", "--config"])
        .arg(&configs[1])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the second wadispatch run");
    let out = tokio::task::spawn_blocking(move || second.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second instance must not run: {stderr}"
    );
    assert!(
        stderr.contains("another wadispatch instance is in consumer group pair-test")
            && stderr.contains("store.backend = \"scylla\""),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "refused within the session timeout and its grace"
    );
    unsafe_kill(first.id() as i32, 15);
    assert!(first.wait().unwrap().success());

    let second_store =
        EmbeddedStore::open(&second_dir.path().join("store"), Durability::Process, 8).unwrap();
    assert!(
        staged_pairs(&second_store, &["camp-a", "camp-b"])
            .await
            .is_empty(),
        "the refused instance staged nothing"
    );
    let first_store =
        EmbeddedStore::open(&first_dir.path().join("store"), Durability::Process, 8).unwrap();
    assert_eq!(
        staged_pairs(&first_store, &["camp-a", "camp-b"])
            .await
            .len(),
        unique.len()
    );
}
