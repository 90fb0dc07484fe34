//! The HTTP client for `POST {base}/sms/2/text/advanced` and what its
//! answer means for the contact.
//!
//! Like WhatsApp, the SMS API has no idempotency key, so [`SmsResult`]
//! keeps the same four outcomes apart, with the same transport rule (a
//! failure while connecting is "not sent"; anything after the request may
//! have been written is "unknown"; docs/ARCHITECTURE.md, "Error classes"):
//!
//! - 200 with the message's status in the `PENDING` or `DELIVERED` group
//!   and its `messageId`: accepted.
//! - 200 with the message in the `REJECTED` or `UNDELIVERABLE` group: final
//!   for this contact (the provider refused it; nothing was sent).
//! - 400: final for this contact (the request is wrong for it).
//! - 401, 403, 404 or a redirect: the key or the base URL is wrong for every
//!   message: the SMS sender halts.
//! - 429: throttled, not sent; 503 and 408: not processed, retried.
//! - 500, 502, 504, or a 200 without a message id: the message may have
//!   been taken: unknown, settled by its delivery report.
//!
//! The key is sent as `Authorization: App <key>`, marked sensitive and
//! never printed.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{redirect, Url};

use super::payload::{ErrorBody, Group, SendResponse};
use crate::domain::ErrorClass;
use crate::whatsapp::client::{
    error_chain, excerpt, read_limited, Body, MAX_RESPONSE_BYTES, POOL_IDLE_TIMEOUT,
};

/// How to reach the SMS API.
#[derive(Clone)]
pub struct SmsSettings {
    /// Scheme and host of the account's API, e.g. `https://xyz.api.example`
    /// (or the sandbox's). A trailing '/' is ignored.
    pub base_url: String,
    /// The API key, sent as `Authorization: App <key>`.
    pub api_key: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl fmt::Debug for SmsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsSettings")
            .field("base_url", &self.base_url)
            .field("api_key", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Settings that cannot make a client.
#[derive(Debug, thiserror::Error)]
pub enum SmsClientError {
    #[error("sms client: base url \"{0}\" is not an http or https url (set sms.api_base_url to your account's API address)")]
    BaseUrl(String),
    #[error("sms client: the api key is empty or has characters an http header cannot carry (set WADISPATCH_SMS_API_KEY)")]
    Key,
    #[error("sms client: connect timeout {connect:?} must be above zero and shorter than the request timeout {request:?}")]
    Timeouts {
        connect: Duration,
        request: Duration,
    },
    #[error("sms client: {0}")]
    Build(reqwest::Error),
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq)]
pub enum SmsResult {
    /// Taken: the id its delivery report will carry.
    Accepted { message_id: String },
    /// Refused; nothing was sent. `code` is the provider's status id or the
    /// HTTP status.
    Rejected {
        class: ErrorClass,
        code: Option<i64>,
        message: String,
    },
    /// Never left: safe to send again.
    NotSent { reason: String },
    /// May have been sent: never resent automatically.
    Unknown { reason: String },
}

impl SmsResult {
    pub fn label(&self) -> &'static str {
        match self {
            SmsResult::Accepted { .. } => "accepted",
            SmsResult::Rejected { .. } => "rejected",
            SmsResult::NotSent { .. } => "not_sent",
            SmsResult::Unknown { .. } => "unknown",
        }
    }
}

/// An SMS API client: one connection pool shared by every clone.
#[derive(Clone)]
pub struct SmsClient {
    http: reqwest::Client,
    url: Arc<str>,
    auth: HeaderValue,
    request_timeout: Duration,
}

