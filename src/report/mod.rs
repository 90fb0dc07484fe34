//! Funnel summaries of a campaign's dispatch rows: from the counts the
//! store keeps in the same writes as the rows, or from a scan of the rows
//! (docs/ARCHITECTURE.md, "Progress and counts"). Either is right after
//! any crash or restart.

use std::collections::BTreeMap;

use crate::domain::{DispatchState, Journey};
use crate::store::{Counter, DispatchRecord, Store, StoreResult};

mod export;
mod steps;

pub use export::{export, frozen_text, ContactRow, ExportOptions, Format, StepColumns};
pub use steps::{render as render_steps, stages, Stage, StepView};

/// Rows per scan page: large enough to amortise a round trip, small enough to
/// keep memory flat on a 10M-contact campaign.
const PAGE: usize = 2_000;

/// Contacts by the state they are in (or ended in) at one step, or at
/// their current step for the campaign as a whole.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepTally {
    pub by_state: BTreeMap<String, u64>,
    /// Exclusions (skips, for a later step) by reason
    /// (`missing_variable:coupon`, …).
    pub excluded_by_reason: BTreeMap<String, u64>,
    /// Failures by error class.
    pub failed_by_class: BTreeMap<String, u64>,
    /// Failures by WhatsApp (or SMS provider) error code (`none` without
    /// one), for "why did they fail" in words: see
    /// [`crate::domain::describe_code`].
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_by_code: BTreeMap<String, u64>,
    /// Contacts that reached each funnel stage or a later one (a `read`
    /// contact was also sent and delivered, even without that webhook).
    pub reached: BTreeMap<String, u64>,
    /// Accepted messages Meta holds instead of sending them yet, by its
    /// `message_status` (`held_for_quality_assessment`, `paused`): counted
    /// in `accepted`, not flowing.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub held_by_meta: BTreeMap<String, u64>,
}

impl StepTally {
    /// Adds `v` to the counter `counter` names in this tally (the counters
    /// of [`Counter`] that belong to a step).
    fn bump(&mut self, counter: &Counter, v: f64) {
        let (map, key) = match counter {
            Counter::State { state, .. } => (&mut self.by_state, state.as_str()),
            Counter::Reached { stage, .. } => (&mut self.reached, stage.as_str()),
            Counter::Excluded { reason, .. } => (&mut self.excluded_by_reason, reason.as_str()),
            Counter::FailedClass { class, .. } => (&mut self.failed_by_class, class.as_str()),
            Counter::FailedCode { code, .. } => (&mut self.failed_by_code, code.as_str()),
            Counter::HeldByMeta { status, .. } => (&mut self.held_by_meta, status.as_str()),
            _ => return,
        };
        add_to(map, key, v);
    }

    pub fn count(&self, state: DispatchState) -> u64 {
        self.by_state.get(state.as_str()).copied().unwrap_or(0)
    }

    /// Contacts counted here, in any state.
    pub fn total(&self) -> u64 {
        self.by_state.values().sum()
    }

    pub fn excluded(&self) -> u64 {
        self.excluded_by_reason.values().sum()
    }

    pub fn reached(&self, stage: DispatchState) -> u64 {
        self.reached.get(stage.as_str()).copied().unwrap_or(0)
    }

    /// The seeds' percentages: delivered of sent, read of delivered,
    /// replied of delivered.
    pub fn ratios(&self) -> Ratios {
        let sent = self.reached(DispatchState::Sent);
        let delivered = self.reached(DispatchState::Delivered);
        Ratios {
            received_by: ratio(delivered, sent),
            read_by: ratio(self.reached(DispatchState::Read), delivered),
            replied_by: ratio(self.reached(DispatchState::Replied), delivered),
        }
    }
}

/// Funnel ratios as the campaign products report them, in percent.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Ratios {
    /// delivered / sent.
    pub received_by: Option<f64>,
    /// read / delivered.
    pub read_by: Option<f64>,
    /// replied / delivered.
    pub replied_by: Option<f64>,
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct CampaignSummary {
    pub campaign_id: String,
    /// `real` or `test`, when the campaign's spec is known (set by the
    /// caller: the rows do not say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::domain::CampaignKind>,
    /// Every contact recorded for the campaign (pending, excluded or beyond).
    pub staged: u64,
    /// Contacts by the state of their current journey step.
    #[serde(flatten)]
    pub contacts: StepTally,
    /// Contacts whose journey waits for a later step: a timer in the store
    /// (their current step's state is counted in `by_state` too).
    pub waiting: u64,
    /// Journeys credited with a goal conversion (docs/ARCHITECTURE.md,
    /// "Goals and conversions").
    pub converted: u64,
    /// The value of those conversions, by currency.
    pub conversion_value: BTreeMap<String, f64>,
    /// Journeys whose conversion stopped steps not sent yet (the goal's
    /// `stops_journey`).
    pub stopped_by_conversion: u64,
    /// Messages Meta bills, by pricing category and country (every step's).
    #[serde(skip)]
    pub billable: crate::domain::BillableTally,
    /// The billable messages priced by the rate card, once
    /// [`CampaignSummary::price`] was given one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::domain::CostEstimate>,
    /// Every step contacts went through (the first is `""`), history
    /// included: shown by [`CampaignSummary::steps_view`].
    #[serde(skip)]
    pub steps: BTreeMap<String, StepTally>,
    /// Timers set, by the step they wait for.
    #[serde(skip)]
    pub timers: BTreeMap<String, u64>,
}

