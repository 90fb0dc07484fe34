//! Shared helpers of the integration tests: a mock Kafka cluster with the
//! project's topics, producers that report where each record landed, and
//! waiting for conditions with a deadline (never a bare sleep).

#![allow(dead_code)]

pub mod daemon;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use wadispatch::config::Config;

pub const AUDIENCE_PARTITIONS: i32 = 8;

pub struct Kafka {
    pub cluster: MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    pub brokers: String,
}

impl Kafka {
    pub fn start(config: &Config) -> Kafka {
        let cluster = MockCluster::new(3).expect("mock cluster");
        let t = &config.kafka.topics;
        cluster.create_topic(&t.campaigns, 1, 1).unwrap();
        cluster
            .create_topic(&t.audience, AUDIENCE_PARTITIONS, 1)
            .unwrap();
        cluster.create_topic(&t.audience_dlq, 1, 1).unwrap();
        cluster.create_topic(&t.events, 1, 1).unwrap();
        cluster.create_topic(&t.suppressions, 1, 1).unwrap();
        cluster.create_topic(&t.conversions, 2, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        Kafka { cluster, brokers }
    }

    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "5")
            .create()
            .unwrap()
    }
}

/// A free loopback port (for a listener that must be known before it starts).
///
/// Taken below the kernel's ephemeral range (32768 and up on Linux): a port
/// the kernel handed out for `bind(0)` and that is then released can be given
/// to an outgoing connection of another test in this process before the
/// daemon under test binds it. Each process starts at its own offset and never
/// hands out a port twice, so parallel tests and test binaries do not collide.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN)
}

/// A config for one test: its own data dir, brokers, short timeouts.
pub fn test_config(dir: &Path, brokers: &str) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = brokers.to_string();
    c.kafka.group_id = format!("test-{}", std::process::id());
    c.store.embedded.data_dir = dir.join("store");
    c.kafka.unknown_campaign_wait_secs = 2;
    // Tests never reach beyond this machine: a closed loopback port unless a
    // test points the API at its sandbox.
    c.whatsapp.api_base_url = "http://127.0.0.1:9".into();
    c.http.listen = "127.0.0.1:0".into();
    c.admin.listen = "127.0.0.1:0".into();
    c
}

pub fn campaign_spec(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","name":"test","kind":"real","state":"active","senders":["106540352242922"],
            "template":{{"name":"promo","language":"es_MX","category":"marketing","body":["{{{{name}}}}","{{{{coupon}}}}"]}},
            "pacing":{{"per_second":20}}}}"#
    )
}

/// A valid Mexico City number for index `i`.
pub fn phone(i: u32) -> String {
    format!("+5255{:08}", 20_000_000 + i)
}

pub fn audience_json(campaign: &str, i: u32, coupon: bool) -> String {
    let coupon = if coupon {
        format!(r#","coupon":"C{i}""#)
    } else {
        String::new()
    };
    format!(
        r#"{{"campaign_id":"{campaign}","contact":{{"phone":"{}","name":"N{i}"}},"variables":{{"name":"N{i}"{coupon}}}}}"#,
        phone(i)
    )
}

pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &str,
) -> (i32, i64) {
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map(|d| (d.partition, d.offset))
        .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"))
}

/// Produces many records concurrently; returns (key, partition, offset) each.
pub async fn publish_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[(String, String)],
) -> Vec<(String, i32, i64)> {
    let mut out = Vec::with_capacity(records.len());
    for chunk in records.chunks(5_000) {
        let futs = chunk.iter().map(|(k, v)| {
            producer.send(
                FutureRecord::to(topic).key(k.as_str()).payload(v.as_str()),
                Duration::from_secs(30),
            )
        });
        for (res, (k, _)) in futures::future::join_all(futs).await.into_iter().zip(chunk) {
            let d = res.unwrap_or_else(|(e, _)| panic!("produce: {e}"));
            out.push((k.clone(), d.partition, d.offset));
        }
    }
    out
}

/// A campaign's live state inside `daemon`, once its dispatcher runs.
pub async fn live(
    daemon: &wadispatch::app::Daemon,
    id: &str,
) -> std::sync::Arc<wadispatch::dispatch::campaign::CampaignState> {
    let find = || daemon.env.campaigns.read().unwrap().get(id).cloned();
    wait_until(Duration::from_secs(30), "the campaign's dispatcher", || {
        find().is_some()
    })
    .await;
    find().unwrap()
}

/// Meta does something in the sandbox (`POST /sandbox/<what>` with `body`);
/// answers the HTTP status the daemon's webhook receiver gave, if a webhook
/// was posted.
pub async fn meta_does(sandbox: &str, what: &str, body: serde_json::Value) -> Option<u64> {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{sandbox}/sandbox/{what}"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["webhook_status"].as_u64()
}

