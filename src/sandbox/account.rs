//! Account updates in the sandbox: `POST /sandbox/limits` has Meta state
//! the business portfolio's messaging limit, posting the signed
//! `business_capability_update` (default) or `phone_number_quality_update`
//! webhook (shapes: Meta's webhook reference for those fields; the limit as
//! a number, -1 unlimited, or a tier such as `TIER_2K`).

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
