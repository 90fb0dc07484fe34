//! librdkafka's own errors and logs, at a bounded rate.
//!
//! With the brokers down, librdkafka reports `AllBrokersDown` and a failed
//! connect for every client and every reconnect attempt: about a thousand
//! lines a second for the daemon's clients, which buries everything else in
//! the journal. [`QuietContext`] (and [`IngestContext`], which forwards to
//! [`report_error`]) log the first of each kind with what it means, then at
//! most one line per kind every [`EVERY`], saying how many were left out.
//!
//! [`IngestContext`]: super::audience

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientContext;

use crate::sync::MutexExt;

/// At most one line per kind of librdkafka error or log in this window.
pub const EVERY: Duration = Duration::from_secs(30);

/// The context of the daemon's Kafka clients that have no other needs.
#[derive(Debug, Default, Clone, Copy)]
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        report_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        report_error(&error, reason);
    }
}

impl ConsumerContext for QuietContext {}

/// When each kind was last logged, and how many were left out since.
#[derive(Default)]
struct Throttle {
    kinds: Mutex<HashMap<String, (Instant, u64)>>,
}

/// `Some(left out since the last line)` when a line of `kind` may be
/// written now.
impl Throttle {
    fn admit(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock_or_recover();
        match kinds.get_mut(kind) {
            Some((last, skipped)) if now.duration_since(*last) < EVERY => {
                *skipped += 1;
                None
            }
            Some((last, skipped)) => {
                let left_out = *skipped;
                *last = now;
                *skipped = 0;
                Some(left_out)
            }
            None => {
                kinds.insert(kind.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

fn throttle() -> &'static Throttle {
    static THROTTLE: std::sync::OnceLock<Throttle> = std::sync::OnceLock::new();
    THROTTLE.get_or_init(Throttle::default)
}

/// A librdkafka error (the client's error callback), rate limited per
/// error code.
pub fn report_error(error: &KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    let kind = code.map_or_else(|| format!("{error:?}"), |c| format!("{c:?}"));
    let Some(left_out) = throttle().admit(&kind, Instant::now()) else {
        return;
    };
    let more = left_out_text(left_out);
    match code {
        Some(RDKafkaErrorCode::AllBrokersDown) => tracing::error!(
            error = %error, reason, "every Kafka broker is unreachable: ingest, events and the dead-letter topic wait for them and librdkafka keeps reconnecting (check kafka.brokers and the brokers' health){more}"
        ),
        Some(RDKafkaErrorCode::BrokerTransportFailure) => tracing::warn!(
            error = %error, reason, "a Kafka broker connection failed; librdkafka reconnects{more}"
        ),
        _ => tracing::error!(error = %error, reason, "librdkafka error{more}"),
    }
}

/// An error a consumer's poll returned (librdkafka retries by itself),
/// rate limited per consumer and error code.
pub fn consumer_error(consumer: &str, error: &KafkaError) {
    let code = error
        .rdkafka_error_code()
        .map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
    let Some(left_out) = throttle().admit(&format!("{consumer}/{code}"), Instant::now()) else {
        return;
    };
    let more = left_out_text(left_out);
    tracing::warn!(error = %error, "{consumer} consumer error; librdkafka retries{more}");
}

/// A librdkafka log line, rate limited per facility and level.
pub fn report_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    let kind = format!("{fac}/{}", level as i32);
    let Some(left_out) = throttle().admit(&kind, Instant::now()) else {
        return;
    };
    let more = left_out_text(left_out);
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac}: {message}{more}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}{more}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{fac}: {message}{more}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}{more}"),
    }
}

fn left_out_text(left_out: u64) -> String {
    if left_out == 0 {
        String::new()
    } else {
        format!(
            " ({left_out} more like it in the last {} s, not logged)",
            EVERY.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_window_with_the_count_left_out() {
        let t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.admit("AllBrokersDown", t0), Some(0));
        for i in 1..=999 {
            assert_eq!(
                t.admit("AllBrokersDown", t0 + Duration::from_millis(i)),
                None
            );
        }
        assert_eq!(t.admit("Other", t0), Some(0), "kinds apart");
        assert_eq!(t.admit("AllBrokersDown", t0 + EVERY), Some(999));
        assert_eq!(
            t.admit("AllBrokersDown", t0 + EVERY + Duration::from_secs(1)),
            None
        );
    }
}
