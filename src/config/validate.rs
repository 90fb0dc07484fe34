//! Validation of a parsed [`Config`]: every value checked, every problem reported
//! with the dotted key an operator looks for in the file.
//!
//! Checks that need only the config and the file system live here; whether a
//! sender number or campaign exists is learned at run time and is not checked.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use super::model::{
    CampaignOverride, CapConfig, Config, DispatchConfig, KafkaConfig, ScyllaStoreConfig,
    SenderConfig, SmsConfig, StoreBackend, WhatsAppConfig,
};

/// One unusable value: `key` is the dotted path in the file
/// (`senders."106540352242922".per_second`), `message` says what is wrong and
/// quotes the value (never a secret's value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl Problem {
    pub(super) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// librdkafka properties wadispatch sets itself. The first four carry the
/// at-least-once design (offsets are stored by hand only after a record is
/// durable, with cooperative rebalancing); `bootstrap.servers` and its alias come
/// from `kafka.brokers` so that `WADISPATCH_KAFKA_BROKERS` and the reload diff see
/// the real broker list.
const MANAGED_CLIENT_KEYS: &[&str] = &[
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "partition.assignment.strategy",
    "bootstrap.servers",
    "metadata.broker.list",
];

/// Consistency names the Scylla driver understands.
const CONSISTENCIES: &[&str] = &[
    "any",
    "one",
    "two",
    "three",
    "quorum",
    "all",
    "local_quorum",
    "each_quorum",
    "local_one",
];

/// Kafka rejects longer topic names.
const MAX_TOPIC_LEN: usize = 249;
/// CQL identifiers (keyspace names) are limited to 48 characters.
const MAX_KEYSPACE_LEN: usize = 48;

impl Config {
    /// Checks every value and returns every problem found, grouped by section.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut report = Report::default();
        check_kafka(&mut report, &self.kafka);
        check_store(&mut report, self);
        check_whatsapp(&mut report, &self.whatsapp);
        check_sms(&mut report, &self.sms);
        check_listeners(&mut report, &self.http.listen, &self.admin.listen);
        check_dispatch(&mut report, &self.dispatch);
        if self.log.level.trim().is_empty() {
            report.add("log.level", "must not be empty; \"info\" is the default");
        } else if self.log.level.chars().any(char::is_whitespace) {
            report.add(
                "log.level",
                format!(
                    "must be an EnvFilter directive without spaces such as \"info,wadispatch=debug\", got {:?}",
                    self.log.level
                ),
            );
        }
        report.positive(
            "metrics.max_campaign_series",
            self.metrics.max_campaign_series,
        );
        check_senders(&mut report, &self.senders);
        check_campaigns(&mut report, &self.campaigns);
        if let Some(card) = &self.pricing {
            for problem in card.problems() {
                report.add("pricing", problem);
            }
        }
        if report.0.is_empty() {
            Ok(())
        } else {
            Err(report.0)
        }
    }
}

#[derive(Default)]
struct Report(Vec<Problem>);

impl Report {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(key, message));
    }

    /// Counts, sizes and durations for which zero makes no sense.
    fn positive<T: Default + PartialEq>(&mut self, key: &str, value: T) {
        if value == T::default() {
            self.add(key, "must be greater than 0, got 0");
        }
    }

    /// Rates: NaN or infinity would disable pacing, zero would never send.
    fn rate(&mut self, key: &str, value: f64) {
        if !value.is_finite() || value <= 0.0 {
            self.add(
                key,
                format!("must be a finite number greater than 0, got {value}"),
            );
        }
    }

    fn existing_file(&mut self, key: &str, path: &Path) {
        if !path.is_file() {
            self.add(key, format!("file {} does not exist", path.display()));
        }
    }

    fn non_empty_optional(&mut self, key: &str, value: Option<&str>) {
        if value.is_some_and(|v| v.trim().is_empty()) {
            self.add(key, "must not be empty when set; remove the key instead");
        }
    }
}

/// Quotes a map key the way TOML writes it, so problem keys can be pasted into a
/// search of the file.
pub(super) fn quote(key: &str) -> String {
    format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
}

