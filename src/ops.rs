//! `wadispatch campaigns`: what the campaigns are doing, and pausing,
//! resuming or ending one, from the command line.
//!
//! Reading asks a running daemon first (its admin listener's
//! `/campaigns`: live rates, ETA, wait reasons), and reads the store when
//! no daemon answers. A change is a new version of the campaign's spec on
//! the campaigns topic, with only `state` changed: the topic stays the one
//! source of truth, every instance applies it, and it outlives restarts
//! (docs/ARCHITECTURE.md, "Campaign operations").

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::domain::{DesiredState, DispatchState};

/// How long a read of the campaigns topic may take before the command
/// gives up.
const TOPIC_READ: Duration = Duration::from_secs(20);

/// How long a change waits for a running daemon to show it.
const APPLY_WAIT: Duration = Duration::from_secs(15);

/// Where the admin API of the daemon is: `--admin`, else `admin.listen`
/// (a wildcard address is reached on loopback).
pub fn admin_url(config: &Config, admin: Option<&str>) -> String {
    if let Some(url) = admin {
        return url.trim_end_matches('/').to_string();
    }
    let listen = &config.admin.listen;
    let reachable = match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() && a.is_ipv4() => format!("127.0.0.1:{}", a.port()),
        Ok(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        _ => listen.clone(),
    };
    format!("http://{reachable}")
}

/// One campaign as `campaigns list` shows it, from either source.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CampaignLine {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub desired_state: String,
    pub observed_state: Option<String>,
    pub staged: u64,
    /// Contacts of the current step still to send: pending, deferred,
    /// claimed.
    pub left: u64,
    /// Messages per second the daemon paces at (a running daemon only).
    pub configured_rate: Option<f64>,
    /// Messages per second measured by the daemon (a running daemon only).
    pub current_rate: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub wait_reason: Option<String>,
    pub halted: Option<String>,
}

impl CampaignLine {
    /// The share of staged contacts no longer waiting to be sent.
    pub fn progress(&self) -> f64 {
        if self.staged == 0 {
            return 0.0;
        }
        100.0 * (self.staged - self.left.min(self.staged)) as f64 / self.staged as f64
    }
}

/// The part of an entry of the daemon's `/campaigns` the command reads
/// (the rest is shown as the daemon wrote it by `campaigns show --json`).
#[derive(Debug, Deserialize)]
struct LiveEntry {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    desired_state: String,
    observed_state: Option<String>,
    #[serde(default)]
    staged: u64,
    #[serde(default)]
    pending: u64,
    #[serde(default)]
    deferred: u64,
    #[serde(default)]
    by_state: BTreeMap<String, u64>,
    configured_rate: Option<f64>,
    current_rate: Option<f64>,
    eta_seconds: Option<f64>,
    wait_reason: Option<String>,
    halted: Option<String>,
}

impl From<LiveEntry> for CampaignLine {
    fn from(e: LiveEntry) -> Self {
        let claimed = e.by_state.get("claimed").copied().unwrap_or(0);
        CampaignLine {
            id: e.id,
            name: e.name,
            kind: e.kind,
            desired_state: e.desired_state,
            observed_state: e.observed_state,
            staged: e.staged,
            left: e.pending + e.deferred + claimed,
            configured_rate: e.configured_rate,
            current_rate: e.current_rate,
            eta_seconds: e.eta_seconds,
            wait_reason: e.wait_reason,
            halted: e.halted,
        }
    }
}

/// What the daemon's admin API answered, or why it did not.
pub enum Live {
    /// Every campaign as `/campaigns` listed it (raw, and read).
    Answered(Vec<serde_json::Value>),
    /// No daemon listens there (refused, timed out): read the store.
    NoDaemon(String),
}

/// `GET {admin}/campaigns`. A listener that answers something else than
/// the campaigns is an error (a wrong `--admin`), not a stopped daemon.
pub async fn fetch_live(admin: &str) -> anyhow::Result<Live> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{admin}/campaigns");
    let response = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() || e.is_timeout() => {
            return Ok(Live::NoDaemon(format!("no daemon answered at {admin}")))
        }
        Err(e) => anyhow::bail!("{url}: {e}"),
    };
    if !response.status().is_success() {
        anyhow::bail!(
            "{url} answered {}: is --admin (or admin.listen) the daemon's admin listener?",
            response.status()
        );
    }
    let all: Vec<serde_json::Value> = response.json().await.map_err(|e| {
        anyhow::anyhow!(
            "{url} did not answer a list of campaigns ({e}): is it the daemon's admin listener?"
        )
    })?;
    Ok(Live::Answered(all))
}

