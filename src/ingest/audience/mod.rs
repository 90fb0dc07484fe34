//! The audience consumer: `wa.audience` → validated, staged contacts.
//!
//! One blocking thread owns a `BaseConsumer` (cooperative-sticky group member,
//! `enable.auto.offset.store=false`). It polls records into a batch, decides
//! each one (stage, exclude, dead-letter, or wait for its campaign), writes the
//! batch to the store in one durable write, then stores offsets up to the
//! contiguous watermark; auto-commit sends them to the broker.
//!
//! Rebalance callbacks run inside `poll` on the same thread, so at a revoke
//! nothing is half-staged: the callback drops the buffered and waiting records
//! of the revoked partitions (the next owner re-reads them from the committed
//! offset) and commits the watermark of those partitions synchronously.

mod batch;
mod flow;
mod rebalance;
mod stats;

pub use stats::{DlqFailure, IngestStats};

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use super::catalog::CampaignCatalog;
use super::dlq::DlqProducer;
use super::watermark::Watermarks;
use super::{client_config, kafka_error, IngestError};
use crate::store::{StageRequest, Store};

/// Settings of the audience consumer (from `[kafka]` and `[dispatch]`).
#[derive(Debug, Clone)]
pub struct AudienceIngestConfig {
    pub brokers: String,
    pub group_id: String,
    pub topic: String,
    pub dlq_topic: String,
    pub extra: Vec<(String, String)>,
    pub batch_size: usize,
    pub linger: Duration,
    pub max_buffered: usize,
    pub unknown_campaign_wait: Duration,
    pub shutdown_timeout: Duration,
    pub default_region: Option<String>,
    /// With a store of this process only (the embedded backend), another
    /// member of the group would stage and send contacts this process also
    /// holds after a rebalance. Until this process has held every partition
    /// at once, its partitions stay paused and nothing is staged; when that
    /// does not happen within this time (a dead member's session expires
    /// well before), ingest stops with [`IngestError::SharedGroup`].
    pub sole_member_within: Option<Duration>,
}

/// A fetched record we own until it is durable.
#[derive(Debug)]
struct Raw {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    fetched_at: Instant,
}

#[derive(Default)]
struct Shared {
    marks: Watermarks,
    buffer: Vec<Raw>,
    waiting: Vec<Raw>,
    /// Dead letters not acknowledged by the DLQ topic yet, with their error.
    /// Like waiting records they hold their partition's watermark.
    unwritten: Vec<(Raw, String)>,
    /// When the next DLQ write of `unwritten` is due, and the back-off.
    dlq_retry: Option<(Instant, Duration)>,
    assigned: BTreeSet<i32>,
    paused: BTreeSet<i32>,
    /// Since when this process waits to hold every partition (see
    /// `AudienceIngestConfig::sole_member_within`); nothing is staged
    /// meanwhile.
    sole_wait: Option<Instant>,
    /// This process held every partition once: the check is over.
    held_all: bool,
    /// Partitions paused by the wait are to be resumed by the loop.
    resume_due: bool,
}

pub struct IngestContext {
    topic: String,
    /// The dead-letter topic (the label of the unwritten-letters gauge).
    dlq_topic: String,
    shared: Mutex<Shared>,
    stats: Arc<IngestStats>,
    /// Set once the final commit is done: the revoke that closing triggers
    /// then has nothing left to commit.
    closing: AtomicBool,
    /// `AudienceIngestConfig::sole_member_within` is set.
    sole: bool,
}

/// What to do with one record.
enum Decision {
    Stage(Box<StageRequest>),
    DeadLetter(String),
    Wait,
}

pub struct AudienceIngest {
    consumer: BaseConsumer<IngestContext>,
    config: AudienceIngestConfig,
    store: Arc<dyn Store>,
    catalog: CampaignCatalog,
    dlq: DlqProducer,
    rt: tokio::runtime::Handle,
    stats: Arc<IngestStats>,
}

