//! What a reload may apply to the running daemon, and what needs a restart.
//!
//! Live: `[dispatch]`, `[senders]`, `[campaigns]`, `[pricing]`, `log.level`,
//! `whatsapp.template_red_quality` and `whatsapp.marketing_messages`. Everything else
//! is read once at start-up (connections, listeners, the store, the HTTP client,
//! metric registration), so a change to it is reported as needing a restart
//! rather than silently ignored: an operator must never believe a setting took
//! effect when it did not. The restart check destructures every section, so a new
//! field that is not classified here fails to compile.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{
    Config, EmbeddedStoreConfig, KafkaConfig, MetricsConfig, ScyllaStoreConfig, SmsConfig,
    StoreConfig, TopicsConfig, WhatsAppConfig,
};
use super::validate::quote;

/// The changes a reload applies without a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveChanges {
    /// Sender ids whose `[senders]` entry was added, removed or changed, sorted. A
    /// removed entry means the sender falls back to
    /// `dispatch.default_sender_per_second` and is no longer paused.
    pub senders_changed: Vec<String>,
    /// Campaign ids whose `[campaigns]` override was added, removed or changed,
    /// sorted. A removed override means the campaign spec applies again.
    pub campaigns_changed: Vec<String>,
    /// `dispatch.portfolio_daily_limit` changed.
    pub portfolio_limit_changed: bool,
    /// Another `[dispatch]` setting changed; senders without a `[senders]` entry
    /// take `default_sender_per_second` from here, so they need re-applying too.
    pub dispatch_changed: bool,
    /// `log.level` changed.
    pub log_level_changed: bool,
    /// `whatsapp.template_red_quality` changed.
    pub template_policy_changed: bool,
    /// `[pricing]` changed.
    pub pricing_changed: bool,
    /// `whatsapp.marketing_messages` changed.
    pub marketing_messages_changed: bool,
}

impl LiveChanges {
    /// Nothing to apply.
    pub fn is_empty(&self) -> bool {
        self.senders_changed.is_empty()
            && self.campaigns_changed.is_empty()
            && !self.portfolio_limit_changed
            && !self.dispatch_changed
            && !self.log_level_changed
            && !self.template_policy_changed
            && !self.pricing_changed
            && !self.marketing_messages_changed
    }
}

impl Config {
    /// Dotted keys that differ between `self` (running) and `new` and need a
    /// restart, in file order. Values are not included: some are secrets.
    pub fn restart_required_changes(&self, new: &Config) -> Vec<String> {
        let Config {
            kafka,
            store,
            whatsapp,
            http,
            admin,
            // Live (but `lease_secs`): see `live_changes`.
            dispatch,
            log,
            metrics,
            sms,
            senders: _,
            campaigns: _,
            pricing: _,
        } = self;
        let mut changes = Changes::default();
        changes.kafka(kafka, &new.kafka);
        changes.store(store, &new.store);
        changes.whatsapp(whatsapp, &new.whatsapp);
        changes.sms(sms, &new.sms);
        changes.field("http.listen", &http.listen, &new.http.listen);
        changes.field(
            "http.reply_context_wait_ms",
            &http.reply_context_wait_ms,
            &new.http.reply_context_wait_ms,
        );
        changes.field("admin.listen", &admin.listen, &new.admin.listen);
        changes.field(
            "dispatch.lease_secs",
            &dispatch.lease_secs,
            &new.dispatch.lease_secs,
        );
        changes.field("log.format", &log.format, &new.log.format);
        let MetricsConfig {
            max_campaign_series,
            ended_campaign_grace_secs,
        } = metrics;
        changes.field(
            "metrics.max_campaign_series",
            max_campaign_series,
            &new.metrics.max_campaign_series,
        );
        changes.field(
            "metrics.ended_campaign_grace_secs",
            ended_campaign_grace_secs,
            &new.metrics.ended_campaign_grace_secs,
        );
        changes.0
    }

