//! Ingest throughput: audience records from Kafka (librdkafka's in-process
//! mock cluster, over the Kafka protocol) into the embedded store.
//!
//! `cargo bench --bench ingest` (records via WADISPATCH_BENCH_RECORDS,
//! default 300,000). Prints records/s for the whole path: fetch, JSON decode,
//! phone validation, parameter freezing, durable staging, offset store.

use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use wadispatch::app::{self, Pipeline};
use wadispatch::config::Config;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: u32 = std::env::var("WADISPATCH_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}

async fn run(n: u32) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = MockCluster::new(1).unwrap();
    let mut config = Config::default();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.store.embedded.data_dir = dir.path().join("store");
    let t = &config.kafka.topics;
    cluster.create_topic(&t.campaigns, 1, 1).unwrap();
    // The mock broker keeps at most 5 MB or 100k messages per partition and
    // purges older segments: 32 partitions keep every record readable.
    cluster.create_topic(&t.audience, 32, 1).unwrap();
    cluster.create_topic(&t.audience_dlq, 1, 1).unwrap();

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()
        .unwrap();
    let spec = wadispatch::demo::PROMO_SPEC;
    producer
        .send(
            FutureRecord::to(&t.campaigns)
                .key("bday-2026-11")
                .payload(spec),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    eprintln!("producing {n} audience records …");
    let produce_started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..n {
        let phone = format!("+5255{:08}", 10_000_000 + i);
        let payload = format!(
            r#"{{"campaign_id":"bday-2026-11","contact":{{"phone":"{phone}","name":"Cliente {i}"}},"variables":{{"name":"Cliente {i}","discount":"20%","coupon":"C{i}"}},"tags":["vip"]}}"#
        );
        pending.push(
            producer
                .send_result(FutureRecord::to(&t.audience).key(&phone).payload(&payload))
                .unwrap(),
        );
        if pending.len() >= 50_000 {
            for d in futures::future::join_all(pending.drain(..)).await {
                d.unwrap().unwrap();
            }
        }
    }
    for d in futures::future::join_all(pending).await {
        d.unwrap().unwrap();
    }

    eprintln!(
        "produced in {:.1} s; ingesting …",
        produce_started.elapsed().as_secs_f64()
    );
    let store = app::open_store(&config).await.unwrap();
    let started = Instant::now();
    let pipeline = Pipeline::start(&config, store).await.unwrap();
    let mut first = None;
    let mut last_report = Instant::now();
    loop {
        let done = pipeline.stats.total();
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("  … {done} records ingested");
            last_report = Instant::now();
        }
        if done > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if done >= u64::from(n) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed();
    let steady = first.map(|f| f.elapsed()).unwrap_or(total);
    pipeline.shutdown(Duration::from_secs(10)).await;
    println!("ingest benchmark: {n} records, 32 partitions, embedded store (durability=process)");
    println!(
        "  including group join:   {:>10.0} records/s ({:.2} s)",
        f64::from(n) / total.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "  from the first record:  {:>10.0} records/s ({:.2} s)",
        f64::from(n) / steady.as_secs_f64(),
        steady.as_secs_f64()
    );
    let h = wadispatch::metrics::metrics()
        .store_operation_duration
        .with_label_values(&["stage_batch"]);
    println!(
        "  durable staging (store): {:.2} s in {} batches ({:.1} µs per record); the rest is fetch, decode, phone validation, freezing",
        h.get_sample_sum(),
        h.get_sample_count(),
        h.get_sample_sum() / f64::from(n) * 1e6
    );
    drop(producer);
    drop(cluster);
}
