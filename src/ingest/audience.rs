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

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use super::catalog::{CampaignCatalog, CatalogEntry};
use super::dlq::{DeadLetter, DlqProducer};
use super::watermark::Watermarks;
use super::{client_config, kafka_error, IngestError};
use crate::domain::{self, AudienceRecord, DesiredState, ExclusionReason, RecordError};
use crate::metrics::{self, AudienceResult};
use crate::store::{StageOutcome, StageRequest, Store};
use crate::sync::MutexExt;

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

/// Counters the CLI and health checks read.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub staged: AtomicU64,
    pub excluded: AtomicU64,
    pub duplicate: AtomicU64,
    pub dlq: AtomicU64,
    pub waiting: AtomicU64,
    /// Set once the group gave this process an assignment.
    pub assigned: AtomicBool,
    /// Why ingest stopped for good, if it did (the daemon exits with it).
    pub fatal: Mutex<Option<String>>,
    /// Waiting to be the consumer group's only member (embedded store).
    pub sole_wait: AtomicBool,
    /// Bumped on every loop iteration (systemd watchdog: progress, not a timer).
    pub heartbeat: AtomicU64,
    /// Audience partitions this process owns: the shards it dispatches.
    pub owned: Mutex<BTreeSet<i32>>,
    /// Partitions of the audience topic (for the instance's share of rates).
    pub total_partitions: std::sync::atomic::AtomicU32,
    /// What the ingest loop is retrying right now (a store write), for
    /// systemd's `STATUS=` and the logs; `None` when it is not retrying.
    pub retrying: Mutex<Option<String>>,
    /// Dead letters the DLQ topic has not acknowledged yet.
    pub dead_letters: Mutex<Option<DlqFailure>>,
}

/// Dead letters waiting because the DLQ topic refuses or cannot take them.
#[derive(Debug, Clone)]
pub struct DlqFailure {
    pub topic: String,
    pub records: usize,
    pub since: Instant,
    pub error: String,
}

impl DlqFailure {
    /// The readiness reason and `STATUS=` line.
    pub fn describe(&self) -> String {
        format!(
            "dead-letter topic {}: {} audience records not written for {} s ({}); create the topic or fix its ACLs and size limit: their partitions stay behind them and nothing is lost",
            self.topic,
            self.records,
            self.since.elapsed().as_secs(),
            self.error
        )
    }
}

impl IngestStats {
    pub fn total(&self) -> u64 {
        self.staged.load(Ordering::Relaxed)
            + self.excluded.load(Ordering::Relaxed)
            + self.duplicate.load(Ordering::Relaxed)
            + self.dlq.load(Ordering::Relaxed)
    }

    /// What keeps ingest from its normal course (store writes being
    /// retried, a failing DLQ), one line each; empty when nothing does.
    pub fn troubles(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(what) = self.retrying.lock_or_recover().clone() {
            out.push(format!("retrying: {what}"));
        }
        if let Some(f) = &*self.dead_letters.lock_or_recover() {
            out.push(f.describe());
        }
        out
    }

    pub fn owned_shards(&self) -> Vec<u32> {
        self.owned
            .lock_or_recover()
            .iter()
            .map(|p| *p as u32)
            .collect()
    }

    /// This instance's share of every sender's rate: owned partitions over
    /// all partitions (docs/ARCHITECTURE.md, "Data flow").
    pub fn share(&self) -> f64 {
        let total = self.total_partitions.load(Ordering::Relaxed);
        let owned = self.owned.lock_or_recover().len() as u32;
        if total == 0 {
            0.0
        } else {
            f64::from(owned.min(total)) / f64::from(total)
        }
    }
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

impl IngestContext {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock_or_recover()
    }
}

impl ClientContext for IngestContext {
    fn stats(&self, statistics: Statistics) {
        // Consumer lag summed over the partitions this process owns.
        let lag: i64 = statistics
            .topics
            .get(&self.topic)
            .map(|t| {
                t.partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                    .map(|p| p.consumer_lag)
                    .sum()
            })
            .unwrap_or(0);
        metrics::consumer_lag(&self.topic, lag);
    }
}

