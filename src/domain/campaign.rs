//! The campaign definition published on `wa.campaigns` (docs/ARCHITECTURE.md,
//! "Kafka contracts"): what to send, from which senders, when, and how fast.

use std::fmt;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::problem::SpecProblem;
use super::template::{CompiledTemplate, TemplateSpec};

/// Default pace when a spec gives none: 20 contacts per second.
pub const DEFAULT_RATE_PER_SECOND: f64 = 20.0;

/// Longest campaign id: ids are store keys and metric label values.
pub const MAX_CAMPAIGN_ID_LEN: usize = 128;
/// Meta's highest throughput for one business phone number, messages/s.
pub const MAX_SENDER_RATE: f64 = 1000.0;
/// The slowest pace honoured: one contact per hour.
pub const MIN_RATE_PER_SECOND: f64 = 1.0 / 3600.0;

/// A campaign as the upstream defines it. Unknown JSON fields are ignored so
/// that upstreams can add their own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    /// Campaign id, also the Kafka key: `[A-Za-z0-9._-]{1,128}`.
    #[serde(default)]
    pub id: String,
    /// Human name for reports; default empty.
    #[serde(default)]
    pub name: String,
    /// `real` (default) or `test`.
    #[serde(default)]
    pub kind: CampaignKind,
    /// The state the upstream wants; default `active`.
    #[serde(default)]
    pub state: DesiredState,
    /// WhatsApp phone_number_ids that may send this campaign.
    #[serde(default)]
    pub senders: Vec<String>,
    /// The template and how to fill it.
    #[serde(default)]
    pub template: TemplateSpec,
    /// Start, end, timezone and quiet hours; default: now, no end, UTC.
    #[serde(default)]
    pub schedule: Schedule,
    /// Contacts per second or per hour; default 20 per second.
    #[serde(default)]
    pub pacing: Pacing,
    /// Skip contacts engaged in another active exclusive campaign; default true.
    #[serde(default = "default_true")]
    pub exclusive: bool,
    /// Where replies go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_routing: Option<ReplyRouting>,
    /// Free labels for reports.
    #[serde(default)]
    pub tags: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// Real campaigns and test campaigns (reported separately, same rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignKind {
    /// A campaign to customers.
    #[default]
    Real,
    /// A trial run, reported apart from real campaigns.
    Test,
}

impl CampaignKind {
    /// The lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CampaignKind::Real => "real",
            CampaignKind::Test => "test",
        }
    }
}

impl fmt::Display for CampaignKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state the upstream asks for; the daemon reconciles toward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// Wait for `schedule.start_at`.
    Scheduled,
    /// Send (within the schedule).
    #[default]
    Active,
    /// Stop sending, keep everything staged.
    Paused,
    /// Stop for good.
    Ended,
}

impl DesiredState {
    /// The lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            DesiredState::Scheduled => "scheduled",
            DesiredState::Active => "active",
            DesiredState::Paused => "paused",
            DesiredState::Ended => "ended",
        }
    }
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where replies to the campaign are routed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRouting {
    /// The agent (AI agent, bot, team) named in `reply` events.
    #[serde(default)]
    pub agent: String,
}

/// When the campaign may send. Times are local datetimes in `timezone`
/// (`2026-11-22T09:00:00`) or RFC 3339 instants with an offset.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Schedule {
    /// First moment to send; none means as soon as active.
    #[serde(default)]
    pub start_at: Option<String>,
    /// Moment after which nothing more is sent; none means no end.
    #[serde(default)]
    pub end_at: Option<String>,
    /// IANA timezone of the local times and of the quiet hours; default UTC.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Daily local window with no sending.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
}

impl Schedule {
    /// The campaign timezone (UTC when absent or unknown; `validate` reports
    /// an unknown one).
    pub fn timezone(&self) -> Tz {
        self.timezone
            .as_deref()
            .and_then(parse_timezone)
            .unwrap_or(Tz::UTC)
    }

    /// `start_at` as an instant, when given and valid.
    pub fn start_utc(&self) -> Option<DateTime<Utc>> {
        parse_local_datetime(self.start_at.as_deref()?, self.timezone())
    }