/// The funnel of campaign `id` as the store has it now.
pub async fn summary(
    daemon: &wadispatch::app::Daemon,
    id: &str,
) -> wadispatch::report::CampaignSummary {
    wadispatch::report::CampaignSummary::compute(daemon.store.as_ref(), id)
        .await
        .unwrap()
}

/// Waits until `staged` contacts of `id` are staged and none is open.
pub async fn wait_done(
    daemon: &wadispatch::app::Daemon,
    id: &str,
    staged: u64,
    timeout: Duration,
) -> wadispatch::report::CampaignSummary {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let s = summary(daemon, id).await;
        if s.staged == staged && s.open() == 0 {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} not done: {:?}",
            s.contacts.by_state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `cond` holds, polling every 50 ms; panics with `what` after `timeout`.
pub async fn wait_until<F: FnMut() -> bool>(timeout: Duration, what: &str, mut cond: F) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One record read back: key, payload, headers.
pub type ReadRecord = (Option<String>, Option<String>, HashMap<String, String>);

/// Reads every record of a topic: (key, payload, headers).
pub fn read_all(brokers: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<ReadRecord> {
    read_while(brokers, topic, timeout, |read| read.len() < expected)
}

/// Reads `topic` from the beginning until `done` holds for what was read;
/// panics naming `what` when it does not within `timeout`. For a check
/// that something did not arrive: wait for what must arrive first.
#[allow(dead_code)] // not every test binary uses it
pub fn read_until(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&[ReadRecord]) -> bool,
) -> Vec<ReadRecord> {
    let out = read_while(brokers, topic, timeout, |read| !done(read));
    assert!(done(&out), "timed out after {timeout:?} waiting for {what}");
    out
}

fn read_while(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    mut more: impl FnMut(&[ReadRecord]) -> bool,
) -> Vec<ReadRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("reader-{topic}-{}", rand::random::<u32>()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while more(&out) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let mut headers = HashMap::new();
            if let Some(h) = m.headers() {
                for hd in h.iter() {
                    headers.insert(
                        hd.key.to_string(),
                        String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                m.payload().map(|p| String::from_utf8_lossy(p).into_owned()),
                headers,
            ));
        }
    }
    out
}

/// Offsets committed by `group` on `topic`, per partition (absent = none).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    got.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

/// Signs the webhooks the sandbox of a [`World`] posts to the daemon.
pub const WEBHOOK_SECRET: &str = "dispatch-test-secret";

/// Everything a daemon of a test runs against: a mock cluster, a sandbox
/// posting signed webhooks to the daemon's listener, and a config for them.
pub struct World {
    pub _dir: tempfile::TempDir,
    pub kafka: Kafka,
    pub sandbox: wadispatch::sandbox::SandboxHandle,
    pub config: Config,
}

impl World {
    /// `senders` are (phone_number_id, messages per second); the sandbox
    /// fails the recipients of `rules` and sends no random STOP replies, so
    /// every exclusion a test counts comes from its rules.
    pub async fn start(
        senders: &[(&str, f64)],
        rules: Vec<wadispatch::sandbox::FailureRule>,
    ) -> World {
        World::start_with(senders, rules, |_| {}).await
    }

    /// [`World::start`] with the sandbox's config changed by `tune`.
    pub async fn start_with(
        senders: &[(&str, f64)],
        rules: Vec<wadispatch::sandbox::FailureRule>,
        tune: impl FnOnce(&mut wadispatch::sandbox::SandboxConfig),
    ) -> World {
        use wadispatch::config::{Secret, SenderConfig};
        use wadispatch::sandbox::{Sandbox, SandboxConfig};
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path(), "");
        let kafka = Kafka::start(&config);
        let port = free_port();
        let mut sandbox_config = SandboxConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            per_number_mps: 0.0,
            webhook_url: Some(format!("http://127.0.0.1:{port}/webhook")),
            app_secret: WEBHOOK_SECRET.into(),
            failure_rules: rules,
            stop_share: 0.0,
            ..Default::default()
        };
        tune(&mut sandbox_config);
        let sandbox = Sandbox::start(sandbox_config).await.unwrap();
        config.kafka.brokers = kafka.brokers.clone();
        config.http.listen = format!("127.0.0.1:{port}");
        config.admin.listen = "127.0.0.1:0".into();
        config.whatsapp.api_base_url = sandbox.base_url();
        config.whatsapp.token = Some(Secret::new("t"));
        config.whatsapp.app_secret = Some(Secret::new(WEBHOOK_SECRET));
        for (id, rate) in senders {
            config.senders.insert(
                id.to_string(),
                SenderConfig {
                    per_second: *rate,
                    paused: false,
                    display_name: None,
                    display_phone_number: None,
                    auto_throughput: false,
                    max_per_second: None,
                    marketing_messages: None,
                },
            );
        }
        World {
            _dir: dir,
            kafka,
            sandbox,
            config,
        }
    }
}
