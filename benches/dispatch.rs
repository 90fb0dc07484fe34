//! Dispatch throughput and pacing accuracy against the sandbox, in-process
//! (mock Kafka cluster, embedded store, sandbox over real HTTP on loopback).
//!
//! `cargo bench --bench dispatch`. Scenarios:
//! 1. unpaced: WADISPATCH_BENCH_CONTACTS (default 50,000) contacts over 20
//!    senders with no effective limit: claim + HTTP + outcome write; and the
//!    raw floor in the same run: plain POSTs of the same payloads to the
//!    sandbox at the same concurrency.
//! 2. pacing: 10 senders at 50 msg/s for WADISPATCH_BENCH_PACING_SECS
//!    (default 20) against a sandbox limited to 50 msg/s per number: achieved
//!    rate per sender and the count of 130429.

use std::time::{Duration, Instant};

use futures::StreamExt;
use wadispatch::app::{self, Daemon};
use wadispatch::config::{CampaignOverride, Config, SenderConfig};
use wadispatch::sandbox::{Sandbox, SandboxConfig};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: u32 = std::env::var("WADISPATCH_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let secs: u64 = std::env::var("WADISPATCH_BENCH_PACING_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    app::system().block_on(async move {
        unpaced(n).await;
        pacing(secs).await;
    });
}

fn phone(i: u32) -> String {
    format!("+5255{:08}", 10_000_000 + i)
}

async fn setup(
    senders: &[(String, f64)],
    campaign_rate: f64,
    sandbox_mps: f64,
    contacts: u32,
) -> (
    tempfile::TempDir,
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    wadispatch::sandbox::SandboxHandle,
    Config,
) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let mut config = Config::default();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.store.embedded.data_dir = dir.path().join("store");
    config.http.listen = "127.0.0.1:0".into();
    let t = &config.kafka.topics;
    cluster.create_topic(&t.campaigns, 1, 1).unwrap();
    cluster.create_topic(&t.audience, 32, 1).unwrap();
    cluster.create_topic(&t.audience_dlq, 1, 1).unwrap();
    cluster.create_topic(&t.events, 1, 1).unwrap();
    // Webhooks off: this measures the send path (claim, HTTP, outcome).
    let sandbox = Sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        per_number_mps: sandbox_mps,
        pair_interval_secs: 0.0,
        failure_rules: vec![],
        webhook_url: None,
        ..Default::default()
    })
    .await
    .unwrap();
    config.whatsapp.api_base_url = sandbox.base_url();
    config.whatsapp.token = Some(wadispatch::config::Secret::new("bench"));
    config.dispatch.max_in_flight_per_sender = 64;
    for (id, rate) in senders {
        config.senders.insert(
            id.clone(),
            SenderConfig {
                per_second: *rate,
                paused: false,
                display_name: None,
            },
        );
    }
    config.campaigns.insert(
        "bench".into(),
        CampaignOverride {
            per_second: Some(campaign_rate),
            per_hour: None,
            paused: false,
        },
    );
    let ids: Vec<String> = senders.iter().map(|(id, _)| format!("\"{id}\"")).collect();
    let spec = format!(
        r#"{{"id":"bench","state":"active","senders":[{}],"exclusive":false,"template":{{"name":"promo","language":"es_MX","body":["{{{{name}}}}"]}}}}"#,
        ids.join(",")
    );
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "20")
        .create()
        .unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(&t.campaigns)
                .key("bench")
                .payload(&spec),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    let mut pending = Vec::new();
    for i in 0..contacts {
        let p = phone(i);
        let v = format!(r#"{{"campaign_id":"bench","contact":{{"phone":"{p}","name":"N{i}"}}}}"#);
        pending.push(
            producer
                .send_result(
                    rdkafka::producer::FutureRecord::to(&t.audience)
                        .key(&p)
                        .payload(&v),
                )
                .unwrap(),
        );
    }
    for d in futures::future::join_all(pending).await {
        d.unwrap().unwrap();
    }
    (dir, cluster, sandbox, config)
}

