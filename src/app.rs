//! Wiring of a running daemon: open the store, start the Kafka readers, wait
//! for a signal, shut down within the configured bound.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::{Config, Durability as ConfigDurability, LogFormat, StoreBackend};
use crate::ingest::audience::{AudienceIngest, AudienceIngestConfig, IngestStats};
use crate::ingest::catalog::{CampaignCatalog, CampaignReader};
use crate::store::embedded::{Durability, EmbeddedStore};
use crate::store::scylladb::{SchemaMode, ScyllaStore};
use crate::store::timed::Timed;
use crate::store::Store;
use crate::sync::{MutexExt, RwLockExt};

type FilterHandle =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

static LOG_FILTER: std::sync::OnceLock<FilterHandle> = std::sync::OnceLock::new();

fn filter_for(level: &str) -> tracing_subscriber::EnvFilter {
    // rdkafka logs "Failed to close consumer queue on drop: BrokerDestroy" at
    // error level when an assign-only consumer (the campaigns reader) is
    // dropped: nothing is wrong then, so that one target is quiet.
    tracing_subscriber::EnvFilter::try_new(format!("{level},rdkafka::consumer::base_consumer=off"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Installs the tracing subscriber (`RUST_LOG` overrides `log.level`).
pub fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::prelude::*;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => tracing_subscriber::EnvFilter::new(directives),
        Err(_) => filter_for(level),
    };
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let output = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        // Colours for a terminal only: a file or the journal gets plain text.
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = LOG_FILTER.set(handle);
    }
}

/// Applies a new `log.level` (reload). `RUST_LOG`, when set, stays in charge.
pub fn set_log_level(level: &str) {
    if std::env::var("RUST_LOG").is_ok() {
        return;
    }
    if let Some(handle) = LOG_FILTER.get() {
        if let Err(e) = handle.reload(filter_for(level)) {
            tracing::warn!(error = %e, "log level not changed");
        }
    }
}

/// Opens the configured store backend.
/// [`open_store`] for the commands that only read (`report`, `store
/// check`): an embedded store that does not exist yet is an error that says
/// where it was looked for, never a new empty store.
pub async fn open_existing_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.store.backend == StoreBackend::Embedded {
        let dir = &config.store.embedded.data_dir;
        if !dir.join("version").is_file() {
            anyhow::bail!(
                "there is no wadispatch store in {} (store.embedded.data_dir of the config): check --config, or run the daemon once to create it",
                dir.display()
            );
        }
    }
    open_store(config).await
}

pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.store.backend {
        StoreBackend::Embedded => {
            let e = &config.store.embedded;
            let durability = match e.durability {
                ConfigDurability::Process => Durability::Process,
                ConfigDurability::Power => Durability::Power,
            };
            let store =
                EmbeddedStore::open(&e.data_dir, durability, e.cache_mb).with_context(|| {
                    format!("opening the embedded store in {}", e.data_dir.display())
                })?;
            Ok(Arc::new(Timed(store)))
        }
        StoreBackend::Scylla => {
            let s = &config.store.scylla;
            let mode = if s.create_schema {
                SchemaMode::Apply
            } else {
                SchemaMode::Verify
            };
            let store = ScyllaStore::connect(s, mode)
                .await
                .with_context(|| format!("opening the ScyllaDB store (keyspace {})", s.keyspace))?;
            Ok(Arc::new(Timed(store)))
        }
    }
}

