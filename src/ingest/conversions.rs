//! The conversions consumer: `wa.conversions` → goal conversions credited
//! to journeys (docs/ARCHITECTURE.md, "Goals and conversions").
//!
//! One blocking thread owns a `BaseConsumer` of its own group
//! (`<kafka.group_id>-conversions`, `enable.auto.offset.store=false`). Each
//! record is read, attributed ([`crate::domain::attribute`]), written to
//! the store in one conditional write (the conversion, and the stop of the
//! journey when the goal says so), published as a `conversion` event, and
//! only then is its offset stored. A store or broker outage is retried
//! without moving on, so nothing is skipped; a record that can never be
//! read goes to the audience dead-letter topic with its source headers.
//! Records are handled in order per partition, and a record read twice is
//! recorded once: the journey keeps its first conversion.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;

use super::catalog::{CampaignCatalog, CatalogEntry};
use super::dlq::{DeadLetter, DlqProducer};
use super::{client_config, kafka_error, IngestError};
use crate::domain::{
    attribute, Attribution, ConversionInput, ConversionRecord, ExclusionReason, Unattributed,
};
use crate::events::{Event, EventsProducer};
use crate::metrics;
use crate::store::{ConversionApplied, Store, StoreResult};

/// Settings of the conversions consumer (from `[kafka]` and `[dispatch]`).
#[derive(Debug, Clone)]
pub struct ConversionsConfig {
    pub brokers: String,
    /// The consumer group: `<kafka.group_id>-conversions`.
    pub group_id: String,
    pub topic: String,
    pub dlq_topic: String,
    pub extra: Vec<(String, String)>,
    pub default_region: Option<String>,
}

/// What became of one conversion.
#[derive(Debug, Clone, PartialEq)]
pub enum Credit {
    /// Credited to the journey; `stopped` its steps not sent yet were
    /// stopped (`excluded`: the current one was not claimed yet).
    Recorded {
        to: Attribution,
        step: String,
        stopped: bool,
        excluded: bool,
    },
    /// The journey had its conversion already; `redelivered` when it is
    /// this one (read again after a restart).
    Duplicate {
        to: Attribution,
        step: String,
        stopped: bool,
        redelivered: bool,
    },
    /// Credited to no campaign.
    Unattributed(Unattributed),
}

impl Credit {
    /// The outcome label of `wadispatch_conversion_records_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Credit::Recorded { .. } => "recorded",
            Credit::Duplicate { .. } => "duplicate",
            Credit::Unattributed(why) => why.label(),
        }
    }
}

/// Counters of the consumer for logs and the demo.
#[derive(Debug, Default)]
pub struct ConversionStats {
    pub recorded: AtomicU64,
    pub duplicate: AtomicU64,
    pub unattributed: AtomicU64,
    pub dead_lettered: AtomicU64,
}

