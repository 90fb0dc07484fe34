//! Every Prometheus metric wadispatch exports, defined in one place
//! (docs/ARCHITECTURE.md, "Metrics").
//!
//! Call sites use the typed helpers below, never ad-hoc registration. Labels
//! are bounded: campaign ids the process knows, sender ids from config or
//! specs, and fixed vocabularies for status, reason, class and code. Never a
//! phone number or a wamid.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::sync::RwLockExt;
use prometheus::{
    exponential_buckets, CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub audience_records: IntCounterVec,
    pub campaign_specs: IntCounterVec,
    pub dispatch: IntCounterVec,
    pub funnel: IntCounterVec,
    pub failures: IntCounterVec,
    pub exclusions: IntCounterVec,
    pub trigger_cancels: IntCounterVec,
    pub conversions: IntCounterVec,
    pub conversion_value: CounterVec,
    pub conversion_records: IntCounterVec,
    pub whatsapp_request_duration: HistogramVec,
    pub rate_limiter_wait: HistogramVec,
    pub sender_rate: GaugeVec,
    pub sender_rate_limit: GaugeVec,
    pub sender_circuit_open: IntGaugeVec,
    pub campaign_pending: IntGaugeVec,
    pub campaign_state: IntGaugeVec,
    pub kafka_consumer_lag: IntGaugeVec,
    pub store_operation_duration: HistogramVec,
    pub webhook_requests: IntCounterVec,
    pub webhook_statuses: IntCounterVec,
    pub webhook_duration: prometheus::Histogram,
    pub config_reloads: IntCounterVec,
    pub ingest_paused_partitions: IntGaugeVec,
    pub dead_letters_unwritten: IntGaugeVec,
    pub campaign_waiting: IntGaugeVec,
    pub campaign_contacts: IntGaugeVec,
    pub campaign_step_contacts: IntGaugeVec,
    pub campaign_timers: IntGaugeVec,
    pub campaign_eta: GaugeVec,
    pub template_updates: IntCounterVec,
    pub templates_held: prometheus::IntGauge,
    pub portfolio_limit: prometheus::IntGauge,
    pub billable_messages: IntCounterVec,
    pub campaign_cost: GaugeVec,
    pub campaign_cost_per_conversion: GaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn float_counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> CounterVec {
    let c = CounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("metric definition");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        // 100 µs … ~26 s: covers a fast local store write up to a slow Graph API call.
        let latency = exponential_buckets(0.0001, 2.0, 19).expect("buckets");
        Metrics {
            audience_records: counter(
                &r,
                "wadispatch_audience_records_total",
                "Audience records consumed, by result (staged, excluded, duplicate, dlq).",
                &["result"],
            ),
            campaign_specs: counter(
                &r,
                "wadispatch_campaign_specs_total",
                "Campaign specs read from the campaigns topic, by result (applied, invalid, deleted, refused).",
                &["result"],
            ),
            dispatch: counter(
                &r,
                "wadispatch_dispatch_total",
                "Send attempts by journey step and outcome (accepted, failed, unknown, excluded, deferred, retry).",
                &["campaign", "step", "sender", "status"],
            ),
            funnel: counter(
                &r,
                "wadispatch_funnel_total",
                "Contacts reaching a funnel stage (sent, delivered, read, replied, failed) at a journey step.",
                &["campaign", "step", "stage"],
            ),
            failures: counter(
                &r,
                "wadispatch_failures_total",
                "WhatsApp errors by class and code.",
                &["campaign", "class", "code"],
            ),
            exclusions: counter(
                &r,
                "wadispatch_exclusions_total",
                "Contacts excluded (or journey steps skipped), by step and reason.",
                &["campaign", "step", "reason"],
            ),
            trigger_cancels: counter(
                &r,
                "wadispatch_trigger_cancels_total",
                "Cancelling events of triggered campaigns, by outcome: cancelled (the occurrence was pending), ahead (it came before its trigger, which will not send), stopped (the message had left; the later steps were stopped), late (nothing was left to stop).",
                &["campaign", "outcome"],
            ),
            conversions: counter(
                &r,
                "wadispatch_conversions_total",
                "Goal conversions credited to a campaign's journey (once per journey), by goal.",
                &["campaign", "goal"],
            ),
            conversion_value: float_counter(
                &r,
                "wadispatch_conversion_value_total",
                "Value of the conversions credited to a campaign, by currency.",
                &["campaign", "currency"],
            ),
            conversion_records: counter(
                &r,
                "wadispatch_conversion_records_total",
                "Records read from the conversions topic, by outcome: recorded, duplicate (the journey had its conversion), unknown_campaign, goal_not_declared, not_in_campaign, no_campaign (credited to none), dlq (unreadable).",
                &["outcome"],
            ),
            whatsapp_request_duration: histogram(
                &r,
                "wadispatch_whatsapp_request_duration_seconds",
                "Latency of WhatsApp Cloud API send requests.",
                &["sender"],
                latency.clone(),
            ),
            rate_limiter_wait: histogram(
                &r,
                "wadispatch_rate_limiter_wait_seconds",
                "Time a send waited for the sender's rate limiter.",
                &["sender"],
                latency.clone(),
            ),
            sender_rate: gauge(
                &r,
                "wadispatch_sender_rate",
                "Current messages per second a sender is allowed (after AIMD and instance share).",
                &["sender"],
            ),
            sender_rate_limit: gauge(
                &r,
                "wadispatch_sender_rate_limit",
                "Configured messages per second of a sender.",
                &["sender"],
            ),
            sender_circuit_open: int_gauge(
                &r,
                "wadispatch_sender_circuit_open",
                "1 while a sender's circuit is open: its recent sends failed transiently (outage) and it waits to probe; its contacts stay pending.",
                &["sender"],
            ),
            campaign_pending: int_gauge(
                &r,
                "wadispatch_campaign_pending",
                "Contacts staged and not yet claimed.",
                &["campaign"],
            ),
            campaign_state: int_gauge(
                &r,
                "wadispatch_campaign_state",
                "1 for the observed state of each campaign.",
                &["campaign", "state"],
            ),
            kafka_consumer_lag: int_gauge(
                &r,
                "wadispatch_kafka_consumer_lag",
                "Records behind the high watermark, summed over owned partitions.",
                &["topic"],
            ),
            store_operation_duration: histogram(
                &r,
                "wadispatch_store_operation_duration_seconds",
                "Latency of store operations.",
                &["op"],
                latency,
            ),
            webhook_requests: counter(
                &r,
                "wadispatch_webhook_requests_total",
                "Webhook requests by result (ok, bad_signature, bad_request, error, verified, forbidden).",
                &["result"],
            ),
            webhook_statuses: counter(
                &r,
                "wadispatch_webhook_statuses_total",
                "Webhook statuses by result (applied, duplicate, parked, uncorrelated, unknown_contact, rejected).",
                &["result"],
            ),
            webhook_duration: {
                let h = prometheus::Histogram::with_opts(
                    HistogramOpts::new(
                        "wadispatch_webhook_duration_seconds",
                        "Time to apply one webhook POST durably (Meta expects well under 1 s).",
                    )
                    .buckets(exponential_buckets(0.0001, 2.0, 15).expect("buckets")),
                )
                .expect("metric definition");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            config_reloads: counter(
                &r,
                "wadispatch_config_reloads_total",
                "Config reloads by result (applied, unchanged, invalid, rejected).",
                &["result"],
            ),
            campaign_waiting: int_gauge(
                &r,
                "wadispatch_campaign_waiting",
                "1 while a campaign waits, by reason (portfolio_limit, senders_halted, senders_unavailable, lease).",
                &["campaign", "reason"],
            ),
            ingest_paused_partitions: int_gauge(
                &r,
                "wadispatch_ingest_paused_partitions",
                "Audience partitions paused by backpressure.",
                &["topic"],
            ),
            dead_letters_unwritten: int_gauge(
                &r,
                "wadispatch_dead_letters_unwritten",
                "Audience records bound for the dead-letter topic that it has not acknowledged yet (above 0 for minutes: the DLQ is failing).",
                &["topic"],
            ),
            campaign_contacts: int_gauge(
                &r,
                "wadispatch_campaign_contacts",
                "Contacts of a campaign by dispatch state, from the store (every instance reports the same numbers; aggregate with max); kind is real or test.",
                &["campaign", "kind", "state"],
            ),
            campaign_step_contacts: int_gauge(
                &r,
                "wadispatch_campaign_step_contacts",
                "Contacts that reached a journey step, by the state they are (or ended) in at that step, from the store (aggregate with max).",
                &["campaign", "step", "state"],
            ),
            campaign_timers: int_gauge(
                &r,
                "wadispatch_campaign_timers",
                "Contacts whose journey waits for a later step (a timer in the store), by the step they wait for.",
                &["campaign", "step"],
            ),
            campaign_eta: gauge(
                &r,
                "wadispatch_campaign_eta_seconds",
                "Estimated seconds until the campaign's pending contacts are sent at its current pace.",
                &["campaign"],
            ),
            template_updates: counter(
                &r,
                "wadispatch_template_updates_total",
                "What Meta said of templates, by event: a status (APPROVED, PAUSED, DISABLED, REJECTED, ...; OTHER for a status this version does not know), quality_<score>, or error_132015 / error_132016 from a send.",
                &["event"],
            ),
            templates_held: {
                let g = prometheus::IntGauge::new(
                    "wadispatch_templates_held",
                    "Templates that may not be sent now (paused, disabled, rejected, RED by policy): the campaigns that use them hold.",
                )
                .expect("metric definition");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            portfolio_limit: {
                let g = prometheus::IntGauge::new(
                    "wadispatch_portfolio_limit",
                    "The portfolio limit in force (unique recipients per rolling 24 h): dispatch.portfolio_daily_limit as a ceiling over the messaging limit Meta states; -1 when there is none.",
                )
                .expect("metric definition");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            billable_messages: counter(
                &r,
                "wadispatch_billable_messages_total",
                "Messages Meta reports as billable (the pricing object of their first status), by campaign and pricing category.",
                &["campaign", "category"],
            ),
            campaign_cost: gauge(
                &r,
                "wadispatch_campaign_estimated_cost",
                "A campaign's billable messages priced by the rate card ([pricing]), in its currency; absent without a rate card.",
                &["campaign", "currency"],
            ),
            campaign_cost_per_conversion: gauge(
                &r,
                "wadispatch_campaign_cost_per_conversion",
                "wadispatch_campaign_estimated_cost over the campaign's goal conversions; absent without a rate card or a conversion.",
                &["campaign", "currency"],
            ),
            registry: r,
        }
    }

    /// Names of every metric family registered here (with `_total` for
    /// counters, without the `_bucket`/`_sum`/`_count` series suffixes).
    pub fn names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 36] = [
            &self.audience_records,
            &self.campaign_specs,
            &self.dispatch,
            &self.funnel,
            &self.failures,
            &self.exclusions,
            &self.trigger_cancels,
            &self.conversions,
            &self.conversion_value,
            &self.conversion_records,
            &self.whatsapp_request_duration,
            &self.rate_limiter_wait,
            &self.sender_rate,
            &self.sender_rate_limit,
            &self.sender_circuit_open,
            &self.campaign_pending,
            &self.campaign_state,
            &self.kafka_consumer_lag,
            &self.store_operation_duration,
            &self.webhook_requests,
            &self.webhook_statuses,
            &self.webhook_duration,
            &self.config_reloads,
            &self.ingest_paused_partitions,
            &self.dead_letters_unwritten,
            &self.campaign_waiting,
            &self.campaign_contacts,
            &self.campaign_step_contacts,
            &self.campaign_timers,
            &self.campaign_eta,
            &self.template_updates,
            &self.templates_held,
            &self.portfolio_limit,
            &self.billable_messages,
            &self.campaign_cost,
            &self.campaign_cost_per_conversion,
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
            .collect()
    }

    /// Text exposition for `/metrics` (expired campaign series are dropped
    /// first).
    pub fn render(&self) -> String {
        sweep_campaigns(Instant::now());
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = encoder.encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Results of consuming one audience record.
#[derive(Debug, Clone, Copy)]
pub enum AudienceResult {
    Staged,
    Excluded,
    Duplicate,
    Dlq,
}

pub fn audience_records(result: AudienceResult, n: u64) {
    let label = match result {
        AudienceResult::Staged => "staged",
        AudienceResult::Excluded => "excluded",
        AudienceResult::Duplicate => "duplicate",
        AudienceResult::Dlq => "dlq",
    };
    metrics()
        .audience_records
        .with_label_values(&[label])
        .inc_by(n);
}

pub fn campaign_spec(result: &str) {
    metrics().campaign_specs.with_label_values(&[result]).inc();
}

/// A contact excluded at `step` (a journey step's id: the first step's
/// for an exclusion at staging).
pub fn exclusion(campaign: &str, step: &str, reason: &str) {
    let (campaign, step) = step_labels(campaign, step);
    metrics()
        .exclusions
        .with_label_values(&[campaign, step, reason])
        .inc();
}

/// What a cancelling event of a triggered campaign did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    Ahead,
    Stopped,
    Late,
}

impl CancelOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            CancelOutcome::Cancelled => "cancelled",
            CancelOutcome::Ahead => "ahead",
            CancelOutcome::Stopped => "stopped",
            CancelOutcome::Late => "late",
        }
    }
}

