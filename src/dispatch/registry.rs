//! `CampaignRegistry`: materialises the campaign catalog into campaign
//! actors, owns the sender actors, applies operator overrides and reloads,
//! and keeps every sender's rate at this instance's share of the audience
//! partitions (several instances split each sender's limit with no
//! coordinator; docs/ARCHITECTURE.md, "Data flow").

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::campaign::{CampaignActor, CampaignControl, CampaignState, DispatchEnv, Pump};
use super::policy::backoff::RetryPolicy;
use super::policy::circuit::CircuitSettings;
use super::policy::lifecycle;
use super::sender::pool::SenderMap;
use super::sender::{Reconfigure, SenderActor, SenderCore, SenderSettings};
use super::sms::SmsChannel;
use crate::config::Config;
use crate::domain::ContactKey;
use crate::events::{Event, EventsProducer};
use crate::ingest::audience::IngestStats;
use crate::ingest::catalog::{CampaignCatalog, CatalogChange};
use crate::store::Store;
use crate::sync::{MutexExt, RwLockExt};
use crate::whatsapp::client::WhatsAppClient;

/// Unique recipients per rolling 24 h, across campaigns (Meta's messaging
/// limit tiers count unique users a business initiates conversations with).
/// Recipients in send order, and the same set for lookups.
type Window = (VecDeque<(DateTime<Utc>, ContactKey)>, HashSet<ContactKey>);

/// This process's view of the portfolio limit. The count itself is in the
/// store (`Store::count_recipient`, shared by every instance and kept across
/// restarts); this view only spares the store the contacts that must wait:
/// while the store said the window is full, or this process alone filled
/// it, a contact not counted here already waits without a store call.
#[derive(Default)]
pub struct PortfolioLimit {
    /// `dispatch.portfolio_daily_limit`: a ceiling over Meta's limit.
    limit: Mutex<Option<u64>>,
    /// The messaging limit Meta stated (shared with the webhook receiver).
    pub learned: Arc<super::limits::LimitBook>,
    window: Mutex<Window>,
    /// The store found the window full; the first place frees then.
    full_until: Mutex<Option<DateTime<Utc>>>,
    /// The generation of `learned` when `full_until` was last valid: a new
    /// limit from Meta makes the store's answer stale.
    seen: std::sync::atomic::AtomicU64,
}

impl PortfolioLimit {
    pub fn set_limit(&self, limit: Option<u64>) {
        *self.limit.lock_or_recover() = limit;
        *self.full_until.lock_or_recover() = None;
    }

    /// A portfolio limit that reads what Meta says from `learned`.
    pub fn with_book(learned: Arc<super::limits::LimitBook>) -> Self {
        PortfolioLimit {
            learned,
            ..Default::default()
        }
    }

    /// The limit in force: the configured ceiling over Meta's limit.
    pub fn limit(&self) -> Option<u64> {
        crate::domain::MessagingLimit::effective(
            *self.limit.lock_or_recover(),
            self.learned.limit(),
        )
    }

    /// Where the limit in force comes from, in words.
    pub fn describe(&self) -> Option<String> {
        let limit = self.limit()?;
        let configured = *self.limit.lock_or_recover();
        Some(match self.learned.learned() {
            Some(l) if configured != Some(limit) || configured.is_none() => format!(
                "{limit} unique recipients per 24 h (Meta's messaging limit, from {} at {})",
                l.source,
                l.at.format("%Y-%m-%d %H:%M UTC")
            ),
            _ => format!("{limit} unique recipients per 24 h (dispatch.portfolio_daily_limit)"),
        })
    }

    /// `wadispatch_portfolio_limit`: the limit in force, -1 for none.
    pub fn publish(&self) {
        crate::metrics::portfolio_limit(self.limit());
    }

    /// The store found every place taken until `until`.
    pub fn full(&self, until: DateTime<Utc>) {
        *self.full_until.lock_or_recover() = Some(until);
    }

    fn prune(
        window: &mut (VecDeque<(DateTime<Utc>, ContactKey)>, HashSet<ContactKey>),
        now: DateTime<Utc>,
    ) {
        while let Some((t, _)) = window.0.front() {
            if now - *t < chrono::Duration::hours(24) {
                break;
            }
            if let Some((_, c)) = window.0.pop_front() {
                window.1.remove(&c);
            }
        }
    }