impl ConsumerContext for IngestContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let lost = consumer.assignment_lost() || self.closing.load(Ordering::Acquire);
        let mut shared = self.shared();
        let revoked: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let mut commit = TopicPartitionList::new();
        for &p in &revoked {
            let held = |s: &Shared| s.buffer.len() + s.waiting.len() + s.unwritten.len();
            let before = held(&shared);
            shared.buffer.retain(|r| r.partition != p);
            shared.waiting.retain(|r| r.partition != p);
            shared.unwritten.retain(|(r, _)| r.partition != p);
            let dropped = before - held(&shared);
            if let Some(next) = shared.marks.remove(p).and_then(|m| m.progress()) {
                if !lost {
                    let _ = commit.add_partition_offset(&self.topic, p, Offset::Offset(next));
                }
            }
            shared.assigned.remove(&p);
            shared.paused.remove(&p);
            self.stats.owned.lock_or_recover().remove(&p);
            tracing::info!(partition = p, dropped, lost, "audience partition revoked");
        }
        self.stats
            .waiting
            .store(shared.waiting.len() as u64, Ordering::Relaxed);
        // The gauges and the DLQ failure follow what this process still holds.
        {
            let mut failure = self.stats.dead_letters.lock_or_recover();
            if shared.unwritten.is_empty() {
                shared.dlq_retry = None;
                *failure = None;
            } else if let Some(f) = failure.as_mut() {
                f.records = shared.unwritten.len();
            }
        }
        metrics::dead_letters_unwritten(&self.dlq_topic, shared.unwritten.len());
        metrics::paused_partitions(&self.topic, shared.paused.len());
        drop(shared);
        if commit.count() > 0 {
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(error = %e, "commit of revoked partitions failed; the next owner re-reads from the previous commit (staging is idempotent)");
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut shared = self.shared();
            let mut owned = self.stats.owned.lock_or_recover();
            for e in tpl.elements_for_topic(&self.topic) {
                shared.assigned.insert(e.partition());
                owned.insert(e.partition());
            }
            drop(owned);
            tracing::info!(partitions = ?shared.assigned, "audience partitions assigned");
            self.stats.assigned.store(true, Ordering::Release);
            let total = self.stats.total_partitions.load(Ordering::Relaxed) as usize;
            if self.sole && !shared.held_all && total > 0 && shared.assigned.len() >= total {
                // The only member (the usual case): nothing was held back,
                // or what the wait paused goes on now.
                shared.held_all = true;
                shared.resume_due = shared.sole_wait.take().is_some() && !shared.paused.is_empty();
                self.stats.sole_wait.store(false, Ordering::Release);
                tracing::info!(
                    partitions = total,
                    "this process holds every audience partition: the only member of its group"
                );
            } else if self.sole && !shared.held_all {
                // Held until this process is the group's only member.
                let mut tpl = TopicPartitionList::new();
                for &p in &shared.assigned {
                    tpl.add_partition(&self.topic, p);
                }
                if let Err(e) = consumer.pause(&tpl) {
                    tracing::warn!(error = %e, "cannot pause audience partitions while waiting to be the group's only member (nothing is staged meanwhile)");
                }
                let assigned = shared.assigned.clone();
                shared.paused.extend(assigned);
                shared.sole_wait.get_or_insert_with(Instant::now);
                self.stats.sole_wait.store(true, Ordering::Release);
            }
        }
    }
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
                    tracing::warn!(error = %e, "audience consumer error; librdkafka retries");
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

    /// Ends the wait to be the group's only member: resumes the partitions
    /// once this process holds all of them, or fails past the deadline.
    fn check_sole_member(&self) -> Result<(), IngestError> {
        let Some(within) = self.config.sole_member_within else {
            return Ok(());
        };
        let (since, held) = {
            let shared = self.consumer.context().shared();
            if shared.resume_due {
                // The callback found every partition assigned at last.
                drop(shared);
                self.consumer.context().shared().resume_due = false;
                self.resume_all();
                return Ok(());
            }
            match shared.sole_wait {
                Some(since) => (since, shared.assigned.len()),
                None => return Ok(()),
            }
        };
        let mut total = self.stats.total_partitions.load(Ordering::Relaxed) as usize;
        if total == 0 {
            total = self.partition_count();
        }
        if total > 0 && held >= total {
            {
                let mut shared = self.consumer.context().shared();
                shared.sole_wait = None;
                shared.held_all = true;
            }
            self.stats.sole_wait.store(false, Ordering::Release);
            tracing::info!(partitions = total, "this process holds every audience partition: the only member of its group; staging starts");
            self.resume_all();
            return Ok(());
        }
        if since.elapsed() > within {
            return Err(IngestError::SharedGroup {
                group: self.config.group_id.clone(),
                held,
                total,
            });
        }
        Ok(())
    }

    fn partition_count(&self) -> usize {
        let n = self
            .consumer
            .fetch_metadata(Some(&self.config.topic), Duration::from_secs(2))
            .ok()
            .and_then(|md| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == self.config.topic)
                    .map(|t| t.partitions().len())
            })
            .unwrap_or(0);
        self.stats
            .total_partitions
            .store(n as u32, Ordering::Relaxed);
        n
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

    fn decide(
        &self,
        raw: &Raw,
        cache: &mut HashMap<String, Option<Arc<CatalogEntry>>>,
    ) -> Decision {
        let Some(payload) = raw.payload.as_deref() else {
            return Decision::DeadLetter("empty record (tombstone) on the audience topic".into());
        };
        let record = match AudienceRecord::from_json(payload) {
            Ok(r) => r,
            Err(RecordError::NoCampaign) => {
                return Decision::DeadLetter(
                    "record names no campaign (campaign_id is missing or empty)".into(),
                )
            }
            Err(e) => return Decision::DeadLetter(e.to_string()),
        };
        let entry = cache
            .entry(record.campaign_id.clone())
            .or_insert_with(|| self.catalog.get(&record.campaign_id))
            .clone();
        let Some(entry) = entry else {
            // Until the campaigns topic was read to its end, "unknown" may
            // only mean "not read yet": wait, whatever the clock says.
            if self.catalog.is_caught_up()
                && raw.fetched_at.elapsed() >= self.config.unknown_campaign_wait
            {
                return Decision::DeadLetter(format!(
                    "campaign {} is not known on the campaigns topic (waited {} s; publish its spec first)",
                    record.campaign_id,
                    raw.fetched_at.elapsed().as_secs()
                ));
            }
            return Decision::Wait;
        };
        let staged = domain::stage(
            &entry.spec,
            &entry.template,
            raw.key.as_deref(),
            &record,
            self.config.default_region.as_deref(),
        );
        let mut exclusion = staged.exclusion;
        if exclusion.is_none() && entry.spec.state == DesiredState::Ended {
            exclusion = Some(ExclusionReason::OutsideWindow);
        }
        Decision::Stage(Box::new(StageRequest {
            campaign_id: record.campaign_id,
            contact: staged.contact,
            shard: raw.partition.max(0) as u32,
            seq: raw.offset.max(0) as u64,
            params: staged.params,
            exclusion,
            send_after: staged.send_after,
            timezone: staged.timezone,
            tags: record.tags,
            staged_at: Utc::now(),
        }))
    }

    /// Decides, stages and dead-letters one batch; marks every record that
    /// became durable complete. `deadline` bounds retries during shutdown.
    fn process(&self, batch: Vec<Raw>, deadline: Option<Instant>) -> bool {
        // Decoding and phone validation are CPU work: split large batches
        // across two threads (the machine profile we size for has 2 cores).
        let decisions: Vec<Decision> = if batch.len() >= 1024 {
            let mid = batch.len() / 2;
            std::thread::scope(|s| {
                let (a, b) = batch.split_at(mid);
                let h = s.spawn(|| {
                    let mut cache = HashMap::new();
                    a.iter()
                        .map(|r| self.decide(r, &mut cache))
                        .collect::<Vec<_>>()
                });
                let mut cache = HashMap::new();
                let tail: Vec<Decision> = b.iter().map(|r| self.decide(r, &mut cache)).collect();
                let mut head = h.join().unwrap_or_default();
                head.extend(tail);
                head
            })
        } else {
            let mut cache = HashMap::new();
            batch.iter().map(|r| self.decide(r, &mut cache)).collect()
        };

        let mut requests = Vec::new();
        let mut request_src = Vec::new();
        let mut letters = Vec::new();
        let mut waiting = Vec::new();
        for (raw, decision) in batch.into_iter().zip(decisions) {
            match decision {
                Decision::Stage(req) => {
                    requests.push(*req);
                    request_src.push((raw.partition, raw.offset));
                }
                Decision::DeadLetter(error) => letters.push((raw, error)),
                Decision::Wait => waiting.push(raw),
            }
        }

        if !requests.is_empty() {
            let outcomes = match self.retry("stage audience batch", deadline, || {
                self.rt
                    .block_on(self.store.stage_batch(&requests))
                    .map_err(IngestError::from)
            }) {
                Some(o) => o,
                None => return false,
            };
            let (mut staged, mut excluded, mut dup) = (0u64, 0u64, 0u64);
            for (req, outcome) in requests.iter().zip(&outcomes) {
                match outcome {
                    StageOutcome::Staged => staged += 1,
                    StageOutcome::Excluded => {
                        excluded += 1;
                        if let Some(reason) = &req.exclusion {
                            metrics::exclusion(&req.campaign_id, reason.label());
                        }
                    }
                    StageOutcome::Duplicate => dup += 1,
                }
            }
            self.count(AudienceResult::Staged, &self.stats.staged, staged);
            self.count(AudienceResult::Excluded, &self.stats.excluded, excluded);
            self.count(AudienceResult::Duplicate, &self.stats.duplicate, dup);
            let mut shared = self.consumer.context().shared();
            for (p, o) in request_src {
                shared.marks.complete(p, o);
            }
        }

        if !letters.is_empty() {
            for (raw, error) in &letters {
                tracing::warn!(partition = raw.partition, offset = raw.offset, error = %error, "audience record sent to the dead-letter topic");
            }
            self.consumer.context().shared().unwritten.extend(letters);
            self.write_dead_letters();
        }

        let mut shared = self.consumer.context().shared();
        // A record waits only while its partition is still ours.
        waiting.retain(|r| shared.assigned.contains(&r.partition));
        shared.waiting.extend(waiting);
        self.stats
            .waiting
            .store(shared.waiting.len() as u64, Ordering::Relaxed);
        true
    }

    /// One write of every dead letter not yet acknowledged, when it is due
    /// (at once the first time, then backing off from 1 s to 60 s while the
    /// DLQ keeps failing). A record is marked
    /// complete only once the DLQ acknowledged it: until then its partition's
    /// committed offset stays before it, so neither a restart nor a
    /// rebalance loses it. Between tries the loop goes on (the heartbeat
    /// moves, records of other partitions are staged); a try itself blocks
    /// the loop until the broker answers or the producer's 10 s
    /// `message.timeout.ms` runs out.
    fn write_dead_letters(&self) {
        let letters = {
            let mut shared = self.consumer.context().shared();
            if shared.unwritten.is_empty() {
                return;
            }
            let due = shared.dlq_retry.is_none_or(|(at, _)| Instant::now() >= at);
            if !due {
                return;
            }
            std::mem::take(&mut shared.unwritten)
        };
        let dead: Vec<DeadLetter<'_>> = letters
            .iter()
            .map(|(raw, error)| DeadLetter {
                source_topic: &self.config.topic,
                partition: raw.partition,
                offset: raw.offset,
                key: raw.key.as_deref(),
                payload: raw.payload.as_deref(),
                error,
            })
            .collect();
        let result = self.rt.block_on(self.dlq.send_all(&dead));
        drop(dead);
        let mut shared = self.consumer.context().shared();
        let mut failure = self.stats.dead_letters.lock_or_recover();
        match result {
            Ok(()) => {
                self.count(AudienceResult::Dlq, &self.stats.dlq, letters.len() as u64);
                for (raw, _) in &letters {
                    shared.marks.complete(raw.partition, raw.offset);
                }
                if shared.unwritten.is_empty() {
                    if failure.take().is_some() {
                        tracing::info!(topic = %self.dlq.topic(), "dead-letter topic takes writes again");
                    }
                    shared.dlq_retry = None;
                }
            }
            Err(e) => {
                let delay = shared.dlq_retry.map_or(Duration::from_secs(1), |(_, d)| {
                    (d * 2).min(Duration::from_secs(60))
                });
                shared.dlq_retry = Some((Instant::now() + delay, delay));
                // A letter waits only while its partition is still ours.
                let assigned = shared.assigned.clone();
                shared.unwritten.extend(
                    letters
                        .into_iter()
                        .filter(|(r, _)| assigned.contains(&r.partition)),
                );
                let since = failure.as_ref().map_or_else(Instant::now, |f| f.since);
                let now = DlqFailure {
                    topic: self.dlq.topic().to_string(),
                    records: shared.unwritten.len(),
                    since,
                    error: e.to_string(),
                };
                tracing::error!(retry_in_s = delay.as_secs(), "{}", now.describe());
                *failure = Some(now);
            }
        }
        metrics::dead_letters_unwritten(self.dlq.topic(), shared.unwritten.len());
    }

    fn count(&self, result: AudienceResult, counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
            metrics::audience_records(result, n);
        }
    }

    /// Retries `op` with capped exponential backoff until it succeeds or the
    /// deadline passes. While retrying, the owned partitions stay paused so
    /// nothing more is fetched (backpressure reaches the broker).
    fn retry<T>(
        &self,
        what: &str,
        deadline: Option<Instant>,
        mut op: impl FnMut() -> Result<T, IngestError>,
    ) -> Option<T> {
        let mut delay = Duration::from_millis(100);
        let mut paused = false;
        loop {
            // Retrying is progress for the systemd watchdog: a store outage
            // must not become a restart loop (`STATUS=` says what we wait for).
            self.stats.heartbeat.fetch_add(1, Ordering::Relaxed);
            match op() {
                Ok(v) => {
                    if paused {
                        self.resume_all();
                        *self.stats.retrying.lock_or_recover() = None;
                    }
                    return Some(v);
                }
                Err(e) => {
                    *self.stats.retrying.lock_or_recover() = Some(format!("cannot {what}: {e}"));
                    tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot {what}; retrying (offsets are not stored meanwhile)");
                    if !paused {
                        self.pause_all();
                        paused = true;
                    }
                    if deadline.is_some_and(|d| Instant::now() + delay > d) {
                        *self.stats.retrying.lock_or_recover() = None;
                        return None;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn pause_all(&self) {
        let assigned: Vec<i32> = self
            .consumer
            .context()
            .shared()
            .assigned
            .iter()
            .copied()
            .collect();
        self.set_paused(&assigned, true);
    }

    fn resume_all(&self) {
        let paused: Vec<i32> = self
            .consumer
            .context()
            .shared()
            .paused
            .iter()
            .copied()
            .collect();
        self.set_paused(&paused, false);
    }

    fn set_paused(&self, partitions: &[i32], pause: bool) {
        if partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.config.topic, p);
        }
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, pause, "cannot change the pause state of audience partitions");
            return;
        }
        let mut shared = self.consumer.context().shared();
        for &p in partitions {
            if pause {
                shared.paused.insert(p);
            } else {
                shared.paused.remove(&p);
            }
        }
        metrics::paused_partitions(&self.config.topic, shared.paused.len());
    }

    /// Records waiting for an unknown campaign or for the DLQ hold the
    /// watermark of their partition; past `max_buffered` of them, pause those
    /// partitions so the backlog stops growing. Resume once it drains below
    /// half.
    fn apply_backpressure(&self) {
        let (waiting_partitions, count, paused) = {
            let shared = self.consumer.context().shared();
            if shared.sole_wait.is_some() {
                return; // paused until this process is the only member
            }
            let parts: BTreeSet<i32> = shared
                .waiting
                .iter()
                .chain(shared.unwritten.iter().map(|(r, _)| r))
                .map(|r| r.partition)
                .collect();
            (
                parts,
                shared.waiting.len() + shared.unwritten.len(),
                shared.paused.clone(),
            )
        };
        if count >= self.config.max_buffered {
            let to_pause: Vec<i32> = waiting_partitions.difference(&paused).copied().collect();
            if !to_pause.is_empty() {
                tracing::warn!(waiting = count, partitions = ?to_pause, "audience records wait for unknown campaigns or the dead-letter topic; pausing their partitions");
                self.set_paused(&to_pause, true);
            }
        } else if count <= self.config.max_buffered / 2 && !paused.is_empty() {
            let to_resume: Vec<i32> = paused.into_iter().collect();
            self.set_paused(&to_resume, false);
        }
    }

    fn store_offsets(&self) {
        let advances = self.consumer.context().shared().marks.advances();
        if advances.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in &advances {
            let _ = tpl.add_partition_offset(&self.config.topic, *p, Offset::Offset(*next));
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // Happens when a partition was revoked in between: its offsets
            // are the next owner's business.
            tracing::debug!(error = %e, "storing audience offsets failed");
        }
    }

    fn shutdown(self) {
        // Four fifths of the budget: the caller waits for the whole of it.
        let deadline = Instant::now() + self.config.shutdown_timeout.mul_f32(0.8);
        tracing::info!("audience ingest stopping: finishing fetched records");
        self.pause_all();
        // Records already fetched are staged. Records waiting for an unknown
        // campaign are not: the watermark stops before them, so the next
        // start (or the next owner) reads them again.
        let batch = std::mem::take(&mut self.consumer.context().shared().buffer);
        if !batch.is_empty() {
            self.process(batch, Some(deadline));
        }
        // Dead letters the DLQ did not take are read again at the next start
        // (the watermark stops before them).
        self.store_offsets();
        tracing::info!(
            staged = self.stats.staged.load(Ordering::Relaxed),
            dlq = self.stats.dlq.load(Ordering::Relaxed),
            "audience ingest drained"
        );
        // Commit exactly the watermark (not only the stored offsets) and leave
        // the group so partitions move to other instances at once.
        let mut tpl = TopicPartitionList::new();
        {
            let shared = self.consumer.context().shared();
            for &p in &shared.assigned {
                if let Some(next) = shared.marks.committable(p) {
                    let _ = tpl.add_partition_offset(&self.config.topic, p, Offset::Offset(next));
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(error = %e, "final audience offset commit failed; the next start re-reads from the previous commit (staging is idempotent)");
            }
        }
        self.consumer
            .context()
            .closing
            .store(true, Ordering::Release);
        // Leave the group within the deadline. Dropping a consumer waits for
        // the group leave with no bound; a stuck coordinator must not keep
        // the process from exiting (the broker's session timeout then
        // releases our partitions, and our offsets are already committed).
        let closed = match self.consumer.close_queue() {
            Ok(()) => {
                while !self.consumer.closed() && Instant::now() < deadline {
                    let _ = self.consumer.poll(Duration::from_millis(50));
                }
                self.consumer.closed()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot close the audience consumer");
                false
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.dlq.flush(remaining.min(Duration::from_secs(5)));
        if !closed {
            tracing::warn!("audience consumer did not leave the group in time; its partitions move after the session timeout");
            std::mem::forget(self.consumer);
            return;
        }
        tracing::info!("audience consumer left the group");
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
