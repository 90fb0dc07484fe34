//! WhatsApp Cloud API simulator: the product's dry-run/demo/load-test target
//! and the test double of every test and benchmark.
//!
//! Stand-alone on purpose (it depends on nothing else in the crate), so what
//! it does is what Meta does, not what the daemon expects.
//!
//! Layout:
//! - `rules`: pure rules: request validation, error catalogue, failure
//!   rules, the pair-rate GCRA, the seeded outcome draw.
//! - `stats`: counters and ledgers, sharded for the hot path.
//! - `webhooks`: timelines of status/reply webhooks, batching, signing,
//!   bounded retries.
//! - `server`: actix-web handlers and the thread that hosts them.
//! - `templates`: template statuses and their webhooks; `account`: the
//!   messaging limit's webhooks.
//!
//! Behaviour, with the Meta facts behind it:
//! - `POST /{version}/{phone_number_id}/messages` with `Authorization: Bearer`
//!   (else HTTP 401, code 190, no `error_data`, as Graph answers token errors)
//!   takes a template message and answers `{"messaging_product","contacts":
//!   [{"input","wa_id"}],"messages":[{"id":"wamid.…","message_status":
//!   "accepted"}]}`. `wa_id` is the digits of `to`. Errors use the Graph body
//!   `{"error":{"message":"(#code) title","type":"OAuthException","code",
//!   "error_data":{"messaging_product":"whatsapp","details"},"fbtrace_id"}}`
//!   with HTTP 400 (401 for 190, 500 for 131000, 503 for 2).
//! - Throughput: Meta allows 80 messages/s per business number by default
//!   (up to 1,000 after an upgrade) and answers error 130429 "Rate limit hit"
//!   with HTTP 400 above it.
//! - Pair rate: one message per 6 s from a business number to one user, with
//!   bursts of up to 45 that borrow from future quota; error 131056 above it.
//! - Undeliverable numbers (131026), the marketing engagement limit (131049),
//!   marketing opt-outs (131050) and experiment holdouts (130472) are
//!   reported by Meta as a `failed` status webhook with `errors[]` after the
//!   API call succeeded, so the sandbox's default failure rules do the same.
//! - Statuses go sent → delivered → read; when a message is read in the open
//!   chat Meta skips `delivered` and sends only `read`.
//! - Webhooks are signed with `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of
//!   the raw body keyed by the app secret>`. Meta retries failed deliveries
//!   with backoff for up to 7 days and asks receivers to absorb 3x the send
//!   rate in statuses plus the inbound traffic.
//!
//! Control endpoints: `GET /sandbox/stats` ([`SandboxStats`] as JSON),
//! `GET /sandbox/recipients/{to}` (`{"recipient","messages"}`),
//! `POST /sandbox/reset`, `POST /sandbox/templates` (`{"name","language",
//! "event"}` or `{…,"quality"}`: Meta changes a template's status or score
//! and posts the webhook; see `templates`), `POST /sandbox/limits`
//! (`{"limit"}`: Meta states the messaging limit; see `account`).

mod account;
mod rules;
mod server;
mod sms;
mod stats;
mod templates;
#[cfg(test)]
mod tests;
mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use sms::{SmsFate, SmsRule, SmsStats};
pub use stats::SandboxStats;