    pub fn wait(&self, contact: &ContactKey, now: DateTime<Utc>) -> Option<String> {
        let limit = self.limit()?;
        let generation = self.learned.generation();
        if self
            .seen
            .swap(generation, std::sync::atomic::Ordering::AcqRel)
            != generation
        {
            *self.full_until.lock_or_recover() = None;
        }
        let full = self.full_until.lock_or_recover().is_some_and(|t| t > now);
        let mut w = self.window.lock_or_recover();
        Self::prune(&mut w, now);
        // A recipient is the contact, whichever occurrence's row it is.
        ((full || w.1.len() as u64 >= limit) && !w.1.contains(&contact.recipient())).then(|| {
            format!(
                "portfolio limit of {} reached",
                self.describe()
                    .unwrap_or_else(|| format!("{limit} unique recipients per 24 h"))
            )
        })
    }

    /// Seconds until `remaining` more recipients fit under the limit, as
    /// far as this process can tell: the places free now go at once, the
    /// rest as places free (24 h after each was taken, the window's oldest
    /// first), a limit's worth per day. None without a limit or
    /// when they fit now. An estimate: other instances' recipients are in
    /// the store's count, not in this window (a full store answer stands
    /// for them).
    pub fn eta(&self, remaining: u64, now: DateTime<Utc>) -> Option<f64> {
        let limit = self.limit()?.max(1);
        let day = chrono::Duration::hours(24);
        let full_until = (*self.full_until.lock_or_recover()).filter(|t| *t > now);
        let mut w = self.window.lock_or_recover();
        Self::prune(&mut w, now);
        let used = (w.1.len() as u64).min(limit);
        let free = if full_until.is_some() {
            0
        } else {
            limit - used
        };
        let extra = remaining.checked_sub(free).filter(|e| *e > 0)?;
        // Each place frees 24 h after it was taken, and again every 24 h:
        // the window's recipients in time order, then the free places taken
        // now (all of them at the store's `full_until` when it said full).
        let (place, round) = ((extra - 1) % limit, (extra - 1) / limit);
        let frees = match full_until {
            Some(until) => until,
            None => {
                w.0.get(place as usize)
                    .filter(|_| place < used)
                    .map_or(now + day, |(t, _)| *t + day)
            }
        };
        let at = frees + day * i32::try_from(round).unwrap_or(i32::MAX / 2);
        Some(((at - now).num_milliseconds().max(0) as f64 / 1000.0).round())
    }

    pub fn note(&self, contact: &ContactKey, now: DateTime<Utc>) {
        let mut w = self.window.lock_or_recover();
        let recipient = contact.recipient();
        if w.1.insert(recipient.clone()) {
            w.0.push_back((now, recipient));
        }
    }
}

/// The process-side services campaigns use (see [`DispatchEnv`]).
pub struct Env {
    pub ingest: Arc<IngestStats>,
    pub catalog: CampaignCatalog,
    pub campaigns: Arc<RwLock<HashMap<String, Arc<CampaignState>>>>,
    pub suppressions: crate::ingest::suppressions::SuppressionList,
    pub portfolio: PortfolioLimit,
    pub leases: Arc<crate::dispatch::lease::Leases>,
    pub events: Option<EventsProducer>,
    /// `dispatch.resend_unknown_after_secs`, kept current by reloads.
    pub resend_unknown_after: RwLock<Option<u64>>,
    /// `dispatch.marketing_per_contact`, kept current by reloads.
    pub marketing_cap: RwLock<Option<crate::domain::FrequencyCap>>,
    /// What Meta said of each template; read before every claim.
    pub templates: Arc<crate::dispatch::templates::TemplateBook>,
    /// `[pricing]`, kept current by reloads.
    pub rate_card: RwLock<Option<Arc<crate::domain::RateCard>>>,
    /// `whatsapp.marketing_limit_retry` (restart required).
    pub marketing_limit_retry: RwLock<crate::domain::DeferralSchedule>,
    /// `whatsapp.marketing_messages` and its overrides, kept current by
    /// reloads.
    pub marketing_messages: RwLock<MarketingRouting>,
}