pub fn trigger_cancel(campaign: &str, outcome: CancelOutcome) {
    let campaign = campaign_label(campaign);
    metrics()
        .trigger_cancels
        .with_label_values(&[campaign, outcome.as_str()])
        .inc();
}

/// A conversion credited to `campaign`'s journey.
pub fn conversion(campaign: &str, goal: &str, value: Option<f64>, currency: Option<&str>) {
    let campaign = campaign_label(campaign);
    let m = metrics();
    m.conversions.with_label_values(&[campaign, goal]).inc();
    if let (Some(v), Some(c)) = (value, currency) {
        m.conversion_value
            .with_label_values(&[campaign, c])
            .inc_by(v);
    }
}

/// A message of `campaign` Meta bills under `category`.
pub fn billable(campaign: &str, category: &str) {
    let campaign = campaign_label(campaign);
    // A bounded label: Meta's categories, anything else as `other`.
    let category = if crate::domain::PRICED_CATEGORIES.contains(&category) {
        category
    } else {
        "other"
    };
    metrics()
        .billable_messages
        .with_label_values(&[campaign, category])
        .inc();
}

/// A campaign's estimated cost under the rate card, and per conversion
/// when it has any.
pub fn campaign_cost(campaign: &str, cost: &crate::domain::CostEstimate) {
    let campaign = campaign_label(campaign);
    let m = metrics();
    let labels = [campaign, cost.currency.as_str()];
    m.campaign_cost.with_label_values(&labels).set(cost.total);
    if let Some(per) = cost.per_conversion {
        m.campaign_cost_per_conversion
            .with_label_values(&labels)
            .set(per);
    }
}