/// Extra librdkafka properties from `[kafka.client]`.
pub fn kafka_extra(config: &Config) -> Vec<(String, String)> {
    config
        .kafka
        .client
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn audience_config(config: &Config) -> AudienceIngestConfig {
    let k = &config.kafka;
    AudienceIngestConfig {
        brokers: k.brokers.clone(),
        group_id: k.group_id.clone(),
        topic: k.topics.audience.clone(),
        dlq_topic: k.topics.audience_dlq.clone(),
        extra: kafka_extra(config),
        batch_size: k.stage_batch_size,
        linger: Duration::from_millis(k.stage_batch_linger_ms),
        max_buffered: k.max_buffered_records,
        unknown_campaign_wait: Duration::from_secs(k.unknown_campaign_wait_secs),
        shutdown_timeout: Duration::from_secs(k.shutdown_timeout_secs),
        default_region: config.dispatch.default_region.clone(),
        sole_member_within: matches!(config.store.backend, StoreBackend::Embedded)
            .then(|| sole_member_grace(config)),
    }
}

/// How long an instance on the embedded store waits to hold every audience
/// partition: a member that died keeps its share until its session times
/// out (`session.timeout.ms`, 45 s unless set in `[kafka.client]`), then
/// a rebalance gives everything to the live one; 15 s more for that.
fn sole_member_grace(config: &Config) -> Duration {
    let session_ms = config
        .kafka
        .client
        .get("session.timeout.ms")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(45_000);
    Duration::from_millis(session_ms) + Duration::from_secs(15)
}

/// The Kafka side of a running daemon: campaign reader and audience ingest
/// on their own threads (they block in librdkafka polls).
pub struct Pipeline {
    pub catalog: CampaignCatalog,
    pub suppressions: crate::ingest::suppressions::SuppressionList,
    pub stats: Arc<IngestStats>,
    /// The conversions consumer's counters, once it runs.
    pub conversions: Option<Arc<crate::ingest::conversions::ConversionStats>>,
    stop: Arc<AtomicBool>,
    threads: Vec<(&'static str, JoinHandle<()>)>,
}

impl Pipeline {
    pub async fn start(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        Self::start_with(config, store, audience_config(config)).await
    }

    /// A pipeline beside others of this process over one store: they may
    /// share a consumer group whatever the backend (tests of rebalances).
    pub async fn start_beside(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let mut audience = audience_config(config);
        audience.sole_member_within = None;
        Self::start_with(config, store, audience).await
    }

    async fn start_with(
        config: &Config,
        store: Arc<dyn Store>,
        audience: AudienceIngestConfig,
    ) -> anyhow::Result<Self> {
        let catalog = CampaignCatalog::default();
        let known = catalog.load_from_store(store.as_ref()).await?;
        tracing::info!(campaigns = known, "campaigns loaded from the store");
        let rt = tokio::runtime::Handle::current();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(IngestStats::default());
        let extra = kafka_extra(config);

        let reader = CampaignReader::new(
            &config.kafka.brokers,
            &config.kafka.topics.campaigns,
            &extra,
        )?;
        let (c, s, r, st) = (catalog.clone(), store.clone(), rt.clone(), stop.clone());
        let reader_thread = std::thread::Builder::new()
            .name("wa-campaigns".into())
            .spawn(move || {
                if let Err(e) = reader.run(c, s, r, st) {
                    tracing::error!(error = %e, "campaigns reader stopped");
                }
            })?;

        let suppressions = crate::ingest::suppressions::SuppressionList::with_region(
            config.dispatch.default_region.as_deref(),
        );
        let reader = crate::ingest::compacted::CompactedReader::new(
            &config.kafka.brokers,
            &config.kafka.topics.suppressions,
            &extra,
            "suppressions",
        )?;
        let (list, st) = (suppressions.clone(), stop.clone());
        let suppression_thread = std::thread::Builder::new()
            .name("wa-suppressions".into())
            .spawn(move || {
                let count = list.clone();
                let result = reader.run(
                    &st,
                    |key, value, _, _| list.apply(key, value),
                    || {
                        tracing::info!(
                            suppressed = count.len(),
                            "suppressions topic read to its end"
                        );
                        count.set_ready();
                    },
                );
                if let Err(e) = result {
                    tracing::error!(error = %e, "suppressions reader stopped");
                }
            })?;
        let ingest = AudienceIngest::new(audience, store, catalog.clone(), rt, stats.clone())?;
        let st = stop.clone();
        let fatal = stats.clone();
        let ingest_thread =
            std::thread::Builder::new()
                .name("wa-ingest".into())
                .spawn(move || {
                    if let Err(e) = ingest.run(st) {
                        tracing::error!(error = %e, "audience ingest stopped");
                        *fatal.fatal.lock_or_recover() = Some(e.to_string());
                    }
                })?;
        Ok(Pipeline {
            catalog,
            suppressions,
            stats,
            conversions: None,
            stop,
            threads: vec![
                ("campaigns reader", reader_thread),
                ("suppressions reader", suppression_thread),
                ("audience ingest", ingest_thread),
            ],
        })
    }

    /// Starts the conversions consumer (`kafka.topics.conversions`) on its
    /// own thread; its `conversion` events go to `events`.
    pub fn start_conversions(
        &mut self,
        config: &Config,
        store: Arc<dyn Store>,
        events: Option<crate::events::EventsProducer>,
    ) -> anyhow::Result<()> {
        let k = &config.kafka;
        let ingest = crate::ingest::conversions::ConversionIngest::new(
            crate::ingest::conversions::ConversionsConfig {
                brokers: k.brokers.clone(),
                group_id: format!("{}-conversions", k.group_id),
                topic: k.topics.conversions.clone(),
                dlq_topic: k.topics.audience_dlq.clone(),
                extra: kafka_extra(config),
                default_region: config.dispatch.default_region.clone(),
            },
            store,
            self.catalog.clone(),
            events,
            tokio::runtime::Handle::current(),
        )?;
        self.conversions = Some(ingest.stats());
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new()
            .name("wa-conversions".into())
            .spawn(move || {
                if let Err(e) = ingest.run(stop) {
                    tracing::error!(error = %e, "conversions consumer stopped");
                }
            })?;
        self.threads.push(("conversions consumer", thread));
        Ok(())
    }

    /// Stops fetching, lets in-flight records finish and waits for the
    /// threads, at most `timeout`. Returns false if a thread did not finish.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        self.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        let mut clean = true;
        for (name, handle) in self.threads {
            while !handle.is_finished() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if handle.is_finished() {
                let _ = handle.join();
            } else {
                tracing::error!(thread = name, "did not stop in time");
                clean = false;
            }
        }
        clean
    }
}

/// The webhook processor of a daemon: store, events producer, catalog and
/// the template book it shares with dispatch.
pub fn webhook_processor(
    config: &Config,
    store: Arc<dyn Store>,
    catalog: crate::ingest::catalog::CampaignCatalog,
    events: crate::events::EventsProducer,
    templates: Arc<crate::dispatch::templates::TemplateBook>,
    limits: Arc<crate::dispatch::limits::LimitBook>,
) -> anyhow::Result<Arc<crate::webhook::WebhookProcessor>> {
    let w = &config.whatsapp;
    if w.app_secret.is_none() {
        tracing::warn!("whatsapp.app_secret is not set (WADISPATCH_APP_SECRET): every webhook POST is refused with 401");
    }
    Ok(Arc::new(
        crate::webhook::WebhookProcessor::new(
            store,
            Some(events),
            catalog,
            crate::webhook::WebhookSettings {
                app_secret: w.app_secret.as_ref().map(|s| s.expose().to_string()),
                verify_token: w.verify_token.as_ref().map(|s| s.expose().to_string()),
                opt_out_keywords: w.opt_out_keywords.clone(),
                keyword_scope: w.opt_out_keyword_scope,
                reply_context_wait: Duration::from_millis(config.http.reply_context_wait_ms),
                marketing_limit_retry: w.marketing_limit_retry,
                sms_reports: config.sms.report_password.as_ref().map(|password| {
                    crate::webhook::BasicAuth {
                        username: config.sms.report_username.clone(),
                        password: password.expose().to_string(),
                    }
                }),
            },
        )
        .with_templates(templates)
        .with_limits(limits),
    ))
}

/// An actix System on a multi-thread tokio runtime: actors live on the
/// System's thread, I/O tasks spread over the pool.
pub fn system() -> actix_rt::SystemRunner {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("wa-worker")
            .build()
            .expect("tokio runtime")
    })
}

