//! When a contact Meta refused for its per-user marketing limit (131049) is
//! tried again (docs/ARCHITECTURE.md, "States"): after growing intervals, up
//! to a number of retries and never once the step is too old to be worth
//! sending (`whatsapp.marketing_limit_retry`).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The retry schedule of 131049. Retry `k` (1-based) waits
/// `first_delay_hours × growth^(k-1)` after the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeferralSchedule {
    /// Wait before the first retry, in hours. Meta asks not to retry a
    /// 131049 at once: the person's limit frees over the following day.
    pub first_delay_hours: f64,
    /// Each retry waits this many times longer than the one before (1 for
    /// a fixed interval).
    pub growth: f64,
    /// Retries after the first refusal; 0 fails the contact at once.
    pub max_retries: u32,
    /// No retry is due later than this many hours after the step was
    /// staged: an offer that old is not worth sending.
    pub max_age_hours: f64,
}

impl Default for DeferralSchedule {
    fn default() -> Self {
        DeferralSchedule {
            first_delay_hours: 24.0,
            growth: 2.0,
            max_retries: 3,
            max_age_hours: 168.0,
        }
    }
}

impl DeferralSchedule {
    /// The wait before retry `retry` (1-based); none past `max_retries`.
    pub fn delay(&self, retry: u32) -> Option<Duration> {
        if retry == 0 || retry > self.max_retries {
            return None;
        }
        let hours = self.first_delay_hours * self.growth.powi(retry as i32 - 1);
        Duration::try_milliseconds((hours * 3_600_000.0).round() as i64)
    }

    /// When a contact refused at its `attempt`-th request (at `at`) is
    /// tried again, or none when the schedule is spent or the retry would
    /// come more than `max_age_hours` after `staged`.
    pub fn next(
        &self,
        attempt: u32,
        staged: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let until = at.checked_add_signed(self.delay(attempt)?)?;
        let max_age = Duration::try_milliseconds((self.max_age_hours * 3_600_000.0) as i64)?;
        match staged {
            Some(staged) if until - staged > max_age => None,
            _ => Some(until),
        }
    }

    /// How long after `now` a contact refused at its `attempt`-th request
    /// waits ([`Self::next`]).
    pub fn wait(
        &self,
        attempt: u32,
        staged: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        self.next(attempt, staged, now).map(|until| until - now)
    }

    /// The schedule in words (`retried after 24h, 48h, 96h; never later than
    /// 168h after staging`).
    pub fn describe(&self) -> String {
        if self.max_retries == 0 {
            return "never retried".into();
        }
        let waits: Vec<String> = (1..=self.max_retries)
            .filter_map(|k| self.delay(k))
            .map(|d| format!("{}h", (d.num_minutes() as f64 / 60.0 * 10.0).round() / 10.0))
            .collect();
        format!(
            "retried after {}; never later than {}h after staging",
            waits.join(", "),
            self.max_age_hours
        )
    }

    /// Every problem with the schedule, each naming the key to change.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.first_delay_hours) {
            problems.push((
                "first_delay_hours",
                format!(
                    "must be a number of hours greater than 0, got {}",
                    self.first_delay_hours
                ),
            ));
        }
        if !self.growth.is_finite() || self.growth < 1.0 {
            problems.push((
                "growth",
                format!(
                    "must be at least 1 (1 keeps every wait equal), got {}",
                    self.growth
                ),
            ));
        }
        if !positive(self.max_age_hours) {
            problems.push((
                "max_age_hours",
                format!(
                    "must be a number of hours greater than 0, got {}",
                    self.max_age_hours
                ),
            ));
        }
        if self.max_retries > 20 {
            problems.push((
                "max_retries",
                format!(
                    "{} retries of one message is not a schedule Meta's limit can honour; use at most 20",
                    self.max_retries
                ),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + Duration::hours(hours)
    }

    #[test]
    fn retries_wait_longer_each_time_and_stop_at_the_limits() {
        let s = DeferralSchedule::default();
        assert_eq!(s.next(1, Some(t(0)), t(0)), Some(t(24)));
        assert_eq!(s.next(2, Some(t(0)), t(24)), Some(t(72)));
        assert_eq!(s.next(3, Some(t(0)), t(72)), Some(t(168)), "just in age");
        assert_eq!(s.next(4, Some(t(0)), t(168)), None, "retries spent");
        // Too old: the third retry would come 169 h after staging.
        assert_eq!(s.next(3, Some(t(0)), t(73)), None);
        assert_eq!(s.next(0, None, t(0)), None);
        assert_eq!(
            s.describe(),
            "retried after 24h, 48h, 96h; never later than 168h after staging"
        );
        let once = DeferralSchedule {
            max_retries: 1,
            ..s
        };
        assert_eq!(once.next(2, None, t(24)), None, "the old behaviour: once");
        let none = DeferralSchedule {
            max_retries: 0,
            ..s
        };
        assert_eq!(none.next(1, None, t(0)), None);
        assert_eq!(none.describe(), "never retried");
    }

    #[test]
    fn bad_values_are_named() {
        let bad = DeferralSchedule {
            first_delay_hours: 0.0,
            growth: 0.5,
            max_retries: 50,
            max_age_hours: f64::NAN,
        };
        let keys: Vec<&str> = bad.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "first_delay_hours",
                "growth",
                "max_age_hours",
                "max_retries"
            ]
        );
        assert!(DeferralSchedule::default().problems().is_empty());
    }
}
