//! Triggered campaigns end to end, the daemon as a process: 10,000 trigger
//! events over 2,000 contacts with repeats, 30 % of the occurrences
//! cancelled before they are due (some cancels before their trigger), and
//! a cap per contact; the daemon is killed with SIGKILL twice while it
//! reads the stream. The sends are exactly the ones this test computes on
//! its own, none twice for an occurrence.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use wadispatch::app;
use wadispatch::domain::DispatchState;
use wadispatch::report::CampaignSummary;
use wadispatch::sandbox::SandboxConfig;

const CONTACTS: u32 = 2_000;
const EVENTS: u32 = 10_000;
/// max_per_contact's count (per day: the whole test).
const CAP: usize = 3;
/// How long after its event an occurrence is due: long enough that every
/// cancel is read, through both kills, before the first one is due.
const DELAY_SECS: i64 = 30;

/// A deterministic stream: (contact, occurrence) per trigger event, one
/// event in five a repeat of one of that contact's earlier occurrences.
fn events() -> Vec<(u32, String)> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    (0..EVENTS)
        .map(|_| {
            let contact = (next() % u64::from(CONTACTS)) as u32;
            let count = seen.entry(contact).or_default();
            let occurrence = if *count > 0 && next() % 5 == 0 {
                (next() % u64::from(*count)) as u32
            } else {
                *count += 1;
                *count - 1
            };
            (contact, format!("cart-{contact}-{occurrence}"))
        })
        .collect()
}

