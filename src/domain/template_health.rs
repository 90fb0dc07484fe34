//! Template health as Meta reports it (docs/ARCHITECTURE.md, "Template
//! health"): the `message_template_status_update` and
//! `message_template_quality_update` webhooks, and the 132015 / 132016
//! answers to a send, decide whether a template may be sent. A held
//! template holds every campaign that uses it before its next claim, and
//! an approval lifts the hold.
//!
//! Pure: the book that keeps what is known, in memory and in the store,
//! lives in `dispatch::templates`.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// A template as Meta names it: its name and its language. Webhooks write
/// languages as `en-US` or `en_US` while sends use `en_US`; the key folds
/// both (and the case), so a webhook finds the campaigns that send it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TemplateRef {
    pub name: String,
    pub language: String,
}

impl TemplateRef {
    pub fn new(name: &str, language: &str) -> Self {
        TemplateRef {
            name: name.trim().to_string(),
            language: language.trim().replace('-', "_"),
        }
    }

    /// The key of the store's `learned` facts: name and language, folded.
    pub fn key(&self) -> String {
        format!(
            "{}\u{1f}{}",
            self.name.to_lowercase(),
            self.language.to_lowercase()
        )
    }

    /// True when `other` names the same template (the key's folding).
    pub fn same(&self, other: &TemplateRef) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.language.eq_ignore_ascii_case(&other.language)
    }
}

impl fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.language)
    }
}

/// What a RED quality score does (`whatsapp.template_red_quality`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RedQualityPolicy {
    /// Hold the campaigns that use the template until Meta approves it again
    /// or its score goes back to YELLOW or GREEN. Meta pauses a template
    /// whose quality stays low and counts the blocks and reports it collects
    /// against the number's own quality rating, so holding early protects
    /// the number.
    #[default]
    Halt,
    /// Log and show the score, and keep sending.
    Warn,
}

/// Meta's status events that forbid sending the template: paused for low
/// quality, disabled, rejected (also while in appeal), locked, archived,
/// being deleted or deleted, or back in review (`PENDING`, after an edit).
const HOLDING: [&str; 9] = [
    "PAUSED",
    "DISABLED",
    "REJECTED",
    "IN_APPEAL",
    "LOCKED",
    "ARCHIVED",
    "PENDING_DELETION",
    "DELETED",
    "PENDING",
];

/// Status events that allow sending: approved, reinstated after an appeal,
/// unarchived, or flagged (quality low, not paused yet: a warning).
const SENDABLE: [&str; 4] = ["APPROVED", "REINSTATED", "UNARCHIVED", "FLAGGED"];

/// How long an approval from a webhook wins over a 132015 / 132016 answer:
/// a request sent before the approval can be answered after it (a request
/// times out after 10 s by default), and must not pause the template again.
const ERROR_AFTER_APPROVAL: i64 = 60;

/// One thing learned about a template.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateSignal {
    /// `message_template_status_update`: Meta's `event` and its reason
    /// (`reason`, `other_info.title` and `description`, or the rejection's).
    Status {
        event: String,
        reason: Option<String>,
    },
    /// `message_template_quality_update`: the new score.
    Quality { score: String },
    /// A send was answered with this code (132015 paused, 132016 disabled).
    Error { code: i64, message: String },
}

impl TemplateSignal {
    /// The signal of a send's error code, for the codes that say the
    /// template is held.
    pub fn from_error(code: i64, message: &str) -> Option<TemplateSignal> {
        matches!(code, 132015 | 132016).then(|| TemplateSignal::Error {
            code,
            message: message.to_string(),
        })
    }
}

/// What is known of one template, kept across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateHealth {
    pub template: TemplateRef,
    /// Meta's latest status (`APPROVED`, `PAUSED`, …); `PAUSED` or
    /// `DISABLED` after a 132015 / 132016 answer.
    pub status: Option<String>,
    /// Meta's latest quality score (`GREEN`, `YELLOW`, `RED`, `UNKNOWN`)
    /// since the template was last approved.
    #[serde(default)]
    pub quality: Option<String>,
    /// Meta's reason, or the error's text.
    #[serde(default)]
    pub reason: Option<String>,
    /// Where the status was learned: `webhook` or `error 132015`.
    pub source: String,
    /// When it was learned (the webhook's `time`, or the answer's arrival).
    pub at: DateTime<Utc>,
    /// Meta's time of the latest webhook applied: webhooks are ordered by
    /// it, never against an answer's time (another clock).
    #[serde(default)]
    pub webhook_at: Option<DateTime<Utc>>,
}

