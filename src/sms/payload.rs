//! The provider's JSON: the send request of `POST /sms/2/text/advanced`,
//! its answer, error bodies and the delivery reports posted to the
//! `notifyUrl` (README, "SMS channel", says which document each shape was
//! read from).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{ContactKey, DispatchState};
use crate::store::StatusUpdate;
use crate::whatsapp::payload::parse_callback_data;

/// The body of one message to one destination.
#[derive(Debug, Serialize)]
struct SendRequest<'a> {
    messages: [Message<'a>; 1],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    from: &'a str,
    destinations: [Destination<'a>; 1],
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notify_content_type: Option<&'static str>,
    callback_data: &'a str,
}

#[derive(Debug, Serialize)]
struct Destination<'a> {
    to: &'a str,
}

/// One SMS to send.
#[derive(Debug, Clone, Copy)]
pub struct SmsMessage<'a> {
    /// The sender id (`from`): an alphanumeric id or a number.
    pub from: &'a str,
    /// The destination in international form, digits only (no '+').
    pub to: &'a str,
    pub text: &'a str,
    /// Where the provider posts the delivery report.
    pub notify_url: Option<&'a str>,
    /// Returned untouched in the report: `<campaign>/<step>|<contact>`.
    pub callback_data: &'a str,
}

/// The request body of `message`.
pub fn request_bytes(message: &SmsMessage<'_>) -> Bytes {
    let body = SendRequest {
        messages: [Message {
            from: message.from,
            destinations: [Destination { to: message.to }],
            text: message.text,
            notify_url: message.notify_url,
            notify_content_type: message.notify_url.map(|_| "application/json"),
            callback_data: message.callback_data,
        }],
    };
    // Plain strings always serialise.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// The destination of a contact: its phone's digits, or `None` for a
/// contact known by a user id only (no SMS can reach it).
pub fn destination(contact: &ContactKey) -> Option<String> {
    let digits: String = contact
        .as_str()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    (contact.as_str().starts_with('+') && (8..=15).contains(&digits.len())).then_some(digits)
}

/// A message's status, in a send answer or a delivery report.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub group_id: Option<i64>,
    #[serde(default)]
    pub group_name: Option<String>,
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// The status groups: what a status means whatever its detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Pending,
    Undeliverable,
    Delivered,
    Expired,
    Rejected,
    Other,
}

impl Status {
    /// The group, by its id (1 to 5), else by its name in any case.
    pub fn group(&self) -> Group {
        match self.group_id {
            Some(1) => return Group::Pending,
            Some(2) => return Group::Undeliverable,
            Some(3) => return Group::Delivered,
            Some(4) => return Group::Expired,
            Some(5) => return Group::Rejected,
            _ => {}
        }
        match self
            .group_name
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            Some("PENDING") => Group::Pending,
            Some("UNDELIVERABLE") => Group::Undeliverable,
            Some("DELIVERED") => Group::Delivered,
            Some("EXPIRED") => Group::Expired,
            Some("REJECTED") => Group::Rejected,
            _ => Group::Other,
        }
    }

    /// `NAME: description`, for a report.
    pub fn text(&self) -> String {
        match (&self.name, &self.description) {
            (Some(n), Some(d)) => format!("{n}: {d}"),
            (Some(n), None) => n.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => "no status detail".into(),
        }
    }
}

/// The answer to a send.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendResponse {
    #[serde(default)]
    pub bulk_id: Option<String>,
    #[serde(default)]
    pub messages: Vec<SentMessage>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SentMessage {
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub status: Option<Status>,
}

/// What an error answer says: the older `requestError.serviceException`
/// shape or the newer `errorCode`/`description` one.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorBody {
    /// `BAD_REQUEST`, `UNAUTHORIZED`, `E429`, …
    pub code: Option<String>,
    pub text: String,
}

impl ErrorBody {
    pub fn parse(body: &[u8]) -> Option<ErrorBody> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let string = |v: &serde_json::Value| v.as_str().map(str::to_string);
        if let Some(e) = v.pointer("/requestError/serviceException") {
            return Some(ErrorBody {
                code: e.get("messageId").and_then(string),
                text: e.get("text").and_then(string).unwrap_or_default(),
            });
        }
        let code = v.get("errorCode").and_then(string);
        let text = v.get("description").and_then(string);
        (code.is_some() || text.is_some()).then(|| ErrorBody {
            code,
            text: text.unwrap_or_default(),
        })
    }
}

/// A batch of delivery reports.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Reports {
    #[serde(default)]
    pub results: Vec<Report>,
}

/// The final (or, when asked for, intermediate) status of one message.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub done_at: Option<String>,
    #[serde(default)]
    pub callback_data: Option<String>,
    #[serde(default)]
    pub status: Option<Status>,
    #[serde(default)]
    pub error: Option<ReportError>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportError {
    #[serde(default)]
    pub group_name: Option<String>,
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub permanent: Option<bool>,
}

/// A report as the store applies it: the row it names and its status.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportUpdate {
    pub campaign: String,
    pub contact: ContactKey,
    pub update: StatusUpdate,
}

