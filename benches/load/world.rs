//! The world process: the Kafka protocol broker (librdkafka's mock cluster)
//! and the WhatsApp sandbox a scenario runs against, the records it
//! produces before the daemon starts, and the webhook load it posts.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use chrono::Utc;
use futures::StreamExt;
use indicatif::ProgressBar;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use wadispatch::app;
use wadispatch::config::Config;
use wadispatch::sandbox::{Sandbox, SandboxConfig, SandboxStats};

use super::*;

/// Topics of the default configuration, with the audience's partitions.
pub(super) fn create_topics(
    cluster: &MockCluster<'static, DefaultProducerContext>,
    config: &Config,
    audience_partitions: i32,
) -> anyhow::Result<()> {
    let t = &config.kafka.topics;
    // The mock broker keeps about 5 MB per partition and drops older
    // segments: enough partitions keep every record readable.
    cluster.create_topic(&t.audience, audience_partitions, 1)?;
    for topic in [
        &t.campaigns,
        &t.audience_dlq,
        &t.suppressions,
        &t.conversions,
    ] {
        cluster.create_topic(topic, 1, 1)?;
    }
    cluster.create_topic(&t.events, 8, 1)?;
    Ok(())
}

pub(super) fn campaign_spec(id: &str, senders: &[String]) -> String {
    let senders: Vec<String> = senders.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"{{"id":"{id}","state":"active","senders":[{}],"exclusive":false,"template":{{"name":"promo","language":"es_MX","body":["{{{{name}}}}"]}}}}"#,
        senders.join(",")
    )
}

/// The triggered campaign: a reminder a minute after each event, cancelled
/// on an order (no cancel comes here), at most 5 per contact a day.
pub(super) fn triggered_spec(senders: &[String]) -> String {
    let senders: Vec<String> = senders.iter().map(|s| format!("{s:?}")).collect();
    format!(
        r#"{{"id":"{TRIGGERED}","state":"active","senders":[{}],"template":{{"name":"cart_reminder","language":"es_MX","body":["{{{{name}}}}"]}},"trigger":{{"delay":"{TRIGGER_DELAY_SECS}s","cancel_on":["order_placed"],"max_per_contact":{{"count":5,"per":"1d"}}}}}}"#,
        senders.join(",")
    )
}

/// Produces the campaign and `n` audience records; `record(i)` is the value.
pub(super) async fn produce(
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
pub(super) fn world(scenario: &str) -> anyhow::Result<()> {
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
            "dispatch" | "pacing" | "pacing-busy" | "scale" => {
                let (id, senders, n, mps) = if scenario == "dispatch" {
                    ("bench", sender_ids(7000, DISPATCH_SENDERS), sizes.dispatch_messages, 0.0)
                } else if scenario == "scale" {
                    ("bench", sender_ids(7000, DISPATCH_SENDERS), sizes.scale_contacts, 0.0)
                } else {
                    ("pace", sender_ids(8000, sizes.pacing_senders), sizes.pacing_contacts(), PACING_RATE)
                };
                // librdkafka's mock broker keeps at most 5 MiB of records per
                // partition (it drops the oldest): the scale scenario's
                // millions take one partition per 30,000.
                let partitions = if scenario == "scale" { n.div_ceil(30_000).max(32) as i32 } else { 32 };
                create_topics(&cluster, &config, partitions)?;
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
            "triggers" => {
                create_topics(&cluster, &config, 32)?;
                sandbox = Some(Sandbox::start(sandbox_at(0.0)).await?);
                let senders = sender_ids(9000, DISPATCH_SENDERS);
                let spec = triggered_spec(&senders);
                // Every event happened now: all fall due a minute from here.
                let event_at = Utc::now().to_rfc3339();
                produce(&brokers, &config, (TRIGGERED, &spec), sizes.trigger_events, |i| {
                    format!(
                        r#"{{"campaign_id":"{TRIGGERED}","contact":{{"phone":"{}","name":"N{i}"}},"occurrence":"cart-{i}","event_at":"{event_at}","variables":{{"name":"N{i}"}}}}"#,
                        phone(i)
                    )
                })
                .await?;
            }
            "journeys" => {
                create_topics(&cluster, &config, 8)?;
                produce(&brokers, &config, (JOURNEY, JOURNEY_SPEC), 0, |_| String::new()).await?;
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
pub(super) async fn post_webhooks(url: &str, contacts: u64) -> anyhow::Result<Value> {
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
pub(super) async fn timed_posts(
    requests: Vec<(reqwest::RequestBuilder, u64)>,
    in_flight: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Vec<Duration>> {
    let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(requests)
        .map(|(mut request, weight)| async move {
            let t = Instant::now();
            // A pooled connection the server closed as the request went
            // out fails with "connection closed before message completed";
            // a client sends it again (the time counts from the first try).
            let mut tries = 0;
            let answer = loop {
                let again = request.try_clone();
                match request.send().await {
                    Ok(answer) => break answer,
                    Err(e) if tries < 2 && again.is_some() && !e.is_status() => {
                        tries += 1;
                        request = again.expect("checked above");
                    }
                    Err(e) => return Err(e.into()),
                }
            };
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

pub(super) fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// The world process of a scenario, killed when dropped.
pub(super) struct World {
    pub(super) child: Child,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) stdout: Option<BufReader<ChildStdout>>,
    pub(super) brokers: String,
    pub(super) sandbox: Option<String>,
}

impl World {
    pub(super) fn start(scenario: &str) -> anyhow::Result<World> {
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

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn sandbox(&self) -> anyhow::Result<&str> {
        self.sandbox.as_deref().context("this world has no sandbox")
    }

    /// Sends one command and waits (off the async runtime) for its `DONE` line.
    pub(super) async fn command(&mut self, command: String) -> anyhow::Result<Value> {
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

pub(super) async fn sandbox_stats(
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<SandboxStats> {
    Ok(http
        .get(format!("{base}/sandbox/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}