    /// `end_at` as an instant, when given and valid.
    pub fn end_utc(&self) -> Option<DateTime<Utc>> {
        parse_local_datetime(self.end_at.as_deref()?, self.timezone())
    }

    /// True when `instant` falls in the quiet hours, read on the recipient's
    /// clock when they have a timezone, else on the campaign's.
    pub fn is_quiet_at(&self, instant: DateTime<Utc>, recipient_tz: Option<Tz>) -> bool {
        let Some(quiet) = &self.quiet_hours else {
            return false;
        };
        let tz = recipient_tz.unwrap_or_else(|| self.timezone());
        quiet.is_quiet(instant.with_timezone(&tz).time())
    }
}

/// A daily window, `HH:MM` to `HH:MM` local time, that may cross midnight
/// (`21:00` to `08:00`). `from` is inside the window, `to` is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    /// Start of the quiet window, `HH:MM`.
    pub from: String,
    /// End of the quiet window, `HH:MM`.
    pub to: String,
}

impl QuietHours {
    /// Both ends as times. An unparsable end (which `validate` reports)
    /// gives an empty window rather than a guess.
    pub fn parse(&self) -> (NaiveTime, NaiveTime) {
        match (parse_hhmm(&self.from), parse_hhmm(&self.to)) {
            (Some(from), Some(to)) => (from, to),
            _ => (NaiveTime::MIN, NaiveTime::MIN),
        }
    }

    /// True when `local` is inside the window.
    pub fn is_quiet(&self, local: NaiveTime) -> bool {
        let (from, to) = self.parse();
        if from <= to {
            from <= local && local < to
        } else {
            // Crosses midnight: 21:00-08:00 is quiet from 21:00 on and before 08:00.
            local >= from || local < to
        }
    }
}

fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    // Exactly HH:MM: chrono alone would also take "9:5".
    if s.len() != 5 || s.as_bytes()[2] != b':' {
        return None;
    }
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

/// How fast contacts are sent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pacing {
    /// Contacts per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    /// Contacts per hour (for slow drips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_hour: Option<f64>,
}

impl Pacing {
    /// The pace in contacts per second: `per_second`, else `per_hour / 3600`,
    /// else 20.
    pub fn rate_per_second(&self) -> f64 {
        match (self.per_second, self.per_hour) {
            (Some(per_second), _) => per_second,
            (None, Some(per_hour)) => per_hour / 3600.0,
            (None, None) => DEFAULT_RATE_PER_SECOND,
        }
    }
}

/// A campaign spec that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    /// Not JSON, or JSON of the wrong shape; serde's message names the line
    /// and column.
    #[error("campaign spec is not valid: {0}")]
    Json(String),
    /// Parsed, but with problems.
    #[error("campaign {id}: {}", join_problems(.problems))]
    Invalid {
        /// The spec's id (may be empty).
        id: String,
        /// Every problem found.
        problems: Vec<SpecProblem>,
    },
}

/// The keys each object of a spec may have, by path (`[]` for array items).
/// The template body is left out: its named parameters are free keys.
const SPEC_KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "id",
            "name",
            "kind",
            "state",
            "senders",
            "template",
            "schedule",
            "pacing",
            "exclusive",
            "reply_routing",
            "tags",
        ],
    ),
    (
        "schedule",
        &["start_at", "end_at", "timezone", "quiet_hours"],
    ),
    ("schedule.quiet_hours", &["from", "to"]),
    ("pacing", &["per_second", "per_hour"]),
    ("reply_routing", &["agent"]),
    (
        "template",
        &[
            "name",
            "language",
            "category",
            "parameter_format",
            "body",
            "header",
            "buttons",
        ],
    ),
    (
        "template.header",
        &["type", "media_id", "link", "filename", "text_params"],
    ),
    ("template.buttons[]", &["sub_type", "index", "params"]),
];

