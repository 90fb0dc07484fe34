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

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::contact::{ContactKey, ContactValues};
use super::problem::SpecProblem;

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

/// An expression that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    /// `{{` with no `}}` after it.
    #[error("\"{expr}\" has a {{{{ without a closing }}}}")]
    Unclosed {
        /// The whole expression.
        expr: String,
    },
    /// `}}` with no `{{` before it.
    #[error("\"{expr}\" has a }}}} without an opening {{{{")]
    StrayClose {
        /// The whole expression.
        expr: String,
    },
    /// `{{}}` or `{{  }}`.
    #[error("\"{expr}\" has an empty placeholder")]
    Empty {
        /// The whole expression.
        expr: String,
    },
    /// A name with characters other than letters, digits, '_', '-', '.'.
    #[error("\"{expr}\": placeholder name \"{name}\" may contain only letters, digits, '_', '-' and '.'")]
    InvalidName {
        /// The whole expression.
        expr: String,
        /// The name inside the braces.
        name: String,
    },
    /// `{{contact.x}}` for a field contacts do not have.
    #[error(
        "\"{expr}\": contact has no field \"{field}\" (expected phone, name, timezone or user_id)"
    )]
    UnknownContactField {
        /// The whole expression.
        expr: String,
        /// The field named.
        field: String,
    },
}

/// A field of the audience record's `contact` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContactField {
    /// The normalised phone (or the record's phone for a user-id contact).
    Phone,
    /// `contact.name`.
    Name,
    /// `contact.timezone`.
    Timezone,
    /// `contact.user_id` (or the contact key when it is a user id).
    UserId,
}

impl ContactField {
    /// The field's JSON name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ContactField::Phone => "phone",
            ContactField::Name => "name",
            ContactField::Timezone => "timezone",
            ContactField::UserId => "user_id",
        }
    }

    fn from_name(name: &str) -> Option<ContactField> {
        match name {
            "phone" => Some(ContactField::Phone),
            "name" => Some(ContactField::Name),
            "timezone" => Some(ContactField::Timezone),
            "user_id" => Some(ContactField::UserId),
            _ => None,
        }
    }
}

/// What a placeholder refers to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VarRef {
    /// `{{x}}`: `variables.x`, else the contact field `x` if there is one.
    Auto(String),
    /// `{{variables.x}}`.
    Variable(String),
    /// `{{contact.x}}`.
    Contact(ContactField),
}

impl VarRef {
    /// The name as written between the braces (and as reported when missing).
    pub fn name(&self) -> String {
        match self {
            VarRef::Auto(n) => n.clone(),
            VarRef::Variable(n) => format!("variables.{n}"),
            VarRef::Contact(f) => format!("contact.{}", f.as_str()),
        }
    }

    fn resolve<'a>(
        &'a self,
        record: ContactValues<'a>,
        contact: &'a ContactKey,
    ) -> Option<&'a str> {
        let value = match self {
            VarRef::Variable(n) => non_blank(record.variables.get(n).map(String::as_str)),
            VarRef::Contact(f) => contact_field(*f, record, contact),
            VarRef::Auto(n) => {
                non_blank(record.variables.get(n).map(String::as_str)).or_else(|| {
                    ContactField::from_name(n).and_then(|f| contact_field(f, record, contact))
                })
            }
        };
        non_blank(value)
    }
}

fn non_blank(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}

fn contact_field<'a>(
    field: ContactField,
    record: ContactValues<'a>,
    contact: &'a ContactKey,
) -> Option<&'a str> {
    match field {
        ContactField::Phone if contact.is_phone() => Some(contact.as_str()),
        ContactField::Phone => record.phone,
        ContactField::Name => record.name,
        ContactField::Timezone => record.timezone,
        ContactField::UserId => {
            non_blank(record.user_id).or_else(|| contact.is_user_id().then(|| contact.as_str()))
        }
    }
}

/// A piece of an expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExprPart {
    /// Text copied as is.
    Literal(String),
    /// A `{{placeholder}}`.
    Var(VarRef),
}

/// A parsed expression: literal text and placeholders, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Expr {
    parts: Vec<ExprPart>,
}

/// A template variable that resolves to no value (absent, or only blanks)
/// for a record; the name is as written in the placeholder (`coupon`,
/// `contact.name`). A currency amount that is not an integer is reported
/// the same way, because the record cannot fill the template either.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Error)]
#[error("template variable {0} has no value")]
pub struct MissingVariable(pub String);

