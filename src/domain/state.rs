//! States of a (campaign, contact) dispatch, exclusion reasons, and the
//! observed state of a campaign (docs/ARCHITECTURE.md, "States").
//!
//! The journey of one contact in one campaign:
//!
//! ```text
//! pending ─► excluded{reason}                      (final)
//!         ─► claimed ─► accepted{wamid} ─► sent ─► delivered ─► read ─► replied
//!                     ─► failed{code, class}        (final)
//!                     ─► unknown                    (may have been sent; never resent)
//!                     ─► deferred{until}            (131049: one more try a day later)
//!                     ─► pending{retry at}          (not sent, or refused for now)
//! ```

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A string that names no known state or reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateParseError {
    /// Not one of the dispatch states.
    #[error("dispatch state: \"{0}\" is not one of pending, excluded, claimed, accepted, sent, delivered, read, replied, failed, unknown, deferred")]
    DispatchState(String),
    /// Not one of the observed campaign states.
    #[error(
        "campaign state: \"{0}\" is not one of scheduled, active, paused, completed, ended, failed"
    )]
    ObservedState(String),
    /// Not one of the exclusion reasons, or a reason that needs a detail
    /// (`suppressed:`, `missing_variable:`, `invalid_field:`) without one.
    #[error("exclusion reason: \"{0}\" is not a known reason")]
    ExclusionReason(String),
}

/// Where one contact stands in one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DispatchState {
    /// Staged at ingest, waiting for its turn.
    Pending,
    /// Will not be sent; the reason is stored beside the state.
    Excluded,
    /// Won by one dispatcher through a conditional write; about to be sent.
    Claimed,
    /// The Cloud API answered with a wamid.
    Accepted,
    /// Webhook: WhatsApp sent the message.
    Sent,
    /// Webhook: the message reached the phone.
    Delivered,
    /// Webhook: the recipient opened it.
    Read,
    /// The recipient answered.
    Replied,
    /// The Cloud API or a webhook reported an error.
    Failed,
    /// The request may have reached Meta without a usable answer (a timeout
    /// or reset after the connection was up, a gateway error, a 2xx without
    /// a wamid), or its claim was settled after its instance stopped: it may
    /// have been delivered.
    Unknown,
    /// To be tried again later (e.g. 131049, after 24 h).
    Deferred,
}

impl DispatchState {
    /// Every state, in journey order.
    pub const ALL: [DispatchState; 11] = [
        DispatchState::Pending,
        DispatchState::Excluded,
        DispatchState::Claimed,
        DispatchState::Accepted,
        DispatchState::Sent,
        DispatchState::Delivered,
        DispatchState::Read,
        DispatchState::Replied,
        DispatchState::Failed,
        DispatchState::Unknown,
        DispatchState::Deferred,
    ];

    /// The lowercase name used in JSON, the store and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            DispatchState::Pending => "pending",
            DispatchState::Excluded => "excluded",
            DispatchState::Claimed => "claimed",
            DispatchState::Accepted => "accepted",
            DispatchState::Sent => "sent",
            DispatchState::Delivered => "delivered",
            DispatchState::Read => "read",
            DispatchState::Replied => "replied",
            DispatchState::Failed => "failed",
            DispatchState::Unknown => "unknown",
            DispatchState::Deferred => "deferred",
        }
    }

    /// True when dispatch is done with this contact: it will not be sent
    /// (again) automatically. `Unknown` is final because WhatsApp has no
    /// idempotency key: resending could deliver the message twice.
    /// `Pending`, `Claimed` and `Deferred` still have work to do.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            DispatchState::Pending | DispatchState::Claimed | DispatchState::Deferred
        )
    }

    /// Position on the delivery ladder (accepted 1 < sent 2 < delivered 3 <
    /// read 4 < replied 5); 0 for states that are not on it.
    pub fn delivery_rank(&self) -> u8 {
        match self {
            DispatchState::Accepted => 1,
            DispatchState::Sent => 2,
            DispatchState::Delivered => 3,
            DispatchState::Read => 4,
            DispatchState::Replied => 5,
            _ => 0,
        }
    }

    /// True for the statuses a webhook (or an inbound reply) can report.
    pub fn is_webhook_status(&self) -> bool {
        matches!(
            self,
            DispatchState::Sent
                | DispatchState::Delivered
                | DispatchState::Read
                | DispatchState::Replied
                | DispatchState::Failed
        )
    }

    /// The state after moving from `self` to `to`, or `None` when the move
    /// would not go forward and must be ignored.
    ///
    /// Meta redelivers webhooks for days and does not order them, so this is
    /// the rule that makes applying them idempotent:
    /// - the same state twice changes nothing;
    /// - the delivery ladder only climbs (`read` after `delivered` is kept,
    ///   a late `sent` after `read` is dropped; `read` without `delivered`
    ///   is normal);
    /// - `failed` is accepted after `accepted` or `sent` (Meta reports a
    ///   failure after the send), never after `delivered`;
    /// - `unknown` (a timed-out request) is settled by any webhook status or
    ///   by a late `accepted`;
    /// - `claimed` may already receive webhook statuses, because a status
    ///   webhook can overtake the write of the API answer;
    /// - `excluded`, `failed` and `replied` end the journey.
    pub fn advance(self, to: DispatchState) -> Option<DispatchState> {
        use DispatchState::*;
        if self == to {
            return None;
        }
        let allowed = match self {
            Pending | Deferred => matches!(to, Claimed | Excluded),
            Claimed => {
                matches!(to, Accepted | Failed | Unknown | Deferred | Excluded)
                    || to.is_webhook_status()
            }
            Unknown => matches!(to, Accepted) || to.is_webhook_status(),
            Accepted | Sent | Delivered | Read => match to {
                Failed => matches!(self, Accepted | Sent),
                Sent | Delivered | Read | Replied => to.delivery_rank() > self.delivery_rank(),
                _ => false,
            },
            Excluded | Failed | Replied => false,
        };
        allowed.then_some(to)
    }
}