async fn unpaced(n: u32) {
    let senders: Vec<(String, f64)> = (0..20)
        .map(|i| (format!("{}", 7000 + i), 100_000.0))
        .collect();
    let (_dir, _cluster, sandbox, config) = setup(&senders, 100_000.0, 0.0, n).await;
    let store = app::open_store(&config).await.unwrap();
    let cpu0 = cpu_seconds();
    let daemon = Daemon::start(config.clone(), store).await.unwrap();
    // Wait for staging, then time the sends (first accepted → last).
    while daemon.pipeline.stats.total() < u64::from(n) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut first: Option<Instant> = None;
    let mut last_change = Instant::now();
    let mut last = 0;
    loop {
        let a = sandbox.stats().accepted;
        if a > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if a != last {
            last = a;
            last_change = Instant::now();
        }
        if a >= u64::from(n) || last_change.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = first.map(|f| f.elapsed()).unwrap_or_default();
    let cpu = cpu_seconds() - cpu0;
    let accepted = sandbox.stats().accepted;
    daemon.shutdown(Duration::from_secs(10)).await;
    let rate = accepted as f64 / elapsed.as_secs_f64();

    // Raw floor: the same payload shape, plain POSTs, same concurrency.
    let concurrency = 64 * senders.len();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let url = format!("{}/v23.0/7000/messages", sandbox.base_url());
    let started = Instant::now();
    let raw_n = n as usize;
    futures::stream::iter(0..raw_n)
        .map(|i| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let body = format!(
                    r#"{{"messaging_product":"whatsapp","to":"{}","type":"template","template":{{"name":"promo","language":{{"code":"es_MX"}},"components":[{{"type":"body","parameters":[{{"type":"text","text":"N{i}"}}]}}]}},"biz_opaque_callback_data":"raw|{i}"}}"#,
                    phone(1_000_000 + i as u32)
                );
                let r = http.post(&url).bearer_auth("bench").header("content-type", "application/json").body(body).send().await.unwrap();
                assert!(r.status().is_success());
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await;
    let raw = raw_n as f64 / started.elapsed().as_secs_f64();
    println!("dispatch benchmark (unpaced): {accepted} messages over 20 senders, embedded store, sandbox on loopback");
    println!(
        "  wadispatch:   {rate:>10.0} messages/s ({:.2} s), CPU {:.2} s per 1,000 messages",
        elapsed.as_secs_f64(),
        cpu / accepted.max(1) as f64 * 1000.0
    );
    println!("  raw floor:    {raw:>10.0} POSTs/s (plain HTTP, same concurrency {concurrency})");
    println!("  ratio:        {:>10.2} x (raw / wadispatch)", raw / rate);
    sandbox.stop().await;
}

async fn pacing(secs: u64) {
    let rate = 50.0;
    let senders: Vec<(String, f64)> = (0..10).map(|i| (format!("{}", 8000 + i), rate)).collect();
    let contacts = (rate as u32) * 10 * (secs as u32 + 5);
    let (_dir, _cluster, sandbox, config) = setup(&senders, 100_000.0, rate, contacts).await;
    let store = app::open_store(&config).await.unwrap();
    let daemon = Daemon::start(config.clone(), store).await.unwrap();
    while sandbox.stats().accepted == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Skip the first second (start-up), then measure a steady window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = sandbox.stats();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = sandbox.stats();
    let window = t0.elapsed().as_secs_f64();
    daemon.shutdown(Duration::from_secs(10)).await;
    let mut devs: Vec<f64> = senders
        .iter()
        .map(|(id, _)| {
            let a = after.per_number.get(id).copied().unwrap_or(0)
                - before.per_number.get(id).copied().unwrap_or(0);
            (a as f64 / window - rate) / rate * 100.0
        })
        .collect();
    devs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let throttled = after.rejected_by_code.get(&130429).copied().unwrap_or(0);
    println!("pacing benchmark: 10 senders at {rate} msg/s for {window:.1} s, sandbox limit {rate} msg/s per number");
    println!(
        "  deviation from configured rate: min {:+.2}%  median {:+.2}%  max {:+.2}%",
        devs[0],
        devs[devs.len() / 2],
        devs[devs.len() - 1]
    );
    println!("  130429 answers: {throttled}");
    sandbox.stop().await;
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc (Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}
