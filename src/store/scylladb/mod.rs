//! The ScyllaDB backend: several wadispatch instances on one cluster.
//!
//! Same semantics as the embedded store (the conformance suite runs on both),
//! built on two kinds of writes that never touch the same cells:
//!
//! * **plain writes** for everything that is idempotent or owned by one writer:
//!   staging cells, the pending queue, cursors, campaigns, opt-outs, the wamid
//!   index and parked statuses;
//! * **conditional writes** (LWT, serial consistency `LOCAL_SERIAL`) for every
//!   change of a contact's journey and for the exclusive engagement. Each
//!   journey write is `... IF rev = ?` with the revision read alongside the row
//!   and sets a fresh random revision. That is stricter than `IF state =
//!   'pending'`: a row that went pending → claimed → pending (a retry) between
//!   a read and a write has another revision, so a stale claim cannot win.
//!   An uncertain answer (timeout) is read back at `LOCAL_SERIAL` before
//!   deciding ([`lwt`]).
//!
//! A claim of an exclusive campaign takes two conditional writes on two
//! partitions: the dispatch row first, then the contact's engagement. When the
//! engagement is lost to another campaign the claim is reverted (again
//! conditionally), so only a caller holding both ever sends.

pub mod lwt;
pub mod rows;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::client::PoolSize;
use scylla::errors::ExecutionError;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::DeserializeRow;

use self::lwt::LwtReply;
use self::rows::{DispatchRow, JourneyWrite, StageRow, BUCKETS, DISPATCH_COLUMNS};
use super::*;
use crate::config::ScyllaStoreConfig;
use crate::domain::{ContactKey, DispatchState, ExclusionReason, ObservedState, OptOutScope};

/// The schema, applied by `wadispatch store init` or `create_schema = true`.
pub const SCHEMA: &str = include_str!("../schema.cql");

/// How often a journey write is retried after losing a race to another
/// writer before the conflict is reported.
const CAS_ATTEMPTS: usize = 8;

/// The one partition of `parked_replies` (replies wait there for seconds).
const REPLY_BUCKET: i32 = 0;

/// Concurrent requests of one staging batch or one bucket sweep.
const FAN_OUT: usize = 64;

/// Slots of the portfolio limit tried per count before it is reported full.
const PORTFOLIO_PROBES: i64 = 8;

/// Every prepared statement, built once at start-up.
struct Statements {
    ping: PreparedStatement,
    put_campaign: PreparedStatement,
    get_campaign: PreparedStatement,
    list_campaigns: PreparedStatement,
    set_observed: PreparedStatement,
    set_started: PreparedStatement,
    delete_campaign: PreparedStatement,
    get_halt: PreparedStatement,
    park_reply: PreparedStatement,
    get_parked_reply: PreparedStatement,
    parked_replies: PreparedStatement,
    take_parked_reply: PreparedStatement,
    put_halt: PreparedStatement,
    delete_halt: PreparedStatement,
    campaign_shards: PreparedStatement,
    add_shard: PreparedStatement,
    delete_shards: PreparedStatement,
    stage: PreparedStatement,
    stage_exists: PreparedStatement,
    get_dispatch: PreparedStatement,
    get_dispatch_serial: PreparedStatement,
    scan_bucket: PreparedStatement,
    scan_bucket_after: PreparedStatement,
    delete_bucket: PreparedStatement,
    journey: PreparedStatement,
    add_pending: PreparedStatement,
    remove_pending: PreparedStatement,
    scan_pending: PreparedStatement,
    scan_pending_after: PreparedStatement,
    delete_pending: PreparedStatement,
    load_cursor: PreparedStatement,
    save_cursor: PreparedStatement,
    delete_cursor: PreparedStatement,
    get_contact: PreparedStatement,
    engage: PreparedStatement,
    set_opt_out: PreparedStatement,
    set_marketing_opt_out: PreparedStatement,
    set_last_campaign: PreparedStatement,
    set_undeliverable: PreparedStatement,
    put_wamid: PreparedStatement,
    get_wamid: PreparedStatement,
    park: PreparedStatement,
    parked: PreparedStatement,
    unpark: PreparedStatement,
    add_claim: PreparedStatement,
    drop_claim: PreparedStatement,
    list_claims: PreparedStatement,
    put_lease: PreparedStatement,
    drop_lease: PreparedStatement,
    list_leases: PreparedStatement,
    get_marker: PreparedStatement,
    put_marker: PreparedStatement,
    get_recipient: PreparedStatement,
    put_recipient: PreparedStatement,
    get_portfolio_cursor: PreparedStatement,
    put_portfolio_cursor: PreparedStatement,
    get_slot: PreparedStatement,
    take_slot: PreparedStatement,
    first_slot: PreparedStatement,
}

/// The ScyllaDB store. Cheap to clone.
#[derive(Clone)]
pub struct ScyllaStore {
    session: Arc<Session>,
    st: Arc<Statements>,
    keyspace: String,
}

/// What `connect` did to the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMode {
    /// Create the keyspace and missing tables (`store init`, `create_schema`).
    Apply,
    /// Only check that every table the statements need exists.
    Verify,
}

