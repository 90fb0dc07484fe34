//! Reader of a compacted topic that is state, not a stream: every partition
//! from the beginning, no consumer group, nothing committed. Used for
//! `wa.campaigns` and `wa.suppressions`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{kafka_error, IngestError};

pub struct CompactedReader {
    consumer: BaseConsumer<super::kafka_log::QuietContext>,
    topic: String,
    what: &'static str,
}

impl CompactedReader {
    /// `what` names the topic in logs ("campaigns", "suppressions").
    pub fn new(
        brokers: &str,
        topic: &str,
        extra: &[(String, String)],
        what: &'static str,
    ) -> Result<Self, IngestError> {
        let mut cfg = super::client_config(brokers, extra);
        // librdkafka needs a group id to poll, but the reader never joins the
        // group: it assigns every partition itself and commits nothing (the
        // compacted topic is the state).
        cfg.set("group.id", format!("wadispatch-{what}-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer<super::kafka_log::QuietContext> = cfg
            .create_with_context(super::kafka_log::QuietContext)
            .map_err(kafka_error("create a compacted-topic consumer"))?;
        Ok(CompactedReader {
            consumer,
            topic: topic.to_string(),
            what,
        })
    }

    /// Assigns every partition from the beginning; returns the high
    /// watermarks seen now (the end of "catching up").
    fn assign_all(&self) -> Result<Vec<(i32, i64)>, IngestError> {
        let md = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .map_err(kafka_error("read topic metadata"))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(IngestError::MissingTopic(self.topic.clone()));
        }
        let mut tpl = TopicPartitionList::new();
        let mut ends = Vec::new();
        for p in partitions {
            tpl.add_partition_offset(&self.topic, p, Offset::Beginning)
                .map_err(kafka_error("assign a partition"))?;
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                .map_err(kafka_error("read watermarks"))?;
            ends.push((p, high));
        }
        self.consumer
            .assign(&tpl)
            .map_err(kafka_error("assign partitions"))?;
        Ok(ends)
    }

    /// The latest value of every key, read up to the end each partition had
    /// when reading began (a tombstone removes its key). For the command
    /// line, which needs the state once, not a live view: it gives up after
    /// `timeout` with an error naming the topic.
    pub fn snapshot(
        self,
        timeout: Duration,
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, IngestError> {
        let mut ends = self.assign_all()?;
        ends.retain(|(_, high)| *high > 0);
        let deadline = std::time::Instant::now() + timeout;
        let mut state = std::collections::BTreeMap::new();
        while !ends.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let _ = self.consumer.unassign();
                return Err(IngestError::Incomplete {
                    topic: self.topic.clone(),
                    secs: timeout.as_secs(),
                });
            }
            match self.consumer.poll(left.min(Duration::from_millis(200))) {
                Some(Ok(msg)) => {
                    let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
                    match msg.payload() {
                        Some(value) => state.insert(key, value.to_vec()),
                        None => state.remove(&key),
                    };
                    let (p, o) = (msg.partition(), msg.offset());
                    ends.retain(|(ep, high)| !(*ep == p && o + 1 >= *high));
                }
                Some(Err(e)) => {
                    let _ = self.consumer.unassign();
                    return Err(kafka_error("read a compacted topic")(e));
                }
                None => {}
            }
        }
        let _ = self.consumer.unassign();
        Ok(state)
    }

    /// Calls `apply(key, payload, partition, offset)` for every record until
    /// `stop` is set, and `caught_up()` once, when the end seen at start is
    /// reached. Blocking: run it on a dedicated thread.
    pub fn run(
        self,
        stop: &AtomicBool,
        mut apply: impl FnMut(&[u8], Option<&[u8]>, i32, i64),
        mut caught_up: impl FnMut(),
    ) -> Result<(), IngestError> {
        let mut ends = loop {
            match self.assign_all() {
                Ok(ends) => break ends,
                Err(e) if !stop.load(Ordering::Acquire) => {
                    tracing::warn!(topic = %self.topic, error = %e, "{} topic not readable yet; retrying in 2 s", self.what);
                    std::thread::sleep(Duration::from_secs(2));
                }
                // Asked to stop while the topic was unreadable: a stop,
                // not a failure.
                Err(_) => return Ok(()),
            }
        };
        ends.retain(|(_, high)| *high > 0);
        let mut done = ends.is_empty();
        if done {
            caught_up();
        }
        while !stop.load(Ordering::Acquire) {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    let (p, o) = (msg.partition(), msg.offset());
                    apply(msg.key().unwrap_or_default(), msg.payload(), p, o);
                    if !done {
                        ends.retain(|(ep, high)| !(*ep == p && o + 1 >= *high));
                        if ends.is_empty() {
                            done = true;
                            caught_up();
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "{} topic read error; retrying", self.what);
                    std::thread::sleep(Duration::from_millis(200));
                }
                None => {}
            }
        }
        // Release the manual assignment so closing the consumer has no group
        // state to tear down.
        let _ = self.consumer.unassign();
        Ok(())
    }
}