impl ConversionStats {
    /// Records read to the end: recorded, duplicate, credited to none or
    /// dead-lettered.
    pub fn handled(&self) -> u64 {
        [
            &self.recorded,
            &self.duplicate,
            &self.unattributed,
            &self.dead_lettered,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// Attributes one conversion and writes it: the core of the consumer,
/// without Kafka. `now` is when the journey's stop is recorded.
pub async fn credit(
    store: &dyn Store,
    catalog: &CampaignCatalog,
    input: &ConversionInput,
    now: DateTime<Utc>,
) -> StoreResult<Credit> {
    let reach = if input.campaign_id.is_some() && input.occurrence.is_some() {
        Vec::new()
    } else {
        store.reached(&input.contact).await?
    };
    let mut entries: HashMap<String, Option<Arc<CatalogEntry>>> = HashMap::new();
    for id in reach
        .iter()
        .map(|r| r.campaign_id.as_str())
        .chain(input.campaign_id.as_deref())
    {
        entries
            .entry(id.to_string())
            .or_insert_with(|| catalog.get(id));
    }
    let goal_of = |id: &str| {
        entries
            .get(id)
            .and_then(Option::as_ref)
            .map(|e| e.goal.as_ref())
    };
    let to = match attribute(input, &reach, goal_of) {
        Ok(to) => to,
        Err(why) => return Ok(Credit::Unattributed(why)),
    };
    let goal = entries
        .get(&to.campaign_id)
        .and_then(Option::as_ref)
        .and_then(|e| e.goal.clone())
        .expect("attribution credits only a campaign with this goal");
    let row = match &to.occurrence {
        Some(occ) => input.contact.with_occurrence(occ),
        None => input.contact.clone(),
    };
    let stop = goal
        .stops_journey
        .then(|| ExclusionReason::Converted(goal.name.clone()));
    let applied = store
        .record_conversion(&to.campaign_id, &row, &input.conversion, stop.as_ref(), now)
        .await?;
    Ok(match applied {
        None => Credit::Unattributed(Unattributed::NotInCampaign),
        Some(ConversionApplied::Recorded(c)) => Credit::Recorded {
            to,
            step: c.step,
            stopped: c.stopped.is_some(),
            excluded: c.stopped.is_some_and(|s| s.excluded),
        },
        Some(ConversionApplied::Duplicate {
            redelivered,
            step,
            stopped,
        }) => Credit::Duplicate {
            to,
            step,
            stopped,
            redelivered,
        },
    })
}

pub struct ConversionIngest {
    consumer: BaseConsumer<super::kafka_log::QuietContext>,
    config: ConversionsConfig,
    store: Arc<dyn Store>,
    catalog: CampaignCatalog,
    events: Option<EventsProducer>,
    dlq: DlqProducer,
    rt: tokio::runtime::Handle,
    stats: Arc<ConversionStats>,
}

impl ConversionIngest {
    pub fn new(
        config: ConversionsConfig,
        store: Arc<dyn Store>,
        catalog: CampaignCatalog,
        events: Option<EventsProducer>,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, IngestError> {
        let mut cfg = client_config(&config.brokers, &config.extra);
        cfg.set("group.id", &config.group_id)
            .set("enable.auto.offset.store", "false")
            .set("enable.auto.commit", "true")
            .set("enable.partition.eof", "false");
        super::set_default(&mut cfg, "auto.commit.interval.ms", "1000");
        super::set_default(&mut cfg, "auto.offset.reset", "earliest");
        let consumer: BaseConsumer<super::kafka_log::QuietContext> = cfg
            .create_with_context(super::kafka_log::QuietContext)
            .map_err(kafka_error("create the conversions consumer"))?;
        consumer
            .subscribe(&[&config.topic])
            .map_err(kafka_error("subscribe to the conversions topic"))?;
        let dlq = DlqProducer::new(&config.brokers, &config.dlq_topic, &config.extra)?;
        Ok(ConversionIngest {
            consumer,
            config,
            store,
            catalog,
            events,
            dlq,
            rt,
            stats: Arc::default(),
        })
    }

    pub fn stats(&self) -> Arc<ConversionStats> {
        self.stats.clone()
    }

    /// Runs until `stop` is set. Blocking: run it on a dedicated thread.
    pub fn run(self, stop: Arc<AtomicBool>) -> Result<(), IngestError> {
        let mut missing_logged = false;
        while !stop.load(Ordering::Acquire) {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    let (partition, offset) = (msg.partition(), msg.offset());
                    let done = self.handle(partition, offset, msg.key(), msg.payload(), &stop);
                    if !done {
                        // Stopping mid-retry: the record is read again by
                        // the next run (its offset was not stored).
                        break;
                    }
                    // librdkafka commits the offset after this one.
                    if let Err(e) = self.consumer.store_offset_from_message(&msg) {
                        tracing::warn!(error = %e, "cannot store a conversions offset; the record may be read again (recorded once)");
                    }
                }
                Some(Err(e)) => {
                    let text = e.to_string();
                    if text.contains("UnknownTopicOrPartition") || text.contains("Unknown topic") {
                        if !missing_logged {
                            tracing::warn!(topic = %self.config.topic, "the conversions topic does not exist yet: no conversion is read until it is created");
                            missing_logged = true;
                        }
                    } else {
                        crate::ingest::kafka_log::consumer_error("conversions", &e);
                    }
                }
                None => {}
            }
        }
        self.shutdown();
        Ok(())
    }

    fn shutdown(&self) {
        if let Ok(assignment) = self.consumer.assignment() {
            if assignment.count() > 0 {
                if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(error = %e, "conversions offsets not committed at stop (read again, recorded once)");
                }
            }
        }
        self.dlq.flush(Duration::from_secs(5));
    }

    /// Handles one record until it is durable (in the store and, when an
    /// event follows, on the events topic) or dead-lettered. False when
    /// `stop` came first.
    fn handle(
        &self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        stop: &AtomicBool,
    ) -> bool {
        let now = Utc::now();
        let input = match ConversionRecord::parse(
            key,
            payload,
            self.config.default_region.as_deref(),
            now,
        ) {
            Ok(input) => input,
            Err(error) => {
                tracing::warn!(partition, offset, %error, dlq = %self.dlq.topic(), "conversion record dead-lettered");
                let letter = DeadLetter {
                    source_topic: &self.config.topic,
                    partition,
                    offset,
                    key,
                    payload,
                    error: &error,
                };
                let done = self.retry("write a conversion to the dead-letter topic", stop, || {
                    self.rt
                        .block_on(self.dlq.send_all(std::slice::from_ref(&letter)))
                        .map_err(|e| e.to_string())
                });
                if done.is_some() {
                    metrics::conversion_record("dlq");
                    self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
                return done.is_some();
            }
        };
        let Some(credit) = self.retry("record a conversion", stop, || {
            self.rt
                .block_on(credit(self.store.as_ref(), &self.catalog, &input, now))
                .map_err(|e| e.to_string())
        }) else {
            return false;
        };
        metrics::conversion_record(credit.label());
        let event = match &credit {
            Credit::Recorded {
                to,
                step,
                stopped,
                excluded,
            } => {
                self.stats.recorded.fetch_add(1, Ordering::Relaxed);
                let c = &input.conversion;
                metrics::conversion(&to.campaign_id, &c.goal, c.value, c.currency.as_deref());
                let step = self.catalog.step_name(&to.campaign_id, step);
                if *excluded {
                    metrics::exclusion(&to.campaign_id, &step, "converted");
                }
                Some(self.event(&input, to, step, *stopped))
            }
            Credit::Duplicate {
                to,
                step,
                stopped,
                redelivered,
            } => {
                self.stats.duplicate.fetch_add(1, Ordering::Relaxed);
                // A record read again after a restart: its event may not
                // have left before the stop (consumers de-duplicate).
                redelivered.then(|| {
                    let step = self.catalog.step_name(&to.campaign_id, step);
                    self.event(&input, to, step, *stopped)
                })
            }
            Credit::Unattributed(why) => {
                self.stats.unattributed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(contact = %input.contact, goal = %input.conversion.goal, reason = why.label(), "conversion credited to no campaign");
                None
            }
        };
        match (event, &self.events) {
            (Some(event), Some(events)) => self
                .retry("publish a conversion event", stop, || {
                    self.rt
                        .block_on(events.publish(std::slice::from_ref(&event)))
                        .map_err(|e| e.to_string())
                })
                .is_some(),
            _ => true,
        }
    }

    fn event(
        &self,
        input: &ConversionInput,
        to: &Attribution,
        step: String,
        stopped: bool,
    ) -> Event {
        let c = &input.conversion;
        Event::Conversion {
            campaign_id: to.campaign_id.clone(),
            step,
            contact: input.contact.as_str().to_string(),
            occurrence: to.occurrence.clone(),
            goal: c.goal.clone(),
            value: c.value,
            currency: c.currency.clone(),
            stopped_journey: stopped,
            timestamp: c.at,
        }
    }

    /// Runs `op` until it succeeds (growing back-off up to 5 s), or `stop`
    /// is set (`None`).
    fn retry<T>(
        &self,
        what: &str,
        stop: &AtomicBool,
        mut op: impl FnMut() -> Result<T, String>,
    ) -> Option<T> {
        let mut delay = Duration::from_millis(100);
        loop {
            match op() {
                Ok(v) => return Some(v),
                Err(e) => {
                    tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot {what}; retrying (the conversions offset is not stored meanwhile)");
                    if stop.load(Ordering::Acquire) {
                        return None;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