impl Expr {
    /// Parses an expression.
    pub fn parse(source: &str) -> Result<Expr, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = source;
        loop {
            let open = rest.find("{{");
            let literal = &rest[..open.unwrap_or(rest.len())];
            if literal.contains("}}") {
                return Err(TemplateError::StrayClose {
                    expr: source.to_string(),
                });
            }
            if !literal.is_empty() {
                parts.push(ExprPart::Literal(literal.to_string()));
            }
            let Some(open) = open else { break };
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(TemplateError::Unclosed {
                    expr: source.to_string(),
                });
            };
            parts.push(ExprPart::Var(parse_placeholder(source, &after[..close])?));
            rest = &after[close + 2..];
        }
        Ok(Expr { parts })
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[ExprPart] {
        &self.parts
    }

    /// The text when the expression has no placeholder.
    pub fn constant(&self) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                ExprPart::Literal(text) => out.push_str(text),
                ExprPart::Var(_) => return None,
            }
        }
        Some(out)
    }

    /// The placeholders' names, in order of appearance.
    pub fn variables(&self) -> impl Iterator<Item = &VarRef> {
        self.parts.iter().filter_map(|p| match p {
            ExprPart::Var(v) => Some(v),
            ExprPart::Literal(_) => None,
        })
    }

    /// The expression's text for one contact.
    pub fn render(
        &self,
        record: ContactValues<'_>,
        contact: &ContactKey,
    ) -> Result<String, MissingVariable> {
        // The common shapes ("{{name}}" and a literal) need no concatenation.
        if let [single] = self.parts.as_slice() {
            return match single {
                ExprPart::Literal(text) => Ok(text.clone()),
                ExprPart::Var(var) => resolve(var, record, contact).map(str::to_string),
            };
        }
        let mut out = String::new();
        for part in &self.parts {
            match part {
                ExprPart::Literal(text) => out.push_str(text),
                ExprPart::Var(var) => out.push_str(resolve(var, record, contact)?),
            }
        }
        Ok(out)
    }
}

fn resolve<'a>(
    var: &'a VarRef,
    record: ContactValues<'a>,
    contact: &'a ContactKey,
) -> Result<&'a str, MissingVariable> {
    var.resolve(record, contact)
        .ok_or_else(|| MissingVariable(var.name()))
}

fn parse_placeholder(expr: &str, inner: &str) -> Result<VarRef, TemplateError> {
    let name = inner.trim();
    if name.is_empty() {
        return Err(TemplateError::Empty {
            expr: expr.to_string(),
        });
    }
    let valid = |n: &str| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let invalid = || TemplateError::InvalidName {
        expr: expr.to_string(),
        name: name.to_string(),
    };
    if !valid(name) {
        return Err(invalid());
    }
    if let Some(field) = name.strip_prefix("contact.") {
        return ContactField::from_name(field)
            .map(VarRef::Contact)
            .ok_or_else(|| TemplateError::UnknownContactField {
                expr: expr.to_string(),
                field: field.to_string(),
            });
    }
    if let Some(var) = name.strip_prefix("variables.") {
        return if valid(var) {
            Ok(VarRef::Variable(var.to_string()))
        } else {
            Err(invalid())
        };
    }
    Ok(VarRef::Auto(name.to_string()))
}

impl fmt::Display for Expr {
    /// The expression in its source form (placeholders without spaces).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                ExprPart::Literal(text) => f.write_str(text)?,
                ExprPart::Var(var) => write!(f, "{{{{{}}}}}", var.name())?,
            }
        }
        Ok(())
    }
}

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

/// Highest button index: Meta allows at most 10 buttons per template.
const MAX_BUTTON_INDEX: u8 = 9;

/// A template checked and parsed once, ready to freeze records fast.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledTemplate {
    body: Vec<CompiledParam>,
    header: Option<CompiledHeader>,
    buttons: Vec<CompiledButton>,
}

#[derive(Debug, Clone, PartialEq)]
struct CompiledParam {
    name: Option<String>,
    kind: CompiledKind,
}

