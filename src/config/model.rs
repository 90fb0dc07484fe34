//! The data model of `wadispatch.toml`: one struct per section, their defaults, and
//! [`Secret`], which keeps credentials out of logs.
//!
//! Every struct denies unknown fields, so a typo such as `per_secnd = 5` is an error
//! naming the key instead of a setting that is silently ignored. Every field has a
//! default, so a file only needs the keys it changes; `config/wadispatch.toml` lists
//! every key with its default and a unit test keeps the two equal.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka connection, topics and ingest batching (`[kafka]`).
    pub kafka: KafkaConfig,
    /// Where contacts and their journey are stored (`[store]`).
    pub store: StoreConfig,
    /// WhatsApp Cloud API client and webhook credentials (`[whatsapp]`).
    pub whatsapp: WhatsAppConfig,
    /// The public HTTP listener that receives Meta webhooks (`[http]`).
    pub http: HttpConfig,
    /// The private listener for metrics, health and the admin API (`[admin]`).
    pub admin: AdminConfig,
    /// Pacing, retries and limits shared by all senders (`[dispatch]`).
    pub dispatch: DispatchConfig,
    /// Log output (`[log]`).
    pub log: LogConfig,
    /// Prometheus series bounds (`[metrics]`).
    pub metrics: MetricsConfig,
    /// Per-sender settings keyed by WhatsApp phone_number_id
    /// (`[senders."106540352242922"]`). A sender used by a campaign but not listed
    /// here runs at `dispatch.default_sender_per_second`. Applied live on reload.
    /// Default: none.
    pub senders: BTreeMap<String, SenderConfig>,
    /// The SMS channel of journeys (`[sms]`).
    pub sms: SmsConfig,
    /// Operator overrides keyed by campaign id (`[campaigns."bday-2026-11"]`). They
    /// win over the campaign spec read from Kafka, so an operator can slow down or
    /// pause a campaign without touching the upstream system. Applied live on
    /// reload. Default: none.
    pub campaigns: BTreeMap<String, CampaignOverride>,
    /// The rate card that prices billable messages (`[pricing]`): the cost
    /// per campaign and per conversion in `/campaigns`, `report --summary`
    /// and `wadispatch_campaign_estimated_cost`. Applied live on reload.
    /// Default: unset (billable messages are counted, not priced).
    pub pricing: Option<crate::domain::RateCard>,
}

/// `[kafka]`: brokers, consumer group, topics and ingest batching.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap brokers (`host:port,host:port`). The environment
    /// variable `WADISPATCH_KAFKA_BROKERS` replaces it. Restart required.
    /// Default: `"localhost:9092"`.
    pub brokers: String,
    /// Consumer group id. Instances with the same group split the audience
    /// partitions, and with them the dispatch work. Restart required.
    /// Default: `"wadispatch"`.
    pub group_id: String,
    /// Topic names (`[kafka.topics]`). Restart required.
    pub topics: TopicsConfig,
    /// Extra librdkafka properties passed through verbatim
    /// (`[kafka.client]`, e.g. `"security.protocol" = "SASL_SSL"`). The properties
    /// wadispatch manages itself are refused: `group.id`, `enable.auto.commit`,
    /// `enable.auto.offset.store` and `partition.assignment.strategy` carry the
    /// at-least-once offset handling, and `bootstrap.servers` comes from `brokers`.
    /// `sasl.password` can come from `WADISPATCH_KAFKA_SASL_PASSWORD` instead of
    /// the file. Values of password-like keys are never printed. Restart required.
    /// Default: empty.
    pub client: BTreeMap<String, String>,
    /// Most audience records fetched but not yet staged in the store, in records.
    /// Above it the consumer pauses its partitions, so a slow store pushes back on
    /// Kafka instead of growing memory. Restart required. Default: `50000`.
    pub max_buffered_records: usize,
    /// Audience records written to the store per batch, in records. Larger batches
    /// amortise the store's per-write cost. Restart required. Default: `2000`.
    pub stage_batch_size: usize,
    /// Longest a partial batch waits for more records before it is written, in
    /// milliseconds; bounds ingest latency when traffic is light. `0` writes every
    /// poll at once. Restart required. Default: `20`.
    pub stage_batch_linger_ms: u64,
    /// How long an audience record naming a campaign not yet seen on the campaigns
    /// topic waits before it goes to the dead-letter topic, in seconds. The two
    /// topics are not ordered with respect to each other, so a record may arrive
    /// before its campaign. Restart required. Default: `600`.
    pub unknown_campaign_wait_secs: u64,
    /// How long shutdown waits for in-flight batches and offset commits, in seconds.
    /// Anything not finished by then is redelivered after restart (at-least-once).
    /// Restart required. Default: `10`.
    pub shutdown_timeout_secs: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".to_owned(),
            group_id: "wadispatch".to_owned(),
            topics: TopicsConfig::default(),
            client: BTreeMap::new(),
            max_buffered_records: 50_000,
            stage_batch_size: 2_000,
            stage_batch_linger_ms: 20,
            unknown_campaign_wait_secs: 600,
            shutdown_timeout_secs: 10,
        }
    }
}

