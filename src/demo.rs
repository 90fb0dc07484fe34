//! `wadispatch demo`: the whole pipeline on embedded defaults.
//!
//! Starts an in-process Kafka mock cluster (librdkafka's, spoken to over the
//! real Kafka protocol), creates the topics, publishes the example campaign
//! specs, imports the example audience through the same code as
//! `audience import`, adds a few malformed records like a buggy upstream
//! would, runs the daemon's ingest into a fresh embedded store and prints what
//! happened to every record.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::app;
use crate::config::{Config, LogFormat};
use crate::import;
use crate::report::CampaignSummary;

mod conversions;
mod limits;
mod templates;

pub const PROMO_SPEC: &str = include_str!("../config/examples/promo.json");
pub const REMINDER_SPEC: &str = include_str!("../config/examples/reminder.json");
pub const JOURNEY_SPEC: &str = include_str!("../config/examples/journey.json");
pub const CART_SPEC: &str = include_str!("../config/examples/cart-abandoned.json");
pub const TEST_SPEC: &str = include_str!("../config/examples/promo-test.json");
pub const SEGMENT_SPEC: &str = include_str!("../config/examples/vip-segment.json");

/// Contacts of the example audience the test campaign is given (it sends
/// to its three test recipients only), and those the segmented campaign is
/// given, tagged by [`tag_for_segment`].
const TEST_AUDIENCE: usize = 300;
const SEGMENT_AUDIENCE: usize = 2_000;
const TEST_ID: &str = "bday-2026-11-test";
const SEGMENT_ID: &str = "vip-points-2026-12";

/// The promo campaign of the example specs and its template, which Meta
/// pauses for a few seconds in the demo.
const PROMO_ID: &str = "bday-2026-11";
const PROMO_TEMPLATE: (&str, &str) = ("birthday_promo", "es_MX");

/// Contacts of the example audience who abandon carts in the demo, and the
/// delay of its reminder instead of the example's hour.
const CART_CONTACTS: usize = 1_000;
const DEMO_CART_DELAY: &str = "10s";

/// Contacts of the example audience the journey campaign gets: its
/// follow-up doubles the sends, and the demo should stay short.
const JOURNEY_CONTACTS: usize = 2_000;

/// The follow-up's delay in the demo, instead of the example's three days.
const DEMO_FOLLOW_UP_DELAY: &str = "20s";

/// The SMS sender id and delivery report password of the demo.
const DEMO_SMS_SENDER: &str = "WADEMO";
const DEMO_SMS_REPORT_PASSWORD: &str = "demo-report-password";
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

/// Sender ids of the example specs and the rates the demo gives them.
const DEMO_SENDERS: [(&str, f64); 3] = [
    ("106540352242922", 250.0),
    ("106540352242923", 250.0),
    ("106540352242924", 300.0),
];

pub fn run(options: DemoOptions) -> anyhow::Result<()> {
    app::init_logging(LogFormat::Pretty, "error");
    println!("starting an in-process Kafka cluster (3 brokers) and the WhatsApp sandbox");
    let cluster = MockCluster::new(3).context("starting the Kafka mock cluster")?;
    // The System (and every client its actors hold) ends before the
    // brokers do, so no client is left talking to a closed port.
    let result = {
        let system = app::system();
        system.block_on(run_async(&cluster, options))
    };
    drop(cluster);
    result
}

/// A free loopback port for the webhook listener, which the sandbox must know
/// before the daemon binds it. Searched below the kernel's ephemeral range:
/// a released `bind(0)` port can go to one of the demo's own outgoing
/// connections (Kafka clients, the sandbox) in the moment before the daemon
/// binds it.
fn free_port() -> anyhow::Result<u16> {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    (0..SPAN)
        .map(|n| (LOW + (start + n) % SPAN) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no free loopback port between {LOW} and {}: close some listeners and run the demo again",
                LOW + SPAN
            )
        })
}