/// One record of the conversions topic handled (`recorded`, `duplicate`,
/// an unattributed reason, `dlq`).
pub fn conversion_record(outcome: &str) {
    metrics()
        .conversion_records
        .with_label_values(&[outcome])
        .inc();
}

/// Something Meta said of a template (`event`: a bounded word, see
/// [`Metrics::template_updates`]).
pub fn template_update(event: &str) {
    metrics().template_updates.with_label_values(&[event]).inc();
}

/// The portfolio limit in force (`None`: no limit, shown as -1).
pub fn portfolio_limit(limit: Option<u64>) {
    metrics()
        .portfolio_limit
        .set(limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)));
}

/// How many templates are held now.
pub fn templates_held(n: usize) {
    metrics()
        .templates_held
        .set(i64::try_from(n).unwrap_or(i64::MAX));
}

pub fn store_op(op: &str, seconds: f64) {
    metrics()
        .store_operation_duration
        .with_label_values(&[op])
        .observe(seconds);
}

pub fn dead_letters_unwritten(topic: &str, records: usize) {
    metrics()
        .dead_letters_unwritten
        .with_label_values(&[topic])
        .set(records as i64);
}

pub fn consumer_lag(topic: &str, lag: i64) {
    metrics()
        .kafka_consumer_lag
        .with_label_values(&[topic])
        .set(lag);
}

