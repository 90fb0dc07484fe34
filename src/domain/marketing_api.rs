//! Which endpoint sends a marketing template: Cloud API's `/messages`, or
//! the Marketing Messages API's `/marketing_messages`
//! (docs/ARCHITECTURE.md, "Marketing Messages API").

use serde::{Deserialize, Serialize};

/// `whatsapp.marketing_messages` (and its overrides per sender and per
/// campaign).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarketingMessages {
    /// Every template through `/messages`.
    #[default]
    Never,
    /// Marketing templates through `/marketing_messages` with
    /// `product_policy: CLOUD_API_FALLBACK`: Meta sends them through Cloud
    /// API when the account is not onboarded.
    Auto,
    /// Marketing templates through `/marketing_messages` with
    /// `product_policy: STRICT`: never through Cloud API; an account that
    /// is not onboarded halts the campaign with Meta's reason.
    Always,
}

/// The endpoint of one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    MarketingMessages {
        /// Meta's `product_policy`.
        strict: bool,
    },
}

impl Endpoint {
    /// The path segment after the phone number id.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Messages => "messages",
            Endpoint::MarketingMessages { .. } => "marketing_messages",
        }
    }

    /// The `product_policy` the request carries, if any.
    pub fn product_policy(self) -> Option<&'static str> {
        match self {
            Endpoint::Messages => None,
            Endpoint::MarketingMessages { strict: false } => Some("CLOUD_API_FALLBACK"),
            Endpoint::MarketingMessages { strict: true } => Some("STRICT"),
        }
    }
}

impl MarketingMessages {
    /// The endpoint of a template of category `marketing` (or not) under
    /// this setting. `refused`: Meta said the template is not a marketing
    /// one on that endpoint (134100, 131055), so it goes to `/messages`.
    pub fn endpoint(self, marketing: bool, refused: bool) -> Endpoint {
        match self {
            _ if !marketing || refused => Endpoint::Messages,
            MarketingMessages::Never => Endpoint::Messages,
            MarketingMessages::Auto => Endpoint::MarketingMessages { strict: false },
            MarketingMessages::Always => Endpoint::MarketingMessages { strict: true },
        }
    }

    /// The setting in force: a campaign's override, else the sender's,
    /// else the global one.
    pub fn resolve(
        global: MarketingMessages,
        sender: Option<MarketingMessages>,
        campaign: Option<MarketingMessages>,
    ) -> MarketingMessages {
        campaign.or(sender).unwrap_or(global)
    }
}

/// What a `phone_number_quality_update` event says of the number's
/// standing: flagged (`FLAGGED`, `DOWNGRADE`, `RESTRICTED`), lifted
/// (`UNFLAGGED`, `UPGRADE`), or nothing about quality (`None`).
pub fn quality_flagged(event: &str) -> Option<bool> {
    match event {
        "FLAGGED" | "DOWNGRADE" | "RESTRICTED" => Some(true),
        "UNFLAGGED" | "UPGRADE" => Some(false),
        _ => None,
    }
}

/// What Meta's quality signals on a number do to its marketing sends
/// (`whatsapp.number_quality`): 131048 (spam rate limit), and a
/// `phone_number_quality_update` that flags it ([`quality_flagged`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberQualityPolicy {
    /// Marketing sends from the number go at half its rate.
    #[default]
    Slow,
    /// No marketing send from the number; its campaigns use the rest of
    /// their pool, or wait with the reason.
    Halt,
    /// Logged; nothing changes.
    Warn,
}

impl NumberQualityPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            NumberQualityPolicy::Slow => "slow",
            NumberQualityPolicy::Halt => "halt",
            NumberQualityPolicy::Warn => "warn",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_events_flag_or_lift_a_number() {
        for e in ["FLAGGED", "DOWNGRADE", "RESTRICTED"] {
            assert_eq!(quality_flagged(e), Some(true), "{e}");
        }
        for e in ["UNFLAGGED", "UPGRADE"] {
            assert_eq!(quality_flagged(e), Some(false), "{e}");
        }
        assert_eq!(quality_flagged("THROUGHPUT_UPGRADE"), None);
        assert_eq!(quality_flagged("ONBOARDING"), None);
    }

    #[test]
    fn only_marketing_templates_leave_cloud_api() {
        use MarketingMessages::*;
        assert_eq!(Never.endpoint(true, false), Endpoint::Messages);
        assert_eq!(
            Auto.endpoint(true, false),
            Endpoint::MarketingMessages { strict: false }
        );
        assert_eq!(Always.endpoint(false, false), Endpoint::Messages, "utility");
        assert_eq!(Always.endpoint(true, true), Endpoint::Messages, "refused");
        assert_eq!(
            Always.endpoint(true, false).product_policy(),
            Some("STRICT")
        );
        assert_eq!(Auto.endpoint(true, false).path(), "marketing_messages");
        assert_eq!(MarketingMessages::resolve(Never, Some(Auto), None), Auto);
        assert_eq!(
            MarketingMessages::resolve(Auto, Some(Always), Some(Never)),
            Never,
            "the campaign's override wins"
        );
    }
}