impl AudienceIngest {
    pub fn new(
        config: AudienceIngestConfig,
        store: Arc<dyn Store>,
        catalog: CampaignCatalog,
        rt: tokio::runtime::Handle,
        stats: Arc<IngestStats>,
    ) -> Result<Self, IngestError> {
        let mut cfg = client_config(&config.brokers, &config.extra);
        // Managed: correctness depends on these (validation refuses them in
        // [kafka.client]).
        cfg.set("group.id", &config.group_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("enable.partition.eof", "false");
        // Defaults the operator may override in [kafka.client].
        super::set_default(&mut cfg, "auto.commit.interval.ms", "1000");
        super::set_default(&mut cfg, "auto.offset.reset", "earliest");
        super::set_default(&mut cfg, "statistics.interval.ms", "5000");
        // Bounds what librdkafka prefetches per partition: backpressure
        // reaches the broker instead of our memory.
        super::set_default(&mut cfg, "queued.max.messages.kbytes", "16384");
        let context = IngestContext {
            topic: config.topic.clone(),
            dlq_topic: config.dlq_topic.clone(),
            shared: Mutex::default(),
            stats: stats.clone(),
            closing: AtomicBool::new(false),
            sole: config.sole_member_within.is_some(),
        };
        let consumer: BaseConsumer<IngestContext> = cfg
            .create_with_context(context)
            .map_err(kafka_error("create audience consumer"))?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(kafka_error("subscribe to the audience topic"))?;
        if let Ok(md) =
            consumer.fetch_metadata(Some(&config.topic), std::time::Duration::from_secs(10))
        {
            let n = md
                .topics()
                .iter()
                .find(|t| t.name() == config.topic)
                .map_or(0, |t| t.partitions().len());
            stats.total_partitions.store(n as u32, Ordering::Relaxed);
        }
        let dlq = DlqProducer::new(&config.brokers, &config.dlq_topic, &config.extra)?;
        Ok(AudienceIngest {
            consumer,
            config,
            store,
            catalog,
            dlq,
            rt,
            stats,
        })
    }

    pub fn stats(&self) -> Arc<IngestStats> {
        self.stats.clone()
    }

    /// Runs until `stop` is set, then shuts down cleanly within
    /// `shutdown_timeout`. Blocking: run it on a dedicated thread.
    pub fn run(self, stop: Arc<AtomicBool>) -> Result<(), IngestError> {
        while !stop.load(Ordering::Acquire) {
            self.stats.heartbeat.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.check_sole_member() {
                self.shutdown();
                return Err(e);
            }
            self.fill_batch(&stop);
            let batch = self.take_work();
            if !batch.is_empty() {
                self.process(batch, None);
            }
            self.write_dead_letters();
            self.store_offsets();
            self.apply_backpressure();
        }
        self.shutdown();
        Ok(())
    }

    fn fill_batch(&self, stop: &AtomicBool) {
        let started = Instant::now();
        if self.consumer.context().shared().sole_wait.is_some() {
            // Partitions paused: a poll serves the group (heartbeats,
            // rebalances) and waits instead of spinning on a full buffer.
            if let Some(Ok(msg)) = self.consumer.poll(Duration::from_millis(100)) {
                self.buffer(&msg);
            }
            return;
        }
        loop {
            let buffered = self.consumer.context().shared().buffer.len();
            if buffered >= self.config.batch_size || stop.load(Ordering::Acquire) {
                return;
            }
            let elapsed = started.elapsed();
            if elapsed >= self.config.linger && buffered > 0 {
                return;
            }
            let wait = if buffered > 0 {
                self.config.linger - elapsed
            } else {
                Duration::from_millis(100)
            };
            match self.consumer.poll(wait) {
                Some(Ok(msg)) => self.buffer(&msg),
                Some(Err(e)) => {
                    crate::ingest::kafka_log::consumer_error("audience", &e);
                    return;
                }
                None => {
                    if buffered == 0 {
                        // Idle: still give waiting records a chance.
                        return;
                    }
                }
            }
        }
    }

    fn buffer(&self, msg: &rdkafka::message::BorrowedMessage<'_>) {
        let raw = Raw {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload: msg.payload().map(<[u8]>::to_vec),
            fetched_at: Instant::now(),
        };
        let mut shared = self.consumer.context().shared();
        shared.marks.begin(raw.partition, raw.offset);
        shared.buffer.push(raw);
    }

    /// The buffered batch plus waiting records whose campaign is now known
    /// (or whose wait expired: they go to the DLQ).
    fn take_work(&self) -> Vec<Raw> {
        let mut shared = self.consumer.context().shared();
        if shared.sole_wait.is_some() {
            // Not the group's only member (yet): fetched records stay
            // buffered, unstaged and uncommitted.
            return Vec::new();
        }
        let mut batch = std::mem::take(&mut shared.buffer);
        if !shared.waiting.is_empty() {
            let waiting = std::mem::take(&mut shared.waiting);
            for raw in waiting {
                let ready = (self.catalog.is_caught_up()
                    && raw.fetched_at.elapsed() >= self.config.unknown_campaign_wait)
                    || campaign_of(&raw).is_some_and(|c| self.catalog.get(&c).is_some());
                if ready {
                    batch.push(raw);
                } else {
                    shared.waiting.push(raw);
                }
            }
        }
        batch
    }
}

fn campaign_of(raw: &Raw) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        campaign_id: Option<String>,
    }
    raw.payload
        .as_deref()
        .and_then(|p| serde_json::from_slice::<Probe>(p).ok())
        .and_then(|p| p.campaign_id)
}