/// The lines of a daemon's answer.
pub fn live_lines(all: &[serde_json::Value]) -> anyhow::Result<Vec<CampaignLine>> {
    all.iter()
        .map(|v| {
            serde_json::from_value::<LiveEntry>(v.clone())
                .map(CampaignLine::from)
                .map_err(|e| anyhow::anyhow!("an entry of /campaigns is not understood: {e}"))
        })
        .collect()
}

/// A campaign as the store has it (the daemon stopped): its record, its
/// counts, and its halt.
pub struct Stored {
    pub record: crate::store::CampaignRecord,
    pub summary: crate::report::CampaignSummary,
    pub halt: Option<String>,
}

impl Stored {
    pub fn line(&self) -> CampaignLine {
        let s = &self.summary;
        let spec = &self.record.spec;
        CampaignLine {
            id: spec.id.clone(),
            name: spec.name.clone(),
            kind: spec.kind.as_str().to_string(),
            desired_state: spec.state.as_str().to_string(),
            observed_state: Some(self.record.observed_state.as_str().to_string()),
            staged: s.staged,
            left: s.count(DispatchState::Pending)
                + s.count(DispatchState::Deferred)
                + s.count(DispatchState::Claimed),
            configured_rate: None,
            current_rate: None,
            eta_seconds: None,
            wait_reason: None,
            halted: self.halt.clone(),
        }
    }
}

/// Every campaign of the store with its counts, in id order; `one` limits
/// it to that campaign. `on_campaign` is called after each (progress).
pub async fn read_store(
    store: &dyn crate::store::Store,
    one: Option<&str>,
    mut on_campaign: impl FnMut(&str),
) -> anyhow::Result<Vec<Stored>> {
    let mut records = store.list_campaigns().await?;
    records.retain(|r| one.is_none_or(|id| r.spec.id == id));
    records.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let id = record.spec.id.clone();
        let mut summary = crate::report::CampaignSummary::compute(store, &id).await?;
        summary.kind = Some(record.spec.kind);
        let halt = store.campaign_halt(&id).await?.map(|h| h.reason);
        on_campaign(&id);
        out.push(Stored {
            record,
            summary,
            halt,
        });
    }
    Ok(out)
}

/// Seconds in words: `45s`, `12m`, `3h05m`, `2d04h`.
pub fn duration_words(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The table of `campaigns list`.
pub fn render_table(lines: &[CampaignLine]) -> String {
    let header = [
        "ID", "KIND", "DESIRED", "OBSERVED", "PROGRESS", "RATE", "ETA", "WAITING",
    ];
    let rows: Vec<[String; 8]> = lines
        .iter()
        .map(|l| {
            let rate = match (l.current_rate, l.configured_rate) {
                (Some(now), Some(set)) => format!("{now:.1}/{set:.1}/s"),
                (None, Some(set)) => format!("-/{set:.1}/s"),
                _ => "-".into(),
            };
            let waiting = l
                .halted
                .as_ref()
                .map(|h| format!("halted: {h}"))
                .or_else(|| l.wait_reason.clone())
                .unwrap_or_else(|| "-".into());
            [
                l.id.clone(),
                l.kind.clone(),
                l.desired_state.clone(),
                l.observed_state.clone().unwrap_or_else(|| "-".into()),
                format!(
                    "{}/{} {:.0}%",
                    l.staged - l.left.min(l.staged),
                    l.staged,
                    l.progress()
                ),
                rate,
                l.eta_seconds
                    .map(duration_words)
                    .unwrap_or_else(|| "-".into()),
                waiting,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: &mut dyn Iterator<Item = &str>| {
        let line: Vec<String> = cells.zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    };
    push(&mut header.iter().copied());
    for r in &rows {
        push(&mut r.iter().map(String::as_str));
    }
    out
}

/// A change an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Pause,
    Resume,
    End,
}

impl Change {
    pub fn target(self) -> DesiredState {
        match self {
            Change::Pause => DesiredState::Paused,
            Change::Resume => DesiredState::Active,
            Change::End => DesiredState::Ended,
        }
    }

    pub fn verb(self) -> &'static str {
        match self {
            Change::Pause => "pause",
            Change::Resume => "resume",
            Change::End => "end",
        }
    }
}

/// What a change does to a spec whose desired state is `current`: the new
/// state to publish, nothing to do (with why), or a refusal (with what to
/// do instead).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Publish(DesiredState),
    AlreadyThere(String),
    Refused(String),
}

pub fn decide(id: &str, current: DesiredState, change: Change) -> Decision {
    use DesiredState::*;
    match (change, current) {
        (_, Ended) => match change {
            Change::End => Decision::AlreadyThere(format!("campaign {id} is already ended")),
            _ => Decision::Refused(format!(
                "campaign {id} is ended, and an ended campaign never sends again; to reach its contacts again, publish a new campaign (`report --format csv` of it can be imported as the new audience)"
            )),
        },
        (Change::Pause, Paused) => {
            Decision::AlreadyThere(format!("campaign {id} is already paused"))
        }
        (Change::Resume, Active) => Decision::AlreadyThere(format!(
            "campaign {id} is already active (desired state); `campaigns show {id}` says what it waits for, if anything"
        )),
        (Change::Resume, Scheduled) => Decision::AlreadyThere(format!(
            "campaign {id} is scheduled, not paused: it starts at its schedule's start_at"
        )),
        (change, _) => Decision::Publish(change.target()),
    }
}

/// The desired state a raw spec asks for (`active` when it says none, as
/// the daemon reads it).
pub fn desired_state_of(spec: &serde_json::Value) -> anyhow::Result<DesiredState> {
    match spec.get("state") {
        None | Some(serde_json::Value::Null) => Ok(DesiredState::Active),
        Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
            anyhow::anyhow!("its state {v} is not one of scheduled, active, paused, ended")
        }),
    }
}

