//! A journey as the upstream writes it: the `steps` of a campaign spec.

use serde::{Deserialize, Serialize};

use crate::domain::template::TemplateSpec;

/// Steps of one journey, the primary message included.
pub const MAX_STEPS: usize = 10;

/// The longest wait a step may name: 90 days.
pub const MAX_DELAY_SECS: u64 = 90 * 86_400;

/// The longest step id: it is a metric label value.
pub const MAX_STEP_ID_LEN: usize = 32;

/// The id of the first step of a spec written without `steps`.
pub const PRIMARY_STEP: &str = "primary";

/// How a step reaches the contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// A WhatsApp template through the Cloud API.
    #[default]
    Whatsapp,
    /// A text message through the SMS provider.
    Sms,
}

impl Channel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Whatsapp => "whatsapp",
            Channel::Sms => "sms",
        }
    }
}

/// What the earlier step must have done for a step to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum On {
    /// The earlier step failed for good, or the contact is known not to be
    /// on WhatsApp: the fallback.
    Failed,
    /// `delay` after the earlier step was sent, unless the contact replied
    /// to the campaign in the meantime: the follow-up.
    NoReply,
    /// `delay` after the earlier step was sent (drip).
    Sent,
    /// `delay` after the earlier step was delivered (drip).
    Delivered,
    /// `delay` after the earlier step was read (drip).
    Read,
}

impl On {
    pub const ALL: [On; 5] = [On::Failed, On::NoReply, On::Sent, On::Delivered, On::Read];

    pub fn as_str(&self) -> &'static str {
        match self {
            On::Failed => "failed",
            On::NoReply => "no_reply",
            On::Sent => "sent",
            On::Delivered => "delivered",
            On::Read => "read",
        }
    }
}

/// When a later step starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct When {
    /// The id of the step it follows.
    #[serde(default)]
    pub after: String,
    /// What that step must have done.
    pub on: On,
    /// How long after that (`30s`, `20m`, `3h`, `2d`, `1d12h`); none means
    /// at once. Required for `no_reply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
}

/// One step of a journey as the spec writes it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepSpec {
    /// `[a-z0-9_-]{1,32}`, unique in the journey: reports, metrics and
    /// events name the step by it.
    #[serde(default)]
    pub id: String,
    /// `whatsapp` (default) or `sms`.
    #[serde(default)]
    pub channel: Channel,
    /// The template of a `whatsapp` step. The first step's may be given
    /// here or as the spec's `template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateSpec>,
    /// The text of an `sms` step, in the template expression language
    /// (`Hola {{name}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// When the step starts; absent on the first step only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<When>,
}

/// Parses a delay: one or more `<number><unit>` with units `s`, `m`, `h`,
/// `d` (`90m`, `1d12h`). Answers seconds, or what is wrong.
pub fn parse_delay(raw: &str) -> Result<u64, String> {
    let text = raw.trim();
    if text.is_empty() {
        return Err("is empty; write it like 30s, 20m, 3h or 2d".into());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            _ => {
                return Err(format!(
                    "\"{raw}\": '{c}' is not a unit; use s, m, h or d (like 3d or 1d12h)"
                ))
            }
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("\"{raw}\": a unit needs a number before it (like 3d)"))?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("\"{raw}\" is too long"))?;
    }
    if !number.is_empty() {
        return Err(format!(
            "\"{raw}\": {number} has no unit; write {number}s, {number}m, {number}h or {number}d"
        ));
    }
    Ok(total)
}

/// True for `[a-z0-9_-]{1,32}`.
pub fn is_step_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STEP_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
