//! Pure rules of the simulated Cloud API: request validation, the error
//! catalogue, failure rules, the pair-rate GCRA and the seeded per-recipient
//! outcome draw. No I/O, no clocks: callers pass the time in.

use std::collections::HashMap;

use serde::Deserialize;

use super::{FailureRule, FailureStage, TemplateSpec};

/// Meta: `biz_opaque_callback_data` is an arbitrary string of at most 512
/// bytes, echoed in status webhooks.
pub(crate) const MAX_BIZ_OPAQUE_BYTES: usize = 512;

/// Where Meta documents error codes; sent as `href` in webhook errors.
pub(crate) const ERROR_CODES_HREF: &str =
    "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/";

// ---------------------------------------------------------------------------
// Error catalogue
// ---------------------------------------------------------------------------

/// Graph error codes the sandbox emits.
pub(crate) mod code {
    pub(crate) const SERVICE_UNAVAILABLE: i64 = 2;
    pub(crate) const INVALID_PARAMETER: i64 = 100;
    pub(crate) const ACCESS_TOKEN: i64 = 190;
    pub(crate) const UNKNOWN_PATH: i64 = 2500;
    pub(crate) const EXPERIMENT: i64 = 130_472;
    pub(crate) const THROUGHPUT: i64 = 130_429;
    pub(crate) const SOMETHING_WENT_WRONG: i64 = 131_000;
    pub(crate) const MISSING_PARAMETER: i64 = 131_008;
    pub(crate) const UNDELIVERABLE: i64 = 131_026;
    pub(crate) const HEALTHY_ECOSYSTEM: i64 = 131_049;
    pub(crate) const MARKETING_OPT_OUT: i64 = 131_050;
    pub(crate) const PAIR_RATE: i64 = 131_056;
    pub(crate) const PARAM_COUNT: i64 = 132_000;
    pub(crate) const TEMPLATE_MISSING: i64 = 132_001;
    pub(crate) const TEMPLATE_PAUSED: i64 = 132_015;
}

/// Every code the sandbox can answer synchronously, so stats can count them
/// with one atomic each (rules may add more).
pub(crate) const KNOWN_API_CODES: &[i64] = &[
    code::INVALID_PARAMETER,
    code::ACCESS_TOKEN,
    code::UNKNOWN_PATH,
    code::THROUGHPUT,
    code::MISSING_PARAMETER,
    code::PAIR_RATE,
    code::PARAM_COUNT,
    code::TEMPLATE_MISSING,
    code::TEMPLATE_PAUSED,
];

/// Title of a code as Meta words it (the Graph `message` is `(#code) title`).
pub(crate) fn title(code: i64) -> &'static str {
    match code {
        code::SERVICE_UNAVAILABLE => "Service temporarily unavailable",
        code::INVALID_PARAMETER => "Invalid parameter",
        code::ACCESS_TOKEN => "Invalid OAuth access token - Cannot parse access token",
        code::UNKNOWN_PATH => "Unknown path components",
        code::EXPERIMENT => "User's number is part of an experiment",
        code::THROUGHPUT => "Rate limit hit",
        code::SOMETHING_WENT_WRONG => "Something went wrong",
        code::MISSING_PARAMETER => "Required parameter is missing",
        code::UNDELIVERABLE => "Message undeliverable",
        code::HEALTHY_ECOSYSTEM => {
            "This message was not delivered to maintain healthy ecosystem engagement."
        }
        code::MARKETING_OPT_OUT => {
            "Unable to deliver the message. This recipient has chosen to stop receiving \
             marketing messages on WhatsApp from your business."
        }
        code::PAIR_RATE => "(Business Account, Consumer Account) pair rate limit hit",
        code::PARAM_COUNT => "Number of parameters does not match the expected number of params",
        code::TEMPLATE_MISSING => "Template name does not exist in the translation",
        code::TEMPLATE_PAUSED => "Template is Paused",
        131_047 => "Re-engagement message",
        131_048 => "Spam rate limit hit",
        131_051 => "Unsupported message type",
        _ => "Message failed to send",
    }
}

