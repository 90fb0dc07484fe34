//! Crash safety: `wadispatch run` is killed with SIGKILL at random moments of
//! a campaign and restarted. At the end every contact is final, the sandbox
//! saw nobody twice, and `unknown` stays within the in-flight bound.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use wadispatch::app;
use wadispatch::domain::DispatchState;
use wadispatch::report::CampaignSummary;
use wadispatch::sandbox::{FailureRule, SandboxConfig};

const CONTACTS: u32 = 20_000;
const KILLS: usize = 5;
/// dispatch.max_in_flight_per_sender; a campaign holds at most twice this.
const IN_FLIGHT: usize = DEFAULT_IN_FLIGHT;

/// The sandbox of these tests, webhooks to `webhook_port`: only final
/// failures (13: 131026), no 24 h deferral, so a campaign can finish.
fn final_failures(webhook_port: u16) -> SandboxConfig {
    SandboxConfig {
        failure_rules: vec![FailureRule {
            suffix: "13".into(),
            code: 131026,
            stage: Default::default(),
        }],
        ..sandbox_for(webhook_port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_campaign_never_sends_twice_and_loses_nothing() {
    let run = Run {
        group: "crash",
        in_flight: IN_FLIGHT,
        senders: &[("5001", 700), ("5002", 700)],
        ..Run::default()
    };
    let ProcessWorld {
        dir: _dir,
        config,
        kafka,
        sandbox,
        path,
        admin_port,
    } = ProcessWorld::start(&run, final_failures).await;
    let producer = kafka.producer();
    let spec = r#"{"id":"crash","state":"active","senders":["5001","5002"],"exclusive":true,
        "template":{"name":"promo","language":"es_MX","body":["{{name}}"]},"pacing":{"per_second":1000}}"#;
    publish(&producer, &config.kafka.topics.campaigns, "crash", spec).await;
    let records: Vec<(String, String)> = (0..CONTACTS)
        .map(|i| {
            (
                phone(i),
                format!(
                    r#"{{"campaign_id":"crash","contact":{{"phone":"{}","name":"N{i}"}}}}"#,
                    phone(i)
                ),
            )
        })
        .collect();
    publish_all(&producer, &config.kafka.topics.audience, &records).await;

    // Kill at random points of progress, spread over the campaign.
    let mut marks: Vec<u64> = (0..KILLS)
        .map(|k| (k as u64 + 1) * 2_500 + rand::random::<u64>() % 1_500)
        .collect();
    marks.sort();
    for mark in marks {
        let mut child = spawn(&path);
        let deadline = Instant::now() + Duration::from_secs(120);
        while sandbox.stats().accepted < mark {
            assert!(
                Instant::now() < deadline,
                "no progress to {mark} (accepted {})",
                sandbox.stats().accepted
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "the daemon exited on its own"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    // Last run: until the daemon itself reports the campaign completed
    // with every contact staged (its admin listener: the store is the
    // daemon's while it runs), then a clean stop.
    run_to_completion(&path, admin_port, "crash", u64::from(CONTACTS), 240).await;

    let stats = sandbox.stats();
    assert_eq!(
        stats.duplicate_recipients, 0,
        "no contact was sent the campaign twice"
    );
    assert_eq!(stats.per_recipient_max, 1);
    let store = app::open_store(&config).await.unwrap();
    let s = CampaignSummary::compute(store.as_ref(), "crash")
        .await
        .unwrap();
    assert_eq!(s.staged, u64::from(CONTACTS));
    assert_eq!(
        s.open(),
        0,
        "every contact final: {:?}",
        s.contacts.by_state
    );
    assert_eq!(
        s.excluded(),
        0,
        "nobody excluded: {:?}",
        s.contacts.excluded_by_reason
    );
    let unknown = s.count(DispatchState::Unknown);
    // Everybody but the unknown ones reached the sandbox (the failures too:
    // the sandbox accepts them and fails them by webhook).
    assert!(
        stats.recipients >= u64::from(CONTACTS) - unknown,
        "{} recipients of {CONTACTS}, {unknown} unknown",
        stats.recipients
    );
    let bound = (KILLS * IN_FLIGHT * 2) as u64;
    assert!(
        unknown <= bound,
        "unknown {unknown} above the in-flight bound {bound}"
    );
    // Everything the sandbox accepted is accounted for in the store.
    assert!(
        s.reached(DispatchState::Accepted) + unknown + s.count(DispatchState::Failed)
            >= stats.accepted,
        "{:?} vs {}",
        s.contacts.by_state,
        stats.accepted
    );
    eprintln!(
        "crash test: {:?}, unknown {unknown} (bound {bound})",
        s.contacts.by_state
    );
}

const PACED_CONTACTS: u32 = 300;

/// The config of the paced test: two senders far slower than the campaign,
/// so contacts queue at the senders (the case where a claim taken before the
/// sender's turn left hundreds of contacts `unknown` at every restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_senders_leave_unknown_only_for_requests_on_the_wire() {
    let run = Run {
        group: "paced",
        in_flight: 64,
        senders: &[("6001", 8), ("6002", 8)],
        kafka: "shutdown_timeout_secs = 20\n",
        whatsapp: "request_timeout_ms = 5000\n",
        dispatch: "",
    };
    // 300 ms per answer, and a platform limit below the senders' rate: the
    // daemon meets 130429 (requests refused unsent, back to the queue).
    let ProcessWorld {
        dir: _dir,
        config,
        kafka,
        sandbox,
        path,
        admin_port,
    } = ProcessWorld::start(&run, |port| SandboxConfig {
        per_number_mps: 6.0,
        latency_ms: 300,
        ..sandbox_for(port)
    })
    .await;
    let producer = kafka.producer();
    let spec = r#"{"id":"paced","state":"active","senders":["6001","6002"],
        "template":{"name":"promo","language":"es_MX","body":["{{name}}"]},"pacing":{"per_second":1000}}"#;
    publish(&producer, &config.kafka.topics.campaigns, "paced", spec).await;
    let records: Vec<(String, String)> = (0..PACED_CONTACTS)
        .map(|i| {
            (
                phone(i),
                format!(
                    r#"{{"campaign_id":"paced","contact":{{"phone":"{}","name":"N{i}"}}}}"#,
                    phone(i)
                ),
            )
        })
        .collect();
    publish_all(&producer, &config.kafka.topics.audience, &records).await;

    // 1. SIGTERM mid-campaign: a clean stop leaves nothing claimed, nothing
    //    unknown (every request on the wire got its answer first).
    let mut child = spawn(&path);
    wait_accepted(&sandbox, &mut child, 40).await;
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "clean stop after SIGTERM");
    {
        let store = app::open_store(&config).await.unwrap();
        let s = CampaignSummary::compute(store.as_ref(), "paced")
            .await
            .unwrap();
        assert_eq!(
            s.count(DispatchState::Claimed),
            0,
            "after SIGTERM: {:?}",
            s.contacts.by_state
        );
        assert_eq!(
            s.count(DispatchState::Unknown),
            0,
            "after SIGTERM: {:?}",
            s.contacts.by_state
        );
        assert!(
            s.count(DispatchState::Pending) > 0,
            "the stop came mid-campaign"
        );
    }

    // 2. SIGKILL mid-campaign: what was on the wire is the bound. The
    //    requests that can have left are those the sandbox was answering at
    //    the kill, plus any that reached it just after.
    let mut child = spawn(&path);
    wait_accepted(&sandbox, &mut child, 120).await;
    let before = sandbox.stats();
    child.kill().unwrap();
    child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = sandbox.stats();
    let on_the_wire = before.in_flight + (after.requests - before.requests);

    // 3. Restart and let it finish.
    run_to_completion(&path, admin_port, "paced", u64::from(PACED_CONTACTS), 120).await;

    let stats = sandbox.stats();
    assert_eq!(stats.duplicate_recipients, 0, "nobody messaged twice");
    let store = app::open_store(&config).await.unwrap();
    let s = CampaignSummary::compute(store.as_ref(), "paced")
        .await
        .unwrap();
    assert_eq!(s.staged, u64::from(PACED_CONTACTS));
    assert_eq!(
        s.open(),
        0,
        "every contact final: {:?}",
        s.contacts.by_state
    );
    assert_eq!(
        s.count(DispatchState::Excluded),
        0,
        "{:?}",
        s.contacts.by_state
    );
    assert_eq!(
        s.count(DispatchState::Failed),
        0,
        "{:?}",
        s.contacts.by_state
    );
    let unknown = s.count(DispatchState::Unknown);
    assert!(
        unknown <= on_the_wire,
        "unknown {unknown} above the {on_the_wire} requests on the wire at the kill"
    );
    // Everybody but the unknown ones that never reached Meta got it.
    assert!(stats.recipients >= u64::from(PACED_CONTACTS) - unknown);
    assert!(
        stats.rejected_by_code.get(&130429).copied().unwrap_or(0) > 0,
        "the 130429 path ran"
    );
    eprintln!(
        "paced crash test: {:?}, unknown {unknown}, on the wire at the kill {on_the_wire}, 130429 × {}",
        s.contacts.by_state,
        stats.rejected_by_code.get(&130429).copied().unwrap_or(0)
    );
}

const JOURNEY_CONTACTS: u32 = 3_000;

/// The journey of `jcrash`: the primary, then a follow-up 4 s after it was
/// sent unless the contact replied.
const JOURNEY_SPEC: &str = r#"{"id":"jcrash","state":"active","senders":["7001","7002"],
    "pacing":{"per_second":1000},
    "steps":[{"id":"primary","template":{"name":"promo","language":"es_MX","body":["{{name}}"]}},
             {"id":"nudge","template":{"name":"nudge","language":"es_MX","body":["{{name}}"]},
              "when":{"after":"primary","on":"no_reply","delay":"4s"}}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_journeys_wait_and_follow_ups_go_sends_each_step_at_most_once() {
    let run = Run {
        group: "jcrash",
        senders: &[("7001", 700), ("7002", 700)],
        ..Run::default()
    };
    // Replies, but no STOP: every exclusion below is a journey's own.
    let ProcessWorld {
        dir: _dir,
        config,
        kafka,
        sandbox,
        path,
        admin_port,
    } = ProcessWorld::start(&run, |port| SandboxConfig {
        stop_share: 0.0,
        ..final_failures(port)
    })
    .await;
    let producer = kafka.producer();
    publish(
        &producer,
        &config.kafka.topics.campaigns,
        "jcrash",
        JOURNEY_SPEC,
    )
    .await;
    let records: Vec<(String, String)> = (0..JOURNEY_CONTACTS)
        .map(|i| {
            let phone = phone(i);
            let value = format!(
                r#"{{"campaign_id":"jcrash","contact":{{"phone":"{phone}","name":"N{i}"}}}}"#
            );
            (phone, value)
        })
        .collect();
    publish_all(&producer, &config.kafka.topics.audience, &records).await;

    // Killed while primaries go, once they are all out and their timers
    // wait (some falling due), and while follow-ups go.
    let marks = [1_200, 3_100, 4_300];
    for mark in marks {
        let mut child = spawn(&path);
        wait_accepted(&sandbox, &mut child, mark).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    run_to_completion(
        &path,
        admin_port,
        "jcrash",
        u64::from(JOURNEY_CONTACTS),
        120,
    )
    .await;

    let stats = sandbox.stats();
    assert_eq!(stats.duplicate_recipients, 0, "no step sent twice");
    assert!(stats.per_recipient_max <= 2);
    let store = app::open_store(&config).await.unwrap();
    let s = CampaignSummary::compute(store.as_ref(), "jcrash")
        .await
        .unwrap();
    assert_eq!(s.staged, u64::from(JOURNEY_CONTACTS));
    assert_eq!(
        s.open(),
        0,
        "every journey final: {:?}",
        s.contacts.by_state
    );
    let rows = store
        .scan_dispatches("jcrash", None, JOURNEY_CONTACTS as usize + 1)
        .await
        .unwrap();
    let (mut messages, mut unknown, mut nudged) = (0u64, 0u64, 0u64);
    for row in &rows {
        let steps: Vec<(&str, DispatchState, bool)> = row
            .history
            .iter()
            .map(|h| (h.step.as_str(), h.state, h.wamid.is_some()))
            .chain([(row.step.as_str(), row.state, row.wamid.is_some())])
            .collect();
        for (_, state, wamid) in &steps {
            messages += u64::from(*wamid || *state == DispatchState::Unknown);
            unknown += u64::from(*state == DispatchState::Unknown);
        }
        let primary = steps[0].1;
        let nudge = steps.iter().find(|s| s.0 == "nudge").map(|s| s.1);
        nudged += u64::from(nudge.is_some_and(|n| n.delivery_rank() > 0));
        match primary {
            // A reply before the timer fired leaves no follow-up; one after
            // it excludes the follow-up at its claim.
            DispatchState::Replied => assert!(
                nudge.is_none_or(|n| n == DispatchState::Excluded),
                "{row:?}"
            ),
            p if p.delivery_rank() > 0 => assert!(
                nudge.is_some_and(|n| n.delivery_rank() > 0
                    || matches!(n, DispatchState::Unknown | DispatchState::Failed)),
                "a silent contact's follow-up was skipped: {row:?}"
            ),
            // Failed, or unknown after a kill: nothing follows.
            _ => assert_eq!(nudge, None, "{row:?}"),
        }
    }
    assert!(nudged > 1_000, "{nudged} follow-ups delivered");
    let bound = (marks.len() * IN_FLIGHT * 2) as u64;
    assert!(
        unknown <= bound,
        "unknown {unknown} above the in-flight bound {bound}"
    );
    // What the sandbox accepted is what the store recorded, but for
    // requests whose answer a kill cut off.
    assert!(
        stats.accepted <= messages && messages - unknown <= stats.accepted,
        "sandbox {} vs store {messages} ({unknown} unknown)",
        stats.accepted
    );
    eprintln!(
        "journey crash test: {:?}, {nudged} follow-ups delivered, unknown {unknown} (bound {bound})",
        s.contacts.by_state
    );
}
