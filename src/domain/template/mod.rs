//! Template parameters: the spec a campaign gives, the expressions inside
//! it, and the parameters frozen per contact at ingest.
//!
//! Expressions are text with `{{var}}` placeholders ("Hola {{name}}, code
//! {{coupon}}"). A placeholder `{{x}}` takes the audience record's
//! `variables.x`, else the contact field `x` (phone, name, timezone,
//! user_id); `{{variables.x}}` and `{{contact.x}}` pick one explicitly.
//!
//! Ingest runs at 100,000+ records/s, so a template is compiled once per
//! campaign ([`TemplateSpec::compile`]) and [`CompiledTemplate::freeze`]
//! only looks values up and concatenates.
//!
//! - `spec.rs`: the spec as written (`TemplateSpec` and its parts).
//! - `expr.rs`: `{{var}}` expressions and what a placeholder refers to.
//! - `compile.rs`: `TemplateSpec::compile` and `CompiledTemplate::freeze`.
//! - `frozen.rs`: `FrozenParams`, what is stored per contact.

mod compile;
mod expr;
mod frozen;
mod spec;

pub use compile::*;
pub use expr::*;
pub use frozen::*;
pub use spec::*;

#[cfg(test)]
mod tests;