fn check_kafka(report: &mut Report, kafka: &KafkaConfig) {
    check_brokers(report, kafka);
    if kafka.group_id.trim().is_empty() {
        report.add("kafka.group_id", "must not be empty");
    }
    check_topics(report, kafka);
    check_client_keys(report, kafka);
    report.positive("kafka.max_buffered_records", kafka.max_buffered_records);
    report.positive("kafka.stage_batch_size", kafka.stage_batch_size);
    if kafka.stage_batch_size > kafka.max_buffered_records && kafka.max_buffered_records > 0 {
        // Partitions pause before such a batch could fill, so it would only ever
        // be flushed by the linger timer.
        report.add(
            "kafka.stage_batch_size",
            format!(
                "must not exceed kafka.max_buffered_records ({}), got {}",
                kafka.max_buffered_records, kafka.stage_batch_size
            ),
        );
    }
    report.positive("kafka.shutdown_timeout_secs", kafka.shutdown_timeout_secs);
}

fn check_brokers(report: &mut Report, kafka: &KafkaConfig) {
    let brokers: Vec<&str> = kafka.brokers.split(',').map(str::trim).collect();
    if kafka.brokers.trim().is_empty() {
        report.add(
            "kafka.brokers",
            "must list at least one broker such as \"localhost:9092\"",
        );
    } else if brokers
        .iter()
        .any(|b| b.is_empty() || b.contains(char::is_whitespace))
    {
        report.add(
            "kafka.brokers",
            format!(
                "must be comma-separated host:port entries without blanks, got {:?}",
                kafka.brokers
            ),
        );
    }
}

/// Every topic name valid, and each role on a topic of its own.
fn check_topics(report: &mut Report, kafka: &KafkaConfig) {
    let topics = [
        ("kafka.topics.campaigns", &kafka.topics.campaigns),
        ("kafka.topics.audience", &kafka.topics.audience),
        ("kafka.topics.audience_dlq", &kafka.topics.audience_dlq),
        ("kafka.topics.events", &kafka.topics.events),
        ("kafka.topics.suppressions", &kafka.topics.suppressions),
        ("kafka.topics.conversions", &kafka.topics.conversions),
    ];
    for (i, (key, name)) in topics.iter().enumerate() {
        if let Some(reason) = topic_name_problem(name) {
            report.add(*key, format!("{reason}, got {name:?}"));
        } else if let Some((other, _)) = topics[..i].iter().find(|(_, n)| n == name) {
            // One topic in two roles would, e.g., feed the DLQ back into ingest.
            report.add(
                *key,
                format!("topic {name:?} is already used by {other}; each role needs its own topic"),
            );
        }
    }
}

/// `[kafka.client]` keys: librdkafka property names, none of those the
/// daemon manages itself.
fn check_client_keys(report: &mut Report, kafka: &KafkaConfig) {
    for key in kafka.client.keys() {
        let path = format!("kafka.client.{}", quote(key));
        let well_formed = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_');
        if !well_formed {
            report.add(
                path,
                "is not a librdkafka property name (lowercase letters, digits, '.' and '_')",
            );
        } else if MANAGED_CLIENT_KEYS.contains(&key.as_str()) {
            let by =
                if key.as_str() == "bootstrap.servers" || key.as_str() == "metadata.broker.list" {
                    "set it with kafka.brokers"
                } else {
                    "the at-least-once offset handling depends on it"
                };
            report.add(
                path,
                format!("is managed by wadispatch and cannot be overridden: {by}"),
            );
        }
    }
}

fn topic_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_TOPIC_LEN {
        Some("must be at most 249 characters")
    } else if name == "." || name == ".." {
        Some("is not a valid kafka topic name")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("must contain only letters, digits, '.', '_' and '-'")
    } else {
        None
    }
}

fn check_store(report: &mut Report, config: &Config) {
    let store = &config.store;
    if store.embedded.data_dir.as_os_str().is_empty() {
        report.add("store.embedded.data_dir", "must not be empty");
    }
    report.positive("store.embedded.cache_mb", store.embedded.cache_mb);
    // The scylla section is ignored by the embedded backend, so only check it when
    // it is in use: a half-edited scylla section must not block a local run.
    if store.backend == StoreBackend::Scylla {
        check_scylla(report, &store.scylla);
    }
}

