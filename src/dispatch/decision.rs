//! What a send's result means: the contact's outcome and the effects on the
//! sender and the campaign (docs/ARCHITECTURE.md, "States"). Pure: the sender actor performs it.

use chrono::{DateTime, Duration, Utc};

use crate::domain::{code, ErrorClass, ExclusionReason};
use crate::store::Outcome;
use crate::whatsapp::client::SendResult;

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Write this outcome; the contact's journey continues by webhooks or ends.
    Record(Outcome),
    /// Try the same contact again after a backoff (throttled, transient,
    /// never sent): the claim is released and the contact waits in the
    /// queue for its retry time.
    Retry { code: Option<i64>, throttled: bool },
    /// The sender must stop (token, account, policy): the contact goes back
    /// to the queue for another sender.
    HaltSender { code: Option<i64>, reason: String },
    /// The campaign must stop (template missing, paused, disabled): the
    /// contact goes back to the queue until an operator fixes it.
    HaltCampaign { code: Option<i64>, reason: String },
}

/// Side facts about the contact learned from an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactFact {
    OptedOut,
    Undeliverable,
}

pub fn contact_fact(result: &SendResult) -> Option<ContactFact> {
    match result {
        SendResult::Rejected { error, .. } => match error.code {
            Some(code::MARKETING_OPT_OUT) => Some(ContactFact::OptedOut),
            Some(code::NOT_WHATSAPP_USER) => Some(ContactFact::Undeliverable),
            _ => None,
        },
        _ => None,
    }
}

/// Which request of a contact a send is, for the 131049 schedule: one
/// more than the row's `attempts` before this claim. Claims released because
/// their request never left (throttles, outages) were taken back from that
/// count, so a throttle between a deferral and its retry does not make the
/// next 131049 a first one.
pub fn attempt_number(attempts_before: u32) -> u32 {
    attempts_before.saturating_add(1)
}

/// Decides what to do with `result`; `deferral` is how long a 131049
/// answer to this send defers the contact (none: its retries are spent,
/// the failure is final; see [`DeferralSchedule::wait`]).
///
/// [`DeferralSchedule::wait`]: crate::domain::DeferralSchedule::wait
pub fn decide(result: &SendResult, deferral: Option<Duration>, now: DateTime<Utc>) -> Decision {
    match result {
        // The sender that sent it is filled in by the sender that knows it.
        SendResult::Accepted {
            wamid,
            message_status,
        } => Decision::Record(Outcome::Accepted {
            wamid: wamid.clone(),
            sender: None,
            held: message_status.clone().filter(|s| s != "accepted"),
        }),
        SendResult::NotSent { .. } => Decision::Retry {
            code: None,
            throttled: false,
        },
        SendResult::Unknown { reason } => Decision::Record(Outcome::Unknown {
            message: reason.clone(),
        }),
        SendResult::Rejected { error, class, .. } => {
            let message = error.describe();
            match class {
                ErrorClass::Throttled => Decision::Retry {
                    code: error.code,
                    throttled: true,
                },
                ErrorClass::Transient => Decision::Retry {
                    code: error.code,
                    throttled: false,
                },
                ErrorClass::Deferred if deferral.is_some() => Decision::Record(Outcome::Deferred {
                    until: now + deferral.unwrap_or_default(),
                    code: error.code,
                }),
                ErrorClass::Deferred | ErrorClass::Contact | ErrorClass::Data => {
                    Decision::Record(Outcome::Failed {
                        code: error.code,
                        class: class.as_str().to_string(),
                        message,
                    })
                }
                ErrorClass::Campaign => Decision::HaltCampaign {
                    code: error.code,
                    reason: message,
                },
                ErrorClass::Sender => Decision::HaltSender {
                    code: error.code,
                    reason: message,
                },
            }
        }
    }
}

