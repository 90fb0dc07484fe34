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
use crate::store::Store;

/// Installs the tracing subscriber (`RUST_LOG` overrides `log.level`).
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Opens the configured store backend.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.store.backend {
        StoreBackend::Embedded => {
            let e = &config.store.embedded;
            let durability = match e.durability {
                ConfigDurability::Process => Durability::Process,
                ConfigDurability::Power => Durability::Power,
            };
            let store = EmbeddedStore::open(&e.data_dir, durability, e.cache_mb)
                .with_context(|| format!("opening the embedded store in {}", e.data_dir.display()))?;
            Ok(Arc::new(store))
        }
        StoreBackend::Scylla => anyhow::bail!(
            "store.backend = \"scylla\" is not available in this build; use store.backend = \"embedded\""
        ),
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
    }
}

/// The Kafka side of a running daemon: campaign reader and audience ingest
/// on their own threads (they block in librdkafka polls).
pub struct Pipeline {
    pub catalog: CampaignCatalog,
    pub stats: Arc<IngestStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<(&'static str, JoinHandle<()>)>,
}

impl Pipeline {
    pub async fn start(config: &Config, store: Arc<dyn Store>) -> anyhow::Result<Self> {
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

        let ingest = AudienceIngest::new(
            audience_config(config),
            store,
            catalog.clone(),
            rt,
            stats.clone(),
        )?;
        let st = stop.clone();
        let ingest_thread =
            std::thread::Builder::new()
                .name("wa-ingest".into())
                .spawn(move || {
                    if let Err(e) = ingest.run(st) {
                        tracing::error!(error = %e, "audience ingest stopped");
                    }
                })?;
        Ok(Pipeline {
            catalog,
            stats,
            stop,
            threads: vec![
                ("campaigns reader", reader_thread),
                ("audience ingest", ingest_thread),
            ],
        })
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

/// The webhook processor of a daemon: store, events producer, catalog.
pub fn webhook_processor(
    config: &Config,
    store: Arc<dyn Store>,
    catalog: crate::ingest::catalog::CampaignCatalog,
) -> anyhow::Result<Arc<crate::webhook::WebhookProcessor>> {
    let events = crate::events::EventsProducer::new(
        &config.kafka.brokers,
        &config.kafka.topics.events,
        &kafka_extra(config),
    )?;
    let w = &config.whatsapp;
    if w.app_secret.is_none() {
        tracing::warn!("whatsapp.app_secret is not set (WADISPATCH_APP_SECRET): every webhook POST is refused with 401");
    }
    Ok(Arc::new(crate::webhook::WebhookProcessor::new(
        store,
        Some(events),
        catalog,
        crate::webhook::WebhookSettings {
            app_secret: w.app_secret.as_ref().map(|s| s.expose().to_string()),
            verify_token: w.verify_token.as_ref().map(|s| s.expose().to_string()),
            opt_out_keywords: w.opt_out_keywords.clone(),
        },
    )))
}

/// `wadispatch run`: the daemon until SIGINT or SIGTERM.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    init_logging(config.log.format, &config.log.level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wa-worker")
        .build()?;
    rt.block_on(async move {
        let store = open_store(&config)?;
        let pipeline = Pipeline::start(&config, store.clone()).await?;
        let processor = webhook_processor(&config, store, pipeline.catalog.clone())?;
        let (server, _) = crate::webhook::serve(processor, &config.http.listen, 2)
            .with_context(|| format!("listening for webhooks on {} (http.listen)", config.http.listen))?;
        let server_handle = server.handle();
        tokio::spawn(server);
        tracing::info!(config = %config_path.display(), webhooks = %config.http.listen, "wadispatch running");
        wait_for_termination().await?;
        server_handle.stop(true).await;
        let timeout = Duration::from_secs(config.kafka.shutdown_timeout_secs);
        tracing::info!(timeout_secs = timeout.as_secs(), "shutting down");
        if !pipeline.shutdown(timeout).await {
            anyhow::bail!("shutdown did not finish within {} s; offsets not committed are re-read on the next start", timeout.as_secs());
        }
        tracing::info!("stopped cleanly");
        Ok(())
    })
}

async fn wait_for_termination() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // SIGHUP's default action would end the process without a clean shutdown.
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); return Ok(()) }
            _ = int.recv() => { tracing::info!("SIGINT received"); return Ok(()) }
            _ = hup.recv() => tracing::warn!("SIGHUP received: this build has no live settings to reload; restart to apply config changes"),
        }
    }
}
