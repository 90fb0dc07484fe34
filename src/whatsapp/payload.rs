//! The Cloud API request body of a template message, built from a
//! campaign's [`TemplateSpec`] and the [`FrozenParams`] stored with the
//! contact at ingest, and the `biz_opaque_callback_data` that ties status
//! webhooks back to the (campaign, contact) they belong to.
//!
//! Pure: no I/O, no clock. The body is built from borrowed typed structs
//! ([`TemplateMessage`]) so that the send path serialises straight to bytes
//! ([`template_message_bytes`]) without an intermediate `serde_json::Value`.
//!
//! Shapes (Meta's "send template message" reference):
//!
//! ```json
//! {"messaging_product": "whatsapp", "recipient_type": "individual",
//!  "to": "+5215512345678", "type": "template",
//!  "biz_opaque_callback_data": "bday-2026-11|+5215512345678",
//!  "template": {"name": "birthday_promo", "language": {"code": "es_MX"},
//!    "components": [
//!      {"type": "header", "parameters": [{"type": "image", "image": {"id": "1234"}}]},
//!      {"type": "body", "parameters": [{"type": "text", "text": "María"}]},
//!      {"type": "button", "sub_type": "url", "index": "0",
//!       "parameters": [{"type": "text", "text": "MARIA20"}]}]}}
//! ```

use bytes::Bytes;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::domain::{
    ButtonSubType, ContactKey, FrozenButton, FrozenHeader, FrozenParam, FrozenParams, HeaderType,
    ParamKind, TemplateSpec,
};

/// Separates the campaign id from the contact in `biz_opaque_callback_data`.
/// Campaign ids never contain it (campaign validation), so the first one
/// found is the separator even if a contact key were to contain one.
const CALLBACK_SEPARATOR: char = '|';

/// The `biz_opaque_callback_data` of a message: `"<campaign>|<contact>"`,
/// and `"|<occurrence>"` after it for a triggered campaign's row.
///
/// Meta returns it untouched in the message's status webhooks, which is how
/// a status (even for a send whose response was lost, an `unknown` one;
/// docs/ARCHITECTURE.md, "Error classes") finds its (campaign, contact).
/// Meta allows 512 characters; a campaign id (at most 128), a step id (32),
/// a contact key and an occurrence (128 each) stay below.
pub fn callback_data(campaign: &str, contact: &ContactKey) -> String {
    step_callback_data(campaign, "", contact)
}

/// Separates a later journey step from the campaign id in the callback
/// data: neither campaign nor step ids contain it.
const STEP_SEPARATOR: char = '/';

/// The callback data of a journey step's message: `"<campaign>/<step>|<contact>"`
/// for a later step, [`callback_data`]'s form for the first (`step` empty),
/// so each step's message is told apart wherever the data is read (the
/// row itself finds the step by its wamid).
pub fn step_callback_data(campaign: &str, step: &str, contact: &ContactKey) -> String {
    let occurrence = contact.occurrence().unwrap_or_default();
    let mut out = String::with_capacity(
        campaign.len() + 3 + step.len() + contact.as_str().len() + occurrence.len(),
    );
    out.push_str(campaign);
    if !step.is_empty() {
        out.push(STEP_SEPARATOR);
        out.push_str(step);
    }
    out.push(CALLBACK_SEPARATOR);
    out.push_str(contact.as_str());
    if contact.occurrence().is_some() {
        // Contact ids (E.164 numbers, user ids) never hold the separator;
        // the occurrence, last, may.
        out.push(CALLBACK_SEPARATOR);
        out.push_str(occurrence);
    }
    out
}

/// Splits `biz_opaque_callback_data` back into (campaign id, contact row),
/// at the first '|' and the occurrence at the next. `None` when there is
/// no '|' or either side is empty: the data did not come from
/// [`callback_data`] (another app on the same WhatsApp Business Account
/// may set its own).
pub fn parse_callback_data(s: &str) -> Option<(String, ContactKey)> {
    let (campaign, rest) = s.split_once(CALLBACK_SEPARATOR)?;
    let campaign = campaign
        .split_once(STEP_SEPARATOR)
        .map_or(campaign, |(campaign, _step)| campaign);
    let (contact, occurrence) = match rest.split_once(CALLBACK_SEPARATOR) {
        Some((contact, occurrence)) => (contact, Some(occurrence)),
        None => (rest, None),
    };
    if campaign.is_empty() || contact.is_empty() || occurrence == Some("") {
        return None;
    }
    // The key was written by `callback_data` from a valid ContactKey; it is
    // taken verbatim rather than re-normalised, which would cost a phone
    // parse per webhook at 30,000 webhooks/s.
    let key = ContactKey::raw(contact);
    Some((
        campaign.to_string(),
        match occurrence {
            Some(occurrence) => key.with_occurrence(occurrence),
            None => key,
        },
    ))
}

