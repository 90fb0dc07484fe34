//! The HTTP client for `POST {base}/{version}/{phone_number_id}/messages`
//! and what its outcome means for the contact.
//!
//! WhatsApp has no idempotency key: a message whose request reached Meta
//! may have been sent even when no answer came back, and sending it again
//! would reach the customer twice. So [`SendResult`] keeps four outcomes
//! apart (docs/ARCHITECTURE.md, "Error classes"):
//!
//! - [`SendResult::Accepted`]: 2xx with `messages[0].id` (the wamid).
//! - [`SendResult::Rejected`]: Meta (or something in front of it) answered
//!   with an error; the [`ErrorClass`] says what dispatch does next.
//! - [`SendResult::NotSent`]: the request provably never left, safe to
//!   retry.
//! - [`SendResult::Unknown`]: it may have been sent; never resent
//!   automatically, settled by a later status webhook.
//!
//! # Telling "not sent" from "unknown" with reqwest
//!
//! reqwest reports every transport failure as one error type; its
//! `is_connect()` is true when the failure happened while the connection
//! was being set up: DNS resolution, TCP connect (refused, unreachable),
//! the TLS handshake, a proxy CONNECT, or the connect timeout
//! (`connect_timeout` wraps all of these). No byte of the request is
//! written before a connection exists, so those are [`SendResult::NotSent`].
//! Everything else (the request timeout firing after the connection was up,
//! a reset or close while writing or waiting for the response, a broken
//! response body) may have happened after Meta read the request, so it is
//! [`SendResult::Unknown`].
//!
//! Limits of that split, and what covers them:
//!
//! - A pooled keep-alive connection that turns out to be dead. hyper
//!   retries a request on a fresh connection, whatever its method, only
//!   when the pooled connection failed before any of the request was
//!   written; reqwest's default retry policy adds HTTP/2 `REFUSED_STREAM`
//!   and `GOAWAY(NO_ERROR)`, which by RFC 9113 §8.7 mean the server did not
//!   process the stream. Those retries are invisible here and safe. Once
//!   writing began, a reset surfaces as a request error that is not
//!   `is_connect()`, and is classified [`SendResult::Unknown`], even if the
//!   server in fact never read it (the kernel accepted our bytes just as
//!   the server closed an idle connection). Idle connections are dropped
//!   after [`POOL_IDLE_TIMEOUT`], before the usual server keep-alive, to
//!   keep that race rare.
//! - The request timeout also runs during connect. If it fired first, the
//!   error would not be `is_connect()` and a never-sent request would be
//!   `unknown`; [`WhatsAppClient::new`] therefore requires
//!   `connect_timeout < request_timeout`.
//! - A gateway error (HTTP 502, 504) without a Graph API error body means
//!   an intermediary lost the answer of a request that may have reached
//!   the API: [`SendResult::Unknown`], not a transient error to retry.
//! - Redirects are not followed: a 307/308 would send the same POST a
//!   second time to another address.
//!
//! The access token is sent as `Authorization: Bearer …`, marked sensitive
//! in the HTTP layer, and never printed: neither [`ClientSettings`] nor
//! [`WhatsAppClient`] shows it in `Debug`, and no log line contains it.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{redirect, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::domain::{classify_code, classify_http, describe_code, ErrorClass};

/// How long an idle pooled connection is kept. Below the 5 s keep-alive
/// of actix-web (the sandbox) and of many servers, so that the client
/// retires a connection before the server closes it under a request (see
/// the module docs); at campaign rates connections are never idle this
/// long, and a slower sender pays one handshake per message at worst.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Largest response body read. A send response is a few hundred bytes and
/// a Graph error a few kilobytes; anything bigger is not an answer we can
/// use, and reading it unbounded would let a broken proxy exhaust memory.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Longest excerpt of a non-JSON error body kept in [`ApiError::message`].
const BODY_EXCERPT_CHARS: usize = 200;

