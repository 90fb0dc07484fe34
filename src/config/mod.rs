//! Configuration: the file model ([`Config`] and its sections), defaults,
//! environment overrides, validation ([`Problem`]) and the diff that decides what a
//! reload may apply live ([`LiveChanges`]).
//!
//! Loading is `read → parse → token file → environment → validate`: the file may
//! hold every setting, the environment supplies credentials and the broker list
//! (so the same file serves every environment), and validation reports every
//! problem at once instead of making the operator fix them one restart at a time.

use std::path::{Path, PathBuf};

use thiserror::Error;

mod diff;
mod model;
mod validate;

pub use self::diff::LiveChanges;
pub use self::model::{
    AdminConfig, CampaignOverride, CapConfig, Config, DispatchConfig, Durability,
    EmbeddedStoreConfig, HttpConfig, KafkaConfig, LogConfig, LogFormat, MetricsConfig,
    ScyllaStoreConfig, Secret, SenderConfig, SmsConfig, SmsSenderConfig, StoreBackend, StoreConfig,
    TopicsConfig, WhatsAppConfig,
};
pub use self::validate::Problem;

/// Bearer token of the WhatsApp Cloud API; wins over `whatsapp.token_file` and
/// `whatsapp.token`.
pub const ENV_WHATSAPP_TOKEN: &str = "WADISPATCH_WHATSAPP_TOKEN";
/// App secret that signs webhooks (`whatsapp.app_secret`).
pub const ENV_APP_SECRET: &str = "WADISPATCH_APP_SECRET";
/// Webhook verification token (`whatsapp.verify_token`).
pub const ENV_VERIFY_TOKEN: &str = "WADISPATCH_VERIFY_TOKEN";
/// The SMS provider's API key (`sms.api_key`).
pub const ENV_SMS_API_KEY: &str = "WADISPATCH_SMS_API_KEY";
/// Password of SMS delivery reports (`sms.report_password`).
pub const ENV_SMS_REPORT_PASSWORD: &str = "WADISPATCH_SMS_REPORT_PASSWORD";
/// Bootstrap brokers (`kafka.brokers`).
pub const ENV_KAFKA_BROKERS: &str = "WADISPATCH_KAFKA_BROKERS";
/// SASL password, set as `kafka.client."sasl.password"`.
pub const ENV_KAFKA_SASL_PASSWORD: &str = "WADISPATCH_KAFKA_SASL_PASSWORD";
/// ScyllaDB user name (`store.scylla.username`; environment only).
pub const ENV_SCYLLA_USERNAME: &str = "WADISPATCH_SCYLLA_USERNAME";
/// ScyllaDB password (`store.scylla.password`; environment only).
pub const ENV_SCYLLA_PASSWORD: &str = "WADISPATCH_SCYLLA_PASSWORD";

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    // The OS error is in the message, not a `source`: error reports that
    // print the chain would say it twice.
    #[error("cannot read config file {}: {cause} (check --config or WADISPATCH_CONFIG)", path.display())]
    Read {
        /// The file given to [`Config::load`].
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the model (unknown key, wrong
    /// type); `message` gives the line, column and key.
    #[error("cannot parse config file {}: {message}", path.display())]
    Parse {
        /// The file, or `<string>` for [`Config::from_toml_str`].
        path: PathBuf,
        /// `line L, column C, key K: what went wrong`.
        message: String,
    },
    /// The file parsed but some values are unusable; every problem is listed.
    #[error("{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads, parses and validates `path`, with credentials and brokers from the
    /// process environment (see the `ENV_*` constants).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, |name| std::env::var(name).ok())
    }

    /// [`Config::load`] with the environment given as a lookup function, so tests
    /// and tools need not change the process environment.
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let mut config = parse(&text, path)?;
        let mut problems = Vec::new();
        // Token file before the environment so that the environment wins.
        if let Err(problem) = config.read_token_file() {
            problems.push(problem);
        }
        config.apply_env(env);
        if let Err(mut found) = config.validate() {
            problems.append(&mut found);
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Parses TOML text without environment, token file or validation (tests,
    /// reload previews). Errors name the source as `<string>`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("<string>"))
    }

    /// Applies the environment overrides; `env` looks a variable up by name.
    /// Unset and blank variables change nothing, so an empty line in a systemd
    /// environment file does not wipe a setting.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        let var = |name: &str| {
            env(name)
                .map(|value| value.trim().to_owned())
                .filter(|value| !value.is_empty())
        };
        if let Some(token) = var(ENV_WHATSAPP_TOKEN) {
            self.whatsapp.token = Some(Secret::new(token));
        }
        if let Some(secret) = var(ENV_APP_SECRET) {
            self.whatsapp.app_secret = Some(Secret::new(secret));
        }
        if let Some(token) = var(ENV_VERIFY_TOKEN) {
            self.whatsapp.verify_token = Some(Secret::new(token));
        }
        if let Some(key) = var(ENV_SMS_API_KEY) {
            self.sms.api_key = Some(Secret::new(key));
        }
        if let Some(password) = var(ENV_SMS_REPORT_PASSWORD) {
            self.sms.report_password = Some(Secret::new(password));
        }
        if let Some(brokers) = var(ENV_KAFKA_BROKERS) {
            self.kafka.brokers = brokers;
        }
        if let Some(password) = var(ENV_KAFKA_SASL_PASSWORD) {
            self.kafka
                .client
                .insert("sasl.password".to_owned(), password);
        }
        if let Some(username) = var(ENV_SCYLLA_USERNAME) {
            self.store.scylla.username = Some(Secret::new(username));
        }
        if let Some(password) = var(ENV_SCYLLA_PASSWORD) {
            self.store.scylla.password = Some(Secret::new(password));
        }
    }

    /// Replaces `whatsapp.token` with the contents of `whatsapp.token_file`, when
    /// set. A missing file is left to [`Config::validate`], which reports it with
    /// the other problems.
    fn read_token_file(&mut self) -> Result<(), Problem> {
        let Some(path) = &self.whatsapp.token_file else {
            return Ok(());
        };
        if !path.is_file() {
            return Ok(());
        }
        let problem = |message: String| Problem::new("whatsapp.token_file", message);
        let text = std::fs::read_to_string(path)
            .map_err(|err| problem(format!("cannot read {}: {err}", path.display())))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(problem(format!("{} is empty", path.display())));
        }
        self.whatsapp.token = Some(Secret::new(token));
        Ok(())
    }

    /// The settings of sender `phone_number_id`: its `[senders]` entry, or the
    /// defaults with `dispatch.default_sender_per_second` when it has none.
    pub fn sender(&self, phone_number_id: &str) -> SenderConfig {
        self.senders
            .get(phone_number_id)
            .cloned()
            .unwrap_or(SenderConfig {
                per_second: self.dispatch.default_sender_per_second,
                paused: false,
                display_name: None,
                display_phone_number: None,
                auto_throughput: false,
                max_per_second: None,
                marketing_messages: None,
            })
    }
}

