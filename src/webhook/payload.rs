//! Lenient model of Meta's webhook envelope: unknown fields are ignored,
//! every field we read is optional, so a new Meta field or a partial payload
//! never fails the whole request; a status or message that does not parse
//! (a wrongly typed field) is rejected alone, the rest of the POST applies.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// One item of a list that parsed, or why it did not.
#[derive(Debug)]
pub enum Lenient<T> {
    Ok(T),
    Bad(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Ok(match serde_json::from_value(value) {
            Ok(t) => Lenient::Ok(t),
            Err(e) => Lenient::Bad(e.to_string()),
        })
    }
}

#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub object: Option<String>,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
pub struct Entry {
    /// When Meta emitted the entry (unix seconds): orders template and
    /// account updates, which carry no time of their own.
    pub time: Option<serde_json::Value>,
    #[serde(default)]
    pub changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
pub struct Change {
    pub field: Option<String>,
    #[serde(default)]
    pub value: ChangeValue,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChangeValue {
    #[serde(default)]
    pub statuses: Vec<Lenient<Status>>,
    #[serde(default)]
    pub messages: Vec<Lenient<Inbound>>,
    #[serde(default)]
    pub user_preferences: Vec<Lenient<UserPreference>>,
    /// Who the change is about: `{profile: {name, username}, wa_id,
    /// user_id}` (on messages, and on sent, delivered and read statuses);
    /// `wa_id` is absent when Meta may not share the phone.
    #[serde(default)]
    pub contacts: Vec<Lenient<WebhookContact>>,
    /// `user_id_update` (Meta's first documented form of a user id change;
    /// since August 2026 a `system` message `user_changed_user_id`).
    #[serde(default)]
    pub user_id_update: Vec<Lenient<UserIdUpdate>>,
    pub metadata: Option<Metadata>,
    // `message_template_status_update` and `message_template_quality_update`
    // (every field optional: a change of another field leaves them unset).
    /// The template's new status (`APPROVED`, `PAUSED`, `DISABLED`, …).
    pub event: Option<String>,
    pub message_template_name: Option<String>,
    pub message_template_language: Option<String>,
    /// Why (`NONE`, `INCORRECT_CATEGORY`, …).
    pub reason: Option<String>,
    /// On pauses: `{"title": "FIRST_PAUSE", "description": "..."}`.
    pub other_info: Option<OtherInfo>,
    pub new_quality_score: Option<String>,
    // `business_capability_update` and `phone_number_quality_update`: the
    // messaging limit, a number (-1 unlimited) or a tier (`TIER_2K`).
    pub max_daily_conversations_per_business: Option<serde_json::Value>,
    /// Before October 2025 the limit was per number (still sent by some).
    pub max_daily_conversation_per_phone: Option<serde_json::Value>,
    pub current_limit: Option<serde_json::Value>,
    pub display_phone_number: Option<String>,
}

/// A `contacts[]` entry of a messages webhook.
#[derive(Debug, Deserialize)]
pub struct WebhookContact {
    pub wa_id: Option<String>,
    /// The business-scoped user id (BSUID).
    pub user_id: Option<String>,
}

/// A `user_id_update` entry: the user's id before and after.
#[derive(Debug, Deserialize)]
pub struct UserIdUpdate {
    pub wa_id: Option<String>,
    pub user_id: Option<IdChange>,
}

/// `{previous, current}` of a changed id.
#[derive(Debug, Deserialize)]
pub struct IdChange {
    pub previous: Option<String>,
    pub current: Option<String>,
}

/// A system message (`type: system`): for `user_changed_user_id`, the
/// user's new id (`user_id`) and the one it replaces (`previous_user_id`).
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct System {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct OtherInfo {
    pub title: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    /// The business number the change is about (the one that received a
    /// customer's message).
    pub phone_number_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Status {
    pub id: Option<String>,
    pub status: Option<String>,
    pub timestamp: Option<serde_json::Value>,
    /// The recipient's phone digits; absent when the message went to a
    /// user id and Meta may not share the phone.
    pub recipient_id: Option<String>,
    /// The recipient's business-scoped user id (absent on a failed status
    /// of a message sent to a phone).
    pub recipient_user_id: Option<String>,
    pub biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    pub errors: Vec<WaError>,
    /// What Meta charges for the message (on `sent` and `delivered`).
    pub pricing: Option<StatusPricing>,
}

/// A status's `pricing` object: `{billable, pricing_model, category,
/// type}` (the per-message model since July 2025).
#[derive(Debug, Deserialize)]
pub struct StatusPricing {
    pub billable: Option<bool>,
    pub pricing_model: Option<String>,
    pub category: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

impl StatusPricing {
    pub fn pricing(&self) -> Option<crate::domain::Pricing> {
        crate::domain::Pricing::from_status(
            self.category.as_deref(),
            self.billable,
            self.pricing_model.as_deref(),
            self.kind.as_deref(),
        )
    }
}

#[derive(Debug, Deserialize)]
pub struct WaError {
    pub code: Option<i64>,
    pub title: Option<String>,
    pub message: Option<String>,
    pub error_data: Option<ErrorData>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorData {
    pub details: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Inbound {
    /// The sender's phone digits; absent for a user Meta knows by user id
    /// (username) only.
    pub from: Option<String>,
    /// The sender's business-scoped user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_user_id: Option<String>,
    pub id: Option<String>,
    pub timestamp: Option<serde_json::Value>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub text: Option<Text>,
    pub button: Option<Button>,
    pub interactive: Option<Interactive>,
    pub context: Option<Context>,
    pub image: Option<Media>,
    pub video: Option<Media>,
    pub audio: Option<Media>,
    pub document: Option<Media>,
    pub sticker: Option<Media>,
    pub location: Option<Location>,
    pub reaction: Option<Reaction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    /// Not Meta's: the business number that received the message (the
    /// change's `metadata.phone_number_id`), kept here so that a reply
    /// parked for its `context.id` still names it when it is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_by: Option<String>,
}

/// An image, video, audio, document or sticker the customer sent: the media
/// id to download it with (`GET /{media_id}`), its type and caption.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct Media {
    pub id: Option<String>,
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Documents only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// Audio only: a voice note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<bool>,
}

/// A location the customer shared.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct Location {
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A reaction to a business message (no `emoji`: the reaction was removed).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct Reaction {
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Text {
    pub body: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Button {
    pub payload: Option<String>,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Interactive {
    /// `button_reply`, `list_reply` or `nfm_reply` (a Flow's answer).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub button_reply: Option<Reply>,
    pub list_reply: Option<Reply>,
    pub nfm_reply: Option<FlowReply>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Reply {
    pub id: Option<String>,
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The answer of a WhatsApp Flow: `response_json` is a JSON document in a
/// string (the flow's fields and its `flow_token`).
#[derive(Debug, Deserialize, serde::Serialize)]
pub struct FlowReply {
    pub name: Option<String>,
    pub body: Option<String>,
    pub response_json: Option<String>,
}

/// What a reply carries beyond its text, for the agent (`wa.events`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ReplyContent {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interactive: Option<InteractiveReply>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reaction: Option<Reaction>,
    /// The sender's business-scoped user id, when the webhook gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// A tap on a reply button or a list row, or a Flow's answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InteractiveReply {
    /// `button_reply`, `list_reply` or `nfm_reply`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A Flow's answer, parsed (its `response_json`), when it parses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
pub struct Context {
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct UserPreference {
    pub wa_id: Option<String>,
    /// A user known by user id only (assumed to be named like the other
    /// webhooks' `user_id`).
    pub user_id: Option<String>,
    pub category: Option<String>,
    pub value: Option<String>,
    pub timestamp: Option<serde_json::Value>,
}

/// How far ahead of our clock an event time may be (clock skew).
const MAX_FUTURE_SECS: i64 = 24 * 3600;

/// The event time of a status or message: unix seconds, which Meta sends
/// as a string (sometimes a number). Absent means now. A value that is not
/// a whole number of seconds, is out of the calendar's range or lies more
/// than a day ahead of `now` is an error: that item is rejected, never the
/// process (chrono panics on arithmetic past its range).
pub fn parse_timestamp(
    raw: Option<&serde_json::Value>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    let secs = match raw {
        None | Some(serde_json::Value::Null) => return Ok(now),
        Some(serde_json::Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(_) => None,
    };
    let Some(secs) = secs else {
        return Err(format!(
            "timestamp {} is not unix seconds",
            raw.map(|v| v.to_string()).unwrap_or_default()
        ));
    };
    let at = Utc
        .timestamp_opt(secs, 0)
        .single()
        .ok_or_else(|| format!("timestamp {secs} is out of range"))?;
    match now.checked_add_signed(Duration::seconds(MAX_FUTURE_SECS)) {
        Some(limit) if at > limit => Err(format!(
            "timestamp {secs} ({at}) is more than a day in the future"
        )),
        _ => Ok(at),
    }
}

impl Inbound {
    /// (kind, text, payload) of the message, for the reply event: the text,
    /// a button's text and payload, an interactive reply's title and id, a
    /// media's caption, a location's name (else its address), a reaction's
    /// emoji, a Flow's body.
    pub fn content(&self) -> (String, Option<String>, Option<String>) {
        let kind = self.kind.clone().unwrap_or_else(|| "unknown".into());
        if let Some(t) = &self.text {
            return (kind, t.body.clone(), None);
        }
        if let Some(b) = &self.button {
            return (kind, b.text.clone(), b.payload.clone());
        }
        if let Some(i) = &self.interactive {
            if let Some(r) = i.button_reply.as_ref().or(i.list_reply.as_ref()) {
                return (kind, r.title.clone(), r.id.clone());
            }
            if let Some(f) = &i.nfm_reply {
                return (kind, f.body.clone(), None);
            }
        }
        if let Some(m) = self.media() {
            return (kind, m.caption.clone(), None);
        }
        if let Some(l) = &self.location {
            return (kind, l.name.clone().or_else(|| l.address.clone()), None);
        }
        if let Some(r) = &self.reaction {
            return (kind, r.emoji.clone(), None);
        }
        (kind, None, None)
    }

    fn media(&self) -> Option<&Media> {
        self.image
            .as_ref()
            .or(self.video.as_ref())
            .or(self.audio.as_ref())
            .or(self.document.as_ref())
            .or(self.sticker.as_ref())
    }

    /// What the reply carries beyond its text: the media to download, the
    /// location, the interactive answer (a Flow's `response_json` parsed),
    /// the reaction.
    pub fn details(&self) -> ReplyContent {
        let interactive = self.interactive.as_ref().and_then(|i| {
            let kind = i.kind.clone();
            if let Some(r) = i.button_reply.as_ref().or(i.list_reply.as_ref()) {
                let kind = kind.unwrap_or_else(|| {
                    if i.button_reply.is_some() {
                        "button_reply"
                    } else {
                        "list_reply"
                    }
                    .into()
                });
                return Some(InteractiveReply {
                    kind,
                    id: r.id.clone(),
                    title: r.title.clone(),
                    description: r.description.clone(),
                    response: None,
                });
            }
            let f = i.nfm_reply.as_ref()?;
            Some(InteractiveReply {
                kind: kind.unwrap_or_else(|| "nfm_reply".into()),
                id: f.name.clone(),
                title: f.body.clone(),
                description: None,
                response: f
                    .response_json
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok()),
            })
        });
        ReplyContent {
            media: self.media().cloned(),
            location: self.location.clone(),
            interactive,
            reaction: self.reaction.clone(),
            user_id: self.from_user_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_and_missing_parts_parse() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[
            {"field":"messages","value":{"messaging_product":"whatsapp","new_meta_field":{"x":1},
             "statuses":[{"id":"wamid.A","status":"delivered","timestamp":"1790000000","recipient_id":"525512345678",
                          "pricing":{"billable":true}}]}},
            {"field":"account_update","value":{"event":"X"}}]}]}"#;
        let env: Envelope = serde_json::from_str(body).unwrap();
        let statuses = &env.entry[0].changes[0].value.statuses;
        let Lenient::Ok(status) = &statuses[0] else {
            panic!("{:?}", statuses[0]);
        };
        assert_eq!(status.status.as_deref(), Some("delivered"));
        let now = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
        assert_eq!(
            parse_timestamp(status.timestamp.as_ref(), now)
                .unwrap()
                .timestamp(),
            1_790_000_000
        );
        assert!(env.entry[0].changes[1].value.statuses.is_empty());
    }

    #[test]
    fn a_badly_typed_status_is_rejected_alone() {
        let body = r#"{"object":"whatsapp_business_account","entry":[{"changes":[{"value":{"statuses":[
            {"id":"wamid.A","status":"sent","timestamp":"1790000000"},
            {"id":"wamid.B","status":"sent","errors":[{"code":"131026"}]},
            {"id":"wamid.C","status":"sent","timestamp":1790000001}]}}]}]}"#;
        let env: Envelope = serde_json::from_str(body).unwrap();
        let s = &env.entry[0].changes[0].value.statuses;
        assert!(matches!(s[0], Lenient::Ok(_)));
        assert!(
            matches!(&s[1], Lenient::Bad(e) if e.contains("invalid type")),
            "{:?}",
            s[1]
        );
        assert!(
            matches!(s[2], Lenient::Ok(_)),
            "a numeric timestamp is read too"
        );
    }

    #[test]
    fn absurd_timestamps_are_errors_not_panics() {
        let now = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
        let v = |s: &str| serde_json::Value::String(s.into());
        assert_eq!(parse_timestamp(None, now), Ok(now));
        assert!(parse_timestamp(Some(&v("8210266876799")), now)
            .unwrap_err()
            .contains("future"));
        assert!(parse_timestamp(Some(&v("9223372036854775807")), now)
            .unwrap_err()
            .contains("out of range"));
        assert!(parse_timestamp(Some(&v("soon")), now).is_err());
        assert!(parse_timestamp(Some(&serde_json::json!(1.5)), now).is_err());
        assert!(parse_timestamp(Some(&serde_json::json!(-1)), now).is_ok());
    }

    /// Shapes from Meta's messages webhook references (image, document,
    /// location, interactive list and Flow replies, reaction).
    #[test]
    fn media_locations_flows_and_reactions_carry_their_details() {
        let m: Inbound = serde_json::from_str(
            r#"{"from":"16505551234","id":"wamid.1","timestamp":"1749416383","type":"image",
                "image":{"caption":"Taj Mahal","mime_type":"image/jpeg","sha256":"SfIn=","id":"1003383421387256"}}"#,
        )
        .unwrap();
        assert_eq!(
            m.content(),
            ("image".into(), Some("Taj Mahal".into()), None)
        );
        let media = m.details().media.unwrap();
        assert_eq!(media.id.as_deref(), Some("1003383421387256"));
        assert_eq!(media.mime_type.as_deref(), Some("image/jpeg"));
        let m: Inbound = serde_json::from_str(
            r#"{"from":"1","id":"x","type":"document","document":{"caption":"my receipt","filename":"receipt.pdf","mime_type":"application/pdf","id":"622684793477189"}}"#,
        )
        .unwrap();
        assert_eq!(
            m.details().media.unwrap().filename.as_deref(),
            Some("receipt.pdf")
        );
        let m: Inbound = serde_json::from_str(
            r#"{"from":"1","id":"x","type":"location","location":{"address":"101 Forest Ave, Palo Alto, CA 94301","latitude":37.44221496582,"longitude":-122.16165924072,"name":"Philz Coffee"}}"#,
        )
        .unwrap();
        assert_eq!(m.content().1.as_deref(), Some("Philz Coffee"));
        let l = m.details().location.unwrap();
        assert!((l.latitude.unwrap() - 37.442_214_965_82).abs() < 1e-9);
        let m: Inbound = serde_json::from_str(
            r#"{"from":"1","id":"x","type":"interactive","interactive":{"type":"list_reply",
                "list_reply":{"id":"priority_express","title":"Priority Mail Express","description":"Next Day to 2 Days"}}}"#,
        )
        .unwrap();
        let i = m.details().interactive.unwrap();
        assert_eq!(
            (i.kind.as_str(), i.id.as_deref(), i.description.as_deref()),
            (
                "list_reply",
                Some("priority_express"),
                Some("Next Day to 2 Days")
            )
        );
        let m: Inbound = serde_json::from_str(
            r#"{"from":"1","id":"x","type":"interactive","interactive":{"type":"nfm_reply",
                "nfm_reply":{"name":"flow","body":"Sent","response_json":"{\"flow_token\": \"T1\", \"amount\": \"500\"}"}}}"#,
        )
        .unwrap();
        let i = m.details().interactive.unwrap();
        assert_eq!(i.kind, "nfm_reply");
        assert_eq!(i.response.unwrap()["flow_token"], "T1");
        let m: Inbound = serde_json::from_str(
            r#"{"from":"1","id":"x","type":"reaction","reaction":{"message_id":"wamid.B","emoji":"👍"}}"#,
        )
        .unwrap();
        assert_eq!(m.content().1.as_deref(), Some("👍"));
        assert_eq!(
            m.details().reaction.unwrap().message_id.as_deref(),
            Some("wamid.B")
        );
        let text: Inbound =
            serde_json::from_str(r#"{"from":"1","id":"x","type":"text","text":{"body":"hola"}}"#)
                .unwrap();
        assert_eq!(text.details(), ReplyContent::default());
    }

    #[test]
    fn button_and_interactive_replies_have_content() {
        let m: Inbound = serde_json::from_str(
            r#"{"from":"1","id":"x","type":"button","button":{"payload":"PAID","text":"Ya pagué"}}"#,
        )
        .unwrap();
        assert_eq!(
            m.content(),
            (
                "button".into(),
                Some("Ya pagué".into()),
                Some("PAID".into())
            )
        );
        let m: Inbound = serde_json::from_str(
            r#"{"from":"1","id":"x","type":"interactive","interactive":{"button_reply":{"id":"b1","title":"Sí"}}}"#,
        )
        .unwrap();
        assert_eq!(
            m.content(),
            ("interactive".into(), Some("Sí".into()), Some("b1".into()))
        );
    }
}