/// Every field of `spec` that the format does not have, with the nearest
/// known name when one is close.
pub fn unknown_fields(spec: &serde_json::Value) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    for (path, allowed) in SPEC_KEYS {
        let objects: Vec<(String, &serde_json::Value)> = match path.strip_suffix("[]") {
            Some(list) => lookup(spec, list)
                .and_then(|v| v.as_array())
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .map(|(i, v)| (format!("{list}[{i}]"), v))
                        .collect()
                })
                .unwrap_or_default(),
            None => lookup(spec, path)
                .map(|v| vec![(path.to_string(), v)])
                .unwrap_or_default(),
        };
        for (at, value) in objects {
            let Some(map) = value.as_object() else {
                continue;
            };
            for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
                let field = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                let hint = nearest(key, allowed)
                    .map(|n| format!(" (did you mean {n}?)"))
                    .unwrap_or_default();
                problems.push(SpecProblem::new(
                    field,
                    format!(
                        "is not a campaign spec field{hint}; known here: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
    }
    problems
}

fn lookup<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |v, part| v.get(part))
}

/// A known key that `key` is a prefix of, or one edit away from.
fn nearest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .find(|a| a.starts_with(key) || key.starts_with(*a))
        .or_else(|| allowed.iter().find(|a| edit_distance(key, a) <= 2))
        .copied()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn join_problems(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl CampaignSpec {
    /// A fingerprint of what a template error depends on: the template and
    /// the senders (whose WhatsApp Business Account holds the template);
    /// SHA-256 of their JSON, hex. A halt holds while the spec in force has
    /// the digest it was recorded with: pausing and resuming, or a new pace,
    /// does not lift it.
    pub fn halt_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(&(&self.template, &self.senders)).unwrap_or_default();
        hex::encode(Sha256::digest(json))
    }

    /// Parses a spec from JSON. Only the shape is checked; see `validate`.
    pub fn from_json(bytes: &[u8]) -> Result<CampaignSpec, SpecError> {
        serde_json::from_slice(bytes).map_err(|e| SpecError::Json(e.to_string()))
    }

    /// Parses and validates a spec, returning its compiled template. A
    /// field the spec format does not have is a problem naming its path: a
    /// misspelt `schedule.start` silently ignored would send at once.
    pub fn from_json_validated(
        bytes: &[u8],
    ) -> Result<(CampaignSpec, CompiledTemplate), SpecError> {
        let spec = CampaignSpec::from_json(bytes)?;
        let mut problems = serde_json::from_slice::<serde_json::Value>(bytes)
            .map(|v| unknown_fields(&v))
            .unwrap_or_default();
        match spec.compile() {
            Ok(compiled) if problems.is_empty() => Ok((spec, compiled)),
            Ok(_) => Err(SpecError::Invalid {
                id: spec.id.clone(),
                problems,
            }),
            Err(more) => {
                problems.extend(more);
                Err(SpecError::Invalid {
                    id: spec.id.clone(),
                    problems,
                })
            }
        }
    }

    /// Checks the whole spec and reports every problem at once.
    pub fn validate(&self) -> Result<(), Vec<SpecProblem>> {
        self.compile().map(|_| ())
    }

    /// Checks the whole spec (like `validate`) and compiles its template.
    pub fn compile(&self) -> Result<CompiledTemplate, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        self.check_id(&mut problems);
        self.check_senders(&mut problems);
        let compiled = self.template.compile();
        if let Err(template_problems) = &compiled {
            problems.extend(template_problems.iter().cloned());
        }
        self.check_schedule(&mut problems);
        self.check_pacing(&mut problems);
        if let Some(routing) = &self.reply_routing {
            if routing.agent.trim().is_empty() {
                problems.push(SpecProblem::new("reply_routing.agent", "is missing"));
            }
        }
        match compiled {
            Ok(compiled) if problems.is_empty() => Ok(compiled),
            _ => Err(problems),
        }
    }

    fn check_id(&self, problems: &mut Vec<SpecProblem>) {
        if self.id.is_empty() {
            problems.push(SpecProblem::new("id", "is missing"));
        } else if self.id.len() > MAX_CAMPAIGN_ID_LEN {
            problems.push(SpecProblem::new(
                "id",
                format!(
                    "\"{}…\" is longer than {MAX_CAMPAIGN_ID_LEN} characters",
                    self.id.chars().take(32).collect::<String>()
                ),
            ));
        } else if !is_campaign_id(&self.id) {
            problems.push(SpecProblem::new(
                "id",
                format!(
                    "\"{}\" may contain only letters, digits, '.', '_' and '-'",
                    self.id
                ),
            ));
        }
    }

    fn check_senders(&self, problems: &mut Vec<SpecProblem>) {
        if self.senders.is_empty() {
            problems.push(SpecProblem::new(
                "senders",
                "at least one phone_number_id is required",
            ));
        }
        for (i, sender) in self.senders.iter().enumerate() {
            let field = format!("senders[{i}]");
            if sender.is_empty() || !sender.bytes().all(|b| b.is_ascii_digit()) {
                problems.push(SpecProblem::new(
                    field,
                    format!("\"{sender}\" is not a numeric phone_number_id"),
                ));
            } else if self.senders[..i].contains(sender) {
                problems.push(SpecProblem::new(
                    field,
                    format!("\"{sender}\" is listed twice"),
                ));
            }
        }
    }

    fn check_schedule(&self, problems: &mut Vec<SpecProblem>) {
        let schedule = &self.schedule;
        let tz = match schedule.timezone.as_deref() {
            None => Tz::UTC,
            Some(name) => parse_timezone(name).unwrap_or_else(|| {
                problems.push(SpecProblem::new(
                    "schedule.timezone",
                    format!("\"{name}\" is not an IANA timezone"),
                ));
                Tz::UTC
            }),
        };
        let mut instant = |field: &str, value: &Option<String>| {
            let raw = value.as_deref()?;
            let parsed = parse_local_datetime(raw, tz);
            if parsed.is_none() {
                problems.push(SpecProblem::new(
                    field,
                    format!("\"{raw}\" is not a datetime (expected 2026-11-22T09:00:00)"),
                ));
            }
            parsed
        };
        let start = instant("schedule.start_at", &schedule.start_at);
        let end = instant("schedule.end_at", &schedule.end_at);
        if let (Some(start), Some(end)) = (start, end) {
            if end <= start {
                problems.push(SpecProblem::new(
                    "schedule.end_at",
                    if end == start {
                        "is equal to schedule.start_at"
                    } else {
                        "is before schedule.start_at"
                    },
                ));
            }
        }
        if let Some(quiet) = &schedule.quiet_hours {
            let from = parse_hhmm(&quiet.from);
            let to = parse_hhmm(&quiet.to);
            for (field, raw, parsed) in [
                ("schedule.quiet_hours.from", &quiet.from, from),
                ("schedule.quiet_hours.to", &quiet.to, to),
            ] {
                if parsed.is_none() {
                    problems.push(SpecProblem::new(
                        field,
                        format!("\"{raw}\" is not HH:MM (like 21:00)"),
                    ));
                }
            }
            if from.is_some() && from == to {
                // Empty or all day? Either reading surprises someone.
                problems.push(SpecProblem::new(
                    "schedule.quiet_hours",
                    "from and to are equal; give a window or no quiet_hours",
                ));
            }
        }
    }

    fn check_pacing(&self, problems: &mut Vec<SpecProblem>) {
        let pacing = &self.pacing;
        if pacing.per_second.is_some() && pacing.per_hour.is_some() {
            problems.push(SpecProblem::new(
                "pacing",
                "give per_second or per_hour, not both",
            ));
        }
        for (field, value) in [
            ("pacing.per_second", pacing.per_second),
            ("pacing.per_hour", pacing.per_hour),
        ] {
            if let Some(v) = value {
                if !(v.is_finite() && v > 0.0) {
                    problems.push(SpecProblem::new(field, format!("must be > 0, got {v}")));
                }
            }
        }
        let rate = pacing.rate_per_second();
        if rate.is_finite() && rate > 0.0 && rate < MIN_RATE_PER_SECOND {
            problems.push(SpecProblem::new(
                "pacing",
                format!(
                    "must be at least 1 contact per hour, got {:.3} per hour",
                    rate * 3600.0
                ),
            ));
        }
        let ceiling = MAX_SENDER_RATE * self.senders.len().max(1) as f64;
        if rate.is_finite() && rate > ceiling {
            problems.push(SpecProblem::new(
                if pacing.per_hour.is_some() { "pacing.per_hour" } else { "pacing.per_second" },
                format!(
                    "{rate} contacts/s is above what {} sender(s) can send ({} messages/s per number is Meta's ceiling)",
                    self.senders.len().max(1),
                    MAX_SENDER_RATE
                ),
            ));
        }
    }
}

