//! The HTTP side: the Graph `messages` endpoint, the `/sandbox/*` control
//! endpoints, and the thread that hosts the server and the webhook tasks.
//!
//! The sandbox runs on a thread of its own with its own runtime. actix-web 4
//! serves fine from a plain tokio runtime (no actix `System` needed), but a
//! host that is itself an actix `System` runs on a single-threaded runtime:
//! spawning the webhook dispatcher there would steal the host's thread. A
//! dedicated thread works the same under `#[tokio::test]`, `#[actix_rt::main]`
//! or a plain binary, and `stop` only needs channels, which work across
//! runtimes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::StreamExt;
use serde::Serialize;

use super::rules::{self, code, ApiError, Outcome, PairLimit, Recipient, Shares};
use super::sms::{self, SmsSim};
use super::stats::{number_quota, Stats};
use super::webhooks::{self, MessageInfo, Outbound, WebhookQueue};
use super::SandboxConfig;

/// Largest request body accepted; Graph refuses far smaller template sends
/// long before this.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// State shared by every worker.
pub(crate) struct Shared {
    pub(crate) config: SandboxConfig,
    pub(crate) stats: Arc<Stats>,
    pub(crate) quota: Option<governor::Quota>,
    pair: Option<PairLimit>,
    shares: Shares,
    epoch: Instant,
    nonce: u32,
    wamid_seq: AtomicU64,
    webhooks: Option<WebhookQueue>,
    sms: Arc<SmsSim>,
    /// What Meta says of each template (`POST /sandbox/templates`).
    pub(crate) templates: super::templates::TemplateStates,
}

impl Shared {
    /// Every counter, the SMS API's included.
    pub(crate) fn snapshot(&self) -> super::SandboxStats {
        super::SandboxStats {
            sms: self.sms.stats(),
            ..self.stats.snapshot()
        }
    }
}

/// What a decided request answers.
enum Answer {
    Accepted(AcceptedBody),
    Error(ApiError),
    Unavailable(ApiError),
}

#[derive(Serialize)]
struct AcceptedBody {
    messaging_product: &'static str,
    contacts: [ContactBody; 1],
    messages: [MessageBody; 1],
}

/// `{input, wa_id}` for a phone, `{input, user_id}` for a user id.
#[derive(Serialize)]
struct ContactBody {
    input: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    wa_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
}

#[derive(Serialize)]
struct MessageBody {
    id: String,
    message_status: &'static str,
}

#[derive(Serialize)]
struct GraphErrorBody<'a> {
    error: GraphError<'a>,
}

#[derive(Serialize)]
struct GraphError<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    code: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_subcode: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_transient: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_data: Option<ErrorData<'a>>,
    fbtrace_id: String,
}

#[derive(Serialize)]
struct ErrorData<'a> {
    messaging_product: &'static str,
    details: &'a str,
}