    /// The changes between `self` (running) and `new` that a reload applies live.
    pub fn live_changes(&self, new: &Config) -> LiveChanges {
        let mut dispatch_without_limit = self.dispatch.clone();
        dispatch_without_limit.portfolio_daily_limit = new.dispatch.portfolio_daily_limit;
        LiveChanges {
            senders_changed: changed_ids(&self.senders, &new.senders),
            campaigns_changed: changed_ids(&self.campaigns, &new.campaigns),
            portfolio_limit_changed: self.dispatch.portfolio_daily_limit
                != new.dispatch.portfolio_daily_limit,
            dispatch_changed: dispatch_without_limit != new.dispatch,
            log_level_changed: self.log.level != new.log.level,
            template_policy_changed: self.whatsapp.template_red_quality
                != new.whatsapp.template_red_quality,
            pricing_changed: self.pricing != new.pricing,
            marketing_messages_changed: self.whatsapp.marketing_messages
                != new.whatsapp.marketing_messages,
        }
    }
}

/// Keys added, removed or changed between two maps, sorted.
fn changed_ids<V: PartialEq>(old: &BTreeMap<String, V>, new: &BTreeMap<String, V>) -> Vec<String> {
    let ids: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    ids.into_iter()
        .filter(|id| old.get(*id) != new.get(*id))
        .cloned()
        .collect()
}

#[derive(Default)]
struct Changes(Vec<String>);

impl Changes {
    fn field<T: PartialEq>(&mut self, key: &str, old: &T, new: &T) {
        if old != new {
            self.0.push(key.to_owned());
        }
    }

    fn kafka(&mut self, old: &KafkaConfig, new: &KafkaConfig) {
        let KafkaConfig {
            brokers,
            group_id,
            topics,
            client,
            max_buffered_records,
            stage_batch_size,
            stage_batch_linger_ms,
            unknown_campaign_wait_secs,
            shutdown_timeout_secs,
        } = old;
        self.field("kafka.brokers", brokers, &new.brokers);
        self.field("kafka.group_id", group_id, &new.group_id);
        let TopicsConfig {
            campaigns,
            audience,
            audience_dlq,
            events,
            suppressions,
            conversions,
        } = topics;
        self.field("kafka.topics.campaigns", campaigns, &new.topics.campaigns);
        self.field("kafka.topics.audience", audience, &new.topics.audience);
        self.field(
            "kafka.topics.audience_dlq",
            audience_dlq,
            &new.topics.audience_dlq,
        );
        self.field("kafka.topics.events", events, &new.topics.events);
        self.field(
            "kafka.topics.suppressions",
            suppressions,
            &new.topics.suppressions,
        );
        self.field(
            "kafka.topics.conversions",
            conversions,
            &new.topics.conversions,
        );
        for key in changed_ids(client, &new.client) {
            self.0.push(format!("kafka.client.{}", quote(&key)));
        }
        self.field(
            "kafka.max_buffered_records",
            max_buffered_records,
            &new.max_buffered_records,
        );
        self.field(
            "kafka.stage_batch_size",
            stage_batch_size,
            &new.stage_batch_size,
        );
        self.field(
            "kafka.stage_batch_linger_ms",
            stage_batch_linger_ms,
            &new.stage_batch_linger_ms,
        );
        self.field(
            "kafka.unknown_campaign_wait_secs",
            unknown_campaign_wait_secs,
            &new.unknown_campaign_wait_secs,
        );
        self.field(
            "kafka.shutdown_timeout_secs",
            shutdown_timeout_secs,
            &new.shutdown_timeout_secs,
        );
    }