/// 30 % of the occurrences, chosen by their id.
fn cancelled(occurrence: &str) -> bool {
    let h = occurrence.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    h % 10 < 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_events_send_once_per_live_occurrence_under_the_cap_through_sigkill() {
    let run = Run {
        group: "triggers",
        senders: &[("8001", 1000), ("8002", 1000)],
        // Every occurrence is due at once here, a contact's up to CAP of
        // them together: Meta's pair rate would space them 6 s apart.
        dispatch: &format!("pair_burst = {CAP}"),
        ..Run::default()
    };
    // Every message delivered, no STOP: every exclusion below is the
    // trigger's own.
    let ProcessWorld {
        dir: _dir,
        config,
        kafka,
        sandbox,
        path,
        admin_port,
    } = ProcessWorld::start(&run, |port| SandboxConfig {
        stop_share: 0.0,
        ..sandbox_for(port)
    })
    .await;
    let producer = kafka.producer();
    let spec = format!(
        r#"{{"id":"cart","state":"active","senders":["8001","8002"],
        "template":{{"name":"cart_reminder","language":"es_MX","category":"marketing","body":["{{{{name}}}}"]}},
        "pacing":{{"per_second":1000}},
        "trigger":{{"delay":"{DELAY_SECS}s","cancel_on":["order_placed"],
                    "max_per_contact":{{"count":{CAP},"per":"1d"}},"dedupe_window":"7d"}}}}"#
    );
    publish(&producer, &config.kafka.topics.campaigns, "cart", &spec).await;

    // The stream, and what it must do, computed here on its own.
    let event_at = chrono::Utc::now().to_rfc3339();
    let trigger = |contact: u32, occurrence: &str| {
        format!(
            r#"{{"campaign_id":"cart","contact":{{"phone":"{}","name":"N{contact}"}},"occurrence":"{occurrence}","event_at":"{event_at}"}}"#,
            phone(contact)
        )
    };
    let cancel = |contact: u32, occurrence: &str| {
        format!(
            r#"{{"campaign_id":"cart","contact":"{}","occurrence":"{occurrence}","event":"order_placed"}}"#,
            phone(contact)
        )
    };
    let mut records = Vec::new();
    let mut distinct: BTreeSet<(u32, String)> = BTreeSet::new();
    let mut cancels = 0u64;
    for (i, (contact, occurrence)) in events().into_iter().enumerate() {
        let key = phone(contact);
        let first = distinct.insert((contact, occurrence.clone()));
        let cancels_it = first && cancelled(&occurrence);
        // One cancel in ten comes before its trigger.
        if cancels_it && i % 10 == 0 {
            records.push((key.clone(), cancel(contact, &occurrence)));
        }
        records.push((key.clone(), trigger(contact, &occurrence)));
        if cancels_it && i % 10 != 0 {
            records.push((key, cancel(contact, &occurrence)));
        }
        cancels += u64::from(cancels_it);
    }
    let mut live: BTreeMap<u32, usize> = BTreeMap::new();
    for (contact, occurrence) in &distinct {
        if !cancelled(occurrence) {
            *live.entry(*contact).or_default() += 1;
        }
    }
    let sends: u64 = live.values().map(|n| (*n).min(CAP) as u64).sum();
    let capped: u64 = live.values().map(|n| n.saturating_sub(CAP) as u64).sum();
    let rows = distinct.len() as u64;
    assert_eq!(rows, sends + capped + cancels);
    assert!(
        rows > 7_000 && capped > 100 && cancels > 2_000,
        "a stream with repeats, caps and cancels: {rows} rows, {capped} capped, {cancels} cancelled"
    );
    publish_all(&producer, &config.kafka.topics.audience, &records).await;
    let started = Instant::now();

    // Killed twice while it reads the stream (before anything is due).
    for read in [2_500.0, 7_000.0] {
        let mut child = spawn(&path);
        let deadline = Instant::now() + Duration::from_secs(60);
        while metric_sum(admin_port, "wadispatch_audience_records_total").await < read {
            assert!(Instant::now() < deadline, "ingest did not reach {read}");
            assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(sandbox.stats().accepted, 0, "nothing is due yet");
    }

    let killed_at = started.elapsed();

    // The last run: until every occurrence is staged and none has work
    // left, then a clean stop.
    let mut child = spawn(&path);
    let mut first_send = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = campaigns(admin_port).await.is_some_and(|all| {
            all.iter().any(|c| {
                c["id"] == "cart"
                    && c["staged"] == rows
                    && c["pending"] == 0
                    && c["deferred"] == 0
                    && c["in_flight"] == 0
                    && c["observed_state"] == "active"
                    && c["trigger"]
                        == "30s after the event, cancelled on order_placed, at most 3 per 1d per contact"
            })
        }) && sandbox.stats().accepted >= sends;
        if first_send.is_none() && sandbox.stats().accepted > 0 {
            first_send = Some(started.elapsed());
        }
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cart did not settle: {:?}, sandbox accepted {} of {sends}",
            campaigns(admin_port).await,
            sandbox.stats().accepted
        );
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "clean stop after SIGTERM");

    let stats = sandbox.stats();
    assert_eq!(
        stats.accepted, sends,
        "exactly the live occurrences under the cap"
    );
    assert_eq!(stats.duplicate_recipients, 0, "no occurrence sent twice");
    assert!(stats.per_recipient_max <= CAP as u64);
    let store = app::open_store(&config).await.unwrap();
    let s = CampaignSummary::compute(store.as_ref(), "cart")
        .await
        .unwrap();
    assert_eq!(s.staged, rows);
    assert_eq!(s.open(), 0, "{:?}", s.contacts.by_state);
    let reasons = &s.contacts.excluded_by_reason;
    assert_eq!(
        reasons.get("cancelled:order_placed").copied(),
        Some(cancels),
        "{reasons:?}"
    );
    assert_eq!(
        reasons.get("frequency_cap").copied(),
        Some(capped),
        "{reasons:?}"
    );
    assert_eq!(s.excluded(), cancels + capped, "{reasons:?}");
    assert_eq!(s.reached(DispatchState::Accepted), sends);
    // Each contact got exactly its live occurrences up to the cap, and a
    // cancelled occurrence was never sent.
    let all = store
        .scan_dispatches("cart", None, rows as usize + 1)
        .await
        .unwrap();
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for row in &all {
        let occurrence = row
            .contact
            .occurrence()
            .expect("every row is an occurrence's");
        if row.wamid.is_some() {
            assert!(!cancelled(occurrence), "cancelled {occurrence} was sent");
            *sent.entry(row.contact.as_str().to_string()).or_default() += 1;
        }
    }
    for (contact, n) in &live {
        assert_eq!(
            sent.get(&phone(*contact)).copied().unwrap_or(0),
            (*n).min(CAP),
            "contact {contact}"
        );
    }
    eprintln!(
        "triggers: {rows} occurrences from {EVENTS} events, {sends} sent, {cancels} cancelled, {capped} capped; \
         kills done at {killed_at:?}, first send at {first_send:?}, settled at {:?}",
        started.elapsed()
    );
}