fn graph_error(error: &ApiError, seq: u64) -> HttpResponse {
    let transient = matches!(
        error.code,
        code::SERVICE_UNAVAILABLE | code::SOMETHING_WENT_WRONG
    );
    let body = GraphErrorBody {
        error: GraphError {
            message: format!("(#{}) {}", error.code, rules::title(error.code)),
            kind: "OAuthException",
            code: error.code,
            error_subcode: error.subcode,
            is_transient: transient.then_some(true),
            // Token errors come from Graph itself and carry no WhatsApp
            // error_data; clients must not require it.
            error_data: (error.code != code::ACCESS_TOKEN).then_some(ErrorData {
                messaging_product: "whatsapp",
                details: &error.details,
            }),
            fbtrace_id: format!("A{:016X}", rules::mix64(seq ^ 0xFB)),
        },
    };
    let status = StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    HttpResponse::build(status).json(body)
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Decide a send request. Synchronous: every effect on the sandbox's
    /// state happens here, before any added latency.
    fn decide(&self, req: &HttpRequest, body: &[u8], seq: u64) -> Answer {
        let cfg = &self.config;
        if let Some(e) = self.injected_5xx(seq) {
            return Answer::Unavailable(e);
        }
        if let Err(e) = self.check_token(req) {
            return Answer::Error(e);
        }
        let number_id = match self.check_path(req) {
            Ok(id) => id,
            Err(e) => return Answer::Error(e),
        };
        let send = match rules::validate_send(body, &cfg.templates) {
            Ok(s) => s,
            Err(e) => return Answer::Error(e.into()),
        };
        if let Some(e) = self.templates.refusal(&send.template, &send.language) {
            return Answer::Error(e);
        }
        let mut category = cfg
            .categories
            .get(&send.template)
            .copied()
            .unwrap_or_default();
        let marketing_api = req.path().ends_with("/marketing_messages");
        if marketing_api {
            // The Marketing Messages API takes marketing templates only; an
            // account not onboarded falls back to Cloud API unless STRICT.
            if category != super::PricingCategory::Marketing {
                return Answer::Error(ApiError::with_default_details(code::NOT_MARKETING));
            }
            if cfg.marketing_messages_onboarded {
                category = super::PricingCategory::MarketingLite;
            } else if send.strict {
                return Answer::Error(ApiError::new(
                    code::MM_UNAVAILABLE,
                    "the account has not completed onboarding to the Marketing Messages API",
                ));
            }
        }
        let number = self.stats.number(number_id, self.quota);
        if number.in_maintenance() {
            return Answer::Error(ApiError::with_default_details(code::MAINTENANCE));
        }
        if !number.admit() {
            return Answer::Error(ApiError::with_default_details(code::THROUGHPUT));
        }
        if let Some(e) = rules::api_failure(&cfg.failure_rules, send.recipient.rule_key()) {
            return Answer::Error(e);
        }
        let pair = self.pair.as_ref().map(|p| (p, self.now_ns()));
        let Ok(ordinal) = self.stats.accept(
            &number,
            send.recipient.key,
            (send.campaign(), send.occurrence()),
            pair,
        ) else {
            return Answer::Error(ApiError::with_default_details(code::PAIR_RATE));
        };
        if marketing_api {
            self.stats.marketing_messages.fetch_add(1, Relaxed);
        }
        let wamid = format!(
            "wamid.SBX{:08X}{:012X}",
            self.nonce,
            self.wamid_seq.fetch_add(1, Relaxed) + 1
        );
        let rules::ValidSend {
            input,
            recipient,
            biz_opaque,
            quick_reply_payload,
            ..
        } = send;
        self.schedule_webhooks(
            &recipient,
            (biz_opaque, quick_reply_payload),
            &wamid,
            ordinal,
            (number, category),
        );
        Answer::Accepted(AcceptedBody {
            messaging_product: "whatsapp",
            contacts: [ContactBody {
                input,
                user_id: recipient.user_id.filter(|_| recipient.wa_id.is_empty()),
                wa_id: recipient.wa_id,
            }],
            messages: [MessageBody {
                id: wamid,
                message_status: "accepted",
            }],
        })
    }

    /// A 500 or 503 for the share of requests `http_5xx_share` asks for,
    /// drawn from the request's sequence number.
    fn injected_5xx(&self, seq: u64) -> Option<ApiError> {
        let cfg = &self.config;
        if cfg.http_5xx_share <= 0.0 || rules::draw(cfg.seed, seq, 0, 0x5_0_0) >= cfg.http_5xx_share
        {
            return None;
        }
        Some(if rules::mix64(seq ^ cfg.seed) & 1 == 0 {
            ApiError::with_default_details(code::SOMETHING_WENT_WRONG)
        } else {
            ApiError::with_default_details(code::SERVICE_UNAVAILABLE)
        })
    }

    /// The Graph version and the phone number id of the path; answers the
    /// number id.
    fn check_path<'r>(&self, req: &'r HttpRequest) -> Result<&'r str, ApiError> {
        let cfg = &self.config;
        let version = req.match_info().get("version").unwrap_or_default();
        let number_id = req.match_info().get("phone_number_id").unwrap_or_default();
        let version_ok = match &cfg.api_version {
            Some(v) => v == version,
            None => is_graph_version(version),
        };
        if !version_ok {
            return Err(ApiError::new(
                code::UNKNOWN_PATH,
                format!("unknown path components: /{version}/{number_id}/messages"),
            ));
        }
        if number_id.is_empty()
            || (!cfg.phone_number_ids.is_empty()
                && !cfg.phone_number_ids.iter().any(|n| n == number_id))
        {
            let mut e = ApiError::new(
                code::INVALID_PARAMETER,
                format!("object with id '{number_id}' does not exist or cannot be loaded"),
            );
            e.subcode = Some(33);
            return Err(e);
        }
        Ok(number_id)
    }

    /// Queues the timeline of an accepted message (its statuses, a reply,
    /// or a failure its recipient's rule asks for) when webhooks are on.
    fn schedule_webhooks(
        &self,
        recipient: &rules::Recipient,
        (biz_opaque, quick_reply_payload): (Option<String>, Option<String>),
        wamid: &str,
        ordinal: u32,
        (number, category): (Arc<super::stats::NumberState>, super::PricingCategory),
    ) {
        let Some(queue) = &self.webhooks else {
            return;
        };
        let cfg = &self.config;
        let failure = rules::webhook_failure(&cfg.failure_rules, recipient.rule_key());
        let user_id = match &recipient.user_id {
            Some(u) => Some(u.as_str().into()),
            None if cfg.phone_user_ids => Some(rules::derived_user_id(&recipient.wa_id).into()),
            None => None,
        };
        let outcome: Outcome =
            rules::decide(cfg.seed, recipient.key, ordinal, &self.shares, failure);
        queue.offer(Outbound {
            message: Arc::new(MessageInfo {
                wamid: wamid.into(),
                wa_id: recipient.wa_id.as_str().into(),
                user_id,
                recipient_key: recipient.key,
                biz_opaque: biz_opaque.map(String::into_boxed_str),
                quick_reply_payload: quick_reply_payload.map(String::into_boxed_str),
                number,
                category,
            }),
            outcome,
            accepted_at: Instant::now(),
        });
    }

    fn check_token(&self, req: &HttpRequest) -> Result<(), ApiError> {
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if token.is_empty() {
            return Err(ApiError::new(
                code::ACCESS_TOKEN,
                "missing bearer access token",
            ));
        }
        match &self.config.access_token {
            Some(expected) if expected != token => Err(ApiError::new(
                code::ACCESS_TOKEN,
                "access token does not match the sandbox's access_token",
            )),
            _ => Ok(()),
        }
    }

    fn latency(&self, seq: u64) -> Duration {
        let cfg = &self.config;
        let jitter = if cfg.latency_jitter_ms > 0 {
            rules::mix64(seq ^ cfg.seed ^ 0x1A7) % (cfg.latency_jitter_ms + 1)
        } else {
            0
        };
        Duration::from_millis(cfg.latency_ms + jitter)
    }
}