/// librdkafka property names whose values are credentials; [`KafkaConfig`]'s
/// `Debug` prints `***` for them so a logged config does not leak them.
fn is_sensitive_client_key(key: &str) -> bool {
    [
        "password",
        "secret",
        "jaas",
        "oauthbearer.config",
        "key.pem",
        "token",
    ]
    .iter()
    .any(|marker| key.contains(marker))
}

// Written by hand instead of derived so that `sasl.password` and friends in
// `client` are redacted; destructuring makes a new field a compile error here.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            brokers,
            group_id,
            topics,
            client,
            max_buffered_records,
            stage_batch_size,
            stage_batch_linger_ms,
            unknown_campaign_wait_secs,
            shutdown_timeout_secs,
        } = self;
        let client: BTreeMap<&str, &str> = client
            .iter()
            .map(|(key, value)| {
                let shown = if is_sensitive_client_key(key) {
                    "***"
                } else {
                    value.as_str()
                };
                (key.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", brokers)
            .field("group_id", group_id)
            .field("topics", topics)
            .field("client", &client)
            .field("max_buffered_records", max_buffered_records)
            .field("stage_batch_size", stage_batch_size)
            .field("stage_batch_linger_ms", stage_batch_linger_ms)
            .field("unknown_campaign_wait_secs", unknown_campaign_wait_secs)
            .field("shutdown_timeout_secs", shutdown_timeout_secs)
            .finish()
    }
}

/// `[kafka.topics]`: topic names (docs/ARCHITECTURE.md, "Kafka contracts").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicsConfig {
    /// Input, compacted: CampaignSpec JSON keyed by campaign id.
    /// Default: `"wa.campaigns"`.
    pub campaigns: String,
    /// Input: audience records keyed by contact id. Its partitions are the
    /// dispatch shards. Default: `"wa.audience"`.
    pub audience: String,
    /// Output: audience records that cannot be staged, with an `error` header.
    /// Default: `"wa.audience.dlq"`.
    pub audience_dlq: String,
    /// Output: status, reply, opt-out and exclusion events for downstream
    /// consumers. Default: `"wa.events"`.
    pub events: String,
    /// Optional input, compacted: suppressed contacts keyed by contact id.
    /// Default: `"wa.suppressions"`.
    pub suppressions: String,
    /// Optional input: goal conversions keyed by contact id, read by the
    /// consumer group `<group_id>-conversions`. Default: `"wa.conversions"`.
    pub conversions: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            campaigns: "wa.campaigns".to_owned(),
            audience: "wa.audience".to_owned(),
            audience_dlq: "wa.audience.dlq".to_owned(),
            events: "wa.events".to_owned(),
            suppressions: "wa.suppressions".to_owned(),
            conversions: "wa.conversions".to_owned(),
        }
    }
}

/// `[store]`: which backend holds the contacts and their journey
/// (docs/ARCHITECTURE.md, "Store").
/// Every store setting needs a restart.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `"embedded"` or `"scylla"`. Restart required. Default: `"embedded"`.
    pub backend: StoreBackend,
    /// Settings of the embedded backend (`[store.embedded]`).
    pub embedded: EmbeddedStoreConfig,
    /// Settings of the ScyllaDB backend (`[store.scylla]`).
    pub scylla: ScyllaStoreConfig,
}

/// The store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// fjall on local disk: one process, nothing else to run.
    #[default]
    Embedded,
    /// ScyllaDB: production and several instances sharing the work.
    Scylla,
}

