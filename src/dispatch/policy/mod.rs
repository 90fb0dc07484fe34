//! Dispatch policy: the decisions the campaign and sender actors make,
//! as pure synchronous functions and plain structs, apart from the actors
//! that carry them out (docs/ARCHITECTURE.md, "Actors").
//!
//! Nothing here reads a clock, does I/O or draws random numbers: the
//! current time and any random draw are parameters, so every decision is
//! reproducible in a unit test.
//!
//! - [`schedule`]: may this contact be sent now? Campaign window,
//!   `send_after` and quiet hours on the recipient's clock, DST-correct.
//! - [`lifecycle`]: a campaign's observed state from its desired state,
//!   overrides, errors, schedule and contact counts; what each state allows.
//! - [`aimd`]: a sender's rate under Meta's throughput limit (130429).
//! - [`backoff`]: retry delays, exponential with full jitter.
//! - [`admission`]: may this contact be claimed now? Every stop and wait
//!   rule in one function, evaluated again right before the claim.
//! - [`circuit`]: a sender's circuit breaker for outages (wait, probe,
//!   resume; contacts stay pending meanwhile).

pub mod admission;
pub mod aimd;
pub mod backoff;
pub mod circuit;
pub mod lifecycle;
pub mod schedule;

pub use aimd::{Aimd, AimdError, DECREASE_COOLDOWN_SECS};
pub use backoff::{backoff, RetryPolicy};
pub use lifecycle::{
    may_claim, observe, releases_engagements, transition, CampaignCounts, Transition,
};
pub use schedule::{campaign_gate, contact_timezone, gate, Gate};
