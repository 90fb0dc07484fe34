//! Lenient model of Meta's webhook envelope: unknown fields are ignored,
//! every field we read is optional, so a new Meta field or a partial payload
//! never fails the whole request.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub object: Option<String>,
    #[serde(default)]
    pub entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
pub struct Entry {
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
    pub statuses: Vec<Status>,
    #[serde(default)]
    pub messages: Vec<Inbound>,
    #[serde(default)]
    pub user_preferences: Vec<UserPreference>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize)]
pub struct Metadata {
    pub phone_number_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Status {
    pub id: Option<String>,
    pub status: Option<String>,
    pub timestamp: Option<String>,
    pub recipient_id: Option<String>,
    pub biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    pub errors: Vec<WaError>,
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

#[derive(Debug, Deserialize)]
pub struct Inbound {
    pub from: Option<String>,
    pub id: Option<String>,
    pub timestamp: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub text: Option<Text>,
    pub button: Option<Button>,
    pub interactive: Option<Interactive>,
    pub context: Option<Context>,
}

#[derive(Debug, Deserialize)]
pub struct Text {
    pub body: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Button {
    pub payload: Option<String>,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Interactive {
    pub button_reply: Option<Reply>,
    pub list_reply: Option<Reply>,
}

#[derive(Debug, Deserialize)]
pub struct Reply {
    pub id: Option<String>,
    pub title: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Context {
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct UserPreference {
    pub wa_id: Option<String>,
    pub category: Option<String>,
    pub value: Option<String>,
    pub timestamp: Option<serde_json::Value>,
}

/// Meta sends unix seconds as a string (sometimes a number); fall back to now.
pub fn parse_timestamp(raw: Option<&str>) -> DateTime<Utc> {
    raw.and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
        .unwrap_or_else(Utc::now)
}

impl Inbound {
    /// (kind, text, payload) of the message, for the reply event.
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
        }
        (kind, None, None)
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
        assert_eq!(statuses[0].status.as_deref(), Some("delivered"));
        assert_eq!(
            parse_timestamp(statuses[0].timestamp.as_deref()).timestamp(),
            1_790_000_000
        );
        assert!(env.entry[0].changes[1].value.statuses.is_empty());
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
