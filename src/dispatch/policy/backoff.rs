//! Retry delays for transient and throttled sends (docs/ARCHITECTURE.md,
//! "Error classes"): exponential backoff with "full jitter" (AWS
//! Architecture Blog, "Exponential Backoff And Jitter":
//! `sleep = random_between(0, min(cap, base * 2^attempt))`).
//!
//! Full jitter spreads the retries of contacts that failed together (a
//! sender's 5xx burst, a broker hiccup) over the whole interval, so they do
//! not come back as the same burst. The caller supplies the random number,
//! which keeps this module deterministic and testable.

use std::time::Duration;

/// The delay before retry number `attempt` (1 = the first retry; 0 is taken
/// as 1): a uniformly jittered value in `[0, min(max, base × 2^(attempt-1)))`,
/// `unit_random` being the uniform draw in `[0, 1)`.
///
/// A draw outside `[0, 1)` (or NaN) is clamped into it rather than trusted,
/// so a bad random source can never produce a delay above `max`. Large
/// attempt numbers saturate at `max` instead of overflowing.
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit_random: f64) -> Duration {
    let ceiling = exponential_ceiling(attempt, base, max);
    // The range is half-open: the ceiling itself is never drawn, so the
    // largest delay is one nanosecond below it. Rounding to whole
    // nanoseconds (0.1 s × (1 - ε) is 100 ms to the nanosecond) and a draw
    // of 1 or more land there too.
    let top = ceiling.saturating_sub(Duration::from_nanos(1));
    let r = if unit_random >= 0.0 { unit_random } else { 0.0 };
    if r >= 1.0 {
        return top;
    }
    // `try_` only because seconds near Duration::MAX round up to 2^64 as f64.
    Duration::try_from_secs_f64(ceiling.as_secs_f64() * r).map_or(top, |d| d.min(top))
}

/// `min(max, base × 2^(attempt-1))` without overflow.
fn exponential_ceiling(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exponent = attempt.max(1) - 1;
    1u32.checked_shl(exponent)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |d| d.min(max))
}

/// How often and how patiently a failed send is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included; 1 means never retry.
    pub max_attempts: u32,
    /// Ceiling of the first retry's delay.
    pub base: Duration,
    /// Ceiling of any retry's delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay before the next attempt, given how many attempts were
    /// already made (the failed one included), or `None` when they are
    /// exhausted and the failure is final.
    pub fn next(&self, attempts_so_far: u32, unit_random: f64) -> Option<Duration> {
        if attempts_so_far >= self.max_attempts {
            None
        } else {
            Some(backoff(attempts_so_far, self.base, self.max, unit_random))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The draw just below 1: the top of the jitter range.
    const TOP: f64 = 1.0 - f64::EPSILON;

    #[test]
    fn ceiling_doubles_from_base() {
        let base = ms(100);
        let max = ms(60_000);
        let tops: Vec<Duration> = (1..=6)
            .map(|attempt| backoff(attempt, base, max, TOP))
            .collect();
        // Just below 100, 200, 400, 800, 1600, 3200 ms.
        for (i, top) in tops.iter().enumerate() {
            let ceiling = base * (1 << i);
            assert!(*top < ceiling && *top + MS > ceiling, "{i}: {top:?}");
        }
        // Attempt 0 is the first retry.
        assert_eq!(backoff(0, base, max, 0.5), backoff(1, base, max, 0.5));
        assert_eq!(backoff(1, base, max, 0.5), ms(50));
        assert_eq!(backoff(3, base, max, 0.5), ms(200));
    }

    #[test]
    fn capped_at_max() {
        let base = ms(100);
        let max = ms(1_000);
        // 2^4 × 100 ms = 1.6 s > 1 s.
        assert_eq!(backoff(5, base, max, 0.5), ms(500));
        assert_eq!(backoff(30, base, max, 0.5), ms(500));
        assert!(backoff(5, base, max, TOP) < max);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let base = ms(100);
        let max = ms(10_000);
        assert_eq!(backoff(4, base, max, 0.0), Duration::ZERO);
        assert_eq!(backoff(4, base, max, 0.25), ms(200));
        // Out-of-range draws are clamped, never above the ceiling.
        assert_eq!(backoff(4, base, max, -0.5), Duration::ZERO);
        assert_eq!(backoff(4, base, max, f64::NAN), Duration::ZERO);
        for r in [1.0, 7.0, f64::INFINITY] {
            let d = backoff(4, base, max, r);
            assert!(d < ms(800) && d > ms(799), "{r}: {d:?}");
        }
        // A sweep of draws stays within [0, ceiling) and is monotone in r.
        let mut previous = Duration::ZERO;
        for i in 0..1000 {
            let d = backoff(4, base, max, f64::from(i) / 1000.0);
            assert!(d < ms(800) && d >= previous, "{i}: {d:?}");
            previous = d;
        }
    }

    #[test]
    fn large_attempts_do_not_overflow() {
        let max = Duration::from_secs(3600);
        for attempt in [31, 32, 33, 64, 1000, u32::MAX] {
            assert_eq!(
                backoff(attempt, ms(100), max, 0.5),
                Duration::from_secs(1800),
                "{attempt}"
            );
        }
        // Even with no useful cap.
        let d = backoff(u32::MAX, Duration::from_secs(1), Duration::MAX, TOP);
        assert!(d < Duration::MAX && d > Duration::from_secs(u64::MAX / 2));
        // A base beyond any cap: the ceiling is the cap, and half of it is
        // drawn (f64 keeps 53 bits of the seconds, so to within 2^11 s).
        let d = backoff(40, Duration::MAX, Duration::MAX, 0.5);
        assert!(
            d.abs_diff(Duration::MAX / 2) < Duration::from_secs(1 << 12),
            "{d:?}"
        );
    }

    #[test]
    fn retry_policy_stops_after_max_attempts() {
        let policy = RetryPolicy {
            max_attempts: 4,
            base: ms(200),
            max: ms(5_000),
        };
        assert_eq!(policy.next(1, 0.5), Some(ms(100)));
        assert_eq!(policy.next(2, 0.5), Some(ms(200)));
        assert_eq!(policy.next(3, 0.5), Some(ms(400)));
        assert_eq!(policy.next(4, 0.5), None);
        assert_eq!(policy.next(u32::MAX, 0.5), None);
        let never = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        assert_eq!(never.next(1, 0.5), None);
        assert_eq!(never.next(0, 0.5), Some(ms(100)));
    }
}