/// Default `error_data.details` for a code.
pub(crate) fn default_details(code: i64) -> &'static str {
    match code {
        code::SERVICE_UNAVAILABLE => "Temporary downtime or overload; retry later.",
        code::EXPERIMENT => "The message was not sent because this user is part of an experiment.",
        code::THROUGHPUT => "Cloud API message throughput has been reached.",
        code::SOMETHING_WENT_WRONG => "Message failed to send due to an unknown error.",
        code::UNDELIVERABLE => {
            "Unable to deliver message: the number may not be a WhatsApp user, may not have \
             accepted the latest terms, or may run an outdated WhatsApp version."
        }
        code::HEALTHY_ECOSYSTEM => {
            "The message was not delivered to keep the user's marketing engagement healthy."
        }
        code::MARKETING_OPT_OUT => "The recipient stopped marketing messages from this business.",
        code::PAIR_RATE => {
            "Message failed to send because there were too many messages sent from this \
             phone number to the same phone number in a short period of time."
        }
        _ => title(code),
    }
}

/// HTTP status Meta answers a synchronous error code with.
pub(crate) fn http_status(code: i64) -> u16 {
    match code {
        code::ACCESS_TOKEN => 401,
        code::SOMETHING_WENT_WRONG => 500,
        code::SERVICE_UNAVAILABLE => 503,
        _ => 400,
    }
}

/// An error the simulated Graph API answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) code: i64,
    pub(crate) subcode: Option<i64>,
    pub(crate) details: String,
}

impl ApiError {
    pub(crate) fn new(code: i64, details: impl Into<String>) -> Self {
        Self {
            code,
            subcode: None,
            details: details.into(),
        }
    }

    pub(crate) fn with_default_details(code: i64) -> Self {
        Self::new(code, default_details(code))
    }

    pub(crate) fn http_status(&self) -> u16 {
        http_status(self.code)
    }
}

/// Why a send request is malformed; the `Display` text is `error_data.details`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PayloadError {
    #[error("request body is not valid JSON for a message: {0}")]
    Json(String),
    #[error("the parameter {0} is required")]
    Required(&'static str),
    #[error("messaging_product must be \"whatsapp\", got {0:?}")]
    MessagingProduct(String),
    #[error("recipient_type must be \"individual\", got {0:?}")]
    RecipientType(String),
    #[error("to {0:?} is not a phone number (7 to 15 digits, optional leading +)")]
    Phone(String),
    #[error("the sandbox sends only type \"template\", got {0:?}")]
    MessageType(String),
    #[error("biz_opaque_callback_data is {0} bytes, the limit is 512")]
    BizOpaqueTooLong(usize),
    #[error("template.components[{index}]: unknown component type {kind:?}")]
    ComponentType { index: usize, kind: String },
    #[error("template.components has more than one {0} component")]
    DuplicateComponent(&'static str),
    #[error("template.components[{index}]: button needs sub_type and index 0-9")]
    Button { index: usize },
    #[error("template.components[{index}].parameters[{param}]: unknown parameter type {kind:?}")]
    ParameterType {
        index: usize,
        param: usize,
        kind: String,
    },
    #[error(
        "template.components[{index}].parameters[{param}]: parameter of type {kind} has no value"
    )]
    ParameterValue {
        index: usize,
        param: usize,
        kind: String,
    },
    #[error("template.components[{index}]: {kind} component has an empty parameters array")]
    EmptyParameters { index: usize, kind: String },
    #[error("template {name:?} expects {expected} body parameters, the request gives {given}")]
    ParameterCount {
        name: String,
        expected: usize,
        given: usize,
    },
    #[error("template {0:?} does not exist in the translation")]
    UnknownTemplate(String),
    #[error("template {0:?} is paused")]
    PausedTemplate(String),
}

impl PayloadError {
    /// The Graph code for this defect. Shape errors (missing or mistyped
    /// fields, unknown types) are 100 "Invalid parameter", as Graph answers
    /// them; a parameter of a known type without a value is 131008; a body
    /// parameter count that cannot match a template (an empty parameters
    /// array, or a count different from a configured template) is 132000.
    pub(crate) fn code(&self) -> i64 {
        match self {
            Self::ParameterValue { .. } => code::MISSING_PARAMETER,
            Self::EmptyParameters { .. } | Self::ParameterCount { .. } => code::PARAM_COUNT,
            Self::UnknownTemplate(_) => code::TEMPLATE_MISSING,
            Self::PausedTemplate(_) => code::TEMPLATE_PAUSED,
            _ => code::INVALID_PARAMETER,
        }
    }
}

