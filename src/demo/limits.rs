//! The demo's messaging limit: as the campaigns start, Meta states the
//! portfolio's limit (the sandbox posts the signed
//! `business_capability_update` webhook with the 100K tier), and the daemon
//! applies it to the portfolio limit.

use crate::dispatch::registry::PortfolioLimit;

/// Meta's tier in the demo: above the demo's audience, so nothing waits.
const TIER: &str = "TIER_100K";

/// What the demo saw of the limit.
#[derive(Debug)]
pub(super) struct LimitReport {
    pub before: Option<String>,
    pub after: Option<String>,
}

pub(super) async fn state_limit(
    sandbox: &str,
    portfolio: &PortfolioLimit,
) -> anyhow::Result<LimitReport> {
    let before = portfolio.describe();
    super::templates::meta_does(sandbox, "limits", serde_json::json!({"limit": TIER})).await?;
    Ok(LimitReport {
        before,
        after: portfolio.describe(),
    })
}

impl LimitReport {
    pub(super) fn print(&self) {
        println!("\n=== messaging limit ===");
        println!(
            "before Meta said anything: {}",
            self.before.as_deref().unwrap_or("no portfolio limit")
        );
        println!("Meta stated {TIER} (webhook business_capability_update)");
        println!(
            "limit in force: {}",
            self.after
                .as_deref()
                .unwrap_or("no portfolio limit (not applied!)")
        );
    }
}