/// Parses the file, reporting every unknown key and wrongly typed value at
/// once: after each such problem its line (or its whole table, for an
/// unknown table) is set aside and the rest parsed again, so one run of
/// `validate` shows everything to fix. A syntax error stops at the first.
fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let first = match toml::from_str::<Config>(text) {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    let mut messages = vec![describe_parse_error(text, &first)];
    if text.parse::<toml::Table>().is_ok() {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut err = first;
        for _ in 0..MAX_PARSE_PROBLEMS {
            let current = lines.join("\n");
            let Some(span) = err.span() else { break };
            let (line, _) = line_and_column(&current, span.start);
            if !set_aside(&mut lines, line - 1) {
                break;
            }
            match toml::from_str::<Config>(&lines.join("\n")) {
                Ok(_) => break,
                Err(next) => {
                    let message = describe_parse_error(&lines.join("\n"), &next);
                    if messages.contains(&message) {
                        break;
                    }
                    messages.push(message);
                    err = next;
                }
            }
        }
    }
    // In the file's order.
    let line_of = |m: &String| {
        m.strip_prefix("line ")
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    };
    messages.sort_by_key(line_of);
    Err(ConfigError::Parse {
        path: path.to_path_buf(),
        message: messages.join("\n"),
    })
}

/// Most problems one parse reports.
const MAX_PARSE_PROBLEMS: usize = 100;