#[derive(Debug, Clone, PartialEq)]
enum CompiledKind {
    Text(Expr),
    Currency {
        fallback_value: Expr,
        code: Expr,
        amount_1000: Expr,
    },
    DateTime {
        fallback_value: Expr,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct CompiledHeader {
    kind: HeaderType,
    media_id: Option<Expr>,
    link: Option<Expr>,
    filename: Option<Expr>,
    text_params: Vec<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
struct CompiledButton {
    sub_type: ButtonSubType,
    index: u8,
    params: Vec<Expr>,
}

/// Collects problems while compiling, so that every one is reported.
struct Problems(Vec<SpecProblem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecProblem::new(field, message));
    }

    fn expr(&mut self, field: &str, source: &str) -> Expr {
        match Expr::parse(source) {
            Ok(expr) => expr,
            Err(e) => {
                self.push(field, e.to_string());
                Expr::default()
            }
        }
    }

    /// An expression that must not be empty.
    fn required_expr(&mut self, field: &str, source: &str) -> Expr {
        if source.trim().is_empty() {
            self.push(field, "is missing");
            return Expr::default();
        }
        self.expr(field, source)
    }
}

impl TemplateSpec {
    /// Checks the template and parses its expressions once. Every problem
    /// is reported, each with its field path (`template.body[1]`).
    pub fn compile(&self) -> Result<CompiledTemplate, Vec<SpecProblem>> {
        let mut problems = Problems(Vec::new());
        self.check_identity(&mut problems);
        let body = self.compile_body(&mut problems);
        let header = self
            .header
            .as_ref()
            .map(|h| compile_header(h, &mut problems));
        let buttons = compile_buttons(&self.buttons, &mut problems);
        if problems.0.is_empty() {
            Ok(CompiledTemplate {
                body,
                header,
                buttons,
            })
        } else {
            Err(problems.0)
        }
    }

    /// Freezes one record without a compiled template: compiles on every
    /// call, so use [`CompiledTemplate::freeze`] on hot paths. An invalid
    /// template reports the field of its first problem as the missing
    /// variable.
    pub fn freeze<'a>(
        &self,
        record: impl Into<ContactValues<'a>>,
        contact: &ContactKey,
    ) -> Result<FrozenParams, MissingVariable> {
        match self.compile() {
            Ok(compiled) => compiled.freeze(record, contact),
            Err(problems) => Err(MissingVariable(
                problems
                    .first()
                    .map(|p| p.field.clone())
                    .unwrap_or_else(|| "template".to_string()),
            )),
        }
    }

    fn check_identity(&self, problems: &mut Problems) {
        let name = self.name.trim();
        if name.is_empty() {
            problems.push("template.name", "is missing");
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            problems.push(
                "template.name",
                format!(
                    "\"{}\" may contain only lowercase letters, digits and '_'",
                    self.name
                ),
            );
        }
        let language = self.language.trim();
        if language.is_empty() {
            problems.push("template.language", "is missing");
        } else if !is_language_code(language) {
            // A wrong code (es-MX) is answered by 132001 at send time, which
            // halts the whole campaign: catch it at the door.
            problems.push(
                "template.language",
                format!(
                    "\"{}\" is not a WhatsApp language code (like es_MX or en)",
                    self.language
                ),
            );
        }
    }

    fn compile_body(&self, problems: &mut Problems) -> Vec<CompiledParam> {
        match (&self.body, self.parameter_format) {
            (BodyParams::Positional(params), ParameterFormat::Positional) => params
                .iter()
                .enumerate()
                .map(|(i, p)| CompiledParam {
                    name: None,
                    kind: compile_param(&format!("template.body[{i}]"), p, problems),
                })
                .collect(),
            (BodyParams::Named(params), ParameterFormat::Named) => {
                let mut out: Vec<CompiledParam> = Vec::with_capacity(params.len());
                for (name, p) in params {
                    let field = format!("template.body.{name}");
                    if name.is_empty()
                        || !name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    {
                        problems.push(
                            field.as_str(),
                            format!("parameter name \"{name}\" may contain only lowercase letters, digits and '_'"),
                        );
                    } else if out.iter().any(|c| c.name.as_deref() == Some(name)) {
                        problems.push(field.as_str(), "is given twice");
                    }
                    out.push(CompiledParam {
                        name: Some(name.clone()),
                        kind: compile_param(&field, p, problems),
                    });
                }
                out
            }
            (BodyParams::Named(_), ParameterFormat::Positional) => {
                problems.push(
                    "template.body",
                    "is an object of named parameters but parameter_format is positional (set \"parameter_format\": \"named\")",
                );
                Vec::new()
            }
            (BodyParams::Positional(params), ParameterFormat::Named) => {
                if !params.is_empty() {
                    problems.push(
                        "template.body",
                        "is an array but parameter_format is named (give an object of name: expression)",
                    );
                }
                Vec::new()
            }
        }
    }
}