/// Settings of a sandbox (the `[sandbox]` table of the config file, or the
/// `wadispatch sandbox` command).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Address the simulated Graph API listens on; port 0 picks a free port.
    /// Default `127.0.0.1:8089`.
    pub listen: SocketAddr,
    /// HTTP worker threads. Default 2 (the development machine has 2 cores
    /// and shares them with the daemon).
    pub workers: usize,
    /// Graph version the path must carry (e.g. `"v21.0"`); unset accepts any
    /// `v<major>.<minor>`. Other paths answer code 2500. Default unset.
    pub api_version: Option<String>,
    /// Bearer token the API requires; unset accepts any non-empty token.
    /// Default unset.
    pub access_token: Option<String>,
    /// phone_number_ids that exist; others answer code 100 (subcode 33).
    /// Empty accepts any. Default empty.
    pub phone_number_ids: Vec<String>,
    /// `metadata.display_phone_number` of webhooks and `context.from` of
    /// replies. Default `"15550000000"`.
    pub display_phone_number: String,
    /// WhatsApp Business Account id in webhook `entry[].id`.
    /// Default `"100000000000000"`.
    pub waba_id: String,
    /// Throughput per phone_number_id, messages per second; above it the API
    /// answers HTTP 400 with code 130429. 0 disables the limit. Default 80
    /// (Meta's default throughput).
    pub per_number_mps: f64,
    /// Messages a number may send at once before `per_number_mps` applies.
    /// Meta does not publish a burst; its meter is "per second", so the
    /// default admits one second's worth: max(1, ceil(per_number_mps)).
    pub per_number_burst: Option<u32>,
    /// Pair rate interval, seconds per message from one number to one
    /// recipient; refused messages get code 131056. 0 disables the limit.
    /// Default 6 (Meta: 1 message / 6 s per recipient).
    pub pair_interval_secs: f64,
    /// Messages a number may send to one recipient in a burst, borrowing from
    /// future intervals. Default 45 (Meta allows bursts of up to 45, after
    /// which each message waits its 6 s). Set 1 to refuse any second message
    /// within the interval.
    pub pair_burst: u32,
    /// Latency added to every API answer, milliseconds. Applied after the
    /// request took effect, so a client timeout leaves an accepted message
    /// (an "unknown" outcome). Default 0.
    pub latency_ms: u64,
    /// Extra latency, uniform in `0..=latency_jitter_ms` milliseconds.
    /// Default 0.
    pub latency_jitter_ms: u64,
    /// Share of API requests answered 500 (code 131000) or 503 (code 2)
    /// before anything else happens, 0 to 1. Default 0.
    pub http_5xx_share: f64,
    /// Recipients whose digits end in `suffix` fail with `code`, first match
    /// wins. Default: 13 → 131026, 49 → 131049, 50 → 131050, 72 → 130472,
    /// all reported as `failed` status webhooks, as Meta does.
    pub failure_rules: Vec<FailureRule>,
    /// Known templates by name. Empty accepts any template; otherwise an
    /// unknown name answers 132001, a paused one 132015 and a body parameter
    /// count that differs answers 132000. Default empty.
    pub templates: HashMap<String, TemplateSpec>,
    /// Meta's pricing category of each template by name, reported in the
    /// `pricing` object of its statuses. A template not listed is priced as
    /// `marketing`. Default empty.
    pub categories: HashMap<String, PricingCategory>,
    /// The account finished onboarding to the Marketing Messages API: its
    /// `/marketing_messages` sends go through it (priced `marketing_lite`).
    /// Without it they fall back to Cloud API (priced `marketing`), or answer
    /// 134102 with `product_policy: STRICT`. Default true.
    pub marketing_messages_onboarded: bool,
    /// Give every phone recipient a business-scoped user id too (`ZZ.` and
    /// 20 digits made from the phone), reported beside the phone in
    /// statuses (`recipient_user_id`) and replies (`from_user_id`,
    /// `contacts[].user_id`), as Meta does since 2026. A message sent to a
    /// user id (`recipient`) always reports the user id and no phone.
    /// Default false.
    pub phone_user_ids: bool,
    /// Where status and reply webhooks are POSTed; unset sends none.
    /// Default unset.
    pub webhook_url: Option<String>,
    /// App secret that signs webhooks (`X-Hub-Signature-256`).
    /// Default `"sandbox-app-secret"`.
    pub app_secret: String,
    /// Share of delivered recipients that reply, 0 to 1. Default 0.1.
    pub reply_share: f64,
    /// Share of delivered messages that are read, 0 to 1. A reply always
    /// implies a read. Default 0.6.
    pub read_share: f64,
    /// Share of read messages reported `read` without `delivered`, 0 to 1.
    /// Default 0.05.
    pub read_without_delivered_share: f64,
    /// Share of replies that are the text "STOP", 0 to 1. Default 0.01.
    pub stop_share: f64,
    /// Share of the other replies that are quick-reply button taps (type
    /// `button`, echoing the request's quick-reply payload), 0 to 1; the rest
    /// are free text. Default 0.3.
    pub button_share: f64,
    /// Delay between acceptance and the first webhook and between a
    /// message's successive webhooks, milliseconds. Default 20.
    pub status_delay_ms: u64,
    /// Most events (statuses and replies) per webhook POST. Default 50.
    pub webhook_batch_max: usize,
    /// How often partial batches are sent, milliseconds. Default 10.
    pub webhook_flush_ms: u64,
    /// Webhook POSTs in flight at once; a recipient always uses the same
    /// lane, so its events arrive in order. Default 4.
    pub webhook_lanes: usize,
    /// Accepted messages whose webhooks may wait at once; beyond it their
    /// events are dropped and counted, never blocking the API. Default 65536.
    pub webhook_queue_capacity: usize,
    /// Attempts per webhook POST (non-2xx or connection error retries).
    /// Default 5.
    pub webhook_max_attempts: u32,
    /// First retry delay, doubled at each retry, milliseconds. Default 100
    /// (5 attempts span about 1.5 s plus request time).
    pub webhook_retry_base_ms: u64,
    /// Timeout of one webhook POST, milliseconds. Default 2000.
    pub webhook_timeout_ms: u64,
    /// Seed of every random choice (outcomes, 5xx, jitter). Outcomes are
    /// drawn per (seed, recipient, how many messages that recipient got), so
    /// runs with the same seed and traffic agree. Default 0x5EED.
    pub seed: u64,
    /// The SMS API key (`Authorization: App <key>`); unset accepts any
    /// non-empty key. Default unset.
    pub sms_api_key: Option<String>,
    /// SMS per sender id (`from`) per second; above it the SMS API answers
    /// 429. 0 disables the limit. Default 20.
    pub sms_per_sender_mps: f64,
    /// SMS destinations whose digits end in `suffix` are rejected in the
    /// answer or reported undeliverable; the others are delivered, each
    /// reported to the message's `notifyUrl` after `status_delay_ms`.
    /// Default: 77 → rejected, 78 → undeliverable.
    pub sms_rules: Vec<SmsRule>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8089)),
            workers: 2,
            api_version: None,
            access_token: None,
            phone_number_ids: Vec::new(),
            display_phone_number: "15550000000".into(),
            waba_id: "100000000000000".into(),
            per_number_mps: 80.0,
            per_number_burst: None,
            pair_interval_secs: 6.0,
            pair_burst: 45,
            latency_ms: 0,
            latency_jitter_ms: 0,
            http_5xx_share: 0.0,
            failure_rules: FailureRule::meta_defaults(),
            templates: HashMap::new(),
            categories: HashMap::new(),
            marketing_messages_onboarded: true,
            phone_user_ids: false,
            webhook_url: None,
            app_secret: "sandbox-app-secret".into(),
            reply_share: 0.1,
            read_share: 0.6,
            read_without_delivered_share: 0.05,
            stop_share: 0.01,
            button_share: 0.3,
            status_delay_ms: 20,
            webhook_batch_max: 50,
            webhook_flush_ms: 10,
            webhook_lanes: 4,
            webhook_queue_capacity: 65_536,
            webhook_max_attempts: 5,
            webhook_retry_base_ms: 100,
            webhook_timeout_ms: 2_000,
            seed: 0x5EED,
            sms_api_key: None,
            sms_per_sender_mps: 20.0,
            sms_rules: SmsRule::defaults(),
        }
    }
}

