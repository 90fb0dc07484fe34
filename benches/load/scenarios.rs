//! The scenarios, each in a process of its own: ingest, dispatch, pacing and
//! webhooks, with the raw floor each is compared against, and journeys.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::Utc;
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message};
use serde_json::{json, Value};
use wadispatch::app::{self, Daemon};
use wadispatch::config::{CampaignOverride, Config, Secret, SenderConfig};
use wadispatch::domain::{
    ContactKey, DispatchState, Edge, FrozenParams, FrozenStep, On, StepParams,
};
use wadispatch::metrics::metrics;
use wadispatch::report::CampaignSummary;
use wadispatch::sandbox::SandboxStats;
use wadispatch::store::{ClaimRequest, Outcome, StageRequest, StagedJourney, Store};
use wadispatch::whatsapp::payload::{callback_data, template_message_bytes};

use super::*;

pub(super) fn scenario(name: &str) -> anyhow::Result<()> {
    let sizes = Sizes::from_env();
    let mut world = World::start(name)?;
    let name = name.to_string();
    let result = app::system().block_on(async {
        match name.as_str() {
            "ingest" => ingest(&sizes, &world).await,
            "dispatch" => dispatch(&sizes, &world).await,
            "pacing" => pacing(&sizes, &world, false).await,
            "pacing-busy" => pacing(&sizes, &world, true).await,
            "webhooks" => webhooks(&sizes, &mut world).await,
            "journeys" => journeys(&sizes, &world).await,
            "triggers" => triggers(&sizes, &world).await,
            "scale" => scale(&sizes, &world).await,
            other => bail!("unknown scenario {other:?}"),
        }
    })?;
    println!("RESULT {result}");
    Ok(())
}

/// A daemon configuration on the world's broker, a fresh store directory and
/// loopback listeners; `paused` campaigns stage but do not send.
pub(super) fn daemon_config(world: &World, dir: &std::path::Path, paused: &str) -> Config {
    let mut config = Config::default();
    config.kafka.brokers = world.brokers.clone();
    config.store.embedded.data_dir = dir.join("store");
    config.http.listen = "127.0.0.1:0".into();
    config.admin.listen = "127.0.0.1:0".into();
    config.whatsapp.api_base_url = world
        .sandbox
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:9".into());
    config.whatsapp.token = Some(Secret::new("bench"));
    config.campaigns.insert(
        paused.to_string(),
        CampaignOverride {
            per_second: Some(1_000_000.0),
            per_hour: None,
            paused: true,
            marketing_messages: None,
        },
    );
    config
}

pub(super) fn add_senders(config: &mut Config, ids: &[String], per_second: f64) {
    for id in ids {
        config.senders.insert(
            id.clone(),
            SenderConfig {
                per_second,
                paused: false,
                display_name: None,
                display_phone_number: None,
                auto_throughput: false,
                max_per_second: None,
                marketing_messages: None,
            },
        );
    }
}

pub(super) fn unpause(config: &mut Config, campaign: &str) {
    if let Some(c) = config.campaigns.get_mut(campaign) {
        c.paused = false;
    }
}

/// Waits until the daemon has taken `n` audience records; answers when its
/// audience consumer was given its partitions (the event the raw floor's
/// window also starts at) and when the last record was taken.
pub(super) async fn wait_staged(
    daemon: &Daemon,
    n: u64,
    what: &str,
) -> anyhow::Result<(Instant, Instant)> {
    let marks = staging_marks(daemon, n, n, what, None).await?;
    Ok((marks[0].1, marks[marks.len() - 1].1))
}

