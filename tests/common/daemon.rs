//! The daemon as a process for the crash tests: its config file, `run`
//! started and killed, and waits on what its admin listener and the
//! sandbox report.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The app secret the daemon and the sandbox of these tests share.
pub const APP_SECRET: &str = "crash-secret";

/// dispatch.max_in_flight_per_sender unless a test sets its own.
pub const DEFAULT_IN_FLIGHT: usize = 16;

/// A daemon process that is killed when dropped: a test that fails halfway
/// leaves no daemon running.
pub struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn spawn(config: &std::path::Path) -> Running {
    Running(
        Command::new(env!("CARGO_BIN_EXE_wadispatch"))
            .args(["run", "--config"])
            .arg(config)
            .env("WADISPATCH_WHATSAPP_TOKEN", "t")
            .env("WADISPATCH_APP_SECRET", APP_SECRET)
            .env("WADISPATCH_INSTANCE_ID", "crash-test")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wadispatch run"),
    )
}

/// What differs between the configs of these tests.
pub struct Run<'a> {
    pub group: &'a str,
    pub in_flight: usize,
    /// (phone_number_id, messages per second).
    pub senders: &'a [(&'a str, u32)],
    /// Lines added to `[kafka]` and `[whatsapp]`.
    pub kafka: &'a str,
    pub whatsapp: &'a str,
    /// Lines added to `[dispatch]`.
    pub dispatch: &'a str,
}

impl Default for Run<'_> {
    fn default() -> Self {
        Run {
            group: "crash",
            in_flight: DEFAULT_IN_FLIGHT,
            senders: &[],
            kafka: "",
            whatsapp: "",
            dispatch: "",
        }
    }
}

/// The daemon's config file for one test. A killed member keeps its
/// partitions until its session times out: that is kept short so the
/// restarted instance owns every shard again quickly.
pub fn write_config(
    path: &std::path::Path,
    brokers: &str,
    data: &std::path::Path,
    (webhook_port, admin_port): (u16, u16),
    api: &str,
    run: &Run<'_>,
) {
    let senders: String = run
        .senders
        .iter()
        .map(|(id, rate)| format!("\n[senders.\"{id}\"]\nper_second = {rate}\n"))
        .collect();
    std::fs::write(
        path,
        format!(
            r#"[kafka]
brokers = "{brokers}"
group_id = "{group}"
{kafka}
[kafka.client]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"

[store.embedded]
data_dir = "{data}"

[http]
listen = "127.0.0.1:{webhook_port}"

[admin]
listen = "127.0.0.1:{admin_port}"

[whatsapp]
api_base_url = "{api}"
{whatsapp}
[dispatch]
max_in_flight_per_sender = {in_flight}
{dispatch}
{senders}"#,
            group = run.group,
            kafka = run.kafka,
            whatsapp = run.whatsapp,
            dispatch = run.dispatch,
            in_flight = run.in_flight,
            data = data.display(),
        ),
    )
    .unwrap();
}

/// The last run: until the daemon itself reports `campaign` completed
/// with all of its `staged` contacts (its admin listener: the store is the
/// daemon's while it runs), then a clean stop by SIGTERM.
pub async fn run_to_completion(
    path: &std::path::Path,
    admin_port: u16,
    campaign: &str,
    staged: u64,
    timeout_secs: u64,
) {
    let mut child = spawn(path);
    let url = format!("http://127.0.0.1:{admin_port}/campaigns");
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let view = match reqwest::get(&url).await {
            Ok(r) => r.json::<serde_json::Value>().await.ok(),
            Err(_) => None,
        };
        let done = view.as_ref().and_then(|v| v.as_array()).is_some_and(|all| {
            all.iter().any(|c| {
                c["id"] == campaign && c["observed_state"] == "completed" && c["staged"] == staged
            })
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{campaign} did not complete: {view:?}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited on its own"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "clean stop after SIGTERM: {status}");
}

pub async fn wait_accepted(
    sandbox: &wadispatch::sandbox::SandboxHandle,
    child: &mut Child,
    n: u64,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while sandbox.stats().accepted < n {
        assert!(Instant::now() < deadline, "no progress to {n} accepted");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited on its own"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/campaigns` of the daemon's admin listener, or `None` while it does not
/// answer (starting, or killed).
pub async fn campaigns(admin_port: u16) -> Option<Vec<serde_json::Value>> {
    let url = format!("http://127.0.0.1:{admin_port}/campaigns");
    reqwest::get(&url).await.ok()?.json().await.ok()
}

/// The sum of one counter's series in the daemon's `/metrics` (0 while it
/// does not answer).
pub async fn metric_sum(admin_port: u16, name: &str) -> f64 {
    let url = format!("http://127.0.0.1:{admin_port}/metrics");
    let Ok(response) = reqwest::get(&url).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What a test of the daemon as a process runs against: a MockCluster
/// with the project's topics, the sandbox, and the config file `spawn`
/// reads, with the store in `dir`.
pub struct ProcessWorld {
    /// Holds the store and the config file; removed when dropped.
    pub dir: tempfile::TempDir,
    pub config: wadispatch::config::Config,
    pub kafka: super::Kafka,
    pub sandbox: wadispatch::sandbox::SandboxHandle,
    pub path: std::path::PathBuf,
    pub admin_port: u16,
}

impl ProcessWorld {
    /// Starts the cluster and the sandbox (`sandbox` makes its config from
    /// the daemon's webhook port, see [`sandbox_for`]) and writes the
    /// daemon's config for `run`.
    pub async fn start(
        run: &Run<'_>,
        sandbox: impl FnOnce(u16) -> wadispatch::sandbox::SandboxConfig,
    ) -> ProcessWorld {
        let dir = tempfile::tempdir().unwrap();
        let mut config = super::test_config(dir.path(), "");
        let kafka = super::Kafka::start(&config);
        config.kafka.brokers = kafka.brokers.clone();
        let (webhook_port, admin_port) = (super::free_port(), super::free_port());
        let sandbox = wadispatch::sandbox::Sandbox::start(sandbox(webhook_port))
            .await
            .unwrap();
        let path = dir.path().join("wadispatch.toml");
        write_config(
            &path,
            &kafka.brokers,
            &config.store.embedded.data_dir,
            (webhook_port, admin_port),
            &sandbox.base_url(),
            run,
        );
        ProcessWorld {
            dir,
            config,
            kafka,
            sandbox,
            path,
            admin_port,
        }
    }
}

/// The sandbox of these tests: no rate limit of its own, no failure rule,
/// webhooks to the daemon's `webhook_port` signed with [`APP_SECRET`].
pub fn sandbox_for(webhook_port: u16) -> wadispatch::sandbox::SandboxConfig {
    wadispatch::sandbox::SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        per_number_mps: 0.0,
        webhook_url: Some(format!("http://127.0.0.1:{webhook_port}/webhook")),
        app_secret: APP_SECRET.into(),
        failure_rules: Vec::new(),
        ..Default::default()
    }
}