fn check_scylla(report: &mut Report, scylla: &ScyllaStoreConfig) {
    if scylla.nodes.is_empty() {
        report.add(
            "store.scylla.nodes",
            "must list at least one node such as \"127.0.0.1:9042\" when store.backend = \"scylla\"",
        );
    }
    for (i, node) in scylla.nodes.iter().enumerate() {
        let valid = node
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.trim().is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            report.add(
                format!("store.scylla.nodes[{i}]"),
                format!("must be host:port such as \"10.0.0.5:9042\", got {node:?}"),
            );
        }
    }
    let keyspace_ok = scylla.keyspace.len() <= MAX_KEYSPACE_LEN
        && scylla
            .keyspace
            .starts_with(|c: char| c.is_ascii_alphabetic())
        && scylla
            .keyspace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !keyspace_ok {
        report.add(
            "store.scylla.keyspace",
            format!(
                "must start with a letter and have at most 48 letters, digits or '_', got {:?}",
                scylla.keyspace
            ),
        );
    }
    report.non_empty_optional(
        "store.scylla.local_datacenter",
        scylla.local_datacenter.as_deref(),
    );
    if !CONSISTENCIES.contains(&scylla.consistency.as_str()) {
        let lower = scylla.consistency.to_ascii_lowercase();
        let message = if CONSISTENCIES.contains(&lower.as_str()) {
            format!(
                "must be written in lowercase: {lower:?}, got {:?}",
                scylla.consistency
            )
        } else {
            format!(
                "must be one of {}, got {:?}",
                CONSISTENCIES.join(", "),
                scylla.consistency
            )
        };
        report.add("store.scylla.consistency", message);
    }
    report.positive("store.scylla.replication_factor", scylla.replication_factor);
    report.positive("store.scylla.request_timeout_ms", scylla.request_timeout_ms);
    if let Some(ca) = &scylla.tls_ca_file {
        report.existing_file("store.scylla.tls_ca_file", ca);
        if !scylla.tls {
            report.add(
                "store.scylla.tls_ca_file",
                "is set but store.scylla.tls = false; set tls = true or remove it",
            );
        }
    }
    match (&scylla.username, &scylla.password) {
        (Some(_), None) => report.add(
            "store.scylla.password",
            "WADISPATCH_SCYLLA_USERNAME is set but WADISPATCH_SCYLLA_PASSWORD is not; set both or neither",
        ),
        (None, Some(_)) => report.add(
            "store.scylla.username",
            "WADISPATCH_SCYLLA_PASSWORD is set but WADISPATCH_SCYLLA_USERNAME is not; set both or neither",
        ),
        _ => {}
    }
}

fn check_sms(report: &mut Report, sms: &SmsConfig) {
    for (key, url) in [
        ("sms.api_base_url", &sms.api_base_url),
        ("sms.report_url", &sms.report_url),
    ] {
        let Some(url) = url else { continue };
        let parsed = reqwest::Url::parse(url).ok();
        if !parsed.as_ref().is_some_and(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.username().is_empty()
        }) {
            report.add(
                key,
                format!("must be an http(s) URL with a host and no user info, got {url:?}"),
            );
        }
    }
    for (key, secret) in [
        ("sms.api_key", &sms.api_key),
        ("sms.report_password", &sms.report_password),
    ] {
        report.non_empty_optional(key, secret.as_ref().map(|s| s.expose()));
    }
    if sms.report_username.is_empty() || sms.report_username.contains(':') {
        report.add(
            "sms.report_username",
            format!(
                "must be non-empty and without ':', got {:?}",
                sms.report_username
            ),
        );
    }
    if let Some(sender) = &sms.default_sender {
        if sender.trim().is_empty() {
            report.add(
                "sms.default_sender",
                "must not be blank; leave it out instead",
            );
        }
    }
    for (id, sender) in &sms.senders {
        if !sender.per_second.is_finite() || sender.per_second <= 0.0 {
            report.add(
                format!("sms.senders.\"{id}\".per_second"),
                format!("must be a number above 0, got {}", sender.per_second),
            );
        }
    }
    check_timeouts(
        report,
        "sms",
        sms.connect_timeout_ms,
        sms.request_timeout_ms,
    );
}

/// `<section>.connect_timeout_ms` and `request_timeout_ms`: positive, and
/// the connect timeout the shorter.
fn check_timeouts(report: &mut Report, section: &str, connect: u64, request: u64) {
    report.positive(&format!("{section}.connect_timeout_ms"), connect);
    report.positive(&format!("{section}.request_timeout_ms"), request);
    if connect >= request {
        report.add(
            format!("{section}.connect_timeout_ms"),
            format!(
                "must be shorter than {section}.request_timeout_ms ({request}): the request timer also runs while connecting, and a send that never left would be reported unknown; got {connect}"
            ),
        );
    }
}

