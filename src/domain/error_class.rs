//! Classification of WhatsApp Cloud API errors into what dispatch does next
//! (docs/ARCHITECTURE.md, "Error classes"). The numbers come from Meta's
//! error-code reference; the grouping is ours.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::state::ExclusionReason;

/// What a failed send means for the contact, the campaign and the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Rate limited: back off and retry; 130429 lowers the sender's rate.
    Throttled,
    /// A passing fault at Meta or on the network: retry with backoff and jitter.
    Transient,
    /// Held back by Meta (131049): retry once after 24 h.
    Deferred,
    /// Final for this contact (not a WhatsApp user, opted out, ...).
    Contact,
    /// Final for this contact: the parameters are wrong for the template.
    Data,
    /// Halt the campaign (template missing, paused or disabled) and alert.
    Campaign,
    /// Halt the sender (account blocked, token invalid, ...) and alert; its
    /// campaigns wait.
    Sender,
}

impl ErrorClass {
    /// Every class.
    pub const ALL: [ErrorClass; 7] = [
        ErrorClass::Throttled,
        ErrorClass::Transient,
        ErrorClass::Deferred,
        ErrorClass::Contact,
        ErrorClass::Data,
        ErrorClass::Campaign,
        ErrorClass::Sender,
    ];

    /// The lowercase name used in JSON, the store and the `class` metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Transient => "transient",
            ErrorClass::Deferred => "deferred",
            ErrorClass::Contact => "contact",
            ErrorClass::Data => "data",
            ErrorClass::Campaign => "campaign",
            ErrorClass::Sender => "sender",
        }
    }

    /// True when the same message to the same contact is tried again
    /// automatically (after a backoff, or after 24 h for `Deferred`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::Deferred
        )
    }

    /// True when the contact's journey ends in `failed` with this error.
    pub fn is_final_for_contact(&self) -> bool {
        matches!(self, ErrorClass::Contact | ErrorClass::Data)
    }

    /// True when the whole campaign must stop (observed state `failed`).
    /// The contact itself did nothing wrong and waits with the campaign.
    pub fn halts_campaign(&self) -> bool {
        matches!(self, ErrorClass::Campaign)
    }

    /// True when the sender (phone_number_id) must stop; its campaigns wait.
    pub fn halts_sender(&self) -> bool {
        matches!(self, ErrorClass::Sender)
    }

    /// True when the code means the contact opted out of marketing messages
    /// (131050), which must be remembered across campaigns.
    pub fn marks_opt_out(code: i64) -> bool {
        code == code::MARKETING_OPT_OUT
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no error class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("error class: \"{0}\" is not one of throttled, transient, deferred, contact, data, campaign, sender")]
pub struct ErrorClassParseError(pub String);

impl FromStr for ErrorClass {
    type Err = ErrorClassParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorClass::ALL
            .into_iter()
            .find(|class| class.as_str() == s)
            .ok_or_else(|| ErrorClassParseError(s.to_string()))
    }
}

/// The class of a Cloud API error code (the response body's `error.code`,
/// or a failed status webhook's `errors[0].code`).
///
/// A code missing from the table is `Data`: final for this one contact.
/// Retrying an error we do not understand risks a retry storm against Meta
/// and halting a campaign or sender on it risks stopping everything for one
/// bad record; failing the single contact is visible in the report (with its
/// code) and costs the least.
pub fn classify_code(code: i64) -> ErrorClass {
    match code {
        // 131056: pair rate limit (1 message / 6 s per recipient); 131057
        // and 2494100: the number is in maintenance (a throughput upgrade);
        // 132069: the template's flow was sent too often this hour.
        130429 | 131056 | 131057 | 4 | 80007 | 2494100 | 132069 => ErrorClass::Throttled,
        // 134101: a new template still syncing to the Marketing Messages
        // API (up to 10 min, Meta says to try again).
        1 | 2 | 131000 | 131016 | 133004 | 134101 => ErrorClass::Transient,
        131049 => ErrorClass::Deferred,
        // 130497: the business may not message users in the recipient's
        // country; 131021: the recipient is the sender; 131062: a
        // business-scoped user id cannot receive this kind of message.
        131026 | 131050 | 130472 | 131047 | 130497 | 131021 | 131062 => ErrorClass::Contact,
        132000 | 132005 | 132007 | 132012 | 132018 | 131008 | 131009 | 131051 | 131053 | 131055
        | 100 | 135000 => ErrorClass::Data,
        // 132068: the template's flow is blocked; 131063: marketing
        // templates are off on /messages for this account; 134100, 134102:
        // the Marketing Messages API refuses the template.
        132001 | 132015 | 132016 | 132068 | 131063 | 134100 | 134102 => ErrorClass::Campaign,
        // 200-299: Graph API permission errors; 3, 131005: a capability or
        // permission missing; 33: the business number was deleted; 131037:
        // display name not approved; 131045, 133000, 133006, 133010: the
        // number's registration; 131064: the account's marketing limit for
        // template classification violations.
        131048
        | 368
        | 131031
        | 131042
        | 0
        | 3
        | 33
        | 190
        | 10
        | 131005
        | 131037
        | 131045
        | 131064
        | 133000
        | 133006
        | 133010
        | 200..=299 => ErrorClass::Sender,
        _ => ErrorClass::Data,
    }
}