/// Waits until the daemon has taken `n` audience records, marking when its
/// audience consumer was given its partitions (the first mark, at 0
/// records), each time another `step` records were taken, and the last
/// record (the last mark). With `stall`, fails when no record comes for
/// that long.
pub(super) async fn staging_marks(
    daemon: &Daemon,
    n: u64,
    step: u64,
    what: &str,
    stall: Option<Duration>,
) -> anyhow::Result<Vec<(u64, Instant)>> {
    let progress = bar(n, what);
    let stats = &daemon.pipeline.stats;
    let mut marks: Vec<(u64, Instant)> = Vec::new();
    let mut moved = (0, Instant::now());
    loop {
        let done = stats.total();
        progress.set_position(done);
        let now = Instant::now();
        if marks.is_empty()
            && (done >= n || stats.assigned.load(std::sync::atomic::Ordering::Acquire))
        {
            marks.push((0, now));
        }
        if !marks.is_empty() && done >= (marks.len() as u64 * step).min(n) {
            marks.push((done, now));
        }
        if done >= n {
            progress.finish_and_clear();
            return Ok(marks);
        }
        if done != moved.0 {
            moved = (done, now);
        } else if stall.is_some_and(|s| moved.1.elapsed() > s) {
            bail!(
                "{what}: staging stalled at {done} of {n} records (did the broker keep them all?)"
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the API has accepted `n` messages of `campaign` from
/// `senders` (retries and repeats do not count); answers when the first
/// and the last were accepted. Fails when none is accepted for `stall`.
pub(super) async fn wait_accepted(
    campaign: &str,
    senders: &[String],
    n: u64,
    what: &str,
    stall: Duration,
) -> anyhow::Result<(Instant, Instant)> {
    let progress = bar(n, what);
    let mut first = None;
    let mut last = (0, Instant::now());
    loop {
        let done = accepted_by(campaign, senders);
        progress.set_position(done);
        let now = Instant::now();
        if first.is_none() && done > 0 {
            first = Some(now);
        }
        if done >= n {
            progress.finish_and_clear();
            return Ok((first.unwrap_or(now), now));
        }
        if done != last.0 {
            last = (done, now);
        } else if last.1.elapsed() > stall {
            bail!("{what}: stalled at {done} of {n} contacts accepted");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) async fn ingest(sizes: &Sizes, world: &World) -> anyhow::Result<Value> {
    let n = sizes.ingest_records;
    let dir = tempfile::tempdir()?;
    let config = daemon_config(world, dir.path(), PROMO);
    let rss_idle = status_mib(me(), "VmRSS");
    let store = app::open_store(&config).await?;
    let cpu0 = cpu_seconds(me());
    let started = Instant::now();
    let daemon = Daemon::start(config.clone(), store).await?;
    let (assigned, done) = wait_staged(&daemon, n, "ingest (wadispatch)").await?;
    let cpu = cpu_seconds(me()) - cpu0;
    let peak_rss = status_mib(me(), "VmHWM");
    let staging = metrics()
        .store_operation_duration
        .with_label_values(&["stage_batch"]);
    let staging_secs = staging.get_sample_sum();
    // Memory with every contact staged: the daemon keeps running (campaign
    // paused) while its caches settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_staged = status_mib(me(), "VmRSS");
    let summary = CampaignSummary::compute(daemon.store.as_ref(), PROMO).await?;
    daemon.shutdown(Duration::from_secs(10)).await;
    if summary.staged != n {
        bail!("{} of {n} records staged", summary.staged);
    }

    // Raw floor: librdkafka alone, consuming the same records.
    let raw = raw_consume(&world.brokers, &config.kafka.topics.audience, n).await?;
    let steady = done.duration_since(assigned).as_secs_f64();
    let rate = n as f64 / steady;
    Ok(json!({
        "records": n,
        "audience_partitions": 64,
        "durability": format!("{:?}", config.store.embedded.durability).to_lowercase(),
        "records_per_s": rate,
        "records_per_s_with_group_join": n as f64 / done.duration_since(started).as_secs_f64(),
        "seconds": steady,
        "staging_store_seconds": staging_secs,
        "staging_us_per_record": staging_secs / n as f64 * 1e6,
        "cpu_s_per_1000": cpu / n as f64 * 1000.0,
        "peak_rss_mib": peak_rss,
        "rss_idle_mib": rss_idle,
        "rss_staged_mib": rss_staged,
        "raw_records_per_s": raw,
        "ratio_raw_over_wadispatch": raw / rate,
    }))
}

/// The moment a consumer was given its partitions: the start of both
/// ingest windows.
#[derive(Default)]
pub(super) struct AssignedAt(std::sync::OnceLock<Instant>);

impl rdkafka::ClientContext for AssignedAt {}

impl rdkafka::consumer::ConsumerContext for AssignedAt {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if matches!(rebalance, rdkafka::consumer::Rebalance::Assign(_)) {
            self.0.get_or_init(Instant::now);
        }
    }
}

pub(super) async fn raw_consume(brokers: &str, topic: &str, n: u64) -> anyhow::Result<f64> {
    let brokers = brokers.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let consumer: BaseConsumer<AssignedAt> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "bench-raw-floor")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create_with_context(AssignedAt::default())?;
        consumer.subscribe(&[&topic])?;
        let progress = bar(n, "ingest (raw librdkafka)");
        let mut seen = 0u64;
        let mut bytes = 0usize;
        let deadline = Instant::now() + Duration::from_secs(600);
        while seen < n {
            if Instant::now() > deadline {
                bail!("raw consumer read {seen} of {n} records in 10 minutes");
            }
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m?;
                bytes += m.payload().map_or(0, <[u8]>::len) + m.key().map_or(0, <[u8]>::len);
                seen += 1;
                if seen.is_multiple_of(10_000) {
                    progress.set_position(seen);
                }
            }
        }
        progress.finish_and_clear();
        let assigned = consumer
            .context()
            .0
            .get()
            .context("the raw consumer read records without an assignment")?;
        // `bytes` keeps the payloads read, as a consumer that uses them would.
        std::hint::black_box(bytes);
        Ok(n as f64 / assigned.elapsed().as_secs_f64())
    })
    .await?
}

/// The `q` quantile of a Prometheus histogram, interpolated inside its bucket
/// as `histogram_quantile` does.
pub(super) fn histogram_quantile(q: f64, buckets: &[(f64, u64)]) -> f64 {
    let total = buckets.last().map_or(0, |b| b.1);
    if total == 0 {
        return f64::NAN;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, cumulative) in buckets {
        if cumulative as f64 >= rank {
            let in_bucket = (cumulative - lower.1) as f64;
            let share = if in_bucket > 0.0 {
                (rank - lower.1 as f64) / in_bucket
            } else {
                0.0
            };
            return lower.0 + (bound - lower.0) * share;
        }
        lower = (bound, cumulative);
    }
    lower.0
}

/// Cumulative buckets summed over `histograms`, by upper bound.
fn summed_buckets(histograms: impl IntoIterator<Item = prometheus::Histogram>) -> Vec<(f64, u64)> {
    let mut sum: BTreeMap<u64, u64> = BTreeMap::new();
    for h in histograms {
        for family in prometheus::core::Collector::collect(&h) {
            for m in family.get_metric() {
                for b in m.get_histogram().get_bucket() {
                    *sum.entry(b.upper_bound().to_bits()).or_default() += b.cumulative_count();
                }
            }
        }
    }
    let mut out: Vec<(f64, u64)> = sum
        .into_iter()
        .map(|(k, v)| (f64::from_bits(k), v))
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Cumulative buckets of the daemon's send latency histogram, all senders.
pub(super) fn send_latency_buckets(senders: &[String]) -> Vec<(f64, u64)> {
    let latency = &metrics().whatsapp_request_duration;
    summed_buckets(
        senders
            .iter()
            .map(|s| latency.with_label_values(&[s.as_str()])),
    )
}

/// Cumulative buckets of the daemon's latency histogram of one store
/// operation (`wadispatch_store_operation_duration_seconds{op}`).
pub(super) fn store_op_buckets(op: &str) -> Vec<(f64, u64)> {
    summed_buckets([metrics().store_operation_duration.with_label_values(&[op])])
}

/// p50 and p99 (ms) of the store operations a send makes, as the daemon's
/// histograms saw them over the run.
fn store_op_latencies() -> Value {
    let ops = ["get_dispatch", "get_contact", "claim", "record_outcome"];
    Value::Object(
        ops.iter()
            .map(|op| {
                let b = store_op_buckets(op);
                (
                    op.to_string(),
                    json!([
                        histogram_quantile(0.5, &b) * 1000.0,
                        histogram_quantile(0.99, &b) * 1000.0
                    ]),
                )
            })
            .collect(),
    )
}

/// The same estimate for raw latencies, with the daemon's buckets.
pub(super) fn bucketed(latencies: &[Duration], bounds: &[f64]) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .map(|&b| {
            let n = latencies.partition_point(|d| d.as_secs_f64() <= b);
            (b, n as u64)
        })
        .collect()
}

/// Messages of `campaign`'s first step the API accepted, over `senders`
/// (the daemon's own counter, in this process).
pub(super) fn accepted_by(campaign: &str, senders: &[String]) -> u64 {
    senders
        .iter()
        .map(|s| {
            metrics()
                .dispatch
                .with_label_values(&[campaign, "primary", s, "accepted"])
                .get()
        })
        .sum()
}

pub(super) async fn dispatch(sizes: &Sizes, world: &World) -> anyhow::Result<Value> {
    let n = sizes.dispatch_messages;
    let senders = sender_ids(7000, DISPATCH_SENDERS);
    let sandbox = world.sandbox()?.to_string();
    let dir = tempfile::tempdir()?;
    let mut config = daemon_config(world, dir.path(), "bench");
    config.dispatch.max_in_flight_per_sender = IN_FLIGHT_PER_SENDER;
    add_senders(&mut config, &senders, 1_000_000.0);
    let store = app::open_store(&config).await?;
    let daemon = Daemon::start(config.clone(), store).await?;
    wait_staged(&daemon, n, "staging (campaign paused)").await?;
    // The clock stops when the API has accepted every contact: retries and
    // repeats do not count towards `n`.
    let http = reqwest::Client::new();
    let (cpu0, world0) = (cpu_seconds(me()), cpu_seconds(world.pid()));
    let started = Instant::now();
    unpause(&mut config, "bench");
    daemon.apply(config.clone()).await;
    let (_, done) = wait_accepted(
        "bench",
        &senders,
        n,
        "dispatch (wadispatch)",
        Duration::from_secs(30),
    )
    .await?;
    let seconds = done.duration_since(started).as_secs_f64();
    let cpu = cpu_seconds(me()) - cpu0;
    let world_cpu = cpu_seconds(world.pid()) - world0;
    let stats = sandbox_stats(&http, &sandbox).await?;
    // A recipient messaged twice fails the run, at any size.
    if stats.duplicate_recipients > 0 || stats.accepted != n {
        bail!(
            "the sandbox accepted {} messages for {n} contacts, {} recipients messaged twice",
            stats.accepted,
            stats.duplicate_recipients
        );
    }
    let latency = send_latency_buckets(&senders);
    let store_ops = store_op_latencies();
    let rate = n as f64 / seconds;

    // The raw floor: the very payloads the daemon sent, as plain POSTs at the
    // same concurrency, from the same process.
    let catalog_entry = daemon
        .pipeline
        .catalog
        .get("bench")
        .context("the campaign left the catalog")?;
    let mut rows = Vec::with_capacity(n as usize);
    let mut after: Option<ContactKey> = None;
    loop {
        let page = daemon
            .store
            .scan_dispatches("bench", after.as_ref(), 5_000)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.contact.clone());
        rows.extend(page);
    }
    let summary = CampaignSummary::compute(daemon.store.as_ref(), "bench").await?;
    daemon.shutdown(Duration::from_secs(10)).await;
    let accepted = summary.count(DispatchState::Accepted);
    if accepted != n {
        bail!("{accepted} of {n} contacts accepted");
    }
    let concurrency = IN_FLIGHT_PER_SENDER * senders.len();
    let raw_http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let requests = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let url = format!(
                "{sandbox}/{}/{}/messages",
                config.whatsapp.api_version,
                senders[i % senders.len()]
            );
            let body = template_message_bytes(
                &catalog_entry.spec.template,
                &r.contact,
                &r.params,
                &callback_data("raw", &r.contact),
                wadispatch::domain::Endpoint::Messages,
            );
            let request = raw_http
                .post(url)
                .bearer_auth("bench")
                .header("content-type", "application/json")
                .body(body);
            (request, 1)
        })
        .collect();
    let progress = bar(n, "dispatch (raw POSTs)");
    let (raw_cpu0, raw_world0) = (cpu_seconds(me()), cpu_seconds(world.pid()));
    let raw_started = Instant::now();
    let raw_latencies = timed_posts(requests, concurrency, &progress).await?;
    let raw_seconds = raw_started.elapsed().as_secs_f64();
    let raw_cpu = cpu_seconds(me()) - raw_cpu0;
    let raw_world_cpu = cpu_seconds(world.pid()) - raw_world0;
    progress.finish_and_clear();
    let raw_n = raw_latencies.len() as f64;
    let raw_rate = raw_n / raw_seconds;
    let bounds: Vec<f64> = latency.iter().map(|b| b.0).collect();
    let raw_buckets = bucketed(&raw_latencies, &bounds);
    Ok(json!({
        "messages": n,
        "senders": senders.len(),
        "in_flight": concurrency,
        "messages_per_s": rate,
        "seconds": seconds,
        "send_latency_p50_ms": histogram_quantile(0.5, &latency) * 1000.0,
        "send_latency_p99_ms": histogram_quantile(0.99, &latency) * 1000.0,
        "store_op_p50_p99_ms": store_ops,
        "cpu_s_per_1000": cpu / n as f64 * 1000.0,
        "world_cpu_s_per_1000": world_cpu / n as f64 * 1000.0,
        "sandbox_accepted": stats.accepted,
        "sandbox_duplicate_recipients": stats.duplicate_recipients,
        "raw_messages_per_s": raw_rate,
        "raw_latency_p50_ms": histogram_quantile(0.5, &raw_buckets) * 1000.0,
        "raw_latency_p99_ms": histogram_quantile(0.99, &raw_buckets) * 1000.0,
        "raw_latency_exact_p50_ms": quantile_ms(&raw_latencies, 0.5),
        "raw_latency_exact_p99_ms": quantile_ms(&raw_latencies, 0.99),
        "raw_cpu_s_per_1000": raw_cpu / raw_n * 1000.0,
        "raw_world_cpu_s_per_1000": raw_world_cpu / raw_n * 1000.0,
        "ratio_raw_over_wadispatch": raw_rate / rate,
    }))
}

