//! Secrets never reach the logs: `wadispatch run` at the most verbose log
//! level, in both formats, while every secret is in use. The token goes out
//! with real sends to the sandbox, the app secret checks the sandbox's
//! signed status webhooks and our own badly and correctly signed posts, the
//! verify token answers the subscription handshake, and a second run
//! connects to Kafka with SASL and a password.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use wadispatch::sandbox::{Sandbox, SandboxConfig};

const TOKEN: &str = "tok-SECRET-4f1c2b";
const APP_SECRET: &str = "app-SECRET-88d0e1";
const VERIFY_TOKEN: &str = "verify-SECRET-19ab";
const SASL_PASSWORD: &str = "sasl-SECRET-7e7e";

const SECRETS: [(&str, &str); 6] = [
    ("WADISPATCH_WHATSAPP_TOKEN", TOKEN),
    ("WADISPATCH_APP_SECRET", APP_SECRET),
    ("WADISPATCH_VERIFY_TOKEN", VERIFY_TOKEN),
    ("WADISPATCH_KAFKA_SASL_PASSWORD", SASL_PASSWORD),
    ("WADISPATCH_SCYLLA_USERNAME", "user-SECRET-a1a1"),
    ("WADISPATCH_SCYLLA_PASSWORD", "pass-SECRET-b2b2"),
];

/// A `wadispatch run` child whose stdout and stderr are collected as they
/// come.
struct Run {
    child: Child,
    logs: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect(from: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let mut logs = into.lock().unwrap();
            logs.push_str(&line);
            logs.push('\n');
        }
    })
}

fn start(config: &std::path::Path) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wadispatch"));
    cmd.args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in SECRETS {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let logs = Arc::new(Mutex::new(String::new()));
    let readers = vec![
        collect(child.stdout.take().unwrap(), logs.clone()),
        collect(child.stderr.take().unwrap(), logs.clone()),
    ];
    Run {
        child,
        logs,
        readers,
    }
}

impl Run {
    /// Waits until the logs hold `needle` (panics after `timeout`).
    async fn logged(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logs.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the daemon never logged {needle:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then everything it logged.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        for r in self.readers {
            let _ = r.join();
        }
        let logs = self.logs.lock().unwrap().clone();
        logs
    }
}

fn write_config(dir: &std::path::Path, body: &str, format: &str) -> std::path::PathBuf {
    let path = dir.join("wadispatch.toml");
    std::fs::write(
        &path,
        format!(
            "{body}\n[store.embedded]\ndata_dir = \"{}\"\n\n[log]\nformat = \"{format}\"\nlevel = \"trace,h2=info,hyper=info,rustls=info\"\n",
            dir.join("store").display()
        ),
    )
    .unwrap();
    path
}

/// Sends through the sandbox, its webhooks, our own posts and the handshake.
async fn in_use(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), "");
    let kafka = Kafka::start(&config);
    let port = free_port();
    let sandbox = Sandbox::start(SandboxConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        per_number_mps: 0.0,
        webhook_url: Some(format!("http://127.0.0.1:{port}/webhook")),
        app_secret: APP_SECRET.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let producer = kafka.producer();
    publish(
        &producer,
        &config.kafka.topics.campaigns,
        "logs",
        &campaign_spec("logs"),
    )
    .await;
    let records: Vec<(String, String)> = (0..5)
        .map(|i| (phone(i), audience_json("logs", i, true)))
        .collect();
    publish_all(&producer, &config.kafka.topics.audience, &records).await;
    let path = write_config(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[whatsapp]\napi_base_url = \"{}\"\n",
            kafka.brokers,
            sandbox.base_url()
        ),
        format,
    );
    let run = start(&path);
    // The token at work: every contact sent, and the webhooks back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.stats().accepted < 5 || sandbox.stats().webhook_posts == 0 {
        assert!(
            Instant::now() < deadline,
            "no sends or webhooks: {:?}",
            sandbox.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/webhook");
    let body = br#"{"object":"whatsapp_business_account","entry":[]}"#.to_vec();
    let signed = wadispatch::webhook::signature::sign(APP_SECRET.as_bytes(), &body);
    let forged = wadispatch::webhook::signature::sign(b"not-the-secret", &body);
    for (signature, expected) in [(signed.as_str(), 200), (forged.as_str(), 401)] {
        let answer = http
            .post(&url)
            .header("X-Hub-Signature-256", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), expected);
    }
    // The subscription handshake: the right token, then a wrong one.
    let challenge = http
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=4242"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(challenge.status().as_u16(), 200);
    assert_eq!(challenge.text().await.unwrap(), "4242");
    let refused = http
        .get(format!(
            "{url}?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=4242"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    run.stop()
}

/// Kafka over SASL with a password (the mock broker refuses or accepts it;
/// either way librdkafka logs its connection attempts at this level).
async fn with_sasl(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), "");
    let kafka = Kafka::start(&config);
    let path = write_config(
        dir.path(),
        &format!(
            "[kafka]\nbrokers = \"{}\"\n\n[kafka.client]\n\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanisms\" = \"PLAIN\"\n\"sasl.username\" = \"wadispatch\"\n\"debug\" = \"security,broker\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[whatsapp]\napi_base_url = \"http://127.0.0.1:9\"\n",
            kafka.brokers
        ),
        format,
    );
    let run = start(&path);
    // librdkafka's own debug lines of the SASL handshake (or its refusal).
    run.logged("SASL", Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.stop()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_absent_from_json_and_pretty_logs_while_in_use() {
    for format in ["json", "pretty"] {
        for (what, logs, proof) in [
            (
                "sends and webhooks",
                in_use(format).await,
                "wadispatch running",
            ),
            ("SASL", with_sasl(format).await, "SASL"),
        ] {
            assert!(
                logs.contains(proof),
                "the daemon logged {proof:?} ({format}, {what}):\n{}",
                &logs[..logs.len().min(4000)]
            );
            for (var, secret) in SECRETS {
                assert!(
                    !logs.contains(secret),
                    "{var}'s value appears in the {format} logs ({what})"
                );
            }
        }
    }
}