/// The journey spec with its follow-up due seconds after the primary, not
/// days.
fn journey_spec_for_demo() -> anyhow::Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(JOURNEY_SPEC)?;
    if let Some(steps) = v.get_mut("steps").and_then(|s| s.as_array_mut()) {
        for when in steps.iter_mut().filter_map(|s| s.get_mut("when")) {
            if when.get("delay").is_some() {
                when["delay"] = DEMO_FOLLOW_UP_DELAY.into();
            }
        }
    }
    Ok(serde_json::to_string(&v)?)
}

/// The cart reminder due seconds after the cart was left, at any hour.
fn cart_spec_for_demo() -> anyhow::Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(CART_SPEC)?;
    v["trigger"]["delay"] = DEMO_CART_DELAY.into();
    if let Some(s) = v.get_mut("schedule").and_then(|s| s.as_object_mut()) {
        s.remove("quiet_hours");
    }
    Ok(serde_json::to_string(&v)?)
}

/// What the demo's cart events are meant to do, counted as they are made.
#[derive(Debug, Default)]
struct CartBurst {
    records: Vec<(String, String)>,
    events: u64,
    repeats: u64,
    carts: u64,
    cancels: u64,
    cancels_ahead: u64,
}

/// A burst of cart-abandonment events from the first contacts of the
/// example audience: one to three carts each, one event in five sent twice
/// (a retried checkout webhook), three carts in ten followed by their
/// order (one such order in four arriving before its cart's event), and
/// one order event the campaign does not cancel on (a dead letter).
fn cart_burst(records: &[import::KeyedRecord], campaign: &str) -> CartBurst {
    let mut burst = CartBurst::default();
    let now = chrono::Utc::now().to_rfc3339();
    for (i, r) in records.iter().take(CART_CONTACTS).enumerate() {
        let name = r.record.contact.name.clone().unwrap_or_default();
        for cart in 0..1 + i % 3 {
            let occurrence = format!("cart-{i:04}-{cart}");
            let event = serde_json::json!({
                "campaign_id": campaign, "contact": {"phone": r.key, "name": name},
                "occurrence": occurrence, "event_at": now,
                "variables": {"name": name, "cart_total": format!("${}.00", 300 + 50 * cart),
                              "cart_token": occurrence},
            })
            .to_string();
            let order = serde_json::json!({
                "campaign_id": campaign, "contact": r.key, "occurrence": occurrence,
                "event": "order_placed",
            })
            .to_string();
            burst.carts += 1;
            let ordered = (i * 7 + cart * 3) % 10 < 3;
            let ahead = ordered && burst.cancels % 4 == 3;
            if ahead {
                burst.records.push((r.key.clone(), order.clone()));
            }
            burst.records.push((r.key.clone(), event.clone()));
            burst.events += 1;
            if (i + cart) % 5 == 0 {
                burst.records.push((r.key.clone(), event));
                burst.events += 1;
                burst.repeats += 1;
            }
            if ordered && !ahead {
                burst.records.push((r.key.clone(), order));
            }
            burst.cancels += u64::from(ordered);
            burst.cancels_ahead += u64::from(ahead);
        }
    }
    if let Some(r) = records.first() {
        let shipped = serde_json::json!({
            "campaign_id": campaign, "contact": r.key, "occurrence": "cart-0000-0",
            "event": "order_shipped",
        });
        burst.records.push((r.key.clone(), shipped.to_string()));
    }
    burst
}

/// The promo spec without its quiet hours, so the demo sends at any hour.
fn promo_spec_for_demo() -> anyhow::Result<String> {
    let mut v: serde_json::Value = serde_json::from_str(PROMO_SPEC)?;
    if let Some(s) = v.get_mut("schedule").and_then(|s| s.as_object_mut()) {
        s.remove("quiet_hours");
    }
    Ok(serde_json::to_string(&v)?)
}