    fn store(&mut self, old: &StoreConfig, new: &StoreConfig) {
        let StoreConfig {
            backend,
            embedded,
            scylla,
        } = old;
        self.field("store.backend", backend, &new.backend);
        let EmbeddedStoreConfig {
            data_dir,
            durability,
            cache_mb,
        } = embedded;
        let new_embedded = &new.embedded;
        self.field("store.embedded.data_dir", data_dir, &new_embedded.data_dir);
        self.field(
            "store.embedded.durability",
            durability,
            &new_embedded.durability,
        );
        self.field("store.embedded.cache_mb", cache_mb, &new_embedded.cache_mb);
        let ScyllaStoreConfig {
            nodes,
            keyspace,
            local_datacenter,
            consistency,
            replication_factor,
            create_schema,
            request_timeout_ms,
            pool_size_per_host,
            tls,
            tls_ca_file,
            username,
            password,
        } = scylla;
        let s = &new.scylla;
        self.field("store.scylla.nodes", nodes, &s.nodes);
        self.field("store.scylla.keyspace", keyspace, &s.keyspace);
        self.field(
            "store.scylla.local_datacenter",
            local_datacenter,
            &s.local_datacenter,
        );
        self.field("store.scylla.consistency", consistency, &s.consistency);
        self.field(
            "store.scylla.replication_factor",
            replication_factor,
            &s.replication_factor,
        );
        self.field(
            "store.scylla.create_schema",
            create_schema,
            &s.create_schema,
        );
        self.field(
            "store.scylla.request_timeout_ms",
            request_timeout_ms,
            &s.request_timeout_ms,
        );
        self.field(
            "store.scylla.pool_size_per_host",
            pool_size_per_host,
            &s.pool_size_per_host,
        );
        self.field("store.scylla.tls", tls, &s.tls);
        self.field("store.scylla.tls_ca_file", tls_ca_file, &s.tls_ca_file);
        self.field("store.scylla.username", username, &s.username);
        self.field("store.scylla.password", password, &s.password);
    }

    fn sms(&mut self, old: &SmsConfig, new: &SmsConfig) {
        let SmsConfig {
            api_base_url,
            api_key,
            default_sender,
            senders,
            report_url,
            report_username,
            report_password,
            connect_timeout_ms,
            request_timeout_ms,
        } = old;
        self.field("sms.api_base_url", api_base_url, &new.api_base_url);
        self.field("sms.api_key", api_key, &new.api_key);
        self.field("sms.default_sender", default_sender, &new.default_sender);
        self.field("sms.senders", senders, &new.senders);
        self.field("sms.report_url", report_url, &new.report_url);
        self.field("sms.report_username", report_username, &new.report_username);
        self.field("sms.report_password", report_password, &new.report_password);
        self.field(
            "sms.connect_timeout_ms",
            connect_timeout_ms,
            &new.connect_timeout_ms,
        );
        self.field(
            "sms.request_timeout_ms",
            request_timeout_ms,
            &new.request_timeout_ms,
        );
    }

    fn whatsapp(&mut self, old: &WhatsAppConfig, new: &WhatsAppConfig) {
        let WhatsAppConfig {
            api_base_url,
            api_version,
            token,
            token_file,
            app_secret,
            verify_token,
            connect_timeout_ms,
            request_timeout_ms,
            max_connections_per_sender,
            opt_out_keywords,
            opt_out_keyword_scope,
            // Live: see `live_changes`.
            template_red_quality: _,
            marketing_messages: _,
            marketing_limit_retry,
            number_quality,
            number_quality_hold_secs,
        } = old;
        self.field(
            "whatsapp.number_quality",
            number_quality,
            &new.number_quality,
        );
        self.field(
            "whatsapp.number_quality_hold_secs",
            number_quality_hold_secs,
            &new.number_quality_hold_secs,
        );
        self.field(
            "whatsapp.marketing_limit_retry",
            marketing_limit_retry,
            &new.marketing_limit_retry,
        );
        self.field("whatsapp.api_base_url", api_base_url, &new.api_base_url);
        self.field("whatsapp.api_version", api_version, &new.api_version);
        self.field("whatsapp.token", token, &new.token);
        self.field("whatsapp.token_file", token_file, &new.token_file);
        self.field("whatsapp.app_secret", app_secret, &new.app_secret);
        self.field("whatsapp.verify_token", verify_token, &new.verify_token);
        self.field(
            "whatsapp.connect_timeout_ms",
            connect_timeout_ms,
            &new.connect_timeout_ms,
        );
        self.field(
            "whatsapp.request_timeout_ms",
            request_timeout_ms,
            &new.request_timeout_ms,
        );
        self.field(
            "whatsapp.max_connections_per_sender",
            max_connections_per_sender,
            &new.max_connections_per_sender,
        );
        self.field(
            "whatsapp.opt_out_keywords",
            opt_out_keywords,
            &new.opt_out_keywords,
        );
        self.field(
            "whatsapp.opt_out_keyword_scope",
            opt_out_keyword_scope,
            &new.opt_out_keyword_scope,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Secret, StoreBackend};
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml_str(text).expect("test config parses")
    }