/// `whatsapp.marketing_messages` with the overrides of `[senders]` and
/// `[campaigns]`.
#[derive(Debug, Default)]
pub struct MarketingRouting {
    global: crate::domain::MarketingMessages,
    senders: HashMap<String, crate::domain::MarketingMessages>,
    campaigns: HashMap<String, crate::domain::MarketingMessages>,
}

impl MarketingRouting {
    fn of(config: &Config) -> Self {
        MarketingRouting {
            global: config.whatsapp.marketing_messages,
            senders: config
                .senders
                .iter()
                .filter_map(|(id, s)| Some((id.clone(), s.marketing_messages?)))
                .collect(),
            campaigns: config
                .campaigns
                .iter()
                .filter_map(|(id, c)| Some((id.clone(), c.marketing_messages?)))
                .collect(),
        }
    }
}

impl Env {
    /// Takes the values of `[dispatch]` the pumps read live.
    fn apply_dispatch(&self, config: &Config) {
        let d = &config.dispatch;
        self.portfolio.set_limit(d.portfolio_daily_limit);
        self.portfolio.publish();
        self.templates
            .set_policy(config.whatsapp.template_red_quality);
        *self.resend_unknown_after.write_or_recover() = d.resend_unknown_after_secs;
        // Validated at load: a cap that does not parse never gets here.
        *self.marketing_cap.write_or_recover() =
            d.marketing_per_contact.as_ref().and_then(|c| c.cap().ok());
        *self.rate_card.write_or_recover() = config.pricing.clone().map(Arc::new);
        *self.marketing_limit_retry.write_or_recover() = config.whatsapp.marketing_limit_retry;
        *self.marketing_messages.write_or_recover() = MarketingRouting::of(config);
    }
}

impl DispatchEnv for Env {
    fn owned_shards(&self) -> Vec<u32> {
        self.ingest.owned_shards()
    }

    fn releases_engagement(&self, campaign: &str) -> bool {
        let Some(entry) = self.catalog.get(campaign) else {
            return true; // deleted: nothing holds the contact any more
        };
        if let Some(state) = self.campaigns.read_or_recover().get(campaign) {
            if let Some(observed) = *state.observed.lock_or_recover() {
                return lifecycle::releases_engagements(observed);
            }
        }
        entry.spec.state == crate::domain::DesiredState::Ended
    }

    fn suppression(&self, contact: &ContactKey) -> Option<String> {
        self.suppressions.reason(contact, Utc::now())
    }

    fn suppressions_ready(&self) -> bool {
        self.suppressions.is_ready()
    }

    fn portfolio_wait(&self, contact: &ContactKey) -> Option<String> {
        self.portfolio.wait(contact, Utc::now())
    }

    fn portfolio_limit(&self) -> Option<u64> {
        self.portfolio.limit()
    }

    fn portfolio_full(&self, until: DateTime<Utc>) {
        self.portfolio.full(until);
    }

    fn portfolio_eta(&self, remaining: u64) -> Option<f64> {
        self.portfolio.eta(remaining, Utc::now())
    }

    fn note_recipient(&self, contact: &ContactKey) {
        self.portfolio.note(contact, Utc::now());
    }

    fn holds_lease(&self) -> bool {
        self.leases.holds(Utc::now())
    }

    fn owner_lapsed(&self, owner: &str) -> bool {
        self.leases.lapsed(owner, Utc::now())
    }

    fn marketing_cap(&self) -> Option<crate::domain::FrequencyCap> {
        *self.marketing_cap.read_or_recover()
    }

    fn rate_card(&self) -> Option<Arc<crate::domain::RateCard>> {
        self.rate_card.read_or_recover().clone()
    }

    fn marketing_limit_retry(&self) -> crate::domain::DeferralSchedule {
        *self.marketing_limit_retry.read_or_recover()
    }

    fn marketing_messages(&self, campaign: &str, sender: &str) -> crate::domain::MarketingMessages {
        let r = self.marketing_messages.read_or_recover();
        crate::domain::MarketingMessages::resolve(
            r.global,
            r.senders.get(sender).copied(),
            r.campaigns.get(campaign).copied(),
        )
    }

