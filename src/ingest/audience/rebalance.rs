//! The consumer's context: librdkafka statistics (lag), and the rebalance
//! callbacks that drop a revoked partition's records and commit its
//! watermark, or take new partitions (and hold them while this process
//! waits to be the group's only member).

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use crate::metrics;
use crate::sync::MutexExt;

use super::*;

impl IngestContext {
    pub(super) fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock_or_recover()
    }
}

impl ClientContext for IngestContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::ingest::kafka_log::report_log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::ingest::kafka_log::report_error(&error, reason);
    }

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
