//! Funnel summaries computed by scanning a campaign's dispatch rows.
//!
//! Counts come from the store, never from counters kept on the side, so a
//! summary is right after any crash or restart (docs/ARCHITECTURE.md,
//! "Store").

use std::collections::BTreeMap;

use crate::domain::DispatchState;
use crate::store::{DispatchRecord, Store, StoreResult};

/// Rows per scan page: large enough to amortise a round trip, small enough to
/// keep memory flat on a 10M-contact campaign.
const PAGE: usize = 2_000;

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CampaignSummary {
    pub campaign_id: String,
    /// Every contact recorded for the campaign (pending, excluded or beyond).
    pub staged: u64,
    pub by_state: BTreeMap<String, u64>,
    /// Exclusions by reason (`missing_variable:coupon`, …).
    pub excluded_by_reason: BTreeMap<String, u64>,
    /// Failures by error class.
    pub failed_by_class: BTreeMap<String, u64>,
    /// Contacts whose journey waits for a later step: a timer in the store
    /// (their current step's state is counted in `by_state` too).
    pub waiting: u64,
    /// Contacts that reached each funnel stage or a later one (a `read`
    /// contact was also sent and delivered, even without that webhook).
    pub reached: BTreeMap<String, u64>,
}

/// Funnel stages in order.
pub const FUNNEL: [DispatchState; 5] = [
    DispatchState::Accepted,
    DispatchState::Sent,
    DispatchState::Delivered,
    DispatchState::Read,
    DispatchState::Replied,
];

/// Calls `f` with every row of a campaign, a page at a time.
async fn scan_rows(
    store: &dyn Store,
    campaign: &str,
    mut f: impl FnMut(&DispatchRecord),
) -> StoreResult<()> {
    let mut after = None;
    loop {
        let page = store
            .scan_dispatches(campaign, after.as_ref(), PAGE)
            .await?;
        page.iter().for_each(&mut f);
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.contact.clone()),
            _ => return Ok(()),
        }
    }
}

impl CampaignSummary {
    pub async fn compute(store: &dyn Store, campaign: &str) -> StoreResult<Self> {
        let mut summary = CampaignSummary {
            campaign_id: campaign.to_string(),
            ..Default::default()
        };
        scan_rows(store, campaign, |row| summary.add(row)).await?;
        Ok(summary)
    }

    fn add(&mut self, row: &DispatchRecord) {
        self.staged += 1;
        self.waiting += u64::from(row.wait.is_some());
        *self
            .by_state
            .entry(row.state.as_str().to_string())
            .or_default() += 1;
        for stage in FUNNEL {
            if row.state.delivery_rank() >= stage.delivery_rank() && row.state.delivery_rank() > 0 {
                *self.reached.entry(stage.as_str().to_string()).or_default() += 1;
            }
        }
        match row.state {
            DispatchState::Excluded => {
                let reason = row.reason.clone().unwrap_or_else(|| "unknown".into());
                *self.excluded_by_reason.entry(reason).or_default() += 1;
            }
            DispatchState::Failed => {
                let class = row.error_class.clone().unwrap_or_else(|| "unknown".into());
                *self.failed_by_class.entry(class).or_default() += 1;
            }
            _ => {}
        }
    }

    pub fn count(&self, state: DispatchState) -> u64 {
        self.by_state.get(state.as_str()).copied().unwrap_or(0)
    }

    pub fn excluded(&self) -> u64 {
        self.excluded_by_reason.values().sum()
    }

    pub fn reached(&self, stage: DispatchState) -> u64 {
        self.reached.get(stage.as_str()).copied().unwrap_or(0)
    }

    /// Contacts whose journey is not final: pending, claimed, deferred, or
    /// waiting for a later step.
    pub fn open(&self) -> u64 {
        self.count(DispatchState::Pending)
            + self.count(DispatchState::Claimed)
            + self.count(DispatchState::Deferred)
            + self.waiting
    }
}

/// Contacts by journey step and the state they reached there: every step
/// a contact went through (its record in the row's history, or the current
/// step). Steps are named by their id; the first step is `""`.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepFunnel {
    pub steps: BTreeMap<String, BTreeMap<String, u64>>,
}

impl StepFunnel {
    pub async fn compute(store: &dyn Store, campaign: &str) -> StoreResult<Self> {
        let mut funnel = StepFunnel::default();
        scan_rows(store, campaign, |row| {
            let steps = row
                .history
                .iter()
                .map(|h| (&h.step, h.state))
                .chain([(&row.step, row.state)]);
            for (step, state) in steps {
                *funnel
                    .steps
                    .entry(step.clone())
                    .or_default()
                    .entry(state.as_str().to_string())
                    .or_default() += 1;
            }
        })
        .await?;
        Ok(funnel)
    }

    /// Contacts of `step` in `state`.
    pub fn count(&self, step: &str, state: DispatchState) -> u64 {
        self.steps
            .get(step)
            .and_then(|s| s.get(state.as_str()))
            .copied()
            .unwrap_or(0)
    }
}

/// Funnel ratios as the campaign products report them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryView<'a> {
    #[serde(flatten)]
    pub summary: &'a CampaignSummary,
    /// Pending, claimed or deferred: not final yet.
    pub open: u64,
    /// delivered / sent.
    pub received_by: Option<f64>,
    /// read / delivered.
    pub read_by: Option<f64>,
    /// replied / delivered.
    pub replied_by: Option<f64>,
    /// excluded + failed.
    pub not_sent_to: u64,
}

