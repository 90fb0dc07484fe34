//! Additive-increase / multiplicative-decrease rate control for one
//! WhatsApp sender (docs/ARCHITECTURE.md, "Error classes"): error 130429
//! ("rate limit hit") means Meta's throughput for this phone number is below
//! what we send, so the sender's rate is cut by a factor, then regained
//! linearly with time while sends succeed, never above the configured rate.
//!
//! Time is passed in as seconds on a monotonic clock with any fixed origin
//! (e.g. `Instant::elapsed` since the actor started), never read here.

use thiserror::Error;

/// Throttle errors within this many seconds of a decrease do not decrease
/// again. Requests in flight when the first 130429 arrives were sent at the
/// old rate and fail together; counting each of them would collapse the
/// rate to the floor for what is one signal. One second is several Cloud
/// API round trips.
pub const DECREASE_COOLDOWN_SECS: f64 = 1.0;

/// A parameter of [`Aimd`] that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum AimdError {
    /// The configured rate is not a positive number.
    #[error("sender rate must be > 0 messages/s, got {0}")]
    Rate(f64),
    /// The decrease factor is not in (0, 1).
    #[error("rate decrease factor must be > 0 and < 1, got {0}")]
    DecreaseFactor(f64),
    /// The recovery speed is negative or not a number.
    #[error("rate increase must be >= 0 messages/s per second, got {0}")]
    Increase(f64),
    /// The floor is not a positive number.
    #[error("minimum sender rate must be > 0 messages/s, got {0}")]
    Floor(f64),
}

/// The rate controller of one sender: the rate it should send at now.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    /// The operator's rate (messages/s, this instance's share): the ceiling.
    configured: f64,
    /// The rate to send at now, between the floor and `configured`.
    current: f64,
    /// `current` is multiplied by this on a throttle error.
    decrease_factor: f64,
    /// Messages/s regained per second of success.
    increase_per_sec: f64,
    /// Lowest rate a decrease goes to.
    floor: f64,
    /// When the rate was last decreased (for the cooldown).
    last_decrease: Option<f64>,
    /// When recovery was last accounted for; recovery accrues from here.
    last_adjust: Option<f64>,
}

impl Aimd {
    /// A controller sending at `configured_per_sec`, cutting the rate to
    /// `decrease_factor` times itself on a throttle (0.5 halves it),
    /// regaining `increase_per_sec` messages/s per second of success, and
    /// never going below `floor` messages/s (nor above the configured rate:
    /// a configured rate below the floor is its own floor).
    pub fn new(
        configured_per_sec: f64,
        decrease_factor: f64,
        increase_per_sec: f64,
        floor: f64,
    ) -> Result<Aimd, AimdError> {
        check_rate(configured_per_sec)?;
        if !(decrease_factor > 0.0 && decrease_factor < 1.0) {
            return Err(AimdError::DecreaseFactor(decrease_factor));
        }
        if !(increase_per_sec >= 0.0 && increase_per_sec.is_finite()) {
            return Err(AimdError::Increase(increase_per_sec));
        }
        if !(floor > 0.0 && floor.is_finite()) {
            return Err(AimdError::Floor(floor));
        }
        Ok(Aimd {
            configured: configured_per_sec,
            current: configured_per_sec,
            decrease_factor,
            increase_per_sec,
            floor,
            last_decrease: None,
            last_adjust: None,
        })
    }

    /// The rate to send at now, messages/s.
    pub fn rate(&self) -> f64 {
        self.current
    }

    /// The configured rate (the ceiling), messages/s.
    pub fn configured(&self) -> f64 {
        self.configured
    }

    /// True while the rate is below the configured one.
    pub fn is_reduced(&self) -> bool {
        self.current < self.configured
    }

