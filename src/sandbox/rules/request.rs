//! The shape of a send request: what `POST /{version}/{phone_number_id}/messages`
//! must carry, checked as the Cloud API checks it.

use std::collections::HashMap;

use serde::Deserialize;

use super::TemplateSpec;

use super::*;

#[derive(Debug, Deserialize)]
pub(crate) struct SendRequest {
    messaging_product: Option<String>,
    recipient_type: Option<String>,
    to: Option<String>,
    /// A business-scoped user id (`to` wins when both are set).
    recipient: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    template: Option<TemplateRequest>,
    biz_opaque_callback_data: Option<String>,
    /// Marketing Messages API: `CLOUD_API_FALLBACK` (default) or `STRICT`.
    product_policy: Option<String>,
    /// Marketing Messages API: share the message's activity with Meta.
    #[allow(dead_code)]
    message_activity_sharing: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(super) struct TemplateRequest {
    name: Option<String>,
    language: Option<Language>,
    components: Option<Vec<Component>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Language {
    code: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Component {
    #[serde(rename = "type")]
    kind: Option<String>,
    sub_type: Option<String>,
    index: Option<ButtonIndex>,
    parameters: Option<Vec<Parameter>>,
}

/// Meta documents the button index as a string; numbers are accepted too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum ButtonIndex {
    Number(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
pub(super) struct Parameter {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    payload: Option<String>,
    coupon_code: Option<String>,
    currency: Option<serde_json::Value>,
    date_time: Option<serde_json::Value>,
    image: Option<serde_json::Value>,
    video: Option<serde_json::Value>,
    document: Option<serde_json::Value>,
    location: Option<serde_json::Value>,
    action: Option<serde_json::Value>,
}

/// A validated template send, reduced to what the sandbox needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidSend {
    /// `to` as given, echoed in `contacts[].input`.
    pub(crate) input: String,
    pub(crate) recipient: Recipient,
    pub(crate) template: String,
    /// `template.language.code` as given.
    pub(crate) language: String,
    pub(crate) biz_opaque: Option<String>,
    /// First quick-reply payload the request sets (button replies echo it).
    pub(crate) quick_reply_payload: Option<String>,
    /// `STRICT` when the request asked never to fall back to Cloud API.
    pub(crate) strict: bool,
}

impl ValidSend {
    /// The campaign a message belongs to: `biz_opaque_callback_data` up to the
    /// first `|` (the daemon writes `<campaign>|<contact>`, and
    /// `<campaign>/<step>|<contact>` for a later journey step, so each step
    /// counts as its own campaign), else the template.
    pub(crate) fn campaign(&self) -> &str {
        match self.biz_opaque.as_deref() {
            Some(b) if !b.is_empty() => b.split('|').next().unwrap_or(b),
            _ => &self.template,
        }
    }

    /// The occurrence a triggered campaign's message is for: what follows
    /// the contact in `biz_opaque_callback_data` (`campaign|contact|occurrence`).
    pub(crate) fn occurrence(&self) -> Option<&str> {
        let (_, rest) = self.biz_opaque.as_deref()?.split_once('|')?;
        rest.split_once('|').map(|(_, occurrence)| occurrence)
    }
}

/// Parse and validate a `POST /messages` body.
pub(crate) fn validate_send(
    body: &[u8],
    templates: &HashMap<String, TemplateSpec>,
) -> Result<ValidSend, PayloadError> {
    let req: SendRequest =
        serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
    let (input, recipient) = check_envelope(&req)?;
    let template = req.template.ok_or(PayloadError::Required("template"))?;
    let name = template
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or(PayloadError::Required("template.name"))?;
    let language = template
        .language
        .and_then(|l| l.code)
        .filter(|c| !c.trim().is_empty())
        .ok_or(PayloadError::Required("template.language.code"))?;
    let components = check_components(template.components.iter().flatten())?;
    check_known_template(&name, components.body_params, templates)?;
    let strict = match req.product_policy.as_deref() {
        None | Some("CLOUD_API_FALLBACK") => false,
        Some("STRICT") => true,
        Some(other) => return Err(PayloadError::ProductPolicy(other.to_owned())),
    };
    Ok(ValidSend {
        input,
        recipient,
        template: name,
        language,
        biz_opaque: req.biz_opaque_callback_data,
        quick_reply_payload: components.quick_reply.map(|(_, p)| p),
        strict,
    })
}

/// What the message around the template must be: a WhatsApp template
/// message to one individual, with a callback data of at most 512 bytes.
/// Answers `to` as given and the recipient it names.
fn check_envelope(req: &SendRequest) -> Result<(String, Recipient), PayloadError> {
    match req.messaging_product.as_deref() {
        None => return Err(PayloadError::Required("messaging_product")),
        Some("whatsapp") => {}
        Some(other) => return Err(PayloadError::MessagingProduct(other.to_owned())),
    }
    if let Some(rt) = req.recipient_type.as_deref() {
        if rt != "individual" {
            return Err(PayloadError::RecipientType(rt.to_owned()));
        }
    }
    // `to` (a phone) wins over `recipient` (a user id) when both are set.
    let present = |s: &Option<String>| s.clone().filter(|t| !t.is_empty());
    let (input, recipient) = match (present(&req.to), present(&req.recipient)) {
        (Some(to), _) => {
            let recipient = Recipient::parse(&to).ok_or_else(|| PayloadError::Phone(to.clone()))?;
            (to, recipient)
        }
        (None, Some(user_id)) => {
            let recipient = Recipient::parse_user_id(&user_id)
                .ok_or_else(|| PayloadError::UserId(user_id.clone()))?;
            (user_id, recipient)
        }
        (None, None) => return Err(PayloadError::Required("to (or recipient)")),
    };
    // Graph defaults a missing type to "text"; the sandbox simulates template
    // campaigns only.
    match req.kind.as_deref() {
        Some("template") => {}
        other => {
            return Err(PayloadError::MessageType(
                other.unwrap_or("text").to_owned(),
            ))
        }
    }
    if let Some(b) = &req.biz_opaque_callback_data {
        if b.len() > MAX_BIZ_OPAQUE_BYTES {
            return Err(PayloadError::BizOpaqueTooLong(b.len()));
        }
    }
    Ok((input, recipient))
}

/// What the components of a template send carry, once checked.
#[derive(Default)]
struct Components {
    body_params: usize,
    /// (button index, payload) of the first quick reply by index.
    quick_reply: Option<(u64, String)>,
}

/// Checks each component: one body and one header at most, each with a
/// non-empty parameter list when it has one; buttons with an index of 0 to
/// 9 and a sub-type; no component of a kind the Cloud API does not know.
fn check_components<'a>(
    components: impl Iterator<Item = &'a Component>,
) -> Result<Components, PayloadError> {
    let mut out = Components::default();
    let (mut seen_body, mut seen_header) = (false, false);
    for (index, component) in components.enumerate() {
        match component.kind.as_deref().unwrap_or("") {
            "body" => out.body_params = check_content(index, component, "body", &mut seen_body)?,
            "header" => {
                check_content(index, component, "header", &mut seen_header)?;
            }
            "button" => check_button(index, component, &mut out.quick_reply)?,
            // Limited-time-offer and carousel components carry parameters the
            // sandbox does not inspect.
            "limited_time_offer" | "carousel" => {}
            other => {
                return Err(PayloadError::ComponentType {
                    index,
                    kind: other.to_owned(),
                })
            }
        }
    }
    Ok(out)
}

/// A body or header component; answers its parameter count.
fn check_content(
    index: usize,
    component: &Component,
    kind: &'static str,
    seen: &mut bool,
) -> Result<usize, PayloadError> {
    if std::mem::replace(seen, true) {
        return Err(PayloadError::DuplicateComponent(kind));
    }
    let params = component.parameters.as_deref().unwrap_or(&[]);
    if component.parameters.is_some() && params.is_empty() {
        return Err(PayloadError::EmptyParameters {
            index,
            kind: kind.to_owned(),
        });
    }
    for (param, p) in params.iter().enumerate() {
        check_parameter(index, param, p, ParamContext::Content)?;
    }
    Ok(params.len())
}

/// A button component; keeps the payload of the quick reply with the
/// lowest index seen so far.
fn check_button(
    index: usize,
    component: &Component,
    quick_reply: &mut Option<(u64, String)>,
) -> Result<(), PayloadError> {
    let sub_type = component.sub_type.as_deref().unwrap_or("");
    let button_index = match &component.index {
        Some(ButtonIndex::Number(n)) => Some(*n),
        Some(ButtonIndex::Text(t)) => t.parse::<u64>().ok(),
        None => None,
    };
    let button_index = match button_index {
        Some(i) if i <= 9 && !sub_type.is_empty() => i,
        _ => return Err(PayloadError::Button { index }),
    };
    for (param, p) in component.parameters.iter().flatten().enumerate() {
        check_parameter(index, param, p, ParamContext::Button)?;
        if sub_type == "quick_reply" {
            if let Some(payload) = p.payload.as_deref() {
                let earlier = quick_reply
                    .as_ref()
                    .is_some_and(|(i, _)| *i <= button_index);
                if !earlier {
                    *quick_reply = Some((button_index, payload.to_owned()));
                }
            }
        }
    }
    Ok(())
}

/// With templates configured, the send must name one of them, not paused,
/// with its number of body parameters.
fn check_known_template(
    name: &str,
    body_params: usize,
    templates: &HashMap<String, TemplateSpec>,
) -> Result<(), PayloadError> {
    match templates.get(name) {
        Some(spec) if spec.paused => Err(PayloadError::PausedTemplate(name.to_owned())),
        Some(spec) if spec.body_params != body_params => Err(PayloadError::ParameterCount {
            name: name.to_owned(),
            expected: spec.body_params,
            given: body_params,
        }),
        Some(_) => Ok(()),
        None if templates.is_empty() => Ok(()),
        None => Err(PayloadError::UnknownTemplate(name.to_owned())),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ParamContext {
    Content,
    Button,
}

pub(super) fn check_parameter(
    index: usize,
    param: usize,
    p: &Parameter,
    context: ParamContext,
) -> Result<(), PayloadError> {
    let kind = p.kind.as_deref().unwrap_or("");
    let has_value = match (kind, context) {
        ("text", _) => p.text.as_deref().is_some_and(|t| !t.trim().is_empty()),
        ("currency", ParamContext::Content) => p.currency.is_some(),
        ("date_time", ParamContext::Content) => p.date_time.is_some(),
        ("image", ParamContext::Content) => p.image.is_some(),
        ("video", ParamContext::Content) => p.video.is_some(),
        ("document", ParamContext::Content) => p.document.is_some(),
        ("location", ParamContext::Content) => p.location.is_some(),
        ("payload", ParamContext::Button) => p.payload.as_deref().is_some_and(|t| !t.is_empty()),
        ("coupon_code", ParamContext::Button) => {
            p.coupon_code.as_deref().is_some_and(|t| !t.is_empty())
        }
        ("action", ParamContext::Button) => p.action.is_some(),
        _ => {
            return Err(PayloadError::ParameterType {
                index,
                param,
                kind: kind.to_owned(),
            })
        }
    };
    if has_value {
        Ok(())
    } else {
        Err(PayloadError::ParameterValue {
            index,
            param,
            kind: kind.to_owned(),
        })
    }
}