/// A percentage as printed (`75.0%`), or `-` when there is none.
pub fn percent_text(percent: Option<f64>) -> String {
    percent
        .map(|p| format!("{p:.1}%"))
        .unwrap_or_else(|| "-".into())
}

/// `n / d` in percent with one decimal; `None` when `d` is 0.
pub fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| (n as f64 / d as f64 * 1000.0).round() / 10.0)
}

impl CampaignSummary {
    pub fn view(&self) -> SummaryView<'_> {
        let sent = self.reached(DispatchState::Sent);
        let delivered = self.reached(DispatchState::Delivered);
        SummaryView {
            summary: self,
            open: self.open(),
            received_by: ratio(delivered, sent),
            read_by: ratio(self.reached(DispatchState::Read), delivered),
            replied_by: ratio(self.reached(DispatchState::Replied), delivered),
            not_sent_to: self.excluded() + self.count(DispatchState::Failed),
        }
    }

    /// Plain-text summary for terminals.
    pub fn render(&self) -> String {
        let v = self.view();
        let pct = percent_text;
        let mut out = format!("campaign {}\n", self.campaign_id);
        let mut line =
            |label: &str, value: String| out.push_str(&format!("  {label:<28}{value:>10}\n"));
        line("contacts staged", self.staged.to_string());
        line(
            "accepted by WhatsApp",
            self.reached(DispatchState::Accepted).to_string(),
        );
        line("sent", self.reached(DispatchState::Sent).to_string());
        line(
            "delivered",
            self.reached(DispatchState::Delivered).to_string(),
        );
        line("read", self.reached(DispatchState::Read).to_string());
        line("replied", self.reached(DispatchState::Replied).to_string());
        line("received by (deliv./sent)", pct(v.received_by));
        line("read by (read/deliv.)", pct(v.read_by));
        line("replied by (repl./deliv.)", pct(v.replied_by));
        line("not sent to", v.not_sent_to.to_string());
        for (reason, n) in &self.excluded_by_reason {
            line(&format!("  excluded: {reason}"), n.to_string());
        }
        for (class, n) in &self.failed_by_class {
            line(&format!("  failed: {class}"), n.to_string());
        }
        line("unknown", self.count(DispatchState::Unknown).to_string());
        line("still open", v.open.to_string());
        out
    }
}

/// One row of the per-contact export.
#[derive(Debug, serde::Serialize)]
pub struct ContactRow {
    pub contact: String,
    pub state: String,
    pub reason: String,
    pub error_code: String,
    pub message: String,
    pub wamid: String,
    pub staged_at: String,
    pub claimed_at: String,
    pub accepted_at: String,
    pub sent_at: String,
    pub delivered_at: String,
    pub read_at: String,
    pub replied_at: String,
    pub failed_at: String,
    pub excluded_at: String,
}

impl ContactRow {
    pub fn from_record(r: &crate::store::DispatchRecord) -> Self {
        let t = |x: &Option<chrono::DateTime<chrono::Utc>>| {
            x.map(|t| t.to_rfc3339()).unwrap_or_default()
        };
        // A human-readable why, from the exclusion reason or the error code.
        let message = match (&r.reason, r.error_code) {
            (Some(reason), _) => reason
                .parse::<crate::domain::ExclusionReason>()
                .map(|e| e.description())
                .unwrap_or_else(|_| reason.clone()),
            (None, Some(code)) => crate::domain::describe_code(code).to_string(),
            (None, None) => r.error_message.clone().unwrap_or_default(),
        };
        ContactRow {
            contact: r.contact.to_string(),
            state: r.state.as_str().to_string(),
            reason: r
                .reason
                .clone()
                .or_else(|| r.error_class.clone())
                .unwrap_or_default(),
            error_code: r.error_code.map(|c| c.to_string()).unwrap_or_default(),
            message,
            wamid: r.wamid.clone().unwrap_or_default(),
            staged_at: t(&r.times.staged),
            claimed_at: t(&r.times.claimed),
            accepted_at: t(&r.times.accepted),
            sent_at: t(&r.times.sent),
            delivered_at: t(&r.times.delivered),
            read_at: t(&r.times.read),
            replied_at: t(&r.times.replied),
            failed_at: t(&r.times.failed),
            excluded_at: t(&r.times.excluded),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
}

/// Streams every contact of a campaign to `out` (constant memory: one page
/// at a time). Returns the number of rows written.
pub async fn export(
    store: &dyn Store,
    campaign: &str,
    format: Format,
    mut out: impl std::io::Write,
    progress: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<u64> {
    let mut n = 0u64;
    let mut after = None;
    if format == Format::Json {
        out.write_all(b"[\n")?;
    }
    let mut csv = csv::Writer::from_writer(Vec::with_capacity(64 * 1024));
    loop {
        let page = store
            .scan_dispatches(campaign, after.as_ref(), PAGE)
            .await?;
        for r in &page {
            let row = ContactRow::from_record(r);
            match format {
                Format::Csv => csv.serialize(&row)?,
                Format::Json => {
                    if n > 0 {
                        out.write_all(b",\n")?;
                    }
                    serde_json::to_writer(&mut out, &row)?;
                }
            }
            n += 1;
        }
        if format == Format::Csv {
            // Hand each page's bytes over, keeping memory flat.
            csv.flush()?;
            let buf = std::mem::replace(
                &mut csv,
                csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(Vec::new()),
            );
            out.write_all(&buf.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?)?;
        }
        if let Some(pb) = progress {
            pb.inc(page.len() as u64);
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.contact.clone()),
            _ => break,
        }
    }
    if format == Format::Json {
        out.write_all(b"\n]\n")?;
    }
    out.flush()?;
    Ok(n)
}
