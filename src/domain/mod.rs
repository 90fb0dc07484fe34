//! The domain model: campaign specs, audience records, contact keys,
//! template expressions and frozen parameters, dispatch states, exclusion
//! reasons and WhatsApp error classes.
//!
//! Pure and synchronous: no I/O, no clock, no async. Everything the daemon
//! decides about a contact starts from these types, and every decision here
//! is unit-tested beside its code.
//!
//! - [`campaign`]: `CampaignSpec` (the `wa.campaigns` value), schedule,
//!   quiet hours, pacing, validation that reports every problem.
//! - [`audience`]: `AudienceRecord` (the `wa.audience` value) and `stage`,
//!   the ingest decision for one record.
//! - [`contact`]: `ContactKey`, phone normalisation, region and timezone.
//! - [`template`]: template spec, `{{var}}` expressions, compilation and
//!   the parameters frozen per contact.
//! - [`state`]: `DispatchState` and its monotonic rule, `StageTimes`, `ExclusionReason`,
//!   `ObservedState`.
//! - [`deferral`]: when a contact refused for Meta's per-user marketing
//!   limit (131049) is tried again.
//! - [`error_class`]: Cloud API error codes → `ErrorClass`.
//! - [`problem`]: `SpecProblem`, one thing wrong with a spec.
//! - [`journey`]: the steps of a campaign, their validation and the state
//!   machine that decides which step follows and when.
//! - [`cap`]: frequency caps per contact and the send slots that count
//!   against them.
//! - [`trigger`]: triggered campaigns: delay, cancelling events, the cap
//!   per contact and the dedupe window.
//! - [`goal`]: conversion goals, `wa.conversions` records and their
//!   attribution to a journey.
//! - [`marketing_api`]: which endpoint sends a marketing template.
//! - [`messaging_limit`]: Meta's messaging limit (unique users per 24 h)
//!   and the limit in force under the configured ceiling.
//! - [`pricing`]: Meta's pricing of a message, the rate card and a
//!   campaign's estimated cost.
//! - [`template_health`]: what Meta says of a template (status, quality,
//!   132015 / 132016) and whether it may be sent.
//!
//! Imports run one way: `audience` → `campaign` → `journey` → `template` →
//! (`contact`, `problem`), `cap` → (`journey`, `contact`), and `trigger` →
//! (`cap`, `journey`, `problem`), `goal` → (`audience`, `trigger`,
//! `journey`, `contact`, `problem`); a template
//! reads a contact only through `ContactValues`.

pub mod audience;
pub mod campaign;
pub mod cap;
pub mod contact;
pub mod deferral;
pub mod error_class;
pub mod goal;
pub mod journey;
pub mod marketing_api;
pub mod messaging_limit;
pub mod pricing;
pub mod problem;
pub mod segment;
pub mod state;
pub mod template;
pub mod template_health;
pub mod trigger;

pub use audience::*;
pub use campaign::*;
pub use cap::*;
pub use contact::*;
pub use deferral::*;
pub use error_class::*;
pub use goal::*;
pub use journey::*;
pub use marketing_api::*;
pub use messaging_limit::*;
pub use pricing::*;
pub use problem::*;
pub use segment::*;
pub use state::*;
pub use template::*;
pub use template_health::*;
pub use trigger::*;
