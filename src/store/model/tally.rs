//! What one dispatch row adds to its campaign's counts (docs/ARCHITECTURE.md,
//! "Progress and counts"): the counters of a campaign summary, each named by
//! a [`Counter`]. A scan adds every row's counters; a backend that keeps the
//! counts beside the rows adds, with each change of a row, the counters of
//! the row after it minus those of the row before it ([`tally_change`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DispatchRecord;
use crate::domain::{DispatchState, Pricing};

/// Funnel stages in order.
pub const FUNNEL: [DispatchState; 5] = [
    DispatchState::Accepted,
    DispatchState::Sent,
    DispatchState::Delivered,
    DispatchState::Read,
    DispatchState::Replied,
];

/// One counter of a campaign summary. `step` is `None` for the counters of
/// the rows' current steps (the campaign's funnel), and the step's id
/// (`""` for the first) for the per-step tallies, history included.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Counter {
    /// Every contact recorded for the campaign.
    Staged,
    /// Journeys waiting for a later step (a timer).
    Waiting,
    /// Timers set, by the step they wait for.
    Timer(String),
    /// Journeys credited with a goal conversion.
    Converted,
    /// The value of those conversions in one currency.
    ConversionValue(String),
    /// Journeys whose conversion stopped steps not sent yet.
    StoppedByConversion,
    /// Billable messages by pricing category and country (`?` unknown).
    Billable { category: String, country: String },
    /// Contacts in a state.
    State {
        step: Option<String>,
        state: DispatchState,
    },
    /// Contacts that reached a funnel stage or a later one.
    Reached {
        step: Option<String>,
        stage: DispatchState,
    },
    /// Exclusions by reason.
    Excluded {
        step: Option<String>,
        reason: String,
    },
    /// Failures by error class.
    FailedClass { step: Option<String>, class: String },
    /// Failures by error code (`none` without one).
    FailedCode { step: Option<String>, code: String },
    /// Accepted messages Meta holds, by its `message_status`.
    HeldByMeta {
        step: Option<String>,
        status: String,
    },
}

/// The counters one step of one row adds under `step`.
fn step_counters(
    out: &mut Vec<Counter>,
    step: Option<&str>,
    state: DispatchState,
    reason: Option<&str>,
    (class, code): (Option<&str>, Option<i64>),
) {
    let step = || step.map(str::to_string);
    out.push(Counter::State {
        step: step(),
        state,
    });
    if state == DispatchState::Failed {
        out.push(Counter::FailedCode {
            step: step(),
            code: code.map_or_else(|| "none".to_string(), |c| c.to_string()),
        });
    }
    if state.delivery_rank() > 0 {
        for stage in FUNNEL {
            if state.delivery_rank() >= stage.delivery_rank() {
                out.push(Counter::Reached {
                    step: step(),
                    stage,
                });
            }
        }
    }
    let named = |v: Option<&str>| v.unwrap_or("unknown").to_string();
    match state {
        DispatchState::Accepted if reason.is_some() => out.push(Counter::HeldByMeta {
            step: step(),
            status: named(reason),
        }),
        DispatchState::Excluded => out.push(Counter::Excluded {
            step: step(),
            reason: named(reason),
        }),
        DispatchState::Failed => out.push(Counter::FailedClass {
            step: step(),
            class: named(class),
        }),
        _ => {}
    }
}

fn billable(out: &mut Vec<(Counter, f64)>, pricing: Option<&Pricing>) {
    if let Some(p) = pricing.filter(|p| p.billable) {
        out.push((
            Counter::Billable {
                category: p.category.clone(),
                country: p.country.clone().unwrap_or_else(|| "?".to_string()),
            },
            1.0,
        ));
    }
}

impl DispatchRecord {
    /// Every counter this row adds to its campaign's summary, with what it
    /// adds (1 for a contact, the value for a conversion's value).
    pub fn tally(&self) -> Vec<(Counter, f64)> {
        let mut out = vec![(Counter::Staged, 1.0)];
        if let Some(c) = &self.conversion {
            out.push((Counter::Converted, 1.0));
            let stopped = self.stopped.as_deref();
            if stopped.and_then(|s| s.strip_prefix("converted:")) == Some(c.goal.as_str()) {
                out.push((Counter::StoppedByConversion, 1.0));
            }
            if let (Some(v), Some(currency)) = (c.value, &c.currency) {
                out.push((Counter::ConversionValue(currency.clone()), v));
            }
        }
        if let Some(wait) = &self.wait {
            out.push((Counter::Waiting, 1.0));
            out.push((Counter::Timer(wait.step.clone()), 1.0));
        }
        let mut counters = Vec::new();
        let class = (self.error_class.as_deref(), self.error_code);
        step_counters(
            &mut counters,
            None,
            self.state,
            self.reason.as_deref(),
            class,
        );
        billable(&mut out, self.pricing.as_ref());
        for h in &self.history {
            let class = (h.error_class.as_deref(), h.error_code);
            step_counters(
                &mut counters,
                Some(&h.step),
                h.state,
                h.reason.as_deref(),
                class,
            );
            billable(&mut out, h.pricing.as_ref());
        }
        step_counters(
            &mut counters,
            Some(&self.step),
            self.state,
            self.reason.as_deref(),
            class,
        );
        out.extend(counters.into_iter().map(|c| (c, 1.0)));
        out
    }
}

/// What a change of one row does to its campaign's counters: the row's
/// counters after it minus those before it (`None`: a new row), without
/// the counters it leaves alone.
pub fn tally_change(
    before: Option<&[(Counter, f64)]>,
    after: &DispatchRecord,
) -> BTreeMap<Counter, f64> {
    let mut change: BTreeMap<Counter, f64> = BTreeMap::new();
    for (c, v) in after.tally() {
        *change.entry(c).or_default() += v;
    }
    for (c, v) in before.unwrap_or_default() {
        *change.entry(c.clone()).or_default() -= v;
    }
    change.retain(|_, v| *v != 0.0);
    change
}