pub fn paused_partitions(topic: &str, n: usize) {
    metrics()
        .ingest_paused_partitions
        .with_label_values(&[topic])
        .set(n as i64);
}

pub fn webhook_request(result: &str) {
    metrics()
        .webhook_requests
        .with_label_values(&[result])
        .inc();
}

pub fn webhook_status(result: &str) {
    metrics()
        .webhook_statuses
        .with_label_values(&[result])
        .inc();
}

pub fn webhook_duration(seconds: f64) {
    metrics().webhook_duration.observe(seconds);
}

/// A contact reached a funnel stage (only stages of the funnel count).
pub fn funnel(campaign: &str, step: &str, stage: crate::domain::DispatchState) {
    use crate::domain::DispatchState::*;
    if matches!(stage, Sent | Delivered | Read | Replied | Failed) {
        let (campaign, step) = step_labels(campaign, step);
        metrics()
            .funnel
            .with_label_values(&[campaign, step, stage.as_str()])
            .inc();
    }
}

pub fn failure(campaign: &str, class: &str, code: Option<i64>) {
    let code = code.map(|c| c.to_string()).unwrap_or_else(|| "none".into());
    let campaign = campaign_label(campaign);
    metrics()
        .failures
        .with_label_values(&[campaign, class, &code])
        .inc();
}

