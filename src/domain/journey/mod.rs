//! Journeys: campaigns of more than one message per contact
//! (docs/ARCHITECTURE.md, "Journeys").
//!
//! The first step is the primary message; every later step follows one
//! step on a condition (`failed`, `no_reply`, `sent`, `delivered`, `read`)
//! after a delay. A contact is at one step at a time: its row holds that
//! step's state, the edges leaving it and, when a follower is due later,
//! the wait (a durable timer in the store).
//!
//! - [`spec`]: the `steps` as the upstream writes them, delays.
//! - [`plan`]: validation (every problem at once) and the compiled journey.
//! - [`machine`]: which step follows and when, from the current step's facts.

pub mod machine;
pub mod plan;
pub mod spec;
#[cfg(test)]
mod tests;

pub use machine::*;
pub use plan::*;
pub use spec::*;
