//! Conversion goals (docs/ARCHITECTURE.md, "Goals and conversions"): what a
//! campaign is for (`payment_made`), how long after its message a
//! conversion still counts, and whether reaching it stops the contact's
//! journey. A conversion arrives on `wa.conversions` and is attributed to
//! one journey of the contact by [`attribute`].

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::audience::deserialize_opt_scalar;
use super::contact::{occurrence_error, ContactKey};
use super::journey::{delay_text, parse_delay};
use super::problem::SpecProblem;
use super::trigger::is_event_name;

/// The `goal` object of a campaign spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoalSpec {
    /// The goal's name as conversions carry it (`payment_made`).
    pub name: String,
    /// How long after the campaign's latest message to the contact a
    /// conversion is still the campaign's (`7d` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// A conversion stops the contact's journey: its steps not sent yet
    /// are excluded `converted:<goal>`.
    #[serde(default)]
    pub stops_journey: bool,
}

/// A checked goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goal {
    pub name: String,
    pub window_secs: u64,
    pub stops_journey: bool,
}

/// The attribution window when the spec sets none.
pub const DEFAULT_GOAL_WINDOW_SECS: u64 = 7 * 86_400;

/// The longest attribution window.
pub const MAX_GOAL_WINDOW_SECS: u64 = 90 * 86_400;

/// Longest currency code accepted (ISO 4217 codes have 3 letters; a few
/// upstreams write points or credits with longer names).
pub const MAX_CURRENCY_LEN: usize = 8;

impl GoalSpec {
    /// The goal, or every problem with it (paths under `goal`).
    pub fn check(&self) -> Result<Goal, Vec<SpecProblem>> {
        let mut problems = Vec::new();
        if !is_event_name(&self.name) {
            problems.push(SpecProblem::new(
                "goal.name",
                format!(
                    "\"{}\" is not a goal name ([a-z0-9_.-], 1 to 64 characters)",
                    self.name
                ),
            ));
        }
        let window_secs = match self.window.as_deref() {
            None => DEFAULT_GOAL_WINDOW_SECS,
            Some(raw) => match parse_delay(raw) {
                Ok(0) => {
                    problems.push(SpecProblem::new("goal.window", "must be longer than 0s"));
                    0
                }
                Ok(secs) if secs > MAX_GOAL_WINDOW_SECS => {
                    problems.push(SpecProblem::new(
                        "goal.window",
                        format!("\"{raw}\" is longer than 90d"),
                    ));
                    0
                }
                Ok(secs) => secs,
                Err(why) => {
                    problems.push(SpecProblem::new("goal.window", why));
                    0
                }
            },
        };
        if problems.is_empty() {
            Ok(Goal {
                name: self.name.clone(),
                window_secs,
                stops_journey: self.stops_journey,
            })
        } else {
            Err(problems)
        }
    }
}

impl Goal {
    /// One line for `/campaigns` and the report.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} within {} of a message",
            self.name,
            delay_text(self.window_secs)
        );
        if self.stops_journey {
            out.push_str(", stops the journey");
        }
        out
    }

    /// Whether a conversion at `at` still counts for a message sent at
    /// `reached` (not before it, and at most the window after it).
    pub fn counts(&self, reached: DateTime<Utc>, at: DateTime<Utc>) -> bool {
        let window = Duration::seconds(i64::try_from(self.window_secs).unwrap_or(i64::MAX / 1000));
        reached <= at && at - reached <= window
    }
}

/// The value of a `wa.conversions` record (key: the contact id). Unknown
/// fields are ignored.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ConversionRecord {
    #[serde(default)]
    pub goal: String,
    /// The campaign to credit; absent or null: the latest campaign with
    /// this goal that reached the contact within its window.
    #[serde(default, deserialize_with = "deserialize_opt_scalar")]
    pub campaign_id: Option<String>,
    /// With `campaign_id` of a triggered campaign: the occurrence (order,
    /// cart) to credit.
    #[serde(default, deserialize_with = "deserialize_opt_scalar")]
    pub occurrence: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub currency: Option<String>,
    /// When the conversion happened (RFC 3339); absent: when it is read.
    #[serde(default)]
    pub at: Option<String>,
}

/// A conversion as recorded on the journey it is attributed to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversion {
    pub goal: String,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

impl Conversion {
    /// The same conversion as `other`, read again: goal, value and
    /// currency agree (a record without `at` is timed when it is read, so
    /// its time differs between two reads).
    pub fn same_as(&self, other: &Conversion) -> bool {
        self.goal == other.goal && self.value == other.value && self.currency == other.currency
    }
}