/// This instance's name (`WADISPATCH_INSTANCE_ID`, else the host name); its
/// leases and claims carry it with a suffix unique to the run
/// (docs/ARCHITECTURE.md, "Leases").
pub fn instance_id() -> String {
    std::env::var("WADISPATCH_INSTANCE_ID")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wadispatch".into())
}

pub fn whatsapp_client(config: &Config) -> anyhow::Result<crate::whatsapp::client::WhatsAppClient> {
    let w = &config.whatsapp;
    if w.token.is_none() {
        tracing::warn!("whatsapp.token is not set (WADISPATCH_WHATSAPP_TOKEN or whatsapp.token_file): the Cloud API will refuse every send");
    }
    Ok(crate::whatsapp::client::WhatsAppClient::new(
        crate::whatsapp::client::ClientSettings {
            base_url: w.api_base_url.clone(),
            api_version: w.api_version.clone(),
            token: w.token.as_ref().map(|t| t.expose().to_string()),
            connect_timeout: Duration::from_millis(w.connect_timeout_ms),
            request_timeout: Duration::from_millis(w.request_timeout_ms),
            // Every sender talks to the same host, so the pool is shared:
            // per-sender keep-alive times the senders (at least one). A pool
            // smaller than the sends in flight closes and reopens
            // connections all the time.
            max_idle_per_host: w
                .max_connections_per_sender
                .saturating_mul(config.senders.len().max(1)),
        },
    )?)
}