impl TemplateHealth {
    /// What is known after `signal`, learned at `at`, or `None` when the
    /// signal changes nothing: it is older than what is known (Meta
    /// redelivers webhooks, out of order), it repeats it, or it is an error
    /// answer to a request older than a fresh approval.
    pub fn after(
        prev: Option<&TemplateHealth>,
        template: &TemplateRef,
        signal: &TemplateSignal,
        at: DateTime<Utc>,
    ) -> Option<TemplateHealth> {
        let mut next = prev.cloned().unwrap_or_else(|| TemplateHealth {
            template: template.clone(),
            status: None,
            quality: None,
            reason: None,
            source: "webhook".into(),
            at,
            webhook_at: None,
        });
        // Webhooks are ordered among themselves by Meta's clock (the entry's
        // `time`); an answer's time is ours, so it never makes a webhook
        // delivered after it look older.
        let webhook = !matches!(signal, TemplateSignal::Error { .. });
        if webhook {
            if prev.and_then(|p| p.webhook_at).is_some_and(|w| at < w) {
                return None;
            }
            next.webhook_at = Some(at);
        }
        match signal {
            TemplateSignal::Status { event, reason } => {
                let event = event.trim().to_uppercase();
                // An approval starts the template's record over: the pause
                // it ends was the low quality's consequence.
                if SENDABLE.contains(&event.as_str()) && event != "FLAGGED" {
                    next.quality = None;
                }
                next.status = Some(event);
                next.reason = reason.clone();
                next.source = "webhook".into();
            }
            TemplateSignal::Quality { score } => {
                next.quality = Some(score.trim().to_uppercase());
            }
            TemplateSignal::Error { code, message } => {
                if let Some(prev) = prev {
                    let approved = prev.source == "webhook"
                        && prev
                            .status
                            .as_deref()
                            .is_some_and(|s| SENDABLE.contains(&s));
                    // Compared on our clock: when the approval was learned.
                    if approved && at - prev.at < Duration::seconds(ERROR_AFTER_APPROVAL) {
                        return None;
                    }
                }
                next.status = Some(
                    if *code == 132016 {
                        "DISABLED"
                    } else {
                        "PAUSED"
                    }
                    .into(),
                );
                next.reason = Some(message.clone());
                next.source = format!("error {code}");
            }
        }
        next.at = at;
        let same = prev.is_some_and(|p| {
            p.status == next.status
                && p.quality == next.quality
                && p.reason == next.reason
                && p.source == next.source
        });
        (!same).then_some(next)
    }

    /// Why the template may not be sent now, in words, or `None` when it
    /// may be. A status Meta adds later that is neither known to hold nor
    /// to allow sending allows it (and is logged where it is learned):
    /// holding every campaign on a word we do not know would stop sending
    /// for nothing the day Meta adds one.
    pub fn hold(&self, policy: RedQualityPolicy) -> Option<String> {
        let reason = self
            .reason
            .as_deref()
            .filter(|r| !r.is_empty() && *r != "NONE")
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        if let Some(status) = self.status.as_deref().filter(|s| HOLDING.contains(s)) {
            let by = match self.source.as_str() {
                "webhook" => "by Meta".to_string(),
                source => format!("(answer {})", source.trim_start_matches("error ")),
            };
            return Some(format!("template {} {status} {by}{reason}", self.template));
        }
        if policy == RedQualityPolicy::Halt && self.quality.as_deref() == Some("RED") {
            return Some(format!(
                "template {} quality RED (whatsapp.template_red_quality = \"halt\")",
                self.template
            ));
        }
        None
    }

    /// True when Meta's status is one this version knows.
    pub fn status_known(status: &str) -> bool {
        HOLDING.contains(&status) || SENDABLE.contains(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_790_000_000 + secs, 0).unwrap()
    }

    fn promo() -> TemplateRef {
        TemplateRef::new("promo", "es_MX")
    }

    fn status(event: &str) -> TemplateSignal {
        TemplateSignal::Status {
            event: event.into(),
            reason: None,
        }
    }

    #[test]
    fn languages_fold_dashes_and_case() {
        let a = TemplateRef::new("promo", "en-US");
        let b = TemplateRef::new("promo", "en_us");
        assert_eq!(a.key(), b.key());
        assert!(a.same(&b));
        assert!(!a.same(&TemplateRef::new("promo", "es_MX")));
        assert_eq!(a.to_string(), "promo (en_US)");
    }