fn check_whatsapp(report: &mut Report, wa: &WhatsAppConfig) {
    for (key, problem) in wa.marketing_limit_retry.problems() {
        report.add(format!("whatsapp.marketing_limit_retry.{key}"), problem);
    }
    let url = &wa.api_base_url;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        None => report.add(
            "whatsapp.api_base_url",
            format!("must start with http:// or https://, got {url:?}"),
        ),
        Some(rest) if rest.is_empty() || rest.starts_with('/') => report.add(
            "whatsapp.api_base_url",
            format!("must name a host, got {url:?}"),
        ),
        Some(_) if url.contains(char::is_whitespace) => report.add(
            "whatsapp.api_base_url",
            format!("must not contain spaces, got {url:?}"),
        ),
        // The client appends "/{version}/…"; a trailing slash would give "//".
        Some(_) if url.ends_with('/') => report.add(
            "whatsapp.api_base_url",
            format!("must not end with '/', got {url:?}"),
        ),
        Some(_) => {}
    }
    if !is_api_version(&wa.api_version) {
        report.add(
            "whatsapp.api_version",
            format!("must look like v23.0, got {:?}", wa.api_version),
        );
    }
    for (key, secret) in [
        ("whatsapp.token", &wa.token),
        ("whatsapp.app_secret", &wa.app_secret),
        ("whatsapp.verify_token", &wa.verify_token),
    ] {
        report.non_empty_optional(key, secret.as_ref().map(|s| s.expose()));
    }
    if let Some(path) = &wa.token_file {
        report.existing_file("whatsapp.token_file", path);
    }
    check_timeouts(
        report,
        "whatsapp",
        wa.connect_timeout_ms,
        wa.request_timeout_ms,
    );
    report.positive(
        "whatsapp.max_connections_per_sender",
        wa.max_connections_per_sender,
    );
    if wa.opt_out_keywords.is_empty() {
        report.add(
            "whatsapp.opt_out_keywords",
            "must list at least one keyword (default STOP, UNSUBSCRIBE, BAJA, PARAR, CANCELAR): with none, a customer who writes STOP keeps getting campaigns",
        );
    }
    for (i, keyword) in wa.opt_out_keywords.iter().enumerate() {
        if keyword.trim().is_empty() {
            // An empty keyword would match an empty message and opt people out.
            report.add(
                format!("whatsapp.opt_out_keywords[{i}]"),
                "must not be empty",
            );
        }
    }
}

/// `v<digits>.<digits>`, the form of Graph API versions.
fn is_api_version(version: &str) -> bool {
    let Some((major, minor)) = version.strip_prefix('v').and_then(|v| v.split_once('.')) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

fn check_listeners(report: &mut Report, http: &str, admin: &str) {
    let parse = |report: &mut Report, key: &str, value: &str| match value.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            report.add(
                key,
                format!("must be an ip:port socket address such as 0.0.0.0:8080, got {value:?}"),
            );
            None
        }
    };
    let http = parse(report, "http.listen", http);
    let admin = parse(report, "admin.listen", admin);
    if let (Some(http), Some(admin)) = (http, admin) {
        // 0.0.0.0 covers every address, so it clashes with any ip on that port.
        let overlap =
            http.ip() == admin.ip() || http.ip().is_unspecified() || admin.ip().is_unspecified();
        if http.port() == admin.port() && http.port() != 0 && overlap {
            report.add(
                "admin.listen",
                format!("{admin} clashes with http.listen {http}; use another port"),
            );
        }
    }
}

