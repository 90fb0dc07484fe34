//! The HTTP side: `GET /webhook` (Meta's subscription handshake) and
//! `POST /webhook` on the `[http]` listener.

use std::sync::Arc;
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::metrics;

use super::*;

#[derive(serde::Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn get_webhook(
    processor: web::Data<WebhookProcessor>,
    query: web::Query<Handshake>,
) -> HttpResponse {
    match processor.verify_subscription(
        query.mode.as_deref(),
        query.token.as_deref(),
        query.challenge.as_deref(),
    ) {
        Some(challenge) => {
            metrics::webhook_request("verified");
            HttpResponse::Ok()
                .content_type("text/plain")
                .body(challenge)
        }
        None => {
            metrics::webhook_request("forbidden");
            HttpResponse::Forbidden().body("verify token does not match")
        }
    }
}

async fn post_webhook(
    processor: web::Data<WebhookProcessor>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let started = Instant::now();
    let signature = req
        .headers()
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    let verdict = processor.handle(&body, signature).await;
    metrics::webhook_duration(started.elapsed().as_secs_f64());
    match verdict {
        Verdict::Ok => HttpResponse::Ok().finish(),
        Verdict::Unauthorized => {
            HttpResponse::Unauthorized().body("bad or missing X-Hub-Signature-256")
        }
        Verdict::BadRequest(m) => HttpResponse::BadRequest().body(m),
        Verdict::Failed(m) => HttpResponse::InternalServerError().body(m),
    }
}

async fn post_sms_reports(
    processor: web::Data<WebhookProcessor>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let authorization = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match processor.handle_sms_reports(&body, authorization).await {
        Verdict::Ok => HttpResponse::Ok().finish(),
        Verdict::Unauthorized => HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Basic realm=\"sms-reports\""))
            .body("bad or missing credentials"),
        Verdict::BadRequest(m) => HttpResponse::BadRequest().body(m),
        Verdict::Failed(m) => HttpResponse::InternalServerError().body(m),
    }
}

/// Routes of the webhook receiver, for the daemon's HTTP listener.
pub fn configure(processor: web::Data<WebhookProcessor>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(processor)
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .route("/webhook", web::get().to(get_webhook))
            .route("/webhook", web::post().to(post_webhook))
            .route("/sms/reports", web::post().to(post_sms_reports));
    }
}

/// Starts the webhook listener on `listen` (port 0 picks a free one); the
/// caller spawns the returned server. Also returns the bound address.
pub fn serve(
    processor: Arc<WebhookProcessor>,
    listen: &str,
    workers: usize,
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let data = web::Data::from(processor);
    let http = actix_web::HttpServer::new(move || {
        actix_web::App::new().configure(configure(data.clone()))
    })
    .workers(workers)
    .disable_signals()
    // Meta redelivers anything we do not answer: a stop need not wait long.
    .shutdown_timeout(2)
    .bind(listen)?;
    let addr = http
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other(format!("no address bound for {listen}")))?;
    Ok((http.run(), addr))
}