/// A process of its own that keeps one core busy until dropped: the
/// `pacing-busy` scenario judges pacing when the daemon does not have the
/// machine to itself, as next to other services in production.
struct Spinner(std::process::Child);

impl Spinner {
    fn start() -> anyhow::Result<Spinner> {
        let child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting the busy-loop process (sh)")?;
        Ok(Spinner(child))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Senders at [`PACING_RATE`] each over a window; with `busy`, a spinning
/// process keeps one core busy from the warm-up to the end of the window.
pub(super) async fn pacing(sizes: &Sizes, world: &World, busy: bool) -> anyhow::Result<Value> {
    let senders = sender_ids(8000, sizes.pacing_senders);
    let sandbox = world.sandbox()?.to_string();
    let dir = tempfile::tempdir()?;
    let mut config = daemon_config(world, dir.path(), "pace");
    add_senders(&mut config, &senders, PACING_RATE);
    let store = app::open_store(&config).await?;
    let daemon = Daemon::start(config.clone(), store).await?;
    wait_staged(
        &daemon,
        sizes.pacing_contacts(),
        "staging (campaign paused)",
    )
    .await?;
    let http = reqwest::Client::new();
    let spinner = busy.then(Spinner::start).transpose()?;
    unpause(&mut config, "pace");
    daemon.apply(config.clone()).await;
    // Warm-up: every sender starts with an empty limiter; measure a steady
    // window after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = sandbox_stats(&http, &sandbox).await?;
    let t0 = Instant::now();
    let cpu0 = cpu_seconds(me());
    let progress = bar(sizes.pacing_secs, "pacing window (seconds)");
    for s in 1..=sizes.pacing_secs {
        tokio::time::sleep_until((t0 + Duration::from_secs(s)).into()).await;
        progress.set_position(s);
    }
    let after = sandbox_stats(&http, &sandbox).await?;
    let window = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(me()) - cpu0;
    drop(spinner);
    progress.finish_and_clear();
    daemon.shutdown(Duration::from_secs(10)).await;
    // Every request a sender made, whether the sandbox's limit (equal to
    // the target) let it through or answered 130429: overshoot shows as
    // requests above the rate, not as throttles alone.
    let mut deviations: Vec<f64> = senders
        .iter()
        .map(|id| {
            let count = |s: &SandboxStats| s.requests_per_number.get(id).copied().unwrap_or(0);
            let sent = count(&after) - count(&before);
            (sent as f64 / window - PACING_RATE) / PACING_RATE * 100.0
        })
        .collect();
    deviations.sort_by(f64::total_cmp);
    let requests = after.requests - before.requests;
    let (lowest, highest) = (deviations[0], deviations[deviations.len() - 1]);
    Ok(json!({
        "senders": senders.len(),
        "rate_per_sender": PACING_RATE,
        "sandbox_limit_per_number": PACING_RATE,
        "window_s": window,
        "requests_in_window": requests,
        "accepted_in_window": after.accepted - before.accepted,
        "deviation_min_pct": lowest,
        "deviation_median_pct": deviations[deviations.len() / 2],
        "deviation_max_pct": highest,
        "overshoot_pct": highest.max(0.0),
        "undershoot_pct": (-lowest).max(0.0),
        "throttled_130429": after.rejected_by_code.get(&130429).copied().unwrap_or(0),
        "cpu_s_per_1000": cpu / requests.max(1) as f64 * 1000.0,
        "one_core_busy": busy,
    }))
}

pub(super) async fn webhooks(sizes: &Sizes, world: &mut World) -> anyhow::Result<Value> {
    let contacts = sizes.webhook_contacts();
    let dir = tempfile::tempdir()?;
    let mut config = daemon_config(world, dir.path(), PROMO);
    config.whatsapp.app_secret = Some(Secret::new(WEBHOOK_SECRET));
    let store = app::open_store(&config).await?;
    accept_contacts(store.as_ref(), PROMO, contacts, &StagedJourney::default()).await?;
    let daemon = Daemon::start(config.clone(), store).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.pipeline.catalog.get(PROMO).is_none() {
        if Instant::now() > deadline {
            bail!("the campaign did not reach the catalog in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu0 = cpu_seconds(me());
    let url = format!("http://{}/webhook", daemon.webhook_addr);
    let report = world.command(format!("WEBHOOKS {url} {contacts}")).await?;
    let cpu = cpu_seconds(me()) - cpu0;
    let summary = CampaignSummary::compute(daemon.store.as_ref(), PROMO).await?;
    daemon.shutdown(Duration::from_secs(10)).await;
    let read = summary.count(DispatchState::Read);
    if read != contacts {
        bail!("{read} of {contacts} contacts reached `read`");
    }
    let events = report["events"].as_f64().unwrap_or(f64::NAN);
    let seconds = report["seconds"].as_f64().unwrap_or(f64::NAN);
    Ok(json!({
        "events": events,
        "statuses_per_post": STATUSES_PER_POST,
        "posts_in_flight": POSTS_IN_FLIGHT,
        "events_per_s": events / seconds,
        "seconds": seconds,
        "post_latency_p50_ms": report["p50_ms"],
        "post_latency_p99_ms": report["p99_ms"],
        "post_latency_max_ms": report["max_ms"],
        "cpu_s_per_1000": cpu / events * 1000.0,
    }))
}

/// `n` contacts whose primary was accepted and whose follow-up on silence
/// is due at once, held by the campaign's pause: the memory while they all
/// wait, then, unpaused, how fast the pump fires their timers (each
/// follow-up starts and is skipped, so nothing is sent).
pub(super) async fn journeys(sizes: &Sizes, world: &World) -> anyhow::Result<Value> {
    let n = sizes.journey_contacts;
    let dir = tempfile::tempdir()?;
    let config = daemon_config(world, dir.path(), JOURNEY);
    let store = app::open_store(&config).await?;
    let journey = StagedJourney {
        next: vec![Edge {
            on: On::NoReply,
            delay_secs: 0,
            to: "nudge".into(),
        }],
        later: vec![StepParams {
            step: "nudge".into(),
            content: FrozenStep::Skip("missing_variable:coupon".into()),
        }],
    };
    accept_contacts(store.as_ref(), JOURNEY, n, &journey).await?;
    let daemon = Daemon::start(config.clone(), store.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.pipeline.catalog.get(JOURNEY).is_none()
        || daemon.pipeline.stats.owned_shards().len() < 8
    {
        if Instant::now() > deadline {
            bail!("the campaign did not reach the catalog, or the shards this instance, in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The daemon runs (campaign paused) while its caches settle.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_waiting = status_mib(me(), "VmRSS");
    let waiting = CampaignSummary::compute(store.as_ref(), JOURNEY)
        .await?
        .waiting;
    if waiting != n {
        bail!("{waiting} of {n} contacts wait for their follow-up");
    }
    let mut running = config.clone();
    unpause(&mut running, JOURNEY);
    let cpu0 = cpu_seconds(me());
    let started = Instant::now();
    daemon.apply(running).await;
    let progress = bar(n, "timers fired");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut left = 0;
        for shard in 0..8 {
            left += store
                .due_timers(JOURNEY, shard, Utc::now() + chrono::Duration::days(1), 1)
                .await?
                .len();
        }
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("timers still due after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(me()) - cpu0;
    progress.finish_and_clear();
    let summary = CampaignSummary::compute(store.as_ref(), JOURNEY).await?;
    daemon.shutdown(Duration::from_secs(10)).await;
    let skipped = summary
        .contacts
        .excluded_by_reason
        .get("missing_variable:coupon")
        .copied()
        .unwrap_or(0);
    if summary.waiting != 0 || skipped != n {
        bail!(
            "after firing: {} waiting, {skipped} of {n} follow-ups started",
            summary.waiting
        );
    }
    Ok(json!({
        "contacts": n,
        "rss_waiting_mib": rss_waiting,
        "timers_fired_per_s": n as f64 / seconds,
        "seconds": seconds,
        "cpu_s_per_1000": cpu / n as f64 * 1000.0,
    }))
}

/// Trigger events, each due a minute after it happened: the rate they are
/// ingested at (every one a row of its occurrence, its due time set), then,
/// once they fall due together, the rate their messages are accepted at
/// (each through its claim, the campaign's cap and the sender).
pub(super) async fn triggers(sizes: &Sizes, world: &World) -> anyhow::Result<Value> {
    let n = sizes.trigger_events;
    let senders = sender_ids(9000, DISPATCH_SENDERS);
    let sandbox = world.sandbox()?.to_string();
    let dir = tempfile::tempdir()?;
    // The campaign's pace lifted (the override) and not paused: it sends
    // as soon as its occurrences are due.
    let mut config = daemon_config(world, dir.path(), TRIGGERED);
    unpause(&mut config, TRIGGERED);
    config.dispatch.max_in_flight_per_sender = IN_FLIGHT_PER_SENDER;
    add_senders(&mut config, &senders, 1_000_000.0);
    let store = app::open_store(&config).await?;
    let accepted = || accepted_by(TRIGGERED, &senders);
    let cpu0 = cpu_seconds(me());
    let daemon = Daemon::start(config.clone(), store).await?;
    let (assigned, staged) = wait_staged(&daemon, n, "trigger events (wadispatch)").await?;
    let ingest_cpu = cpu_seconds(me()) - cpu0;
    let ingest_rate = n as f64 / staged.duration_since(assigned).as_secs_f64();
    if accepted() > 0 {
        bail!(
            "messages went before every event was read: ingest took longer than the {TRIGGER_DELAY_SECS} s delay"
        );
    }
    let progress = bar(n, "due sends (wadispatch)");
    let mut first = None;
    let mut last = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(TRIGGER_DELAY_SECS + 60);
    loop {
        let done = accepted();
        progress.set_position(done);
        if done > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if done >= n {
            break;
        }
        if first.is_none() && Instant::now() > deadline {
            bail!("no trigger fell due within {} s", TRIGGER_DELAY_SECS + 60);
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if first.is_some() && last.1.elapsed() > Duration::from_secs(30) {
            bail!("due sends stalled at {done} of {n}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = first.unwrap_or_else(Instant::now);
    let send_seconds = first.elapsed().as_secs_f64();
    let cpu = cpu_seconds(me()) - cpu0 - ingest_cpu;
    progress.finish_and_clear();
    let stats = sandbox_stats(&reqwest::Client::new(), &sandbox).await?;
    let summary = CampaignSummary::compute(daemon.store.as_ref(), TRIGGERED).await?;
    daemon.shutdown(Duration::from_secs(10)).await;
    if stats.duplicate_recipients > 0 || stats.accepted != n || summary.staged != n {
        bail!(
            "{} occurrences staged, the sandbox accepted {} messages for {n} events, {} sent twice",
            summary.staged,
            stats.accepted,
            stats.duplicate_recipients
        );
    }
    Ok(json!({
        "events": n,
        "delay_s": TRIGGER_DELAY_SECS,
        "events_per_s": ingest_rate,
        "ingest_cpu_s_per_1000": ingest_cpu / n as f64 * 1000.0,
        "due_sends_per_s": n as f64 / send_seconds,
        "send_seconds": send_seconds,
        "send_cpu_s_per_1000": cpu / n as f64 * 1000.0,
    }))
}

/// Stages `n` contacts of `campaign` (with `journey`) and records each as
/// accepted with wamid `wamid.<i>`: the state the status webhooks then
/// advance, and the moment a follow-up's timer is set.
pub(super) async fn accept_contacts(
    store: &dyn Store,
    campaign: &str,
    n: u64,
    journey: &StagedJourney,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let progress = bar(n, "staging and accepting");
    for start in (0..n).step_by(5_000) {
        let ids: Vec<u64> = (start..(start + 5_000).min(n)).collect();
        let requests: Vec<StageRequest> = ids
            .iter()
            .map(|&i| StageRequest {
                campaign_id: campaign.into(),
                contact: ContactKey::raw(phone(i)),
                shard: (i % 8) as u32,
                seq: i,
                params: FrozenParams::default(),
                exclusion: None,
                send_after: None,
                timezone: None,
                tags: vec![],
                name: None,
                staged_at: now,
                journey: journey.clone(),
            })
            .collect();
        store.stage_batch(&requests).await?;
        futures::stream::iter(ids)
            .map(|i| async move {
                let contact = ContactKey::raw(phone(i));
                let claim = ClaimRequest {
                    campaign_id: campaign.into(),
                    contact: contact.clone(),
                    exclusive: false,
                    replace_engagement: None,
                    owner: "bench".into(),
                    now,
                    step: String::new(),
                };
                store.claim(&claim).await?;
                let wamid = format!("wamid.{i}");
                store
                    .record_outcome(
                        campaign,
                        &contact,
                        &Outcome::Accepted {
                            wamid,
                            sender: None,
                            held: None,
                        },
                        now,
                    )
                    .await?;
                anyhow::Ok(())
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<anyhow::Result<()>>()?;
        progress.set_position(start + 5_000);
    }
    progress.finish_and_clear();
    Ok(())
}

/// Contacts per step of the scale scenario's staging timeline.
const SCALE_STEP: u64 = 1_000_000;

/// The scale scenario: `WADISPATCH_BENCH_SCALE` contacts (10,000,000)
/// staged with the campaign paused; the ingest rate over the first and the
/// last million; RSS with all staged; `/campaigns` latency; then a restart
/// of the daemon on the same store with the campaign active: the time to its
/// first send and the rate over the first 500,000 sends.
pub(super) async fn scale(sizes: &Sizes, world: &World) -> anyhow::Result<Value> {
    let n = sizes.scale_contacts;
    let sends = n.min(500_000);
    let senders = sender_ids(7000, DISPATCH_SENDERS);
    let dir = tempfile::tempdir()?;
    let mut config = daemon_config(world, dir.path(), "bench");
    config.dispatch.max_in_flight_per_sender = IN_FLIGHT_PER_SENDER;
    add_senders(&mut config, &senders, 1_000_000.0);

    // Staging, with the time every million was reached.
    let store = app::open_store(&config).await?;
    let daemon = Daemon::start(config.clone(), store.clone()).await?;
    let marks = staging_marks(
        &daemon,
        n,
        SCALE_STEP,
        "scale: staging (campaign paused)",
        Some(Duration::from_secs(60)),
    )
    .await?;
    let first_end = marks.iter().find(|(d, _)| *d >= SCALE_STEP.min(n));
    let (first_n, first_t) = first_end.map_or((n, Instant::now()), |m| *m);
    let started = marks.first().map_or(Instant::now(), |m| m.1);
    let last = marks.last().copied().unwrap_or((n, Instant::now()));
    let before_last = marks
        .iter()
        .rev()
        .find(|(d, _)| *d + SCALE_STEP <= last.0)
        .copied()
        .unwrap_or((0, started));
    let rate_first = first_n as f64 / first_t.duration_since(started).as_secs_f64();
    let rate_last =
        (last.0 - before_last.0) as f64 / last.1.duration_since(before_last.1).as_secs_f64();
    let rate_all = n as f64 / last.1.duration_since(started).as_secs_f64();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_staged = status_mib(me(), "VmRSS");

    // `/campaigns` on the admin listener, as an operator's tool asks it.
    let http = reqwest::Client::new();
    let url = format!("http://{}/campaigns", daemon.admin_addr);
    let mut latencies = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let answer = http.get(&url).send().await?;
        anyhow::ensure!(
            answer.status().is_success(),
            "/campaigns answered {}",
            answer.status()
        );
        answer.bytes().await?;
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies.sort();
    let summary = CampaignSummary::compute(daemon.store.as_ref(), "bench").await?;
    if summary.staged != n {
        bail!("{} of {n} contacts staged", summary.staged);
    }
    daemon.shutdown(Duration::from_secs(10)).await;
    // The actors let go of the store as they stop; the restart opens it
    // again, as a new process would (its recovery is part of the time).
    let let_go = Instant::now();
    while std::sync::Arc::strong_count(&store) > 1 && let_go.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reopened = std::sync::Arc::strong_count(&store) == 1;

    // The restart, with the campaign active from the start.
    unpause(&mut config, "bench");
    let restarted = Instant::now();
    let store = if reopened {
        drop(store);
        app::open_store(&config).await?
    } else {
        store
    };
    let daemon = Daemon::start(config.clone(), store).await?;
    let (first_send, finished) = wait_accepted(
        "bench",
        &senders,
        sends,
        "scale: restart and the first sends",
        Duration::from_secs(60),
    )
    .await?;
    daemon.shutdown(Duration::from_secs(10)).await;
    Ok(json!({
        "contacts": n,
        "sends_timed": sends,
        "ingest_records_per_s": rate_all,
        "ingest_records_per_s_first_million": rate_first,
        "ingest_records_per_s_last_million": rate_last,
        "rss_staged_mib": rss_staged,
        "campaigns_latency_p50_ms": quantile_ms(&latencies, 0.5),
        "campaigns_latency_max_ms": quantile_ms(&latencies, 1.0),
        "restart_to_first_send_s": first_send.duration_since(restarted).as_secs_f64(),
        "restart_reopened_store": reopened,
        "dispatch_messages_per_s": sends as f64 / finished.duration_since(first_send).as_secs_f64(),
    }))
}
