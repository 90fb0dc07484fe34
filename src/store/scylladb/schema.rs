//! The schema (`src/store/schema.cql`): applied by `wadispatch store init`
//! or `create_schema = true`, verified otherwise.

use scylla::client::session::Session;

use super::*;
use crate::config::ScyllaStoreConfig;

/// The schema, applied by `wadispatch store init` or `create_schema = true`.
pub const SCHEMA: &str = include_str!("../schema.cql");

/// What `connect` did to the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMode {
    /// Create the keyspace and missing tables (`store init`, `create_schema`).
    Apply,
    /// Only check that every table the statements need exists.
    Verify,
}

/// The schema's statements, without comments, one per entry.
pub fn schema_statements() -> Vec<String> {
    let without_comments: String = SCHEMA
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

fn keyspace_statement(keyspace: &str, replication_factor: u32) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}"
    )
}

pub(super) async fn apply_schema(session: &Session, keyspace: &str, rf: u32) -> StoreResult<()> {
    // Lightweight transactions need a vnode keyspace on ScyllaDB versions
    // that create tablet keyspaces by default; servers that do not know the
    // option (older ScyllaDB, Cassandra) get the plain statement.
    let tablets_off = format!(
        "{} AND tablets = {{'enabled': false}}",
        keyspace_statement(keyspace, rf)
    );
    if session.query_unpaged(tablets_off, ()).await.is_err() {
        session
            .query_unpaged(keyspace_statement(keyspace, rf), ())
            .await
            .map_err(|e| unavailable(&format!("creating keyspace {keyspace}"), e))?;
    }
    let _ = session.await_schema_agreement().await;
    session
        .use_keyspace(keyspace, false)
        .await
        .map_err(|e| unavailable(&format!("using keyspace {keyspace}"), e))?;
    for statement in schema_statements() {
        match session.query_unpaged(statement.clone(), ()).await {
            Ok(_) => {}
            // An upgrade of a table created by an earlier version: it fails
            // where the column exists already (a new table, or applied
            // before). Preparing the statements afterwards proves the
            // schema whatever happened here.
            Err(e) if statement.starts_with("ALTER TABLE") => {
                tracing::debug!(%statement, error = %e, "schema upgrade not needed");
            }
            Err(e) => return Err(unavailable(&format!("applying `{statement}`"), e)),
        }
    }
    let _ = session.await_schema_agreement().await;
    Ok(())
}

/// What `wadispatch store init` reports: one line per statement applied.
pub async fn init_schema(config: &ScyllaStoreConfig) -> Result<Vec<String>, StoreError> {
    let store = ScyllaStore::connect(config, SchemaMode::Apply).await?;
    let mut applied = vec![keyspace_statement(
        &store.keyspace,
        config.replication_factor,
    )];
    applied.extend(schema_statements());
    store.ping().await?;
    Ok(applied)
}