/// A running daemon: Kafka pipeline, dispatch engine, webhook listener.
/// Start it inside an actix System ([`system`]).
pub struct Daemon {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub pipeline: Pipeline,
    pub registry: actix::Addr<crate::dispatch::registry::CampaignRegistry>,
    pub env: Arc<crate::dispatch::registry::Env>,
    pub senders: crate::dispatch::sender::pool::SenderMap,
    pub webhook_addr: std::net::SocketAddr,
    /// Where `/metrics`, `/healthz`, `/readyz` and `/campaigns` answer.
    pub admin_addr: std::net::SocketAddr,
    server: actix_web::dev::ServerHandle,
    admin: actix_web::dev::ServerHandle,
    /// Settles replies parked for their `context.id` (they stay in the
    /// store across a stop).
    parked_replies: tokio::task::JoinHandle<()>,
    /// Renews this run's lease (released on shutdown).
    lease: tokio::task::JoinHandle<()>,
    /// Reads the template book again from the store.
    template_refresh: tokio::task::JoinHandle<()>,
    /// Reads the messaging limit again from the store.
    limit_refresh: tokio::task::JoinHandle<()>,
}

/// The webhook receiver of a starting daemon: its listener and the task
/// that settles replies parked for their `context.id`.
struct Webhooks {
    addr: std::net::SocketAddr,
    server: actix_web::dev::ServerHandle,
    parked_replies: tokio::task::JoinHandle<()>,
}

fn start_webhooks(
    config: &Config,
    store: Arc<dyn Store>,
    pipeline: &Pipeline,
    events: crate::events::EventsProducer,
    (templates, limits): (
        Arc<crate::dispatch::templates::TemplateBook>,
        Arc<crate::dispatch::limits::LimitBook>,
    ),
) -> anyhow::Result<Webhooks> {
    let processor = webhook_processor(
        config,
        store,
        pipeline.catalog.clone(),
        events,
        templates,
        limits,
    )?;
    // Replies that arrived before the wamid they answer was recorded.
    let parked_replies = tokio::spawn(
        processor
            .clone()
            .run_parked_replies(Duration::from_millis(500)),
    );
    let (server, addr) =
        crate::webhook::serve(processor, &config.http.listen, 2).with_context(|| {
            format!(
                "listening for webhooks on {} (http.listen)",
                config.http.listen
            )
        })?;
    let handle = server.handle();
    tokio::spawn(server);
    Ok(Webhooks {
        addr,
        server: handle,
        parked_replies,
    })
}

/// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/campaigns`).
fn start_admin(
    config: &Config,
    store: Arc<dyn Store>,
    pipeline: &Pipeline,
    env: &crate::dispatch::registry::Env,
) -> anyhow::Result<(actix_web::dev::ServerHandle, std::net::SocketAddr)> {
    let (admin, addr) = crate::admin::serve(
        crate::admin::AdminState {
            store,
            ingest: pipeline.stats.clone(),
            campaigns: env.campaigns.clone(),
            store_timeout: Duration::from_secs(2),
            templates: env.templates.clone(),
        },
        &config.admin.listen,
    )
    .with_context(|| {
        format!(
            "listening for the admin API on {} (admin.listen)",
            config.admin.listen
        )
    })?;
    let handle = admin.handle();
    tokio::spawn(admin);
    Ok((handle, addr))
}