/// A parsed conversion record: who converted, what, and whom the
/// upstream credits (if it says).
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionInput {
    pub contact: ContactKey,
    pub conversion: Conversion,
    pub campaign_id: Option<String>,
    pub occurrence: Option<String>,
}

impl ConversionRecord {
    /// Reads one record of the topic: the key names the contact (a phone,
    /// read in `default_region` when national, or a user id). The error
    /// says what is wrong, for the dead-letter topic's `error` header.
    pub fn parse(
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        default_region: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ConversionInput, String> {
        let key = key
            .map(String::from_utf8_lossy)
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .ok_or("conversion record has no key: the key must be the contact id")?;
        let contact = ContactKey::parse_id(&key, default_region)
            .map_err(|e| format!("conversion key {key:?} is not a contact id: {e}"))?;
        let value = value.ok_or("empty record (tombstone) on the conversions topic")?;
        let record: ConversionRecord = serde_json::from_slice(value).map_err(|e| {
            format!("conversion value is not valid JSON of the documented shape: {e}")
        })?;
        let goal = record.goal.trim();
        if !is_event_name(goal) {
            return Err(format!(
                "conversion goal {goal:?} is not a goal name ([a-z0-9_.-], 1 to 64 characters)"
            ));
        }
        let at = match record.at.as_deref().map(str::trim) {
            None | Some("") => now,
            Some(raw) => DateTime::parse_from_rfc3339(raw)
                .map_err(|e| format!("conversion `at` {raw:?} is not an RFC 3339 time: {e}"))?
                .with_timezone(&Utc),
        };
        if let Some(v) = record.value {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("conversion value {v} is not a non-negative amount"));
            }
        }
        let currency = match record.currency.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c)
                if c.len() <= MAX_CURRENCY_LEN && c.bytes().all(|b| b.is_ascii_alphabetic()) =>
            {
                Some(c.to_ascii_uppercase())
            }
            Some(c) => {
                return Err(format!(
                    "conversion currency {c:?} is not a currency code (letters, like MXN)"
                ))
            }
        };
        if record.value.is_some_and(|v| v > 0.0) && currency.is_none() {
            return Err(
                "conversion has a value but no currency (add \"currency\": \"MXN\")".into(),
            );
        }
        let campaign_id = record
            .campaign_id
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty());
        let occurrence = match record.occurrence.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(occ) => {
                if let Some(why) = occurrence_error(occ) {
                    return Err(format!("conversion {why}"));
                }
                if campaign_id.is_none() {
                    return Err("conversion names an occurrence but no campaign_id".into());
                }
                Some(occ.to_string())
            }
        };
        Ok(ConversionInput {
            contact,
            conversion: Conversion {
                goal: goal.to_string(),
                at,
                value: record.value,
                currency,
            },
            campaign_id,
            occurrence,
        })
    }
}

/// A campaign's latest accepted message to a contact (per occurrence of a
/// triggered campaign): what attribution looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    pub campaign_id: String,
    pub occurrence: Option<String>,
    pub at: DateTime<Utc>,
}

/// Why a conversion was credited to no campaign: the bounded label of
/// `wadispatch_conversions_unattributed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unattributed {
    /// The explicit `campaign_id` is not a known campaign.
    UnknownCampaign,
    /// The explicit campaign declares no goal of that name.
    GoalNotDeclared,
    /// The explicit campaign holds no row of the contact (and occurrence).
    NotInCampaign,
    /// No campaign with this goal reached the contact within its window.
    NoCampaign,
}

impl Unattributed {
    pub fn label(self) -> &'static str {
        match self {
            Unattributed::UnknownCampaign => "unknown_campaign",
            Unattributed::GoalNotDeclared => "goal_not_declared",
            Unattributed::NotInCampaign => "not_in_campaign",
            Unattributed::NoCampaign => "no_campaign",
        }
    }
}

/// The journey a conversion is credited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub campaign_id: String,
    /// The occurrence of a triggered campaign's row.
    pub occurrence: Option<String>,
}

