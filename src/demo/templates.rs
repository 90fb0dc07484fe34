//! The demo's template pause: once a quarter of the promo's contacts are
//! sent, Meta pauses its template (the sandbox posts the signed
//! `message_template_status_update` webhook), the campaign holds before its
//! next claim, and a few seconds later Meta approves the template again and
//! the campaign resumes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dispatch::campaign::CampaignState;
use crate::domain::DispatchState;
use crate::report::CampaignSummary;
use crate::store::Store;

/// How long Meta keeps the template paused in the demo (3 h in real life).
const HELD: Duration = Duration::from_secs(3);

/// What the demo saw of the pause.
#[derive(Debug)]
pub(super) struct PauseReport {
    pub template: String,
    /// Share of the campaign's contacts claimed when Meta paused it.
    pub at_percent: f64,
    /// Why the campaign said it held.
    pub reason: Option<String>,
    /// Contacts claimed while it held (after the requests already on their
    /// way when the webhook came).
    pub claimed_while_held: u64,
    pub held: Duration,
    /// The campaign no longer held after the approval.
    pub resumed: bool,
}

/// Contacts of `campaign` that left `pending` (claimed and beyond).
async fn claimed(store: &dyn Store, campaign: &str) -> anyhow::Result<(u64, u64)> {
    let s = CampaignSummary::compute(store, campaign).await?;
    let pending = s.count(DispatchState::Pending);
    Ok((s.staged - pending - s.excluded(), s.staged))
}

/// Meta does something in the sandbox (`POST /sandbox/<what>`), and the
/// daemon took the webhook it posts.
pub(super) async fn meta_does(
    base: &str,
    what: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/sandbox/{what}"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    anyhow::ensure!(
        answer["webhook_status"] == 200,
        "the daemon did not take the {what} webhook: {answer}"
    );
    Ok(())
}

pub(super) async fn pause_and_approve(
    sandbox: String,
    store: Arc<dyn Store>,
    live: impl Fn() -> Option<Arc<CampaignState>>,
    campaign: &str,
    (name, language): (&str, &str),
) -> anyhow::Result<PauseReport> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (at, staged) = loop {
        let (claimed, staged) = claimed(store.as_ref(), campaign).await?;
        if staged > 0 && claimed * 4 >= staged {
            break (claimed, staged);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{campaign} did not start within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let change = |event: &str, title: &str| serde_json::json!({"name": name, "language": language, "event": event, "title": title});
    meta_does(&sandbox, "templates", change("PAUSED", "FIRST_PAUSE")).await?;
    let paused_at = Instant::now();
    let reason = live().and_then(|c| c.halt_reason());
    // Requests claimed before the webhook came finish meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, _) = claimed(store.as_ref(), campaign).await?;
    tokio::time::sleep(HELD.saturating_sub(paused_at.elapsed())).await;
    let (after, _) = claimed(store.as_ref(), campaign).await?;
    meta_does(&sandbox, "templates", change("APPROVED", "UNPAUSE")).await?;
    let held = paused_at.elapsed();
    Ok(PauseReport {
        template: format!("{name} ({language})"),
        at_percent: at as f64 * 100.0 / staged as f64,
        reason,
        claimed_while_held: after.saturating_sub(before),
        held,
        resumed: live().is_some_and(|c| c.halt_reason().is_none()),
    })
}

impl PauseReport {
    pub(super) fn print(&self, campaign: &str) {
        println!("\n=== template health ===");
        println!(
            "Meta paused {} at {:.0} % of {campaign} (webhook message_template_status_update PAUSED)",
            self.template, self.at_percent
        );
        println!(
            "  campaign held: {}",
            self.reason.as_deref().unwrap_or("(not held!)")
        );
        println!(
            "  contacts claimed while held: {} (over {:.1} s)",
            self.claimed_while_held,
            self.held.as_secs_f64()
        );
        println!(
            "Meta approved it again (APPROVED): {}",
            if self.resumed {
                "the campaign resumed"
            } else {
                "the campaign still holds!"
            }
        );
    }
}
