//! The load benchmark: every figure of the README's Performance table from one
//! command, `cargo bench --bench load`.
//!
//! Each scenario runs in a process of its own, so that its memory and CPU
//! figures belong to the daemon alone:
//! - the *world* process hosts the Kafka protocol broker (librdkafka's mock
//!   cluster, reached over TCP on loopback), the WhatsApp sandbox and the load
//!   generators (the audience producer, the webhook poster);
//! - the *scenario* process runs wadispatch (`Daemon` on the embedded store)
//!   and measures it, then measures the raw floor from the same process;
//! - this command runs the scenarios one after another, prints a table per
//!   scenario and the targets (README.md, "Performance"), and writes
//!   `target/bench-results.json`.
//!
//! Scenarios: `ingest` (with the memory of the staged contacts), `dispatch`,
//! `pacing`, `webhooks`, `journeys` (the memory while every contact waits
//! for a follow-up timer, and the rate they fire at when all fall due),
//! `triggers` (trigger events ingested, each due a minute later, and the
//! rate their sends go at once due).
//! `WADISPATCH_BENCH_ONLY=dispatch,pacing` runs some of them; sizes change
//! with `WADISPATCH_BENCH_INGEST_RECORDS` (1,000,000),
//! `WADISPATCH_BENCH_DISPATCH_MESSAGES` (200,000),
//! `WADISPATCH_BENCH_PACING_SENDERS` (100), `WADISPATCH_BENCH_PACING_SECS`
//! (60), `WADISPATCH_BENCH_WEBHOOK_EVENTS` (300,000),
//! `WADISPATCH_BENCH_JOURNEY_CONTACTS` (1,000,000) and
//! `WADISPATCH_BENCH_TRIGGER_EVENTS` (300,000).
//!
//! Files: this one (sizes, the process helpers), `world.rs` (the world
//! process), `scenarios.rs` (the scenarios and the raw floors),
//! `report.rs` (the orchestrator, the tables and the targets).

/// The binary's allocator, so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: wadispatch::Allocator = wadispatch::Allocator;

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};

mod report;
mod scenarios;
mod world;

use report::*;
use scenarios::*;
use world::*;

const SCENARIOS: [&str; 8] = [
    "ingest",
    "dispatch",
    "pacing",
    "pacing-busy",
    "webhooks",
    "journeys",
    "triggers",
    "scale",
];
/// The campaign of the ingest and webhook scenarios (config/examples/promo.json).
const PROMO: &str = "bday-2026-11";
const WEBHOOK_SECRET: &str = "bench-webhook-secret";
/// The campaign of the journeys scenario: a primary and a follow-up on
/// silence, the follow-up skipped for a missing variable when it starts (so
/// firing its timers sends nothing and measures the timers alone).
const JOURNEY: &str = "follow-up";
const JOURNEY_SPEC: &str = r#"{"id":"follow-up","state":"active","senders":["7001"],
    "steps":[{"id":"primary","template":{"name":"promo","language":"es_MX","body":["{{name}}"]}},
             {"id":"nudge","template":{"name":"nudge","language":"es_MX","body":["{{coupon}}"]},
              "when":{"after":"primary","on":"no_reply","delay":"1h"}}]}"#;
/// Statuses per webhook POST (Meta batches them) and POSTs in flight.
const STATUSES_PER_POST: usize = 50;
const POSTS_IN_FLIGHT: usize = 32;
/// Sends in flight per sender in the dispatch scenario (the raw floor uses
/// the same total).
const IN_FLIGHT_PER_SENDER: usize = 64;
const DISPATCH_SENDERS: u32 = 20;
/// The triggered campaign of the triggers scenario: each event due a
/// minute after it happened.
const TRIGGERED: &str = "cart";
const TRIGGER_DELAY_SECS: u64 = 60;
const PACING_RATE: f64 = 50.0;

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: skip
    // then, and say so (the CI runs it at small sizes with `cargo bench`).
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "load benchmark skipped: it runs under `cargo bench --bench load` (sizes from WADISPATCH_BENCH_*), not in test mode"
        );
        return;
    }
    let result = match (arg("--role").as_deref(), arg("--scenario")) {
        (Some("world"), Some(s)) => world(&s),
        (Some("scenario"), Some(s)) => scenario(&s),
        (None, _) => orchestrate(),
        _ => Err(anyhow!(
            "usage: load --bench [--role world|scenario --scenario NAME]"
        )),
    };
    if let Err(e) = result {
        eprintln!("load benchmark: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------- sizes ----

struct Sizes {
    ingest_records: u64,
    dispatch_messages: u64,
    pacing_senders: u32,
    pacing_secs: u64,
    webhook_events: u64,
    journey_contacts: u64,
    trigger_events: u64,
    /// Contacts of the scale scenario, which runs only when it is named in
    /// `WADISPATCH_BENCH_ONLY` or this size is set.
    scale_contacts: u64,
    scale_asked: bool,
}

impl Sizes {
    fn from_env() -> Sizes {
        Sizes {
            ingest_records: env_u64("WADISPATCH_BENCH_INGEST_RECORDS", 1_000_000),
            dispatch_messages: env_u64("WADISPATCH_BENCH_DISPATCH_MESSAGES", 200_000),
            pacing_senders: env_u64("WADISPATCH_BENCH_PACING_SENDERS", 100) as u32,
            pacing_secs: env_u64("WADISPATCH_BENCH_PACING_SECS", 60),
            webhook_events: env_u64("WADISPATCH_BENCH_WEBHOOK_EVENTS", 300_000),
            journey_contacts: env_u64("WADISPATCH_BENCH_JOURNEY_CONTACTS", 1_000_000),
            trigger_events: env_u64("WADISPATCH_BENCH_TRIGGER_EVENTS", 300_000),
            scale_contacts: env_u64("WADISPATCH_BENCH_SCALE", 10_000_000),
            scale_asked: std::env::var_os("WADISPATCH_BENCH_SCALE").is_some(),
        }
    }

    /// Contacts of the pacing campaign: enough to keep every sender busy for
    /// the warm-up and the whole window.
    fn pacing_contacts(&self) -> u64 {
        (PACING_RATE as u64) * u64::from(self.pacing_senders) * (self.pacing_secs + 15)
    }

    fn webhook_contacts(&self) -> u64 {
        self.webhook_events.div_ceil(3)
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.replace('_', "").parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not a number; using {default}");
            default
        }),
        Err(_) => default,
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn phone(i: u64) -> String {
    format!("+5255{:08}", 10_000_000 + i)
}

fn sender_ids(first: u32, n: u32) -> Vec<String> {
    (first..first + n).map(|i| i.to_string()).collect()
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "  {msg:<28} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
        )
        .expect("progress template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

// ------------------------------------------------------------ /proc ----

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`), in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// User plus system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // USER_HZ is 100 on every Linux target.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => f64::NAN,
    }
}

fn me() -> u32 {
    std::process::id()
}
