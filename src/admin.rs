//! The admin listener (`admin.listen`, loopback by default): `/metrics` for
//! Prometheus, `/healthz` (the process answers), `/readyz` (Kafka assignment
//! received and store reachable, with the failing reason in the body) and
//! `/campaigns` (each campaign's state, funnel, pace and ETA as JSON),
//! `/templates` (what Meta said of each template) and
//! `POST /campaigns/{id}/clear-halt`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::dispatch::campaign::CampaignState;
use crate::domain::DispatchState;
use crate::ingest::audience::IngestStats;
use crate::report::{stages, Stage, StepView};
use crate::store::Store;
use crate::sync::{MutexExt, RwLockExt};

/// What the admin handlers read.
pub struct AdminState {
    pub store: Arc<dyn Store>,
    pub ingest: Arc<IngestStats>,
    pub campaigns: Arc<RwLock<HashMap<String, Arc<CampaignState>>>>,
    /// How long `/readyz` waits for the store's answer.
    pub store_timeout: Duration,
    /// What Meta said of each template (shared with dispatch).
    pub templates: Arc<crate::dispatch::templates::TemplateBook>,
}

/// Why the process is not ready (no Kafka assignment yet, dead letters the
/// DLQ topic refuses, store failing or silent for `store_timeout`), or `None`
/// when it is.
pub async fn not_ready(
    store: &dyn Store,
    ingest: &IngestStats,
    store_timeout: Duration,
) -> Option<String> {
    let mut reasons: Vec<String> = ingest
        .dead_letters
        .lock_or_recover()
        .iter()
        .map(|f| f.describe())
        .collect();
    if let Some(startup) = startup_blockers(store, ingest, store_timeout).await {
        reasons.push(startup);
    }
    (!reasons.is_empty()).then(|| reasons.join("\n"))
}

/// What keeps the process from starting its work: no Kafka assignment yet,
/// or a store that fails or is silent for `store_timeout`. systemd's
/// `READY=1` waits for these only (a failing DLQ later is a readiness reason
/// and a `STATUS=`, not a failed start).
pub async fn startup_blockers(
    store: &dyn Store,
    ingest: &IngestStats,
    store_timeout: Duration,
) -> Option<String> {
    let mut reasons = Vec::new();
    if ingest.sole_wait.load(std::sync::atomic::Ordering::Acquire) {
        reasons.push(
            "kafka: another member of the consumer group holds audience partitions; with the embedded store this instance stages nothing until it holds all of them, and stops if that does not happen within the group's session timeout (plus 15 s)".to_string(),
        );
    }
    if !ingest.assigned.load(std::sync::atomic::Ordering::Acquire) {
        reasons.push(
            "kafka: no partition assignment from the audience consumer group yet (check kafka.brokers and the broker logs)"
                .to_string(),
        );
    }
    match tokio::time::timeout(store_timeout, store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => reasons.push(format!("store: {e}")),
        Err(_) => reasons.push(format!(
            "store: no answer within {} ms",
            store_timeout.as_millis()
        )),
    }
    (!reasons.is_empty()).then(|| reasons.join("\n"))
}

async fn metrics_handler() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::metrics().render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    match not_ready(state.store.as_ref(), &state.ingest, state.store_timeout).await {
        None => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Some(reasons) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready\n{reasons}\n")),
    }
}