/// `[store.embedded]`: the fjall store on local disk.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedStoreConfig {
    /// Directory of the store, created if missing; relative paths are resolved
    /// against the working directory. Default: `"./data"`.
    pub data_dir: PathBuf,
    /// When a write counts as durable. Kafka offsets are stored only after the
    /// write is acknowledged, so this decides what a crash can cost.
    /// Default: `"process"`.
    pub durability: Durability,
    /// Block cache size, in MiB. Default: `64`.
    pub cache_mb: u64,
}

impl Default for EmbeddedStoreConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            durability: Durability::default(),
            cache_mb: 64,
        }
    }
}

/// When the embedded store acknowledges a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledged once in the OS page cache: survives a process crash or
    /// `kill -9`, not a power loss or kernel panic. Fast; the default.
    #[default]
    Process,
    /// fsync before acknowledging: survives power loss, at the cost of a disk
    /// flush per batch.
    Power,
}

/// `[store.scylla]`: the ScyllaDB backend. Credentials come only from the
/// environment (`WADISPATCH_SCYLLA_USERNAME`, `WADISPATCH_SCYLLA_PASSWORD`), never
/// from the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaStoreConfig {
    /// Contact points, `host:port`. Default: `["127.0.0.1:9042"]`.
    pub nodes: Vec<String>,
    /// Keyspace holding wadispatch's tables. Default: `"wadispatch"`.
    pub keyspace: String,
    /// Datacenter whose nodes are preferred (token- and DC-aware routing); unset
    /// means no preference. Default: unset.
    pub local_datacenter: Option<String>,
    /// Consistency of reads and writes: one of `any`, `one`, `two`, `three`,
    /// `quorum`, `all`, `local_quorum`, `each_quorum`, `local_one`, in lowercase.
    /// Restart required. Default: `"local_quorum"`.
    pub consistency: String,
    /// Replication factor used when `create_schema` creates the keyspace.
    /// Default: `3`.
    pub replication_factor: u32,
    /// Create the keyspace and tables at start-up if they are missing. Off by
    /// default because production schemas are usually managed by a DBA.
    /// Default: `false`.
    pub create_schema: bool,
    /// Timeout of one CQL request, in milliseconds. Default: `5000`.
    pub request_timeout_ms: u64,
    /// Connections per host; `0` lets the driver choose (one per shard).
    /// Default: `0`.
    pub pool_size_per_host: u32,
    /// Connect with TLS. Default: `false`.
    pub tls: bool,
    /// PEM file of the CA that signed the nodes' certificates; unset uses the
    /// system roots. Only meaningful with `tls = true`. Default: unset.
    pub tls_ca_file: Option<PathBuf>,
    /// From `WADISPATCH_SCYLLA_USERNAME` only; not accepted in the file.
    #[serde(skip)]
    pub username: Option<Secret>,
    /// From `WADISPATCH_SCYLLA_PASSWORD` only; not accepted in the file.
    #[serde(skip)]
    pub password: Option<Secret>,
}

impl Default for ScyllaStoreConfig {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "wadispatch".to_owned(),
            local_datacenter: None,
            consistency: "local_quorum".to_owned(),
            replication_factor: 3,
            create_schema: false,
            request_timeout_ms: 5_000,
            pool_size_per_host: 0,
            tls: false,
            tls_ca_file: None,
            username: None,
            password: None,
        }
    }
}

