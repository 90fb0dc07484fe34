//! Pure rules of the simulated Cloud API: request validation, the error
//! catalogue, failure rules, the pair-rate GCRA and the seeded per-recipient
//! outcome draw. No I/O, no clocks: callers pass the time in.

use super::{FailureRule, FailureStage, TemplateSpec};

/// Meta: `biz_opaque_callback_data` is an arbitrary string of at most 512
/// bytes, echoed in status webhooks.
pub(crate) const MAX_BIZ_OPAQUE_BYTES: usize = 512;

/// Where Meta documents error codes; sent as `href` in webhook errors.
pub(crate) const ERROR_CODES_HREF: &str =
    "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/";

mod draw;
mod errors;
mod failures;
mod pair;
mod recipients;
mod request;

pub(crate) use draw::*;
pub(crate) use errors::*;
pub(crate) use failures::*;
pub(crate) use pair::*;
pub(crate) use recipients::*;
pub(crate) use request::*;

#[cfg(test)]
mod tests;