    fn resend_unknown_after(&self) -> Option<chrono::Duration> {
        (*self.resend_unknown_after.read_or_recover())
            .and_then(|secs| chrono::Duration::try_seconds(i64::try_from(secs).ok()?))
    }

    fn publish(&self, events: Vec<Event>) {
        if let Some(p) = self.events.clone() {
            tokio::spawn(async move {
                if let Err(e) = p.publish(&events).await {
                    tracing::warn!(error = %e, "events not published (the store holds the truth)");
                }
            });
        }
    }
}

pub struct CampaignRegistry {
    store: Arc<dyn Store>,
    catalog: CampaignCatalog,
    client: WhatsAppClient,
    sms: Option<Arc<SmsChannel>>,
    config: Config,
    env: Arc<Env>,
    senders: SenderMap,
    actors: HashMap<String, Addr<CampaignActor>>,
    owner: String,
    share: f64,
    /// The throughput generation of the limit book last applied.
    throughput_seen: u64,
}

impl CampaignRegistry {
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        catalog: CampaignCatalog,
        client: WhatsAppClient,
        sms: Option<Arc<SmsChannel>>,
        env: Arc<Env>,
        owner: String,
    ) -> Self {
        env.apply_dispatch(&config);
        CampaignRegistry {
            store,
            catalog,
            client,
            sms,
            config,
            env,
            senders: Arc::default(),
            actors: HashMap::new(),
            owner,
            share: 0.0,
            throughput_seen: 0,
        }
    }

    pub fn senders(&self) -> SenderMap {
        self.senders.clone()
    }

    /// The rate sender `id` runs at under `config`: its configured rate,
    /// or Meta's higher throughput once Meta upgraded the number
    /// (`auto_throughput`).
    fn sender_rate(&self, config: &Config, id: &str) -> f64 {
        let book = &self.env.portfolio.learned;
        config.sender(id).rate(|shown| book.upgraded(shown))
    }

    /// Meta upgraded (or a store read brought) a number's throughput: the
    /// senders that follow it take their new rate.
    fn apply_throughput(&mut self) {
        let generation = self.env.portfolio.learned.throughput_generation();
        if generation == self.throughput_seen {
            return;
        }
        self.throughput_seen = generation;
        let book = &self.env.portfolio.learned;
        for (id, (addr, core)) in self.senders.read_or_recover().iter() {
            // Meta's quality standing of the number: flagged until lifted.
            if let Some(shown) = self.config.sender(id).display_phone_number {
                match book.quality(&shown) {
                    Some(q) if crate::domain::quality_flagged(&q.event) == Some(true) => {
                        core.flag_quality(format!("{} on {shown} at {}", q.event, q.at), None)
                    }
                    Some(_) => core.lift_quality(),
                    None => {}
                }
            }
            let rate = self.sender_rate(&self.config, id);
            if (rate - core.configured()).abs() > f64::EPSILON {
                tracing::warn!(sender = %id, from = core.configured(), to = rate, "sender rate follows Meta's throughput for the number");
                addr.do_send(Reconfigure {
                    per_second: Some(rate),
                    share: None,
                    resume: false,
                });
            }
        }
    }

    fn sender_settings(&self, id: &str) -> SenderSettings {
        let d = &self.config.dispatch;
        SenderSettings {
            per_second: self.sender_rate(&self.config, id),
            pair_interval: Duration::from_secs(d.pair_interval_secs),
            pair_burst: d.pair_burst,
            max_in_flight: d.max_in_flight_per_sender,
            retry: RetryPolicy {
                max_attempts: d.transient_max_attempts,
                base: Duration::from_millis(d.backoff_base_ms),
                max: Duration::from_millis(d.backoff_max_ms),
            },
            aimd_decrease_factor: d.aimd_decrease_factor,
            aimd_increase_per_sec: d.aimd_increase_per_sec,
            circuit: CircuitSettings {
                failures_to_open: d.circuit_failures_to_open,
                open_secs: d.circuit_open_secs,
                max_open_secs: d.circuit_max_open_secs,
            },
            maintenance_pause: Duration::from_secs_f64(d.maintenance_pause_secs.max(0.0)),
            quality: self.config.whatsapp.number_quality,
            quality_hold: Duration::from_secs(self.config.whatsapp.number_quality_hold_secs),
        }
    }

    fn ensure_sender(&mut self, id: &str) {
        if self.senders.read_or_recover().contains_key(id) {
            return;
        }
        let settings = self.sender_settings(id);
        let paused = self.config.sender(id).paused;
        let core = Arc::new(SenderCore::new(
            id,
            self.client.clone(),
            self.store.clone(),
            settings,
            self.share,
        ));
        if paused {
            core.set_halted(Some("paused in the config".into()));
        }
        let addr = SenderActor { core: core.clone() }.start();
        self.senders
            .write_or_recover()
            .insert(id.to_string(), (addr, core));
    }

    fn ensure_campaign(&mut self, id: &str) {
        let Some(entry) = self.catalog.get(id) else {
            if let Some(addr) = self.actors.remove(id) {
                addr.do_send(CampaignControl::Stop);
                self.env.campaigns.write_or_recover().remove(id);
            }
            return;
        };
        for s in entry.spec.senders.clone() {
            self.ensure_sender(&s);
        }
        if let Some(addr) = self.actors.get(id) {
            // Control messages are rare and must never be dropped (a spec
            // that says `ended` is a stop): `do_send` queues past the
            // mailbox's capacity.
            addr.do_send(CampaignControl::Spec(entry));
            return;
        }
        let spec_senders = entry.spec.senders.len();
        let o = self.config.campaigns.get(id);
        let rate = o.and_then(|o| o.per_second.or(o.per_hour.map(|h| h / 3600.0)));
        let state = Arc::new(CampaignState::new(
            entry,
            rate,
            o.is_some_and(|o| o.paused),
            self.env.templates.clone(),
        ));
        self.env
            .campaigns
            .write_or_recover()
            .insert(id.to_string(), state.clone());
        let pump = Pump {
            state,
            store: self.store.clone(),
            senders: self.senders.clone(),
            sms: self.sms.clone(),
            env: self.env.clone(),
            owner: self.owner.clone(),
            // Enough for every sender of the pool to stay busy, bounded.
            max_in_flight: (self.config.dispatch.max_in_flight_per_sender.max(1)
                * spec_senders.max(1))
            .min(4096),
            counts_cache: Mutex::new(None),
            claims_indexed: std::sync::atomic::AtomicBool::new(false),
        };
        tracing::info!(campaign = id, "campaign dispatcher started");
        self.actors
            .insert(id.to_string(), CampaignActor::new(pump).start());
    }

    /// Applies a reload: only what changed reaches the actors, so an
    /// unrelated change (a log level) keeps every sender's AIMD state and
    /// every halt Meta imposed.
    fn apply_config(&mut self, new: Config) {
        let changes = self.config.live_changes(&new);
        let old = std::mem::replace(&mut self.config, new);
        self.env.apply_dispatch(&self.config);
        let senders: Vec<(String, Addr<SenderActor>, Arc<SenderCore>)> = self
            .senders
            .read_or_recover()
            .iter()
            .map(|(id, (addr, core))| (id.clone(), addr.clone(), core.clone()))
            .collect();
        for (id, addr, core) in senders {
            let (was, now) = (old.sender(&id), self.config.sender(&id));
            if now.paused && !was.paused {
                core.set_halted(Some("paused in the config".into()));
            }
            let rate = self.sender_rate(&self.config, &id);
            let rate_changed = (rate - core.configured()).abs() > f64::EPSILON;
            let resumed = was.paused && !now.paused;
            if rate_changed || resumed {
                addr.do_send(Reconfigure {
                    per_second: rate_changed.then_some(rate),
                    share: None,
                    resume: resumed,
                });
            }
        }
        for (id, addr) in &self.actors {
            let override_of = |c: &Config| {
                let o = c.campaigns.get(id);
                (
                    o.and_then(|o| o.per_second.or(o.per_hour.map(|h| h / 3600.0))),
                    o.is_some_and(|o| o.paused),
                )
            };
            let (per_second, paused) = override_of(&self.config);
            if override_of(&old) != (per_second, paused) {
                addr.do_send(CampaignControl::Override { per_second, paused });
            }
        }
        tracing::info!(?changes, "configuration reloaded");
    }
}