/// The class implied by the HTTP status alone, when there is one: 429 is
/// throttling, 5xx a fault at Meta. Other statuses are decided by the
/// error code in the body.
pub fn classify_http(status: u16) -> Option<ErrorClass> {
    match status {
        429 => Some(ErrorClass::Throttled),
        500..=599 => Some(ErrorClass::Transient),
        _ => None,
    }
}

/// The Cloud API error codes the daemon acts on by name; every other code
/// acts only through its class ([`classify_code`]).
pub mod code {
    /// Throughput limit of the business number: lowers the sender's rate.
    pub const THROUGHPUT: i64 = 130_429;
    /// Not a WhatsApp user: the contact is marked undeliverable.
    pub const NOT_WHATSAPP_USER: i64 = 131_026;
    /// The user stopped marketing messages: a marketing opt-out.
    pub const MARKETING_OPT_OUT: i64 = 131_050;
    /// The business number is in maintenance (a throughput upgrade in
    /// progress): the sender pauses briefly.
    pub const MAINTENANCE: i64 = 131_057;
    /// The Marketing Messages API takes marketing templates only.
    pub const NOT_MARKETING: i64 = 134_100;
    /// "Only marketing template messages are supported" on that API.
    pub const METHOD_NOT_ALLOWED: i64 = 131_055;
    /// Spam rate limit: the number's quality is flagged
    /// (`whatsapp.number_quality`), the contact waits.
    pub const SPAM_RATE_LIMIT: i64 = 131_048;
}

/// The exclusion a code implies for the contact in every later campaign:
/// not on WhatsApp, or opted out of marketing.
pub fn exclusion_for_code(code: i64) -> Option<ExclusionReason> {
    match code {
        code::NOT_WHATSAPP_USER => Some(ExclusionReason::NotWhatsappUser),
        code::MARKETING_OPT_OUT => Some(ExclusionReason::OptedOut),
        _ => None,
    }
}

