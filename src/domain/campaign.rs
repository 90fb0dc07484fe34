//! The campaign definition published on `wa.campaigns` (docs/ARCHITECTURE.md,
//! "Kafka contracts"): what to send, from which senders, when, and how fast.

use std::fmt;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, NaiveTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::journey::{Journey, StepSpec};

mod fields;

use super::goal::{Goal, GoalSpec};
use super::problem::SpecProblem;
use super::template::{CompiledTemplate, TemplateSpec};
use super::trigger::{Trigger, TriggerSpec};
pub use fields::unknown_fields;

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
    /// A test campaign's recipients (phones or user ids): every other
    /// contact of its audience is excluded `not_a_test_recipient`.
    /// Normalised by [`CampaignSpec::normalize`] (phones to E.164).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_recipients: Vec<String>,
    /// The contacts of the audience the campaign takes, by tag; the others
    /// are excluded `not_in_segment` (docs/ARCHITECTURE.md, "Segments").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<super::Segment>,
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
    /// A journey: the primary message and the steps that follow it
    /// (docs/ARCHITECTURE.md, "Journeys"). Empty: the template, once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepSpec>,
    /// Makes the campaign a triggered one: its audience records are events,
    /// one row per occurrence (docs/ARCHITECTURE.md, "Triggered
    /// campaigns").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerSpec>,
    /// What the campaign is for: conversions of this goal on
    /// `wa.conversions` are credited to it (docs/ARCHITECTURE.md, "Goals
    /// and conversions").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<GoalSpec>,
}

impl CampaignSpec {
    /// The WhatsApp template of a step of the journey (`""` is the first):
    /// `None` for an SMS step or a step the spec does not have.
    pub fn template_of(&self, step: &str) -> Option<&TemplateSpec> {
        if step.is_empty() {
            return Some(&self.template);
        }
        self.steps
            .iter()
            .skip(1)
            .find(|s| s.id == step)
            .and_then(|s| s.template.as_ref())
    }
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

    /// True for a real campaign (events leave their `kind` out).
    pub fn is_real(&self) -> bool {
        *self == CampaignKind::Real
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
        let mut spec: CampaignSpec =
            serde_json::from_slice(bytes).map_err(|e| SpecError::Json(e.to_string()))?;
        spec.normalize();
        Ok(spec)
    }

    /// The primary template may be written in `steps[0].template`: it moves
    /// to `template`, where everything that sends the primary reads it
    /// (given in both places, it stays for `validate` to report).
    pub fn normalize(&mut self) {
        if let Some(first) = self.steps.first_mut() {
            if first.template.is_some() && self.template == TemplateSpec::default() {
                self.template = first.template.take().unwrap_or_default();
            }
        }
        // Test recipients as staging keys them (one that does not parse
        // stays as given, for `validate` to report).
        for r in &mut self.test_recipients {
            if let Ok(key) = super::ContactKey::parse_id(r, None) {
                *r = key.into_string();
            }
        }
    }

    /// Whether a test campaign may send to `contact` (any contact for a
    /// real campaign).
    pub fn admits_test_recipient(&self, contact: &super::ContactKey) -> bool {
        self.kind != CampaignKind::Test
            || self.test_recipients.iter().any(|r| r == contact.as_str())
    }

    /// The journey: the steps checked and compiled, or the one-step
    /// journey of a spec without `steps`.
    pub fn journey(&self) -> Result<Journey, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        if self.steps.first().is_some_and(|s| s.template.is_some()) {
            problems.push(SpecProblem::new(
                "steps[0].template",
                "the primary template is given twice, here and as template; keep one",
            ));
        }
        match Journey::plan(&self.steps) {
            Ok(journey) if problems.is_empty() => Ok(journey),
            Ok(_) => Err(problems),
            Err(more) => {
                problems.extend(more);
                Err(problems)
            }
        }
    }

    /// The checked trigger of a triggered campaign; `None` for any other
    /// campaign (and for a trigger `validate` refuses).
    pub fn trigger(&self) -> Option<Trigger> {
        self.trigger.as_ref().and_then(|t| t.check().ok())
    }

    /// The checked goal; `None` for a campaign without one (and for a goal
    /// `validate` refuses).
    pub fn goal(&self) -> Option<Goal> {
        self.goal.as_ref().and_then(|g| g.check().ok())
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
        if let Err(journey_problems) = self.journey() {
            problems.extend(journey_problems);
        }
        if let Some(Err(trigger_problems)) = self.trigger.as_ref().map(TriggerSpec::check) {
            problems.extend(trigger_problems);
        }
        if let Some(Err(goal_problems)) = self.goal.as_ref().map(GoalSpec::check) {
            problems.extend(goal_problems);
        }
        self.check_test_recipients(&mut problems);
        if let Some(segment) = &self.audience {
            problems.extend(segment.check());
        }
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

    fn check_test_recipients(&self, problems: &mut Vec<SpecProblem>) {
        match self.kind {
            CampaignKind::Test if self.test_recipients.is_empty() => {
                problems.push(SpecProblem::new(
                    "test_recipients",
                    "a test campaign sends only to the phones or user ids it lists here; list at least one",
                ));
            }
            CampaignKind::Real if !self.test_recipients.is_empty() => {
                problems.push(SpecProblem::new(
                    "test_recipients",
                    "is for test campaigns; set \"kind\": \"test\" or remove it",
                ));
            }
            _ => {}
        }
        for (i, r) in self.test_recipients.iter().enumerate() {
            let field = format!("test_recipients[{i}]");
            if super::ContactKey::parse_id(r, None).is_err() {
                problems.push(SpecProblem::new(
                    field,
                    format!("\"{r}\" is neither a phone number in international form (+52 55 1234 5678) nor a user id"),
                ));
            } else if self.test_recipients[..i].contains(r) {
                problems.push(SpecProblem::new(field, format!("\"{r}\" is listed twice")));
            }
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
mod tests;
