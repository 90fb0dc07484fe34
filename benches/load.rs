//! The load benchmark: every figure of the README's Performance table from one
//! command, `cargo bench --bench load`.
//!
//! Each scenario runs in a process of its own, so that its memory and CPU
//! figures belong to the daemon alone:
//! - the *world* process hosts the Kafka protocol broker (librdkafka's mock
//!   cluster, reached over TCP on loopback), the WhatsApp sandbox and the load
//!   generators (the audience producer, the webhook poster);
//! - the *scenario* process runs wadispatch (`Daemon` on the embedded store)
//!   and measures it, then measures the raw floor from the same process;
//! - this command runs the scenarios one after another, prints a table per
//!   scenario and the targets (README.md, "Performance"), and writes
//!   `target/bench-results.json`.
//!
//! Scenarios: `ingest` (with the memory of the staged contacts), `dispatch`,
//! `pacing`, `webhooks`. `WADISPATCH_BENCH_ONLY=dispatch,pacing` runs some of
//! them; sizes change with `WADISPATCH_BENCH_INGEST_RECORDS` (1,000,000),
//! `WADISPATCH_BENCH_DISPATCH_MESSAGES` (200,000),
//! `WADISPATCH_BENCH_PACING_SENDERS` (100), `WADISPATCH_BENCH_PACING_SECS`
//! (60) and `WADISPATCH_BENCH_WEBHOOK_EVENTS` (300,000).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use serde_json::{json, Value};
use wadispatch::app::{self, Daemon};
use wadispatch::config::{CampaignOverride, Config, Secret, SenderConfig};
use wadispatch::domain::{ContactKey, DispatchState, FrozenParams};
use wadispatch::metrics::metrics;
use wadispatch::report::CampaignSummary;
use wadispatch::sandbox::{Sandbox, SandboxConfig, SandboxStats};
use wadispatch::store::{ClaimRequest, Outcome, StageRequest, Store};
use wadispatch::whatsapp::payload::{callback_data, template_message_bytes};