/// `v<major>.<minor>`, as Graph versions are written.
fn is_graph_version(v: &str) -> bool {
    let Some((major, minor)) = v.strip_prefix('v').and_then(|r| r.split_once('.')) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

/// Counts a request in `in_flight` while it is being answered.
struct Answering<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> Answering<'a> {
    fn new(counter: &'a std::sync::atomic::AtomicU64) -> Self {
        counter.fetch_add(1, Relaxed);
        Answering(counter)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

async fn send_message(
    req: HttpRequest,
    mut payload: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    let seq = shared.stats.requests.fetch_add(1, Relaxed);
    // Counted until the answer is handed back (or the client went away).
    let _answering = Answering::new(&shared.stats.answering);
    let mut body = web::BytesMut::new();
    let mut too_large = false;
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) if body.len() + chunk.len() <= MAX_BODY_BYTES => {
                body.extend_from_slice(&chunk)
            }
            Ok(_) => too_large = true,
            // The client went away mid-body; nothing to answer.
            Err(_) => return HttpResponse::BadRequest().finish(),
        }
    }
    let answer = if too_large {
        Answer::Error(ApiError::new(
            code::INVALID_PARAMETER,
            "request body exceeds 64 KiB",
        ))
    } else {
        shared.decide(&req, &body, seq)
    };
    let latency = shared.latency(seq);
    if !latency.is_zero() {
        // After the decision: a client that times out meanwhile leaves an
        // accepted message behind, which is how "unknown" outcomes happen.
        tokio::time::sleep(latency).await;
    }
    match answer {
        Answer::Accepted(body) => HttpResponse::Ok().json(body),
        Answer::Error(e) => {
            shared.stats.count_rejected(e.code);
            graph_error(&e, seq)
        }
        Answer::Unavailable(e) => {
            shared.stats.count_5xx();
            graph_error(&e, seq)
        }
    }
}

async fn stats(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(shared.snapshot())
}

#[derive(Serialize)]
struct RecipientBody<'a> {
    recipient: &'a str,
    messages: u32,
}

async fn recipient(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let to = req.match_info().get("to").unwrap_or_default();
    match Recipient::parse_any(to) {
        Some(r) => HttpResponse::Ok().json(RecipientBody {
            recipient: r.rule_key(),
            messages: shared.stats.recipient_messages(r.key),
        }),
        None => graph_error(
            &ApiError::new(
                code::INVALID_PARAMETER,
                format!("{to:?} is neither a phone number nor a user id"),
            ),
            0,
        ),
    }
}