impl fmt::Display for DispatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DispatchState {
    type Err = StateParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DispatchState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StateParseError::DispatchState(s.to_string()))
    }
}

/// What an opt-out covers. Meta's own signals (error 131050, a
/// `user_preferences` marketing stop) cover marketing templates only:
/// utility and authentication messages (an order update, a login code) still
/// reach the person, as Meta intends. A keyword reply covers what
/// `whatsapp.opt_out_keyword_scope` says (default `all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptOutScope {
    /// Every template category.
    #[default]
    All,
    /// Marketing templates only.
    Marketing,
}

impl OptOutScope {
    pub fn as_str(self) -> &'static str {
        match self {
            OptOutScope::All => "all",
            OptOutScope::Marketing => "marketing",
        }
    }
}

/// Why a contact will not be sent. Stored and published as a string
/// (`opted_out`, `suppressed:open_case`, `missing_variable:coupon`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExclusionReason {
    /// The contact opted out: of everything (a keyword reply), or of
    /// marketing for a marketing template (error 131050, `user_preferences`).
    OptedOut,
    /// The contact is engaged in another active exclusive campaign.
    EngagedElsewhere,
    /// Suppressed through `wa.suppressions`, with the upstream's reason.
    Suppressed(String),
    /// The contact id is neither a valid phone number nor a user id.
    InvalidPhone,
    /// A template expression names a variable with no value.
    MissingVariable(String),
    /// WhatsApp answered 131026 for this number.
    NotWhatsappUser,
    /// The campaign window ended before the contact's turn.
    OutsideWindow,
    /// A record field other than the phone holds an unusable value.
    InvalidField(String),
    /// A follow-up on silence whose contact replied to an earlier step
    /// after its timer fired and before its claim.
    Replied,
    /// The contact had as many marketing messages in the cap's window as
    /// `dispatch.marketing_per_contact` allows, or as many messages of a
    /// triggered campaign as its `trigger.max_per_contact` allows.
    FrequencyCap,
    /// A triggered campaign's occurrence cancelled by an event of its
    /// `trigger.cancel_on` (`cancelled:order_placed`) before its message
    /// was claimed.
    Cancelled(String),
    /// A trigger event older than its campaign's `trigger.dedupe_window`
    /// when it arrived (a replayed topic).
    StaleEvent,
    /// The contact reached the campaign's goal (`converted:payment_made`)
    /// and its goal `stops_journey`: the steps not sent yet are not sent.
    Converted(String),
    /// A test campaign's audience record for a contact its
    /// `test_recipients` does not list.
    NotATestRecipient,
    /// A contact outside the campaign's `audience` segment (its tags).
    NotInSegment,
}

