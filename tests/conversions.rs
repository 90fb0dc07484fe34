//! Goal conversions end to end, the daemon as a process: two campaigns
//! reach the same contacts (`promo`, goal `payment_made`, stops its
//! journey's follow-up; `news`, goal `signup`), then a conversion stream
//! arrives with every record twice, explicit and implicit attribution,
//! conversions credited to no campaign and unreadable records. The daemon
//! is killed with SIGKILL while it reads the stream. Each journey is
//! credited once, exactly as this test computes on its own, the converted
//! journeys' follow-ups never go, and every credit is a `conversion` event.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::daemon::*;
use common::*;
use wadispatch::app;
use wadispatch::report::CampaignSummary;
use wadispatch::sandbox::SandboxConfig;

const PROMO: u32 = 1_000;
/// `news` reaches contacts 0..NEWS (after promo: the latest message).
const NEWS: u32 = 500;
/// How long after a silent primary the promo's follow-up goes: longer than
/// the conversion stream takes through the kill.
const NUDGE_SECS: u64 = 45;

/// One conversion record (key, value).
fn conversion(contact: u32, body: &str) -> (String, String) {
    (phone(contact), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversions_are_credited_once_and_stop_the_journey_through_sigkill() {
    let run = Run {
        group: "conversions",
        senders: &[("8101", 1000), ("8102", 1000)],
        // A contact of both campaigns gets two messages at once.
        dispatch: "pair_burst = 3",
        ..Run::default()
    };
    // Delivered, never answered: every follow-up that does not go was
    // stopped by a conversion.
    let ProcessWorld {
        dir: _dir,
        config,
        kafka,
        sandbox,
        path,
        admin_port,
    } = ProcessWorld::start(&run, |port| SandboxConfig {
        reply_share: 0.0,
        stop_share: 0.0,
        ..sandbox_for(port)
    })
    .await;
    let producer = kafka.producer();
    let template = |name: &str| {
        format!(
            r#"{{"name":"{name}","language":"es_MX","category":"marketing","body":["{{{{name}}}}"]}}"#
        )
    };
    let promo = format!(
        r#"{{"id":"promo","state":"active","exclusive":false,"senders":["8101","8102"],"pacing":{{"per_second":1000}},
            "steps":[{{"id":"primary","template":{primary}}},
                     {{"id":"nudge","template":{nudge},"when":{{"after":"primary","on":"no_reply","delay":"{NUDGE_SECS}s"}}}}],
            "goal":{{"name":"payment_made","window":"7d","stops_journey":true}}}}"#,
        primary = template("promo"),
        nudge = template("promo_nudge"),
    );
    let news = format!(
        r#"{{"id":"news","state":"active","exclusive":false,"senders":["8101","8102"],"pacing":{{"per_second":1000}},
            "template":{news},"goal":{{"name":"signup"}}}}"#,
        news = template("news"),
    );
    publish(&producer, &config.kafka.topics.campaigns, "promo", &promo).await;
    publish(&producer, &config.kafka.topics.campaigns, "news", &news).await;
    let audience: Vec<(String, String)> = (0..PROMO)
        .map(|i| (phone(i), audience_json("promo", i, false)))
        .collect();
    publish_all(&producer, &config.kafka.topics.audience, &audience).await;

    let mut child = spawn(&path);
    // Every primary out before news, so news is each contact's latest.
    let deadline = Instant::now() + Duration::from_secs(90);
    while sandbox.stats().accepted < u64::from(PROMO) {
        assert!(Instant::now() < deadline, "promo primaries not sent");
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let audience: Vec<(String, String)> = (0..NEWS)
        .map(|i| (phone(i), audience_json("news", i, false)))
        .collect();
    publish_all(&producer, &config.kafka.topics.audience, &audience).await;
    // Counted by the daemon (the sandbox's total would soon include the
    // follow-ups).
    let accepted = |views: &[serde_json::Value], id: &str| {
        views
            .iter()
            .find(|c| c["id"] == id)
            .map_or(0, |c| c["funnel"][1]["contacts"].as_u64().unwrap_or(0))
    };
    loop {
        let views = campaigns(admin_port).await.unwrap_or_default();
        if accepted(&views, "news") == u64::from(NEWS) {
            break;
        }
        assert!(Instant::now() < deadline, "news not sent: {views:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sandbox.stats().accepted,
        u64::from(PROMO + NEWS),
        "no follow-up is due yet"
    );
    let primaries_at = Instant::now();

    // The stream, and what it must do, computed here.
    let mut records = Vec::new();
    let mut promo_credit: BTreeMap<u32, Option<f64>> = BTreeMap::new();
    let mut news_credit: BTreeSet<u32> = BTreeSet::new();
    let mut unattributed = 0u64;
    for i in 0..600 {
        // Implicit: news reached the contact later, but its goal differs.
        records.push(conversion(
            i,
            r#"{"goal":"payment_made","value":100.0,"currency":"MXN"}"#,
        ));
        promo_credit.insert(i, Some(100.0));
    }
    for i in 600..700 {
        records.push(conversion(
            i,
            &format!(
                r#"{{"goal":"payment_made","campaign_id":"promo","value":{i}.5,"currency":"mxn"}}"#
            ),
        ));
        promo_credit.insert(i, Some(f64::from(i) + 0.5));
    }
    for i in 700..750 {
        // news declares no such goal: credited to none.
        records.push(conversion(
            i,
            r#"{"goal":"payment_made","campaign_id":"news"}"#,
        ));
        unattributed += 1;
    }
    for i in 0..NEWS {
        records.push(conversion(i, r#"{"goal":"signup"}"#));
        news_credit.insert(i);
    }
    for i in PROMO..PROMO + 50 {
        // Never reached by anything.
        records.push(conversion(i, r#"{"goal":"payment_made"}"#));
        unattributed += 1;
    }
    let mut stream: Vec<(String, String)> = Vec::new();
    for r in &records {
        // Every record twice: a redelivery changes nothing.
        stream.push(r.clone());
        stream.push(r.clone());
    }
    let bad = [
        (phone(1), r#"{"goal":"Paid Now"}"#.to_string()),
        (
            phone(2),
            r#"{"goal":"payment_made","value":10}"#.to_string(),
        ),
        ("12ab".to_string(), r#"{"goal":"payment_made"}"#.to_string()),
        (phone(3), "{".to_string()),
    ];
    stream.extend(bad.iter().cloned());
    publish_all(&producer, &config.kafka.topics.conversions, &stream).await;
    let total = stream.len() as f64;

    // Killed while it reads the stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric_sum(admin_port, "wadispatch_conversion_records_total").await < total / 3.0 {
        assert!(Instant::now() < deadline, "conversions not read");
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = primaries_at.elapsed();

    // Restarted: until every journey is credited and every follow-up
    // left went, then a clean stop.
    let mut child = spawn(&path);
    let nudges = u64::from(PROMO) - promo_credit.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut credited_at = None;
    loop {
        let views = campaigns(admin_port).await.unwrap_or_default();
        let of = |id: &str| views.iter().find(|c| c["id"] == id).cloned();
        if credited_at.is_none()
            && of("promo").is_some_and(|c| c["converted"] == promo_credit.len() as u64)
        {
            credited_at = Some(primaries_at.elapsed());
        }
        let done = of("promo").is_some_and(|c| {
            c["converted"] == promo_credit.len() as u64
                && c["waiting"] == 0
                && c["in_flight"] == 0
                && c["observed_state"] == "completed"
        }) && of("news").is_some_and(|c| c["converted"] == news_credit.len() as u64)
            && sandbox.stats().accepted >= u64::from(PROMO + NEWS) + nudges;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: {views:?}, sandbox accepted {}",
            sandbox.stats().accepted
        );
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = primaries_at.elapsed();
    let views = campaigns(admin_port).await.unwrap();
    let promo_view = views.iter().find(|c| c["id"] == "promo").unwrap();
    assert_eq!(
        promo_view["goal"],
        "payment_made within 7d of a message, stops the journey"
    );
    let funnel = promo_view["funnel"].as_array().unwrap();
    assert_eq!(funnel.last().unwrap()["stage"], "converted");
    assert_eq!(
        funnel.last().unwrap()["contacts"],
        promo_credit.len() as u64
    );
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success(), "clean stop after SIGTERM");

    let stats = sandbox.stats();
    assert_eq!(
        stats.accepted,
        u64::from(PROMO + NEWS) + nudges,
        "every primary, and the follow-ups of the journeys not converted"
    );
    assert_eq!(stats.duplicate_recipients, 0, "no message twice");
    let store = app::open_store(&config).await.unwrap();
    let rows = store
        .scan_dispatches("promo", None, PROMO as usize + 1)
        .await
        .unwrap();
    let index: BTreeMap<String, u32> = (0..PROMO).map(|i| (phone(i), i)).collect();
    let mut value_mxn = 0.0;
    for row in &rows {
        let i = index[row.contact.as_str()];
        match promo_credit.get(&i) {
            Some(value) => {
                let c = row
                    .conversion
                    .as_ref()
                    .unwrap_or_else(|| panic!("{i} not credited"));
                assert_eq!((c.goal.as_str(), c.value), ("payment_made", *value));
                assert_eq!(c.currency.as_deref(), Some("MXN"));
                value_mxn += value.unwrap_or(0.0);
                assert_eq!(row.step, "", "{i}: the follow-up never started");
                assert_eq!(row.stopped.as_deref(), Some("converted:payment_made"));
            }
            None => {
                assert!(row.conversion.is_none(), "{i} credited");
                assert_eq!(row.step, "nudge", "{i}: its follow-up went");
                assert!(row.wamid.is_some(), "{i}");
            }
        }
    }
    let s = CampaignSummary::compute(store.as_ref(), "promo")
        .await
        .unwrap();
    assert_eq!(s.converted, promo_credit.len() as u64);
    let summed = s.conversion_value["MXN"];
    assert!((summed - value_mxn).abs() < 1e-6, "{summed} vs {value_mxn}");
    let n = CampaignSummary::compute(store.as_ref(), "news")
        .await
        .unwrap();
    assert_eq!(n.converted, news_credit.len() as u64);
    assert!(n.conversion_value.is_empty(), "signups carry no value");
    let news_rows = store
        .scan_dispatches("news", None, NEWS as usize + 1)
        .await
        .unwrap();
    let credited: BTreeSet<u32> = news_rows
        .iter()
        .filter(|r| r.conversion.is_some())
        .map(|r| index[r.contact.as_str()])
        .collect();
    assert_eq!(credited, news_credit);

    // Every credit is a conversion event (at least once: a record read
    // again after the kill may publish its event again).
    let expected = promo_credit.len() + news_credit.len();
    // Each record is looked at once: the topic holds thousands of status
    // events, and parsing all of them again after every record read would
    // take longer than the deadline.
    let (mut journeys, mut looked) = (BTreeSet::new(), 0);
    let events = read_until(
        &kafka.brokers,
        &config.kafka.topics.events,
        Duration::from_secs(30),
        "every conversion event",
        |read| {
            for (_, payload, _) in &read[looked..] {
                let Some(p) = payload.as_deref() else {
                    continue;
                };
                if !p.contains(r#""type":"conversion""#) {
                    continue;
                }
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(p) {
                    journeys.insert((v["campaign_id"].to_string(), v["contact"].to_string()));
                }
            }
            looked = read.len();
            journeys.len() >= expected
        },
    );
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for v in events
        .iter()
        .filter_map(|(_, p, _)| p.as_deref())
        .filter(|p| p.contains(r#""type":"conversion""#))
        .map(|p| serde_json::from_str::<serde_json::Value>(p).unwrap())
    {
        let campaign = v["campaign_id"].as_str().unwrap().to_string();
        let i = index[v["contact"].as_str().unwrap()];
        match campaign.as_str() {
            "promo" => {
                assert!(promo_credit.contains_key(&i), "{v}");
                assert_eq!(v["goal"], "payment_made");
                assert_eq!(v["stopped_journey"], true, "{v}");
                assert_eq!(v["step"], "primary");
            }
            "news" => {
                assert!(news_credit.contains(&i), "{v}");
                assert_eq!(v["stopped_journey"], false, "{v}");
            }
            other => panic!("credited to {other}: {v}"),
        }
        seen.insert((campaign, v["contact"].as_str().unwrap().to_string()));
    }
    assert_eq!(seen.len(), expected);

    // The unreadable records went to the dead-letter topic with their
    // source and error; nothing else did.
    let letters = read_until(
        &kafka.brokers,
        &config.kafka.topics.audience_dlq,
        Duration::from_secs(30),
        "the dead-lettered conversions",
        |read| read.len() >= bad.len(),
    );
    let from_conversions: Vec<_> = letters
        .iter()
        .filter(|(_, _, h)| h.get("source.topic") == Some(&config.kafka.topics.conversions))
        .collect();
    assert!(from_conversions.len() >= bad.len(), "{letters:?}");
    for (_, _, headers) in &from_conversions {
        assert!(!headers["error"].is_empty());
    }
    let errors: BTreeSet<&str> = from_conversions
        .iter()
        .map(|(_, _, h)| h["error"].as_str())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("no currency")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("not a contact id")),
        "{errors:?}"
    );
    eprintln!(
        "conversions: {} records ({} distinct, {unattributed} credited to none, {} unreadable), \
         {} promo and {} news journeys credited, {nudges} follow-ups sent; after the primaries: killed at {killed_at:?}, promo credited at {credited_at:?}, settled {settled:?}",
        stream.len(),
        records.len(),
        bad.len(),
        promo_credit.len(),
        news_credit.len()
    );
}