/// Credits a conversion (docs/ARCHITECTURE.md, "Goals and conversions"):
///
/// 1. With `campaign_id`: that campaign, when it exists and declares a goal
///    of this name, whenever its message went (the upstream knows better);
///    the occurrence is the record's, else the one its latest message went
///    to.
/// 2. Otherwise: among the campaigns declaring this goal, the one whose
///    latest message to the contact is the latest not after the
///    conversion and within that campaign's window; ties go to the
///    campaign id that sorts first.
///
/// `goal_of` answers a campaign's goal, `None` for a campaign not known,
/// `Some(None)` for one without a goal.
pub fn attribute<'a>(
    input: &ConversionInput,
    reach: &[Reach],
    goal_of: impl Fn(&str) -> Option<Option<&'a Goal>>,
) -> Result<Attribution, Unattributed> {
    let goal = input.conversion.goal.as_str();
    if let Some(campaign) = &input.campaign_id {
        match goal_of(campaign) {
            None => return Err(Unattributed::UnknownCampaign),
            Some(Some(g)) if g.name == goal => {}
            Some(_) => return Err(Unattributed::GoalNotDeclared),
        }
        let occurrence = input.occurrence.clone().or_else(|| {
            reach
                .iter()
                .filter(|r| &r.campaign_id == campaign)
                .max_by_key(|r| r.at)
                .and_then(|r| r.occurrence.clone())
        });
        return Ok(Attribution {
            campaign_id: campaign.clone(),
            occurrence,
        });
    }
    let at = input.conversion.at;
    reach
        .iter()
        .filter(|r| {
            matches!(goal_of(&r.campaign_id), Some(Some(g)) if g.name == goal && g.counts(r.at, at))
        })
        .max_by(|a, b| a.at.cmp(&b.at).then_with(|| b.campaign_id.cmp(&a.campaign_id)))
        .map(|r| Attribution {
            campaign_id: r.campaign_id.clone(),
            occurrence: r.occurrence.clone(),
        })
        .ok_or(Unattributed::NoCampaign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn goal(json: &str) -> Goal {
        serde_json::from_str::<GoalSpec>(json)
            .unwrap()
            .check()
            .unwrap()
    }

    fn t(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0).unwrap()
    }

    fn input(json: &str) -> ConversionInput {
        ConversionRecord::parse(
            Some(b"+525512345678"),
            Some(json.as_bytes()),
            None,
            t(10, 0),
        )
        .unwrap()
    }

    fn reach(campaign: &str, occurrence: Option<&str>, at: DateTime<Utc>) -> Reach {
        Reach {
            campaign_id: campaign.into(),
            occurrence: occurrence.map(str::to_string),
            at,
        }
    }

    #[test]
    fn a_goal_reads_its_window_and_names_its_problems() {
        let g = goal(r#"{"name": "payment_made", "window": "3d", "stops_journey": true}"#);
        assert_eq!((g.window_secs, g.stops_journey), (3 * 86_400, true));
        assert_eq!(
            g.describe(),
            "payment_made within 3d of a message, stops the journey"
        );
        assert_eq!(
            goal(r#"{"name": "signup"}"#).window_secs,
            DEFAULT_GOAL_WINDOW_SECS
        );
        let problems = serde_json::from_str::<GoalSpec>(r#"{"name": "Paid!", "window": "91d"}"#)
            .unwrap()
            .check()
            .unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["goal.name", "goal.window"]);
    }

    #[test]
    fn a_conversion_counts_from_the_message_to_the_end_of_the_window() {
        let g = goal(r#"{"name": "paid", "window": "2d"}"#);
        assert!(g.counts(t(1, 0), t(1, 0)));
        assert!(g.counts(t(1, 0), t(3, 0)));
        assert!(!g.counts(t(1, 0), t(3, 1)), "past the window");
        assert!(!g.counts(t(2, 0), t(1, 23)), "before the message");
    }

    #[test]
    fn records_are_read_with_every_problem_named() {
        let ok = input(
            r#"{"goal": "payment_made", "campaign_id": null, "value": 500.0,
                "currency": "mxn", "at": "2026-12-02T10:00:00Z", "extra": 1}"#,
        );
        assert_eq!(ok.contact.as_str(), "+525512345678");
        assert_eq!(ok.conversion.currency.as_deref(), Some("MXN"));
        assert_eq!(ok.conversion.at, t(2, 10));
        assert_eq!(ok.campaign_id, None);
        assert_eq!(input(r#"{"goal": "paid"}"#).conversion.at, t(10, 0));
        let err = |key: Option<&[u8]>, value: &str| {
            ConversionRecord::parse(key, Some(value.as_bytes()), None, t(10, 0)).unwrap_err()
        };
        let key = Some(&b"+525512345678"[..]);
        assert!(err(None, r#"{"goal":"paid"}"#).contains("no key"));
        assert!(err(Some(b"12ab"), r#"{"goal":"paid"}"#).contains("not a contact id"));
        assert!(err(key, "{").contains("not valid JSON"));
        assert!(err(key, r#"{"goal":"Paid Now"}"#).contains("not a goal name"));
        assert!(err(key, r#"{"goal":"paid","at":"monday"}"#).contains("RFC 3339"));
        assert!(err(key, r#"{"goal":"paid","value":-1,"currency":"MXN"}"#).contains("non-negative"));
        assert!(err(key, r#"{"goal":"paid","value":10}"#).contains("no currency"));
        assert!(err(key, r#"{"goal":"paid","currency":"$$"}"#).contains("currency code"));
        assert!(err(key, r#"{"goal":"paid","occurrence":"o-1"}"#).contains("no campaign_id"));
        let none = ConversionRecord::parse(key, None, None, t(10, 0)).unwrap_err();
        assert!(none.contains("tombstone"), "{none}");
    }

    #[test]
    fn the_latest_campaign_with_the_goal_within_its_window_is_credited() {
        let paid = goal(r#"{"name": "payment_made", "window": "7d"}"#);
        let short = goal(r#"{"name": "payment_made", "window": "1h"}"#);
        let signup = goal(r#"{"name": "signup"}"#);
        let goal_of = |c: &str| match c {
            "reminder" => Some(Some(&paid)),
            "flash" => Some(Some(&short)),
            "welcome" => Some(Some(&signup)),
            "plain" => Some(None),
            _ => None,
        };
        let conv = input(r#"{"goal": "payment_made", "at": "2026-12-05T12:00:00Z"}"#);
        let seen = [
            reach("reminder", Some("cart-1"), t(1, 0)),
            reach("reminder", Some("cart-2"), t(4, 0)),
            reach("flash", None, t(5, 6)),
            reach("welcome", None, t(5, 11)),
            reach("plain", None, t(5, 11)),
            reach("gone", None, t(5, 11)),
        ];
        assert_eq!(
            attribute(&conv, &seen, goal_of),
            Ok(Attribution {
                campaign_id: "reminder".into(),
                occurrence: Some("cart-2".into()),
            }),
            "flash reached later but its 1h window is over; welcome has another goal"
        );
        let later = input(r#"{"goal": "payment_made", "at": "2026-12-05T06:30:00Z"}"#);
        assert_eq!(
            attribute(&later, &seen, goal_of).unwrap().campaign_id,
            "flash"
        );
        let late = input(r#"{"goal": "payment_made", "at": "2026-12-20T00:00:00Z"}"#);
        assert_eq!(
            attribute(&late, &seen, goal_of),
            Err(Unattributed::NoCampaign)
        );
        let tie = [reach("b", None, t(4, 0)), reach("a", None, t(4, 0))];
        let both = |_: &str| Some(Some(&paid));
        assert_eq!(attribute(&conv, &tie, both).unwrap().campaign_id, "a");
    }

    #[test]
    fn an_explicit_campaign_is_credited_when_it_declares_the_goal() {
        let paid = goal(r#"{"name": "payment_made"}"#);
        let goal_of = |c: &str| match c {
            "reminder" => Some(Some(&paid)),
            "plain" => Some(None),
            _ => None,
        };
        let seen = [
            reach("reminder", Some("cart-1"), t(1, 0)),
            reach("reminder", Some("cart-2"), t(2, 0)),
        ];
        let explicit = input(r#"{"goal": "payment_made", "campaign_id": "reminder"}"#);
        assert_eq!(
            attribute(&explicit, &seen, goal_of),
            Ok(Attribution {
                campaign_id: "reminder".into(),
                occurrence: Some("cart-2".into()),
            }),
            "outside the window too: the upstream said so"
        );
        let occ =
            input(r#"{"goal": "payment_made", "campaign_id": "reminder", "occurrence": "cart-1"}"#);
        assert_eq!(
            attribute(&occ, &seen, goal_of)
                .unwrap()
                .occurrence
                .as_deref(),
            Some("cart-1")
        );
        let plain = input(r#"{"goal": "payment_made", "campaign_id": "plain"}"#);
        assert_eq!(
            attribute(&plain, &seen, goal_of),
            Err(Unattributed::GoalNotDeclared)
        );
        let gone = input(r#"{"goal": "payment_made", "campaign_id": "gone"}"#);
        assert_eq!(
            attribute(&gone, &seen, goal_of),
            Err(Unattributed::UnknownCampaign)
        );
    }
}