async fn run_async(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    options: DemoOptions,
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data_dir = options.data_dir.unwrap_or_else(|| tmp.path().join("store"));
    let webhook_port = free_port()?;
    let sandbox = crate::sandbox::Sandbox::start(crate::sandbox::SandboxConfig {
        listen: "127.0.0.1:0".parse()?,
        per_number_mps: 300.0,
        webhook_url: Some(format!("http://127.0.0.1:{webhook_port}/webhook")),
        app_secret: DEMO_APP_SECRET.into(),
        // Meta prices each message by its template's category.
        categories: template_categories(),
        ..Default::default()
    })
    .await
    .context("starting the sandbox")?;
    let config = demo_config(cluster, &data_dir, &sandbox.base_url(), webhook_port);
    create_topics(cluster, &config)?;

    let producer: FutureProducer = crate::ingest::client_config(&config.kafka.brokers, &[])
        .create()
        .context("creating a producer")?;
    let campaign_ids = publish_specs(&producer, &config).await?;
    let expected = publish_audiences(&producer, &config, &campaign_ids).await?;

    println!(
        "\nrunning wadispatch: ingest into {}, dispatch to the sandbox, webhooks back",
        data_dir.display()
    );
    let store = app::open_store(&config).await?;
    let daemon = app::Daemon::start(config.clone(), store.clone()).await?;
    let started = Instant::now();
    let limit = limits::state_limit(&sandbox.base_url(), &daemon.env.portfolio)
        .await
        .context("the demo's messaging limit")?;
    let published = Arc::new(conversions::Published::default());
    let stream = tokio::spawn(conversions::run(
        producer.clone(),
        config.kafka.topics.conversions.clone(),
        store.clone(),
        JOURNEY_ID.to_string(),
        CART_ID.to_string(),
        cart_burst(&demo_audience(CART_ID, &config)?, CART_ID).carts,
        published.clone(),
    ));
    let pause = {
        let campaigns = daemon.env.campaigns.clone();
        let live = move || campaigns.read().ok()?.get(PROMO_ID).cloned();
        let (store, base) = (store.clone(), sandbox.base_url());
        tokio::spawn(async move {
            templates::pause_and_approve(base, store, live, PROMO_ID, PROMO_TEMPLATE).await
        })
    };
    let settled = wait_until_settled(&daemon, &sandbox, &campaign_ids, expected, &published).await;
    if !published
        .finished
        .load(std::sync::atomic::Ordering::Acquire)
    {
        stream.abort();
    }
    if let Ok(Err(e)) = stream.await {
        anyhow::bail!("the demo's conversion stream failed: {e}");
    }
    settled?;
    let pause = pause
        .await
        .context("the demo's template pause")?
        .context("the demo's template pause")?;
    let elapsed = started.elapsed();
    let stats = daemon.pipeline.stats.clone();
    let credited = daemon.pipeline.conversions.clone().unwrap_or_default();
    daemon.shutdown(Duration::from_secs(10)).await;

    print_results(
        &config,
        store.as_ref(),
        &sandbox,
        &stats,
        &campaign_ids,
        (&published, &credited),
    )
    .await?;
    limit.print();
    pause.print(PROMO_ID);
    println!("\nfinished in {:.1} s", elapsed.as_secs_f64());
    sandbox.stop().await;
    drop(producer);
    Ok(())
}

const DEMO_APP_SECRET: &str = "demo-app-secret";