    /// A throttle error (130429) at `now_secs`. Decreases the rate unless it
    /// was decreased less than [`DECREASE_COOLDOWN_SECS`] ago; returns true
    /// when the rate went down.
    ///
    /// At the floor nothing decreases (false), but recovery restarts from
    /// now: Meta is still refusing, so the time spent throttled earns no
    /// increase.
    pub fn on_throttled(&mut self, now_secs: f64) -> bool {
        if let Some(last) = self.last_decrease {
            // A clock read that goes backwards counts as inside the cooldown.
            if now_secs - last < DECREASE_COOLDOWN_SECS {
                return false;
            }
        }
        let floor = self.effective_floor();
        let lowered = (self.current * self.decrease_factor).max(floor);
        self.last_decrease = Some(now_secs);
        self.last_adjust = Some(now_secs);
        if lowered < self.current {
            self.current = lowered;
            true
        } else {
            false
        }
    }

    /// A successful send at `now_secs`: the rate grows by
    /// `increase_per_sec` for every second since the last adjustment,
    /// capped at the configured rate. Growth depends on elapsed time, not
    /// on the number of successes, so a fast sender does not recover faster
    /// than a slow one.
    pub fn on_success(&mut self, now_secs: f64) {
        if let Some(last) = self.last_adjust {
            // A clock read that goes backwards earns nothing.
            let elapsed = (now_secs - last).max(0.0);
            self.current = (self.current + self.increase_per_sec * elapsed).min(self.configured);
        }
        self.last_adjust = Some(match self.last_adjust {
            Some(last) => last.max(now_secs),
            None => now_secs,
        });
    }

    /// A new configured rate from a config reload.
    ///
    /// Lowering takes effect at once (current = min(current, new)): the
    /// operator may be lowering because Meta or a downstream asked, and
    /// must not wait for a throttle to find out. Raising keeps the current
    /// rate and lets recovery climb to the new ceiling at the usual speed:
    /// the higher rate may not be allowed by Meta yet (a phone number's
    /// throughput tier is Meta's decision), and jumping straight to it would
    /// answer with a burst of 130429s.
    pub fn set_configured(&mut self, rate_per_sec: f64) -> Result<(), AimdError> {
        check_rate(rate_per_sec)?;
        self.configured = rate_per_sec;
        self.current = self.current.min(rate_per_sec);
        Ok(())
    }

    fn effective_floor(&self) -> f64 {
        self.floor.min(self.configured)
    }
}