/// The spec with `state` set to `target`, every other field as the
/// upstream wrote it; refused when the daemon would not accept it.
pub fn with_state(id: &str, spec: &[u8], target: DesiredState) -> anyhow::Result<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(spec).map_err(|e| {
        anyhow::anyhow!("the spec of {id} on the campaigns topic is not JSON ({e}); the daemon ignores it too: have the upstream publish it again")
    })?;
    let Some(object) = v.as_object_mut() else {
        anyhow::bail!("the spec of {id} on the campaigns topic is not a JSON object; the daemon ignores it too: have the upstream publish it again");
    };
    object.insert("state".into(), serde_json::Value::from(target.as_str()));
    let bytes = serde_json::to_vec(&v)?;
    if let Err(crate::ingest::catalog::SpecRejection::Invalid { problems, .. }) =
        crate::ingest::catalog::CampaignCatalog::parse(id, &bytes)
    {
        anyhow::bail!(
            "the spec of {id} on the campaigns topic is invalid, so the daemon ignores it and would ignore the change too; have the upstream fix it:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(bytes)
}

/// Every campaign spec on the campaigns topic, by key: the latest record of
/// each (what the daemon applies).
pub async fn topic_specs(
    config: &Config,
    brokers: &str,
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let extra = crate::app::kafka_extra(config);
    crate::import::probe(brokers, &extra).await?;
    let topic = config.kafka.topics.campaigns.clone();
    let brokers = brokers.to_string();
    tokio::task::spawn_blocking(move || {
        crate::ingest::compacted::CompactedReader::new(&brokers, &topic, &extra, "campaigns")?
            .snapshot(TOPIC_READ)
    })
    .await?
    .map_err(anyhow::Error::from)
}

/// The spec of `id` on the topic, or an error that lists the ones there.
pub fn spec_of<'a>(
    specs: &'a BTreeMap<String, Vec<u8>>,
    id: &str,
    topic: &str,
) -> anyhow::Result<&'a [u8]> {
    specs.get(id).map(Vec::as_slice).ok_or_else(|| {
        let known: Vec<&str> = specs.keys().map(String::as_str).collect();
        let listed = holding(&known);
        anyhow::anyhow!(
            "campaign {id} has no spec on topic {topic} ({listed}); check the id and --config"
        )
    })
}

/// The campaigns a store or a topic holds, in words, the first 20 of
/// `ids` (sorted) named: for the message of a campaign not found there.
pub fn holding(ids: &[&str]) -> String {
    match ids.len() {
        0 => "it holds no campaign".to_string(),
        n if n <= 20 => format!("it holds: {}", ids.join(", ")),
        n => format!(
            "it holds {n} campaigns, among them: {}",
            ids[..20].join(", ")
        ),
    }
}

/// Publishes `spec` as the new version of campaign `id`. The record says in
/// its headers which command changed it and who ran it. Returns the
/// partition and offset.
pub async fn publish(
    config: &Config,
    brokers: &str,
    id: &str,
    spec: &[u8],
    change: Change,
) -> anyhow::Result<(i32, i64)> {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer =
        crate::ingest::client_config(brokers, &crate::app::kafka_extra(config))
            .set("message.timeout.ms", "15000")
            .create()?;
    let by = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let command = format!("wadispatch campaigns {}", change.verb());
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "changed-by",
            value: Some(command.as_str()),
        })
        .insert(Header {
            key: "user",
            value: Some(by.as_str()),
        });
    let topic = &config.kafka.topics.campaigns;
    let record = FutureRecord::to(topic)
        .key(id)
        .payload(spec)
        .headers(headers);
    let delivery = producer
        .send(record, Duration::from_secs(15))
        .await
        .map_err(|(e, _)| anyhow::anyhow!("cannot publish the spec of {id} to {topic}: {e}; nothing changed, run the command again"))?;
    Ok((delivery.partition, delivery.offset))
}