    #[test]
    fn a_pause_holds_and_an_approval_lifts_it() {
        let paused = TemplateHealth::after(
            None,
            &promo(),
            &TemplateSignal::Status {
                event: "paused".into(),
                reason: Some("FIRST_PAUSE".into()),
            },
            t(0),
        )
        .unwrap();
        assert_eq!(
            paused.hold(RedQualityPolicy::Halt).unwrap(),
            "template promo (es_MX) PAUSED by Meta: FIRST_PAUSE"
        );
        let approved =
            TemplateHealth::after(Some(&paused), &promo(), &status("APPROVED"), t(10)).unwrap();
        assert_eq!(approved.hold(RedQualityPolicy::Halt), None);
        for event in ["DISABLED", "REJECTED", "PENDING_DELETION", "LOCKED"] {
            let h = TemplateHealth::after(None, &promo(), &status(event), t(0)).unwrap();
            assert!(h.hold(RedQualityPolicy::Warn).is_some(), "{event}");
        }
        for event in ["FLAGGED", "REINSTATED", "SOMETHING_NEW"] {
            let h = TemplateHealth::after(None, &promo(), &status(event), t(0)).unwrap();
            assert_eq!(h.hold(RedQualityPolicy::Halt), None, "{event}");
        }
        assert!(!TemplateHealth::status_known("SOMETHING_NEW"));
    }

    #[test]
    fn older_and_repeated_webhooks_change_nothing() {
        let paused = TemplateHealth::after(None, &promo(), &status("PAUSED"), t(100)).unwrap();
        // A redelivered approval from before the pause.
        assert_eq!(
            TemplateHealth::after(Some(&paused), &promo(), &status("APPROVED"), t(50)),
            None
        );
        assert_eq!(
            TemplateHealth::after(Some(&paused), &promo(), &status("PAUSED"), t(200)),
            None
        );
    }

    #[test]
    fn red_quality_holds_by_policy_until_approved_or_better() {
        let red = TemplateHealth::after(
            None,
            &promo(),
            &TemplateSignal::Quality {
                score: "RED".into(),
            },
            t(0),
        )
        .unwrap();
        assert!(red.hold(RedQualityPolicy::Halt).unwrap().contains("RED"));
        assert_eq!(red.hold(RedQualityPolicy::Warn), None);
        let yellow = TemplateHealth::after(
            Some(&red),
            &promo(),
            &TemplateSignal::Quality {
                score: "YELLOW".into(),
            },
            t(5),
        )
        .unwrap();
        assert_eq!(yellow.hold(RedQualityPolicy::Halt), None);
        let approved =
            TemplateHealth::after(Some(&red), &promo(), &status("APPROVED"), t(5)).unwrap();
        assert_eq!(approved.quality, None);
        assert_eq!(approved.hold(RedQualityPolicy::Halt), None);
    }

    #[test]
    fn error_answers_hold_unless_an_approval_is_fresher() {
        let signal = TemplateSignal::from_error(132015, "(#132015) Template is paused").unwrap();
        assert!(TemplateSignal::from_error(132001, "x").is_none());
        let held = TemplateHealth::after(None, &promo(), &signal, t(0)).unwrap();
        assert_eq!(
            held.hold(RedQualityPolicy::Halt).unwrap(),
            "template promo (es_MX) PAUSED (answer 132015): (#132015) Template is paused"
        );
        let approved =
            TemplateHealth::after(Some(&held), &promo(), &status("APPROVED"), t(30)).unwrap();
        // The answer to a request sent before the approval.
        assert_eq!(
            TemplateHealth::after(Some(&approved), &promo(), &signal, t(40)),
            None
        );
        let again = TemplateHealth::after(Some(&approved), &promo(), &signal, t(200)).unwrap();
        assert!(again.hold(RedQualityPolicy::Halt).is_some());
        // An answer learned on our clock a few seconds ahead of Meta's does
        // not make the approval that follows it look older.
        let held = TemplateHealth::after(None, &promo(), &signal, t(100)).unwrap();
        let approved =
            TemplateHealth::after(Some(&held), &promo(), &status("APPROVED"), t(98)).unwrap();
        assert_eq!(approved.hold(RedQualityPolicy::Halt), None);
        let disabled = TemplateHealth::after(
            None,
            &promo(),
            &TemplateSignal::from_error(132016, "disabled").unwrap(),
            t(0),
        )
        .unwrap();
        assert_eq!(disabled.status.as_deref(), Some("DISABLED"));
    }
}
