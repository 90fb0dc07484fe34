//! Failure rules: which recipients fail, with which code, at which stage.

use super::{FailureRule, FailureStage};

use super::*;

/// The first rule whose suffix ends the recipient's digits.
pub(crate) fn match_failure<'a>(rules: &'a [FailureRule], wa_id: &str) -> Option<&'a FailureRule> {
    rules.iter().find(|r| wa_id.ends_with(r.suffix.as_str()))
}

/// The synchronous failure for this recipient, if a rule says so.
pub(crate) fn api_failure(rules: &[FailureRule], wa_id: &str) -> Option<ApiError> {
    match_failure(rules, wa_id)
        .filter(|r| r.stage == FailureStage::Api)
        .map(|r| ApiError::with_default_details(r.code))
}

/// The failed-status code for this recipient, if a rule says so.
pub(crate) fn webhook_failure(rules: &[FailureRule], wa_id: &str) -> Option<i64> {
    match_failure(rules, wa_id)
        .filter(|r| r.stage == FailureStage::Webhook)
        .map(|r| r.code)
}
