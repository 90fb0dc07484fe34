//! The template part of a campaign spec as upstreams write it: which
//! approved template, its category and language, and the expressions that
//! fill its body, header and buttons; with the serde shapes of the body
//! (positional or named, order preserved).

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Meta's template categories; they decide pricing and which limits apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateCategory {
    /// Promotions; subject to opt-outs and per-user marketing limits.
    #[default]
    Marketing,
    /// Transaction updates.
    Utility,
    /// One-time passcodes.
    Authentication,
}

/// How the template's body variables are written at Meta: `{{1}}` in order,
/// or `{{customer_name}}` by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterFormat {
    /// `{{1}}`, `{{2}}`, ...: the body is a JSON array.
    #[default]
    Positional,
    /// `{{customer_name}}`: the body is a JSON object, name → expression.
    Named,
}

/// A campaign's template: which approved template, and how to fill it from
/// an audience record.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TemplateSpec {
    /// The template name as approved at Meta (`birthday_promo`).
    #[serde(default)]
    pub name: String,
    /// The template language code (`es_MX`, `en`).
    #[serde(default)]
    pub language: String,
    /// Meta category; default `marketing`.
    #[serde(default)]
    pub category: TemplateCategory,
    /// Positional (default) or named body parameters.
    #[serde(default)]
    pub parameter_format: ParameterFormat,
    /// Body parameters: an array (positional) or an object (named).
    #[serde(default)]
    pub body: BodyParams,
    /// Header, when the template has a media header or a text header with
    /// a variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderSpec>,
    /// Buttons that take a parameter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<ButtonSpec>,
}

/// The body parameters as given in the spec, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyParams {
    /// `["{{name}}", "{{discount}}"]`: fills `{{1}}`, `{{2}}`, ...
    Positional(Vec<ParamSpec>),
    /// `{"customer_name": "{{name}}"}`, in the object's key order.
    Named(Vec<(String, ParamSpec)>),
}

impl Default for BodyParams {
    fn default() -> Self {
        BodyParams::Positional(Vec::new())
    }
}

impl BodyParams {
    /// Number of parameters.
    pub fn len(&self) -> usize {
        match self {
            BodyParams::Positional(p) => p.len(),
            BodyParams::Named(p) => p.len(),
        }
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One body parameter: an expression for text (a plain JSON string), or an
/// object for the typed parameters Meta supports.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamSpec {
    /// Text: `"{{name}}"` or `{"type": "text", "text": "{{name}}"}`.
    Text(String),
    /// `{"type": "currency", "fallback_value": "$10", "code": "MXN",
    /// "amount_1000": "{{amount_1000}}"}`; `amount_1000` is the amount
    /// times 1000 (Meta's unit), as an expression or a JSON integer.
    Currency {
        /// Text shown where the client cannot format currency.
        fallback_value: String,
        /// ISO 4217 code (`MXN`).
        code: String,
        /// Amount × 1000, an integer once resolved.
        amount_1000: String,
    },
    /// `{"type": "date_time", "fallback_value": "{{due_date}}"}`.
    DateTime {
        /// The date as text.
        fallback_value: String,
    },
}

/// Header kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderType {
    /// Image by media id or link.
    Image,
    /// Video by media id or link.
    Video,
    /// Document by media id or link, with an optional file name.
    Document,
    /// Text with (at most one) parameter.
    Text,
}

impl HeaderType {
    /// The lowercase name Meta uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            HeaderType::Image => "image",
            HeaderType::Video => "video",
            HeaderType::Document => "document",
            HeaderType::Text => "text",
        }
    }

    /// True for image, video and document.
    pub fn is_media(&self) -> bool {
        !matches!(self, HeaderType::Text)
    }
}

/// The template header. Media headers need exactly one of `media_id` and
/// `link`; each of those, `filename` and `text_params` are expressions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaderSpec {
    /// `image`, `video`, `document` or `text` (JSON field `type`).
    #[serde(rename = "type")]
    pub kind: HeaderType,
    /// Media uploaded to Meta.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// Public https URL of the media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// File name shown for a document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Parameters of a text header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub text_params: Vec<String>,
}

