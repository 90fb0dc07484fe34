//! The parameters resolved for one contact at ingest and stored with it,
//! in the shapes the Cloud API takes.

use serde::{Deserialize, Serialize};

use super::spec::*;

/// Parameters resolved for one contact at ingest and stored with it, so
/// that what is sent does not depend on when it is sent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FrozenParams {
    /// Body parameters in template order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<FrozenParam>,
    /// The header, when the template has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<FrozenHeader>,
    /// Button parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<FrozenButton>,
}

impl FrozenParams {
    /// True when there is nothing to send (an excluded contact).
    pub fn is_empty(&self) -> bool {
        self.body.is_empty() && self.header.is_none() && self.buttons.is_empty()
    }
}

/// One resolved body parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenParam {
    /// The parameter name for a named-format template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The value.
    pub kind: ParamKind,
}

/// A resolved parameter value, in the shapes the Cloud API takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// `{"type": "text", "text": ...}`.
    Text(String),
    /// `{"type": "currency", "currency": {...}}`.
    Currency {
        /// Text shown where the client cannot format currency.
        fallback_value: String,
        /// ISO 4217 code.
        code: String,
        /// Amount × 1000.
        amount_1000: i64,
    },
    /// `{"type": "date_time", "date_time": {"fallback_value": ...}}`.
    DateTime {
        /// The date as text.
        fallback_value: String,
    },
}

/// A resolved header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenHeader {
    /// Header kind (JSON field `type`).
    #[serde(rename = "type")]
    pub kind: HeaderType,
    /// Media id, for a media header given by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// Media URL, for a media header given by link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Document file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Text header parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_params: Vec<String>,
}

/// Resolved parameters of one button.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrozenButton {
    /// Button kind.
    pub sub_type: ButtonSubType,
    /// Button position in the template.
    pub index: u8,
    /// Resolved parameters.
    pub params: Vec<String>,
}