/// `[whatsapp]`: the Cloud API client and the webhook credentials
/// (docs/ARCHITECTURE.md, "Cloud API and sandbox").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhatsAppConfig {
    /// Base URL of the Graph API, without a trailing slash; messages go to
    /// `{api_base_url}/{api_version}/{phone_number_id}/messages`. Point it at the
    /// sandbox (`http://127.0.0.1:8089`, `wadispatch sandbox`) for demos and tests. Restart required.
    /// Default: `"https://graph.facebook.com"`.
    pub api_base_url: String,
    /// Graph API version, `vMAJOR.MINOR`. Restart required. Default: `"v23.0"`.
    pub api_version: String,
    /// Bearer token of the system user. Keep it out of the file in production:
    /// `WADISPATCH_WHATSAPP_TOKEN` wins over `token_file`, which wins over this.
    /// Restart required. Default: unset.
    pub token: Option<Secret>,
    /// File holding the bearer token (surrounding whitespace ignored), e.g. a
    /// mounted secret; relative paths are resolved against the working directory.
    /// Restart required. Default: unset.
    pub token_file: Option<PathBuf>,
    /// App secret used to verify `X-Hub-Signature-256` on webhooks; set it from
    /// `WADISPATCH_APP_SECRET`. Restart required. Default: unset.
    pub app_secret: Option<Secret>,
    /// Token Meta echoes when it verifies the webhook URL (`hub.verify_token`);
    /// set it from `WADISPATCH_VERIFY_TOKEN`. Restart required. Default: unset.
    pub verify_token: Option<Secret>,
    /// TCP + TLS connect timeout, in milliseconds. A send that fails to connect was
    /// never delivered and is retried as transient. Restart required.
    /// Default: `2000`.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout, in milliseconds. A send that times out after it was
    /// written may have been delivered, so it becomes `unknown` and is never resent
    /// automatically. Restart required. Default: `10000`.
    pub request_timeout_ms: u64,
    /// Keep-alive connections per sender. All senders reach the same host
    /// through one pool of this many connections times the number of
    /// configured senders. Restart required. Default: `64`.
    pub max_connections_per_sender: usize,
    /// Inbound messages that opt the contact out, compared case-insensitively with
    /// the whole message text. Restart required.
    /// Default: `["STOP", "UNSUBSCRIBE", "BAJA", "PARAR", "CANCELAR"]`.
    pub opt_out_keywords: Vec<String>,
    /// What a keyword opt-out covers: `all` (every template category) or
    /// `marketing` (utility and authentication messages still reach the
    /// contact). Meta's own signals (131050, a `user_preferences` stop) are
    /// always marketing only. Restart required. Default: `all`.
    pub opt_out_keyword_scope: crate::domain::OptOutScope,
    /// What a template's RED quality score (Meta's
    /// `message_template_quality_update`) does: `halt` holds every campaign
    /// that sends the template until Meta approves it again or the score
    /// goes back to YELLOW or GREEN; `warn` logs it and keeps sending. A
    /// paused, disabled or rejected template holds its campaigns either way.
    /// Applied live on reload. Default: `halt`.
    pub template_red_quality: crate::domain::RedQualityPolicy,
    /// When a contact Meta refused for its per-user marketing limit (131049)
    /// is tried again (`[whatsapp.marketing_limit_retry]`): after
    /// `first_delay_hours`, each later retry `growth` times longer, at most
    /// `max_retries` times, never later than `max_age_hours` after the step
    /// was staged. Restart required. Default: 24 h, ×2, 3 retries, 168 h.
    pub marketing_limit_retry: crate::domain::DeferralSchedule,
    /// Where marketing templates go: `never` (Cloud API's `/messages`),
    /// `auto` (the Marketing Messages API's `/marketing_messages`, which
    /// falls back to Cloud API for an account not onboarded) or `always`
    /// (`/marketing_messages` only: an account not onboarded halts the
    /// campaign). `[senders]` and `[campaigns]` may override it. Applied
    /// live on reload. Default: `never`.
    pub marketing_messages: crate::domain::MarketingMessages,
    /// What Meta's quality signals on a number (131048, the spam rate
    /// limit; `phone_number_quality_update` `FLAGGED`, `DOWNGRADE` or `RESTRICTED`) do to
    /// marketing sends from it: `slow` (half the number's rate), `halt`
    /// (none; campaigns use the rest of their pool or wait) or `warn`.
    /// Utility and authentication sends are not affected. Restart required.
    /// Default: `slow`.
    pub number_quality: crate::domain::NumberQualityPolicy,
    /// How long a 131048 keeps its number's marketing sends slowed or halted,
    /// in seconds (a webhook flag lasts until Meta lifts it). Restart
    /// required. Default: `3600`.
    pub number_quality_hold_secs: u64,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self {
            api_base_url: "https://graph.facebook.com".to_owned(),
            api_version: "v23.0".to_owned(),
            token: None,
            token_file: None,
            app_secret: None,
            verify_token: None,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            max_connections_per_sender: 64,
            opt_out_keywords: ["STOP", "UNSUBSCRIBE", "BAJA", "PARAR", "CANCELAR"]
                .map(str::to_owned)
                .to_vec(),
            opt_out_keyword_scope: crate::domain::OptOutScope::All,
            template_red_quality: crate::domain::RedQualityPolicy::Halt,
            marketing_limit_retry: crate::domain::DeferralSchedule::default(),
            marketing_messages: crate::domain::MarketingMessages::Never,
            number_quality: crate::domain::NumberQualityPolicy::Slow,
            number_quality_hold_secs: 3_600,
        }
    }
}