fn check_rate(rate: f64) -> Result<(), AimdError> {
    if rate > 0.0 && rate.is_finite() {
        Ok(())
    } else {
        Err(AimdError::Rate(rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 80 messages/s, halve on throttle, regain 2 messages/s per second, floor 1.
    fn sender() -> Aimd {
        Aimd::new(80.0, 0.5, 2.0, 1.0).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn starts_at_the_configured_rate() {
        let a = sender();
        assert_eq!(a.rate(), 80.0);
        assert_eq!(a.configured(), 80.0);
        assert!(!a.is_reduced());
    }

    #[test]
    fn a_burst_of_throttles_decreases_once_per_cooldown() {
        let mut a = sender();
        assert!(a.on_throttled(10.0));
        assert_eq!(a.rate(), 40.0);
        // The in-flight requests' 130429s arrive within the second.
        for t in [10.0, 10.1, 10.5, 10.999] {
            assert!(!a.on_throttled(t), "{t}");
        }
        assert_eq!(a.rate(), 40.0);
        // A throttle a second later is a new signal.
        assert!(a.on_throttled(11.0));
        assert_eq!(a.rate(), 20.0);
        // A clock that goes backwards is inside the cooldown.
        assert!(!a.on_throttled(5.0));
        assert_eq!(a.rate(), 20.0);
    }

    #[test]
    fn decrease_stops_at_the_floor() {
        let mut a = sender();
        let mut t = 0.0;
        while a.on_throttled(t) {
            t += 1.0;
        }
        assert_eq!(a.rate(), 1.0);
        // 80 → 40 → 20 → 10 → 5 → 2.5 → 1.25 → 1 (floor): seven decreases.
        assert_eq!(t, 7.0);
        assert!(!a.on_throttled(t + 5.0));
        assert_eq!(a.rate(), 1.0);
    }

    #[test]
    fn recovery_is_additive_in_time_and_capped() {
        let mut a = sender();
        a.on_throttled(0.0);
        assert_eq!(a.rate(), 40.0);
        // Many successes over 3 s regain 2 × 3 = 6 messages/s, however many.
        for i in 1..=300 {
            a.on_success(f64::from(i) * 0.01);
        }
        assert!(close(a.rate(), 46.0), "{}", a.rate());
        // One success after 3 more seconds regains the same.
        a.on_success(6.0);
        assert!(close(a.rate(), 52.0), "{}", a.rate());
        assert!(a.is_reduced());
        // Never above the configured rate.
        a.on_success(1000.0);
        assert_eq!(a.rate(), 80.0);
        assert!(!a.is_reduced());
    }

    #[test]
    fn time_at_the_floor_earns_no_recovery() {
        let mut a = Aimd::new(4.0, 0.5, 1.0, 1.0).unwrap();
        assert!(a.on_throttled(0.0)); // 2
        assert!(a.on_throttled(1.0)); // 1
        assert!(!a.on_throttled(2.0)); // at the floor, still refused
        a.on_success(2.5);
        assert!(close(a.rate(), 1.5), "{}", a.rate());
    }

    #[test]
    fn backwards_clock_earns_nothing() {
        let mut a = sender();
        a.on_throttled(10.0);
        a.on_success(9.0);
        assert_eq!(a.rate(), 40.0);
        a.on_success(11.0);
        assert!(close(a.rate(), 42.0), "{}", a.rate());
    }

    #[test]
    fn reload_lowering_applies_at_once() {
        let mut a = sender();
        a.set_configured(30.0).unwrap();
        assert_eq!((a.rate(), a.configured()), (30.0, 30.0));
        // Lowering above a throttled rate keeps the throttled rate.
        let mut b = sender();
        b.on_throttled(0.0);
        b.set_configured(60.0).unwrap();
        assert_eq!((b.rate(), b.configured()), (40.0, 60.0));
        b.on_success(100.0);
        assert_eq!(b.rate(), 60.0);
    }

    #[test]
    fn reload_raising_climbs_by_recovery() {
        let mut a = sender();
        a.on_success(0.0);
        a.set_configured(100.0).unwrap();
        assert_eq!((a.rate(), a.configured()), (80.0, 100.0));
        a.on_success(5.0);
        assert!(close(a.rate(), 90.0), "{}", a.rate());
        a.on_success(20.0);
        assert_eq!(a.rate(), 100.0);
    }

    #[test]
    fn configured_below_the_floor_is_its_own_floor() {
        let mut a = Aimd::new(0.5, 0.5, 0.1, 1.0).unwrap();
        assert_eq!(a.rate(), 0.5);
        assert!(!a.on_throttled(0.0));
        assert_eq!(a.rate(), 0.5);
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert_eq!(
            Aimd::new(0.0, 0.5, 1.0, 1.0).unwrap_err().to_string(),
            "sender rate must be > 0 messages/s, got 0"
        );
        assert!(matches!(
            Aimd::new(f64::NAN, 0.5, 1.0, 1.0),
            Err(AimdError::Rate(_))
        ));
        assert_eq!(
            Aimd::new(10.0, 1.0, 1.0, 1.0),
            Err(AimdError::DecreaseFactor(1.0))
        );
        assert_eq!(
            Aimd::new(10.0, 0.0, 1.0, 1.0),
            Err(AimdError::DecreaseFactor(0.0))
        );
        assert_eq!(
            Aimd::new(10.0, 0.5, -1.0, 1.0),
            Err(AimdError::Increase(-1.0))
        );
        assert_eq!(Aimd::new(10.0, 0.5, 1.0, 0.0), Err(AimdError::Floor(0.0)));
        let mut a = sender();
        assert_eq!(a.set_configured(-3.0), Err(AimdError::Rate(-3.0)));
        assert_eq!(a.configured(), 80.0);
    }
}
