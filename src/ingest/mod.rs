//! Kafka ingest: the campaigns catalog, the audience consumer and its DLQ,
//! suppressions, and the conversions consumer.
//!
//! Audience records are staged durably into the store before their offsets
//! are stored (at-least-once, contiguous watermark per partition); staging is
//! idempotent, so a replay after a crash or rebalance changes nothing.

pub mod audience;
pub mod catalog;
pub mod compacted;
pub mod conversions;
pub mod dlq;
pub mod kafka_log;
pub mod suppressions;
pub mod watermark;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("kafka: cannot {what}: {source}")]
    Kafka {
        what: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("kafka topic {0} does not exist or has no partitions (create it, or set kafka.topics in the config)")]
    MissingTopic(String),
    #[error("kafka topic {topic} was not read to its end within {secs} s (are the brokers overloaded? try again)")]
    Incomplete { topic: String, secs: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another wadispatch instance is in consumer group {group}: this one held {held} of the {total} audience partitions and never all of them. The embedded store serves one instance, and two instances with their own stores would both send to the contacts that move between them: stop the other instance, give each its own kafka.group_id (and audience), or use store.backend = \"scylla\" for several instances. Nothing was staged or committed by this instance")]
    SharedGroup {
        group: String,
        held: usize,
        total: usize,
    },
}

pub(crate) fn kafka_error(what: &'static str) -> impl Fn(KafkaError) -> IngestError {
    move |source| IngestError::Kafka { what, source }
}

/// Sets `key` unless the operator set it in `[kafka.client]`.
pub(crate) fn set_default(cfg: &mut ClientConfig, key: &str, value: &str) {
    if cfg.get(key).is_none() {
        cfg.set(key, value);
    }
}

/// Base librdkafka configuration shared by every client we create.
pub fn client_config(brokers: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers)
        .set("client.id", "wadispatch")
        .set("log_level", "4");
    for (k, v) in extra {
        cfg.set(k, v);
    }
    cfg
}
