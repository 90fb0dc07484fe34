//! Connecting to the cluster: consistency, TLS, the session, and the
//! schema applied or verified before any statement is prepared.

use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session_builder::SessionBuilder;
use scylla::client::PoolSize;
use scylla::statement::{Consistency, SerialConsistency};

use super::schema::apply_schema;
use super::*;
use crate::config::ScyllaStoreConfig;

fn consistency(name: &str) -> Result<Consistency, StoreError> {
    Ok(match name {
        "any" => Consistency::Any,
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        other => {
            return Err(StoreError::Unavailable(format!(
                "store.scylla.consistency = {other:?} is not a consistency level"
            )))
        }
    })
}

fn tls_config(config: &ScyllaStoreConfig) -> Result<Arc<rustls::ClientConfig>, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.tls_ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                unavailable(
                    &format!("reading store.scylla.tls_ca_file {}", path.display()),
                    e,
                )
            })?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert
                    .map_err(|e| unavailable(&format!("parsing {} as PEM", path.display()), e))?;
                roots
                    .add(cert)
                    .map_err(|e| unavailable(&format!("CA in {}", path.display()), e))?;
                added += 1;
            }
            if added == 0 {
                return Err(StoreError::Unavailable(format!(
                    "store.scylla.tls_ca_file {} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unavailable("TLS configuration", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl ScyllaStore {
    /// Connects, applies or verifies the schema and prepares every statement.
    pub async fn connect(
        config: &ScyllaStoreConfig,
        mode: SchemaMode,
    ) -> Result<ScyllaStore, StoreError> {
        let profile = ExecutionProfile::builder()
            .consistency(consistency(&config.consistency)?)
            .serial_consistency(Some(SerialConsistency::LocalSerial))
            .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .default_execution_profile_handle(profile.into_handle())
            .connection_timeout(Duration::from_millis(config.request_timeout_ms))
            // Client-side, monotonic write timestamps: a pending entry deleted
            // at a claim and re-added by a retry through another coordinator
            // must not be shadowed by clock skew between nodes.
            .timestamp_generator(Arc::new(
                scylla::policies::timestamp_generator::MonotonicTimestampGenerator::new(),
            ));
        if let Some(dc) = &config.local_datacenter {
            builder = builder.prefer_datacenter(dc.clone());
        }
        if config.pool_size_per_host > 0 {
            let n = std::num::NonZeroUsize::new(config.pool_size_per_host as usize)
                .expect("checked > 0");
            builder = builder.pool_size(PoolSize::PerHost(n));
        }
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.user(user.expose(), password.expose());
        }
        if config.tls {
            builder = builder.tls_context(Some(tls_config(config)?));
        }
        if mode == SchemaMode::Apply {
            // Schema changes below wait for agreement themselves.
            builder = builder.auto_await_schema_agreement(false);
        }
        let nodes = config.nodes.join(", ");
        let session = builder.build().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to ScyllaDB at {nodes}: {e} (check store.scylla.nodes, TLS and credentials)"
            ))
        })?;
        let keyspace = config.keyspace.clone();
        if mode == SchemaMode::Apply {
            apply_schema(&session, &keyspace, config.replication_factor).await?;
        } else {
            session.use_keyspace(&keyspace, false).await.map_err(|e| {
                StoreError::Unavailable(format!(
                    "keyspace {keyspace} is not usable: {e} (run `wadispatch store init` or set store.scylla.create_schema = true)"
                ))
            })?;
        }
        let st = Statements::prepare(&session).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "the schema in keyspace {keyspace} does not match this version: {e} (run `wadispatch store init`)"
            ))
        })?;
        Ok(ScyllaStore {
            session: Arc::new(session),
            st: Arc::new(st),
            keyspace,
        })
    }

    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }

    /// Drops this store's keyspace and everything in it (test clean-up).
    pub async fn drop_keyspace(&self) -> StoreResult<()> {
        self.session
            .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", self.keyspace), ())
            .await
            .map_err(|e| unavailable("dropping the keyspace", e))
            .map(drop)
    }
}