impl ExclusionReason {
    /// The bounded metric label: the reason without its detail, so that a
    /// variable name or an upstream reason can never explode label cardinality.
    pub fn label(&self) -> &'static str {
        match self {
            ExclusionReason::OptedOut => "opted_out",
            ExclusionReason::EngagedElsewhere => "engaged_elsewhere",
            ExclusionReason::Suppressed(_) => "suppressed",
            ExclusionReason::InvalidPhone => "invalid_phone",
            ExclusionReason::MissingVariable(_) => "missing_variable",
            ExclusionReason::NotWhatsappUser => "not_whatsapp_user",
            ExclusionReason::OutsideWindow => "outside_window",
            ExclusionReason::InvalidField(_) => "invalid_field",
            ExclusionReason::Replied => "replied",
            ExclusionReason::FrequencyCap => "frequency_cap",
            ExclusionReason::Cancelled(_) => "cancelled",
            ExclusionReason::StaleEvent => "stale_event",
            ExclusionReason::Converted(_) => "converted",
            ExclusionReason::NotATestRecipient => "not_a_test_recipient",
            ExclusionReason::NotInSegment => "not_in_segment",
        }
    }

    /// Text for a person reading a report.
    pub fn description(&self) -> String {
        match self {
            ExclusionReason::OptedOut => "opted out".to_string(),
            ExclusionReason::EngagedElsewhere => "in another active campaign".to_string(),
            ExclusionReason::Suppressed(reason) => format!("suppressed: {reason}"),
            ExclusionReason::InvalidPhone => "invalid phone number".to_string(),
            ExclusionReason::MissingVariable(name) => format!("missing variable value: {name}"),
            ExclusionReason::NotWhatsappUser => "not a WhatsApp user".to_string(),
            ExclusionReason::OutsideWindow => "campaign window ended before sending".to_string(),
            ExclusionReason::InvalidField(field) => format!("invalid value in field {field}"),
            ExclusionReason::Replied => "replied before this follow-up was sent".to_string(),
            ExclusionReason::FrequencyCap => {
                "had as many messages as a frequency cap allows".to_string()
            }
            ExclusionReason::Cancelled(event) => format!("cancelled by the event {event}"),
            ExclusionReason::StaleEvent => {
                "trigger event older than the campaign's dedupe window".to_string()
            }
            ExclusionReason::Converted(goal) => format!("reached the goal {goal}"),
            ExclusionReason::NotATestRecipient => {
                "not among the test campaign's test_recipients".to_string()
            }
            ExclusionReason::NotInSegment => {
                "outside the campaign's audience segment (its tags)".to_string()
            }
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            ExclusionReason::Suppressed(d)
            | ExclusionReason::MissingVariable(d)
            | ExclusionReason::InvalidField(d)
            | ExclusionReason::Cancelled(d)
            | ExclusionReason::Converted(d) => Some(d),
            _ => None,
        }
    }
}

impl fmt::Display for ExclusionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.detail() {
            Some(detail) => write!(f, "{}:{detail}", self.label()),
            None => f.write_str(self.label()),
        }
    }
}

impl FromStr for ExclusionReason {
    type Err = StateParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || StateParseError::ExclusionReason(s.to_string());
        // The detail may itself contain ':' (an upstream suppression reason),
        // so only the first one separates label from detail.
        let (label, detail) = match s.split_once(':') {
            Some((label, detail)) if !detail.is_empty() => (label, Some(detail)),
            Some(_) => return Err(bad()),
            None => (s, None),
        };
        let reason = match (label, detail) {
            ("opted_out", None) => ExclusionReason::OptedOut,
            ("engaged_elsewhere", None) => ExclusionReason::EngagedElsewhere,
            ("invalid_phone", None) => ExclusionReason::InvalidPhone,
            ("not_whatsapp_user", None) => ExclusionReason::NotWhatsappUser,
            ("outside_window", None) => ExclusionReason::OutsideWindow,
            ("replied", None) => ExclusionReason::Replied,
            ("frequency_cap", None) => ExclusionReason::FrequencyCap,
            ("stale_event", None) => ExclusionReason::StaleEvent,
            ("not_a_test_recipient", None) => ExclusionReason::NotATestRecipient,
            ("not_in_segment", None) => ExclusionReason::NotInSegment,
            ("cancelled", Some(d)) => ExclusionReason::Cancelled(d.to_string()),
            ("converted", Some(d)) => ExclusionReason::Converted(d.to_string()),
            ("suppressed", Some(d)) => ExclusionReason::Suppressed(d.to_string()),
            ("missing_variable", Some(d)) => ExclusionReason::MissingVariable(d.to_string()),
            ("invalid_field", Some(d)) => ExclusionReason::InvalidField(d.to_string()),
            _ => return Err(bad()),
        };
        Ok(reason)
    }
}

impl Serialize for ExclusionReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ExclusionReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the daemon observes about a campaign, as opposed to the state the
/// upstream desires (`DesiredState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservedState {
    /// Waiting for `start_at`.
    Scheduled,
    /// Sending.
    Active,
    /// Paused by the upstream or an operator.
    Paused,
    /// Every staged contact reached a final state.
    Completed,
    /// Ended by the upstream or by `end_at`.
    Ended,
    /// Halted by a campaign-level error (e.g. a paused or missing template).
    Failed,
}

