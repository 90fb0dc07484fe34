//! A sender's circuit: when its sends keep failing with errors that say
//! nothing about the contact (connection refused, Meta's 5xx and transient
//! codes), the sender stops taking contacts, waits, lets one probe through,
//! and resumes when a probe gets an answer. Without it an outage fails every
//! contact that comes up during it for good: a 10-minute Meta incident at
//! 20 messages/s would have used up the retries of some 12,000 contacts.
//! With it the contacts stay pending and the campaign says why it waits.
//!
//! Pure: the caller gives the time (monotonic seconds) of every event.

/// Settings (from `[dispatch]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CircuitSettings {
    /// Transient failures in a row (no success in between) that open it.
    pub failures_to_open: u32,
    /// First wait before a probe, in seconds; doubled per failed probe.
    pub open_secs: f64,
    /// Cap on the wait before a probe, in seconds.
    pub max_open_secs: f64,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            failures_to_open: 10,
            open_secs: 1.0,
            max_open_secs: 30.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CircuitState {
    /// Sending normally; `failures` transient failures in a row so far.
    Closed { failures: u32 },
    /// Not sending until `until`; the wait after a failed probe is `wait` seconds.
    Open { until: f64, wait: f64 },
    /// One probe is on its way; nothing else is sent until it answers.
    Probing { wait: f64 },
}

#[derive(Debug, Clone)]
pub struct Circuit {
    settings: CircuitSettings,
    state: CircuitState,
}

/// What [`Circuit::admit`] allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pass {
    /// Send.
    Send,
    /// Send: this is the probe that decides whether the circuit closes.
    Probe,
    /// Do not send; look again at this time (monotonic seconds).
    Wait(f64),
}

impl Circuit {
    pub fn new(settings: CircuitSettings) -> Self {
        Circuit {
            settings,
            state: CircuitState::Closed { failures: 0 },
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// True unless open or probing: the sender may be given contacts.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, CircuitState::Closed { .. })
    }

    /// May a send go now?
    pub fn admit(&mut self, now: f64) -> Pass {
        match self.state {
            CircuitState::Closed { .. } => Pass::Send,
            CircuitState::Open { until, wait } if now >= until => {
                self.state = CircuitState::Probing { wait };
                Pass::Probe
            }
            CircuitState::Open { until, .. } => Pass::Wait(until),
            // The probe's answer decides; others look again shortly.
            CircuitState::Probing { .. } => Pass::Wait(now + 0.1),
        }
    }

    /// An answer that proves the path to Meta works (accepted, or an error
    /// about the contact, the template or the account).
    pub fn on_answer(&mut self) {
        self.state = CircuitState::Closed { failures: 0 };
    }

    /// A failure that says nothing about the contact. Returns true when
    /// this failure opened the circuit (to log it once).
    pub fn on_transient(&mut self, now: f64) -> bool {
        match self.state {
            CircuitState::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.settings.failures_to_open.max(1) {
                    let wait = self.settings.open_secs;
                    self.state = CircuitState::Open {
                        until: now + wait,
                        wait: self.next(wait),
                    };
                    true
                } else {
                    self.state = CircuitState::Closed { failures };
                    false
                }
            }
            CircuitState::Probing { wait } => {
                self.state = CircuitState::Open {
                    until: now + wait,
                    wait: self.next(wait),
                };
                false
            }
            // A send that left before the circuit opened: already counted.
            CircuitState::Open { .. } => false,
        }
    }

    /// A probe that was admitted but never sent (the contact was not
    /// claimable after all): the next send probes instead.
    pub fn probe_abandoned(&mut self, now: f64) {
        if let CircuitState::Probing { wait } = self.state {
            self.state = CircuitState::Open { until: now, wait };
        }
    }

    fn next(&self, wait: f64) -> f64 {
        (wait * 2.0).min(self.settings.max_open_secs.max(self.settings.open_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit() -> Circuit {
        Circuit::new(CircuitSettings {
            failures_to_open: 3,
            open_secs: 1.0,
            max_open_secs: 4.0,
        })
    }

    #[test]
    fn opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let mut c = circuit();
        assert!(!c.on_transient(0.0));
        assert!(!c.on_transient(0.0));
        c.on_answer();
        assert!(!c.on_transient(0.0));
        assert!(!c.on_transient(0.0));
        assert!(c.is_closed());
        assert!(c.on_transient(10.0), "third in a row opens");
        assert!(!c.is_closed());
        assert_eq!(c.admit(10.5), Pass::Wait(11.0));
    }

    #[test]
    fn one_probe_after_the_wait_and_failed_probes_double_the_wait_up_to_the_cap() {
        let mut c = circuit();
        for _ in 0..3 {
            c.on_transient(0.0);
        }
        assert_eq!(c.admit(1.0), Pass::Probe);
        assert!(
            matches!(c.admit(1.0), Pass::Wait(_)),
            "only one probe at a time"
        );
        c.on_transient(1.0);
        assert_eq!(c.admit(2.0), Pass::Wait(3.0), "second wait 2 s");
        assert_eq!(c.admit(3.0), Pass::Probe);
        c.on_transient(3.0);
        assert_eq!(c.admit(3.0), Pass::Wait(7.0), "third wait 4 s");
        assert_eq!(c.admit(7.0), Pass::Probe);
        c.on_transient(7.0);
        assert_eq!(c.admit(7.0), Pass::Wait(11.0), "capped at 4 s");
        assert_eq!(c.admit(11.0), Pass::Probe);
        c.on_answer();
        assert_eq!(c.admit(11.0), Pass::Send);
        assert!(c.is_closed());
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_send_probe() {
        let mut c = circuit();
        for _ in 0..3 {
            c.on_transient(0.0);
        }
        assert_eq!(c.admit(1.0), Pass::Probe);
        c.probe_abandoned(1.0);
        assert_eq!(c.admit(1.0), Pass::Probe);
    }

    #[test]
    fn late_failures_of_sends_already_on_the_wire_do_not_extend_the_wait() {
        let mut c = circuit();
        for _ in 0..3 {
            c.on_transient(0.0);
        }
        c.on_transient(0.9);
        assert_eq!(c.admit(1.0), Pass::Probe);
    }
}
