//! Dead-letter producer for audience records that cannot be staged.
//!
//! A record goes to the DLQ with its key and payload untouched and headers
//! `error`, `source.topic`, `source.partition`, `source.offset`; its offset is
//! stored only after the broker acknowledged the DLQ write.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{client_config, kafka_error, IngestError};

pub struct DeadLetter<'a> {
    pub source_topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    pub error: &'a str,
}

#[derive(Clone)]
pub struct DlqProducer {
    producer: FutureProducer,
    topic: String,
}

impl DlqProducer {
    pub fn new(
        brokers: &str,
        topic: &str,
        extra: &[(String, String)],
    ) -> Result<Self, IngestError> {
        let mut cfg = client_config(brokers, extra);
        // Idempotence keeps a retried DLQ write from duplicating the record.
        cfg.set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        let producer: FutureProducer = cfg.create().map_err(kafka_error("create dlq producer"))?;
        Ok(DlqProducer {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Writes the records and waits for every acknowledgement. Errors only
    /// when a write could not be acknowledged; the caller retries the lot
    /// (at-least-once: a DLQ record may then appear twice, never zero times).
    pub async fn send_all(&self, letters: &[DeadLetter<'_>]) -> Result<(), IngestError> {
        let mut pending = Vec::with_capacity(letters.len());
        for l in letters {
            let partition = l.partition.to_string();
            let offset = l.offset.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "error",
                    value: Some(l.error),
                })
                .insert(Header {
                    key: "source.topic",
                    value: Some(l.source_topic),
                })
                .insert(Header {
                    key: "source.partition",
                    value: Some(&partition),
                })
                .insert(Header {
                    key: "source.offset",
                    value: Some(&offset),
                });
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = l.key {
                record = record.key(k);
            }
            if let Some(p) = l.payload {
                record = record.payload(p);
            }
            pending.push(self.producer.send(record, Duration::from_secs(30)));
        }
        for delivery in futures::future::join_all(pending).await {
            if let Err((e, _)) = delivery {
                return Err(IngestError::Kafka {
                    what: "write to the dead-letter topic",
                    source: e,
                });
            }
        }
        Ok(())
    }

    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "dead-letter producer did not flush in time");
        }
    }
}