/// A template message, ready to serialise as the Cloud API request body.
///
/// Borrows everything from the campaign's template and the contact's
/// frozen parameters. Components without parameters are left out: Meta
/// wants a component only for a part of the template that has variables.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateMessage<'a> {
    messaging_product: &'static str,
    recipient_type: &'static str,
    /// A phone number (E.164 with '+', the form Meta recommends).
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a str>,
    /// A business-scoped user id: Meta takes it in `recipient`, not `to`.
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'static str,
    biz_opaque_callback_data: &'a str,
    template: Template<'a>,
    /// Marketing Messages API only: `CLOUD_API_FALLBACK` or `STRICT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    product_policy: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Template<'a> {
    name: &'a str,
    language: Language<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<Component<'a>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Language<'a> {
    code: &'a str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Component<'a> {
    Header {
        parameters: Vec<Parameter<'a>>,
    },
    Body {
        parameters: Vec<Parameter<'a>>,
    },
    Button {
        sub_type: &'static str,
        /// Meta takes the button position as a string ("0").
        #[serde(serialize_with = "as_string")]
        index: u8,
        parameters: Vec<Parameter<'a>>,
    },
}

/// One parameter. `parameter_name` is set for named-format templates.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Parameter<'a> {
    Text {
        #[serde(skip_serializing_if = "Option::is_none")]
        parameter_name: Option<&'a str>,
        text: &'a str,
    },
    Currency {
        #[serde(skip_serializing_if = "Option::is_none")]
        parameter_name: Option<&'a str>,
        currency: Currency<'a>,
    },
    DateTime {
        #[serde(skip_serializing_if = "Option::is_none")]
        parameter_name: Option<&'a str>,
        date_time: DateTime<'a>,
    },
    Image {
        image: Media<'a>,
    },
    Video {
        video: Media<'a>,
    },
    Document {
        document: Media<'a>,
    },
    Payload {
        payload: &'a str,
    },
    CouponCode {
        coupon_code: &'a str,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Currency<'a> {
    fallback_value: &'a str,
    code: &'a str,
    amount_1000: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct DateTime<'a> {
    fallback_value: &'a str,
}

/// Media by Meta media id or by public link; `filename` for documents only.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Media<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<&'a str>,
}

fn as_string<S: Serializer>(value: &u8, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

impl<'a> TemplateMessage<'a> {
    /// The message for one contact. `callback` is the
    /// `biz_opaque_callback_data` (see [`callback_data`]).
    ///
    /// A phone contact goes in `to` as E.164 with its '+' (Meta accepts
    /// the number with or without it and recommends the '+' with country
    /// code); a business-scoped user id goes in `recipient`, the field
    /// Meta added for BSUIDs (`to` is for phone numbers and wins when both
    /// are set, so only one is ever written).
    pub fn new(
        template: &'a TemplateSpec,
        to: &'a ContactKey,
        params: &'a FrozenParams,
        callback: &'a str,
    ) -> TemplateMessage<'a> {
        let (to_field, recipient) = if to.is_user_id() {
            (None, Some(to.as_str()))
        } else {
            (Some(to.as_str()), None)
        };
        let mut components = Vec::with_capacity(2 + params.buttons.len());
        if let Some(header) = params.header.as_ref().and_then(header_component) {
            components.push(header);
        }
        if !params.body.is_empty() {
            components.push(Component::Body {
                parameters: params.body.iter().map(body_parameter).collect(),
            });
        }
        components.extend(params.buttons.iter().filter_map(button_component));
        TemplateMessage {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to: to_field,
            recipient,
            kind: "template",
            biz_opaque_callback_data: callback,
            product_policy: None,
            template: Template {
                name: &template.name,
                language: Language {
                    code: &template.language,
                },
                components,
            },
        }
    }

    /// The message for `endpoint` (its `product_policy`).
    pub fn for_endpoint(mut self, endpoint: crate::domain::Endpoint) -> Self {
        self.product_policy = endpoint.product_policy();
        self
    }

    /// The request body as JSON bytes, for [`crate::whatsapp::WhatsAppClient::send_raw`].
    pub fn to_bytes(&self) -> Bytes {
        // Cannot fail: every field is a string, an integer or a struct or
        // sequence of them, and serde_json only fails on maps with
        // non-string keys (there are none) or on writer errors (a Vec has
        // none). An empty body would be refused by the server, not sent.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The request body as a JSON value.
    pub fn to_value(&self) -> Value {
        // Cannot fail, for the reasons given in `to_bytes`.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The Cloud API body of a template message to `to`, as a JSON value.
/// See [`TemplateMessage::new`].
pub fn template_message(
    template: &TemplateSpec,
    to: &ContactKey,
    params: &FrozenParams,
    callback: &str,
) -> Value {
    TemplateMessage::new(template, to, params, callback).to_value()
}

/// [`template_message`] serialised straight to bytes, for the send path.
pub fn template_message_bytes(
    template: &TemplateSpec,
    to: &ContactKey,
    params: &FrozenParams,
    callback: &str,
    endpoint: crate::domain::Endpoint,
) -> Bytes {
    TemplateMessage::new(template, to, params, callback)
        .for_endpoint(endpoint)
        .to_bytes()
}

/// The header component, or `None` when the header has nothing to fill:
/// a text header without a variable, or (never after spec validation) a
/// media header with neither id nor link.
///
/// A text header's parameter carries no `parameter_name`: the frozen
/// header keeps only values, so a named-format template whose header has a
/// variable cannot be expressed yet (Meta wants header and body to use the
/// same format).
fn header_component(header: &FrozenHeader) -> Option<Component<'_>> {
    let parameters = match header.kind {
        HeaderType::Text => header
            .text_params
            .iter()
            .map(|text| Parameter::Text {
                parameter_name: None,
                text,
            })
            .collect(),
        HeaderType::Image | HeaderType::Video | HeaderType::Document => {
            // Spec validation allows exactly one of media_id and link; the
            // id wins if both ever arrive, since Meta-hosted media needs no
            // download from a third party.
            let media = match (header.media_id.as_deref(), header.link.as_deref()) {
                (Some(id), _) => Media {
                    id: Some(id),
                    link: None,
                    filename: None,
                },
                (None, Some(link)) => Media {
                    id: None,
                    link: Some(link),
                    filename: None,
                },
                (None, None) => return None,
            };
            vec![match header.kind {
                HeaderType::Image => Parameter::Image { image: media },
                HeaderType::Video => Parameter::Video { video: media },
                _ => Parameter::Document {
                    document: Media {
                        filename: header.filename.as_deref(),
                        ..media
                    },
                },
            }]
        }
    };
    (!parameters.is_empty()).then_some(Component::Header { parameters })
}

fn body_parameter(param: &FrozenParam) -> Parameter<'_> {
    let parameter_name = param.name.as_deref();
    match &param.kind {
        ParamKind::Text(text) => Parameter::Text {
            parameter_name,
            text,
        },
        ParamKind::Currency {
            fallback_value,
            code,
            amount_1000,
        } => Parameter::Currency {
            parameter_name,
            currency: Currency {
                fallback_value,
                code,
                amount_1000: *amount_1000,
            },
        },
        ParamKind::DateTime { fallback_value } => Parameter::DateTime {
            parameter_name,
            date_time: DateTime { fallback_value },
        },
    }
}

/// A button component, or `None` for a button without a parameter (a
/// static button needs no component).
fn button_component(button: &FrozenButton) -> Option<Component<'_>> {
    if button.params.is_empty() {
        return None;
    }
    let parameters = button
        .params
        .iter()
        .map(|value| match button.sub_type {
            ButtonSubType::Url => Parameter::Text {
                parameter_name: None,
                text: value,
            },
            ButtonSubType::QuickReply => Parameter::Payload { payload: value },
            ButtonSubType::CopyCode => Parameter::CouponCode { coupon_code: value },
        })
        .collect();
    Some(Component::Button {
        sub_type: button.sub_type.as_str(),
        index: button.index,
        parameters,
    })
}

#[cfg(test)]
mod tests;