/// Button kinds that take a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonSubType {
    /// Dynamic URL suffix.
    Url,
    /// Payload returned when tapped.
    QuickReply,
    /// Coupon code copied when tapped.
    CopyCode,
}

impl ButtonSubType {
    /// The name Meta uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            ButtonSubType::Url => "url",
            ButtonSubType::QuickReply => "quick_reply",
            ButtonSubType::CopyCode => "copy_code",
        }
    }
}

/// A button parameter set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ButtonSpec {
    /// `url`, `quick_reply` or `copy_code`.
    pub sub_type: ButtonSubType,
    /// Position of the button in the template, from 0.
    #[serde(default)]
    pub index: u8,
    /// Expressions; each kind takes exactly one.
    #[serde(default)]
    pub params: Vec<String>,
}

// --- serde for the untagged, order-preserving body shapes ---

impl Serialize for BodyParams {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            BodyParams::Positional(params) => {
                let mut seq = serializer.serialize_seq(Some(params.len()))?;
                for p in params {
                    seq.serialize_element(p)?;
                }
                seq.end()
            }
            BodyParams::Named(params) => {
                let mut map = serializer.serialize_map(Some(params.len()))?;
                for (name, p) in params {
                    map.serialize_entry(name, p)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for BodyParams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;

        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = BodyParams;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of positional parameters or an object of named parameters")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BodyParams, A::Error> {
                let mut params = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(p) = seq.next_element()? {
                    params.push(p);
                }
                Ok(BodyParams::Positional(params))
            }

            // serde_json does not keep object key order in a map type without
            // its preserve_order feature; reading entries one by one does.
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BodyParams, A::Error> {
                let mut params = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry::<String, ParamSpec>()? {
                    params.push(entry);
                }
                Ok(BodyParams::Named(params))
            }

            fn visit_unit<E: de::Error>(self) -> Result<BodyParams, E> {
                Ok(BodyParams::default())
            }
        }

        deserializer.deserialize_any(BodyVisitor)
    }
}

impl Serialize for ParamSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ParamSpec::Text(text) => serializer.serialize_str(text),
            ParamSpec::Currency {
                fallback_value,
                code,
                amount_1000,
            } => {
                let mut map = serializer.serialize_map(Some(4))?;
                map.serialize_entry("type", "currency")?;
                map.serialize_entry("fallback_value", fallback_value)?;
                map.serialize_entry("code", code)?;
                map.serialize_entry("amount_1000", amount_1000)?;
                map.end()
            }
            ParamSpec::DateTime { fallback_value } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("type", "date_time")?;
                map.serialize_entry("fallback_value", fallback_value)?;
                map.end()
            }
        }
    }
}

/// A string, or a JSON number written as its text (`"amount_1000": 10000`).
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

#[derive(Deserialize)]
struct ParamObject {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<Scalar>,
    #[serde(default)]
    fallback_value: Option<Scalar>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    amount_1000: Option<Scalar>,
}

impl<'de> Deserialize<'de> for ParamSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ParamVisitor;

        impl<'de> Visitor<'de> for ParamVisitor {
            type Value = ParamSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an expression string or a {\"type\": ...} parameter object")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ParamSpec, E> {
                Ok(ParamSpec::Text(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ParamSpec, E> {
                Ok(ParamSpec::Text(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ParamSpec, E> {
                Ok(ParamSpec::Text(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ParamSpec, E> {
                Ok(ParamSpec::Text(v.to_string()))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ParamSpec, A::Error> {
                let object = ParamObject::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let text = |s: Option<Scalar>| s.map(|s| s.0).unwrap_or_default();
                match object.kind.as_str() {
                    "text" => Ok(ParamSpec::Text(text(object.text))),
                    "currency" => Ok(ParamSpec::Currency {
                        fallback_value: text(object.fallback_value),
                        code: object.code.unwrap_or_default(),
                        amount_1000: text(object.amount_1000),
                    }),
                    "date_time" => Ok(ParamSpec::DateTime {
                        fallback_value: text(object.fallback_value),
                    }),
                    other => Err(de::Error::custom(format!(
                        "template parameter type \"{other}\" is not one of text, currency, date_time"
                    ))),
                }
            }
        }

        deserializer.deserialize_any(ParamVisitor)
    }
}