/// `[http]`: the public listener for Meta's webhooks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Socket address (`ip:port`) of the webhook receiver (`GET`/`POST /webhook`).
    /// Restart required. Default: `"0.0.0.0:8080"`.
    pub listen: String,
    /// How long a reply waits for the wamid it answers (`context.id`) when
    /// it arrives before the API answer carrying that wamid was recorded
    /// (fast users and auto-replies do that); then it goes to the contact's
    /// latest campaign. 0 attributes at once. Restart required. Default: 5000.
    pub reply_context_wait_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".to_owned(),
            reply_context_wait_ms: 5_000,
        }
    }
}

/// `[admin]`: the private listener for `/metrics`, `/healthz`, `/readyz` and
/// `/campaigns`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Socket address (`ip:port`). Loopback by default because the admin API is
    /// unauthenticated. Restart required. Default: `"127.0.0.1:9898"`.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9898".to_owned(),
        }
    }
}

/// A frequency cap as the config writes it: `{ count = 2, per = "24h" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapConfig {
    pub count: u32,
    /// The window, like `24h` or `7d` (at most `90d`).
    pub per: String,
}

impl CapConfig {
    /// The cap, or what is wrong with it (validation reports it at load).
    pub fn cap(&self) -> Result<crate::domain::FrequencyCap, String> {
        crate::domain::FrequencyCap::parse(self.count, &self.per)
    }
}

/// `[dispatch]`: pacing, retries and limits. Applied live on reload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// Rate of a sender not listed under `[senders]`, in messages per second,
    /// shared by all instances. Meta's default throughput is 80 per business
    /// phone number. Default: `80.0`.
    pub default_sender_per_second: f64,
    /// Minimum interval between two messages to the same recipient from one
    /// sender, in seconds. Meta allows 1 message per 6 s per recipient (error
    /// 131056). Default: `6`.
    pub pair_interval_secs: u64,
    /// Messages to one recipient allowed at once before `pair_interval_secs`
    /// applies. Default: `2`.
    pub pair_burst: u32,
    /// Most unique recipients per rolling 24 h across the business portfolio
    /// (Meta's messaging limit tier, e.g. 1000, 10000, 100000). Unset means
    /// unlimited. Default: unset.
    pub portfolio_daily_limit: Option<u64>,
    /// Most marketing messages one contact gets across every campaign in
    /// any window of `per` (`{ count = 2, per = "24h" }`): a contact over
    /// it is excluded `frequency_cap` at the claim. Meta limits marketing
    /// messages per user too (error 131049) and holds a business that
    /// ignores it to a lower quality. Unset means no cap. Default: unset.
    pub marketing_per_contact: Option<CapConfig>,
    /// Most requests awaiting a response per sender. Bounds memory and how much
    /// work a stalled API can hold. Default: `256`.
    pub max_in_flight_per_sender: usize,
    /// Attempts (the first included) for a transient error about one contact
    /// before it is marked failed, counted only while its sender is healthy: a
    /// request that never left, and any send during an outage (the sender's
    /// circuit open), waits instead of failing. Default: `5`.
    pub transient_max_attempts: u32,
    /// Seconds after which an `unknown` contact (its request may have left,
    /// no answer came) that no status webhook settled is sent again. WhatsApp
    /// has no idempotency key, so a resend may deliver a duplicate; unset
    /// keeps such contacts `unknown` for an operator (`wadispatch requeue`).
    /// Default: unset (never).
    pub resend_unknown_after_secs: Option<u64>,
    /// Transient failures in a row (connection errors, lost answers, Meta's
    /// 5xx and transient codes, with no answer in between) that open a
    /// sender's circuit: it stops taking contacts, which stay pending, and
    /// probes with one send after a wait. Default: `10`.
    pub circuit_failures_to_open: u32,
    /// First wait before a probe of an open circuit, in seconds; doubled
    /// after each failed probe. Default: `1.0`.
    pub circuit_open_secs: f64,
    /// Cap on the wait before a probe, in seconds. Default: `30.0`.
    pub circuit_max_open_secs: f64,
    /// How long a sender pauses when Meta answers 131057 (the number is in
    /// maintenance, e.g. while its throughput is upgraded), in seconds. Its
    /// contacts wait; nobody fails. Read when a sender starts. Default:
    /// `30.0`.
    pub maintenance_pause_secs: f64,
    /// First retry delay, in milliseconds; doubled per attempt, with jitter.
    /// Default: `500`.
    pub backoff_base_ms: u64,
    /// Cap on the retry delay, in milliseconds. Default: `60000`.
    pub backoff_max_ms: u64,
    /// Factor applied to a sender's rate on error 130429, between 0 and 1
    /// exclusive (AIMD decrease). Default: `0.5`.
    pub aimd_decrease_factor: f64,
    /// Rate regained per second without throttling, in messages per second per
    /// second, up to the configured rate (AIMD increase). Default: `1.0`.
    pub aimd_increase_per_sec: f64,
    /// ISO 3166-1 alpha-2 country (e.g. `"MX"`) used to read phone numbers given
    /// without a country code. Unset rejects such numbers as `invalid_phone`.
    /// Default: unset.
    pub default_region: Option<String>,
    /// Length of this instance's lease in the store, in seconds; renewed every
    /// third of it. Claims of an instance whose lease lapsed (it crashed, or
    /// its pod came back under another name) are settled by the owners of
    /// their shards this long (plus 5 s) after its last renewal; a clean stop
    /// releases the lease at once. Claims pause while the store does not take
    /// the renewals. Restart required. Default: `15`.
    pub lease_secs: u64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            default_sender_per_second: 80.0,
            pair_interval_secs: 6,
            pair_burst: 2,
            portfolio_daily_limit: None,
            marketing_per_contact: None,
            max_in_flight_per_sender: 256,
            transient_max_attempts: 5,
            resend_unknown_after_secs: None,
            circuit_failures_to_open: 10,
            circuit_open_secs: 1.0,
            maintenance_pause_secs: 30.0,
            circuit_max_open_secs: 30.0,
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            aimd_decrease_factor: 0.5,
            aimd_increase_per_sec: 1.0,
            default_region: None,
            lease_secs: 15,
        }
    }
}