pub fn sender_rate(sender: &str, current: f64, configured: f64) {
    let m = metrics();
    m.sender_rate.with_label_values(&[sender]).set(current);
    m.sender_rate_limit
        .with_label_values(&[sender])
        .set(configured);
}

pub fn sender_circuit(sender: &str, open: bool) {
    metrics()
        .sender_circuit_open
        .with_label_values(&[sender])
        .set(i64::from(open));
}

pub fn limiter_wait(sender: &str, seconds: f64) {
    metrics()
        .rate_limiter_wait
        .with_label_values(&[sender])
        .observe(seconds);
}

pub fn whatsapp_request(sender: &str, seconds: f64) {
    metrics()
        .whatsapp_request_duration
        .with_label_values(&[sender])
        .observe(seconds);
}

pub fn dispatch(campaign: &str, step: &str, sender: &str, status: &str) {
    let (campaign, step) = step_labels(campaign, step);
    metrics()
        .dispatch
        .with_label_values(&[campaign, step, sender, status])
        .inc();
}

/// Gauges of one campaign: skipped when it is folded into `_other` (a sum
/// of gauges from several campaigns written one at a time means nothing).
pub fn campaign_pending(campaign: &str, n: u64) {
    if has_own_series(campaign) {
        metrics()
            .campaign_pending
            .with_label_values(&[campaign])
            .set(n as i64);
    }
}

/// What one count of a campaign's rows found, for its gauges.
pub struct Progress<'a> {
    /// `real` or `test`.
    pub kind: crate::domain::CampaignKind,
    /// Contacts by the state of their current step.
    pub by_state: &'a [(&'a str, u64)],
    /// (step, state, contacts) for every step contacts went through.
    pub by_step: &'a [(&'a str, &'a str, u64)],
    /// (step, contacts waiting for it).
    pub timers: &'a [(&'a str, u64)],
    pub eta_seconds: Option<f64>,
}

