//! What the audience consumer counts and reports: records by result, the
//! partitions it owns, dead letters the DLQ has not taken, and why it waits.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::sync::MutexExt;

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