/// Comments out line `i`, and for a table header the table's lines up to
/// the next header; false when there is nothing left to set aside there.
fn set_aside(lines: &mut [String], i: usize) -> bool {
    let Some(line) = lines.get(i) else {
        return false;
    };
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return false;
    }
    let header = trimmed.starts_with('[');
    lines[i] = format!("# {line}");
    if header {
        for l in lines.iter_mut().skip(i + 1) {
            if l.trim_start().starts_with('[') {
                break;
            }
            *l = format!("# {l}");
        }
    }
    true
}

/// One line: `line L, column C, key K: what went wrong`. toml's own `Display`
/// draws a multi-line snippet but leaves out the key path, which is what an
/// operator searches the file for.
fn describe_parse_error(text: &str, err: &toml::de::Error) -> String {
    let mut out = String::new();
    if let Some(span) = err.span() {
        let (line, column) = line_and_column(text, span.start);
        out.push_str(&format!("line {line}, column {column}, "));
    }
    let key = error_key(err);
    if let Some(key) = &key {
        out.push_str(&format!("key `{key}`: "));
    }
    let message = err.message().trim_end();
    if key.as_deref().is_some_and(holds_secret) {
        // The message quotes the value ("invalid type: integer `98765…`");
        // a secret must not reach the terminal or the journal.
        out.push_str("invalid value (not shown: this key holds a secret)");
        if let Some(expected) = message.rfind("expected").map(|i| &message[i..]) {
            out.push_str("; ");
            out.push_str(expected);
        }
    } else {
        out.push_str(message);
    }
    out
}