/// The slowest and fastest rates the sandbox's limits take (per second).
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1_000_000.0;

impl SandboxConfig {
    /// Refuse settings that cannot mean anything.
    fn validate(&self) -> std::io::Result<()> {
        let invalid = |msg: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, msg));
        for (name, share) in [
            ("http_5xx_share", self.http_5xx_share),
            ("reply_share", self.reply_share),
            ("read_share", self.read_share),
            (
                "read_without_delivered_share",
                self.read_without_delivered_share,
            ),
            ("stop_share", self.stop_share),
            ("button_share", self.button_share),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return invalid(format!(
                    "sandbox: {name} is {share}, it must be within 0 to 1"
                ));
            }
        }
        for (name, v, min, max) in [
            ("per_number_mps", self.per_number_mps, MIN_RATE, MAX_RATE),
            (
                "pair_interval_secs",
                self.pair_interval_secs,
                0.001,
                86_400.0,
            ),
            (
                "sms_per_sender_mps",
                self.sms_per_sender_mps,
                MIN_RATE,
                MAX_RATE,
            ),
        ] {
            // 0 turns the limit off; otherwise the value must give a period
            // a clock can count.
            if !v.is_finite() || v < 0.0 || (v > 0.0 && !(min..=max).contains(&v)) {
                return invalid(format!(
                    "sandbox: {name} is {v:?}, it must be 0 (no limit) or from {min} to {max}"
                ));
            }
        }
        for rule in &self.failure_rules {
            if rule.suffix.is_empty() || !rule.suffix.bytes().all(|b| b.is_ascii_digit()) {
                return invalid(format!(
                    "sandbox: failure rule suffix {:?} must be digits",
                    rule.suffix
                ));
            }
            if rule.code <= 0 {
                return invalid(format!(
                    "sandbox: failure rule {:?} has code {}",
                    rule.suffix, rule.code
                ));
            }
        }
        for rule in &self.sms_rules {
            if rule.suffix.is_empty() || !rule.suffix.bytes().all(|b| b.is_ascii_digit()) {
                return invalid(format!(
                    "sandbox: sms rule suffix {:?} must be digits",
                    rule.suffix
                ));
            }
        }
        if let Some(url) = &self.webhook_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid(format!(
                    "sandbox: webhook_url {url:?} is not an http(s) URL"
                ));
            }
        }
        Ok(())
    }
}

