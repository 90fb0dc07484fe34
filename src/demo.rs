//! `wadispatch demo`: the whole pipeline on embedded defaults.
//!
//! Starts an in-process Kafka mock cluster (librdkafka's, spoken to over the
//! real Kafka protocol), creates the topics, publishes the example campaign
//! specs, imports the example audience through the same code as
//! `audience import`, adds a few malformed records like a buggy upstream
//! would, runs the daemon's ingest into a fresh embedded store and prints what
//! happened to every record.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::app::{self, Pipeline};
use crate::config::{Config, LogFormat};
use crate::import;
use crate::report::CampaignSummary;

pub const PROMO_SPEC: &str = include_str!("../config/examples/promo.json");
pub const REMINDER_SPEC: &str = include_str!("../config/examples/reminder.json");
pub const AUDIENCE_CSV: &str = include_str!("../config/examples/audience.csv");

/// Records a careless upstream might publish: each must end in the DLQ with a
/// reason, never crash the consumer or block the partition.
const BAD_RECORDS: &[(&str, &str)] = &[
    ("+5215500000001", "this is not json"),
    (
        "+5215500000002",
        r#"{"contact":{"phone":"+5215500000002"}}"#,
    ),
    (
        "+5215500000003",
        r#"{"campaign_id":"black-friday-typo","contact":{"phone":"+5215500000003"}}"#,
    ),
];

pub struct DemoOptions {
    /// Keep the store here instead of a temporary directory.
    pub data_dir: Option<PathBuf>,
}

pub fn run(options: DemoOptions) -> anyhow::Result<()> {
    app::init_logging(LogFormat::Pretty, "error");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(options))
}

async fn run_async(options: DemoOptions) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data_dir = options.data_dir.unwrap_or_else(|| tmp.path().join("store"));

    println!("starting an in-process Kafka cluster (3 brokers)");
    let cluster = MockCluster::new(3).context("starting the Kafka mock cluster")?;
    let mut config = Config::default();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.store.embedded.data_dir = data_dir.clone();
    // The demo's misspelt campaign should reach the DLQ in seconds, not minutes.
    config.kafka.unknown_campaign_wait_secs = 3;
    let topics = &config.kafka.topics;
    for (topic, partitions) in [
        (&topics.campaigns, 1),
        (&topics.audience, 8),
        (&topics.audience_dlq, 1),
        (&topics.events, 3),
        (&topics.suppressions, 1),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }

    let producer: FutureProducer = crate::ingest::client_config(&config.kafka.brokers, &[])
        .create()
        .context("creating a producer")?;
    let mut campaign_ids = Vec::new();
    for spec in [PROMO_SPEC, REMINDER_SPEC] {
        let parsed: serde_json::Value = serde_json::from_str(spec)?;
        let id = parsed["id"].as_str().unwrap_or_default().to_string();
        producer
            .send(
                FutureRecord::to(&topics.campaigns).key(&id).payload(spec),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing campaign {id}: {e}"))?;
        println!("published campaign spec {id}");
        campaign_ids.push(id);
    }

    let mut produced = 0u64;
    for id in &campaign_ids {
        let (records, report) = import::parse_csv(
            AUDIENCE_CSV.as_bytes(),
            "config/examples/audience.csv",
            id,
            config.dispatch.default_region.as_deref(),
        )?;
        println!("\naudience import for {id}:\n{}", report.render(3));
        let pb = import::progress_bar(records.len() as u64, "producing");
        produced += import::produce(
            &records,
            &config.kafka.brokers,
            &topics.audience,
            &[],
            Some(&pb),
        )
        .await?;
        pb.finish();
    }
    for (key, payload) in BAD_RECORDS {
        producer
            .send(
                FutureRecord::to(&topics.audience)
                    .key(*key)
                    .payload(*payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing a malformed record: {e}"))?;
    }
    let expected = produced + BAD_RECORDS.len() as u64;
    println!(
        "\npublished {} malformed records to show the dead-letter path",
        BAD_RECORDS.len()
    );

    println!(
        "\ningesting into the embedded store at {}",
        data_dir.display()
    );
    let store = app::open_store(&config)?;
    let pipeline = Pipeline::start(&config, store.clone()).await?;
    let pb = import::progress_bar(expected, "ingesting");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    loop {
        let done = pipeline.stats.total();
        pb.set_position(done);
        if done >= expected {
            break;
        }
        if Instant::now() > deadline {
            pb.abandon();
            anyhow::bail!("ingest stalled at {done} of {expected} records after 180 s; run with RUST_LOG=info to see why");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pb.finish();
    let elapsed = started.elapsed();
    let stats = pipeline.stats.clone();
    pipeline.shutdown(Duration::from_secs(10)).await;

    use std::sync::atomic::Ordering::Relaxed;
    println!("\n=== ingest summary ({:.1} s) ===", elapsed.as_secs_f64());
    println!("{:<34}{:>8}", "audience records consumed", stats.total());
    println!(
        "{:<34}{:>8}",
        "  staged (new contacts, pending)",
        stats.staged.load(Relaxed)
    );
    println!(
        "{:<34}{:>8}",
        "  staged as excluded",
        stats.excluded.load(Relaxed)
    );
    println!(
        "{:<34}{:>8}",
        "  duplicates collapsed",
        stats.duplicate.load(Relaxed)
    );
    println!("{:<34}{:>8}", "  dead-lettered", stats.dlq.load(Relaxed));
    for id in &campaign_ids {
        let s = CampaignSummary::compute(store.as_ref(), id).await?;
        println!("\ncampaign {id}");
        println!("{:<34}{:>8}", "  contacts staged", s.staged);
        println!(
            "{:<34}{:>8}",
            "  pending (ready to send)",
            s.count(crate::domain::DispatchState::Pending)
        );
        println!("{:<34}{:>8}", "  excluded", s.excluded());
        for (reason, n) in &s.excluded_by_reason {
            println!("{:<34}{:>8}", format!("    {reason}"), n);
        }
    }
    println!(
        "\ndead-letter topic {} ({} records), `error` header of each:",
        config.kafka.topics.audience_dlq,
        stats.dlq.load(Relaxed)
    );
    for (key, error) in read_dead_letters(&config, stats.dlq.load(Relaxed) as usize)? {
        println!("  key {key}: {error}");
    }
    // Clients first, cluster last: a client outliving its brokers only logs
    // connection errors.
    drop(producer);
    drop(cluster);
    Ok(())
}

fn read_dead_letters(config: &Config, expected: usize) -> anyhow::Result<Vec<(String, String)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = crate::ingest::client_config(&config.kafka.brokers, &[])
        .set("group.id", "wadispatch-demo-dlq-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(
        &config.kafka.topics.audience_dlq,
        0,
        rdkafka::Offset::Beginning,
    )?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            let error = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "error"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            out.push((key, error));
        }
    }
    Ok(out)
}