async fn reset(shared: web::Data<Shared>) -> HttpResponse {
    shared.stats.reset();
    shared.sms.reset();
    shared.templates.reset();
    HttpResponse::Ok().json(serde_json::json!({ "reset": true }))
}

async fn unknown(req: HttpRequest) -> HttpResponse {
    graph_error(
        &ApiError::new(
            code::UNKNOWN_PATH,
            format!("unknown path components: {}", req.path()),
        ),
        0,
    )
}

/// A running server as seen from the thread that started it.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) server: actix_web::dev::ServerHandle,
    pub(crate) shared: Arc<Shared>,
    pub(crate) done: tokio::sync::oneshot::Receiver<()>,
}

/// Start the sandbox thread and wait until it listens.
pub(crate) async fn start(config: SandboxConfig) -> std::io::Result<Running> {
    config.validate()?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("wa-sandbox".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let shared = match build_shared(config) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let data = web::Data::from(Arc::clone(&shared));
                let sms_data = web::Data::from(Arc::clone(&shared.sms));
                let workers = shared.config.workers.max(1);
                let listen = shared.config.listen;
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(sms_data.clone())
                        .route("/sms/2/text/advanced", web::post().to(sms::send_sms))
                        .route("/sandbox/stats", web::get().to(stats))
                        .route("/sandbox/recipients/{to}", web::get().to(recipient))
                        .route("/sandbox/reset", web::post().to(reset))
                        .route(
                            "/sandbox/templates",
                            web::post().to(super::templates::change_template),
                        )
                        .route(
                            "/sandbox/limits",
                            web::post().to(super::account::change_limit),
                        )
                        .route(
                            "/sandbox/numbers",
                            web::post().to(super::account::change_number),
                        )
                        .route(
                            "/{version}/{phone_number_id}/messages",
                            web::post().to(send_message),
                        )
                        .route(
                            "/{version}/{phone_number_id}/marketing_messages",
                            web::post().to(send_message),
                        )
                        .default_service(web::to(unknown))
                })
                .workers(workers)
                // The host (daemon, tests) owns the process's signals.
                .disable_signals()
                .shutdown_timeout(1)
                .bind(listen);
                let server = match server {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let addr = server.addrs().first().copied().unwrap_or(listen);
                let server = server.run();
                let _ = ready_tx.send(Ok((addr, server.handle(), shared)));
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "whatsapp sandbox server failed");
                }
            });
            // Dropping the runtime cancels webhook tasks still waiting.
            drop(runtime);
            let _ = done_tx.send(());
        })?;
    let (addr, server, shared) = ready_rx
        .await
        .map_err(|_| std::io::Error::other("sandbox thread ended before listening"))??;
    Ok(Running {
        addr,
        server,
        shared,
        done: done_rx,
    })
}

fn build_shared(config: SandboxConfig) -> std::io::Result<Arc<Shared>> {
    let codes = rules::KNOWN_API_CODES
        .iter()
        .copied()
        .chain(config.failure_rules.iter().map(|r| r.code));
    let stats = Arc::new(Stats::new(codes));
    let nonce: u32 = rand::random();
    let webhooks = match &config.webhook_url {
        Some(url) => Some(webhooks::spawn(
            &config,
            url.clone(),
            Arc::clone(&stats),
            nonce,
        )?),
        None => None,
    };
    let burst = config
        .per_number_burst
        .unwrap_or_else(|| config.per_number_mps.ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
    Ok(Arc::new(Shared {
        quota: number_quota(config.per_number_mps, burst),
        pair: PairLimit::new(config.pair_interval_secs, config.pair_burst),
        shares: Shares {
            read: config.read_share,
            read_without_delivered: config.read_without_delivered_share,
            reply: config.reply_share,
            stop: config.stop_share,
            button: config.button_share,
        },
        epoch: Instant::now(),
        nonce,
        wamid_seq: AtomicU64::new(0),
        stats,
        webhooks,
        sms: Arc::new(SmsSim::new(&config, nonce)?),
        templates: Default::default(),
        config,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_versions() {
        assert!(is_graph_version("v21.0"));
        assert!(is_graph_version("v3.10"));
        assert!(!is_graph_version("21.0"));
        assert!(!is_graph_version("v21"));
        assert!(!is_graph_version("v21.x"));
        assert!(!is_graph_version("v.1"));
    }
}