impl Actor for CampaignRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.share = self.env.ingest.share();
        // Subscribe before listing: a campaign that arrives in between is
        // then seen twice (harmless) rather than never.
        let mut changes = self.catalog.subscribe();
        for id in self.catalog.ids() {
            self.ensure_campaign(&id);
        }
        // Catalog changes arrive on a broadcast channel; forward them.
        let me = ctx.address();
        let env = self.env.clone();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(CatalogChange::Upserted(id)) | Ok(CatalogChange::Deleted(id)) => {
                        if me.send(CatalogChanged(id)).await.is_err() {
                            return;
                        }
                    }
                    Ok(CatalogChange::Rejected { key, problems }) => {
                        env.publish(vec![Event::SpecRejected {
                            campaign_id: key,
                            problems,
                            timestamp: Utc::now(),
                        }]);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = me.send(CatalogChanged(String::new())).await;
                    }
                    Err(_) => return,
                }
            }
        });
        // Rebalances change this instance's share of every sender's rate.
        ctx.run_interval(Duration::from_secs(1), |act, _| {
            act.apply_throughput();
            let share = act.env.ingest.share();
            if (share - act.share).abs() > f64::EPSILON {
                tracing::info!(share, "instance share of sender rates changed");
                act.share = share;
                for (addr, _) in act.senders.read_or_recover().values() {
                    addr.do_send(Reconfigure {
                        per_second: None,
                        share: Some(share),
                        resume: false,
                    });
                }
            }
        });
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct CatalogChanged(String);