impl ObservedState {
    /// Every observed state.
    pub const ALL: [ObservedState; 6] = [
        ObservedState::Scheduled,
        ObservedState::Active,
        ObservedState::Paused,
        ObservedState::Completed,
        ObservedState::Ended,
        ObservedState::Failed,
    ];

    /// The lowercase name used in JSON, the store and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            ObservedState::Scheduled => "scheduled",
            ObservedState::Active => "active",
            ObservedState::Paused => "paused",
            ObservedState::Completed => "completed",
            ObservedState::Ended => "ended",
            ObservedState::Failed => "failed",
        }
    }
}

impl fmt::Display for ObservedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ObservedState {
    type Err = StateParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObservedState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StateParseError::ObservedState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::DispatchState::*;
    use super::*;

    #[test]
    fn duplicate_status_changes_nothing() {
        for state in DispatchState::ALL {
            assert_eq!(state.advance(state), None, "{state}");
        }
    }

    #[test]
    fn delivery_ladder_only_climbs() {
        assert_eq!(Accepted.advance(Sent), Some(Sent));
        assert_eq!(Sent.advance(Delivered), Some(Delivered));
        assert_eq!(Delivered.advance(Read), Some(Read));
        assert_eq!(Read.advance(Replied), Some(Replied));
        // Out of order: a late sent or delivered never downgrades read.
        assert_eq!(Read.advance(Sent), None);
        assert_eq!(Read.advance(Delivered), None);
        assert_eq!(Delivered.advance(Sent), None);
        assert_eq!(Sent.advance(Accepted), None);
        assert_eq!(Replied.advance(Read), None);
    }

    #[test]
    fn read_without_delivered_is_normal() {
        assert_eq!(Sent.advance(Read), Some(Read));
        assert_eq!(Accepted.advance(Read), Some(Read));
        assert_eq!(Accepted.advance(Replied), Some(Replied));
    }

    #[test]
    fn failed_follows_accepted_or_sent_only() {
        assert_eq!(Accepted.advance(Failed), Some(Failed));
        assert_eq!(Sent.advance(Failed), Some(Failed));
        assert_eq!(Delivered.advance(Failed), None);
        assert_eq!(Read.advance(Failed), None);
        assert_eq!(Failed.advance(Delivered), None);
        assert_eq!(Failed.advance(Sent), None);
    }

    #[test]
    fn unknown_is_settled_by_any_webhook_status() {
        for to in [Sent, Delivered, Read, Replied, Failed, Accepted] {
            assert_eq!(Unknown.advance(to), Some(to), "{to}");
        }
        assert_eq!(Unknown.advance(Pending), None);
        assert_eq!(Unknown.advance(Claimed), None);
    }

    #[test]
    fn webhook_may_overtake_the_api_answer() {
        assert_eq!(Claimed.advance(Sent), Some(Sent));
        // The late API answer then does not move the contact back.
        assert_eq!(Sent.advance(Accepted), None);
    }

    #[test]
    fn lifecycle_before_send() {
        assert_eq!(Pending.advance(Claimed), Some(Claimed));
        assert_eq!(Pending.advance(Excluded), Some(Excluded));
        assert_eq!(Pending.advance(Sent), None);
        assert_eq!(Deferred.advance(Claimed), Some(Claimed));
        assert_eq!(Claimed.advance(Deferred), Some(Deferred));
        assert_eq!(Claimed.advance(Pending), None);
        assert_eq!(Excluded.advance(Claimed), None);
        assert_eq!(Excluded.advance(Sent), None);
    }

    #[test]
    fn final_states() {
        let finals: Vec<_> = DispatchState::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .collect();
        assert_eq!(
            finals,
            [Excluded, Accepted, Sent, Delivered, Read, Replied, Failed, Unknown]
        );
    }