/// Meta language codes: `en`, `es_MX`, `zh_HK`, `fil`.
fn is_language_code(code: &str) -> bool {
    let (lang, region) = match code.split_once('_') {
        Some((l, r)) => (l, Some(r)),
        None => (code, None),
    };
    (2..=3).contains(&lang.len())
        && lang.bytes().all(|b| b.is_ascii_lowercase())
        && region.is_none_or(|r| {
            (2..=4).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

fn compile_param(field: &str, param: &ParamSpec, problems: &mut Problems) -> CompiledKind {
    match param {
        ParamSpec::Text(source) => CompiledKind::Text(problems.required_expr(field, source)),
        ParamSpec::Currency {
            fallback_value,
            code,
            amount_1000,
        } => {
            let code_field = format!("{field}.code");
            let code_expr = problems.required_expr(&code_field, code);
            if let Some(c) = code_expr.constant().filter(|c| !c.is_empty()) {
                if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                    problems.push(
                        code_field,
                        format!("\"{c}\" is not an ISO 4217 currency code (like MXN)"),
                    );
                }
            }
            let amount_field = format!("{field}.amount_1000");
            let amount = problems.required_expr(&amount_field, amount_1000);
            if let Some(a) = amount.constant().filter(|a| !a.is_empty()) {
                if a.trim().parse::<i64>().is_err() {
                    problems.push(
                        amount_field,
                        format!("\"{a}\" is not an integer (the amount times 1000)"),
                    );
                }
            }
            CompiledKind::Currency {
                fallback_value: problems
                    .required_expr(&format!("{field}.fallback_value"), fallback_value),
                code: code_expr,
                amount_1000: amount,
            }
        }
        ParamSpec::DateTime { fallback_value } => CompiledKind::DateTime {
            fallback_value: problems
                .required_expr(&format!("{field}.fallback_value"), fallback_value),
        },
    }
}

fn compile_header(header: &HeaderSpec, problems: &mut Problems) -> CompiledHeader {
    let optional = |problems: &mut Problems, field: &str, source: &Option<String>| {
        source
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| problems.expr(field, s))
    };
    let media_id = optional(problems, "template.header.media_id", &header.media_id);
    let link = optional(problems, "template.header.link", &header.link);
    let filename = optional(problems, "template.header.filename", &header.filename);
    let kind = header.kind.as_str();
    if header.kind.is_media() {
        match (&media_id, &link) {
            (None, None) => problems.push(
                "template.header",
                format!("a {kind} header needs media_id or link"),
            ),
            (Some(_), Some(_)) => {
                problems.push("template.header", "give media_id or link, not both")
            }
            _ => {}
        }
        if let Some(l) = link.as_ref().and_then(Expr::constant) {
            if !(l.starts_with("https://") || l.starts_with("http://")) {
                problems.push(
                    "template.header.link",
                    format!("\"{l}\" is not an http(s) URL"),
                );
            }
        }
        if filename.is_some() && header.kind != HeaderType::Document {
            problems.push(
                "template.header.filename",
                format!("only a document header takes a filename, not {kind}"),
            );
        }
        if !header.text_params.is_empty() {
            problems.push(
                "template.header.text_params",
                format!("only a text header takes text_params, not {kind}"),
            );
        }
    } else {
        if media_id.is_some() || link.is_some() || filename.is_some() {
            problems.push(
                "template.header",
                "a text header takes text_params, not media_id, link or filename",
            );
        }
        // Meta: a text header has at most one variable.
        if header.text_params.len() > 1 {
            problems.push(
                "template.header.text_params",
                format!(
                    "a text header takes at most 1 parameter, got {}",
                    header.text_params.len()
                ),
            );
        }
    }
    let text_params = header
        .text_params
        .iter()
        .enumerate()
        .map(|(i, p)| problems.required_expr(&format!("template.header.text_params[{i}]"), p))
        .collect();
    CompiledHeader {
        kind: header.kind,
        media_id,
        link,
        filename,
        text_params,
    }
}

fn compile_buttons(buttons: &[ButtonSpec], problems: &mut Problems) -> Vec<CompiledButton> {
    let mut out: Vec<CompiledButton> = Vec::with_capacity(buttons.len());
    for (i, button) in buttons.iter().enumerate() {
        let field = format!("template.buttons[{i}]");
        if button.index > MAX_BUTTON_INDEX {
            problems.push(
                format!("{field}.index"),
                format!(
                    "{} is above {MAX_BUTTON_INDEX}, the highest button index",
                    button.index
                ),
            );
        } else if out.iter().any(|b| b.index == button.index) {
            problems.push(
                format!("{field}.index"),
                format!("{} is used by another button", button.index),
            );
        }
        // Each of these buttons has exactly one variable at Meta: the URL
        // suffix, the payload, the coupon code.
        if button.params.len() != 1 {
            problems.push(
                format!("{field}.params"),
                format!(
                    "a {} button takes exactly 1 parameter, got {}",
                    button.sub_type.as_str(),
                    button.params.len()
                ),
            );
        }
        let params = button
            .params
            .iter()
            .enumerate()
            .map(|(j, p)| problems.required_expr(&format!("{field}.params[{j}]"), p))
            .collect();
        out.push(CompiledButton {
            sub_type: button.sub_type,
            index: button.index,
            params,
        });
    }
    out
}

impl CompiledTemplate {
    /// Resolves every parameter for one record (an `AudienceRecord`, or
    /// any [`ContactValues`]). Fails with the first variable that has no
    /// value.
    pub fn freeze<'a>(
        &self,
        record: impl Into<ContactValues<'a>>,
        contact: &ContactKey,
    ) -> Result<FrozenParams, MissingVariable> {
        let record = record.into();
        let mut body = Vec::with_capacity(self.body.len());
        for param in &self.body {
            let kind = match &param.kind {
                CompiledKind::Text(expr) => {
                    ParamKind::Text(meta_text(expr.render(record, contact)?))
                }
                CompiledKind::Currency {
                    fallback_value,
                    code,
                    amount_1000,
                } => ParamKind::Currency {
                    fallback_value: meta_text(fallback_value.render(record, contact)?),
                    code: code.render(record, contact)?.trim().to_string(),
                    amount_1000: amount_1000
                        .render(record, contact)?
                        .trim()
                        .parse()
                        .map_err(|_| MissingVariable(first_variable(amount_1000, "amount_1000")))?,
                },
                CompiledKind::DateTime { fallback_value } => ParamKind::DateTime {
                    fallback_value: meta_text(fallback_value.render(record, contact)?),
                },
            };
            body.push(FrozenParam {
                name: param.name.clone(),
                kind,
            });
        }
        let header = match &self.header {
            Some(h) => {
                let render_opt =
                    |e: &Option<Expr>| e.as_ref().map(|e| e.render(record, contact)).transpose();
                Some(FrozenHeader {
                    kind: h.kind,
                    media_id: render_opt(&h.media_id)?,
                    link: render_opt(&h.link)?,
                    filename: render_opt(&h.filename)?,
                    text_params: h
                        .text_params
                        .iter()
                        .map(|e| e.render(record, contact).map(meta_text))
                        .collect::<Result<_, _>>()?,
                })
            }
            None => None,
        };
        let buttons = self
            .buttons
            .iter()
            .map(|b| {
                Ok(FrozenButton {
                    sub_type: b.sub_type,
                    index: b.index,
                    params: b
                        .params
                        .iter()
                        .map(|e| e.render(record, contact))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, MissingVariable>>()?;
        Ok(FrozenParams {
            body,
            header,
            buttons,
        })
    }

    /// Names of the variables the template references, in order of first
    /// appearance, as written (`name`, `contact.phone`).
    pub fn variables(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let mut add = |expr: &Expr| {
            for var in expr.variables() {
                let name = var.name();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        };
        for param in &self.body {
            match &param.kind {
                CompiledKind::Text(e) => add(e),
                CompiledKind::Currency {
                    fallback_value,
                    code,
                    amount_1000,
                } => {
                    add(fallback_value);
                    add(code);
                    add(amount_1000);
                }
                CompiledKind::DateTime { fallback_value } => add(fallback_value),
            }
        }
        if let Some(h) = &self.header {
            for e in [&h.media_id, &h.link, &h.filename].into_iter().flatten() {
                add(e);
            }
            h.text_params.iter().for_each(&mut add);
        }
        for b in &self.buttons {
            b.params.iter().for_each(&mut add);
        }
        names
    }

    /// Number of body parameters.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

fn first_variable(expr: &Expr, fallback: &str) -> String {
    expr.variables()
        .next()
        .map(VarRef::name)
        .unwrap_or_else(|| fallback.to_string())
}

/// Meta rejects text parameters with new lines, tabs or more than four
/// consecutive spaces (error 132018 at send time, when nothing can be done
/// about it any more). Upstream data often has them (addresses, notes), so
/// they become single spaces here; clean values are returned untouched.
fn meta_text(value: String) -> String {
    let needs_cleaning = value.contains(['\n', '\r', '\t']) || value.contains("     ");
    if !needs_cleaning {
        return value;
    }
    let mut out = String::with_capacity(value.len());
    let mut spaces = 0;
    for c in value.chars() {
        let c = if matches!(c, '\n' | '\r' | '\t') {
            ' '
        } else {
            c
        };
        if c == ' ' {
            spaces += 1;
            if spaces > 4 {
                continue;
            }
        } else {
            spaces = 0;
        }
        out.push(c);
    }
    out
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A contact's values, owned (an audience record's, in the daemon).
    struct Record {
        variables: BTreeMap<String, String>,
        phone: Option<String>,
        name: Option<String>,
    }

    impl<'a> From<&'a Record> for ContactValues<'a> {
        fn from(r: &'a Record) -> ContactValues<'a> {
            ContactValues {
                variables: &r.variables,
                phone: r.phone.as_deref(),
                name: r.name.as_deref(),
                timezone: None,
                user_id: None,
            }
        }
    }

    fn record(vars: &[(&str, &str)]) -> Record {
        Record {
            variables: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            phone: Some("+5215512345678".into()),
            name: Some("María".into()),
        }
    }

    fn phone() -> ContactKey {
        ContactKey::raw("+5215512345678")
    }

    fn spec(json: &str) -> TemplateSpec {
        serde_json::from_str(json).unwrap()
    }

    fn texts(params: &FrozenParams) -> Vec<String> {
        params
            .body
            .iter()
            .map(|p| match &p.kind {
                ParamKind::Text(t) => t.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn expression_parsing() {
        let e = Expr::parse("Hola {{name}}, code {{ coupon }}!").unwrap();
        assert_eq!(
            e.parts(),
            [
                ExprPart::Literal("Hola ".into()),
                ExprPart::Var(VarRef::Auto("name".into())),
                ExprPart::Literal(", code ".into()),
                ExprPart::Var(VarRef::Auto("coupon".into())),
                ExprPart::Literal("!".into()),
            ]
        );
        assert_eq!(e.to_string(), "Hola {{name}}, code {{coupon}}!");
        assert_eq!(
            Expr::parse("{{contact.name}}{{variables.x}}")
                .unwrap()
                .parts(),
            [
                ExprPart::Var(VarRef::Contact(ContactField::Name)),
                ExprPart::Var(VarRef::Variable("x".into())),
            ]
        );
        assert_eq!(
            Expr::parse("plain").unwrap().constant().as_deref(),
            Some("plain")
        );
        assert_eq!(Expr::parse("").unwrap().parts(), []);
    }

    #[test]
    fn expression_errors_name_the_expression() {
        let cases = [
            ("Hola {{name", "\"Hola {{name\" has a {{ without a closing }}"),
            ("{{}}", "\"{{}}\" has an empty placeholder"),
            ("a {{   }} b", "\"a {{   }} b\" has an empty placeholder"),
            ("{name}}", "\"{name}}\" has a }} without an opening {{"),
            (
                "{{first name}}",
                "\"{{first name}}\": placeholder name \"first name\" may contain only letters, digits, '_', '-' and '.'",
            ),
            (
                "{{contact.email}}",
                "\"{{contact.email}}\": contact has no field \"email\" (expected phone, name, timezone or user_id)",
            ),
        ];
        for (source, message) in cases {
            assert_eq!(
                Expr::parse(source).unwrap_err().to_string(),
                message,
                "{source:?}"
            );
        }
    }

    #[test]
    fn positional_rendering_with_literals() {
        let t = spec(
            r#"{"name":"promo","language":"es_MX","body":["{{name}}","Hola {{name}}, usa {{coupon}}","20%"]}"#,
        );
        let frozen = t
            .compile()
            .unwrap()
            .freeze(&record(&[("name", "Ana"), ("coupon", "ANA20")]), &phone())
            .unwrap();
        assert_eq!(texts(&frozen), ["Ana", "Hola Ana, usa ANA20", "20%"]);
        assert!(frozen.body.iter().all(|p| p.name.is_none()));
    }

    #[test]
    fn named_rendering_keeps_object_order() {
        let t = spec(
            r#"{"name":"promo","language":"en","parameter_format":"named",
                "body":{"zeta":"{{amount}}","customer_name":"{{name}}","alpha":"x"}}"#,
        );
        let frozen = t
            .compile()
            .unwrap()
            .freeze(&record(&[("name", "Ana"), ("amount", "10")]), &phone())
            .unwrap();
        let names: Vec<_> = frozen
            .body
            .iter()
            .map(|p| p.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["zeta", "customer_name", "alpha"]);
        assert_eq!(texts(&frozen), ["10", "Ana", "x"]);
        // Serialising the spec keeps the order too.
        let json = serde_json::to_string(&t.body).unwrap();
        assert_eq!(
            json,
            r#"{"zeta":"{{amount}}","customer_name":"{{name}}","alpha":"x"}"#
        );
    }

    #[test]
    fn contact_fields_are_the_fallback() {
        let t = spec(
            r#"{"name":"p","language":"en","body":["{{name}}","{{phone}}","{{contact.name}}"]}"#,
        );
        let compiled = t.compile().unwrap();
        // No variables.name: contact.name fills {{name}}.
        let frozen = compiled.freeze(&record(&[]), &phone()).unwrap();
        assert_eq!(texts(&frozen), ["María", "+5215512345678", "María"]);
        // variables.name wins over contact.name, but not for {{contact.name}}.
        let frozen = compiled
            .freeze(&record(&[("name", "Mari")]), &phone())
            .unwrap();
        assert_eq!(texts(&frozen), ["Mari", "+5215512345678", "María"]);
        // A blank variable falls back as if absent.
        let frozen = compiled
            .freeze(&record(&[("name", "  ")]), &phone())
            .unwrap();
        assert_eq!(texts(&frozen)[0], "María");
    }

    #[test]
    fn missing_variable_names_the_variable() {
        let t = spec(
            r#"{"name":"p","language":"en","body":["{{name}}","Code {{coupon}}"],
                        "buttons":[{"sub_type":"url","index":0,"params":["{{slug}}"]}]}"#,
        );
        let compiled = t.compile().unwrap();
        assert_eq!(
            compiled.freeze(&record(&[]), &phone()).unwrap_err(),
            MissingVariable("coupon".into())
        );
        assert_eq!(
            compiled
                .freeze(&record(&[("coupon", "")]), &phone())
                .unwrap_err(),
            MissingVariable("coupon".into())
        );
        assert_eq!(
            compiled
                .freeze(&record(&[("coupon", "X")]), &phone())
                .unwrap_err(),
            MissingVariable("slug".into())
        );
        let mut no_name = record(&[("coupon", "X"), ("slug", "s")]);
        no_name.name = None;
        assert_eq!(
            compiled.freeze(&no_name, &phone()).unwrap_err().to_string(),
            "template variable name has no value"
        );
        let explicit = spec(r#"{"name":"p","language":"en","body":["{{variables.name}}"]}"#);
        assert_eq!(
            explicit.freeze(&record(&[]), &phone()).unwrap_err(),
            MissingVariable("variables.name".into())
        );
    }

    #[test]
    fn currency_and_date_time_params() {
        let t = spec(
            r#"{"name":"p","language":"es_MX","body":[
                {"type":"currency","fallback_value":"$10","code":"MXN","amount_1000":"{{amount_1000}}"},
                {"type":"date_time","fallback_value":"{{due_date}}"},
                {"type":"currency","fallback_value":"$5","code":"USD","amount_1000":5000},
                {"type":"text","text":"{{name}}"}]}"#,
        );
        let compiled = t.compile().unwrap();
        let frozen = compiled
            .freeze(
                &record(&[("amount_1000", "10000"), ("due_date", "22 nov 2026")]),
                &phone(),
            )
            .unwrap();
        assert_eq!(
            frozen
                .body
                .iter()
                .map(|p| p.kind.clone())
                .collect::<Vec<_>>(),
            [
                ParamKind::Currency {
                    fallback_value: "$10".into(),
                    code: "MXN".into(),
                    amount_1000: 10000
                },
                ParamKind::DateTime {
                    fallback_value: "22 nov 2026".into()
                },
                ParamKind::Currency {
                    fallback_value: "$5".into(),
                    code: "USD".into(),
                    amount_1000: 5000
                },
                ParamKind::Text("María".into()),
            ]
        );
        // A non-integer amount cannot fill the template.
        assert_eq!(
            compiled
                .freeze(
                    &record(&[("amount_1000", "ten"), ("due_date", "x")]),
                    &phone()
                )
                .unwrap_err(),
            MissingVariable("amount_1000".into())
        );
        assert_eq!(compiled.variables(), ["amount_1000", "due_date", "name"]);
    }

    #[test]
    fn unknown_parameter_type_is_a_shape_error() {
        let err = serde_json::from_str::<TemplateSpec>(
            r#"{"name":"p","language":"en","body":[{"type":"image","link":"x"}]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "template parameter type \"image\" is not one of text, currency, date_time"
            ),
            "{err}"
        );
    }

    #[test]
    fn header_and_buttons_freeze() {
        let t = spec(
            r#"{"name":"p","language":"en",
                "header":{"type":"document","link":"https://cdn.example/{{invoice}}.pdf","filename":"{{invoice}}.pdf"},
                "buttons":[{"sub_type":"url","index":0,"params":["{{coupon}}"]},
                           {"sub_type":"quick_reply","index":1,"params":["stop"]}]}"#,
        );
        let compiled = t.compile().unwrap();
        let frozen = compiled
            .freeze(
                &record(&[("invoice", "F-1"), ("coupon", "ANA20")]),
                &phone(),
            )
            .unwrap();
        assert_eq!(
            frozen.header,
            Some(FrozenHeader {
                kind: HeaderType::Document,
                media_id: None,
                link: Some("https://cdn.example/F-1.pdf".into()),
                filename: Some("F-1.pdf".into()),
                text_params: Vec::new(),
            })
        );
        assert_eq!(
            frozen.buttons,
            [
                FrozenButton {
                    sub_type: ButtonSubType::Url,
                    index: 0,
                    params: vec!["ANA20".into()]
                },
                FrozenButton {
                    sub_type: ButtonSubType::QuickReply,
                    index: 1,
                    params: vec!["stop".into()]
                },
            ]
        );
        assert_eq!(compiled.variables(), ["invoice", "coupon"]);
    }

    #[test]
    fn frozen_params_round_trip_through_json() {
        let t = spec(
            r#"{"name":"p","language":"en","parameter_format":"named",
                "body":{"n":"{{name}}","due":{"type":"date_time","fallback_value":"tomorrow"}},
                "header":{"type":"text","text_params":["{{name}}"]}}"#,
        );
        let frozen = t.freeze(&record(&[]), &phone()).unwrap();
        let json = serde_json::to_string(&frozen).unwrap();
        assert_eq!(serde_json::from_str::<FrozenParams>(&json).unwrap(), frozen);
        assert!(!frozen.is_empty());
        assert!(FrozenParams::default().is_empty());
    }

    #[test]
    fn text_is_cleaned_for_meta() {
        let t = spec(r#"{"name":"p","language":"en","body":["{{address}}"]}"#);
        let frozen = t
            .freeze(
                &record(&[("address", "Calle 1\nCol. Centro\t\tCDMX      MX")]),
                &phone(),
            )
            .unwrap();
        assert_eq!(texts(&frozen), ["Calle 1 Col. Centro  CDMX    MX"]);
    }

    #[test]
    fn compile_reports_every_problem_with_its_field() {
        let t = spec(
            r#"{"name":"","language":"es-MX",
                "body":["{{name}}","Hola {{name","",{"type":"currency","code":"pesos","amount_1000":"1.5"}],
                "header":{"type":"image","media_id":"1","link":"https://x/y.png","text_params":["a"]},
                "buttons":[{"sub_type":"url","index":0,"params":[]},
                           {"sub_type":"copy_code","index":0,"params":["{{}}"]},
                           {"sub_type":"quick_reply","index":12,"params":["a"]}]}"#,
        );
        let problems: Vec<String> = t
            .compile()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "template.name is missing",
                "template.language: \"es-MX\" is not a WhatsApp language code (like es_MX or en)",
                "template.body[1]: \"Hola {{name\" has a {{ without a closing }}",
                "template.body[2] is missing",
                "template.body[3].code: \"pesos\" is not an ISO 4217 currency code (like MXN)",
                "template.body[3].amount_1000: \"1.5\" is not an integer (the amount times 1000)",
                "template.body[3].fallback_value is missing",
                "template.header: give media_id or link, not both",
                "template.header.text_params: only a text header takes text_params, not image",
                "template.buttons[0].params: a url button takes exactly 1 parameter, got 0",
                "template.buttons[1].index: 0 is used by another button",
                "template.buttons[1].params[0]: \"{{}}\" has an empty placeholder",
                "template.buttons[2].index: 12 is above 9, the highest button index",
            ]
        );
    }

    #[test]
    fn body_shape_must_match_parameter_format() {
        let named_body = spec(r#"{"name":"p","language":"en","body":{"a":"{{x}}"}}"#);
        assert_eq!(
            named_body.compile().unwrap_err()[0].to_string(),
            "template.body is an object of named parameters but parameter_format is positional (set \"parameter_format\": \"named\")"
        );
        let bad_names = spec(
            r#"{"name":"p","language":"en","parameter_format":"named","body":{"Customer":"x","a":"y","a":"z"}}"#,
        );
        let problems: Vec<String> = bad_names
            .compile()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            problems,
            [
                "template.body.Customer: parameter name \"Customer\" may contain only lowercase letters, digits and '_'",
                "template.body.a is given twice",
            ]
        );
    }

    #[test]
    fn media_header_needs_a_source() {
        let t = spec(r#"{"name":"p","language":"en","header":{"type":"video"}}"#);
        assert_eq!(
            t.compile().unwrap_err()[0].to_string(),
            "template.header: a video header needs media_id or link"
        );
        let t = spec(r#"{"name":"p","language":"en","header":{"type":"image","link":"ftp://x"}}"#);
        assert_eq!(
            t.compile().unwrap_err()[0].to_string(),
            "template.header.link: \"ftp://x\" is not an http(s) URL"
        );
    }

    #[test]
    fn language_codes() {
        for ok in ["en", "es_MX", "pt_BR", "zh_HK", "fil"] {
            assert!(is_language_code(ok), "{ok}");
        }
        for bad in ["es-MX", "ES", "e", "english", "es_"] {
            assert!(!is_language_code(bad), "{bad}");
        }
    }
}