const SCENARIOS: [&str; 4] = ["ingest", "dispatch", "pacing", "webhooks"];
/// The campaign of the ingest and webhook scenarios (config/examples/promo.json).
const PROMO: &str = "bday-2026-11";
const WEBHOOK_SECRET: &str = "bench-webhook-secret";
/// Statuses per webhook POST (Meta batches them) and POSTs in flight.
const STATUSES_PER_POST: usize = 50;
const POSTS_IN_FLIGHT: usize = 32;
/// Sends in flight per sender in the dispatch scenario (the raw floor uses
/// the same total).
const IN_FLIGHT_PER_SENDER: usize = 64;
const DISPATCH_SENDERS: u32 = 20;
const PACING_RATE: f64 = 50.0;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: skip
    // then, and say so (the CI runs it at small sizes with `cargo bench`).
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "load benchmark skipped: it runs under `cargo bench --bench load` (sizes from WADISPATCH_BENCH_*), not in test mode"
        );
        return;
    }
    let result = match (arg("--role").as_deref(), arg("--scenario")) {
        (Some("world"), Some(s)) => world(&s),
        (Some("scenario"), Some(s)) => scenario(&s),
        (None, _) => orchestrate(),
        _ => Err(anyhow!(
            "usage: load --bench [--role world|scenario --scenario NAME]"
        )),
    };
    if let Err(e) = result {
        eprintln!("load benchmark: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- sizes ----

struct Sizes {
    ingest_records: u64,
    dispatch_messages: u64,
    pacing_senders: u32,
    pacing_secs: u64,
    webhook_events: u64,
}

impl Sizes {
    fn from_env() -> Sizes {
        Sizes {
            ingest_records: env_u64("WADISPATCH_BENCH_INGEST_RECORDS", 1_000_000),
            dispatch_messages: env_u64("WADISPATCH_BENCH_DISPATCH_MESSAGES", 200_000),
            pacing_senders: env_u64("WADISPATCH_BENCH_PACING_SENDERS", 100) as u32,
            pacing_secs: env_u64("WADISPATCH_BENCH_PACING_SECS", 60),
            webhook_events: env_u64("WADISPATCH_BENCH_WEBHOOK_EVENTS", 300_000),
        }
    }

    /// Contacts of the pacing campaign: enough to keep every sender busy for
    /// the warm-up and the whole window.
    fn pacing_contacts(&self) -> u64 {
        (PACING_RATE as u64) * u64::from(self.pacing_senders) * (self.pacing_secs + 15)
    }

    fn webhook_contacts(&self) -> u64 {
        self.webhook_events.div_ceil(3)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.replace('_', "").parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not a number; using {default}");
            default
        }),
        Err(_) => default,
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn phone(i: u64) -> String {
    format!("+5255{:08}", 10_000_000 + i)
}

fn sender_ids(first: u32, n: u32) -> Vec<String> {
    (first..first + n).map(|i| i.to_string()).collect()
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "  {msg:<28} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
        )
        .expect("progress template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

// ------------------------------------------------------------ /proc ----

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`), in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// User plus system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // USER_HZ is 100 on every Linux target.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn me() -> u32 {
    std::process::id()
}

// ------------------------------------------------------------- world ----

/// Topics of the default configuration, with the audience's partitions.
fn create_topics(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    config: &Config,
    audience_partitions: i32,
) -> anyhow::Result<()> {
    let t = &config.kafka.topics;
    // The mock broker keeps about 5 MB per partition and drops older
    // segments: enough partitions keep every record readable.
    cluster.create_topic(&t.audience, audience_partitions, 1)?;
    for topic in [&t.campaigns, &t.audience_dlq, &t.suppressions] {
        cluster.create_topic(topic, 1, 1)?;
    }
    cluster.create_topic(&t.events, 8, 1)?;
    Ok(())
}

fn campaign_spec(id: &str, senders: &[String]) -> String {
    let senders: Vec<String> = senders.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"{{"id":"{id}","state":"active","senders":[{}],"exclusive":false,"template":{{"name":"promo","language":"es_MX","body":["{{{{name}}}}"]}}}}"#,
        senders.join(",")
    )
}

/// Produces the campaign and `n` audience records; `record(i)` is the value.
async fn produce(
    brokers: &str,
    config: &Config,
    campaign: (&str, &str),
    n: u64,
    record: impl Fn(u64) -> String,
) -> anyhow::Result<()> {
    let t = &config.kafka.topics;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    producer
        .send(
            FutureRecord::to(&t.campaigns)
                .key(campaign.0)
                .payload(campaign.1),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow!("producing the campaign: {e}"))?;
    let progress = bar(n, "producing audience");
    let mut pending = Vec::with_capacity(50_000);
    for i in 0..n {
        let key = phone(i);
        let value = record(i);
        let delivery = producer
            .send_result(FutureRecord::to(&t.audience).key(&key).payload(&value))
            .map_err(|(e, _)| anyhow!("queueing audience record {i}: {e}"))?;
        pending.push(delivery);
        if pending.len() == 50_000 {
            for d in futures::future::join_all(pending.drain(..)).await {
                d?.map_err(|(e, _)| anyhow!("producing the audience: {e}"))?;
            }
            progress.set_position(i + 1);
        }
    }
    for d in futures::future::join_all(pending).await {
        d?.map_err(|(e, _)| anyhow!("producing the audience: {e}"))?;
    }
    progress.finish_and_clear();
    Ok(())
}

/// The world of one scenario: prints `READY <brokers> <sandbox url|->` once
/// its data is produced, then serves commands on stdin until it closes.
fn world(scenario: &str) -> anyhow::Result<()> {
    let sizes = Sizes::from_env();
    let scenario = scenario.to_string();
    app::system().block_on(async move {
        let config = Config::default();
        let cluster = MockCluster::new(1)?;
        let brokers = cluster.bootstrap_servers();
        let mut sandbox = None;
        let sandbox_at = |mps: f64| SandboxConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            per_number_mps: mps,
            pair_interval_secs: 0.0,
            failure_rules: vec![],
            webhook_url: None,
            ..Default::default()
        };
        match scenario.as_str() {
            "ingest" => {
                create_topics(&cluster, &config, 64)?;
                let n = sizes.ingest_records;
                produce(&brokers, &config, (PROMO, wadispatch::demo::PROMO_SPEC), n, |i| {
                    format!(
                        r#"{{"campaign_id":"{PROMO}","contact":{{"phone":"{}","name":"Cliente {i}"}},"variables":{{"name":"Cliente {i}","discount":"20%","coupon":"C{i}"}},"tags":["vip"]}}"#,
                        phone(i)
                    )
                })
                .await?;
            }
            "dispatch" | "pacing" => {
                let (id, senders, n, mps) = if scenario == "dispatch" {
                    ("bench", sender_ids(7000, DISPATCH_SENDERS), sizes.dispatch_messages, 0.0)
                } else {
                    ("pace", sender_ids(8000, sizes.pacing_senders), sizes.pacing_contacts(), PACING_RATE)
                };
                create_topics(&cluster, &config, 32)?;
                sandbox = Some(Sandbox::start(sandbox_at(mps)).await?);
                let spec = campaign_spec(id, &senders);
                produce(&brokers, &config, (id, &spec), n, |i| {
                    format!(
                        r#"{{"campaign_id":"{id}","contact":{{"phone":"{}","name":"N{i}"}}}}"#,
                        phone(i)
                    )
                })
                .await?;
            }
            "webhooks" => {
                create_topics(&cluster, &config, 8)?;
                produce(&brokers, &config, (PROMO, wadispatch::demo::PROMO_SPEC), 0, |_| String::new())
                    .await?;
            }
            other => bail!("unknown scenario {other:?}"),
        }
        let url = sandbox.as_ref().map(|s| s.base_url()).unwrap_or_else(|| "-".into());
        println!("READY {brokers} {url}");
        std::io::stdout().flush()?;
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
        while let Some(line) = lines.next_line().await? {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["WEBHOOKS", url, contacts] => {
                    let report = post_webhooks(url, contacts.parse()?).await?;
                    println!("DONE {report}");
                    std::io::stdout().flush()?;
                }
                _ => bail!("unknown command {line:?}"),
            }
        }
        if let Some(s) = sandbox {
            s.stop().await;
        }
        drop(cluster);
        Ok(())
    })
}

/// Posts `sent`, then `delivered`, then `read` for every contact, signed, 50
/// statuses per POST, 32 POSTs in flight; answers the rate and latencies.
async fn post_webhooks(url: &str, contacts: u64) -> anyhow::Result<Value> {
    let now = Utc::now().timestamp().to_string();
    let mut bodies = Vec::new();
    for status in ["sent", "delivered", "read"] {
        let ids: Vec<u64> = (0..contacts).collect();
        for chunk in ids.chunks(STATUSES_PER_POST) {
            let statuses: Vec<Value> = chunk
                .iter()
                .map(|i| {
                    json!({"id": format!("wamid.{i}"), "status": status, "timestamp": now,
                           "recipient_id": phone(*i).trim_start_matches('+')})
                })
                .collect();
            let body = serde_json::to_vec(&json!({"object": "whatsapp_business_account",
                "entry": [{"id": "1", "changes": [{"field": "messages",
                    "value": {"messaging_product": "whatsapp", "statuses": statuses}}]}]}))?;
            let signature = wadispatch::webhook::signature::sign(WEBHOOK_SECRET.as_bytes(), &body);
            bodies.push((body, signature, chunk.len()));
        }
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(POSTS_IN_FLIGHT)
        .build()?;
    let events: usize = bodies.iter().map(|b| b.2).sum();
    let requests = bodies
        .into_iter()
        .map(|(body, signature, n)| {
            let request = http
                .post(url)
                .header("X-Hub-Signature-256", signature)
                .header("content-type", "application/json")
                .body(body);
            (request, n as u64)
        })
        .collect();
    let progress = bar(events as u64, "posting status webhooks");
    let started = Instant::now();
    let latencies = timed_posts(requests, POSTS_IN_FLIGHT, &progress).await?;
    let seconds = started.elapsed().as_secs_f64();
    progress.finish_and_clear();
    Ok(json!({
        "events": events,
        "seconds": seconds,
        "p50_ms": quantile_ms(&latencies, 0.5),
        "p99_ms": quantile_ms(&latencies, 0.99),
        "max_ms": quantile_ms(&latencies, 1.0),
    }))
}

/// Sends the requests, at most `in_flight` at a time, each advancing
/// `progress` by its weight once answered; fails on an answer that is not 2xx.
/// Answers each request's latency (until its whole answer is read), sorted.
async fn timed_posts(
    requests: Vec<(reqwest::RequestBuilder, u64)>,
    in_flight: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<Duration>> {
    let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(requests)
        .map(|(request, weight)| async move {
            let t = Instant::now();
            let answer = request.send().await?;
            let status = answer.status();
            answer.bytes().await?;
            if !status.is_success() {
                bail!("POST answered {status}");
            }
            progress.inc(weight);
            Ok(t.elapsed())
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let mut latencies = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    latencies.sort();
    Ok(latencies)
}

fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// The world process of a scenario, killed when dropped.
struct World {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
    brokers: String,
    sandbox: Option<String>,
}

impl World {
    fn start(scenario: &str) -> anyhow::Result<World> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--bench", "--role", "world", "--scenario", scenario])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the world process (broker and sandbox)")?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("world stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let ["READY", brokers, sandbox] = words.as_slice() else {
            bail!("the world process did not start (it said {line:?}); see its messages above");
        };
        Ok(World {
            brokers: brokers.to_string(),
            sandbox: (*sandbox != "-").then(|| sandbox.to_string()),
            child,
            stdin,
            stdout: Some(stdout),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sandbox(&self) -> anyhow::Result<&str> {
        self.sandbox.as_deref().context("this world has no sandbox")
    }

    /// Sends one command and waits (off the async runtime) for its `DONE` line.
    async fn command(&mut self, command: String) -> anyhow::Result<Value> {
        let stdin = self.stdin.as_mut().context("world stdin closed")?;
        writeln!(stdin, "{command}")?;
        stdin.flush()?;
        let mut stdout = self.stdout.take().context("world stdout closed")?;
        let (stdout, line) = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let read = stdout.read_line(&mut line);
            (stdout, read.map(|_| line))
        })
        .await?;
        self.stdout = Some(stdout);
        let line = line?;
        let json = line
            .strip_prefix("DONE ")
            .with_context(|| format!("the world process answered {line:?}"))?;
        Ok(serde_json::from_str(json)?)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sandbox_stats(http: &reqwest::Client, base: &str) -> anyhow::Result<SandboxStats> {
    Ok(http
        .get(format!("{base}/sandbox/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

// ---------------------------------------------------------- scenarios ----

fn scenario(name: &str) -> anyhow::Result<()> {
    let sizes = Sizes::from_env();
    let mut world = World::start(name)?;
    let name = name.to_string();
    let result = app::system().block_on(async {
        match name.as_str() {
            "ingest" => ingest(&sizes, &world).await,
            "dispatch" => dispatch(&sizes, &world).await,
            "pacing" => pacing(&sizes, &world).await,
            "webhooks" => webhooks(&sizes, &mut world).await,
            other => bail!("unknown scenario {other:?}"),
        }
    })?;
    println!("RESULT {result}");
    Ok(())
}

/// A daemon configuration on the world's broker, a fresh store directory and
/// loopback listeners; `paused` campaigns stage but do not send.
fn daemon_config(world: &World, dir: &std::path::Path, paused: &str) -> Config {
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
        },
    );
    config
}

fn add_senders(config: &mut Config, ids: &[String], per_second: f64) {
    for id in ids {
        config.senders.insert(
            id.clone(),
            SenderConfig {
                per_second,
                paused: false,
                display_name: None,
            },
        );
    }
}

fn unpause(config: &mut Config, campaign: &str) {
    if let Some(c) = config.campaigns.get_mut(campaign) {
        c.paused = false;
    }
}

/// Waits until the daemon has taken `n` audience records; answers when its
/// audience consumer was given its partitions (the event the raw floor's
/// window also starts at) and when the last record was taken.
async fn wait_staged(daemon: &Daemon, n: u64, what: &str) -> (Instant, Instant) {
    let progress = bar(n, what);
    let stats = &daemon.pipeline.stats;
    let mut assigned = None;
    loop {
        let done = stats.total();
        progress.set_position(done);
        if assigned.is_none() && stats.assigned.load(std::sync::atomic::Ordering::Acquire) {
            assigned = Some(Instant::now());
        }
        if done >= n {
            progress.finish_and_clear();
            let now = Instant::now();
            return (assigned.unwrap_or(now), now);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ingest(sizes: &Sizes, world: &World) -> anyhow::Result<Value> {
    let n = sizes.ingest_records;
    let dir = tempfile::tempdir()?;
    let config = daemon_config(world, dir.path(), PROMO);
    let rss_idle = status_mib(me(), "VmRSS");
    let store = app::open_store(&config).await?;
    let cpu0 = cpu_seconds(me());
    let started = Instant::now();
    let daemon = Daemon::start(config.clone(), store).await?;
    let (assigned, done) = wait_staged(&daemon, n, "ingest (wadispatch)").await;
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
struct AssignedAt(std::sync::OnceLock<Instant>);

impl rdkafka::ClientContext for AssignedAt {}

impl rdkafka::consumer::ConsumerContext for AssignedAt {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &rdkafka::consumer::Rebalance<'_>) {
        if matches!(rebalance, rdkafka::consumer::Rebalance::Assign(_)) {
            self.0.get_or_init(Instant::now);
        }
    }
}

async fn raw_consume(brokers: &str, topic: &str, n: u64) -> anyhow::Result<f64> {
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
fn histogram_quantile(q: f64, buckets: &[(f64, u64)]) -> f64 {
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

/// Cumulative buckets of the daemon's send latency histogram, all senders.
fn send_latency_buckets(senders: &[String]) -> Vec<(f64, u64)> {
    let mut sum: BTreeMap<u64, u64> = BTreeMap::new();
    for s in senders {
        let h = metrics()
            .whatsapp_request_duration
            .with_label_values(&[s.as_str()]);
        let proto = prometheus::core::Collector::collect(&h);
        for family in proto {
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

/// The same estimate for raw latencies, with the daemon's buckets.
fn bucketed(latencies: &[Duration], bounds: &[f64]) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .map(|&b| {
            let n = latencies.partition_point(|d| d.as_secs_f64() <= b);
            (b, n as u64)
        })
        .collect()
}

async fn dispatch(sizes: &Sizes, world: &World) -> anyhow::Result<Value> {
    let n = sizes.dispatch_messages;
    let senders = sender_ids(7000, DISPATCH_SENDERS);
    let sandbox = world.sandbox()?.to_string();
    let dir = tempfile::tempdir()?;
    let mut config = daemon_config(world, dir.path(), "bench");
    config.dispatch.max_in_flight_per_sender = IN_FLIGHT_PER_SENDER;
    add_senders(&mut config, &senders, 1_000_000.0);
    let store = app::open_store(&config).await?;
    let daemon = Daemon::start(config.clone(), store).await?;
    wait_staged(&daemon, n, "staging (campaign paused)").await;
    // The clock stops when the API has accepted every contact: retries and
    // repeats do not count towards `n`.
    let accepted = || -> u64 {
        senders
            .iter()
            .map(|s| {
                metrics()
                    .dispatch
                    .with_label_values(&["bench", s, "accepted"])
                    .get()
            })
            .sum()
    };
    let http = reqwest::Client::new();
    let (cpu0, world0) = (cpu_seconds(me()), cpu_seconds(world.pid()));
    let started = Instant::now();
    unpause(&mut config, "bench");
    daemon.apply(config.clone()).await;
    let progress = bar(n, "dispatch (wadispatch)");
    let mut last = (0, Instant::now());
    loop {
        let done = accepted();
        progress.set_position(done);
        if done >= n {
            break;
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            bail!("dispatch stalled at {done} of {n} contacts accepted");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(me()) - cpu0;
    let world_cpu = cpu_seconds(world.pid()) - world0;
    progress.finish_and_clear();
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

async fn pacing(sizes: &Sizes, world: &World) -> anyhow::Result<Value> {
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
    .await;
    let http = reqwest::Client::new();
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
    }))
}

async fn webhooks(sizes: &Sizes, world: &mut World) -> anyhow::Result<Value> {
    let contacts = sizes.webhook_contacts();
    let dir = tempfile::tempdir()?;
    let mut config = daemon_config(world, dir.path(), PROMO);
    config.whatsapp.app_secret = Some(Secret::new(WEBHOOK_SECRET));
    let store = app::open_store(&config).await?;
    accept_contacts(store.as_ref(), contacts).await?;
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

/// Stages `n` contacts of the promo campaign and records each as accepted
/// with wamid `wamid.<i>`: the state the status webhooks then advance.
async fn accept_contacts(store: &dyn Store, n: u64) -> anyhow::Result<()> {
    let now = Utc::now();
    let progress = bar(n, "staging and accepting");
    for start in (0..n).step_by(5_000) {
        let ids: Vec<u64> = (start..(start + 5_000).min(n)).collect();
        let requests: Vec<StageRequest> = ids
            .iter()
            .map(|&i| StageRequest {
                campaign_id: PROMO.into(),
                contact: ContactKey::raw(phone(i)),
                shard: (i % 8) as u32,
                seq: i,
                params: FrozenParams::default(),
                exclusion: None,
                send_after: None,
                timezone: None,
                tags: vec![],
                staged_at: now,
            })
            .collect();
        store.stage_batch(&requests).await?;
        futures::stream::iter(ids)
            .map(|i| async move {
                let contact = ContactKey::raw(phone(i));
                let claim = ClaimRequest {
                    campaign_id: PROMO.into(),
                    contact: contact.clone(),
                    exclusive: false,
                    replace_engagement: None,
                    owner: "bench".into(),
                    now,
                };
                store.claim(&claim).await?;
                let wamid = format!("wamid.{i}");
                store
                    .record_outcome(PROMO, &contact, &Outcome::Accepted { wamid }, now)
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

// ------------------------------------------------------- orchestrator ----

fn orchestrate() -> anyhow::Result<()> {
    let only: Option<Vec<String>> = std::env::var("WADISPATCH_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    if let Some(names) = &only {
        for n in names {
            if !SCENARIOS.contains(&n.as_str()) {
                bail!("WADISPATCH_BENCH_ONLY names {n:?}; the scenarios are {SCENARIOS:?}");
            }
        }
    }
    let started = Utc::now();
    let mut results = serde_json::Map::new();
    let mut failed = Vec::new();
    for name in SCENARIOS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        eprintln!("== {name}");
        let t = Instant::now();
        match run_scenario(name) {
            Ok(v) => {
                print_table(name, &v);
                results.insert(name.to_string(), v);
            }
            Err(e) => {
                eprintln!("scenario {name} failed: {e:#}");
                results.insert(name.to_string(), json!({"error": format!("{e:#}")}));
                failed.push(name);
            }
        }
        eprintln!("   ({name}: {:.0} s)", t.elapsed().as_secs_f64());
    }
    let targets = targets(&results);
    print_targets(&targets);
    let document = json!({
        "command": "cargo bench --bench load",
        "started_at": started.to_rfc3339(),
        "finished_at": Utc::now().to_rfc3339(),
        "machine": machine(),
        "scenarios": results,
        "targets": targets,
    });
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").to_string());
    let path = std::path::Path::new(&target_dir).join("bench-results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nresults written to {}", path.display());
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

fn run_scenario(name: &str) -> anyhow::Result<Value> {
    let output = Command::new(std::env::current_exe()?)
        .args(["--bench", "--role", "scenario", "--scenario", name])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("starting the scenario process")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout.lines().find_map(|l| l.strip_prefix("RESULT "));
    match (output.status.success(), result) {
        (true, Some(json)) => Ok(serde_json::from_str(json)?),
        _ => bail!(
            "the scenario process ended with {} (its messages are above)",
            output.status
        ),
    }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_string());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0);
    json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_gib": mem_gib,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn print_table(name: &str, v: &Value) {
    let rows: Vec<(String, String)> = match name {
        "ingest" => vec![
            ("records".into(), format!("{}", num(v, "records"))),
            (
                "wadispatch, records/s".into(),
                format!("{:.0}", num(v, "records_per_s")),
            ),
            (
                "  with the group join, records/s".into(),
                format!("{:.0}", num(v, "records_per_s_with_group_join")),
            ),
            (
                "  durable staging, µs/record".into(),
                format!("{:.2}", num(v, "staging_us_per_record")),
            ),
            (
                "  CPU s per 1,000 records".into(),
                format!("{:.3}", num(v, "cpu_s_per_1000")),
            ),
            (
                "raw librdkafka, records/s".into(),
                format!("{:.0}", num(v, "raw_records_per_s")),
            ),
            (
                "ratio raw / wadispatch".into(),
                format!("{:.2}", num(v, "ratio_raw_over_wadispatch")),
            ),
            (
                "peak RSS during ingest, MiB".into(),
                format!("{:.0}", num(v, "peak_rss_mib")),
            ),
            (
                "RSS with all contacts staged, MiB".into(),
                format!("{:.0}", num(v, "rss_staged_mib")),
            ),
        ],
        "dispatch" => vec![
            (
                "messages, senders, in flight".into(),
                format!(
                    "{}, {}, {}",
                    num(v, "messages"),
                    num(v, "senders"),
                    num(v, "in_flight")
                ),
            ),
            (
                "wadispatch, messages/s".into(),
                format!("{:.0}", num(v, "messages_per_s")),
            ),
            (
                "  send latency p50 / p99, ms".into(),
                format!(
                    "{:.1} / {:.1}",
                    num(v, "send_latency_p50_ms"),
                    num(v, "send_latency_p99_ms")
                ),
            ),
            (
                "  CPU s per 1,000 (daemon)".into(),
                format!("{:.3}", num(v, "cpu_s_per_1000")),
            ),
            (
                "  CPU s per 1,000 (sandbox+broker)".into(),
                format!("{:.3}", num(v, "world_cpu_s_per_1000")),
            ),
            (
                "raw POSTs, messages/s".into(),
                format!("{:.0}", num(v, "raw_messages_per_s")),
            ),
            (
                "  latency p50 / p99, ms".into(),
                format!(
                    "{:.1} / {:.1}",
                    num(v, "raw_latency_p50_ms"),
                    num(v, "raw_latency_p99_ms")
                ),
            ),
            (
                "  CPU s per 1,000 (client)".into(),
                format!("{:.3}", num(v, "raw_cpu_s_per_1000")),
            ),
            (
                "ratio raw / wadispatch".into(),
                format!("{:.2}", num(v, "ratio_raw_over_wadispatch")),
            ),
            (
                "recipients messaged twice".into(),
                format!("{}", num(v, "sandbox_duplicate_recipients")),
            ),
        ],
        "pacing" => vec![
            (
                "senders × rate".into(),
                format!(
                    "{} × {} msg/s",
                    num(v, "senders"),
                    num(v, "rate_per_sender")
                ),
            ),
            ("window, s".into(), format!("{:.1}", num(v, "window_s"))),
            (
                "requests per sender vs rate, min / median / max, %".into(),
                format!(
                    "{:+.2} / {:+.2} / {:+.2}",
                    num(v, "deviation_min_pct"),
                    num(v, "deviation_median_pct"),
                    num(v, "deviation_max_pct")
                ),
            ),
            (
                "worst overshoot / undershoot, %".into(),
                format!(
                    "{:.2} / {:.2}",
                    num(v, "overshoot_pct"),
                    num(v, "undershoot_pct")
                ),
            ),
            (
                "130429 answers".into(),
                format!("{}", num(v, "throttled_130429")),
            ),
            (
                "CPU s per 1,000 (daemon)".into(),
                format!("{:.3}", num(v, "cpu_s_per_1000")),
            ),
        ],
        "webhooks" => vec![
            ("status events".into(), format!("{}", num(v, "events"))),
            (
                "applied durably, events/s".into(),
                format!("{:.0}", num(v, "events_per_s")),
            ),
            (
                "POST latency p50 / p99, ms".into(),
                format!(
                    "{:.1} / {:.1}",
                    num(v, "post_latency_p50_ms"),
                    num(v, "post_latency_p99_ms")
                ),
            ),
            (
                "CPU s per 1,000 events (daemon)".into(),
                format!("{:.3}", num(v, "cpu_s_per_1000")),
            ),
        ],
        _ => vec![],
    };
    println!("\n{name}");
    for (what, value) in rows {
        println!("  {what:<38} {value:>22}");
    }
}

/// The targets of README.md, "Performance", measured against this run.
fn targets(results: &serde_json::Map<String, Value>) -> Vec<Value> {
    // A target is judged only at its own size; smaller runs say so.
    let sizes = Sizes::from_env();
    let mut out = Vec::new();
    let mut check = |target: &str, measured: String, met: bool, full_size: bool| {
        out.push(json!({"target": target, "measured": measured, "met": full_size.then_some(met)}));
    };
    if let Some(v) = results.get("ingest").filter(|v| v.get("error").is_none()) {
        let r = num(v, "records_per_s");
        check(
            "ingest ≥ 100,000 records/s",
            format!("{r:.0} records/s"),
            r >= 100_000.0,
            sizes.ingest_records >= 1_000_000,
        );
        let m = num(v, "rss_staged_mib");
        check(
            "RSS ≤ 300 MB with 1,000,000 staged contacts",
            format!("{m:.0} MiB"),
            m * 1.048_576 <= 300.0,
            sizes.ingest_records >= 1_000_000,
        );
    }
    if let Some(v) = results.get("dispatch").filter(|v| v.get("error").is_none()) {
        let r = num(v, "messages_per_s");
        check(
            "dispatch ≥ 20,000 messages/s",
            format!("{r:.0} messages/s"),
            r >= 20_000.0,
            sizes.dispatch_messages >= 200_000,
        );
        let ratio = num(v, "ratio_raw_over_wadispatch");
        check(
            "dispatch within 2× of the raw floor",
            format!("{ratio:.2}×"),
            ratio <= 2.0,
            sizes.dispatch_messages >= 200_000,
        );
    }
    if let Some(v) = results.get("pacing").filter(|v| v.get("error").is_none()) {
        let (over, under) = (num(v, "overshoot_pct"), num(v, "undershoot_pct"));
        check(
            "pacing within ±2 % per sender",
            format!("overshoot {over:.2} %, undershoot {under:.2} %"),
            over <= 2.0 && under <= 2.0,
            sizes.pacing_senders >= 100 && sizes.pacing_secs >= 60,
        );
        let t = num(v, "throttled_130429");
        check(
            "zero 130429",
            format!("{t}"),
            t == 0.0,
            sizes.pacing_senders >= 100 && sizes.pacing_secs >= 60,
        );
    }
    if let Some(v) = results.get("webhooks").filter(|v| v.get("error").is_none()) {
        let r = num(v, "events_per_s");
        check(
            "webhooks ≥ 30,000 status events/s",
            format!("{r:.0} events/s"),
            r >= 30_000.0,
            sizes.webhook_events >= 300_000,
        );
    }
    out
}

fn print_targets(targets: &[Value]) {
    println!("\ntargets (README, \"Performance\")");
    for t in targets {
        println!(
            "  {:<46} {:>24}  {}",
            t["target"].as_str().unwrap_or_default(),
            t["measured"].as_str().unwrap_or_default(),
            match t["met"].as_bool() {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not judged: smaller run than the target's",
            }
        );
    }
}