impl fmt::Debug for SmsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsClient")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl SmsClient {
    pub fn new(settings: SmsSettings) -> Result<SmsClient, SmsClientError> {
        let base = settings.base_url.trim().trim_end_matches('/');
        let parsed = Url::parse(base).map_err(|_| SmsClientError::BaseUrl(base.into()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
        {
            return Err(SmsClientError::BaseUrl(base.into()));
        }
        let (connect, request) = (settings.connect_timeout, settings.request_timeout);
        if connect.is_zero() || connect >= request {
            return Err(SmsClientError::Timeouts { connect, request });
        }
        let key = settings.api_key.trim();
        if key.is_empty() {
            return Err(SmsClientError::Key);
        }
        let mut auth =
            HeaderValue::from_str(&format!("App {key}")).map_err(|_| SmsClientError::Key)?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(connect)
            .timeout(request)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .redirect(redirect::Policy::none())
            .user_agent(concat!("wadispatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SmsClientError::Build)?;
        Ok(SmsClient {
            http,
            url: Arc::from(format!("{base}/sms/2/text/advanced")),
            auth,
            request_timeout: request,
        })
    }

    /// Sends a body made by [`super::payload::request_bytes`].
    pub async fn send(&self, body: Bytes) -> SmsResult {
        let request = self
            .http
            .post(&*self.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(AUTHORIZATION, self.auth.clone())
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_connect() || e.is_builder() => {
                return SmsResult::NotSent {
                    reason: format!("connection not established: {}", error_chain(&e)),
                }
            }
            Err(e) if e.is_timeout() => {
                return SmsResult::Unknown {
                    reason: format!(
                        "no answer within the request timeout of {:?}: {}",
                        self.request_timeout,
                        error_chain(&e)
                    ),
                }
            }
            Err(e) => {
                return SmsResult::Unknown {
                    reason: format!(
                        "request failed after the connection was established: {}",
                        error_chain(&e)
                    ),
                }
            }
        };
        let status = response.status().as_u16();
        match read_limited(response, MAX_RESPONSE_BYTES).await {
            Ok(body) => interpret(status, &body),
            Err(e) if status == 200 => SmsResult::Unknown {
                reason: format!("http 200, body lost: {}", error_chain(&e)),
            },
            Err(e) => interpret(
                status,
                &Body {
                    bytes: error_chain(&e).into_bytes(),
                    truncated: true,
                },
            ),
        }
    }
}

/// What a refusal in the answer says: most are about the destination
/// (final for the contact), but some are about the account or the sender id
/// (every message would be refused alike: the sender halts) or passing
/// (retried). Told apart by the status name, as the provider's status
/// tables name them (README, "SMS channel").
fn rejection_class(status: &super::payload::Status) -> ErrorClass {
    let name = status
        .name
        .as_deref()
        .unwrap_or_default()
        .to_ascii_uppercase();
    if ["NOT_ENOUGH_CREDITS", "REJECTED_SENDER", "REJECTED_SOURCE"]
        .iter()
        .any(|n| name.contains(n))
    {
        ErrorClass::Sender
    } else if ["FLOODING", "SYSTEM_ERROR"]
        .iter()
        .any(|n| name.contains(n))
    {
        ErrorClass::Transient
    } else {
        ErrorClass::Contact
    }
}

/// What an answer means, given its status and (bounded) body.
fn interpret(status: u16, body: &Body) -> SmsResult {
    if (200..300).contains(&status) {
        let parsed: Option<SendResponse> = (!body.truncated)
            .then(|| serde_json::from_slice(&body.bytes).ok())
            .flatten();
        let Some(message) = parsed.and_then(|r| r.messages.into_iter().next()) else {
            return SmsResult::Unknown {
                reason: format!(
                    "http {status} without a message: {}",
                    excerpt(&body.bytes, body.truncated)
                ),
            };
        };
        let answer = message.status.unwrap_or_default();
        return match (answer.group(), message.message_id) {
            (Group::Rejected | Group::Undeliverable | Group::Expired, _) => SmsResult::Rejected {
                class: rejection_class(&answer),
                code: answer.id,
                message: answer.text(),
            },
            (_, Some(message_id)) if !message_id.is_empty() => SmsResult::Accepted { message_id },
            _ => SmsResult::Unknown {
                reason: format!("http {status} without a message id: {}", answer.text()),
            },
        };
    }
    let detail = ErrorBody::parse(&body.bytes)
        .map(|e| match e.code {
            Some(code) => format!("{code}: {}", e.text),
            None => e.text,
        })
        .unwrap_or_else(|| excerpt(&body.bytes, body.truncated));
    let message = format!("http {status}: {detail}");
    let class = match status {
        500 | 502 | 504 => return SmsResult::Unknown { reason: message },
        300..=399 | 401 | 403 | 404 => ErrorClass::Sender,
        429 => ErrorClass::Throttled,
        408 | 503 => ErrorClass::Transient,
        _ => ErrorClass::Data,
    };
    SmsResult::Rejected {
        class,
        code: Some(i64::from(status)),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> Body {
        Body {
            bytes: s.as_bytes().to_vec(),
            truncated: false,
        }
    }

    #[test]
    fn answers_are_classified() {
        let ok = r#"{"bulkId":"b","messages":[{"to":"52155","messageId":"m-1",
            "status":{"groupId":1,"groupName":"PENDING","id":26,"name":"PENDING_ACCEPTED"}}]}"#;
        assert_eq!(
            interpret(200, &body(ok)),
            SmsResult::Accepted {
                message_id: "m-1".into()
            }
        );
        let rejected = r#"{"messages":[{"to":"52155","messageId":"m-2",
            "status":{"groupId":5,"groupName":"REJECTED","id":52,"name":"REJECTED_DESTINATION"}}]}"#;
        assert_eq!(
            interpret(200, &body(rejected)),
            SmsResult::Rejected {
                class: ErrorClass::Contact,
                code: Some(52),
                message: "REJECTED_DESTINATION".into()
            }
        );
        assert!(matches!(
            interpret(200, &body(r#"{"messages":[]}"#)),
            SmsResult::Unknown { .. }
        ));
        // Refusals about the account or the sender id halt it; passing ones
        // are retried.
        let refused = |name: &str| {
            let answer = format!(
                r#"{{"messages":[{{"messageId":"m","status":{{"groupId":5,"groupName":"REJECTED","name":"{name}"}}}}]}}"#
            );
            match interpret(200, &body(&answer)) {
                SmsResult::Rejected { class, .. } => class,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(refused("REJECTED_NOT_ENOUGH_CREDITS"), ErrorClass::Sender);
        assert_eq!(refused("REJECTED_SENDER"), ErrorClass::Sender);
        assert_eq!(refused("REJECTED_FLOODING_FILTER"), ErrorClass::Transient);
        assert_eq!(refused("REJECTED_DESTINATION"), ErrorClass::Contact);
        let unauthorized = r#"{"requestError":{"serviceException":{"messageId":"UNAUTHORIZED","text":"Invalid login details"}}}"#;
        assert_eq!(
            interpret(401, &body(unauthorized)),
            SmsResult::Rejected {
                class: ErrorClass::Sender,
                code: Some(401),
                message: "http 401: UNAUTHORIZED: Invalid login details".into()
            }
        );
        let class = |status| match interpret(status, &body("")) {
            SmsResult::Rejected { class, .. } => Some(class),
            _ => None,
        };
        assert_eq!(class(429), Some(ErrorClass::Throttled));
        assert_eq!(class(503), Some(ErrorClass::Transient));
        assert_eq!(class(400), Some(ErrorClass::Data));
        assert_eq!(class(404), Some(ErrorClass::Sender));
        for maybe_taken in [500, 502, 504] {
            assert_eq!(class(maybe_taken), None, "{maybe_taken}");
        }
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let settings = |base: &str, key: &str| SmsSettings {
            base_url: base.into(),
            api_key: key.into(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
        };
        assert!(matches!(
            SmsClient::new(settings("ftp://x", "k")),
            Err(SmsClientError::BaseUrl(_))
        ));
        assert!(matches!(
            SmsClient::new(settings("http://127.0.0.1:1", " ")),
            Err(SmsClientError::Key)
        ));
        let client = SmsClient::new(settings("http://127.0.0.1:1/", "secret")).unwrap();
        assert_eq!(&*client.url, "http://127.0.0.1:1/sms/2/text/advanced");
        assert!(!format!("{client:?}").contains("secret"));
        assert!(!format!("{:?}", settings("http://x", "secret")).contains("secret"));
    }
}