/// The outcome of a transient answer about one contact whose retries are
/// used up while its sender is healthy: final. (A throttled contact, a
/// request that never left and any send during an outage go back to the
/// queue instead; the sender decides which applies.)
pub fn exhausted(code: Option<i64>) -> Outcome {
    Outcome::Failed {
        code,
        class: ErrorClass::Transient.as_str().to_string(),
        message: "gave up after repeated transient errors while other sends went through".into(),
    }
}

/// Exclusion to record when a contact fact makes future sends pointless.
pub fn exclusion_for(fact: &ContactFact) -> ExclusionReason {
    match fact {
        ContactFact::OptedOut => ExclusionReason::OptedOut,
        ContactFact::Undeliverable => ExclusionReason::NotWhatsappUser,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::classify_code;
    use crate::whatsapp::client::ApiError;

    /// 131049 defers a contact on the schedule: a throttle between the
    /// deferral and its retry does not make the next 131049 a first one.
    #[test]
    fn a_deferral_is_remembered_through_a_throttle() {
        assert_eq!(attempt_number(0), 1);
        assert_eq!(attempt_number(1), 2, "the retry of a deferral");
        let once = crate::domain::DeferralSchedule {
            max_retries: 1,
            ..Default::default()
        };
        let wait = |attempts_before| once.wait(attempt_number(attempts_before), None, now());
        assert!(matches!(
            decide(&rejected(131049), wait(1), now()),
            Decision::Record(Outcome::Failed { .. })
        ));
        assert!(matches!(
            decide(&rejected(131049), wait(0), now()),
            Decision::Record(Outcome::Deferred { .. })
        ));
    }

    fn day() -> Option<Duration> {
        Some(Duration::hours(24))
    }

    fn rejected(code: i64) -> SendResult {
        SendResult::Rejected {
            http_status: 400,
            error: ApiError {
                code: Some(code),
                subcode: None,
                title: None,
                message: "m".into(),
                details: None,
                fbtrace_id: None,
            },
            class: classify_code(code),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn every_class_has_its_action() {
        assert!(matches!(
            decide(&rejected(130429), day(), now()),
            Decision::Retry {
                throttled: true,
                ..
            }
        ));
        assert!(matches!(
            decide(&rejected(131000), day(), now()),
            Decision::Retry {
                throttled: false,
                ..
            }
        ));
        assert!(matches!(
            decide(&rejected(131026), day(), now()),
            Decision::Record(Outcome::Failed { .. })
        ));
        assert!(matches!(
            decide(&rejected(132000), day(), now()),
            Decision::Record(Outcome::Failed { .. })
        ));
        assert!(matches!(
            decide(&rejected(132015), day(), now()),
            Decision::HaltCampaign { .. }
        ));
        assert!(matches!(
            decide(&rejected(190), day(), now()),
            Decision::HaltSender { .. }
        ));
        assert_eq!(
            decide(&rejected(131049), day(), now()),
            Decision::Record(Outcome::Deferred {
                until: now() + Duration::hours(24),
                code: Some(131049)
            })
        );
        // Its retries spent: final.
        assert!(matches!(
            decide(&rejected(131049), None, now()),
            Decision::Record(Outcome::Failed { .. })
        ));
    }

    #[test]
    fn never_sent_is_retried_and_unknown_never_is() {
        let not_sent = SendResult::NotSent {
            reason: "refused".into(),
        };
        assert!(matches!(
            decide(&not_sent, day(), now()),
            Decision::Retry { .. }
        ));
        let unknown = SendResult::Unknown {
            reason: "timeout".into(),
        };
        assert_eq!(
            decide(&unknown, day(), now()),
            Decision::Record(Outcome::Unknown {
                message: "timeout".into()
            })
        );
    }

    #[test]
    fn contact_facts_and_exhaustion() {
        assert_eq!(contact_fact(&rejected(131050)), Some(ContactFact::OptedOut));
        assert_eq!(
            contact_fact(&rejected(131026)),
            Some(ContactFact::Undeliverable)
        );
        assert_eq!(contact_fact(&rejected(132000)), None);
        assert!(matches!(exhausted(Some(131000)), Outcome::Failed { .. }));
    }
}
