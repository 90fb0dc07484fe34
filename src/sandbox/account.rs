//! Account updates in the sandbox: `POST /sandbox/limits` has Meta state
//! the business portfolio's messaging limit, posting the signed
//! `business_capability_update` (default) or `phone_number_quality_update`
//! webhook (shapes: Meta's webhook reference for those fields; the limit as
//! a number, -1 unlimited, or a tier such as `TIER_2K`). `POST
//! /sandbox/numbers` changes one number as Meta would: a throughput upgrade
//! (1,000 messages per second from then on, and the
//! `phone_number_quality_update` webhook with event `THROUGHPUT_UPGRADE`),
//! or maintenance (sends answer 131057 for a while).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::server::Shared;
use super::templates::{account_webhook, post};

/// The request of `POST /sandbox/limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitChange {
    /// `2000`, `-1` (unlimited) or `"TIER_10K"`.
    pub limit: serde_json::Value,
    /// `business_capability_update` (default) or
    /// `phone_number_quality_update`.
    #[serde(default)]
    pub field: Option<String>,
}

#[derive(Debug, Serialize)]
struct LimitAnswer {
    field: String,
    webhook_status: Option<u16>,
}

pub(crate) async fn change_limit(
    shared: web::Data<Shared>,
    change: web::Json<LimitChange>,
) -> HttpResponse {
    let change = change.into_inner();
    let field = change
        .field
        .unwrap_or_else(|| "business_capability_update".into());
    let value = match field.as_str() {
        "business_capability_update" => serde_json::json!({
            "max_daily_conversations_per_business": change.limit,
            "max_phone_numbers_per_waba": 25,
        }),
        "phone_number_quality_update" => serde_json::json!({
            "display_phone_number": shared.config.display_phone_number,
            "event": "UPGRADE",
            "current_limit": change.limit,
            "max_daily_conversations_per_business": change.limit,
        }),
        other => {
            return HttpResponse::BadRequest().body(format!(
                "field {other:?} is not business_capability_update or phone_number_quality_update\n"
            ))
        }
    };
    let body = account_webhook(&shared, &field, value);
    let webhook_status = match &shared.config.webhook_url {
        Some(url) => post(url, &shared.config.app_secret, &body).await,
        None => None,
    };
    HttpResponse::Ok().json(LimitAnswer {
        field,
        webhook_status,
    })
}

/// Meta's higher throughput per number, messages per second.
const HIGH_THROUGHPUT: f64 = 1000.0;

/// The request of `POST /sandbox/numbers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberChange {
    /// The number's `phone_number_id` (the sends' path).
    pub phone_number_id: String,
    /// How the webhook shows the number; default the sandbox's
    /// `display_phone_number`.
    #[serde(default)]
    pub display_phone_number: Option<String>,
    /// `THROUGHPUT_UPGRADE` raises the number to 1,000 messages per second;
    /// any event is posted as a `phone_number_quality_update`.
    #[serde(default)]
    pub event: Option<String>,
    /// Sends from the number answer 131057 for this many seconds (0 ends a
    /// maintenance).
    #[serde(default)]
    pub maintenance_secs: Option<f64>,
}

#[derive(Debug, Serialize)]
struct NumberAnswer {
    phone_number_id: String,
    /// The number's throughput now, when the change set it.
    per_number_mps: Option<f64>,
    webhook_status: Option<u16>,
}

pub(crate) async fn change_number(
    shared: web::Data<Shared>,
    change: web::Json<NumberChange>,
) -> HttpResponse {
    let change = change.into_inner();
    if change.event.is_none() && change.maintenance_secs.is_none() {
        return HttpResponse::BadRequest()
            .body("give an event (THROUGHPUT_UPGRADE, ...) or maintenance_secs\n");
    }
    if let Some(secs) = change.maintenance_secs {
        if !secs.is_finite() || secs < 0.0 {
            return HttpResponse::BadRequest().body(format!(
                "maintenance_secs must be a number of seconds >= 0, got {secs}\n"
            ));
        }
    }
    let number = shared.stats.number(&change.phone_number_id, shared.quota);
    if let Some(secs) = change.maintenance_secs {
        number.maintain(secs);
    }
    let mut per_number_mps = None;
    let mut webhook_status = None;
    if let Some(event) = &change.event {
        if event == "THROUGHPUT_UPGRADE" {
            let burst = HIGH_THROUGHPUT as u32;
            number.set_quota(super::stats::number_quota(HIGH_THROUGHPUT, burst));
            per_number_mps = Some(HIGH_THROUGHPUT);
        }
        let shown = change
            .display_phone_number
            .clone()
            .unwrap_or_else(|| shared.config.display_phone_number.clone());
        // On a throughput upgrade Meta sends `current_limit` as the
        // throughput level (TIER_UNLIMITED: higher throughput).
        let value = serde_json::json!({
            "display_phone_number": shown,
            "event": event,
            "current_limit": "TIER_UNLIMITED",
        });
        let body = account_webhook(&shared, "phone_number_quality_update", value);
        webhook_status = match &shared.config.webhook_url {
            Some(url) => post(url, &shared.config.app_secret, &body).await,
            None => None,
        };
    }
    HttpResponse::Ok().json(NumberAnswer {
        phone_number_id: change.phone_number_id,
        per_number_mps,
        webhook_status,
    })
}
