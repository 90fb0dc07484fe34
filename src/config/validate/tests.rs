use super::super::{ConfigError, Secret};
use super::*;

fn problems(text: &str) -> Vec<Problem> {
    Config::from_toml_str(text)
        .expect("test config parses")
        .validate()
        .expect_err("test config should be invalid")
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn defaults_are_valid() {
    assert_eq!(Config::default().validate(), Ok(()));
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let found = problems(
        r#"
[kafka]
stage_batch_size = 0
[kafka.topics]
audience_dlq = "wa.audience"
[kafka.client]
"group.id" = "other"
"Security.Protocol" = "SSL"
[whatsapp]
api_base_url = "graph.facebook.com"
api_version = "23"
[http]
listen = "localhost:8080"
[dispatch]
default_sender_per_second = nan
aimd_decrease_factor = 1.5
default_region = "mx"
[log]
level = ""
[senders."106540352242922"]
per_second = 0.0
[senders."my-number"]
per_second = 10.0
[campaigns."bday-2026-11"]
per_second = 5.0
per_hour = 100.0
"#,
    );
    let keys = keys(&found);
    for expected in [
        "kafka.stage_batch_size",
        "kafka.topics.audience_dlq",
        "kafka.client.\"group.id\"",
        "kafka.client.\"Security.Protocol\"",
        "whatsapp.api_base_url",
        "whatsapp.api_version",
        "http.listen",
        "dispatch.default_sender_per_second",
        "dispatch.aimd_decrease_factor",
        "dispatch.default_region",
        "log.level",
        "senders.\"106540352242922\".per_second",
        "senders.\"my-number\"",
        "campaigns.\"bday-2026-11\"",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {keys:#?}");
    }
    assert_eq!(found.len(), 14, "{found:#?}");
    let rate = found
        .iter()
        .find(|p| p.key == "senders.\"106540352242922\".per_second")
        .unwrap();
    assert_eq!(
        rate.to_string(),
        "senders.\"106540352242922\".per_second: must be a finite number greater than 0, got 0"
    );
}

#[test]
fn a_lease_shorter_than_three_seconds_is_refused() {
    let found = problems("[dispatch]\nlease_secs = 2\n");
    assert_eq!(keys(&found), ["dispatch.lease_secs"]);
    assert!(found[0].message.contains("at least 3"), "{found:?}");
    let ok = Config::from_toml_str("[dispatch]\nlease_secs = 3\n").unwrap();
    assert_eq!(ok.validate(), Ok(()));
}

#[test]
fn invalid_error_lists_one_problem_per_line() {
    let found = problems("[http]\nlisten = \"x\"\n[admin]\nlisten = \"y\"\n");
    let text = ConfigError::Invalid(found).to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("http.listen: "), "{text}");
    assert!(lines[1].starts_with("admin.listen: "), "{text}");
}

#[test]
fn scylla_section_is_checked_only_when_used() {
    let text = "[store.scylla]\nnodes = []\nconsistency = \"LOCAL_QUORUM\"\n";
    assert_eq!(Config::from_toml_str(text).unwrap().validate(), Ok(()));

    let found = problems(&format!("[store]\nbackend = \"scylla\"\n{text}"));
    assert_eq!(
        keys(&found),
        ["store.scylla.nodes", "store.scylla.consistency"]
    );
    assert!(found[1].message.contains("lowercase: \"local_quorum\""));
}

#[test]
fn scylla_credentials_come_in_pairs() {
    let mut config = Config::from_toml_str("[store]\nbackend = \"scylla\"\n").unwrap();
    config.store.scylla.username = Some(Secret::new("user"));
    let found = config.validate().unwrap_err();
    assert_eq!(keys(&found), ["store.scylla.password"]);
}

#[test]
fn missing_files_are_reported() {
    let found = problems(
        "[whatsapp]\ntoken_file = \"/nonexistent/wadispatch-token\"\n[store]\nbackend = \"scylla\"\n[store.scylla]\ntls = true\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
    );
    assert_eq!(
        keys(&found),
        ["store.scylla.tls_ca_file", "whatsapp.token_file"]
    );
    assert!(found[1].message.contains("/nonexistent/wadispatch-token"));
}

#[test]
fn listeners_on_the_same_port_clash() {
    let found =
        problems("[http]\nlisten = \"0.0.0.0:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"\n");
    assert_eq!(keys(&found), ["admin.listen"]);
    let ok = "[http]\nlisten = \"0.0.0.0:9000\"\n[admin]\nlisten = \"127.0.0.1:9001\"\n";
    assert_eq!(Config::from_toml_str(ok).unwrap().validate(), Ok(()));
}

#[test]
fn zero_portfolio_limit_and_inverted_backoff_are_refused() {
    let found = problems(
        "[dispatch]\nportfolio_daily_limit = 0\nbackoff_base_ms = 1000\nbackoff_max_ms = 10\n",
    );
    assert_eq!(
        keys(&found),
        ["dispatch.portfolio_daily_limit", "dispatch.backoff_max_ms"]
    );
}

#[test]
fn a_marketing_cap_is_read_and_a_wrong_one_named() {
    let ok =
        Config::from_toml_str("[dispatch]\nmarketing_per_contact = { count = 2, per = \"24h\" }\n")
            .unwrap();
    assert_eq!(ok.validate(), Ok(()));
    let cap = ok.dispatch.marketing_per_contact.unwrap().cap().unwrap();
    assert_eq!((cap.count, cap.per_secs), (2, 86_400));
    for (text, why) in [
        ("{ count = 0, per = \"1d\" }", "at least 1"),
        ("{ count = 1, per = \"1w\" }", "not a unit"),
        ("{ count = 1, per = \"100d\" }", "90d"),
    ] {
        let found = problems(&format!("[dispatch]\nmarketing_per_contact = {text}\n"));
        assert_eq!(keys(&found), ["dispatch.marketing_per_contact"]);
        assert!(found[0].to_string().contains(why), "{}", found[0]);
    }
    assert!(Config::from_toml_str("[dispatch]\nmarketing_per_contact = { count = 1 }\n").is_err());
}

#[test]
fn empty_secret_is_reported_without_its_neighbours() {
    let found = problems("[whatsapp]\ntoken = \"\"\nverify_token = \"fine\"\n");
    assert_eq!(keys(&found), ["whatsapp.token"]);
}

#[test]
fn api_version_shape() {
    assert!(is_api_version("v23.0"));
    assert!(is_api_version("v9.12"));
    for bad in ["23.0", "v23", "v23.", "v.0", "V23.0", "v23.0.1", "v2a.0"] {
        assert!(!is_api_version(bad), "{bad}");
    }
}

#[test]
fn the_sms_section_is_checked() {
    let found = problems(
        r#"
[sms]
api_base_url = "https://user:pw@sms.example"
report_url = "hooks.example/sms/reports"
report_username = "a:b"
connect_timeout_ms = 5000
request_timeout_ms = 1000

[sms.senders."InfoSMS"]
per_second = 0
"#,
    );
    assert_eq!(
        keys(&found),
        [
            "sms.api_base_url",
            "sms.report_url",
            "sms.report_username",
            "sms.senders.\"InfoSMS\".per_second",
            "sms.connect_timeout_ms",
        ]
    );
    let fine = Config::from_toml_str("[sms]\napi_base_url = \"https://sms.example\"\n").unwrap();
    assert_eq!(fine.validate(), Ok(()));
}
