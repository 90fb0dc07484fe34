//! The pair rate limit (131056): one message per recipient and business
//! number every few seconds, as a GCRA on the caller's clock.

/// Per (business number, recipient) limit as a generic cell rate algorithm.
///
/// Meta: one message per 6 s to the same user, with bursts of up to 45 that
/// borrow from future quota (error 131056 until the pair is back in budget).
/// GCRA is exactly that model: each message moves the pair's theoretical
/// arrival time one interval into the future; a message is refused while that
/// time is more than `(burst - 1)` intervals ahead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairLimit {
    interval_ns: u64,
    tolerance_ns: u64,
}

impl PairLimit {
    /// `None` when the interval is zero (limit disabled).
    pub(crate) fn new(interval_secs: f64, burst: u32) -> Option<Self> {
        if interval_secs <= 0.0 {
            return None;
        }
        let interval_ns = (interval_secs * 1e9) as u64;
        Some(Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1) - 1)),
        })
    }

    /// Admit a message at `now_ns`, updating the pair's arrival time `tat_ns`.
    pub(crate) fn admit(&self, tat_ns: &mut u64, now_ns: u64) -> bool {
        let tat = (*tat_ns).max(now_ns);
        if tat - now_ns > self.tolerance_ns {
            return false;
        }
        *tat_ns = tat + self.interval_ns;
        true
    }
}