    #[test]
    fn dispatch_state_names_round_trip() {
        for state in DispatchState::ALL {
            assert_eq!(state.as_str().parse::<DispatchState>(), Ok(state));
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<DispatchState>(&json).unwrap(), state);
        }
        assert_eq!(
            "Sent".parse::<DispatchState>().unwrap_err().to_string(),
            "dispatch state: \"Sent\" is not one of pending, excluded, claimed, accepted, sent, delivered, read, replied, failed, unknown, deferred"
        );
    }

    #[test]
    fn exclusion_reason_round_trip() {
        let reasons = [
            (ExclusionReason::OptedOut, "opted_out"),
            (ExclusionReason::EngagedElsewhere, "engaged_elsewhere"),
            (
                ExclusionReason::Suppressed("open_case".into()),
                "suppressed:open_case",
            ),
            (ExclusionReason::InvalidPhone, "invalid_phone"),
            (
                ExclusionReason::MissingVariable("coupon".into()),
                "missing_variable:coupon",
            ),
            (ExclusionReason::NotWhatsappUser, "not_whatsapp_user"),
            (ExclusionReason::OutsideWindow, "outside_window"),
            (ExclusionReason::Replied, "replied"),
            (ExclusionReason::FrequencyCap, "frequency_cap"),
            (
                ExclusionReason::InvalidField("send_after".into()),
                "invalid_field:send_after",
            ),
            (
                ExclusionReason::Cancelled("order_placed".into()),
                "cancelled:order_placed",
            ),
            (ExclusionReason::StaleEvent, "stale_event"),
            (ExclusionReason::NotATestRecipient, "not_a_test_recipient"),
            (ExclusionReason::NotInSegment, "not_in_segment"),
        ];
        for (reason, text) in reasons {
            assert_eq!(reason.to_string(), text);
            assert_eq!(text.parse::<ExclusionReason>(), Ok(reason.clone()));
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(
                serde_json::from_str::<ExclusionReason>(&json).unwrap(),
                reason
            );
        }
    }

    #[test]
    fn exclusion_reason_detail_may_contain_colon() {
        let reason: ExclusionReason = "suppressed:legal:hold".parse().unwrap();
        assert_eq!(reason, ExclusionReason::Suppressed("legal:hold".into()));
        assert_eq!(reason.to_string(), "suppressed:legal:hold");
    }

    #[test]
    fn exclusion_reason_rejects_unknown_and_missing_detail() {
        for bad in [
            "",
            "nope",
            "suppressed",
            "suppressed:",
            "missing_variable",
            "opted_out:x",
        ] {
            assert_eq!(
                bad.parse::<ExclusionReason>(),
                Err(StateParseError::ExclusionReason(bad.to_string())),
                "{bad:?}"
            );
        }
        assert!(serde_json::from_str::<ExclusionReason>("\"bogus\"").is_err());
    }

    #[test]
    fn exclusion_labels_are_bounded_and_descriptions_readable() {
        let coupon = ExclusionReason::MissingVariable("coupon".into());
        assert_eq!(coupon.label(), "missing_variable");
        assert_eq!(coupon.description(), "missing variable value: coupon");
        let open = ExclusionReason::Suppressed("open_case".into());
        assert_eq!(open.label(), "suppressed");
        assert_eq!(open.description(), "suppressed: open_case");
        assert_eq!(ExclusionReason::OptedOut.description(), "opted out");
        assert_eq!(
            ExclusionReason::NotWhatsappUser.description(),
            "not a WhatsApp user"
        );
        assert_eq!(
            ExclusionReason::EngagedElsewhere.description(),
            "in another active campaign"
        );
        assert_eq!(
            ExclusionReason::InvalidPhone.description(),
            "invalid phone number"
        );
        assert_eq!(
            ExclusionReason::OutsideWindow.description(),
            "campaign window ended before sending"
        );
    }

    #[test]
    fn observed_state_names_round_trip() {
        for state in ObservedState::ALL {
            assert_eq!(state.as_str().parse::<ObservedState>(), Ok(state));
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(serde_json::from_str::<ObservedState>(&json).unwrap(), state);
        }
        assert!("done".parse::<ObservedState>().is_err());
    }
}

/// Timestamps of each stage a contact went through.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StageTimes {
    pub staged: Option<DateTime<Utc>>,
    pub claimed: Option<DateTime<Utc>>,
    pub accepted: Option<DateTime<Utc>>,
    pub sent: Option<DateTime<Utc>>,
    pub delivered: Option<DateTime<Utc>>,
    pub read: Option<DateTime<Utc>>,
    pub replied: Option<DateTime<Utc>>,
    pub failed: Option<DateTime<Utc>>,
    pub excluded: Option<DateTime<Utc>>,
}

impl StageTimes {
    /// Records when a webhook status was reached.
    pub fn reached(&mut self, to: DispatchState, at: DateTime<Utc>) {
        let slot = match to {
            DispatchState::Sent => &mut self.sent,
            DispatchState::Delivered => &mut self.delivered,
            DispatchState::Read => &mut self.read,
            DispatchState::Replied => &mut self.replied,
            DispatchState::Failed => &mut self.failed,
            _ => return,
        };
        *slot = Some(at);
    }
}