/// After a change: waits for a running daemon to list `id` with the new
/// desired state, and returns its observed state (None: no daemon answers,
/// or it did not show the change within the wait).
pub async fn await_applied(admin: &str, id: &str, target: DesiredState) -> Option<String> {
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    loop {
        match fetch_live(admin).await {
            Ok(Live::Answered(all)) => {
                let line = live_lines(&all).ok()?.into_iter().find(|l| l.id == id);
                if let Some(l) = line.filter(|l| l.desired_state == target.as_str()) {
                    return Some(l.observed_state.unwrap_or_else(|| "-".into()));
                }
            }
            _ => return None,
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_publishes_says_it_is_done_or_refuses() {
        use DesiredState::*;
        let publish = |c, s| decide("c", s, c);
        assert_eq!(publish(Change::Pause, Active), Decision::Publish(Paused));
        assert_eq!(publish(Change::Pause, Scheduled), Decision::Publish(Paused));
        assert_eq!(publish(Change::Resume, Paused), Decision::Publish(Active));
        assert_eq!(publish(Change::End, Paused), Decision::Publish(Ended));
        assert!(matches!(
            publish(Change::Pause, Paused),
            Decision::AlreadyThere(_)
        ));
        assert!(matches!(
            publish(Change::Resume, Active),
            Decision::AlreadyThere(_)
        ));
        assert!(matches!(
            publish(Change::Resume, Scheduled),
            Decision::AlreadyThere(_)
        ));
        assert!(matches!(
            publish(Change::End, Ended),
            Decision::AlreadyThere(_)
        ));
        for c in [Change::Pause, Change::Resume] {
            let Decision::Refused(why) = publish(c, Ended) else {
                panic!("{c:?} of an ended campaign must be refused");
            };
            assert!(why.contains("new campaign"), "{why}");
        }
    }

    #[test]
    fn only_the_state_changes_and_an_invalid_spec_is_never_published() {
        let spec = br#"{"id":"c1","state":"active","senders":["1"],"pacing":{"per_second":5},
            "template":{"name":"t","language":"es_MX","category":"utility","body":["{{name}}"]},
            "tags":["crm"]}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&with_state("c1", spec, DesiredState::Paused).unwrap()).unwrap();
        assert_eq!(out["state"], "paused");
        assert_eq!(out["tags"][0], "crm");
        assert_eq!(out["pacing"]["per_second"], 5);
        assert_eq!(desired_state_of(&out).unwrap(), DesiredState::Paused);
        assert_eq!(
            desired_state_of(&serde_json::json!({"id": "c1"})).unwrap(),
            DesiredState::Active
        );
        let err = with_state("c1", b"[1]", DesiredState::Paused).unwrap_err();
        assert!(err.to_string().contains("not a JSON object"), "{err}");
        let no_template = br#"{"id":"c1","senders":["1"]}"#;
        let err = with_state("c1", no_template, DesiredState::Paused).unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
    }

    #[test]
    fn a_wildcard_admin_address_is_reached_on_loopback() {
        let mut c = Config::default();
        c.admin.listen = "0.0.0.0:9898".into();
        assert_eq!(admin_url(&c, None), "http://127.0.0.1:9898");
        c.admin.listen = "10.0.0.5:9000".into();
        assert_eq!(admin_url(&c, None), "http://10.0.0.5:9000");
        assert_eq!(admin_url(&c, Some("http://h:1/")), "http://h:1");
    }

    #[test]
    fn the_table_shows_progress_rate_eta_and_what_it_waits_for() {
        let line = CampaignLine {
            id: "promo".into(),
            name: String::new(),
            kind: "real".into(),
            desired_state: "active".into(),
            observed_state: Some("active".into()),
            staged: 200,
            left: 50,
            configured_rate: Some(20.0),
            current_rate: Some(18.5),
            eta_seconds: Some(3725.0),
            wait_reason: Some("quiet_hours".into()),
            halted: None,
        };
        let table = render_table(&[line]);
        let row = table.lines().nth(1).unwrap();
        for part in [
            "promo",
            "150/200 75%",
            "18.5/20.0/s",
            "1h02m",
            "quiet_hours",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }
        assert_eq!(duration_words(59.4), "59s");
        assert_eq!(duration_words(90.0), "1m30s");
        assert_eq!(duration_words(2.0 * 86_400.0 + 3600.0 * 4.0), "2d04h");
    }
}