/// True for `[A-Za-z0-9._-]{1,128}`.
pub fn is_campaign_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CAMPAIGN_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An IANA timezone by name (`America/Mexico_City`).
pub fn parse_timezone(name: &str) -> Option<Tz> {
    name.trim().parse().ok()
}

/// Reads a schedule time: an RFC 3339 instant with an offset
/// (`2026-11-22T09:00:00-06:00`), or a local datetime in `tz`
/// (`2026-11-22T09:00:00`, seconds and fraction optional, 'T' or ' ').
///
/// A local time that happens twice (clocks go back) is the earlier
/// instant; one that never happens (clocks go forward) is moved later by
/// the length of the gap, as java.time and Temporal do, so 02:30 in a
/// 02:00→03:00 gap is 03:30.
pub fn parse_local_datetime(raw: &str, tz: Tz) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(instant) = DateTime::parse_from_rfc3339(raw) {
        return Some(instant.with_timezone(&Utc));
    }
    const FORMATS: [&str; 4] = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ];
    let naive = FORMATS
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(raw, format).ok())?;
    local_to_utc(naive, tz)
}

/// A local datetime in `tz` as an instant (earlier on a fold, shifted by
/// the gap on a gap).
pub fn local_to_utc(naive: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => {
            // The offset in force before the gap: a day earlier is before the
            // transition (no zone has two transitions a day apart).
            let before = naive.checked_sub_signed(Duration::days(1))?;
            let offset = tz.offset_from_utc_datetime(&before).fix();
            let utc =
                naive.checked_sub_signed(Duration::seconds(i64::from(offset.local_minus_utc())))?;
            Some(Utc.from_utc_datetime(&utc))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_fields_are_problems_naming_their_path() {
        let json = br#"{"id":"c","senders":["1"],"template":{"name":"t","language":"es","bodyy":[],
            "buttons":[{"sub_type":"url","index":0,"params":[],"label":"x"}]},
            "schedule":{"start":"2099-01-01T09:00:00"},"pacing":{"per_minute":5},"colour":"red"}"#;
        let Err(SpecError::Invalid { problems, .. }) = CampaignSpec::from_json_validated(json)
        else {
            panic!("an unknown field must be refused");
        };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in [
            "colour",
            "schedule.start",
            "pacing.per_minute",
            "template.bodyy",
            "template.buttons[0].label",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let start = problems
            .iter()
            .find(|p| p.field == "schedule.start")
            .unwrap();
        assert!(
            start.message.contains("did you mean start_at?"),
            "{}",
            start.message
        );
    }

    #[test]
    fn slow_drips_down_to_one_an_hour_and_no_faster_than_the_senders() {
        let spec = |pacing: &str, senders: &str| {
            format!(
                r#"{{"id":"c","senders":{senders},"template":{{"name":"t","language":"es"}},"pacing":{pacing}}}"#
            )
        };
        assert!(CampaignSpec::from_json_validated(
            spec(r#"{"per_hour":1}"#, r#"["1"]"#).as_bytes()
        )
        .is_ok());
        assert!(CampaignSpec::from_json_validated(
            spec(r#"{"per_hour":0.5}"#, r#"["1"]"#).as_bytes()
        )
        .is_err());
        assert!(CampaignSpec::from_json_validated(
            spec(r#"{"per_second":1000}"#, r#"["1"]"#).as_bytes()
        )
        .is_ok());
        assert!(CampaignSpec::from_json_validated(
            spec(r#"{"per_second":1500}"#, r#"["1"]"#).as_bytes()
        )
        .is_err());
        assert!(CampaignSpec::from_json_validated(
            spec(r#"{"per_second":1500}"#, r#"["1","2"]"#).as_bytes()
        )
        .is_ok());
    }

    use super::super::template::{BodyParams, HeaderType, ParamSpec};
    use super::*;

    /// A full example spec: every top-level field present.
    const EXAMPLE_SPEC: &str = r#"{
  "id": "bday-2026-11", "name": "Birthday promo November", "kind": "real",
  "state": "active",
  "senders": ["106540352242922"],
  "template": {"name": "birthday_promo", "language": "es_MX", "category": "marketing",
               "body": ["{{name}}", "{{discount}}"],
               "header": {"type": "image", "media_id": "1234"},
               "buttons": [{"sub_type": "url", "index": 0, "params": ["{{coupon}}"]}]},
  "schedule": {"start_at": "2026-11-22T09:00:00", "timezone": "America/Mexico_City",
               "end_at": null, "quiet_hours": {"from": "21:00", "to": "08:00"}},
  "pacing": {"per_second": 20},
  "exclusive": true,
  "reply_routing": {"agent": "collections-agent"},
  "tags": ["bday", "promo"]
}"#;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn t(s: &str) -> NaiveTime {
        NaiveTime::parse_from_str(s, "%H:%M").unwrap()
    }

    #[test]
    fn design_example_parses_and_validates() {
        let spec = CampaignSpec::from_json(EXAMPLE_SPEC.as_bytes()).unwrap();
        assert_eq!(spec.id, "bday-2026-11");
        assert_eq!(spec.name, "Birthday promo November");
        assert_eq!(spec.kind, CampaignKind::Real);
        assert_eq!(spec.state, DesiredState::Active);
        assert_eq!(spec.senders, ["106540352242922"]);
        assert_eq!(spec.template.name, "birthday_promo");
        assert_eq!(
            spec.template.body,
            BodyParams::Positional(vec![
                ParamSpec::Text("{{name}}".into()),
                ParamSpec::Text("{{discount}}".into())
            ])
        );
        assert_eq!(
            spec.template.header.as_ref().map(|h| h.kind),
            Some(HeaderType::Image)
        );
        assert_eq!(spec.template.buttons.len(), 1);
        assert_eq!(spec.schedule.timezone(), chrono_tz::America::Mexico_City);
        assert_eq!(spec.schedule.end_at, None);
        assert_eq!(spec.pacing.rate_per_second(), 20.0);
        assert!(spec.exclusive);
        assert_eq!(
            spec.reply_routing,
            Some(ReplyRouting {
                agent: "collections-agent".into()
            })
        );
        assert_eq!(spec.tags, ["bday", "promo"]);
        assert_eq!(spec.validate(), Ok(()));
        let compiled = spec.compile().unwrap();
        assert_eq!(compiled.variables(), ["name", "discount", "coupon"]);
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let spec = CampaignSpec::from_json(
            br#"{"id":"c1","senders":["1"],"template":{"name":"t","language":"en"},"extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(spec.name, "");
        assert_eq!(spec.kind, CampaignKind::Real);
        assert_eq!(spec.state, DesiredState::Active);
        assert!(spec.exclusive);
        assert_eq!(spec.pacing.rate_per_second(), DEFAULT_RATE_PER_SECOND);
        assert_eq!(spec.schedule.timezone(), Tz::UTC);
        assert_eq!(spec.schedule.start_utc(), None);
        assert_eq!(spec.validate(), Ok(()));
        // Serialising and reading back gives the same spec.
        let json = serde_json::to_vec(&spec).unwrap();
        assert_eq!(CampaignSpec::from_json(&json).unwrap(), spec);
    }

    #[test]
    fn test_kind_and_desired_states() {
        let spec =
            CampaignSpec::from_json(br#"{"id":"c","kind":"test","state":"paused"}"#).unwrap();
        assert_eq!(spec.kind, CampaignKind::Test);
        assert_eq!(spec.state, DesiredState::Paused);
        let err = CampaignSpec::from_json(br#"{"id":"c","state":"running"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `running`")
                && err.to_string().contains("line 1 column"),
            "{err}"
        );
    }

    #[test]
    fn json_errors_name_line_and_column() {
        let err = CampaignSpec::from_json(b"{\"id\": \"c\",\n  \"senders\": [}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "campaign spec is not valid: expected value at line 2 column 15"
        );
    }

    #[test]
    fn validate_reports_every_problem_with_its_field() {
        let spec = CampaignSpec::from_json(
            br#"{"id":"bad id!","senders":["106540352242922","abc"],
                "template":{"name":"","language":"","body":["{{name"]},
                "schedule":{"timezone":"Mars/Base","start_at":"tomorrow","end_at":"2026-01-01T00:00:00",
                            "quiet_hours":{"from":"9pm","to":"08:00"}},
                "pacing":{"per_second":0,"per_hour":100},
                "reply_routing":{"agent":""}}"#,
        )
        .unwrap();
        let problems: Vec<String> = spec
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "id: \"bad id!\" may contain only letters, digits, '.', '_' and '-'",
                "senders[1]: \"abc\" is not a numeric phone_number_id",
                "template.name is missing",
                "template.language is missing",
                "template.body[0]: \"{{name\" has a {{ without a closing }}",
                "schedule.timezone: \"Mars/Base\" is not an IANA timezone",
                "schedule.start_at: \"tomorrow\" is not a datetime (expected 2026-11-22T09:00:00)",
                "schedule.quiet_hours.from: \"9pm\" is not HH:MM (like 21:00)",
                "pacing: give per_second or per_hour, not both",
                "pacing.per_second: must be > 0, got 0",
                "reply_routing.agent is missing",
            ]
        );
    }

    #[test]
    fn validate_senders_ids_and_window() {
        let spec = CampaignSpec::from_json(
            br#"{"id":"","senders":[],"template":{"name":"t","language":"en"},
                "schedule":{"start_at":"2026-11-22T09:00:00","end_at":"2026-11-21T09:00:00",
                            "quiet_hours":{"from":"21:00","to":"21:00"}},
                "pacing":{"per_hour":-5}}"#,
        )
        .unwrap();
        let problems: Vec<String> = spec
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "id is missing",
                "senders: at least one phone_number_id is required",
                "schedule.end_at is before schedule.start_at",
                "schedule.quiet_hours: from and to are equal; give a window or no quiet_hours",
                "pacing.per_hour: must be > 0, got -5",
            ]
        );
        let long = CampaignSpec {
            id: "x".repeat(129),
            senders: vec!["1".into(), "1".into()],
            ..spec.clone()
        };
        let problems = long.validate().unwrap_err();
        assert_eq!(problems[0].field, "id");
        assert!(problems[0]
            .message
            .ends_with("is longer than 128 characters"));
        assert_eq!(problems[1].to_string(), "senders[1]: \"1\" is listed twice");
    }

    #[test]
    fn from_json_validated_joins_problems() {
        let err = CampaignSpec::from_json_validated(
            br#"{"id":"c1","template":{"name":"t","language":"en"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "campaign c1: senders: at least one phone_number_id is required"
        );
        assert!(CampaignSpec::from_json_validated(EXAMPLE_SPEC.as_bytes()).is_ok());
    }

    #[test]
    fn start_at_in_mexico_city_is_utc_minus_six() {
        let spec = CampaignSpec::from_json(EXAMPLE_SPEC.as_bytes()).unwrap();
        // Mexico City has had no DST since 2022: UTC-6 all year.
        assert_eq!(spec.schedule.start_utc(), Some(utc("2026-11-22T15:00:00Z")));
        assert_eq!(spec.schedule.end_utc(), None);
    }

    #[test]
    fn schedule_time_formats() {
        let mx = chrono_tz::America::Mexico_City;
        let expected = Some(utc("2026-11-22T15:00:00Z"));
        assert_eq!(parse_local_datetime("2026-11-22T09:00", mx), expected);
        assert_eq!(parse_local_datetime("2026-11-22 09:00:00", mx), expected);
        assert_eq!(
            parse_local_datetime("2026-11-22T09:00:00.000", mx),
            expected
        );
        // An explicit offset wins over the campaign timezone.
        assert_eq!(
            parse_local_datetime("2026-11-22T09:00:00-05:00", mx),
            Some(utc("2026-11-22T14:00:00Z"))
        );
        assert_eq!(
            parse_local_datetime("2026-11-22T15:00:00Z", Tz::UTC),
            expected
        );
        assert_eq!(parse_local_datetime("22/11/2026 09:00", mx), None);
        assert_eq!(parse_local_datetime("", mx), None);
    }

    #[test]
    fn dst_fold_takes_the_earlier_instant_and_gap_shifts_forward() {
        let madrid = chrono_tz::Europe::Madrid;
        // 2026-10-25 03:00 CEST → 02:00 CET: 02:30 happens twice.
        assert_eq!(
            parse_local_datetime("2026-10-25T02:30:00", madrid),
            Some(utc("2026-10-25T00:30:00Z"))
        );
        // 2026-03-29 02:00 CET → 03:00 CEST: 02:30 never happens; it is 03:30.
        assert_eq!(
            parse_local_datetime("2026-03-29T02:30:00", madrid),
            Some(utc("2026-03-29T01:30:00Z"))
        );
        assert_eq!(
            utc("2026-03-29T01:30:00Z")
                .with_timezone(&madrid)
                .format("%H:%M")
                .to_string(),
            "03:30"
        );
    }

    #[test]
    fn quiet_hours_crossing_midnight() {
        let quiet = QuietHours {
            from: "21:00".into(),
            to: "08:00".into(),
        };
        assert_eq!(quiet.parse(), (t("21:00"), t("08:00")));
        assert!(quiet.is_quiet(t("21:00")));
        assert!(quiet.is_quiet(t("23:59")));
        assert!(quiet.is_quiet(t("00:00")));
        assert!(quiet.is_quiet(t("07:59")));
        assert!(!quiet.is_quiet(t("08:00")));
        assert!(!quiet.is_quiet(t("12:00")));
        assert!(!quiet.is_quiet(t("20:59")));
    }

    #[test]
    fn quiet_hours_within_a_day_and_invalid() {
        let lunch = QuietHours {
            from: "13:00".into(),
            to: "15:00".into(),
        };
        assert!(lunch.is_quiet(t("14:00")));
        assert!(!lunch.is_quiet(t("15:00")));
        assert!(!lunch.is_quiet(t("12:59")));
        let broken = QuietHours {
            from: "late".into(),
            to: "08:00".into(),
        };
        assert!(!broken.is_quiet(t("03:00")));
        assert!(parse_hhmm("9:05").is_none());
        assert!(parse_hhmm("24:00").is_none());
    }

    #[test]
    fn quiet_hours_on_the_recipient_clock() {
        let spec = CampaignSpec::from_json(EXAMPLE_SPEC.as_bytes()).unwrap();
        // 04:00 UTC is 22:00 in Mexico City (quiet) and 05:00 in Madrid (quiet),
        // 10:00 UTC is 04:00 in Mexico City (quiet) and 11:00 in Madrid (not).
        let madrid = Some(chrono_tz::Europe::Madrid);
        assert!(spec.schedule.is_quiet_at(utc("2026-11-23T04:00:00Z"), None));
        assert!(spec.schedule.is_quiet_at(utc("2026-11-23T10:00:00Z"), None));
        assert!(!spec
            .schedule
            .is_quiet_at(utc("2026-11-23T10:00:00Z"), madrid));
        assert!(!spec.schedule.is_quiet_at(utc("2026-11-23T18:00:00Z"), None));
    }

    #[test]
    fn pacing_rates() {
        let per_hour = Pacing {
            per_second: None,
            per_hour: Some(7200.0),
        };
        assert_eq!(per_hour.rate_per_second(), 2.0);
        let per_second = Pacing {
            per_second: Some(80.0),
            per_hour: None,
        };
        assert_eq!(per_second.rate_per_second(), 80.0);
        assert_eq!(Pacing::default().rate_per_second(), 20.0);
    }
}
