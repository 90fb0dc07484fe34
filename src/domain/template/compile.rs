//! Compiling a template spec once per campaign (every problem reported
//! at once), and freezing one contact's parameters with the result.

use super::super::contact::{ContactKey, ContactValues};
use super::super::problem::SpecProblem;
use super::expr::*;
use super::frozen::*;
use super::spec::*;

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
pub(super) fn is_language_code(code: &str) -> bool {
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
