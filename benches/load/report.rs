//! The orchestrator: runs each scenario, prints its table and the targets
//! (README, "Performance"), and writes `target/bench-results.json`.

use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use chrono::Utc;
use serde_json::{json, Value};

use super::*;

pub(super) fn orchestrate() -> anyhow::Result<()> {
    let only: Option<Vec<String>> = std::env::var("WADISPATCH_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    if let Some(names) = &only {
        for n in names {
            if !SCENARIOS.contains(&n.as_str()) {
                bail!("WADISPATCH_BENCH_ONLY names {n:?}; the scenarios are {SCENARIOS:?}");
            }
        }
    }
    let started = Utc::now();
    let mut results = serde_json::Map::new();
    let mut failed = Vec::new();
    let sizes = Sizes::from_env();
    for name in SCENARIOS {
        let named = only.as_ref().map(|o| o.iter().any(|n| n == name));
        // The scale scenario takes many minutes: only when asked for.
        let wanted = match named {
            Some(named) => named || (name == "scale" && sizes.scale_asked),
            None => name != "scale" || sizes.scale_asked,
        };
        if !wanted {
            continue;
        }
        eprintln!("== {name}");
        let t = Instant::now();
        match run_scenario(name) {
            Ok(v) => {
                print_table(name, &v);
                results.insert(name.to_string(), v);
            }
            Err(e) => {
                eprintln!("scenario {name} failed: {e:#}");
                results.insert(name.to_string(), json!({"error": format!("{e:#}")}));
                failed.push(name);
            }
        }
        eprintln!("   ({name}: {:.0} s)", t.elapsed().as_secs_f64());
    }
    let targets = targets(&results);
    print_targets(&targets);
    let document = json!({
        "command": "cargo bench --bench load",
        "started_at": started.to_rfc3339(),
        "finished_at": Utc::now().to_rfc3339(),
        "machine": machine(),
        "scenarios": results,
        "targets": targets,
    });
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").to_string());
    let path = std::path::Path::new(&target_dir).join("bench-results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("\nresults written to {}", path.display());
    if !failed.is_empty() {
        bail!("scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}

pub(super) fn run_scenario(name: &str) -> anyhow::Result<Value> {
    let output = Command::new(std::env::current_exe()?)
        .args(["--bench", "--role", "scenario", "--scenario", name])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("starting the scenario process")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout.lines().find_map(|l| l.strip_prefix("RESULT "));
    match (output.status.success(), result) {
        (true, Some(json)) => Ok(serde_json::from_str(json)?),
        _ => bail!(
            "the scenario process ended with {} (its messages are above)",
            output.status
        ),
    }
}

pub(super) fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_string());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0);
    json!({
        "cpu": model,
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_gib": mem_gib,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

pub(super) fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// "p50 / p99" of one store operation of the dispatch scenario.
fn op_ms(v: &Value, op: &str) -> String {
    let q = |i: usize| {
        v.pointer(&format!("/store_op_p50_p99_ms/{op}/{i}"))
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    format!("{:.2} / {:.2}", q(0), q(1))
}

pub(super) fn print_table(name: &str, v: &Value) {
    let rows: Vec<(String, String)> = match name {
        "ingest" => vec![
            ("records".into(), format!("{}", num(v, "records"))),
            (
                "wadispatch, records/s".into(),
                format!("{:.0}", num(v, "records_per_s")),
            ),
            (
                "  with the group join, records/s".into(),
                format!("{:.0}", num(v, "records_per_s_with_group_join")),
            ),
            (
                "  durable staging, µs/record".into(),
                format!("{:.2}", num(v, "staging_us_per_record")),
            ),
            (
                "  CPU s per 1,000 records".into(),
                format!("{:.3}", num(v, "cpu_s_per_1000")),
            ),
            (
                "raw librdkafka, records/s".into(),
                format!("{:.0}", num(v, "raw_records_per_s")),
            ),
            (
                "ratio raw / wadispatch".into(),
                format!("{:.2}", num(v, "ratio_raw_over_wadispatch")),
            ),
            (
                "peak RSS during ingest, MiB".into(),
                format!("{:.0}", num(v, "peak_rss_mib")),
            ),
            (
                "RSS with all contacts staged, MiB".into(),
                format!("{:.0}", num(v, "rss_staged_mib")),
            ),
        ],
        "dispatch" => vec![
            (
                "messages, senders, in flight".into(),
                format!(
                    "{}, {}, {}",
                    num(v, "messages"),
                    num(v, "senders"),
                    num(v, "in_flight")
                ),
            ),
            (
                "wadispatch, messages/s".into(),
                format!("{:.0}", num(v, "messages_per_s")),
            ),
            (
                "  send latency p50 / p99, ms".into(),
                format!(
                    "{:.1} / {:.1}",
                    num(v, "send_latency_p50_ms"),
                    num(v, "send_latency_p99_ms")
                ),
            ),
            (
                "  store p50 / p99, ms: read row, read contact".into(),
                format!("{} · {}", op_ms(v, "get_dispatch"), op_ms(v, "get_contact")),
            ),
            (
                "  store p50 / p99, ms: claim, outcome".into(),
                format!("{} · {}", op_ms(v, "claim"), op_ms(v, "record_outcome")),
            ),
            (
                "  CPU s per 1,000 (daemon)".into(),
                format!("{:.3}", num(v, "cpu_s_per_1000")),
            ),
            (
                "  CPU s per 1,000 (sandbox+broker)".into(),
                format!("{:.3}", num(v, "world_cpu_s_per_1000")),
            ),
            (
                "raw POSTs, messages/s".into(),
                format!("{:.0}", num(v, "raw_messages_per_s")),
            ),
            (
                "  latency p50 / p99, ms".into(),
                format!(
                    "{:.1} / {:.1}",
                    num(v, "raw_latency_p50_ms"),
                    num(v, "raw_latency_p99_ms")
                ),
            ),
            (
                "  CPU s per 1,000 (client)".into(),
                format!("{:.3}", num(v, "raw_cpu_s_per_1000")),
            ),
            (
                "ratio raw / wadispatch".into(),
                format!("{:.2}", num(v, "ratio_raw_over_wadispatch")),
            ),
            (
                "recipients messaged twice".into(),
                format!("{}", num(v, "sandbox_duplicate_recipients")),
            ),
        ],
        "pacing" | "pacing-busy" => vec![
            (
                "senders × rate".into(),
                format!(
                    "{} × {} msg/s",
                    num(v, "senders"),
                    num(v, "rate_per_sender")
                ),
            ),
            ("window, s".into(), format!("{:.1}", num(v, "window_s"))),
            (
                "requests per sender vs rate, min / median / max, %".into(),
                format!(
                    "{:+.2} / {:+.2} / {:+.2}",
                    num(v, "deviation_min_pct"),
                    num(v, "deviation_median_pct"),
                    num(v, "deviation_max_pct")
                ),
            ),
            (
                "worst overshoot / undershoot, %".into(),
                format!(
                    "{:.2} / {:.2}",
                    num(v, "overshoot_pct"),
                    num(v, "undershoot_pct")
                ),
            ),
            (
                "130429 answers".into(),
                format!("{}", num(v, "throttled_130429")),
            ),
            (
                "CPU s per 1,000 (daemon)".into(),
                format!("{:.3}", num(v, "cpu_s_per_1000")),
            ),
        ],
        "scale" => vec![
            ("contacts staged".into(), format!("{}", num(v, "contacts"))),
            (
                "ingest, records/s (all)".into(),
                format!("{:.0}", num(v, "ingest_records_per_s")),
            ),
            (
                "  first / last million".into(),
                format!(
                    "{:.0} / {:.0}",
                    num(v, "ingest_records_per_s_first_million"),
                    num(v, "ingest_records_per_s_last_million")
                ),
            ),
            (
                "RSS, all staged, MiB".into(),
                format!("{:.0}", num(v, "rss_staged_mib")),
            ),
            (
                "/campaigns p50 / max, ms".into(),
                format!(
                    "{:.1} / {:.1}",
                    num(v, "campaigns_latency_p50_ms"),
                    num(v, "campaigns_latency_max_ms")
                ),
            ),
            (
                "restart to first send, s".into(),
                format!("{:.1}", num(v, "restart_to_first_send_s")),
            ),
            (
                "dispatch after restart, messages/s".into(),
                format!(
                    "{:.0} (first {})",
                    num(v, "dispatch_messages_per_s"),
                    num(v, "sends_timed")
                ),
            ),
        ],
        "webhooks" => vec![
            ("status events".into(), format!("{}", num(v, "events"))),
            (
                "applied durably, events/s".into(),
                format!("{:.0}", num(v, "events_per_s")),
            ),
            (
                "POST latency p50 / p99, ms".into(),
                format!(
                    "{:.1} / {:.1}",
                    num(v, "post_latency_p50_ms"),
                    num(v, "post_latency_p99_ms")
                ),
            ),
            (
                "CPU s per 1,000 events (daemon)".into(),
                format!("{:.3}", num(v, "cpu_s_per_1000")),
            ),
        ],
        "journeys" => vec![
            (
                "contacts waiting for a follow-up".into(),
                format!("{}", num(v, "contacts")),
            ),
            (
                "RSS while every timer waits, MiB".into(),
                format!("{:.0}", num(v, "rss_waiting_mib")),
            ),
            (
                "timers fired, all due at once, per s".into(),
                format!("{:.0}", num(v, "timers_fired_per_s")),
            ),
            (
                "CPU s per 1,000 timers".into(),
                format!("{:.3}", num(v, "cpu_s_per_1000")),
            ),
        ],
        "triggers" => vec![
            ("trigger events".into(), format!("{}", num(v, "events"))),
            (
                "ingested, events/s (1 min delay)".into(),
                format!("{:.0}", num(v, "events_per_s")),
            ),
            (
                "due sends, all due at once, per s".into(),
                format!("{:.0}", num(v, "due_sends_per_s")),
            ),
            (
                "CPU s per 1,000 events / sends".into(),
                format!(
                    "{:.3} / {:.3}",
                    num(v, "ingest_cpu_s_per_1000"),
                    num(v, "send_cpu_s_per_1000")
                ),
            ),
        ],
        _ => vec![],
    };
    println!("\n{name}");
    for (what, value) in rows {
        println!("  {what:<38} {value:>22}");
    }
}

/// The targets of README.md, "Performance", measured against this run.
pub(super) fn targets(results: &serde_json::Map<String, Value>) -> Vec<Value> {
    // A target is judged only at its own size; smaller runs say so.
    let sizes = Sizes::from_env();
    let mut out = Vec::new();
    let mut check = |target: &str, measured: String, met: bool, full_size: bool| {
        out.push(json!({"target": target, "measured": measured, "met": full_size.then_some(met)}));
    };
    if let Some(v) = results.get("ingest").filter(|v| v.get("error").is_none()) {
        let r = num(v, "records_per_s");
        check(
            "ingest ≥ 100,000 records/s",
            format!("{r:.0} records/s"),
            r >= 100_000.0,
            sizes.ingest_records >= 1_000_000,
        );
        let m = num(v, "rss_staged_mib");
        check(
            "RSS ≤ 300 MB with 1,000,000 staged contacts",
            format!("{m:.0} MiB"),
            m * 1.048_576 <= 300.0,
            sizes.ingest_records >= 1_000_000,
        );
    }
    if let Some(v) = results.get("dispatch").filter(|v| v.get("error").is_none()) {
        let r = num(v, "messages_per_s");
        check(
            "dispatch ≥ 20,000 messages/s",
            format!("{r:.0} messages/s"),
            r >= 20_000.0,
            sizes.dispatch_messages >= 200_000,
        );
        let ratio = num(v, "ratio_raw_over_wadispatch");
        check(
            "dispatch within 2× of the raw floor",
            format!("{ratio:.2}×"),
            ratio <= 2.0,
            sizes.dispatch_messages >= 200_000,
        );
        let (cpu, raw) = (num(v, "cpu_s_per_1000"), num(v, "raw_cpu_s_per_1000"));
        check(
            "daemon CPU per message ≤ 2× the raw client's",
            format!("{cpu:.3} vs {raw:.3} CPU-s per 1,000 ({:.2}×)", cpu / raw),
            cpu <= 2.0 * raw,
            sizes.dispatch_messages >= 200_000,
        );
    }
    let pacing_full = sizes.pacing_senders >= 100 && sizes.pacing_secs >= 60;
    for (name, when) in [("pacing", ""), ("pacing-busy", ", one core busy")] {
        let Some(v) = results.get(name).filter(|v| v.get("error").is_none()) else {
            continue;
        };
        let (over, under) = (num(v, "overshoot_pct"), num(v, "undershoot_pct"));
        check(
            &format!("pacing within ±2 % per sender{when}"),
            format!("overshoot {over:.2} %, undershoot {under:.2} %"),
            over <= 2.0 && under <= 2.0,
            pacing_full,
        );
        let t = num(v, "throttled_130429");
        check(
            &format!("zero 130429{when}"),
            format!("{t}"),
            t == 0.0,
            pacing_full,
        );
    }
    if let (Some(p), Some(d)) = (
        results.get("pacing").filter(|v| v.get("error").is_none()),
        results.get("dispatch").filter(|v| v.get("error").is_none()),
    ) {
        let (paced, unpaced) = (num(p, "cpu_s_per_1000"), num(d, "cpu_s_per_1000"));
        check(
            "pacing CPU per message ≤ unpaced dispatch's",
            format!("{paced:.3} vs {unpaced:.3} CPU-s per 1,000"),
            paced <= unpaced,
            pacing_full && sizes.dispatch_messages >= 200_000,
        );
    }
    if let Some(v) = results.get("webhooks").filter(|v| v.get("error").is_none()) {
        let r = num(v, "events_per_s");
        check(
            "webhooks ≥ 60,000 status events/s",
            format!("{r:.0} events/s"),
            r >= 60_000.0,
            sizes.webhook_events >= 300_000,
        );
    }
    if let Some(v) = results.get("scale").filter(|v| v.get("error").is_none()) {
        let full = sizes.scale_contacts >= 10_000_000;
        let m = num(v, "rss_staged_mib");
        check(
            "RSS ≤ 300 MB with 10,000,000 staged contacts",
            format!("{m:.0} MiB"),
            m * 1.048_576 <= 300.0,
            full,
        );
        let (first, last) = (
            num(v, "ingest_records_per_s_first_million"),
            num(v, "ingest_records_per_s_last_million"),
        );
        check(
            "ingest of the last million within 15 % of the first's",
            format!("{last:.0} vs {first:.0} records/s"),
            last >= first * 0.85,
            full,
        );
        let sends = num(v, "dispatch_messages_per_s");
        match results.get("dispatch").filter(|d| d.get("error").is_none()) {
            Some(d) => {
                let base = num(d, "messages_per_s");
                check(
                    "dispatch at 10,000,000 staged within 15 % of the dispatch scenario's",
                    format!("{sends:.0} vs {base:.0} messages/s"),
                    sends >= base * 0.85,
                    full && sizes.dispatch_messages >= 200_000,
                );
            }
            None => check(
                "dispatch at 10,000,000 staged within 15 % of the dispatch scenario's",
                format!("{sends:.0} messages/s (dispatch not run: nothing to compare)"),
                false,
                false,
            ),
        }
        let l = num(v, "campaigns_latency_max_ms");
        check(
            "/campaigns answers in < 100 ms at 10,000,000 contacts",
            format!("{l:.1} ms (slowest of 20)"),
            l < 100.0,
            full,
        );
    }
    if let Some(v) = results.get("journeys").filter(|v| v.get("error").is_none()) {
        let full = sizes.journey_contacts >= 1_000_000;
        let r = num(v, "timers_fired_per_s");
        check(
            "timers fired ≥ 10,000/s when all fall due",
            format!("{r:.0} timers/s"),
            r >= 10_000.0,
            full,
        );
        let waiting = num(v, "rss_waiting_mib");
        match results.get("ingest").filter(|i| i.get("error").is_none()) {
            Some(i) => {
                let staged = num(i, "rss_staged_mib");
                check(
                    "RSS with 1,000,000 timers ≤ RSS with 1,000,000 staged + 10 %",
                    format!("{waiting:.0} MiB vs {staged:.0} MiB"),
                    waiting <= staged * 1.1,
                    full && sizes.ingest_records >= 1_000_000,
                );
            }
            None => check(
                "RSS with 1,000,000 timers ≤ RSS with 1,000,000 staged + 10 %",
                format!("{waiting:.0} MiB (ingest not run: nothing to compare)"),
                false,
                false,
            ),
        }
    }
    if let Some(v) = results.get("triggers").filter(|v| v.get("error").is_none()) {
        let r = num(v, "events_per_s");
        check(
            "trigger events ≥ 50,000/s ingested (1 min delay)",
            format!("{r:.0} events/s"),
            r >= 50_000.0,
            sizes.trigger_events >= 300_000,
        );
    }
    out
}

pub(super) fn print_targets(targets: &[Value]) {
    println!("\ntargets (README, \"Performance\")");
    for t in targets {
        println!(
            "  {:<46} {:>24}  {}",
            t["target"].as_str().unwrap_or_default(),
            t["measured"].as_str().unwrap_or_default(),
            match t["met"].as_bool() {
                Some(true) => "met",
                Some(false) => "NOT met",
                None => "not judged: smaller run than the target's",
            }
        );
    }
}