/// Contacts by dispatch state (overall and per journey step), timers
/// waiting, and the estimated time to completion.
pub fn campaign_progress(campaign: &str, p: &Progress<'_>) {
    if !has_own_series(campaign) {
        return;
    }
    let m = metrics();
    // A spec republished with the other kind leaves no series behind.
    let other = match p.kind {
        crate::domain::CampaignKind::Real => crate::domain::CampaignKind::Test,
        crate::domain::CampaignKind::Test => crate::domain::CampaignKind::Real,
    };
    for (state, n) in p.by_state {
        let _ = m
            .campaign_contacts
            .remove_label_values(&[campaign, other.as_str(), state]);
        m.campaign_contacts
            .with_label_values(&[campaign, p.kind.as_str(), state])
            .set(*n as i64);
    }
    for (step, state, n) in p.by_step {
        m.campaign_step_contacts
            .with_label_values(&[campaign, step, state])
            .set(*n as i64);
    }
    for (step, n) in p.timers {
        m.campaign_timers
            .with_label_values(&[campaign, step])
            .set(*n as i64);
    }
    let eta_seconds = p.eta_seconds;
    match eta_seconds {
        Some(eta) => m.campaign_eta.with_label_values(&[campaign]).set(eta),
        None => {
            let _ = m.campaign_eta.remove_label_values(&[campaign]);
        }
    }
}

/// Sets the state gauge: 1 for `state`, 0 for the others.
pub fn campaign_state(campaign: &str, state: crate::domain::ObservedState) {
    if state == crate::domain::ObservedState::Ended {
        campaign_ended(campaign);
    }
    if !has_own_series(campaign) {
        return;
    }
    for s in crate::domain::ObservedState::ALL {
        metrics()
            .campaign_state
            .with_label_values(&[campaign, s.as_str()])
            .set(i64::from(s == state));
    }
}

pub fn config_reload(result: &str) {
    metrics().config_reloads.with_label_values(&[result]).inc();
}

/// Marks why a campaign waits (1 for `reason`, 0 for the other reasons).
pub fn campaign_wait(campaign: &str, reason: Option<&str>) {
    if !has_own_series(campaign) {
        return;
    }
    for r in [
        "portfolio_limit",
        "senders_halted",
        "senders_unavailable",
        "lease",
    ] {
        metrics()
            .campaign_waiting
            .with_label_values(&[campaign, r])
            .set(i64::from(reason == Some(r)));
    }
}

/// The label value campaigns beyond `metrics.max_campaign_series` share.
pub const OTHER_CAMPAIGNS: &str = "_other";

/// Which campaigns have series of their own (bounded cardinality).
struct CampaignLabels {
    cap: usize,
    grace: Duration,
    /// Campaigns with their own series; the instant they ended, if they did.
    own: HashMap<String, Option<Instant>>,
}

fn labels() -> &'static RwLock<CampaignLabels> {
    static LABELS: OnceLock<RwLock<CampaignLabels>> = OnceLock::new();
    LABELS.get_or_init(|| {
        RwLock::new(CampaignLabels {
            cap: 200,
            grace: Duration::from_secs(3_600),
            own: HashMap::new(),
        })
    })
}

fn lock_labels() -> std::sync::RwLockWriteGuard<'static, CampaignLabels> {
    labels().write_or_recover()
}

/// Sets the cap (`metrics.max_campaign_series`) and the grace period after a
/// campaign ended (`metrics.ended_campaign_grace_secs`).
pub fn configure_campaigns(cap: usize, grace: Duration) {
    let mut l = lock_labels();
    l.cap = cap;
    l.grace = grace;
}

/// The `campaign` and `step` labels: a campaign folded into
/// [`OTHER_CAMPAIGNS`] folds its steps too (step ids are bounded per
/// campaign, not across the campaigns beyond the cap).
fn step_labels<'a>(campaign: &'a str, step: &'a str) -> (&'a str, &'a str) {
    if has_own_series(campaign) {
        (campaign, step)
    } else {
        (OTHER_CAMPAIGNS, OTHER_CAMPAIGNS)
    }
}

