//! The campaign definition published on `wa.campaigns` (DESIGN §3): what to
//! send, from which senders, when, and how fast.

use std::fmt;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::template::{CompiledTemplate, TemplateSpec};

/// Default pace when a spec gives none: 20 contacts per second.
pub const DEFAULT_RATE_PER_SECOND: f64 = 20.0;

/// Longest campaign id: ids are store keys and metric label values.
pub const MAX_CAMPAIGN_ID_LEN: usize = 128;

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

/// One thing wrong with a spec, with the path of the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// Path of the field (`senders[1]`, `schedule.timezone`).
    pub field: String,
    /// What is wrong, naming the value.
    pub message: String,
}

impl SpecProblem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> SpecProblem {
        SpecProblem {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecProblem {
    /// `field: message`; a message that is a predicate about the field
    /// ("is missing") reads as a sentence: `template.name is missing`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.starts_with("is ") {
            write!(f, "{} {}", self.field, self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for SpecProblem {}

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

fn join_problems(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl CampaignSpec {
    /// Parses a spec from JSON. Only the shape is checked; see `validate`.
    pub fn from_json(bytes: &[u8]) -> Result<CampaignSpec, SpecError> {
        serde_json::from_slice(bytes).map_err(|e| SpecError::Json(e.to_string()))
    }

    /// Parses and validates a spec, returning its compiled template.
    pub fn from_json_validated(
        bytes: &[u8],
    ) -> Result<(CampaignSpec, CompiledTemplate), SpecError> {
        let spec = CampaignSpec::from_json(bytes)?;
        match spec.compile() {
            Ok(compiled) => Ok((spec, compiled)),
            Err(problems) => Err(SpecError::Invalid {
                id: spec.id.clone(),
                problems,
            }),
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
    use super::super::template::{BodyParams, HeaderType, ParamSpec};
    use super::*;

    /// The DESIGN §3 example, verbatim.
    const DESIGN_SPEC: &str = r#"{
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
        let spec = CampaignSpec::from_json(DESIGN_SPEC.as_bytes()).unwrap();
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
        assert!(CampaignSpec::from_json_validated(DESIGN_SPEC.as_bytes()).is_ok());
    }

    #[test]
    fn start_at_in_mexico_city_is_utc_minus_six() {
        let spec = CampaignSpec::from_json(DESIGN_SPEC.as_bytes()).unwrap();
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
        let spec = CampaignSpec::from_json(DESIGN_SPEC.as_bytes()).unwrap();
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