/// The daemon's config for the demo: the mock cluster, the store in
/// `data_dir`, the sandbox as the Cloud API, webhooks on `webhook_port`,
/// the demo senders, and faster rates than the example specs' own.
fn demo_config(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    data_dir: &std::path::Path,
    api_base_url: &str,
    webhook_port: u16,
) -> Config {
    let mut config = Config::default();
    config.kafka.brokers = cluster.bootstrap_servers();
    config.store.embedded.data_dir = data_dir.to_path_buf();
    // The demo's misspelt campaign should reach the DLQ in seconds, not minutes.
    config.kafka.unknown_campaign_wait_secs = 3;
    config.http.listen = format!("127.0.0.1:{webhook_port}");
    // Loopback, any free port: a demo must not collide with a running daemon.
    config.admin.listen = "127.0.0.1:0".into();
    config.whatsapp.api_base_url = api_base_url.to_string();
    config.whatsapp.token = Some(crate::config::Secret::new("demo-token"));
    config.whatsapp.app_secret = Some(crate::config::Secret::new(DEMO_APP_SECRET));
    // The sandbox's SMS API is the journey's SMS provider; its delivery
    // reports come back to the webhook listener.
    config.sms.api_base_url = Some(api_base_url.to_string());
    config.sms.api_key = Some(crate::config::Secret::new("demo-sms-key"));
    config.sms.default_sender = Some(DEMO_SMS_SENDER.into());
    config.sms.report_url = Some(format!("http://127.0.0.1:{webhook_port}/sms/reports"));
    config.sms.report_password = Some(crate::config::Secret::new(DEMO_SMS_REPORT_PASSWORD));
    for (id, rate) in DEMO_SENDERS {
        config.senders.insert(
            id.to_string(),
            crate::config::SenderConfig {
                per_second: rate,
                paused: false,
                display_name: None,
                display_phone_number: None,
                auto_throughput: false,
                max_per_second: None,
                marketing_messages: None,
            },
        );
    }
    // Operator overrides: the example specs pace for production (20/s and
    // 36,000/h); the demo runs them faster.
    for (id, rate) in [
        ("bday-2026-11", 400.0),
        ("payment-reminder-2026-11", 300.0),
        ("collections-journey-2026-12", 300.0),
        ("cart-abandoned", 300.0),
        (SEGMENT_ID, 300.0),
    ] {
        config.campaigns.insert(
            id.to_string(),
            crate::config::CampaignOverride {
                per_second: Some(rate),
                per_hour: None,
                paused: false,
                marketing_messages: None,
            },
        );
    }
    config.pricing = Some(demo_rate_card());
    config
}

/// The demo's rate card: example prices per message in USD, not Meta's
/// (operators copy theirs from Meta's rate card into `[pricing]`).
fn demo_rate_card() -> crate::domain::RateCard {
    let rates = |mx: f64, rest: f64| {
        std::collections::BTreeMap::from([("MX".to_string(), mx), ("*".to_string(), rest)])
    };
    crate::domain::RateCard {
        currency: "USD".into(),
        rates: std::collections::BTreeMap::from([
            ("marketing".to_string(), rates(0.0436, 0.025)),
            ("utility".to_string(), rates(0.0085, 0.004)),
        ]),
    }
}