/// Keys whose values are credentials.
fn holds_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    ["token", "app_secret", "verify_token", "password", "secret"]
        .iter()
        .any(|s| last == *s || last.ends_with("_token") || last.ends_with("_secret"))
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    // A span should fall on a char boundary; never slice inside a character.
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted key the error is about. toml records the path of tables it was in
/// but only prints it when it has no source text to show, so render the error
/// without the source to get it; for an unknown field the path ends at the
/// parent table and the field's name is in the message.
fn error_key(err: &toml::de::Error) -> Option<String> {
    let mut bare = err.clone();
    bare.set_input(None);
    let rendered = bare.to_string();
    let segments: Vec<String> = rendered
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("in `")?.strip_suffix('`'))
        .map(|path| path.split('.').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut key = render_key(&segments);
    if let Some(field) = unknown_field(err.message()) {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(field);
    }
    (!key.is_empty()).then_some(key)
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Joins key segments the way [`Problem`] keys are written: ids under the map
/// tables are quoted (`senders."106540352242922".per_second`). toml joins with
/// `.` without quoting, so a map key containing dots has to be reassembled.
fn render_key(segments: &[String]) -> String {
    let (head, map_key, tail) = match segments {
        [first, second, rest @ ..]
            if first == "kafka" && second == "client" && !rest.is_empty() =>
        {
            (format!("{first}.{second}"), rest.join("."), &[][..])
        }
        [first, rest @ ..] if (first == "senders" || first == "campaigns") && !rest.is_empty() => {
            // Campaign ids may contain dots and toml does not say where the id
            // ends, so a trailing segment counts as a field only if it is one.
            let fields = ["per_second", "per_hour", "paused", "display_name"];
            match rest.split_last() {
                Some((last, id)) if !id.is_empty() && fields.contains(&last.as_str()) => {
                    (first.clone(), id.join("."), std::slice::from_ref(last))
                }
                _ => (first.clone(), rest.join("."), &[][..]),
            }
        }
        _ => return segments.join("."),
    };
    let mut key = format!("{head}.{}", validate::quote(&map_key));
    for segment in tail {
        key.push('.');
        key.push_str(segment);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    const ANNOTATED: &str = include_str!("../../config/wadispatch.toml");

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn parse_message(text: &str) -> String {
        match Config::from_toml_str(text) {
            Err(ConfigError::Parse { message, .. }) => message,
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn a_parse_error_never_shows_a_secret_value() {
        let message = parse_message("[whatsapp]\napp_secret = 98765432123\n");
        assert!(!message.contains("98765432123"), "{message}");
        assert!(
            message.contains("whatsapp.app_secret") && message.contains("expected a string"),
            "{message}"
        );
        let message = parse_message("[whatsapp]\nverify_token = [\"hunter2\"]\n");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn annotated_file_equals_defaults_and_validates() {
        let parsed = Config::from_toml_str(ANNOTATED).expect("annotated file parses");
        assert_eq!(parsed, Config::default());
        parsed.validate().expect("defaults validate");
    }

    #[test]
    fn empty_file_means_defaults() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_rejected_with_its_path_and_line() {
        let message = parse_message("[kafka]\nbrokers = \"b:9092\"\nbrokerz = \"x\"\n");
        assert!(message.contains("line 3, column 1"), "{message}");
        assert!(message.contains("key `kafka.brokerz`"), "{message}");
        assert!(message.contains("unknown field `brokerz`"), "{message}");

        let message = parse_message("[kafak]\n");
        assert!(message.contains("key `kafak`"), "{message}");

        let message = parse_message("[senders.\"1\"]\nper_second = 1.0\npaused = true\nrate = 5\n");
        assert!(message.contains("key `senders.\"1\".rate`"), "{message}");

        let message = parse_message("[campaigns.\"spring.sale\"]\nper_hour = \"x\"\n");
        assert!(
            message.contains("key `campaigns.\"spring.sale\".per_hour`"),
            "{message}"
        );
    }

    #[test]
    fn wrong_type_names_the_quoted_map_key() {
        let message = parse_message("[senders.\"106540352242922\"]\nper_second = \"fast\"\n");
        assert!(
            message.contains("key `senders.\"106540352242922\".per_second`"),
            "{message}"
        );
        assert!(message.contains("line 2"), "{message}");

        let message = parse_message("[kafka.client]\n\"socket.timeout.ms\" = 5\n");
        assert!(
            message.contains("key `kafka.client.\"socket.timeout.ms\"`"),
            "{message}"
        );
    }

    #[test]
    fn scylla_credentials_are_refused_in_the_file() {
        let message = parse_message("[store.scylla]\npassword = \"hunter2\"\n");
        assert!(message.contains("store.scylla.password"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn env_overrides_replace_secrets_and_brokers() {
        let mut config = Config::from_toml_str(
            "[kafka]\nbrokers = \"file:9092\"\n[whatsapp]\ntoken = \"from-file\"\n",
        )
        .unwrap();
        config.apply_env(env_of(&[
            (ENV_WHATSAPP_TOKEN, "from-env\n"),
            (ENV_APP_SECRET, "app-secret"),
            (ENV_VERIFY_TOKEN, "verify"),
            (ENV_KAFKA_BROKERS, "k1:9092,k2:9092"),
            (ENV_KAFKA_SASL_PASSWORD, "sasl-pw"),
            (ENV_SCYLLA_USERNAME, "scylla-user"),
            (ENV_SCYLLA_PASSWORD, "scylla-pw"),
            (ENV_SMS_API_KEY, "sms-key"),
            (ENV_SMS_REPORT_PASSWORD, "report-pw"),
        ]));
        let expose = |s: &Option<Secret>| s.as_ref().map(|s| s.expose().to_owned());
        assert_eq!(expose(&config.sms.api_key).as_deref(), Some("sms-key"));
        assert_eq!(
            expose(&config.sms.report_password).as_deref(),
            Some("report-pw")
        );
        assert_eq!(expose(&config.whatsapp.token).as_deref(), Some("from-env"));
        assert_eq!(
            expose(&config.whatsapp.app_secret).as_deref(),
            Some("app-secret")
        );
        assert_eq!(
            expose(&config.whatsapp.verify_token).as_deref(),
            Some("verify")
        );
        assert_eq!(config.kafka.brokers, "k1:9092,k2:9092");
        assert_eq!(config.kafka.client["sasl.password"], "sasl-pw");
        assert_eq!(
            expose(&config.store.scylla.username).as_deref(),
            Some("scylla-user")
        );
        assert_eq!(
            expose(&config.store.scylla.password).as_deref(),
            Some("scylla-pw")
        );
    }

    #[test]
    fn blank_env_values_change_nothing() {
        let mut config = Config::from_toml_str("[whatsapp]\ntoken = \"from-file\"\n").unwrap();
        config.apply_env(env_of(&[
            (ENV_WHATSAPP_TOKEN, "  "),
            (ENV_KAFKA_BROKERS, ""),
        ]));
        assert_eq!(config.whatsapp.token.unwrap().expose(), "from-file");
        assert_eq!(config.kafka.brokers, "localhost:9092");
    }

    #[test]
    fn debug_of_a_whole_config_never_prints_secrets() {
        let mut config = Config::from_toml_str(
            "[whatsapp]\ntoken = \"tok-CANARY-1\"\n[kafka.client]\n\"sasl.password\" = \"CANARY-2\"\n\"security.protocol\" = \"SASL_SSL\"\n",
        )
        .unwrap();
        config.apply_env(env_of(&[
            (ENV_APP_SECRET, "CANARY-3"),
            (ENV_VERIFY_TOKEN, "CANARY-4"),
            (ENV_SCYLLA_USERNAME, "CANARY-5"),
            (ENV_SCYLLA_PASSWORD, "CANARY-6"),
        ]));
        let printed = format!("{config:?} {config:#?}");
        assert!(!printed.contains("CANARY"), "{printed}");
        assert!(printed.contains("***"));
        // Non-secret client settings stay visible: they are what one debugs.
        assert!(printed.contains("SASL_SSL"));
        let token = config.whatsapp.token.as_ref().unwrap();
        assert_eq!(format!("{token} {token:?}"), "*** ***");
        assert_eq!(token.expose(), "tok-CANARY-1");
    }

    #[test]
    fn load_reads_the_token_file_and_env_wins_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "tok-from-file\n").unwrap();
        let config_path = dir.path().join("wadispatch.toml");
        let mut file = std::fs::File::create(&config_path).unwrap();
        writeln!(
            file,
            "[whatsapp]\ntoken = \"inline\"\ntoken_file = {:?}",
            token_path.display().to_string()
        )
        .unwrap();

        let config = Config::load_with_env(&config_path, env_of(&[])).unwrap();
        assert_eq!(config.whatsapp.token.unwrap().expose(), "tok-from-file");

        let config =
            Config::load_with_env(&config_path, env_of(&[(ENV_WHATSAPP_TOKEN, "tok-env")]))
                .unwrap();
        assert_eq!(config.whatsapp.token.unwrap().expose(), "tok-env");
    }

    #[test]
    fn load_reports_an_empty_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "\n").unwrap();
        let config_path = dir.path().join("wadispatch.toml");
        std::fs::write(
            &config_path,
            format!(
                "[whatsapp]\ntoken_file = {:?}\n",
                token_path.display().to_string()
            ),
        )
        .unwrap();
        match Config::load_with_env(&config_path, env_of(&[])) {
            Err(ConfigError::Invalid(problems)) => {
                assert_eq!(problems.len(), 1, "{problems:?}");
                assert_eq!(problems[0].key, "whatsapp.token_file");
                assert!(problems[0].message.contains("is empty"));
            }
            other => panic!("expected an invalid config, got {other:?}"),
        }
    }

    #[test]
    fn load_reports_missing_file_and_invalid_values() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = Config::load_with_env(&missing, env_of(&[])).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("nope.toml"), "{err}");

        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[http]\nlisten = \"nowhere\"\n").unwrap();
        let err = Config::load_with_env(&path, env_of(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "http.listen: must be an ip:port socket address such as 0.0.0.0:8080, got \"nowhere\""
        );
    }

    #[test]
    fn unlisted_sender_gets_the_default_rate() {
        let config = Config::from_toml_str(
            "[dispatch]\ndefault_sender_per_second = 40.0\n[senders.\"1\"]\nper_second = 5.0\n",
        )
        .unwrap();
        assert_eq!(config.sender("1").per_second, 5.0);
        assert_eq!(config.sender("2").per_second, 40.0);
    }
}