/// A short human explanation of a Cloud API error code, for logs, alerts
/// and reports.
pub fn describe_code(code: i64) -> &'static str {
    match code {
        0 => "authentication failed",
        1 => "unknown API error at Meta",
        2 => "API service temporarily unavailable",
        3 => "the app lacks a capability or permission",
        4 => "application request limit reached",
        10 => "permission denied for this account or number",
        33 => "the business phone number was deleted",
        100 => "invalid parameter",
        190 => "access token expired or invalid",
        200..=299 => "the app lacks a required permission",
        368 => "account temporarily blocked for policy violations",
        80007 => "WhatsApp Business account rate limit reached",
        130429 => "throughput limit reached",
        130472 => "number is part of a Meta experiment",
        130497 => "the business may not message users in this country",
        131000 => "something went wrong at WhatsApp",
        131005 => "access denied",
        131008 => "a required parameter is missing",
        131009 => "a parameter value is not valid",
        131016 => "WhatsApp service overloaded",
        131021 => "the recipient is the sending number",
        131026 => "not a WhatsApp user or not on a supported version",
        131031 => "business account locked",
        131037 => "the number's display name is not approved yet",
        131042 => "payment problem on the business account",
        131045 => "the phone number is not registered correctly (certificate)",
        131047 => "more than 24 hours since the customer last replied",
        131048 => "spam rate limit hit",
        131049 => "held back by Meta's per-user marketing limit",
        131050 => "opted out of marketing messages",
        131051 => "unsupported message type",
        131053 => "the message's media could not be uploaded",
        131056 => "too many messages to this recipient",
        131057 => "business account in maintenance mode",
        131062 => "this message cannot go to a business-scoped user id",
        131063 => "marketing templates are turned off on the Cloud API for this account",
        131064 => "marketing limit for template classification violations",
        132000 => "template parameter count mismatch",
        132001 => "template does not exist in this language",
        132005 => "template text too long after filling parameters",
        132007 => "template content violates a WhatsApp policy",
        132012 => "template parameter format mismatch",
        132015 => "template paused for low quality",
        132016 => "template disabled",
        132018 => "template parameters failed validation",
        132068 => "the template's flow is blocked",
        132069 => "the template's flow was sent too often this hour",
        133000 => "an earlier deregistration of the number did not complete",
        133004 => "server temporarily unavailable",
        133006 => "the phone number needs to be verified again",
        133010 => "the phone number is not registered",
        134100 => "the Marketing Messages API takes marketing templates only",
        131055 => "method not allowed (the Marketing Messages API takes marketing templates only)",
        134101 => "the template is still syncing to the Marketing Messages API",
        134102 => "the template is not available on the Marketing Messages API",
        135000 => "generic user error in the request",
        2494100 => "the business number is in maintenance mode",
        _ => "WhatsApp error",
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorClass::*;
    use super::*;

    /// The table of README.md, "Error classes", row by row.
    const TABLE: &[(ErrorClass, &[i64])] = &[
        (
            Throttled,
            &[130429, 131056, 131057, 4, 80007, 2494100, 132069],
        ),
        (Transient, &[1, 2, 131000, 131016, 133004, 134101]),
        (Deferred, &[131049]),
        (
            Contact,
            &[131026, 131050, 130472, 131047, 130497, 131021, 131062],
        ),
        (
            Data,
            &[
                132000, 132005, 132007, 132012, 132018, 131008, 131009, 131051, 131053, 131055,
                100, 135000,
            ],
        ),
        (
            Campaign,
            &[132001, 132015, 132016, 132068, 131063, 134100, 134102],
        ),
        (
            Sender,
            &[
                131048, 368, 131031, 131042, 0, 3, 33, 190, 10, 131005, 131037, 131045, 131064,
                133000, 133006, 133010, 200, 250, 299,
            ],
        ),
    ];

    #[test]
    fn classify_code_follows_the_error_class_table() {
        for (class, codes) in TABLE {
            for code in *codes {
                assert_eq!(classify_code(*code), *class, "code {code}");
            }
        }
    }

    #[test]
    fn unknown_codes_are_final_for_the_contact_only() {
        for code in [5, 199, 300, 131059, 131999, -1, i64::MAX] {
            assert_eq!(classify_code(code), Data, "code {code}");
        }
        assert!(!Data.is_retryable());
        assert!(Data.is_final_for_contact());
        assert!(!Data.halts_campaign() && !Data.halts_sender());
    }

    #[test]
    fn http_status_classes() {
        assert_eq!(classify_http(429), Some(Throttled));
        assert_eq!(classify_http(500), Some(Transient));
        assert_eq!(classify_http(503), Some(Transient));
        assert_eq!(classify_http(599), Some(Transient));
        assert_eq!(classify_http(400), None);
        assert_eq!(classify_http(401), None);
        assert_eq!(classify_http(200), None);
    }

    #[test]
    fn retry_and_halt_flags() {
        let retryable: Vec<_> = ErrorClass::ALL
            .into_iter()
            .filter(|c| c.is_retryable())
            .collect();
        assert_eq!(retryable, [Throttled, Transient, Deferred]);
        assert!(Campaign.halts_campaign() && !Campaign.is_final_for_contact());
        assert!(Sender.halts_sender() && !Sender.is_retryable());
        assert!(Contact.is_final_for_contact());
    }

    #[test]
    fn opt_out_and_contact_exclusions() {
        assert!(ErrorClass::marks_opt_out(131050));
        assert!(!ErrorClass::marks_opt_out(131026));
        assert_eq!(exclusion_for_code(131050), Some(ExclusionReason::OptedOut));
        assert_eq!(
            exclusion_for_code(131026),
            Some(ExclusionReason::NotWhatsappUser)
        );
        assert_eq!(exclusion_for_code(131047), None);
    }

    #[test]
    fn every_table_code_has_its_own_description() {
        for (_, codes) in TABLE {
            for code in *codes {
                assert_ne!(describe_code(*code), "WhatsApp error", "code {code}");
            }
        }
        assert_eq!(
            describe_code(131026),
            "not a WhatsApp user or not on a supported version"
        );
        assert_eq!(describe_code(131050), "opted out of marketing messages");
        assert_eq!(describe_code(132015), "template paused for low quality");
        assert_eq!(describe_code(424242), "WhatsApp error");
    }

    #[test]
    fn class_names_round_trip() {
        for class in ErrorClass::ALL {
            assert_eq!(class.as_str().parse::<ErrorClass>(), Ok(class));
            assert_eq!(
                serde_json::to_string(&class).unwrap(),
                format!("\"{class}\"")
            );
        }
        assert!("Throttled".parse::<ErrorClass>().is_err());
    }
}