/// The category of every template the example specs send, as Meta would
/// know it from the template's definition.
fn template_categories() -> std::collections::HashMap<String, crate::sandbox::PricingCategory> {
    fn walk(
        v: &serde_json::Value,
        out: &mut std::collections::HashMap<String, crate::sandbox::PricingCategory>,
    ) {
        match v {
            serde_json::Value::Object(o) => {
                if let (Some(name), Some(category)) = (
                    o.get("name").and_then(|n| n.as_str()),
                    o.get("category").cloned(),
                ) {
                    if let Ok(c) = serde_json::from_value(category) {
                        out.insert(name.to_string(), c);
                    }
                }
                o.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = std::collections::HashMap::new();
    for spec in [
        PROMO_SPEC,
        REMINDER_SPEC,
        JOURNEY_SPEC,
        CART_SPEC,
        TEST_SPEC,
        SEGMENT_SPEC,
    ] {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(spec) {
            walk(&v, &mut out);
        }
    }
    out
}

fn create_topics(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    config: &Config,
) -> anyhow::Result<()> {
    let topics = &config.kafka.topics;
    for (topic, partitions) in [
        (&topics.campaigns, 1),
        (&topics.audience, 8),
        (&topics.audience_dlq, 1),
        (&topics.events, 3),
        (&topics.suppressions, 1),
        (&topics.conversions, 2),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    Ok(())
}

/// Publishes the two example campaigns; answers their ids.
async fn publish_specs(producer: &FutureProducer, config: &Config) -> anyhow::Result<Vec<String>> {
    let mut campaign_ids = Vec::new();
    for spec in [
        promo_spec_for_demo()?,
        REMINDER_SPEC.to_string(),
        journey_spec_for_demo()?,
        cart_spec_for_demo()?,
        TEST_SPEC.to_string(),
        SEGMENT_SPEC.to_string(),
    ] {
        let parsed: serde_json::Value = serde_json::from_str(&spec)?;
        let id = parsed["id"].as_str().unwrap_or_default().to_string();
        producer
            .send(
                FutureRecord::to(&config.kafka.topics.campaigns)
                    .key(&id)
                    .payload(&spec),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing campaign {id}: {e}"))?;
        println!("published campaign spec {id}");
        campaign_ids.push(id);
    }
    println!("  (quiet hours of the promo removed so the demo sends at any hour;");
    println!("   the journey's follow-up due {DEMO_FOLLOW_UP_DELAY} after a silent primary instead of 3 days;");
    println!("   the cart reminder due {DEMO_CART_DELAY} after the cart was left instead of an hour, at any hour)");
    Ok(campaign_ids)
}

/// Imports the example audience for each campaign, as `audience import`
/// does, and a few malformed records; answers the records published.
async fn publish_audiences(
    producer: &FutureProducer,
    config: &Config,
    campaign_ids: &[String],
) -> anyhow::Result<u64> {
    let topics = &config.kafka.topics;
    let mut produced = 0u64;
    for id in campaign_ids {
        let (mut records, report) = import::parse_csv(
            AUDIENCE_CSV.as_bytes(),
            "config/examples/audience.csv",
            id,
            config.dispatch.default_region.as_deref(),
        )?;
        if is_triggered(id) {
            produced += publish_cart_burst(producer, config, &cart_burst(&records, id)).await?;
            continue;
        }
        println!("\naudience import for {id}:\n{}", report.render(3));
        if is_journey(id) {
            records.truncate(JOURNEY_CONTACTS);
            println!("  (the journey campaign gets the first {JOURNEY_CONTACTS} of them)");
        }
        if id == TEST_ID {
            records.truncate(TEST_AUDIENCE);
            println!("  (the test campaign gets the first {TEST_AUDIENCE}: it sends to its 3 test_recipients only)");
        }
        if id == SEGMENT_ID {
            records.truncate(SEGMENT_AUDIENCE);
            for (i, r) in records.iter_mut().enumerate() {
                r.record.tags = tag_for_segment(i);
            }
            println!("  (the segmented campaign gets the first {SEGMENT_AUDIENCE}, tagged as a CRM would: vip, churned, a customer_id)");
        }
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
    println!(
        "\npublished {} malformed records to show the dead-letter path",
        BAD_RECORDS.len()
    );
    Ok(produced + BAD_RECORDS.len() as u64)
}

/// Publishes the cart events and orders on the audience topic, each keyed by
/// its contact; answers the records published.
async fn publish_cart_burst(
    producer: &FutureProducer,
    config: &Config,
    burst: &CartBurst,
) -> anyhow::Result<u64> {
    println!(
        "\ncart events for the triggered campaign: {} carts of {CART_CONTACTS} contacts in {} events ({} sent twice), {} orders placed ({} before their cart's event), 1 order_shipped",
        burst.carts, burst.events, burst.repeats, burst.cancels, burst.cancels_ahead
    );
    let pb = import::progress_bar(burst.records.len() as u64, "producing");
    for chunk in burst.records.chunks(1_000) {
        let sends = chunk.iter().map(|(key, value)| {
            producer.send(
                FutureRecord::to(&config.kafka.topics.audience)
                    .key(key)
                    .payload(value),
                Duration::from_secs(10),
            )
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(e, _)| anyhow::anyhow!("publishing a cart event: {e}"))?;
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    Ok(burst.records.len() as u64)
}

/// Shows ingest and each campaign's progress until every record is taken,
/// no contact is pending or claimed, and the sandbox has sent no webhook for
/// 1.5 s; fails after `WADISPATCH_DEMO_TIMEOUT` seconds (300).
async fn wait_until_settled(
    daemon: &app::Daemon,
    sandbox: &crate::sandbox::SandboxHandle,
    campaign_ids: &[String],
    expected: u64,
    published: &conversions::Published,
) -> anyhow::Result<()> {
    let timeout = std::env::var("WADISPATCH_DEMO_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let store = daemon.store.as_ref();
    let bars = indicatif::MultiProgress::new();
    let ingest_bar = bars.add(import::progress_bar(expected, "ingest"));
    let campaign_bars: Vec<_> = campaign_ids
        .iter()
        .map(|id| {
            bars.add(import::progress_bar(
                0,
                &id.chars().take(12).collect::<String>(),
            ))
        })
        .collect();
    let mut settled_since: Option<(u64, Instant)> = None;
    loop {
        let consumed = daemon.pipeline.stats.total();
        ingest_bar.set_position(consumed);
        let mut open = 0;
        for (id, bar) in campaign_ids.iter().zip(&campaign_bars) {
            let s = CampaignSummary::compute(store, id).await?;
            // Deferred contacts (131049) wait a day for their one retry:
            // they are settled for the demo's purpose.
            let waiting = s.count(crate::domain::DispatchState::Pending)
                + s.count(crate::domain::DispatchState::Claimed)
                + s.waiting;
            bar.set_length(s.staged);
            bar.set_position(s.staged - waiting);
            open += waiting;
        }
        // Every conversion published is read (recorded, a duplicate,
        // credited to none, or dead-lettered).
        let conversions_done = published
            .finished
            .load(std::sync::atomic::Ordering::Acquire)
            && daemon.pipeline.conversions.as_ref().is_some_and(|c| {
                c.handled() >= published.records.load(std::sync::atomic::Ordering::Relaxed)
            });
        if consumed >= expected && open == 0 && conversions_done {
            // Sends are done; let the last status webhooks arrive.
            let hooks = sandbox.stats().webhooks_sent;
            match settled_since {
                Some((n, t)) if n == hooks && t.elapsed() > Duration::from_millis(1500) => break,
                Some((n, _)) if n == hooks => {}
                _ => settled_since = Some((hooks, Instant::now())),
            }
        }
        if Instant::now() > deadline {
            for id in campaign_ids {
                let s = CampaignSummary::compute(store, id).await?;
                eprintln!("{id}: {:?}", s.contacts.by_state);
            }
            anyhow::bail!("the demo did not finish within {timeout} s (ingested {consumed} of {expected}, {open} contacts open); run with RUST_LOG=info to see why, or raise WADISPATCH_DEMO_TIMEOUT");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ingest_bar.finish();
    for b in &campaign_bars {
        b.finish();
    }
    Ok(())
}

/// The demo's closing report: ingest counts, each campaign's funnel, what
/// the sandbox saw, the dead letters, and where the CSV reports are.
async fn print_results(
    config: &Config,
    store: &dyn crate::store::Store,
    sandbox: &crate::sandbox::SandboxHandle,
    stats: &crate::ingest::audience::IngestStats,
    campaign_ids: &[String],
    (published, credited): (
        &conversions::Published,
        &crate::ingest::conversions::ConversionStats,
    ),
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    println!("\n=== ingest ===");
    println!("{:<34}{:>8}", "audience records consumed", stats.total());
    for (what, n) in [
        ("  staged (new contacts, pending)", &stats.staged),
        ("  staged as excluded", &stats.excluded),
        ("  duplicates collapsed", &stats.duplicate),
        ("  dead-lettered", &stats.dlq),
    ] {
        println!("{what:<34}{:>8}", n.load(Relaxed));
    }
    let mut specs = Vec::new();
    for id in campaign_ids {
        let mut s = CampaignSummary::compute(store, id).await?;
        let journey = store
            .get_campaign(id)
            .await?
            .and_then(|c| c.spec.journey().ok());
        if let Some(card) = &config.pricing {
            s.price(card);
        }
        let spec = store.get_campaign(id).await?.map(|c| c.spec);
        print_funnel(id, &s);
        if let Some(spec) = &spec {
            if spec.kind == crate::domain::CampaignKind::Test {
                println!(
                    "test campaign: sends to its test_recipients only ({}); reported apart (kind test)",
                    spec.test_recipients.join(", ")
                );
            }
            if let Some(segment) = &spec.audience {
                println!("segment: {}", segment.describe());
            }
        }
        if is_triggered(id) {
            print_trigger(store, id).await?;
        }
        if let Some(goal) = store.get_campaign(id).await?.and_then(|c| c.spec.goal()) {
            print_goal(&goal, &s);
        }
        if let Some(j) = journey.as_ref().filter(|j| j.has_steps()) {
            println!();
            for line in crate::report::render_steps(&s.steps_view(Some(j))).lines() {
                println!("  {line}");
            }
        }
        specs.push(spec);
    }
    println!(
        "\n=== conversions ({}) ===",
        config.kafka.topics.conversions
    );
    println!(
        "published {} records: {} payments after a collections reminder, {} purchases after a cart reminder, {} sent twice, {} for no campaign, {} unreadable",
        published.records.load(Relaxed),
        published.payments.load(Relaxed),
        published.purchases.load(Relaxed),
        published.repeats.load(Relaxed),
        published.orphans.load(Relaxed),
        published.unreadable.load(Relaxed),
    );
    println!(
        "read: {} credited to a journey, {} duplicates (the journey had its conversion), {} credited to no campaign, {} dead-lettered",
        credited.recorded.load(Relaxed),
        credited.duplicate.load(Relaxed),
        credited.unattributed.load(Relaxed),
        credited.dead_lettered.load(Relaxed),
    );
    let sb = sandbox.stats();
    println!(
        "\nsandbox: {} requests, {} accepted, rejected by code {:?}, recipients that got the same campaign (or step) twice: {}",
        sb.requests, sb.accepted, sb.rejected_by_code, sb.duplicate_recipients
    );
    println!(
        "sandbox SMS: {} requests, {} accepted, {} delivery reports posted, destinations that got the same step twice: {}",
        sb.sms.requests, sb.sms.accepted, sb.sms.reports_sent, sb.sms.duplicate_recipients
    );
    println!(
        "\ndead-letter topic {} ({} records), `error` header of each:",
        config.kafka.topics.audience_dlq,
        stats.dlq.load(Relaxed) + credited.dead_lettered.load(Relaxed)
    );
    let letters = stats.dlq.load(Relaxed) + credited.dead_lettered.load(Relaxed);
    for (key, error) in read_dead_letters(config, letters as usize)? {
        println!("  key {key}: {error}");
    }
    let report_dir = std::env::temp_dir().join("wadispatch-demo");
    std::fs::create_dir_all(&report_dir)?;
    for (id, spec) in campaign_ids.iter().zip(&specs) {
        let path = report_dir.join(format!("{id}.csv"));
        let file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let csv = crate::report::Format::Csv;
        let options = crate::report::ExportOptions::default();
        let n = crate::report::export(store, id, csv, spec.as_ref(), options, file, None).await?;
        println!("per-contact report of {id} ({n} rows): {}", path.display());
    }
    Ok(())
}

fn pct(n: u64, d: u64) -> String {
    shown(crate::report::ratio(n, d))
}

use crate::report::percent_text as shown;

fn print_funnel(id: &str, s: &CampaignSummary) {
    use crate::domain::DispatchState as S;
    println!("\n=== campaign {id} ===");
    let row = |label: &str, n: u64, of: String| println!("{label:<34}{n:>8}  {of}");
    row("contacts staged", s.staged, String::new());
    row("excluded", s.excluded(), pct(s.excluded(), s.staged));
    for (reason, n) in &s.contacts.excluded_by_reason {
        row(&format!("  {reason}"), *n, String::new());
    }
    let accepted = s.reached(S::Accepted);
    row("accepted by WhatsApp", accepted, String::new());
    row("sent", s.reached(S::Sent), String::new());
    // The seeds' percentages, as `report --summary` computes them.
    let v = s.contacts.ratios();
    let delivered = format!("received by {}", shown(v.received_by));
    row("delivered", s.reached(S::Delivered), delivered);
    row(
        "read",
        s.reached(S::Read),
        format!("read by {}", shown(v.read_by)),
    );
    let replied = format!("replied by {}", shown(v.replied_by));
    row("replied", s.reached(S::Replied), replied);
    row("failed", s.count(S::Failed), String::new());
    for (class, n) in &s.contacts.failed_by_class {
        row(&format!("  {class}"), *n, String::new());
    }
    row(
        "unknown (settled by webhooks)",
        s.count(S::Unknown),
        String::new(),
    );
    row(
        "deferred (131049, retried later)",
        s.count(S::Deferred),
        String::new(),
    );
    let billable: Vec<String> = s
        .billable
        .by_category()
        .iter()
        .map(|(category, n)| format!("{category} {n}"))
        .collect();
    row(
        "billable (Meta's pricing)",
        s.billable.total(),
        billable.join(", "),
    );
    if let Some(cost) = &s.cost {
        let per = cost
            .per_conversion
            .map(|p| format!(", {p:.4} per conversion"))
            .unwrap_or_default();
        println!(
            "{:<34}{:>8.2}  from the rate card{per}",
            format!("estimated cost ({})", cost.currency),
            cost.total,
        );
    }
}

/// A triggered campaign's own lines: its trigger, and what its cancels
/// and its cap did.
async fn print_trigger(store: &dyn crate::store::Store, id: &str) -> anyhow::Result<()> {
    let trigger = store
        .get_campaign(id)
        .await?
        .and_then(|c| c.spec.trigger())
        .map(|t| t.describe())
        .unwrap_or_default();
    println!("trigger: {trigger}");
    let cancels = &crate::metrics::metrics().trigger_cancels;
    let outcome =
        |o: crate::metrics::CancelOutcome| cancels.with_label_values(&[id, o.as_str()]).get();
    use crate::metrics::CancelOutcome as C;
    println!(
        "orders placed: {} cancelled a pending reminder, {} came before their cart's event, {} came after the reminder left, {} found nothing to stop",
        outcome(C::Cancelled),
        outcome(C::Ahead),
        outcome(C::Stopped),
        outcome(C::Late)
    );
    Ok(())
}

/// The example campaigns with a goal: the journey's payments, the cart's
/// purchases.
const JOURNEY_ID: &str = "collections-journey-2026-12";
const CART_ID: &str = "cart-abandoned";

/// A campaign's goal and what it achieved: conversions, their rate (of
/// the messages accepted) and value.
fn print_goal(goal: &crate::domain::Goal, s: &CampaignSummary) {
    println!("goal: {}", goal.describe());
    let accepted = s.reached(crate::domain::DispatchState::Accepted);
    println!(
        "{:<34}{:>8}  conversion rate {}",
        "converted",
        s.converted,
        pct(s.converted, accepted)
    );
    for (currency, value) in &s.conversion_value {
        println!("{:<34}{:>8.2}", format!("  value ({currency})"), value);
    }
    if goal.stops_journey {
        println!(
            "{:<34}{:>8}",
            "  journeys it stopped", s.stopped_by_conversion
        );
    }
}

/// The tags the demo gives the `i`-th contact of the segmented campaign:
/// one in three `vip`, one in ten `churned`, one in 25 untagged, and a
/// `customer_id` valued tag for all but one in 50.
fn tag_for_segment(i: usize) -> crate::domain::Tags {
    let mut tags = crate::domain::Tags::default();
    if i % 25 == 24 {
        return tags;
    }
    if i.is_multiple_of(3) {
        tags.labels.push("vip".into());
    }
    if i.is_multiple_of(10) {
        tags.labels.push("churned".into());
    }
    if i % 50 != 3 {
        tags.values
            .insert("customer_id".into(), format!("CUST-{:05}", i + 1));
    }
    tags
}

fn is_triggered(id: &str) -> bool {
    id == CART_ID
}

/// The example audience as `audience import` reads it for `campaign`.
fn demo_audience(campaign: &str, config: &Config) -> anyhow::Result<Vec<import::KeyedRecord>> {
    Ok(import::parse_csv(
        AUDIENCE_CSV.as_bytes(),
        "config/examples/audience.csv",
        campaign,
        config.dispatch.default_region.as_deref(),
    )?
    .0)
}

fn is_journey(id: &str) -> bool {
    id.starts_with("collections-journey")
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