impl From<PayloadError> for ApiError {
    fn from(e: PayloadError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

// ---------------------------------------------------------------------------
// Request shape
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub(crate) struct SendRequest {
    messaging_product: Option<String>,
    recipient_type: Option<String>,
    to: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    template: Option<TemplateRequest>,
    biz_opaque_callback_data: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TemplateRequest {
    name: Option<String>,
    language: Option<Language>,
    components: Option<Vec<Component>>,
}

#[derive(Debug, Deserialize)]
struct Language {
    code: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Component {
    #[serde(rename = "type")]
    kind: Option<String>,
    sub_type: Option<String>,
    index: Option<ButtonIndex>,
    parameters: Option<Vec<Parameter>>,
}

/// Meta documents the button index as a string; numbers are accepted too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ButtonIndex {
    Number(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
struct Parameter {
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
    pub(crate) biz_opaque: Option<String>,
    /// First quick-reply payload the request sets (button replies echo it).
    pub(crate) quick_reply_payload: Option<String>,
}

impl ValidSend {
    /// The campaign a message belongs to: `biz_opaque_callback_data` up to the
    /// first `|` (the daemon writes `<campaign>|<contact>`), else the template.
    pub(crate) fn campaign(&self) -> &str {
        match self.biz_opaque.as_deref() {
            Some(b) if !b.is_empty() => b.split('|').next().unwrap_or(b),
            _ => &self.template,
        }
    }
}

/// Parse and validate a `POST /messages` body.
pub(crate) fn validate_send(
    body: &[u8],
    templates: &HashMap<String, TemplateSpec>,
) -> Result<ValidSend, PayloadError> {
    let req: SendRequest =
        serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;

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
    let input = req
        .to
        .filter(|t| !t.is_empty())
        .ok_or(PayloadError::Required("to"))?;
    let recipient = Recipient::parse(&input).ok_or_else(|| PayloadError::Phone(input.clone()))?;
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
    let template = req.template.ok_or(PayloadError::Required("template"))?;
    let name = template
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or(PayloadError::Required("template.name"))?;
    template
        .language
        .and_then(|l| l.code)
        .filter(|c| !c.trim().is_empty())
        .ok_or(PayloadError::Required("template.language.code"))?;

    let mut body_params = 0usize;
    let mut seen_body = false;
    let mut seen_header = false;
    let mut quick_reply: Option<(u64, String)> = None;
    for (index, component) in template.components.iter().flatten().enumerate() {
        let kind = component.kind.as_deref().unwrap_or("");
        match kind {
            "body" | "header" => {
                let seen = if kind == "body" {
                    &mut seen_body
                } else {
                    &mut seen_header
                };
                if std::mem::replace(seen, true) {
                    return Err(PayloadError::DuplicateComponent(if kind == "body" {
                        "body"
                    } else {
                        "header"
                    }));
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
                if kind == "body" {
                    body_params = params.len();
                }
            }
            "button" => {
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
                                quick_reply = Some((button_index, payload.to_owned()));
                            }
                        }
                    }
                }
            }
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

    if let Some(spec) = templates.get(&name) {
        if spec.paused {
            return Err(PayloadError::PausedTemplate(name));
        }
        if spec.body_params != body_params {
            return Err(PayloadError::ParameterCount {
                name,
                expected: spec.body_params,
                given: body_params,
            });
        }
    } else if !templates.is_empty() {
        return Err(PayloadError::UnknownTemplate(name));
    }

    Ok(ValidSend {
        input,
        recipient,
        template: name,
        biz_opaque: req.biz_opaque_callback_data,
        quick_reply_payload: quick_reply.map(|(_, p)| p),
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ParamContext {
    Content,
    Button,
}

fn check_parameter(
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

// ---------------------------------------------------------------------------
// Recipients
// ---------------------------------------------------------------------------

/// A recipient phone as WhatsApp reports it (`wa_id`: the digits of `to`),
/// with a compact key for the sandbox's maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub(crate) wa_id: String,
    pub(crate) key: u64,
}

impl Recipient {
    /// Accepts `+` and the separators people type (space, `-`, `.`, parens);
    /// 7 to 15 digits (E.164 allows at most 15).
    pub(crate) fn parse(to: &str) -> Option<Self> {
        let rest = to.trim().strip_prefix('+').unwrap_or(to.trim());
        let mut wa_id = String::with_capacity(rest.len());
        for c in rest.chars() {
            match c {
                '0'..='9' => wa_id.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return None,
            }
        }
        if !(7..=15).contains(&wa_id.len()) {
            return None;
        }
        // 15 digits fit in 50 bits; the length in the top byte keeps numbers
        // that differ only by leading zeros apart.
        let value: u64 = wa_id.parse().ok()?;
        let key = ((wa_id.len() as u64) << 56) | value;
        Some(Self { wa_id, key })
    }
}

// ---------------------------------------------------------------------------
// Failure rules
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Pair rate limit (GCRA)
// ---------------------------------------------------------------------------

/// Per (business number, recipient) limit as a generic cell rate algorithm.
///
/// Meta: one message per 6 s to the same user, with bursts of up to 45 that
/// borrow from future quota (error 131056 until the pair is back in budget).
/// GCRA is exactly that model: each message moves the pair's theoretical
/// arrival time one interval into the future; a message is refused while that
/// time is more than `(burst - 1)` intervals ahead.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairLimit {
    interval_ns: u64,
    tolerance_ns: u64,
}

impl PairLimit {
    /// `None` when the interval is zero (limit disabled).
    pub(crate) fn new(interval_secs: f64, burst: u32) -> Option<Self> {
        if interval_secs <= 0.0 {
            return None;
        }
        let interval_ns = (interval_secs * 1e9) as u64;
        Some(Self {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1) - 1)),
        })
    }

    /// Admit a message at `now_ns`, updating the pair's arrival time `tat_ns`.
    pub(crate) fn admit(&self, tat_ns: &mut u64, now_ns: u64) -> bool {
        let tat = (*tat_ns).max(now_ns);
        if tat - now_ns > self.tolerance_ns {
            return false;
        }
        *tat_ns = tat + self.interval_ns;
        true
    }
}

// ---------------------------------------------------------------------------
// Seeded outcome draw
// ---------------------------------------------------------------------------

/// SplitMix64 finaliser: a stable, well-mixed 64-bit hash step.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a; stable across Rust versions, unlike `DefaultHasher`.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A uniform draw in [0, 1) fixed by (seed, recipient, ordinal, salt).
pub(crate) fn draw(seed: u64, recipient_key: u64, ordinal: u32, salt: u64) -> f64 {
    let h = mix64(seed ^ mix64(recipient_key ^ mix64(u64::from(ordinal) ^ mix64(salt))));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Shares that shape what happens after a message is accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shares {
    pub(crate) read: f64,
    pub(crate) read_without_delivered: f64,
    pub(crate) reply: f64,
    pub(crate) stop: f64,
    pub(crate) button: f64,
}

/// What a recipient does with an accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A `failed` status with this code (no `sent` before it).
    Failed(i64),
    Delivered {
        /// False when the message is read in the open chat: Meta then sends
        /// `read` without `delivered`.
        delivered_status: bool,
        read: bool,
        reply: Option<Reply>,
    },
}

/// An inbound message answering a campaign message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Free text, index into [`REPLY_TEXTS`].
    Text(usize),
    /// The opt-out keyword.
    Stop,
    /// A quick-reply button tap, index into [`BUTTON_TEXTS`].
    Button(usize),
}

pub(crate) const REPLY_TEXTS: &[&str] = &[
    "Thanks!",
    "How much is it?",
    "Sí, me interesa",
    "Can you send more details?",
    "¿Hasta cuándo es válido?",
    "Who is this?",
];

pub(crate) const BUTTON_TEXTS: &[&str] = &["Yes, I'm interested", "Not now"];

pub(crate) const PROFILE_NAMES: &[&str] = &[
    "María", "João", "Aisha", "Wei", "Olivia", "Mateo", "Priya", "Lukas",
];

/// Decide the fate of the `ordinal`-th accepted message to a recipient.
///
/// Keyed by (seed, recipient, ordinal) rather than by wamid: wamids depend on
/// the arrival order of concurrent requests and on a per-process nonce, so
/// they would make runs irreproducible; the ordinal does not.
pub(crate) fn decide(
    seed: u64,
    recipient_key: u64,
    ordinal: u32,
    shares: &Shares,
    failure: Option<i64>,
) -> Outcome {
    if let Some(code) = failure {
        return Outcome::Failed(code);
    }
    let d = |salt: u64| draw(seed, recipient_key, ordinal, salt);
    let reply = (d(1) < shares.reply).then(|| {
        if d(2) < shares.stop {
            Reply::Stop
        } else if d(3) < shares.button {
            Reply::Button((d(4) * BUTTON_TEXTS.len() as f64) as usize)
        } else {
            Reply::Text((d(5) * REPLY_TEXTS.len() as f64) as usize)
        }
    });
    // A reply implies the message was read first.
    let read = reply.is_some() || d(6) < shares.read;
    let delivered_status = !(read && d(7) < shares.read_without_delivered);
    Outcome::Delivered {
        delivered_status,
        read,
        reply,
    }
}

#[cfg(test)]
mod tests;