    const BASE: &str = r#"
[dispatch]
portfolio_daily_limit = 1000
[senders."106540352242922"]
per_second = 80.0
[senders."106540352242923"]
per_second = 40.0
[campaigns."bday-2026-11"]
per_second = 20.0
"#;

    #[test]
    fn the_lease_length_needs_a_restart_and_the_portfolio_limit_does_not() {
        let old = config(BASE);
        let mut new = old.clone();
        new.dispatch.lease_secs = 30;
        assert_eq!(old.restart_required_changes(&new), ["dispatch.lease_secs"]);
        let mut limit = old.clone();
        limit.dispatch.portfolio_daily_limit = Some(1_234);
        assert!(old.restart_required_changes(&limit).is_empty());
        assert!(old.live_changes(&limit).portfolio_limit_changed);
    }

    #[test]
    fn identical_configs_have_no_changes() {
        let old = config(BASE);
        assert!(old.restart_required_changes(&old.clone()).is_empty());
        assert!(old.live_changes(&old.clone()).is_empty());
    }

    #[test]
    fn restart_is_required_for_brokers_and_store_but_not_sender_rates() {
        let old = config(BASE);
        let mut new = old.clone();
        new.kafka.brokers = "other:9092".to_owned();
        new.store.backend = StoreBackend::Scylla;
        new.store.embedded.data_dir = "/var/lib/wadispatch".into();
        new.kafka
            .client
            .insert("security.protocol".to_owned(), "SSL".to_owned());
        new.senders.get_mut("106540352242922").unwrap().per_second = 10.0;
        new.campaigns.get_mut("bday-2026-11").unwrap().paused = true;
        new.dispatch.pair_burst = 3;
        new.log.level = "debug".to_owned();
        assert_eq!(
            old.restart_required_changes(&new),
            [
                "kafka.brokers",
                "kafka.client.\"security.protocol\"",
                "store.backend",
                "store.embedded.data_dir",
            ]
        );

        let mut rates_only = old.clone();
        rates_only
            .senders
            .get_mut("106540352242923")
            .unwrap()
            .per_second = 1.0;
        assert!(old.restart_required_changes(&rates_only).is_empty());
    }

    #[test]
    fn secret_changes_are_named_without_values() {
        let old = config(BASE);
        let mut new = old.clone();
        new.whatsapp.token = Some(Secret::new("CANARY-token"));
        new.store.scylla.password = Some(Secret::new("CANARY-pw"));
        let changes = old.restart_required_changes(&new);
        assert_eq!(changes, ["store.scylla.password", "whatsapp.token"]);
        assert!(!changes.concat().contains("CANARY"));
    }

    #[test]
    fn live_changes_list_changed_added_and_removed_ids() {
        let old = config(BASE);
        let new = config(
            r#"
[dispatch]
portfolio_daily_limit = 1000
[senders."106540352242922"]
per_second = 80.0
[senders."106540352242923"]
per_second = 40.0
paused = true
[senders."106540352242924"]
per_second = 5.0
[campaigns."payment-reminder-2026-11"]
per_hour = 36000.0
"#,
        );
        let live = old.live_changes(&new);
        assert_eq!(
            live,
            LiveChanges {
                senders_changed: vec!["106540352242923".into(), "106540352242924".into()],
                campaigns_changed: vec!["bday-2026-11".into(), "payment-reminder-2026-11".into()],
                ..LiveChanges::default()
            }
        );
        assert!(!live.is_empty());
        assert!(old.restart_required_changes(&new).is_empty());
    }

    #[test]
    fn portfolio_limit_is_told_apart_from_other_dispatch_settings() {
        let old = config(BASE);
        let mut new = old.clone();
        new.dispatch.portfolio_daily_limit = None;
        let live = old.live_changes(&new);
        assert!(live.portfolio_limit_changed);
        assert!(!live.dispatch_changed);

        let mut new = old.clone();
        new.dispatch.default_sender_per_second = 50.0;
        new.log.level = "warn".to_owned();
        let live = old.live_changes(&new);
        assert!(!live.portfolio_limit_changed);
        assert!(live.dispatch_changed);
        assert!(live.log_level_changed);
    }
}