fn unavailable(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{context}: {e}"))
}

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

    async fn exec(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
        what: &str,
    ) -> StoreResult<QueryResult> {
        self.session
            .execute_unpaged(st, values)
            .await
            .map_err(|e| unavailable(what, e))
    }

    async fn rows<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
        what: &str,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let pager = self
            .session
            .execute_iter(st.clone(), values)
            .await
            .map_err(|e| unavailable(what, e))?;
        pager
            .rows_stream::<R>()
            .map_err(|e| unavailable(what, e))?
            .map_err(|e| unavailable(what, e))
            .try_collect()
            .await
    }

    /// One page of at most `limit` rows.
    async fn page<R>(
        &self,
        st: &PreparedStatement,
        values: impl SerializeRow,
        limit: usize,
        what: &str,
    ) -> StoreResult<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut st = st.clone();
        st.set_page_size(limit.clamp(1, 5_000) as i32);
        let mut paging = scylla::response::PagingState::start();
        // A page may come back short (size cap, tombstones) or even empty
        // with more to come: follow the paging state until `limit` rows or
        // the end.
        loop {
            let (result, next) = self
                .session
                .execute_single_page(&st, &values, paging)
                .await
                .map_err(|e| unavailable(what, e))?;
            let rows = result
                .into_rows_result()
                .map_err(|e| unavailable(what, e))?;
            for row in rows.rows::<R>().map_err(|e| unavailable(what, e))? {
                out.push(row.map_err(|e| unavailable(what, e))?);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            match next.into_paging_control_flow() {
                std::ops::ControlFlow::Continue(state) => paging = state,
                std::ops::ControlFlow::Break(()) => return Ok(out),
            }
        }
    }

    async fn read_dispatch(
        &self,
        campaign: &str,
        contact: &ContactKey,
        serial: bool,
    ) -> StoreResult<Option<(DispatchRecord, Option<i64>)>> {
        let st = if serial {
            &self.st.get_dispatch_serial
        } else {
            &self.st.get_dispatch
        };
        let rows: Vec<DispatchRow> = self
            .page(
                st,
                (campaign, rows::bucket(contact), contact.as_str()),
                1,
                "reading a dispatch row",
            )
            .await?;
        match rows.into_iter().next() {
            Some(row) => row.into_record(),
            None => Ok(None),
        }
    }

    /// One conditional write; `[applied]` is the first column of its answer.
    async fn conditional(&self, st: &PreparedStatement, values: impl SerializeRow) -> LwtReply {
        match self.session.execute_unpaged(st, values).await {
            Ok(result) => {
                let rows = match result.into_rows_result() {
                    Ok(rows) => rows,
                    Err(e) => {
                        return LwtReply::Failed(format!(
                            "a conditional write returned no rows ({e}); the server does not support lightweight transactions"
                        ))
                    }
                };
                match rows.maybe_first_row::<scylla::value::Row>() {
                    Ok(Some(row)) => {
                        match lwt::applied_flag(row.columns.first().and_then(|c| c.as_ref())) {
                            Ok(reply) => reply,
                            Err(e) => LwtReply::Failed(e.to_string()),
                        }
                    }
                    Ok(None) => {
                        LwtReply::Failed("a conditional write returned an empty result".into())
                    }
                    Err(e) => LwtReply::Failed(format!("unreadable [applied]: {e}")),
                }
            }
            Err(e) => lwt::classify(&e),
        }
    }

    /// Writes `new` over `old` if the row is still at `expected`. Returns
    /// the revision this write set when it won, `None` when it lost.
    async fn write_journey(
        &self,
        old: &DispatchRecord,
        new: &DispatchRecord,
        expected: Option<i64>,
    ) -> StoreResult<Option<i64>> {
        let new_rev: i64 = rand::random();
        let write = JourneyWrite::between(old, new, expected, new_rev);
        let reply = self.conditional(&self.st.journey, &write).await;
        let won = lwt::resolve(reply, new_rev, || async {
            Ok(self
                .read_dispatch(&new.campaign_id, &new.contact, true)
                .await?
                .and_then(|(_, rev)| rev))
        })
        .await?;
        Ok(won.then_some(new_rev))
    }

    /// Read-modify-write of a dispatch row until it wins or `change` declines.
    /// `change` gets the current record and returns the new one, or `None` to
    /// leave the row alone. Returns the (old, new) pair that was written.
    async fn update_journey<F>(
        &self,
        campaign: &str,
        contact: &ContactKey,
        mut change: F,
    ) -> StoreResult<Option<Result<(DispatchRecord, DispatchRecord), DispatchRecord>>>
    where
        F: FnMut(&DispatchRecord) -> Option<DispatchRecord>,
    {
        for _ in 0..CAS_ATTEMPTS {
            let Some((old, rev)) = self.read_dispatch(campaign, contact, false).await? else {
                return Ok(None);
            };
            let Some(new) = change(&old) else {
                return Ok(Some(Err(old)));
            };
            if self.write_journey(&old, &new, rev).await?.is_some() {
                return Ok(Some(Ok((old, new))));
            }
        }
        Err(StoreError::Unavailable(format!(
            "{campaign}/{contact}: {CAS_ATTEMPTS} conditional writes in a row lost to concurrent writers"
        )))
    }

    async fn stage_one(&self, item: &StageRequest, first: bool) -> StoreResult<StageOutcome> {
        if !first {
            return Ok(StageOutcome::Duplicate);
        }
        let row = StageRow::new(item)?;
        // First write wins: a row already staged keeps its frozen parameters.
        // Staging cells are plain writes; two instances staging the same new
        // contact at once write the same record from the same Kafka offset.
        type Existing = (
            Option<DateTime<Utc>>,
            Option<String>,
            Option<String>,
            Option<i32>,
            Option<i64>,
        );
        let existing: Vec<Existing> = self
            .page(
                &self.st.stage_exists,
                (&row.campaign_id, row.bucket, &row.contact),
                1,
                "checking a staged contact",
            )
            .await?;
        if let Some((Some(_), state, exclusion, shard, seq)) = existing.into_iter().next() {
            // Staged and never touched since: its queue entry may be missing
            // if the earlier staging failed between the two writes. Re-adding
            // it is idempotent.
            if let (None, None, Some(shard), Some(seq)) = (state, exclusion, shard, seq) {
                self.exec(
                    &self.st.add_pending,
                    (&row.campaign_id, shard, seq, &row.contact),
                    "re-queueing a staged contact",
                )
                .await?;
            }
            return Ok(StageOutcome::Duplicate);
        }
        self.exec(
            &self.st.add_shard,
            (&row.campaign_id, row.shard),
            "recording a shard",
        )
        .await?;
        self.exec(&self.st.stage, &row, "staging a contact").await?;
        if item.exclusion.is_some() {
            return Ok(StageOutcome::Excluded);
        }
        self.exec(
            &self.st.add_pending,
            (&row.campaign_id, row.shard, row.seq, &row.contact),
            "queueing a contact",
        )
        .await?;
        Ok(StageOutcome::Staged)
    }

    async fn add_pending(&self, record: &DispatchRecord) -> StoreResult<()> {
        self.exec(
            &self.st.add_pending,
            (
                &record.campaign_id,
                record.shard as i32,
                record.seq as i64,
                record.contact.as_str(),
            ),
            "re-queueing a contact",
        )
        .await
        .map(drop)
    }

    async fn remove_pending(&self, record: &DispatchRecord) -> StoreResult<()> {
        self.exec(
            &self.st.remove_pending,
            (&record.campaign_id, record.shard as i32, record.seq as i64),
            "removing a pending entry",
        )
        .await
        .map(drop)
    }

    async fn index_claim(
        &self,
        record: &DispatchRecord,
        owner: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        self.exec(
            &self.st.add_claim,
            (
                &record.campaign_id,
                record.shard as i32,
                owner,
                record.contact.as_str(),
                at,
            ),
            "indexing a claim",
        )
        .await
        .map(drop)
    }

    async fn unindex_claim(
        &self,
        campaign: &str,
        shard: u32,
        owner: &str,
        contact: &ContactKey,
    ) -> StoreResult<()> {
        self.exec(
            &self.st.drop_claim,
            (campaign, shard as i32, owner, contact.as_str()),
            "removing a claim from the index",
        )
        .await
        .map(drop)
    }

    /// The index entry goes once the row left `claimed` (`old` is the row
    /// before the write that won).
    async fn after_unclaim(&self, old: &DispatchRecord, new: &DispatchRecord) -> StoreResult<()> {
        match old.owner.as_deref() {
            Some(owner)
                if old.state == DispatchState::Claimed && new.state != DispatchState::Claimed =>
            {
                self.unindex_claim(&old.campaign_id, old.shard, owner, &old.contact)
                    .await
            }
            _ => Ok(()),
        }
    }

    async fn get_contact_row(&self, contact: &ContactKey) -> StoreResult<Option<ContactRow>> {
        let rows: Vec<ContactRow> = self
            .page(
                &self.st.get_contact,
                (contact.as_str(),),
                1,
                "reading a contact",
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Compare-and-set of the contact's engagement from `from` to `to`.
    async fn engage(
        &self,
        contact: &ContactKey,
        from: Option<&str>,
        to: &str,
    ) -> StoreResult<bool> {
        let reply = self
            .conditional(&self.st.engage, (to, contact.as_str(), from))
            .await;
        match reply {
            LwtReply::Applied => Ok(true),
            LwtReply::NotApplied => Ok(false),
            LwtReply::Failed(message) => Err(StoreError::Unavailable(message)),
            LwtReply::Uncertain(_) => {
                // The engagement carries no revision: an uncertain write won
                // if the contact is now engaged to `to`.
                let row = self.serial_contact(contact).await?;
                Ok(row.and_then(|c| c.engaged_campaign).as_deref() == Some(to))
            }
        }
    }

    /// Takes (or confirms) the contact's engagement for the claiming
    /// campaign with conditional writes. `Ok(None)`: this campaign holds it;
    /// `Ok(Some(other))`: another campaign does.
    async fn take_engagement(
        &self,
        req: &ClaimRequest,
        mut expected: Option<String>,
    ) -> StoreResult<Option<String>> {
        for _ in 0..CAS_ATTEMPTS {
            if self
                .engage(&req.contact, expected.as_deref(), &req.campaign_id)
                .await?
            {
                return Ok(None);
            }
            // Not applied: look at the current holder at LOCAL_SERIAL (it
            // sees every committed conditional write).
            let current = self
                .serial_contact(&req.contact)
                .await?
                .and_then(|c| c.engaged_campaign);
            match current {
                Some(c) if c == req.campaign_id => expected = Some(c),
                Some(c) if req.replace_engagement.as_deref() == Some(c.as_str()) => {
                    expected = Some(c)
                }
                Some(c) => return Ok(Some(c)),
                None => expected = None,
            }
        }
        Err(StoreError::Unavailable(format!(
            "{}: the engagement lost {CAS_ATTEMPTS} conditional writes in a row",
            req.contact
        )))
    }

    async fn serial_contact(&self, contact: &ContactKey) -> StoreResult<Option<ContactRow>> {
        let mut st = self.st.get_contact.clone();
        st.set_consistency(Consistency::LocalSerial);
        let rows: Vec<ContactRow> = self
            .page(&st, (contact.as_str(),), 1, "reading a contact back")
            .await?;
        Ok(rows.into_iter().next())
    }
}

async fn apply_schema(session: &Session, keyspace: &str, rf: u32) -> StoreResult<()> {
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

impl Statements {
    async fn prepare(s: &Session) -> Result<Statements, ExecutionError> {
        async fn p(
            s: &Session,
            cql: &str,
            idempotent: bool,
        ) -> Result<PreparedStatement, ExecutionError> {
            let mut st = s.prepare(cql).await.map_err(ExecutionError::from)?;
            st.set_is_idempotent(idempotent);
            Ok(st)
        }
        let select_dispatch =
            format!("SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE campaign_id = ? AND bucket = ? AND contact = ?");
        let mut get_dispatch_serial = p(s, &select_dispatch, true).await?;
        get_dispatch_serial.set_consistency(Consistency::LocalSerial);
        Ok(Statements {
            ping: p(s, "SELECT id FROM campaigns WHERE id = ?", true).await?,
            put_campaign: p(
                s,
                "UPDATE campaigns SET spec = ?, observed_state = ?, updated_at = ?, started_at = ? WHERE id = ?",
                true,
            )
            .await?,
            get_campaign: p(
                s,
                "SELECT id, spec, observed_state, updated_at, started_at FROM campaigns WHERE id = ?",
                true,
            )
            .await?,
            list_campaigns: p(
                s,
                "SELECT id, spec, observed_state, updated_at, started_at FROM campaigns",
                true,
            )
            .await?,
            set_observed: p(
                s,
                "UPDATE campaigns SET observed_state = ?, updated_at = ? WHERE id = ?",
                true,
            )
            .await?,
            set_started: p(s, "UPDATE campaigns SET started_at = ? WHERE id = ?", true).await?,
            delete_campaign: p(s, "DELETE FROM campaigns WHERE id = ?", true).await?,
            get_halt: p(s, "SELECT halt FROM campaign_halts WHERE id = ?", true).await?,
            park_reply: p(s, "INSERT INTO parked_replies (bucket, message_id, reply) VALUES (?, ?, ?)", true).await?,
            get_parked_reply: p(s, "SELECT reply FROM parked_replies WHERE bucket = ? AND message_id = ?", true).await?,
            parked_replies: p(s, "SELECT reply FROM parked_replies WHERE bucket = ?", true).await?,
            take_parked_reply: p(s, "DELETE FROM parked_replies WHERE bucket = ? AND message_id = ? IF EXISTS", false).await?,
            put_halt: p(s, "INSERT INTO campaign_halts (id, halt) VALUES (?, ?)", true).await?,
            delete_halt: p(s, "DELETE FROM campaign_halts WHERE id = ?", true).await?,
            campaign_shards: p(s, "SELECT shard FROM campaign_shards WHERE campaign_id = ?", true).await?,
            add_shard: p(s, "INSERT INTO campaign_shards (campaign_id, shard) VALUES (?, ?)", true).await?,
            delete_shards: p(s, "DELETE FROM campaign_shards WHERE campaign_id = ?", true).await?,
            stage: p(
                s,
                "INSERT INTO dispatches (campaign_id, bucket, contact, shard, seq, params, tags, timezone, send_after, staged_at, stage_exclusion) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                true,
            )
            .await?,
            stage_exists: p(
                s,
                "SELECT staged_at, state, stage_exclusion, shard, seq FROM dispatches WHERE campaign_id = ? AND bucket = ? AND contact = ?",
                true,
            )
            .await?,
            get_dispatch: p(s, &select_dispatch, true).await?,
            get_dispatch_serial,
            scan_bucket: p(
                s,
                &format!("SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE campaign_id = ? AND bucket = ?"),
                true,
            )
            .await?,
            scan_bucket_after: p(
                s,
                &format!("SELECT {DISPATCH_COLUMNS} FROM dispatches WHERE campaign_id = ? AND bucket = ? AND contact > ?"),
                true,
            )
            .await?,
            delete_bucket: p(s, "DELETE FROM dispatches WHERE campaign_id = ? AND bucket = ?", true).await?,
            journey: p(s, rows::JOURNEY_UPDATE, false).await?,
            add_pending: p(
                s,
                "INSERT INTO pending (campaign_id, shard, seq, contact) VALUES (?, ?, ?, ?)",
                true,
            )
            .await?,
            remove_pending: p(
                s,
                "DELETE FROM pending WHERE campaign_id = ? AND shard = ? AND seq = ?",
                true,
            )
            .await?,
            scan_pending: p(
                s,
                "SELECT seq, contact FROM pending WHERE campaign_id = ? AND shard = ?",
                true,
            )
            .await?,
            scan_pending_after: p(
                s,
                "SELECT seq, contact FROM pending WHERE campaign_id = ? AND shard = ? AND seq > ?",
                true,
            )
            .await?,
            delete_pending: p(s, "DELETE FROM pending WHERE campaign_id = ? AND shard = ?", true).await?,
            load_cursor: p(s, "SELECT seq FROM cursors WHERE campaign_id = ? AND shard = ?", true).await?,
            save_cursor: p(
                s,
                "UPDATE cursors SET seq = ? WHERE campaign_id = ? AND shard = ?",
                true,
            )
            .await?,
            delete_cursor: p(s, "DELETE FROM cursors WHERE campaign_id = ? AND shard = ?", true).await?,
            get_contact: p(
                s,
                "SELECT engaged_campaign, opted_out, opted_out_at, last_campaign, undeliverable_at, marketing_opted_out, marketing_opt_changed_at FROM contacts WHERE contact = ?",
                true,
            )
            .await?,
            engage: p(
                s,
                "UPDATE contacts SET engaged_campaign = ? WHERE contact = ? IF engaged_campaign = ?",
                false,
            )
            .await?,
            set_opt_out: p(
                s,
                "UPDATE contacts SET opted_out = ?, opted_out_at = ? WHERE contact = ?",
                true,
            )
            .await?,
            set_marketing_opt_out: p(
                s,
                "UPDATE contacts SET marketing_opted_out = ?, marketing_opt_changed_at = ? WHERE contact = ?",
                true,
            )
            .await?,
            set_last_campaign: p(s, "UPDATE contacts SET last_campaign = ? WHERE contact = ?", true).await?,
            set_undeliverable: p(
                s,
                "UPDATE contacts SET undeliverable_at = ? WHERE contact = ?",
                true,
            )
            .await?,
            put_wamid: p(
                s,
                "INSERT INTO wamids (wamid, campaign_id, contact, created_at) VALUES (?, ?, ?, ?)",
                true,
            )
            .await?,
            get_wamid: p(
                s,
                "SELECT campaign_id, contact, created_at FROM wamids WHERE wamid = ?",
                true,
            )
            .await?,
            park: p(
                s,
                "INSERT INTO parked_statuses (wamid, status_id, status) VALUES (?, ?, ?)",
                true,
            )
            .await?,
            parked: p(s, "SELECT status FROM parked_statuses WHERE wamid = ?", true).await?,
            unpark: p(s, "DELETE FROM parked_statuses WHERE wamid = ?", true).await?,
            add_claim: p(
                s,
                "INSERT INTO claims (campaign_id, shard, owner, contact, claimed_at) VALUES (?, ?, ?, ?, ?)",
                true,
            )
            .await?,
            drop_claim: p(
                s,
                "DELETE FROM claims WHERE campaign_id = ? AND shard = ? AND owner = ? AND contact = ?",
                true,
            )
            .await?,
            list_claims: p(
                s,
                "SELECT owner, contact, claimed_at FROM claims WHERE campaign_id = ? AND shard = ?",
                true,
            )
            .await?,
            put_lease: p(s, "INSERT INTO leases (bucket, owner, until) VALUES (?, ?, ?)", true).await?,
            drop_lease: p(s, "DELETE FROM leases WHERE bucket = ? AND owner = ?", true).await?,
            list_leases: p(s, "SELECT owner, until FROM leases WHERE bucket = ?", true).await?,
            get_marker: p(s, "SELECT name FROM markers WHERE name = ?", true).await?,
            put_marker: p(s, "INSERT INTO markers (name, at) VALUES (?, ?)", true).await?,
            get_recipient: p(s, "SELECT until FROM portfolio_recipients WHERE contact = ?", true).await?,
            put_recipient: p(s, "INSERT INTO portfolio_recipients (contact, until) VALUES (?, ?)", true).await?,
            get_portfolio_cursor: p(s, "SELECT next FROM portfolio_cursor WHERE id = ?", true).await?,
            put_portfolio_cursor: p(s, "UPDATE portfolio_cursor SET next = ? WHERE id = ?", true).await?,
            get_slot: p(s, "SELECT until FROM portfolio_slots WHERE slot = ?", true).await?,
            take_slot: p(
                s,
                "UPDATE portfolio_slots SET contact = ?, until = ? WHERE slot = ? IF until < ?",
                false,
            )
            .await?,
            first_slot: p(
                s,
                "INSERT INTO portfolio_slots (slot, contact, until) VALUES (?, ?, ?) IF NOT EXISTS",
                false,
            )
            .await?,
        })
    }
}

#[derive(Debug, DeserializeRow)]
struct CampaignRow {
    id: String,
    spec: Option<String>,
    observed_state: Option<String>,
    updated_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
}

impl CampaignRow {
    fn into_record(self) -> StoreResult<Option<CampaignRecord>> {
        let Some(spec) = self.spec else {
            return Ok(None);
        };
        let corrupt = |message: String| StoreError::Corrupt {
            key: format!("campaigns/{}", self.id),
            message,
        };
        let spec = serde_json::from_str(&spec)
            .map_err(|e| corrupt(format!("spec is not valid JSON: {e}")))?;
        let observed_state = match &self.observed_state {
            Some(s) => s
                .parse::<ObservedState>()
                .map_err(|_| corrupt(format!("unknown observed state {s:?}")))?,
            None => ObservedState::Scheduled,
        };
        Ok(Some(CampaignRecord {
            spec,
            observed_state,
            updated_at: self.updated_at.unwrap_or_default(),
            started_at: self.started_at,
        }))
    }
}

#[derive(Debug, Default, DeserializeRow)]
struct ContactRow {
    engaged_campaign: Option<String>,
    opted_out: Option<bool>,
    opted_out_at: Option<DateTime<Utc>>,
    last_campaign: Option<String>,
    undeliverable_at: Option<DateTime<Utc>>,
    marketing_opted_out: Option<bool>,
    marketing_opt_changed_at: Option<DateTime<Utc>>,
}

impl From<ContactRow> for ContactRecord {
    fn from(r: ContactRow) -> Self {
        ContactRecord {
            engaged_campaign: r.engaged_campaign,
            opted_out: r.opted_out.unwrap_or(false),
            opted_out_at: r.opted_out_at.filter(|_| r.opted_out == Some(true)),
            last_campaign: r.last_campaign,
            undeliverable_at: r.undeliverable_at,
            opt_changed_at: r.opted_out_at,
            marketing_opted_out: r.marketing_opted_out.unwrap_or(false),
            marketing_opt_changed_at: r.marketing_opt_changed_at,
        }
    }
}

/// A digest naming a parked status, so a redelivery is stored once.
fn status_id(json: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(json.as_bytes())[..16])
}

#[async_trait]
impl Store for ScyllaStore {
    async fn ping(&self) -> StoreResult<()> {
        self.exec(&self.st.ping, ("\0ping",), "ping")
            .await
            .map(drop)
    }

    async fn put_campaign(&self, record: &CampaignRecord) -> StoreResult<()> {
        let spec = serde_json::to_string(&record.spec)
            .map_err(|e| StoreError::io("cannot encode campaign spec", e))?;
        self.exec(
            &self.st.put_campaign,
            (
                spec,
                record.observed_state.as_str(),
                record.updated_at,
                record.started_at,
                &record.spec.id,
            ),
            "writing a campaign",
        )
        .await
        .map(drop)
    }

    async fn get_campaign(&self, id: &str) -> StoreResult<Option<CampaignRecord>> {
        let rows: Vec<CampaignRow> = self
            .page(&self.st.get_campaign, (id,), 1, "reading a campaign")
            .await?;
        match rows.into_iter().next() {
            Some(row) => row.into_record(),
            None => Ok(None),
        }
    }

    async fn park_reply(&self, reply: &ParkedReply) -> StoreResult<()> {
        // A redelivery keeps the first arrival's wait. Redeliveries come
        // seconds apart, so the read and the write need not be one step.
        let existing: Vec<(Option<String>,)> = self
            .page(
                &self.st.get_parked_reply,
                (REPLY_BUCKET, reply.message_id.as_str()),
                1,
                "reading a parked reply",
            )
            .await?;
        if !existing.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_string(reply).map_err(|e| StoreError::Corrupt {
            key: format!("parked_replies/{}", reply.message_id),
            message: e.to_string(),
        })?;
        self.exec(
            &self.st.park_reply,
            (REPLY_BUCKET, reply.message_id.as_str(), json),
            "parking a reply",
        )
        .await
        .map(drop)
    }

    async fn parked_replies(&self, limit: usize) -> StoreResult<Vec<ParkedReply>> {
        let rows: Vec<(Option<String>,)> = self
            .rows(
                &self.st.parked_replies,
                (REPLY_BUCKET,),
                "listing parked replies",
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for json in rows.into_iter().filter_map(|(r,)| r) {
            let reply: ParkedReply =
                serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
                    key: "parked_replies".into(),
                    message: e.to_string(),
                })?;
            out.push(reply);
        }
        out.sort_by_key(|r| r.parked_at);
        out.truncate(limit);
        Ok(out)
    }

    async fn take_parked_reply(&self, message_id: &str) -> StoreResult<bool> {
        // A lightweight transaction: of several instances settling the same
        // reply, one removes it and publishes it.
        match self
            .conditional(&self.st.take_parked_reply, (REPLY_BUCKET, message_id))
            .await
        {
            LwtReply::Applied => Ok(true),
            LwtReply::NotApplied => Ok(false),
            // Whether it went is unknown: leave it to the next round (a
            // reply may then be published twice, never zero times).
            LwtReply::Failed(m) | LwtReply::Uncertain(m) => Err(StoreError::Unavailable(format!(
                "taking a parked reply: {m}"
            ))),
        }
    }

    async fn claimed(&self, campaign: &str, shard: u32) -> StoreResult<Vec<ClaimEntry>> {
        let rows: Vec<(String, String, Option<DateTime<Utc>>)> = self
            .rows(
                &self.st.list_claims,
                (campaign, shard as i32),
                "reading the claim index",
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(owner, contact, at)| ClaimEntry {
                contact: ContactKey::raw(contact),
                owner,
                claimed_at: at.unwrap_or_default(),
            })
            .collect())
    }

    async fn settle_claim(
        &self,
        campaign: &str,
        shard: u32,
        entry: &ClaimEntry,
        message: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let outcome = Outcome::Unknown {
            message: message.to_string(),
        };
        let written = self
            .update_journey(campaign, &entry.contact, |current| {
                current.claimed_by(&entry.owner).then(|| {
                    let mut new = current.clone();
                    new.apply_outcome(&outcome, at);
                    new
                })
            })
            .await?;
        self.unindex_claim(campaign, shard, &entry.owner, &entry.contact)
            .await?;
        Ok(matches!(written, Some(Ok(_))))
    }

    async fn count_recipient(
        &self,
        contact: &ContactKey,
        now: DateTime<Utc>,
        limit: u64,
    ) -> StoreResult<RecipientCount> {
        let known: Vec<(Option<DateTime<Utc>>,)> = self
            .page(
                &self.st.get_recipient,
                (contact.as_str(),),
                1,
                "reading a portfolio recipient",
            )
            .await?;
        if known.first().and_then(|(u,)| *u).is_some_and(|u| u > now) {
            return Ok(RecipientCount::Known);
        }
        let slots = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let cursor: Vec<(Option<i64>,)> = self
            .page(
                &self.st.get_portfolio_cursor,
                (0i32,),
                1,
                "reading the portfolio cursor",
            )
            .await?;
        let next = cursor.first().and_then(|(n,)| *n).unwrap_or(0);
        let until = now + chrono::TimeDelta::hours(24);
        // The slot the cursor names is the oldest; a few after it cover
        // places taken concurrently by other instances.
        for step in 0..slots.min(PORTFOLIO_PROBES) {
            let position = next.saturating_add(step);
            let slot = i32::try_from(position.rem_euclid(slots)).unwrap_or(0);
            let mut reply = self
                .conditional(&self.st.take_slot, (contact.as_str(), until, slot, now))
                .await;
            if reply == LwtReply::NotApplied {
                // Also false for a slot never used: create it then.
                reply = self
                    .conditional(&self.st.first_slot, (slot, contact.as_str(), until))
                    .await;
            }
            match reply {
                LwtReply::Applied => {
                    self.exec(
                        &self.st.put_portfolio_cursor,
                        (position.saturating_add(1), 0i32),
                        "moving the portfolio cursor",
                    )
                    .await?;
                    self.exec(
                        &self.st.put_recipient,
                        (contact.as_str(), until),
                        "recording a portfolio recipient",
                    )
                    .await?;
                    return Ok(RecipientCount::Counted);
                }
                // Taken, or perhaps taken by this very write (an uncertain
                // answer): either way not counted on, which errs on the
                // side of fewer recipients.
                LwtReply::NotApplied | LwtReply::Uncertain(_) => {}
                LwtReply::Failed(m) => {
                    return Err(StoreError::Unavailable(format!(
                        "taking a place of the portfolio limit: {m}"
                    )))
                }
            }
        }
        let oldest = i32::try_from(next.rem_euclid(slots)).unwrap_or(0);
        let row: Vec<(Option<DateTime<Utc>>,)> = self
            .page(&self.st.get_slot, (oldest,), 1, "reading a portfolio slot")
            .await?;
        let frees = row
            .first()
            .and_then(|(u,)| *u)
            .filter(|u| *u > now)
            .unwrap_or(now + chrono::TimeDelta::seconds(1));
        Ok(RecipientCount::Full { until: frees })
    }

    async fn renew_lease(&self, lease: &Lease) -> StoreResult<()> {
        self.exec(
            &self.st.put_lease,
            (0i32, &lease.owner, lease.until),
            "renewing the instance's lease",
        )
        .await
        .map(drop)
    }

    async fn release_lease(&self, owner: &str) -> StoreResult<()> {
        self.exec(
            &self.st.drop_lease,
            (0i32, owner),
            "releasing the instance's lease",
        )
        .await
        .map(drop)
    }

    async fn leases(&self) -> StoreResult<Vec<Lease>> {
        let rows: Vec<(String, Option<DateTime<Utc>>)> = self
            .rows(&self.st.list_leases, (0i32,), "reading instance leases")
            .await?;
        Ok(rows
            .into_iter()
            .map(|(owner, until)| Lease {
                owner,
                until: until.unwrap_or_default(),
            })
            .collect())
    }

    async fn marker(&self, name: &str) -> StoreResult<bool> {
        let rows: Vec<(String,)> = self
            .page(&self.st.get_marker, (name,), 1, "reading a marker")
            .await?;
        Ok(!rows.is_empty())
    }

    async fn set_marker(&self, name: &str) -> StoreResult<()> {
        self.exec(&self.st.put_marker, (name, Utc::now()), "writing a marker")
            .await
            .map(drop)
    }

    async fn campaign_halt(&self, id: &str) -> StoreResult<Option<CampaignHalt>> {
        let rows: Vec<(Option<String>,)> = self
            .page(&self.st.get_halt, (id,), 1, "reading a campaign halt")
            .await?;
        match rows.into_iter().next().and_then(|(h,)| h) {
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    key: format!("campaign_halts/{id}"),
                    message: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    async fn set_campaign_halt(&self, id: &str, halt: Option<&CampaignHalt>) -> StoreResult<()> {
        match halt {
            Some(h) => {
                let json = serde_json::to_string(h).map_err(|e| StoreError::Corrupt {
                    key: format!("campaign_halts/{id}"),
                    message: e.to_string(),
                })?;
                self.exec(&self.st.put_halt, (id, json), "writing a campaign halt")
                    .await?;
            }
            None => {
                self.exec(&self.st.delete_halt, (id,), "lifting a campaign halt")
                    .await?;
            }
        }
        Ok(())
    }

    async fn list_campaigns(&self) -> StoreResult<Vec<CampaignRecord>> {
        let rows: Vec<CampaignRow> = self
            .rows(&self.st.list_campaigns, (), "listing campaigns")
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(record) = row.into_record()? {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn set_observed_state(
        &self,
        id: &str,
        state: ObservedState,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let Some(record) = self.get_campaign(id).await? else {
            return Ok(());
        };
        self.exec(
            &self.st.set_observed,
            (state.as_str(), at, id),
            "writing a campaign state",
        )
        .await?;
        if state == ObservedState::Active && record.started_at.is_none() {
            // Any instance's start time will do: it only records that the
            // campaign started (a tombstone can no longer delete it).
            self.exec(&self.st.set_started, (at, id), "marking a campaign started")
                .await?;
        }
        Ok(())
    }

    async fn delete_campaign(&self, id: &str) -> StoreResult<()> {
        // Only campaigns that never started are deleted, so their rows hold
        // staging cells only (plain writes) and plain deletes shadow them.
        let shards = self.campaign_shards(id).await?;
        futures::stream::iter(0..BUCKETS)
            .map(|b| self.exec(&self.st.delete_bucket, (id, b), "deleting dispatch rows"))
            .buffer_unordered(FAN_OUT)
            .try_collect::<Vec<_>>()
            .await?;
        for shard in shards {
            let shard = shard as i32;
            self.exec(
                &self.st.delete_pending,
                (id, shard),
                "deleting pending entries",
            )
            .await?;
            self.exec(&self.st.delete_cursor, (id, shard), "deleting a cursor")
                .await?;
        }
        self.exec(&self.st.delete_shards, (id,), "deleting shards")
            .await?;
        self.exec(&self.st.delete_halt, (id,), "deleting a campaign halt")
            .await?;
        self.exec(&self.st.delete_campaign, (id,), "deleting a campaign")
            .await
            .map(drop)
    }

    async fn campaign_shards(&self, id: &str) -> StoreResult<Vec<u32>> {
        let rows: Vec<(i32,)> = self
            .rows(&self.st.campaign_shards, (id,), "listing shards")
            .await?;
        let mut shards: Vec<u32> = rows.into_iter().map(|(s,)| s.max(0) as u32).collect();
        shards.sort_unstable();
        Ok(shards)
    }

    async fn stage_batch(&self, items: &[StageRequest]) -> StoreResult<Vec<StageOutcome>> {
        // Duplicates inside the batch: the first occurrence wins.
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        let first: Vec<bool> = items
            .iter()
            .map(|i| seen.insert((i.campaign_id.as_str(), i.contact.as_str())))
            .collect();
        let jobs: Vec<_> = items
            .iter()
            .zip(first)
            .map(|(item, first)| self.stage_one(item, first))
            .collect();
        let outcomes = futures::stream::iter(jobs)
            .buffered(FAN_OUT)
            .collect::<Vec<StoreResult<StageOutcome>>>()
            .await;
        outcomes.into_iter().collect()
    }

    async fn get_dispatch(
        &self,
        campaign: &str,
        contact: &ContactKey,
    ) -> StoreResult<Option<DispatchRecord>> {
        Ok(self
            .read_dispatch(campaign, contact, false)
            .await?
            .map(|(r, _)| r))
    }

    async fn scan_pending(
        &self,
        campaign: &str,
        shard: u32,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Vec<PendingEntry>> {
        let rows: Vec<(i64, String)> = match after {
            Some(seq) => {
                let Ok(seq) = i64::try_from(seq) else {
                    return Ok(Vec::new());
                };
                self.page(
                    &self.st.scan_pending_after,
                    (campaign, shard as i32, seq),
                    limit,
                    "scanning pending contacts",
                )
                .await?
            }
            None => {
                self.page(
                    &self.st.scan_pending,
                    (campaign, shard as i32),
                    limit,
                    "scanning pending contacts",
                )
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(seq, contact)| PendingEntry {
                seq: seq.max(0) as u64,
                contact: ContactKey::raw(contact),
            })
            .collect())
    }

    /// Rows come in (bucket, contact) order, not contact order; `after` (the
    /// last contact of the previous page) resumes in its bucket.
    async fn scan_dispatches(
        &self,
        campaign: &str,
        after: Option<&ContactKey>,
        limit: usize,
    ) -> StoreResult<Vec<DispatchRecord>> {
        let mut out = Vec::new();
        let mut bucket = after.map(rows::bucket).unwrap_or(0);
        let mut resume: Option<String> = after.map(|c| c.as_str().to_owned());
        while out.len() < limit && bucket < BUCKETS {
            let want = limit - out.len();
            let page: Vec<DispatchRow> = match &resume {
                Some(contact) => {
                    self.page(
                        &self.st.scan_bucket_after,
                        (campaign, bucket, contact.as_str()),
                        want,
                        "scanning dispatch rows",
                    )
                    .await?
                }
                None => {
                    self.page(
                        &self.st.scan_bucket,
                        (campaign, bucket),
                        want,
                        "scanning dispatch rows",
                    )
                    .await?
                }
            };
            let exhausted = page.len() < want;
            resume = page.last().map(|r| r.contact.clone());
            for row in page {
                // Fragments (no staging cells) are skipped, but still move
                // the position forward.
                if let Some((record, _)) = row.into_record()? {
                    out.push(record);
                }
            }
            if exhausted {
                bucket += 1;
                resume = None;
            }
        }
        Ok(out)
    }

    async fn load_cursor(&self, campaign: &str, shard: u32) -> StoreResult<Option<u64>> {
        let rows: Vec<(Option<i64>,)> = self
            .page(
                &self.st.load_cursor,
                (campaign, shard as i32),
                1,
                "reading a cursor",
            )
            .await?;
        Ok(rows
            .into_iter()
            .next()
            .and_then(|(s,)| s)
            .map(|s| s.max(0) as u64))
    }

    async fn save_cursor(&self, campaign: &str, shard: u32, seq: u64) -> StoreResult<()> {
        self.exec(
            &self.st.save_cursor,
            (seq.min(i64::MAX as u64) as i64, campaign, shard as i32),
            "saving a cursor",
        )
        .await
        .map(drop)
    }

    async fn claim(&self, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
        // Whether this call wrote the claim's index entry (written before the
        // row's conditional write, so a crash between the two leaves an
        // entry too many, never a claimed row the index does not know).
        let mut indexed = false;
        for _ in 0..CAS_ATTEMPTS {
            let Some((old, rev)) = self
                .read_dispatch(&req.campaign_id, &req.contact, false)
                .await?
            else {
                return Ok(ClaimOutcome::NotClaimable { state: None });
            };
            if !old.claimable(req.now) {
                if indexed && !old.claimed_by(&req.owner) {
                    self.unindex_claim(&req.campaign_id, old.shard, &req.owner, &req.contact)
                        .await?;
                }
                return Ok(ClaimOutcome::NotClaimable {
                    state: Some(old.state),
                });
            }
            // Check the engagement before claiming, so the common refusal
            // costs no write.
            let engaged = if req.exclusive {
                let current = self
                    .get_contact_row(&req.contact)
                    .await?
                    .and_then(|c| c.engaged_campaign);
                match &current {
                    Some(other)
                        if other != &req.campaign_id
                            && req.replace_engagement.as_deref() != Some(other.as_str()) =>
                    {
                        if indexed {
                            self.unindex_claim(
                                &req.campaign_id,
                                old.shard,
                                &req.owner,
                                &req.contact,
                            )
                            .await?;
                        }
                        return Ok(ClaimOutcome::EngagedElsewhere {
                            campaign: other.clone(),
                        });
                    }
                    _ => Some(current),
                }
            } else {
                None
            };
            let mut new = old.clone();
            new.state = DispatchState::Claimed;
            new.attempts += 1;
            new.owner = Some(req.owner.clone());
            new.times.claimed = Some(req.now);
            if !indexed {
                self.index_claim(&old, &req.owner, req.now).await?;
                indexed = true;
            }
            let Some(new_rev) = self.write_journey(&old, &new, rev).await? else {
                // Lost to another writer: look again (it may be claimed now).
                continue;
            };
            if let Some(current) = engaged {
                // Always a conditional write, even when the engagement looks
                // like ours already: a plain read may be stale, and another
                // instance may be replacing it. Only a holder sends.
                let holder = match self.take_engagement(req, current).await {
                    Ok(holder) => holder,
                    Err(e) => {
                        let _ = self.write_journey(&new, &old, Some(new_rev)).await;
                        return Err(e);
                    }
                };
                if let Some(holder) = holder {
                    // Another campaign holds the contact: give the row back.
                    self.write_journey(&new, &old, Some(new_rev)).await?;
                    self.unindex_claim(&req.campaign_id, old.shard, &req.owner, &req.contact)
                        .await?;
                    return Ok(ClaimOutcome::EngagedElsewhere { campaign: holder });
                }
            }
            self.remove_pending(&old).await?;
            return Ok(ClaimOutcome::Claimed {
                attempts: new.attempts,
            });
        }
        Err(StoreError::Unavailable(format!(
            "{}/{}: the claim lost {CAS_ATTEMPTS} conditional writes in a row to concurrent writers",
            req.campaign_id, req.contact
        )))
    }

    async fn record_outcome(
        &self,
        campaign: &str,
        contact: &ContactKey,
        outcome: &Outcome,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        let mut parked: Vec<StatusUpdate> = Vec::new();
        if let Outcome::Accepted { wamid } = outcome {
            // Index first, so a status arriving from now on finds the row.
            self.exec(
                &self.st.put_wamid,
                (wamid, campaign, contact.as_str(), at),
                "indexing a wamid",
            )
            .await?;
            self.exec(
                &self.st.set_last_campaign,
                (campaign, contact.as_str()),
                "recording the contact's last campaign",
            )
            .await?;
            let rows: Vec<(Option<String>,)> = self
                .rows(&self.st.parked, (wamid,), "reading parked statuses")
                .await?;
            for (json,) in rows {
                if let Some(update) = json.and_then(|j| serde_json::from_str(&j).ok()) {
                    parked.push(update);
                }
            }
        }
        let written = self
            .update_journey(campaign, contact, |current| {
                let mut new = current.clone();
                new.apply_outcome(outcome, at);
                for update in &parked {
                    new.apply_status(update);
                }
                Some(new)
            })
            .await?;
        let Some(Ok((old, new))) = written else {
            return Err(StoreError::Corrupt {
                key: format!("{campaign}/{contact}"),
                message: "outcome for a contact that was never staged".into(),
            });
        };
        self.after_unclaim(&old, &new).await?;
        match outcome {
            Outcome::Accepted { wamid } if !parked.is_empty() => {
                self.exec(&self.st.unpark, (wamid,), "clearing parked statuses")
                    .await?;
            }
            _ if new.requeued_by(outcome) => self.add_pending(&new).await?,
            _ => {}
        }
        Ok(())
    }

    async fn exclude(
        &self,
        campaign: &str,
        contact: &ContactKey,
        reason: &ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let written = self
            .update_journey(campaign, contact, |current| {
                if !matches!(
                    current.state,
                    DispatchState::Pending | DispatchState::Deferred
                ) {
                    return None;
                }
                let mut new = current.clone();
                new.apply_outcome(
                    &Outcome::Excluded {
                        reason: reason.clone(),
                    },
                    at,
                );
                Some(new)
            })
            .await?;
        match written {
            Some(Ok((old, _))) => {
                self.remove_pending(&old).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn requeue(
        &self,
        campaign: &str,
        contact: &ContactKey,
        from: &Requeue,
    ) -> StoreResult<bool> {
        let written = self
            .update_journey(campaign, contact, |current| {
                let mut new = current.clone();
                new.requeue(from).then_some(new)
            })
            .await?;
        match written {
            Some(Ok((_, new))) => {
                self.add_pending(&new).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn get_contact(&self, contact: &ContactKey) -> StoreResult<Option<ContactRecord>> {
        Ok(self
            .get_contact_row(contact)
            .await?
            .map(ContactRecord::from))
    }

    async fn set_opt_out(
        &self,
        contact: &ContactKey,
        scope: OptOutScope,
        opted_out: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<()> {
        // `opted_out_at` (`marketing_opt_changed_at`) holds the event time
        // of the scope's latest change (stop or resume): an older event
        // redelivered after a newer one is dropped. Opt changes of one person
        // are rare and seconds apart; the read and the write are not one
        // step, which only matters for two changes of the same contact within
        // the same moment.
        let row = self.get_contact_row(contact).await?;
        let (last, statement) = match scope {
            OptOutScope::All => (row.and_then(|c| c.opted_out_at), &self.st.set_opt_out),
            OptOutScope::Marketing => (
                row.and_then(|c| c.marketing_opt_changed_at),
                &self.st.set_marketing_opt_out,
            ),
        };
        if last.is_some_and(|last| last > at) {
            return Ok(());
        }
        self.exec(
            statement,
            (opted_out, Some(at), contact.as_str()),
            "recording an opt-out",
        )
        .await
        .map(drop)
    }

    async fn lookup_wamid(&self, wamid: &str) -> StoreResult<Option<WamidEntry>> {
        let rows: Vec<(Option<String>, Option<String>, Option<DateTime<Utc>>)> = self
            .page(&self.st.get_wamid, (wamid,), 1, "looking up a wamid")
            .await?;
        Ok(rows.into_iter().next().and_then(|(c, k, at)| {
            Some(WamidEntry {
                campaign_id: c?,
                contact: ContactKey::raw(k?),
                created_at: at.unwrap_or_default(),
            })
        }))
    }

    async fn apply_status(
        &self,
        campaign: &str,
        contact: &ContactKey,
        update: &StatusUpdate,
    ) -> StoreResult<StatusApplied> {
        let written = self
            .update_journey(campaign, contact, |current| {
                let mut new = current.clone();
                new.apply_status(update).map(|_| new)
            })
            .await?;
        match written {
            None => Ok(StatusApplied::Missing),
            Some(Err(current)) => Ok(StatusApplied::Unchanged {
                state: current.state,
            }),
            Some(Ok((old, new))) => {
                self.after_unclaim(&old, &new).await?;
                if new.state == DispatchState::Deferred {
                    self.add_pending(&new).await?;
                }
                Ok(StatusApplied::Changed {
                    from: old.state,
                    to: new.state,
                    record: Box::new(new),
                })
            }
        }
    }

    async fn park_status(&self, wamid: &str, update: &StatusUpdate) -> StoreResult<()> {
        let json = serde_json::to_string(update)
            .map_err(|e| StoreError::io("cannot encode a status", e))?;
        self.exec(
            &self.st.park,
            (wamid, status_id(&json), &json),
            "parking a status",
        )
        .await
        .map(drop)
    }

    async fn mark_undeliverable(&self, contact: &ContactKey, at: DateTime<Utc>) -> StoreResult<()> {
        self.exec(
            &self.st.set_undeliverable,
            (at, contact.as_str()),
            "marking a contact undeliverable",
        )
        .await
        .map(drop)
    }
}