pub use crate::store::FUNNEL;

/// Adds `v` (a whole number of contacts, or minus one) to `map[key]`,
/// creating the entry.
fn add_to(map: &mut BTreeMap<String, u64>, key: &str, v: f64) {
    add_whole(map.entry(key.to_string()).or_default(), v);
}

/// Adds `v` (a whole number) to a count that never goes below zero.
fn add_whole(n: &mut u64, v: f64) {
    *n = n.saturating_add_signed(v as i64);
}

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
    /// The campaign's summary: from the counts the store keeps with the
    /// rows when it keeps them (the embedded store), else from a scan of
    /// every row (docs/ARCHITECTURE.md, "Progress and counts").
    pub async fn compute(store: &dyn Store, campaign: &str) -> StoreResult<Self> {
        match store.tally(campaign).await? {
            Some(counters) => Ok(Self::from_counters(campaign, &counters)),
            None => Self::scan(store, campaign).await,
        }
    }

    /// The summary from a scan of every row of the campaign.
    pub async fn scan(store: &dyn Store, campaign: &str) -> StoreResult<Self> {
        let mut summary = CampaignSummary {
            campaign_id: campaign.to_string(),
            ..Default::default()
        };
        scan_rows(store, campaign, |row| summary.add(row)).await?;
        Ok(summary)
    }

    /// The summary of kept counts (zero counts are left out, as a scan
    /// never makes them).
    pub fn from_counters(campaign: &str, counters: &[(Counter, f64)]) -> Self {
        let mut summary = CampaignSummary {
            campaign_id: campaign.to_string(),
            ..Default::default()
        };
        for (c, v) in counters.iter().filter(|(_, v)| *v != 0.0) {
            summary.bump(c, *v);
        }
        summary
    }

    fn add(&mut self, row: &DispatchRecord) {
        for (c, v) in row.tally() {
            self.bump(&c, v);
        }
    }

    /// Adds `v` to the counter `counter` names.
    fn bump(&mut self, counter: &Counter, v: f64) {
        match counter {
            Counter::Staged => add_whole(&mut self.staged, v),
            Counter::Waiting => add_whole(&mut self.waiting, v),
            Counter::Converted => add_whole(&mut self.converted, v),
            Counter::StoppedByConversion => add_whole(&mut self.stopped_by_conversion, v),
            Counter::Timer(step) => add_to(&mut self.timers, step, v),
            Counter::ConversionValue(currency) => {
                *self.conversion_value.entry(currency.clone()).or_default() += v;
            }
            Counter::Billable { category, country } => add_to(
                self.billable.messages.entry(category.clone()).or_default(),
                country,
                v,
            ),
            Counter::State { step, .. }
            | Counter::Reached { step, .. }
            | Counter::Excluded { step, .. }
            | Counter::FailedClass { step, .. }
            | Counter::FailedCode { step, .. }
            | Counter::HeldByMeta { step, .. } => match step {
                None => self.contacts.bump(counter, v),
                Some(step) => self.step_mut(step).bump(counter, v),
            },
        }
    }

    fn step_mut(&mut self, step: &str) -> &mut StepTally {
        if !self.steps.contains_key(step) {
            self.steps.insert(step.to_string(), StepTally::default());
        }
        self.steps.get_mut(step).expect("inserted above")
    }

    pub fn count(&self, state: DispatchState) -> u64 {
        self.contacts.count(state)
    }

    /// Prices the billable messages under `card` (the cost per conversion
    /// counts this summary's conversions).
    pub fn price(&mut self, card: &crate::domain::RateCard) {
        self.cost = Some(self.billable.estimate(card, self.converted));
    }

    pub fn excluded(&self) -> u64 {
        self.contacts.excluded()
    }

    pub fn reached(&self, stage: DispatchState) -> u64 {
        self.contacts.reached(stage)
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

/// A summary as `report --summary` prints it: the campaign's funnel with
/// the products' ratios, and every step of its journey.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SummaryView<'a> {
    #[serde(flatten)]
    pub summary: &'a CampaignSummary,
    /// Pending, claimed, deferred or waiting: not final yet.
    pub open: u64,
    #[serde(flatten)]
    pub ratios: Ratios,
    /// excluded + failed.
    pub not_sent_to: u64,
    /// converted / accepted, in percent: the journeys a message reached
    /// that reached the goal.
    pub conversion_rate: Option<f64>,
    /// Messages Meta reports as billable, by pricing category.
    pub billable: BTreeMap<String, u64>,
    /// The journey step by step (one entry for a one-step campaign).
    pub steps: Vec<StepView>,
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
    /// The summary with its ratios and steps; `journey` (from the spec in
    /// the store) names and orders the steps.
    pub fn view(&self, journey: Option<&Journey>) -> SummaryView<'_> {
        SummaryView {
            summary: self,
            open: self.open(),
            ratios: self.contacts.ratios(),
            not_sent_to: self.excluded() + self.count(DispatchState::Failed),
            conversion_rate: ratio(self.converted, self.reached(DispatchState::Accepted)),
            billable: self.billable.by_category(),
            steps: self.steps_view(journey),
        }
    }

    /// Plain-text summary for terminals: the campaign's funnel, then its
    /// journey step by step when it has more than one.
    pub fn render(&self, journey: Option<&Journey>) -> String {
        let v = self.view(journey);
        let pct = percent_text;
        let mut out = match self.kind {
            Some(crate::domain::CampaignKind::Test) => {
                format!("campaign {} (test campaign)\n", self.campaign_id)
            }
            _ => format!("campaign {}\n", self.campaign_id),
        };
        let mut line =
            |label: &str, value: String| out.push_str(&format!("  {label:<28}{value:>10}\n"));
        line("contacts staged", self.staged.to_string());
        line(
            "accepted by WhatsApp",
            self.reached(DispatchState::Accepted).to_string(),
        );
        for (status, n) in &self.contacts.held_by_meta {
            line(&format!("  held by Meta: {status}"), n.to_string());
        }
        line("sent", self.reached(DispatchState::Sent).to_string());
        line(
            "delivered",
            self.reached(DispatchState::Delivered).to_string(),
        );
        line("read", self.reached(DispatchState::Read).to_string());
        line("replied", self.reached(DispatchState::Replied).to_string());
        line("received by (deliv./sent)", pct(v.ratios.received_by));
        line("read by (read/deliv.)", pct(v.ratios.read_by));
        line("replied by (repl./deliv.)", pct(v.ratios.replied_by));
        line("converted", self.converted.to_string());
        line("conversion rate (conv./acc.)", pct(v.conversion_rate));
        for (currency, value) in &self.conversion_value {
            line(&format!("  value ({currency})"), format!("{value:.2}"));
        }
        if self.stopped_by_conversion > 0 {
            line(
                "  journeys it stopped",
                self.stopped_by_conversion.to_string(),
            );
        }
        line("billable messages", self.billable.total().to_string());
        for (category, n) in &v.billable {
            line(&format!("  {category}"), n.to_string());
        }
        if let Some(cost) = &self.cost {
            line(
                &format!("estimated cost ({})", cost.currency),
                format!("{:.2}", cost.total),
            );
            if let Some(per) = cost.per_conversion {
                line("  per conversion", format!("{per:.2}"));
            }
            if cost.unpriced > 0 {
                line("  not priced (no rate)", cost.unpriced.to_string());
            }
        }
        line("not sent to", v.not_sent_to.to_string());
        for (reason, n) in &self.contacts.excluded_by_reason {
            line(&format!("  excluded: {reason}"), n.to_string());
        }
        for (class, n) in &self.contacts.failed_by_class {
            line(&format!("  failed: {class}"), n.to_string());
        }

        line("unknown", self.count(DispatchState::Unknown).to_string());
        line("still open", v.open.to_string());
        if !self.contacts.failed_by_code.is_empty() {
            out.push_str("  failures by code:\n");
            for (code, n) in &self.contacts.failed_by_code {
                let why = code
                    .parse::<i64>()
                    .map(crate::domain::describe_code)
                    .unwrap_or("no error code");
                out.push_str(&format!("    {code:>6} {n:>8}  {why}\n"));
            }
        }
        if v.steps.len() > 1 {
            out.push_str(&steps::render(&v.steps));
        }
        out
    }
}
