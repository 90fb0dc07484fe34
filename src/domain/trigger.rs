//! Triggered campaigns (docs/ARCHITECTURE.md, "Triggered campaigns"): a
//! campaign whose audience records are events (a cart abandoned, an order
//! shipped), one row per (campaign, contact, occurrence), each due a delay
//! after its event; events of `cancel_on` cancel an occurrence not yet
//! claimed; `max_per_contact` caps the campaign's messages to one contact.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::cap::FrequencyCap;
use super::journey::{delay_text, parse_delay};
use super::problem::SpecProblem;

/// The `trigger` object of a campaign spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TriggerSpec {
    /// How long after its event an occurrence is due (`30m`, `1h`); `0s`
    /// by default (at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Event names that cancel a pending occurrence (`order_placed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel_on: Vec<String>,
    /// At most `count` messages of this campaign to one contact per `per`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_contact: Option<CapSpec>,
    /// How far back an event may be when it arrives (`7d` by default): an
    /// older one is excluded `stale_event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_window: Option<String>,
}

/// `{count, per}` in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapSpec {
    pub count: u32,
    pub per: String,
}

/// A checked trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub delay_secs: u64,
    pub cancel_on: Vec<String>,
    pub cap: Option<FrequencyCap>,
    pub dedupe_secs: u64,
}

/// The dedupe window when the spec sets none.
pub const DEFAULT_DEDUPE_SECS: u64 = 7 * 86_400;

/// The longest delay and dedupe window a trigger may have.
pub const MAX_TRIGGER_SECS: u64 = 90 * 86_400;

/// Longest event name accepted.
pub const MAX_EVENT_LEN: usize = 64;

/// True for an event name: `[a-z0-9_.-]{1,64}`, the shape a metric label
/// and a reason detail can carry.
pub fn is_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_LEN
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

impl TriggerSpec {
    /// The trigger, or every problem with it (paths under `trigger`).
    pub fn check(&self) -> Result<Trigger, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        let mut secs = |field: &str, value: Option<&str>, default: u64| match value {
            None => default,
            Some(raw) => match parse_delay(raw) {
                Ok(secs) if secs <= MAX_TRIGGER_SECS => secs,
                Ok(_) => {
                    problems.push(SpecProblem::new(
                        format!("trigger.{field}"),
                        format!("\"{raw}\" is longer than 90d"),
                    ));
                    default
                }
                Err(why) => {
                    problems.push(SpecProblem::new(format!("trigger.{field}"), why));
                    default
                }
            },
        };
        let delay_secs = secs("delay", self.delay.as_deref(), 0);
        let dedupe_secs = secs(
            "dedupe_window",
            self.dedupe_window.as_deref(),
            DEFAULT_DEDUPE_SECS,
        );
        if dedupe_secs == 0 {
            problems.push(SpecProblem::new(
                "trigger.dedupe_window",
                "must be longer than 0s",
            ));
        }
        for (i, event) in self.cancel_on.iter().enumerate() {
            if !is_event_name(event) {
                problems.push(SpecProblem::new(
                    format!("trigger.cancel_on[{i}]"),
                    format!("\"{event}\" is not an event name ([a-z0-9_.-], 1 to 64 characters)"),
                ));
            } else if self.cancel_on[..i].contains(event) {
                problems.push(SpecProblem::new(
                    format!("trigger.cancel_on[{i}]"),
                    format!("\"{event}\" is listed twice"),
                ));
            }
        }
        let cap = match &self.max_per_contact {
            None => None,
            Some(c) => match FrequencyCap::parse(c.count, &c.per) {
                Ok(cap) => Some(cap),
                Err(why) => {
                    problems.push(SpecProblem::new("trigger.max_per_contact", why));
                    None
                }
            },
        };
        if problems.is_empty() {
            Ok(Trigger {
                delay_secs,
                cancel_on: self.cancel_on.clone(),
                cap,
                dedupe_secs,
            })
        } else {
            Err(problems)
        }
    }
}

impl Trigger {
    /// When an occurrence whose event happened at `event_at` is due: the
    /// delay after it. Quiet hours and the campaign's schedule apply on top,
    /// at the claim, as for every send.
    pub fn due_at(&self, event_at: DateTime<Utc>) -> DateTime<Utc> {
        event_at + secs(self.delay_secs)
    }

    /// Whether an event of `event_at` arriving at `now` is too old to
    /// trigger (older than the dedupe window).
    pub fn is_stale(&self, event_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        event_at + secs(self.dedupe_secs) < now
    }

    /// Whether `event` cancels this campaign's occurrences.
    pub fn cancels_on(&self, event: &str) -> bool {
        self.cancel_on.iter().any(|e| e == event)
    }

    /// One line for `/campaigns` and the report.
    pub fn describe(&self) -> String {
        let mut out = format!("{} after the event", delay_text(self.delay_secs));
        if !self.cancel_on.is_empty() {
            out.push_str(&format!(", cancelled on {}", self.cancel_on.join(", ")));
        }
        if let Some(cap) = self.cap {
            out.push_str(&format!(", at most {cap} per contact"));
        }
        out
    }
}

fn secs(s: u64) -> Duration {
    Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn spec(json: &str) -> TriggerSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_trigger_reads_its_delay_cancel_events_cap_and_window() {
        let t = spec(
            r#"{"delay": "1h", "cancel_on": ["order_placed"],
                "max_per_contact": {"count": 1, "per": "24h"}, "dedupe_window": "7d"}"#,
        )
        .check()
        .unwrap();
        assert_eq!(t.delay_secs, 3_600);
        assert_eq!(t.dedupe_secs, 7 * 86_400);
        assert_eq!(t.cap, Some(FrequencyCap::parse(1, "24h").unwrap()));
        assert!(t.cancels_on("order_placed"));
        assert!(!t.cancels_on("order_shipped"));
        assert_eq!(
            t.describe(),
            "1h after the event, cancelled on order_placed, at most 1 per 1d per contact"
        );
        let bare = spec("{}").check().unwrap();
        assert_eq!(
            (bare.delay_secs, bare.dedupe_secs),
            (0, DEFAULT_DEDUPE_SECS)
        );
    }

    #[test]
    fn every_problem_of_a_trigger_names_its_field() {
        let problems = spec(
            r#"{"delay": "soon", "cancel_on": ["Order Placed", "x", "x"],
                "max_per_contact": {"count": 0, "per": "1d"}, "dedupe_window": "0s"}"#,
        )
        .check()
        .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "trigger.delay",
                "trigger.dedupe_window",
                "trigger.cancel_on[0]",
                "trigger.cancel_on[2]",
                "trigger.max_per_contact"
            ]
        );
        let long = spec(r#"{"delay": "91d"}"#).check().unwrap_err();
        assert!(long[0].message.contains("90d"), "{long:?}");
    }

    #[test]
    fn an_occurrence_is_due_its_delay_after_the_event_and_stale_past_the_window() {
        let t = spec(r#"{"delay": "1h", "dedupe_window": "2d"}"#)
            .check()
            .unwrap();
        let event = Utc.with_ymd_and_hms(2026, 12, 1, 21, 30, 0).unwrap();
        assert_eq!(
            t.due_at(event),
            Utc.with_ymd_and_hms(2026, 12, 1, 22, 30, 0).unwrap()
        );
        assert!(!t.is_stale(event, event + Duration::days(2)));
        assert!(t.is_stale(event, event + Duration::days(2) + Duration::seconds(1)));
    }
}