fn check_dispatch(report: &mut Report, d: &DispatchConfig) {
    report.rate(
        "dispatch.default_sender_per_second",
        d.default_sender_per_second,
    );
    report.positive("dispatch.pair_interval_secs", d.pair_interval_secs);
    report.positive("dispatch.pair_burst", d.pair_burst);
    if d.portfolio_daily_limit == Some(0) {
        report.add(
            "dispatch.portfolio_daily_limit",
            "must be greater than 0, got 0; remove the key for no limit",
        );
    }
    if let Some(Err(why)) = d.marketing_per_contact.as_ref().map(CapConfig::cap) {
        report.add("dispatch.marketing_per_contact", why);
    }
    report.positive(
        "dispatch.max_in_flight_per_sender",
        d.max_in_flight_per_sender,
    );
    report.positive("dispatch.transient_max_attempts", d.transient_max_attempts);
    if d.lease_secs < 3 {
        report.add(
            "dispatch.lease_secs",
            format!(
                "must be at least 3 (renewed every third of it), got {}",
                d.lease_secs
            ),
        );
    }
    report.positive(
        "dispatch.circuit_failures_to_open",
        d.circuit_failures_to_open,
    );
    report.rate("dispatch.circuit_open_secs", d.circuit_open_secs);
    report.rate("dispatch.maintenance_pause_secs", d.maintenance_pause_secs);
    if d.circuit_max_open_secs < d.circuit_open_secs {
        report.add(
            "dispatch.circuit_max_open_secs",
            format!(
                "must be at least dispatch.circuit_open_secs ({}), got {}",
                d.circuit_open_secs, d.circuit_max_open_secs
            ),
        );
    }
    report.positive("dispatch.backoff_base_ms", d.backoff_base_ms);
    if d.backoff_max_ms < d.backoff_base_ms {
        report.add(
            "dispatch.backoff_max_ms",
            format!(
                "must be at least dispatch.backoff_base_ms ({}), got {}",
                d.backoff_base_ms, d.backoff_max_ms
            ),
        );
    }
    let factor = d.aimd_decrease_factor;
    if !(factor > 0.0 && factor < 1.0) {
        report.add(
            "dispatch.aimd_decrease_factor",
            format!("must be between 0 and 1 exclusive, got {factor}"),
        );
    }
    report.rate("dispatch.aimd_increase_per_sec", d.aimd_increase_per_sec);
    if let Some(region) = &d.default_region {
        if region.len() != 2 || !region.bytes().all(|b| b.is_ascii_uppercase()) {
            report.add(
                "dispatch.default_region",
                format!("must be a two-letter uppercase ISO country code such as \"MX\", got {region:?}"),
            );
        }
    }
}

fn check_senders(report: &mut Report, senders: &BTreeMap<String, SenderConfig>) {
    for (id, sender) in senders {
        let key = format!("senders.{}", quote(id));
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            report.add(
                &key,
                format!("sender id must be the numeric WhatsApp phone_number_id, got {id:?}"),
            );
        }
        report.rate(&format!("{key}.per_second"), sender.per_second);
        if sender.per_second > crate::domain::MAX_SENDER_RATE {
            report.add(
                format!("{key}.per_second"),
                format!(
                    "must be at most {} (Meta's highest throughput per phone number), got {}",
                    crate::domain::MAX_SENDER_RATE,
                    sender.per_second
                ),
            );
        }
        report.non_empty_optional(
            &format!("{key}.display_name"),
            sender.display_name.as_deref(),
        );
        if let Some(ceiling) = sender.max_per_second {
            report.rate(&format!("{key}.max_per_second"), ceiling);
        }
        if let Some(shown) = &sender.display_phone_number {
            if shown.is_empty() || !shown.bytes().all(|b| b.is_ascii_digit()) {
                report.add(
                    format!("{key}.display_phone_number"),
                    format!("must be the number's digits as Meta's webhooks show it (\"15550783881\"), got {shown:?}"),
                );
            }
        }
        if sender.auto_throughput && sender.display_phone_number.is_none() {
            report.add(
                format!("{key}.auto_throughput"),
                "needs display_phone_number: Meta's throughput webhook names the number by it",
            );
        }
    }
}

fn check_campaigns(report: &mut Report, campaigns: &BTreeMap<String, CampaignOverride>) {
    for (id, campaign) in campaigns {
        let key = format!("campaigns.{}", quote(id));
        if id.trim().is_empty() {
            report.add(&key, "campaign id must not be empty");
        } else if !crate::domain::is_campaign_id(id) {
            report.add(
                &key,
                "is not a campaign id: ids have 1 to 128 letters, digits, '.', '_' or '-', so no spec can match it",
            );
        }
        if let (Some(per_second), Some(per_hour)) = (campaign.per_second, campaign.per_hour) {
            report.add(
                &key,
                format!("set per_second or per_hour, not both (per_second = {per_second}, per_hour = {per_hour})"),
            );
        }
        if let Some(rate) = campaign.per_second {
            report.rate(&format!("{key}.per_second"), rate);
        }
        if let Some(rate) = campaign.per_hour {
            report.rate(&format!("{key}.per_hour"), rate);
        }
    }
}

#[cfg(test)]
mod tests;
