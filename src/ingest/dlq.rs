//! Dead-letter producer for audience records that cannot be staged.
//!
//! A record goes to the DLQ with its key and payload untouched and headers
//! `error`, `source.topic`, `source.partition`, `source.offset`; its offset is
//! stored only after the broker acknowledged the DLQ write.
//!
//! A record too large for the producer (`message.max.bytes`) would be refused
//! on every attempt: its payload goes truncated to what fits, with the headers
//! `original.size` (bytes) and `original.sha256` (hex) so the upstream can find
//! the record it sent (docs/ARCHITECTURE.md, "Bad input").

use std::time::Duration;

use sha2::{Digest, Sha256};

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

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MAX_BYTES: usize = 1_000_000;

/// Room left in a record for its headers, key framing and batch overhead.
const HEADROOM: usize = 4_096;

/// How long one DLQ write may wait for its acknowledgement. Short enough
/// that a missing topic never keeps the ingest loop from its heartbeat for
/// long (the write is tried again later, see `AudienceIngest`).
const WRITE_TIMEOUT_MS: &str = "10000";

#[derive(Clone)]
pub struct DlqProducer {
    producer: FutureProducer<super::kafka_log::QuietContext>,
    topic: String,
    max_bytes: usize,
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
            .set("message.timeout.ms", WRITE_TIMEOUT_MS);
        let max_bytes = cfg
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_MAX_BYTES);
        let producer: FutureProducer<super::kafka_log::QuietContext> = cfg
            .create_with_context(super::kafka_log::QuietContext)
            .map_err(kafka_error("create dlq producer"))?;
        Ok(DlqProducer {
            producer,
            topic: topic.to_string(),
            max_bytes,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes the records and waits for every acknowledgement. Errors only
    /// when a write could not be acknowledged; the caller retries the lot
    /// (at-least-once: a DLQ record may then appear twice, never zero times).
    pub async fn send_all(&self, letters: &[DeadLetter<'_>]) -> Result<(), IngestError> {
        let mut pending = Vec::with_capacity(letters.len());
        for l in letters {
            let partition = l.partition.to_string();
            let offset = l.offset.to_string();
            let (payload, original) = fit(l.payload, l.key.map_or(0, <[u8]>::len), self.max_bytes);
            let mut headers = OwnedHeaders::new()
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
            if let Some((size, sha256)) = &original {
                headers = headers
                    .insert(Header {
                        key: "original.size",
                        value: Some(size),
                    })
                    .insert(Header {
                        key: "original.sha256",
                        value: Some(sha256),
                    });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(k) = l.key {
                record = record.key(k);
            }
            if let Some(p) = payload {
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

/// The payload as it fits in a record of `max_bytes` beside a key of
/// `key_len` bytes, and, when it had to be cut, the original's size and
/// SHA-256 (hex).
fn fit(
    payload: Option<&[u8]>,
    key_len: usize,
    max_bytes: usize,
) -> (Option<&[u8]>, Option<(String, String)>) {
    let Some(p) = payload else {
        return (None, None);
    };
    let room = max_bytes.saturating_sub(HEADROOM + key_len);
    if p.len() <= room {
        return (Some(p), None);
    }
    let digest = hex::encode(Sha256::digest(p));
    (Some(&p[..room]), Some((p.len().to_string(), digest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_that_fits_goes_whole() {
        let p = vec![b'x'; 10_000];
        let (out, original) = fit(Some(&p), 10, DEFAULT_MAX_BYTES);
        assert_eq!(out.map(<[u8]>::len), Some(10_000));
        assert!(original.is_none());
        assert_eq!(fit(None, 0, DEFAULT_MAX_BYTES), (None, None));
    }

    #[test]
    fn an_oversized_payload_is_cut_with_its_size_and_hash() {
        let p: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let (out, original) = fit(Some(&p), 100, DEFAULT_MAX_BYTES);
        let out = out.unwrap();
        assert_eq!(out.len(), DEFAULT_MAX_BYTES - HEADROOM - 100);
        assert_eq!(out, &p[..out.len()]);
        let (size, sha) = original.unwrap();
        assert_eq!(size, "2000000");
        assert_eq!(sha, hex::encode(Sha256::digest(&p)));
        assert_eq!(sha.len(), 64);
    }
}