/// How to reach the Cloud API.
#[derive(Clone)]
pub struct ClientSettings {
    /// Scheme, host and optional path prefix, e.g. `https://graph.facebook.com`
    /// (or the sandbox's `http://127.0.0.1:8090`). A trailing '/' is ignored.
    pub base_url: String,
    /// Graph API version, one path segment, e.g. `v23.0`.
    pub api_version: String,
    /// Access token sent as `Authorization: Bearer <token>`; `None` sends no
    /// `Authorization` header (the sandbox needs none).
    pub token: Option<String>,
    /// Limit for DNS + TCP connect + TLS handshake. Must be shorter than
    /// `request_timeout`.
    pub connect_timeout: Duration,
    /// Limit for the whole request: connect, write, response and body.
    pub request_timeout: Duration,
    /// Idle keep-alive connections kept per host (HTTP/1.1; an HTTP/2
    /// connection carries all requests at once).
    pub max_idle_per_host: usize,
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("base_url", &self.base_url)
            .field("api_version", &self.api_version)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_idle_per_host", &self.max_idle_per_host)
            .finish()
    }
}

/// Settings that cannot make a client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Not an absolute http(s) URL.
    #[error("whatsapp client: base url \"{0}\" is not an http or https url")]
    BaseUrl(String),
    /// Empty, or more than one path segment.
    #[error("whatsapp client: api version \"{0}\" must be one path segment like v23.0")]
    ApiVersion(String),
    /// The token cannot be sent in an HTTP header. The token itself is
    /// not repeated in the message.
    #[error(
        "whatsapp client: access token is empty or has characters an http header cannot carry"
    )]
    Token,
    /// Zero, or a connect timeout that the request timeout would preempt
    /// (a connect failure would then be reported as `unknown`).
    #[error("whatsapp client: connect timeout {connect:?} must be above zero and shorter than the request timeout {request:?}")]
    Timeouts {
        /// The connect timeout given.
        connect: Duration,
        /// The request timeout given.
        request: Duration,
    },
    /// reqwest refused the configuration (e.g. no TLS backend).
    #[error("whatsapp client: cannot build the http client")]
    Build(#[source] reqwest::Error),
}

/// An error answer: a Graph API error body, or what we know of a response
/// without one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// `error.code`; `None` when the body was not a Graph API error.
    pub code: Option<i64>,
    /// `error.error_subcode`.
    pub subcode: Option<i64>,
    /// `error.error_user_title`.
    pub title: Option<String>,
    /// `error.message`, or a description of the response that had no
    /// Graph API error body.
    pub message: String,
    /// `error.error_data.details` (Meta's most specific explanation), else
    /// `error.error_user_msg`.
    pub details: Option<String>,
    /// `error.fbtrace_id`, for Meta support.
    pub fbtrace_id: Option<String>,
}

impl ApiError {
    /// One line for logs, alerts and reports:
    /// `error 131026 (not a WhatsApp user or not on a supported version): Message undeliverable (details: ...)`.
    pub fn describe(&self) -> String {
        let mut out = match self.code {
            Some(code) => format!("error {code} ({}): {}", describe_code(code), self.message),
            None => self.message.clone(),
        };
        if let Some(subcode) = self.subcode {
            out.push_str(&format!(" [subcode {subcode}]"));
        }
        if let Some(details) = self.details.as_deref().filter(|d| !d.is_empty()) {
            out.push_str(&format!(" (details: {details})"));
        }
        out
    }