/// Recipients whose number ends in `suffix` fail with `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRule {
    /// Trailing digits of the recipient's number.
    pub suffix: String,
    /// WhatsApp error code.
    pub code: i64,
    /// Where the failure shows: a `failed` status webhook after a successful
    /// API call (`webhook`, the default), or the API answer itself (`api`).
    #[serde(default)]
    pub stage: FailureStage,
}

impl FailureRule {
    /// The default mix: codes Meta reports as failed statuses.
    pub fn meta_defaults() -> Vec<Self> {
        [
            ("13", 131_026),
            ("49", 131_049),
            ("50", 131_050),
            ("72", 130_472),
        ]
        .into_iter()
        .map(|(suffix, code)| Self {
            suffix: suffix.into(),
            code,
            stage: FailureStage::Webhook,
        })
        .collect()
    }
}

/// Where a failure rule's error shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureStage {
    /// Accepted by the API, then a `failed` status webhook with `errors[]`.
    #[default]
    Webhook,
    /// Refused by the API with the Graph error body.
    Api,
}

/// The pricing category Meta bills a template's messages under (the
/// template's category).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PricingCategory {
    #[default]
    Marketing,
    /// A marketing template sent through the Marketing Messages API.
    MarketingLite,
    Utility,
    Authentication,
}

impl PricingCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            PricingCategory::Marketing => "marketing",
            PricingCategory::MarketingLite => "marketing_lite",
            PricingCategory::Utility => "utility",
            PricingCategory::Authentication => "authentication",
        }
    }
}

/// What the sandbox knows of an approved template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Body parameters (`{{1}}` … `{{n}}`) the template expects.
    pub body_params: usize,
    /// A paused template answers 132015. Default false.
    #[serde(default)]
    pub paused: bool,
}

/// The simulator.
pub struct Sandbox;

impl Sandbox {
    /// Bind and serve on a thread of the sandbox's own; returns once it
    /// listens. Works from any tokio runtime, including an actix `System`.
    pub async fn start(config: SandboxConfig) -> std::io::Result<SandboxHandle> {
        let running = server::start(config).await?;
        Ok(SandboxHandle {
            addr: running.addr,
            server: running.server,
            shared: running.shared,
            done: Some(running.done),
        })
    }
}

/// A running sandbox. Dropping it without [`SandboxHandle::stop`] still
/// stops the server, without waiting.
pub struct SandboxHandle {
    addr: SocketAddr,
    server: actix_web::dev::ServerHandle,
    shared: std::sync::Arc<server::Shared>,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl SandboxHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`: the Graph base URL to give the client.
    pub fn base_url(&self) -> String {
        let host = if self.addr.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            self.addr.ip()
        };
        format!("http://{}", SocketAddr::new(host, self.addr.port()))
    }

    /// The counters, as `GET /sandbox/stats` serves them.
    pub fn stats(&self) -> SandboxStats {
        self.shared.snapshot()
    }

    /// The settings this sandbox runs with.
    pub fn config(&self) -> &SandboxConfig {
        &self.shared.config
    }

    /// Stop serving (in-flight requests finish, within 1 s) and end the
    /// sandbox thread. Webhooks not yet delivered are dropped.
    pub async fn stop(mut self) {
        self.server.stop(true).await;
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if self.done.is_some() {
            // Sends the stop command now; the returned future only waits.
            drop(self.server.stop(false));
        }
    }
}

/// Run a sandbox until SIGINT or SIGTERM (the `wadispatch sandbox` command).
pub fn run_blocking(config: SandboxConfig) -> std::io::Result<()> {
    run_blocking_with(config, |_| {})
}

/// [`run_blocking`], calling `listening` with the base URL once the
/// settings were checked and the listener is bound (with its real port when
/// the config asked for port 0).
pub fn run_blocking_with(
    config: SandboxConfig,
    listening: impl FnOnce(&str),
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let sandbox = Sandbox::start(config).await?;
        listening(&sandbox.base_url());
        tracing::info!(url = %sandbox.base_url(), "whatsapp sandbox listening");
        shutdown_signal().await?;
        tracing::info!("whatsapp sandbox stopping");
        sandbox.stop().await;
        Ok(())
    })
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
