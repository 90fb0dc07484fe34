//! Expressions: text with `{{var}}` placeholders, parsed once, and their
//! value for one contact.

use std::fmt;

use thiserror::Error;

use super::super::contact::{ContactKey, ContactValues};

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
    /// `{{tags.x}}`: the contact's valued tag `x`.
    Tag(String),
}

impl VarRef {
    /// The name as written between the braces (and as reported when missing).
    pub fn name(&self) -> String {
        match self {
            VarRef::Auto(n) => n.clone(),
            VarRef::Variable(n) => format!("variables.{n}"),
            VarRef::Contact(f) => format!("contact.{}", f.as_str()),
            VarRef::Tag(n) => format!("tags.{n}"),
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
            VarRef::Tag(n) => record.tags.get(n).map(String::as_str),
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
    if let Some(tag) = name.strip_prefix("tags.") {
        return if valid(tag) {
            Ok(VarRef::Tag(tag.to_string()))
        } else {
            Err(invalid())
        };
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