/// `[log]`: log output.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `"pretty"` for people, `"json"` for log collectors. Restart required.
    /// Default: `"pretty"`.
    pub format: LogFormat,
    /// `tracing_subscriber::EnvFilter` directive, e.g. `"info,wadispatch=debug"`.
    /// Applied live on reload. Default: `"info"`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `[metrics]`: bounds on Prometheus series (docs/ARCHITECTURE.md, "Metrics").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Most campaigns given their own `campaign` label value at once, so a flood
    /// of campaigns cannot blow up the number of series. Restart required.
    /// Default: `200`.
    pub max_campaign_series: usize,
    /// How long an ended campaign's series are kept before removal, in seconds, so
    /// Prometheus scrapes their final values. Restart required. Default: `3600`.
    pub ended_campaign_grace_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_campaign_series: 200,
            ended_campaign_grace_secs: 3_600,
        }
    }
}

/// `[senders."<phone_number_id>"]`: one WhatsApp sender number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderConfig {
    /// Rate of this number, in messages per second, shared by all instances in
    /// proportion to their partitions. Required in a sender entry: there is no
    /// sensible per-number default other than `dispatch.default_sender_per_second`,
    /// which applies to numbers without an entry.
    pub per_second: f64,
    /// Stop sending from this number; its campaigns wait. Default: `false`.
    #[serde(default)]
    pub paused: bool,
    /// Name shown to operators (logs, admin API). Default: unset.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The number as Meta's account webhooks show it
    /// (`display_phone_number`, digits, e.g. `"15550783881"`): how a
    /// `phone_number_quality_update` names this sender. Default: unset.
    #[serde(default)]
    pub display_phone_number: Option<String>,
    /// Follow Meta's throughput upgrade: when Meta says this number moved to
    /// its higher throughput (`THROUGHPUT_UPGRADE`), send at 1,000 messages
    /// per second (or `max_per_second`, if lower) instead of `per_second`.
    /// Needs `display_phone_number`. Applied live. Default: `false`.
    #[serde(default)]
    pub auto_throughput: bool,
    /// The ceiling of `auto_throughput`, in messages per second. Default:
    /// unset (1,000, Meta's higher throughput).
    #[serde(default)]
    pub max_per_second: Option<f64>,
    /// `whatsapp.marketing_messages` for this sender. Default: unset.
    #[serde(default)]
    pub marketing_messages: Option<crate::domain::MarketingMessages>,
}