impl Daemon {
    pub async fn start(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Daemon> {
        Self::start_as(config, store, &instance_id()).await
    }

    /// [`Daemon::start`] under an instance id of the caller's choosing
    /// (several daemons in one test process).
    pub async fn start_as(
        config: Config,
        store: Arc<dyn Store>,
        instance: &str,
    ) -> anyhow::Result<Daemon> {
        use actix::Actor;
        crate::metrics::configure_campaigns(
            config.metrics.max_campaign_series,
            Duration::from_secs(config.metrics.ended_campaign_grace_secs),
        );
        let mut pipeline = Pipeline::start(&config, store.clone()).await?;
        // One producer for every event: webhooks', the campaigns' and the
        // conversions'.
        let events = crate::events::EventsProducer::new(
            &config.kafka.brokers,
            &config.kafka.topics.events,
            &kafka_extra(&config),
        )?;
        pipeline.start_conversions(&config, store.clone(), Some(events.clone()))?;
        // What Meta said of each template, read before the first claim.
        let templates = Arc::new(crate::dispatch::templates::TemplateBook::new(
            config.whatsapp.template_red_quality,
        ));
        templates
            .refresh(store.as_ref())
            .await
            .context("reading template health from the store")?;
        let template_refresh = tokio::spawn(templates.clone().run_refresh(store.clone()));
        // The messaging limit Meta stated, read before the first claim.
        let limits = Arc::new(crate::dispatch::limits::LimitBook::default());
        limits
            .refresh(store.as_ref())
            .await
            .context("reading the messaging limit from the store")?;
        let webhooks = start_webhooks(
            &config,
            store.clone(),
            &pipeline,
            events.clone(),
            (templates.clone(), limits.clone()),
        )?;
        let owner = crate::dispatch::lease::run_owner(instance);
        tracing::info!(%owner, "instance lease name");
        let leases = Arc::new(crate::dispatch::lease::Leases::new(
            owner.clone(),
            Duration::from_secs(config.dispatch.lease_secs),
        ));
        let lease = tokio::spawn(leases.clone().run(store.clone()));
        let env = Arc::new(crate::dispatch::registry::Env {
            leases,
            ingest: pipeline.stats.clone(),
            catalog: pipeline.catalog.clone(),
            campaigns: Arc::default(),
            suppressions: pipeline.suppressions.clone(),
            portfolio: crate::dispatch::registry::PortfolioLimit::with_book(limits.clone()),
            resend_unknown_after: Default::default(),
            marketing_cap: Default::default(),
            rate_card: Default::default(),
            marketing_limit_retry: Default::default(),
            marketing_messages: Default::default(),
            events: Some(events),
            templates,
        });
        let registry = crate::dispatch::registry::CampaignRegistry::new(
            config.clone(),
            store.clone(),
            pipeline.catalog.clone(),
            whatsapp_client(&config)?,
            crate::dispatch::sms::SmsChannel::from_config(&config, store.clone())?,
            env.clone(),
            owner,
        );
        let limit_refresh = {
            let env = env.clone();
            tokio::spawn(limits.run_refresh(
                store.clone(),
                crate::dispatch::templates::REFRESH,
                move || env.portfolio.publish(),
            ))
        };
        let senders = registry.senders();
        let registry = registry.start();
        let (admin, admin_addr) = start_admin(&config, store.clone(), &pipeline, &env)?;
        Ok(Daemon {
            config,
            store,
            pipeline,
            registry,
            env,
            senders,
            webhook_addr: webhooks.addr,
            admin_addr,
            server: webhooks.server,
            admin,
            parked_replies: webhooks.parked_replies,
            lease,
            template_refresh,
            limit_refresh,
        })
    }

    /// Applies a validated configuration (reload).
    pub async fn apply(&self, config: Config) {
        let _ = self
            .registry
            .send(crate::dispatch::registry::ApplyConfig(config))
            .await;
    }

    pub async fn shutdown(self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let _ = self.registry.send(crate::dispatch::registry::StopAll).await;
        // Let sends in flight finish and record their outcome (half the
        // budget): what is still in flight after that becomes `unknown` at
        // the next start.
        let drain_until = std::time::Instant::now() + timeout / 2;
        loop {
            let in_flight: u64 = self
                .env
                .campaigns
                .read_or_recover()
                .values()
                .map(|c| c.in_flight.load(std::sync::atomic::Ordering::Acquire))
                .sum();
            if in_flight == 0 || std::time::Instant::now() > drain_until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.server.stop(true).await;
        self.parked_replies.abort();
        self.template_refresh.abort();
        self.limit_refresh.abort();
        // What is still claimed now may be on the wire: the next owner of
        // its shard settles it as soon as the lease is gone.
        self.lease.abort();
        self.env.leases.release(self.store.as_ref()).await;
        self.admin.stop(true).await;
        // Whatever the first steps used comes off the Kafka side's budget,
        // but it always gets a few seconds to commit and leave the group.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        self.pipeline
            .shutdown(left.max(Duration::from_secs(3)))
            .await
    }
}

/// systemd integration of `run`: `READY=1` once the Kafka assignment arrived
/// and the store answers; then `WATCHDOG=1` only while the ingest loop and the
/// registry actor make progress (a hung loop stops the pings and systemd
/// restarts the process). A loop that retries a store write counts as
/// progress: `STATUS=` then says what it waits for.
async fn supervise(
    store: Arc<dyn Store>,
    ingest: Arc<IngestStats>,
    registry: actix::Addr<crate::dispatch::registry::CampaignRegistry>,
) {
    let mut last_reason = String::new();
    loop {
        match crate::admin::startup_blockers(store.as_ref(), &ingest, Duration::from_secs(2)).await
        {
            None => break,
            Some(reason) => {
                if reason != last_reason {
                    tracing::info!(%reason, "not ready yet");
                    crate::notify::notify(&format!(
                        "STATUS=waiting: {}",
                        reason.lines().next().unwrap_or_default()
                    ));
                    last_reason = reason;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    crate::notify::notify("READY=1\nSTATUS=ready: consuming and dispatching");
    tracing::info!("ready");
    let watchdog = crate::notify::watchdog_interval();
    let interval = watchdog.unwrap_or(Duration::from_secs(30));
    let mut beat = ingest.heartbeat.load(Ordering::Relaxed);
    let mut status = String::new();
    loop {
        tokio::time::sleep(interval / 3).await;
        // While ingest retries a store write or the DLQ refuses records,
        // systemd shows what the process waits for.
        let troubles = ingest.troubles();
        let now_status = match troubles.first() {
            Some(t) => format!("STATUS=waiting: {t}"),
            None => "STATUS=ready: consuming and dispatching".to_string(),
        };
        if now_status != status {
            crate::notify::notify(&now_status);
            status = now_status;
        }
        if watchdog.is_none() {
            continue;
        }
        let now = ingest.heartbeat.load(Ordering::Relaxed);
        let ingest_alive = now != beat;
        beat = now;
        let registry_alive =
            tokio::time::timeout(interval / 3, registry.send(crate::dispatch::registry::Ping))
                .await
                .is_ok_and(|r| r.is_ok());
        if ingest_alive && registry_alive {
            crate::notify::notify("WATCHDOG=1");
        } else {
            tracing::warn!(
                ingest_alive,
                registry_alive,
                "no progress: watchdog not pinged"
            );
        }
    }
}

/// `wadispatch run`: the daemon until SIGINT or SIGTERM.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    init_logging(config.log.format, &config.log.level);
    system().block_on(async move {
        let store = open_store(&config).await?;
        let daemon = Daemon::start(config.clone(), store).await?;
        tracing::info!(config = %config_path.display(), webhooks = %daemon.webhook_addr, admin = %daemon.admin_addr, "wadispatch running");
        let supervision = tokio::spawn(supervise(
            daemon.store.clone(),
            daemon.pipeline.stats.clone(),
            daemon.registry.clone(),
        ));
        let mut running = config;
        let mut watch = crate::reload::FileWatch::new(config_path, Duration::from_secs(1));
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut stopped_by = None;
        loop {
            let reload = tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); break }
                _ = int.recv() => { tracing::info!("SIGINT received"); break }
                _ = hup.recv() => { tracing::info!("SIGHUP received: reloading"); true }
                _ = tick.tick() => watch.poll(),
            };
            let fatal = daemon
                .pipeline
                .stats
                .fatal
                .lock_or_recover()
                .clone();
            if let Some(why) = fatal {
                tracing::error!(error = %why, "stopping: audience ingest cannot go on");
                stopped_by = Some(why);
                break;
            }
            if reload {
                let decision = crate::reload::evaluate(&running, config_path);
                if let Some(new) = crate::reload::report(decision, config_path) {
                    if new.log.level != running.log.level {
                        set_log_level(&new.log.level);
                    }
                    daemon.apply(new.clone()).await;
                    running = new;
                }
            }
        }
        supervision.abort();
        crate::notify::notify("STOPPING=1");
        let timeout = Duration::from_secs(running.kafka.shutdown_timeout_secs);
        tracing::info!(timeout_secs = timeout.as_secs(), "shutting down");
        if !daemon.shutdown(timeout).await {
            anyhow::bail!("shutdown did not finish within {} s; offsets not committed are re-read on the next start", timeout.as_secs());
        }
        if let Some(why) = stopped_by {
            anyhow::bail!("{why}");
        }
        tracing::info!("stopped cleanly");
        Ok(())
    })
}