    /// Reads `{"error": {...}}`. `None` when the body has no `error` object.
    fn from_body(body: &Value) -> Option<ApiError> {
        let err = body.get("error")?.as_object()?;
        let text = |key: &str| {
            err.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        // Graph sends `error_data` as an object; older responses and some
        // proxies put a plain string there.
        let details = match err.get("error_data") {
            Some(Value::Object(data)) => data
                .get("details")
                .and_then(Value::as_str)
                .map(str::to_string),
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        }
        .or_else(|| text("error_user_msg"));
        Some(ApiError {
            code: integer(err.get("code")),
            subcode: integer(err.get("error_subcode")),
            title: text("error_user_title").or_else(|| text("title")),
            message: text("message").unwrap_or_default(),
            details,
            fbtrace_id: text("fbtrace_id"),
        })
    }

    fn without_body(message: String) -> ApiError {
        ApiError {
            code: None,
            subcode: None,
            title: None,
            message,
            details: None,
            fbtrace_id: None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A JSON integer, or a string of one (some gateways in front of the Cloud
/// API re-encode codes as strings).
fn integer(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The outcome of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendResult {
    /// Meta took the message: `messages[0].id` of a 2xx answer.
    Accepted {
        /// The message id (`wamid.…`) that status webhooks carry.
        wamid: String,
        /// `messages[0].message_status` when present: `accepted`,
        /// `held_for_quality_assessment` or `paused` (marketing pacing).
        message_status: Option<String>,
    },
    /// An error answer. Nothing was sent.
    Rejected {
        /// The HTTP status of the answer.
        http_status: u16,
        /// What the answer said.
        error: ApiError,
        /// What dispatch does next.
        class: ErrorClass,
    },
    /// The request never reached the server (DNS, refused, connect timeout,
    /// TLS handshake, invalid request): safe to send again.
    NotSent {
        /// What failed, for logs.
        reason: String,
    },
    /// The request may have reached the server but no usable answer came
    /// back: must never be resent automatically (`unknown`;
    /// docs/ARCHITECTURE.md, "Error classes").
    Unknown {
        /// What failed, for logs.
        reason: String,
    },
}

impl SendResult {
    /// The error class of a rejection.
    pub fn class(&self) -> Option<ErrorClass> {
        match self {
            SendResult::Rejected { class, .. } => Some(*class),
            _ => None,
        }
    }

    /// A short lowercase name for logs and metric labels: `accepted`,
    /// `rejected`, `not_sent`, `unknown`.
    pub fn label(&self) -> &'static str {
        match self {
            SendResult::Accepted { .. } => "accepted",
            SendResult::Rejected { .. } => "rejected",
            SendResult::NotSent { .. } => "not_sent",
            SendResult::Unknown { .. } => "unknown",
        }
    }
}

/// A Cloud API client: one connection pool shared by every clone.
#[derive(Clone)]
pub struct WhatsAppClient {
    http: reqwest::Client,
    /// `{base_url}/{api_version}`, no trailing '/'.
    base: Arc<str>,
    /// `Bearer <token>`, marked sensitive so the HTTP layer never prints it.
    auth: Option<HeaderValue>,
    request_timeout: Duration,
}

impl fmt::Debug for WhatsAppClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhatsAppClient")
            .field("base", &self.base)
            .field("auth", &self.auth.as_ref().map(|_| "Bearer <redacted>"))
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl WhatsAppClient {
    /// Builds the client: rustls, a keep-alive pool of at most
    /// `max_idle_per_host` idle connections per host, HTTP/2 when the
    /// server offers it through ALPN (HTTP/1.1 otherwise), `TCP_NODELAY`
    /// (a request is one small write; Nagle would hold it back).
    pub fn new(settings: ClientSettings) -> Result<WhatsAppClient, ClientError> {
        let base_url = settings.base_url.trim().trim_end_matches('/');
        let parsed = Url::parse(base_url).map_err(|_| ClientError::BaseUrl(base_url.into()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(ClientError::BaseUrl(base_url.into()));
        }
        let version = settings.api_version.trim();
        if !is_path_segment(version) {
            return Err(ClientError::ApiVersion(settings.api_version.clone()));
        }
        let (connect, request) = (settings.connect_timeout, settings.request_timeout);
        if connect.is_zero() || connect >= request {
            return Err(ClientError::Timeouts { connect, request });
        }
        let auth = match settings.token.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(ClientError::Token),
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| ClientError::Token)?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(connect)
            .timeout(request)
            .pool_max_idle_per_host(settings.max_idle_per_host)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .redirect(redirect::Policy::none())
            .user_agent(concat!("wadispatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Build)?;
        Ok(WhatsAppClient {
            http,
            base: Arc::from(format!("{base_url}/{version}")),
            auth,
            request_timeout: request,
        })
    }

    /// Sends a message body (e.g. from
    /// [`crate::whatsapp::template_message`]) from `phone_number_id`.
    pub async fn send(&self, phone_number_id: &str, body: &Value) -> SendResult {
        match serde_json::to_vec(body) {
            Ok(bytes) => self.send_raw(phone_number_id, Bytes::from(bytes)).await,
            // A Value always serialises; kept total rather than panicking.
            Err(e) => SendResult::NotSent {
                reason: format!("message body cannot be serialised: {e}"),
            },
        }
    }

    /// Sends a pre-serialised JSON body (the hot path: see
    /// [`crate::whatsapp::template_message_bytes`]).
    pub async fn send_raw(&self, phone_number_id: &str, body: Bytes) -> SendResult {
        self.send_to(phone_number_id, crate::domain::Endpoint::Messages, body)
            .await
    }

    /// [`Self::send_raw`] to `endpoint` (`/messages`, or the Marketing
    /// Messages API's `/marketing_messages`, which answers the same shape).
    pub async fn send_to(
        &self,
        phone_number_id: &str,
        endpoint: crate::domain::Endpoint,
        body: Bytes,
    ) -> SendResult {
        // The id becomes a path segment: anything else ('/', '?', '..')
        // would post the message to another endpoint.
        if !is_path_segment(phone_number_id) {
            return SendResult::NotSent {
                reason: format!(
                    "phone_number_id \"{}\" is not a valid id (letters, digits, '_', '-', '.')",
                    phone_number_id.escape_debug()
                ),
            };
        }
        let url = format!("{}/{phone_number_id}/{}", self.base, endpoint.path());
        let mut request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(auth) = &self.auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return self.transport_failure(phone_number_id, &e),
        };
        let status = response.status().as_u16();
        match read_limited(response, MAX_RESPONSE_BYTES).await {
            Ok(body) => interpret(status, &body),
            Err(e) => self.body_failure(phone_number_id, status, &e),
        }
    }

    fn transport_failure(&self, sender: &str, e: &reqwest::Error) -> SendResult {
        let chain = error_chain(e);
        if e.is_connect() || e.is_builder() {
            tracing::debug!(sender, error = %chain, "whatsapp send: not sent");
            SendResult::NotSent {
                reason: format!("connection not established: {chain}"),
            }
        } else {
            tracing::debug!(sender, error = %chain, "whatsapp send: outcome unknown");
            let reason = if e.is_timeout() {
                format!(
                    "no answer within the request timeout of {:?}: {chain}",
                    self.request_timeout
                )
            } else {
                format!("request failed after the connection was established: {chain}")
            };
            SendResult::Unknown { reason }
        }
    }

    /// The status line arrived but the body did not.
    fn body_failure(&self, sender: &str, status: u16, e: &reqwest::Error) -> SendResult {
        let chain = error_chain(e);
        tracing::debug!(sender, status, error = %chain, "whatsapp send: response body lost");
        let message = format!("http {status}, response body could not be read: {chain}");
        match status_fallback(status) {
            // The body of an accepted message holds the wamid; without it
            // the message may have been sent.
            Fallback::Unknown => SendResult::Unknown { reason: message },
            Fallback::Class(class) => SendResult::Rejected {
                http_status: status,
                error: ApiError::without_body(message),
                class,
            },
        }
    }
}

/// What a response means, given its status and (bounded) body.
fn interpret(status: u16, body: &Body) -> SendResult {
    let json: Option<Value> = if body.truncated {
        None
    } else {
        serde_json::from_slice(&body.bytes).ok()
    };
    if (200..300).contains(&status) {
        return match json.as_ref().and_then(accepted_message) {
            Some((wamid, message_status)) => SendResult::Accepted {
                wamid,
                message_status,
            },
            None => SendResult::Unknown {
                reason: format!(
                    "http {status} without messages[0].id: {}",
                    excerpt(&body.bytes, body.truncated)
                ),
            },
        };
    }
    if let Some(error) = json.as_ref().and_then(ApiError::from_body) {
        let class = match (error.code.map(classify_code), classify_http(status)) {
            // An unlisted code lands in Data (final for the contact); when
            // the status says throttled or a fault at Meta, trust that
            // rather than failing a contact for good on a passing fault.
            (Some(ErrorClass::Data), Some(by_status)) => by_status,
            (Some(by_code), _) => by_code,
            (None, _) => match status_fallback(status) {
                Fallback::Class(class) => class,
                // A Graph error body is an answer from the API itself: the
                // request was refused, whatever the status.
                Fallback::Unknown => ErrorClass::Transient,
            },
        };
        return SendResult::Rejected {
            http_status: status,
            error,
            class,
        };
    }
    let message = format!(
        "http {status} without an api error body: {}",
        excerpt(&body.bytes, body.truncated)
    );
    match status_fallback(status) {
        Fallback::Unknown => SendResult::Unknown { reason: message },
        Fallback::Class(class) => SendResult::Rejected {
            http_status: status,
            error: ApiError::without_body(message),
            class,
        },
    }
}

/// `messages[0].id` and `messages[0].message_status` of a send response.
fn accepted_message(body: &Value) -> Option<(String, Option<String>)> {
    let message = body.get("messages")?.get(0)?;
    let wamid = message.get("id")?.as_str().filter(|id| !id.is_empty())?;
    let status = message
        .get("message_status")
        .and_then(Value::as_str)
        .map(str::to_string);
    Some((wamid.to_string(), status))
}

enum Fallback {
    Class(ErrorClass),
    Unknown,
}

/// The meaning of a status without a usable Graph API error body.
fn status_fallback(status: u16) -> Fallback {
    match status {
        // Success without a wamid, or a gateway that lost the API's answer:
        // the message may have been sent.
        200..=299 | 502 | 504 => Fallback::Unknown,
        // Credentials, permissions, or a base URL / version / sender id
        // that points nowhere: every send from this sender fails alike.
        300..=399 | 401 | 403 | 404 => Fallback::Class(ErrorClass::Sender),
        // The server gave up reading the request: it was not processed.
        408 => Fallback::Class(ErrorClass::Transient),
        // 429 throttled, other 5xx a fault at Meta; anything else is final
        // for this contact, as an unlisted error code is.
        _ => Fallback::Class(classify_http(status).unwrap_or(ErrorClass::Data)),
    }
}

/// A response body read up to a limit (shared with the SMS client).
pub(crate) struct Body {
    pub(crate) bytes: Vec<u8>,
    /// More than the limit arrived; `bytes` holds the start.
    pub(crate) truncated: bool,
}

pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> reqwest::Result<Body> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Body {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        bytes,
        truncated: false,
    })
}

/// The start of a body, on one line, for an error message.
pub(crate) fn excerpt(bytes: &[u8], truncated: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(BODY_EXCERPT_CHARS)
        .collect();
    if out.is_empty() {
        out.push_str("(empty body)");
    } else if truncated || text.chars().count() > BODY_EXCERPT_CHARS {
        out.push('…');
    }
    out
}

/// reqwest's Display names only the outermost error ("error sending
/// request"); the cause ("connection refused") is further down the chain.
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A non-empty URL path segment that needs no escaping and cannot climb
/// the path: letters, digits, '_', '-', '.', not "." or "..".
fn is_path_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests;
