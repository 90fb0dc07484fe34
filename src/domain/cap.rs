//! Frequency caps: at most `count` messages to one contact in any window of
//! `per` (docs/ARCHITECTURE.md, "Frequency caps"). The window slides: a
//! message counts from when it was claimed until `per` later.
//!
//! A cap is kept per contact as at most `count` send slots, each naming the
//! send that holds it (`<campaign>/<step>`, `/<occurrence>` after it for a
//! triggered campaign) and when it frees. Taking a slot
//! is idempotent per send: a send that never left and is claimed again
//! finds its own slot (`Known`) instead of taking a second one.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::contact::ContactKey;
use super::journey::{delay_text, parse_delay};

/// `{count, per}`: at most `count` messages per `per` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    pub count: u32,
    pub per_secs: u64,
}

/// The longest window a cap may have.
pub const MAX_CAP_WINDOW_SECS: u64 = 90 * 86_400;

impl FrequencyCap {
    /// A cap from its config or spec form (`per` like `24h` or `7d`), or
    /// what is wrong with it.
    pub fn parse(count: u32, per: &str) -> Result<FrequencyCap, String> {
        if count == 0 {
            return Err("count must be at least 1 (leave the cap unset for none)".into());
        }
        let per_secs = parse_delay(per)?;
        if per_secs == 0 {
            return Err(format!("per \"{per}\" must be longer than 0s"));
        }
        if per_secs > MAX_CAP_WINDOW_SECS {
            return Err(format!("per \"{per}\" is longer than 90d"));
        }
        Ok(FrequencyCap { count, per_secs })
    }

    pub fn window(&self) -> Duration {
        Duration::seconds(i64::try_from(self.per_secs).unwrap_or(i64::MAX))
    }
}

impl std::fmt::Display for FrequencyCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} per {}", self.count, delay_text(self.per_secs))
    }
}

/// One message counted against a contact's cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendSlot {
    /// The send that holds it: `<campaign>/<step>`.
    pub send: String,
    /// When it frees.
    pub until: DateTime<Utc>,
}

/// What taking a slot found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotTake {
    /// A free slot was taken for this send.
    Taken,
    /// This send holds a slot already (a retry of a send that never left).
    Known,
    /// Every slot is held by other sends; the first frees at `until`.
    Full { until: DateTime<Utc> },
}

/// Takes a slot of `slots` (one contact's) for `send` at `now`: slots that
/// freed are dropped first. The same rule on every backend that keeps the
/// slots as one value.
pub fn take_slot(
    slots: &mut Vec<SendSlot>,
    send: &str,
    cap: FrequencyCap,
    now: DateTime<Utc>,
) -> SlotTake {
    slots.retain(|s| s.until > now);
    if slots.iter().any(|s| s.send == send) {
        return SlotTake::Known;
    }
    if slots.len() < cap.count as usize {
        slots.push(SendSlot {
            send: send.to_string(),
            until: now + cap.window(),
        });
        return SlotTake::Taken;
    }
    let until = slots.iter().map(|s| s.until).min().unwrap_or(now);
    SlotTake::Full { until }
}

/// The send a slot is taken for: the campaign, the journey step (`""`
/// for the first) and, for a triggered campaign's row, its occurrence.
pub fn send_id(campaign: &str, step: &str, contact: &ContactKey) -> String {
    match contact.occurrence() {
        Some(occurrence) => format!("{campaign}/{step}/{occurrence}"),
        None => format!("{campaign}/{step}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap() + Duration::minutes(minutes)
    }

    #[test]
    fn caps_parse_and_name_what_is_wrong() {
        let cap = FrequencyCap::parse(2, "24h").unwrap();
        assert_eq!(
            cap,
            FrequencyCap {
                count: 2,
                per_secs: 86_400
            }
        );
        assert_eq!(cap.to_string(), "2 per 1d");
        assert!(FrequencyCap::parse(0, "1d")
            .unwrap_err()
            .contains("at least 1"));
        assert!(FrequencyCap::parse(1, "0s")
            .unwrap_err()
            .contains("longer than 0s"));
        assert!(FrequencyCap::parse(1, "91d").unwrap_err().contains("90d"));
        assert!(FrequencyCap::parse(1, "1w")
            .unwrap_err()
            .contains("not a unit"));
    }

    #[test]
    fn a_contact_gets_count_messages_per_sliding_window() {
        let cap = FrequencyCap::parse(2, "60m").unwrap();
        let mut slots = Vec::new();
        assert_eq!(take_slot(&mut slots, "a/", cap, t(0)), SlotTake::Taken);
        assert_eq!(
            take_slot(&mut slots, "a/", cap, t(1)),
            SlotTake::Known,
            "a retry of a"
        );
        assert_eq!(take_slot(&mut slots, "b/", cap, t(10)), SlotTake::Taken);
        assert_eq!(
            take_slot(&mut slots, "c/", cap, t(20)),
            SlotTake::Full { until: t(60) },
            "the first slot frees an hour after a"
        );
        assert_eq!(slots.len(), 2, "a full cap takes nothing");
        // a's hour is over: c takes its place, d waits for b's.
        assert_eq!(take_slot(&mut slots, "c/", cap, t(60)), SlotTake::Taken);
        assert_eq!(
            take_slot(&mut slots, "d/", cap, t(61)),
            SlotTake::Full { until: t(70) }
        );
        assert_eq!(
            take_slot(&mut slots, "a/", cap, t(61)),
            SlotTake::Full { until: t(70) }
        );
    }

    #[test]
    fn a_lower_count_after_a_reload_holds_back_until_enough_slots_free() {
        let three = FrequencyCap::parse(3, "1h").unwrap();
        let mut slots = Vec::new();
        for (i, send) in ["a/", "b/", "c/"].iter().enumerate() {
            assert_eq!(
                take_slot(&mut slots, send, three, t(i as i64)),
                SlotTake::Taken
            );
        }
        let one = FrequencyCap::parse(1, "1h").unwrap();
        assert_eq!(
            take_slot(&mut slots, "d/", one, t(5)),
            SlotTake::Full { until: t(60) }
        );
        assert_eq!(
            take_slot(&mut slots, "d/", one, t(61)),
            SlotTake::Full { until: t(62) },
            "c's slot still holds"
        );
        assert_eq!(take_slot(&mut slots, "d/", one, t(62)), SlotTake::Taken);
    }

    #[test]
    fn sends_are_named_by_campaign_and_step() {
        let contact = ContactKey::raw("+5215512345678");
        assert_eq!(send_id("promo", "", &contact), "promo/");
        assert_eq!(send_id("promo", "nudge", &contact), "promo/nudge");
        // Each occurrence of a triggered campaign is a send of its own.
        assert_eq!(
            send_id("cart", "", &contact.with_occurrence("c-9")),
            "cart//c-9"
        );
    }
}