/// One entry of `/campaigns`.
#[derive(Debug, Serialize)]
pub struct CampaignView {
    pub id: String,
    pub name: String,
    /// `real` or `test` (a test campaign sends to its `test_recipients`
    /// only).
    pub kind: &'static str,
    pub desired_state: &'static str,
    pub observed_state: Option<&'static str>,
    /// A triggered campaign's trigger in words (`1h after the event,
    /// cancelled on order_placed, at most 1 per 1d per contact`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The campaign's goal in words (`payment_made within 7d of a
    /// message, stops the journey`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    /// The campaign's segment in words (`any of mx, co; all of vip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    pub staged: u64,
    pub pending: u64,
    pub deferred: u64,
    pub in_flight: u64,
    pub by_state: std::collections::BTreeMap<String, u64>,
    /// staged, accepted, sent, delivered, read, replied, then converted
    /// (its percent is of accepted).
    pub funnel: Vec<Stage>,
    /// Journeys credited with a goal conversion.
    pub converted: u64,
    /// The value of those conversions, by currency.
    pub conversion_value: std::collections::BTreeMap<String, f64>,
    /// Messages Meta reports as billable, by pricing category.
    pub billable: std::collections::BTreeMap<String, u64>,
    /// Those messages priced by the rate card (`[pricing]`): total, by
    /// category, per conversion; absent without a rate card.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::domain::CostEstimate>,
    pub excluded_by_reason: std::collections::BTreeMap<String, u64>,
    /// Accepted messages Meta holds (`held_for_quality_assessment`,
    /// `paused`): counted in `accepted`, not flowing.
    pub held_by_meta: std::collections::BTreeMap<String, u64>,
    pub failed_by_class: std::collections::BTreeMap<String, u64>,
    /// Contacts waiting for a later step of their journey (timers).
    pub waiting: u64,
    /// The journey step by step: where contacts are (one entry for a
    /// one-step campaign).
    pub steps: Vec<StepView>,
    /// Configured pace (messages per second).
    pub configured_rate: f64,
    /// Pace measured on this instance since the previous count.
    pub current_rate: f64,
    pub wait_reason: Option<String>,
    pub halted: Option<String>,
    pub eta_seconds: Option<f64>,
    /// When the counts were taken (they refresh every few seconds).
    pub counted_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The view of one campaign from its live state.
pub fn campaign_view(state: &CampaignState) -> CampaignView {
    use std::sync::atomic::Ordering;
    let entry = state.entry.read_or_recover().clone();
    let progress = state.progress.lock_or_recover().clone();
    let summary = progress
        .as_ref()
        .map(|p| p.summary.clone())
        .unwrap_or_default();
    let mut funnel = stages("staged", summary.staged, &summary.contacts);
    funnel.push(Stage {
        stage: "converted",
        contacts: summary.converted,
        percent: crate::report::ratio(summary.converted, summary.reached(DispatchState::Accepted)),
    });
    CampaignView {
        id: state.id.clone(),
        name: entry.spec.name.clone(),
        kind: entry.spec.kind.as_str(),
        desired_state: entry.spec.state.as_str(),
        observed_state: state.observed.lock_or_recover().map(|s| s.as_str()),
        trigger: entry.trigger.as_ref().map(|t| t.describe()),
        goal: entry.goal.as_ref().map(|g| g.describe()),
        segment: entry.spec.audience.as_ref().map(|s| s.describe()),
        staged: summary.staged,
        pending: summary.count(DispatchState::Pending),
        deferred: summary.count(DispatchState::Deferred),
        in_flight: state.in_flight.load(Ordering::Acquire),
        by_state: summary.contacts.by_state.clone(),
        funnel,
        converted: summary.converted,
        conversion_value: summary.conversion_value.clone(),
        billable: summary.billable.by_category(),
        cost: progress.as_ref().and_then(|p| p.cost.clone()),
        excluded_by_reason: summary.contacts.excluded_by_reason.clone(),
        held_by_meta: summary.contacts.held_by_meta.clone(),
        failed_by_class: summary.contacts.failed_by_class.clone(),
        waiting: summary.waiting,
        steps: summary.steps_view(Some(&entry.journey)),
        configured_rate: state.rate(),
        current_rate: progress.as_ref().map(|p| p.rate).unwrap_or(0.0),
        wait_reason: state.wait_reason.lock_or_recover().clone(),
        halted: state.halt_reason(),
        eta_seconds: progress.as_ref().and_then(|p| p.eta_seconds),
        counted_at: progress.as_ref().map(|p| p.at),
    }
}

async fn campaigns(state: web::Data<AdminState>) -> HttpResponse {
    let live: Vec<Arc<CampaignState>> = state
        .campaigns
        .read_or_recover()
        .values()
        .cloned()
        .collect();
    let mut views: Vec<CampaignView> = live.iter().map(|c| campaign_view(c)).collect();
    views.sort_by(|a, b| a.id.cmp(&b.id));
    HttpResponse::Ok().json(views)
}

/// `POST /campaigns/{id}/clear-halt`: lifts a halt by a campaign-class error
/// (after the template was fixed in WhatsApp Manager without a spec change).
/// Other instances see it within seconds (they read the store).
async fn clear_halt(state: web::Data<AdminState>, id: web::Path<String>) -> HttpResponse {
    let id = id.into_inner();
    let live = state.campaigns.read_or_recover().get(&id).cloned();
    let stored = match state.store.campaign_halt(&id).await {
        Ok(h) => h,
        Err(e) => {
            return HttpResponse::ServiceUnavailable()
                .content_type("text/plain")
                .body(format!(
                    "cannot read the halt of {id}: {e}; try again once the store answers\n"
                ))
        }
    };
    let reason = live
        .as_ref()
        .and_then(|c| c.halt_reason())
        .or_else(|| stored.as_ref().map(|h| h.reason.clone()));
    if live.is_none() && stored.is_none() {
        return HttpResponse::NotFound()
            .content_type("text/plain")
            .body(format!(
                "campaign {id} is not known here and has no halt (GET /campaigns lists them)\n"
            ));
    }
    if let Err(e) = state.store.set_campaign_halt(&id, None).await {
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!(
                "cannot lift the halt of {id}: {e}; try again once the store answers\n"
            ));
    }
    if let Some(c) = live {
        *c.halted.lock_or_recover() = None;
        // The operator fixed the template in WhatsApp Manager: what Meta
        // said of the campaign's templates is forgotten (the next answer or
        // webhook says it again if it still holds).
        let templates = c.entry.read_or_recover().whatsapp_templates();
        for t in &templates {
            if state
                .templates
                .first_hold(std::slice::from_ref(t))
                .is_none()
            {
                continue;
            }
            if let Err(e) = state.templates.forget(state.store.as_ref(), t).await {
                return HttpResponse::ServiceUnavailable()
                    .content_type("text/plain")
                    .body(format!(
                        "cannot lift the hold of template {t}: {e}; try again once the store answers\n"
                    ));
            }
        }
    }
    let body = match reason {
        Some(r) => {
            tracing::info!(campaign = %id, reason = %r, "halt lifted by the operator");
            format!("halt of {id} lifted (it was: {r})\n")
        }
        None => format!("campaign {id} was not halted\n"),
    };
    HttpResponse::Ok().content_type("text/plain").body(body)
}

/// One template as `/templates` shows it.
#[derive(Debug, Serialize)]
struct TemplateView {
    #[serde(flatten)]
    health: crate::domain::TemplateHealth,
    /// Why it may not be sent now, or null.
    held: Option<String>,
}

/// `GET /templates`: what Meta said of each template, and which are held.
async fn templates(state: web::Data<AdminState>) -> HttpResponse {
    let views: Vec<TemplateView> = state
        .templates
        .all()
        .into_iter()
        .map(|health| TemplateView {
            held: state
                .templates
                .first_hold(std::slice::from_ref(&health.template)),
            health,
        })
        .collect();
    HttpResponse::Ok().json(views)
}

/// Binds `listen` and returns the server (to spawn) and the bound address.
pub fn serve(
    state: AdminState,
    listen: &str,
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let data = web::Data::new(state);
    let http = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(metrics_handler))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/campaigns", web::get().to(campaigns))
            .route("/campaigns/{id}/clear-halt", web::post().to(clear_halt))
            .route("/templates", web::get().to(templates))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(listen)?;
    let addr = http
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other(format!("no address bound for {listen}")))?;
    Ok((http.run(), addr))
}
