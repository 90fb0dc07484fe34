//! Meta's messaging limit: how many unique users a business portfolio may
//! start conversations with per rolling 24 h (250, 2,000, 10,000, 100,000 or
//! unlimited; per portfolio since October 2025). Meta tells it through the
//! `business_capability_update` and `phone_number_quality_update` webhooks;
//! the configured `dispatch.portfolio_daily_limit` is a ceiling over it
//! (docs/ARCHITECTURE.md, "Portfolio limit").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A messaging limit as Meta states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessagingLimit {
    /// At most this many unique users per rolling 24 h.
    Users(u64),
    Unlimited,
}

impl MessagingLimit {
    /// Meta's value: a number (`2000`; `-1` is unlimited) or a tier
    /// (`TIER_250`, `TIER_2K`, `TIER_UNLIMITED`; `TIER_1K` of older
    /// numbers too). `None` for `TIER_NOT_SET` and anything else.
    pub fn parse(value: &serde_json::Value) -> Option<MessagingLimit> {
        match value {
            serde_json::Value::Number(n) => match n.as_i64()? {
                -1 => Some(MessagingLimit::Unlimited),
                n if n > 0 => Some(MessagingLimit::Users(n as u64)),
                _ => None,
            },
            serde_json::Value::String(s) => {
                let s = s.trim().to_uppercase();
                if let Ok(n) = s.parse::<i64>() {
                    return MessagingLimit::parse(&serde_json::json!(n));
                }
                let tier = s.strip_prefix("TIER_")?;
                if tier == "UNLIMITED" {
                    return Some(MessagingLimit::Unlimited);
                }
                let (digits, scale) = match tier.strip_suffix('K') {
                    Some(d) => (d, 1_000),
                    None => (tier, 1),
                };
                let n: u64 = digits.parse().ok()?;
                (n > 0).then_some(MessagingLimit::Users(n * scale))
            }
            _ => None,
        }
    }

    /// The limit in force: the configured ceiling, and what Meta said.
    /// Without a word from Meta the configured value holds; without a
    /// configured one, Meta's; with both, the lower.
    pub fn effective(configured: Option<u64>, learned: Option<MessagingLimit>) -> Option<u64> {
        match (configured, learned) {
            (c, None | Some(MessagingLimit::Unlimited)) => c,
            (None, Some(MessagingLimit::Users(n))) => Some(n),
            (Some(c), Some(MessagingLimit::Users(n))) => Some(c.min(n)),
        }
    }
}

impl std::fmt::Display for MessagingLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessagingLimit::Users(n) => write!(f, "{n} unique users per 24 h"),
            MessagingLimit::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// The messaging limit Meta last stated, kept across restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnedLimit {
    pub limit: MessagingLimit,
    /// The webhook field it came in.
    pub source: String,
    /// The webhook entry's time: a redelivered older one changes nothing.
    pub at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::MessagingLimit::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_and_tiers_parse() {
        for (value, limit) in [
            (json!(2000), Some(Users(2000))),
            (json!(-1), Some(Unlimited)),
            (json!(0), None),
            (json!("TIER_250"), Some(Users(250))),
            (json!("TIER_2K"), Some(Users(2_000))),
            (json!("TIER_1K"), Some(Users(1_000))),
            (json!("tier_100k"), Some(Users(100_000))),
            (json!("TIER_UNLIMITED"), Some(Unlimited)),
            (json!("TIER_NOT_SET"), None),
            (json!("10000"), Some(Users(10_000))),
            (json!("-1"), Some(Unlimited)),
            (json!("TIER_XK"), None),
            (json!(null), None),
            (json!(2.5), None),
        ] {
            assert_eq!(MessagingLimit::parse(&value), limit, "{value}");
        }
    }

    #[test]
    fn the_configured_value_is_a_ceiling() {
        assert_eq!(MessagingLimit::effective(None, None), None);
        assert_eq!(MessagingLimit::effective(Some(5_000), None), Some(5_000));
        assert_eq!(
            MessagingLimit::effective(Some(5_000), Some(Unlimited)),
            Some(5_000)
        );
        assert_eq!(MessagingLimit::effective(None, Some(Users(250))), Some(250));
        assert_eq!(
            MessagingLimit::effective(Some(5_000), Some(Users(250))),
            Some(250)
        );
        assert_eq!(
            MessagingLimit::effective(Some(100), Some(Users(250))),
            Some(100)
        );
        assert_eq!(Users(2000).to_string(), "2000 unique users per 24 h");
    }
}