/// The `campaign` label for `id`: its own id while there is room under the
/// cap (or it already has series), else [`OTHER_CAMPAIGNS`].
pub fn campaign_label(id: &str) -> &str {
    if has_own_series(id) {
        id
    } else {
        OTHER_CAMPAIGNS
    }
}

/// Whether the campaign has (or now gets) series of its own. Called for every
/// recorded message: a known campaign costs a shared read lock, no allocation.
fn has_own_series(id: &str) -> bool {
    {
        let l = labels().read_or_recover();
        if l.own.contains_key(id) {
            return true;
        }
        if l.own.len() >= l.cap {
            return false;
        }
    }
    let mut l = lock_labels();
    if l.own.contains_key(id) {
        return true;
    }
    if l.own.len() < l.cap {
        l.own.insert(id.to_string(), None);
        return true;
    }
    false
}

/// Starts the grace period of an ended campaign's series.
pub fn campaign_ended(id: &str) {
    if let Some(ended) = lock_labels().own.get_mut(id) {
        ended.get_or_insert_with(Instant::now);
    }
}

/// Removes the series of campaigns that ended more than the grace period
/// ago (called at every scrape) and frees their places under the cap.
pub fn sweep_campaigns(now: Instant) -> usize {
    let expired: Vec<String> = {
        let mut l = lock_labels();
        let grace = l.grace;
        let expired: Vec<String> = l
            .own
            .iter()
            .filter(|(_, ended)| ended.is_some_and(|t| now.duration_since(t) >= grace))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            l.own.remove(id);
        }
        expired
    };
    for id in &expired {
        forget_campaign_series(id);
    }
    expired.len()
}

/// Drops every series labelled `campaign = id`.
fn forget_campaign_series(id: &str) {
    use prometheus::core::Collector;
    let m = metrics();
    fn purge<V: Collector>(collector: &V, remove: impl Fn(&HashMap<&str, &str>)) {
        let id_families = collector.collect();
        for family in &id_families {
            for metric in family.get_metric() {
                let labels: HashMap<&str, &str> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                remove(&labels);
            }
        }
    }
    macro_rules! purge_vec {
        ($vec:expr) => {
            purge(&$vec, |labels| {
                if labels.get("campaign") == Some(&id) {
                    let _ = $vec.remove(labels);
                }
            })
        };
    }
    purge_vec!(m.dispatch);
    purge_vec!(m.funnel);
    purge_vec!(m.failures);
    purge_vec!(m.exclusions);
    purge_vec!(m.trigger_cancels);
    purge_vec!(m.conversions);
    purge_vec!(m.conversion_value);
    purge_vec!(m.campaign_pending);
    purge_vec!(m.campaign_state);
    purge_vec!(m.campaign_waiting);
    purge_vec!(m.campaign_contacts);
    purge_vec!(m.campaign_step_contacts);
    purge_vec!(m.campaign_timers);
    purge_vec!(m.campaign_eta);
    purge_vec!(m.billable_messages);
    purge_vec!(m.campaign_cost);
    purge_vec!(m.campaign_cost_per_conversion);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lists_every_family() {
        let names = metrics().names();
        assert_eq!(names.len(), 36);
        assert!(names.contains(&"wadispatch_billable_messages_total".to_string()));
        assert!(names.contains(&"wadispatch_portfolio_limit".to_string()));
        assert!(names.contains(&"wadispatch_templates_held".to_string()));
        assert!(names.contains(&"wadispatch_sender_circuit_open".to_string()));
        assert!(names.contains(&"wadispatch_trigger_cancels_total".to_string()));
        assert!(names.contains(&"wadispatch_conversion_value_total".to_string()));
        assert!(names.contains(&"wadispatch_funnel_total".to_string()));
        assert!(names.contains(&"wadispatch_store_operation_duration_seconds".to_string()));
    }
}