impl SenderConfig {
    /// The rate this sender runs at: `per_second`, or Meta's higher
    /// throughput under `max_per_second` once Meta upgraded the number and
    /// `auto_throughput` follows it (never below `per_second`).
    pub fn rate(&self, upgraded: impl Fn(&str) -> bool) -> f64 {
        let follows =
            self.auto_throughput && self.display_phone_number.as_deref().is_some_and(&upgraded);
        if !follows {
            return self.per_second;
        }
        let ceiling = self
            .max_per_second
            .unwrap_or(crate::domain::MAX_SENDER_RATE)
            .min(crate::domain::MAX_SENDER_RATE);
        ceiling.max(self.per_second)
    }
}

/// `[sms]`: the SMS provider of journeys' `sms` steps (README, "SMS
/// channel").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// Base URL of the account's SMS API, as the provider's portal shows it;
    /// messages go to `{api_base_url}/sms/2/text/advanced`. Point it at the
    /// sandbox for demos and tests. Restart required. Default: unset (no SMS
    /// channel).
    pub api_base_url: Option<String>,
    /// API key, sent as `Authorization: App <key>`; set it from
    /// `WADISPATCH_SMS_API_KEY`. Restart required. Default: unset.
    pub api_key: Option<Secret>,
    /// Sender id (`from`) of SMS steps that name none. Restart required.
    /// Default: unset.
    pub default_sender: Option<String>,
    /// Rate per sender id (`[sms.senders."InfoSMS"] per_second = 10`).
    /// Restart required. Default: none; a sender id not listed runs at
    /// 10 messages per second.
    pub senders: BTreeMap<String, SmsSenderConfig>,
    /// Public URL of this daemon's `/sms/reports` on the `[http]` listener,
    /// given to the provider as each message's `notifyUrl`, with
    /// `report_username` and the report password as its user info. Unset:
    /// no delivery report is asked for, and SMS steps end `accepted`.
    /// Restart required. Default: unset.
    pub report_url: Option<String>,
    /// User name delivery reports must present (HTTP Basic). Restart
    /// required. Default: `"wadispatch"`.
    pub report_username: String,
    /// Password of delivery reports; set it from
    /// `WADISPATCH_SMS_REPORT_PASSWORD`. Unset: every report is refused
    /// with 401. Restart required. Default: unset.
    pub report_password: Option<Secret>,
    /// TCP + TLS connect timeout, in milliseconds (a failure to connect is
    /// "not sent" and retried). Restart required. Default: `2000`.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout, in milliseconds (a timeout after the request
    /// was written is `unknown`, never resent). Restart required. Default:
    /// `10000`.
    pub request_timeout_ms: u64,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            api_base_url: None,
            api_key: None,
            default_sender: None,
            senders: BTreeMap::new(),
            report_url: None,
            report_username: "wadispatch".to_owned(),
            report_password: None,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
        }
    }
}

/// `[sms.senders."<sender id>"]`: one SMS sender id.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSenderConfig {
    /// Messages per second from this sender id, for this instance.
    pub per_second: f64,
}

/// `[campaigns."<campaign id>"]`: operator override of one campaign.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CampaignOverride {
    /// Contacts per second, replacing the spec's pacing. Not together with
    /// `per_hour`. Default: unset (the spec's pacing applies).
    pub per_second: Option<f64>,
    /// Contacts per hour, replacing the spec's pacing. Not together with
    /// `per_second`. Default: unset.
    pub per_hour: Option<f64>,
    /// Pause the campaign whatever its spec's desired state. Default: `false`.
    pub paused: bool,
    /// `whatsapp.marketing_messages` for this campaign (over the sender's).
    /// Default: unset.
    pub marketing_messages: Option<crate::domain::MarketingMessages>,
}

/// A credential. `Debug` and `Display` print `***`, so logging a config never
/// leaks it; call [`Secret::expose`] where the value is really needed.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself; keep it out of logs and error messages.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