impl Handler<CatalogChanged> for CampaignRegistry {
    type Result = ();

    fn handle(&mut self, msg: CatalogChanged, _: &mut Self::Context) {
        if msg.0.is_empty() {
            for id in self.catalog.ids() {
                self.ensure_campaign(&id);
            }
        } else {
            self.ensure_campaign(&msg.0);
        }
    }
}

/// A validated new configuration (reload).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ApplyConfig(pub Config);

impl Handler<ApplyConfig> for CampaignRegistry {
    type Result = ();

    fn handle(&mut self, msg: ApplyConfig, _: &mut Self::Context) {
        self.apply_config(msg.0);
    }
}

/// Stops every campaign (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopAll;

impl Handler<StopAll> for CampaignRegistry {
    type Result = ();

    fn handle(&mut self, _: StopAll, _: &mut Self::Context) {
        for addr in self.actors.values() {
            addr.do_send(CampaignControl::Stop);
        }
    }
}

/// Answered by a registry whose mailbox is being processed (the systemd
/// watchdog's proof that the actor system makes progress).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping;

impl Handler<Ping> for CampaignRegistry {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Self::Context) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
    }

    fn contact(n: u32) -> ContactKey {
        ContactKey::raw(format!("+52155{n:08}"))
    }

    #[test]
    fn the_eta_waits_for_places_under_the_portfolio_limit() {
        let p = PortfolioLimit::default();
        assert_eq!(p.eta(1_000, t(0)), None, "no limit, no wait");
        p.set_limit(Some(10));
        // 6 recipients over the first hour: 4 places are free.
        for n in 0..6 {
            p.note(&contact(n), t(i64::from(n) * 10));
        }
        let now = t(60);
        assert_eq!(p.eta(4, now), None, "they fit now");
        // The 5th waits for the first recipient to age out (24 h after it
        // was counted, at minute 0).
        assert_eq!(p.eta(5, now), Some((24.0 * 60.0 - 60.0) * 60.0));
        // The 10th waits for the 6th (counted at minute 50).
        assert_eq!(p.eta(10, now), Some((24.0 * 60.0 - 10.0) * 60.0));
        // The 11th takes a place freed by one taken now.
        assert_eq!(p.eta(11, now), Some(24.0 * 3600.0));
        // 30: 4 now, 10 a day after, 10 the day after that, the last 6 on
        // the third day (the 6th place of the window, counted at minute 50).
        assert_eq!(p.eta(30, now), Some((72.0 * 60.0 - 10.0) * 60.0));
        // The store said the window is full until minute 180: nothing is
        // free before then.
        p.full(t(180));
        assert_eq!(p.eta(1, now), Some(120.0 * 60.0));
        assert_eq!(p.eta(11, now), Some((24.0 * 60.0 + 120.0) * 60.0));
    }
}