/// The provider's time format (`2019-11-09T16:00:00.000+0000`), or RFC 3339.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl Report {
    /// The status update of this report, or why it names no row of ours
    /// (no callback data of ours, no message id, a status we do not act
    /// on).
    pub fn update(&self, received: DateTime<Utc>) -> Result<ReportUpdate, &'static str> {
        let (campaign, contact) = self
            .callback_data
            .as_deref()
            .and_then(parse_callback_data)
            .ok_or("callback data not ours")?;
        let message_id = self.message_id.clone().ok_or("no message id")?;
        let status = self.status.clone().unwrap_or_default();
        let at = self
            .done_at
            .as_deref()
            .and_then(parse_time)
            .unwrap_or(received);
        let mut update = StatusUpdate {
            state: DispatchState::Delivered,
            at,
            wamid: Some(message_id),
            error_code: None,
            error_class: None,
            error_message: None,
            defer_until: None,
            deferral: None,
            pricing: None,
        };
        match status.group() {
            Group::Delivered => {}
            // An intermediate report: on its way.
            Group::Pending => update.state = DispatchState::Sent,
            Group::Undeliverable | Group::Expired | Group::Rejected => {
                update.state = DispatchState::Failed;
                let error = self.error.clone().unwrap_or_default();
                update.error_code = error.id.or(status.id);
                update.error_class = Some("contact".into());
                update.error_message = Some(match error.description.or(error.name) {
                    Some(detail) => format!("{} ({detail})", status.text()),
                    None => status.text(),
                });
            }
            Group::Other => return Err("status group unknown"),
        }
        Ok(ReportUpdate {
            campaign,
            contact,
            update,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_has_the_documented_shape() {
        let body = request_bytes(&SmsMessage {
            from: "InfoSMS",
            to: "5215512345678",
            text: "Hola Ana",
            notify_url: Some("https://hooks.example/sms/reports"),
            callback_data: "c/sms|+5215512345678",
        });
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"messages": [{
                "from": "InfoSMS",
                "destinations": [{"to": "5215512345678"}],
                "text": "Hola Ana",
                "notifyUrl": "https://hooks.example/sms/reports",
                "notifyContentType": "application/json",
                "callbackData": "c/sms|+5215512345678",
            }]})
        );
    }

    #[test]
    fn destinations_are_phone_digits_only() {
        assert_eq!(
            destination(&ContactKey::raw("+5215512345678")).as_deref(),
            Some("5215512345678")
        );
        assert_eq!(destination(&ContactKey::raw("US.1349120865530")), None);
        assert_eq!(destination(&ContactKey::raw("+123")), None);
    }

    #[test]
    fn groups_by_id_or_by_name_in_any_case() {
        let by_id = Status {
            group_id: Some(3),
            ..Status::default()
        };
        assert_eq!(by_id.group(), Group::Delivered);
        let by_name = Status {
            group_name: Some("Rejected".into()),
            ..Status::default()
        };
        assert_eq!(by_name.group(), Group::Rejected);
        assert_eq!(Status::default().group(), Group::Other);
    }

    #[test]
    fn both_error_shapes_are_read() {
        let old = br#"{"requestError":{"serviceException":{"messageId":"UNAUTHORIZED","text":"Invalid login details"}}}"#;
        assert_eq!(
            ErrorBody::parse(old),
            Some(ErrorBody {
                code: Some("UNAUTHORIZED".into()),
                text: "Invalid login details".into()
            })
        );
        let new = br#"{"errorCode":"E429","description":"Too many requests","action":"slow down"}"#;
        assert_eq!(ErrorBody::parse(new).unwrap().code.as_deref(), Some("E429"));
        assert_eq!(ErrorBody::parse(b"<html>"), None);
        assert_eq!(ErrorBody::parse(b"{}"), None);
    }

    #[test]
    fn a_delivery_report_becomes_the_step_status() {
        let body = br#"{"results":[
            {"bulkId":"b","messageId":"m1","to":"5215512345678","sentAt":"2026-12-03T10:00:00.000+0000",
             "doneAt":"2026-12-03T10:00:05.120+0000","smsCount":1,"callbackData":"c/sms|+5215512345678",
             "price":{"pricePerMessage":0.01,"currency":"EUR"},
             "status":{"groupId":3,"groupName":"DELIVERED","id":5,"name":"DELIVERED_TO_HANDSET","description":"Message delivered to handset"},
             "error":{"groupId":0,"groupName":"Ok","id":0,"name":"NO_ERROR","description":"No Error","permanent":false}},
            {"messageId":"m2","callbackData":"c/sms|+5215512345679",
             "status":{"groupId":2,"groupName":"UNDELIVERABLE","id":9,"name":"UNDELIVERABLE_NOT_DELIVERED"},
             "error":{"groupId":1,"groupName":"HANDSET_ERRORS","id":27,"name":"EC_ABSENT_SUBSCRIBER","description":"Absent Subscriber","permanent":false}},
            {"messageId":"m3","callbackData":"someone else's"}
        ]}"#;
        let reports: Reports = serde_json::from_slice(body).unwrap();
        let now = Utc::now();
        let delivered = reports.results[0].update(now).unwrap();
        assert_eq!(delivered.campaign, "c");
        assert_eq!(delivered.contact, ContactKey::raw("+5215512345678"));
        assert_eq!(delivered.update.state, DispatchState::Delivered);
        assert_eq!(delivered.update.wamid.as_deref(), Some("m1"));
        assert_eq!(
            delivered.update.at,
            parse_time("2026-12-03T10:00:05.120Z").unwrap()
        );
        let failed = reports.results[1].update(now).unwrap().update;
        assert_eq!(failed.state, DispatchState::Failed);
        assert_eq!(failed.error_code, Some(27));
        assert_eq!(
            failed.error_message.as_deref(),
            Some("UNDELIVERABLE_NOT_DELIVERED (Absent Subscriber)")
        );
        assert_eq!(failed.at, now, "no doneAt: the time it was received");
        assert_eq!(
            reports.results[2].update(now),
            Err("callback data not ours")
        );
    }
}
