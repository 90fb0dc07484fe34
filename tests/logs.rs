//! Secrets never reach the logs: `wadispatch run` with every credential set
//! in the environment and the most verbose log level, in both formats.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SECRETS: [(&str, &str); 6] = [
    ("WADISPATCH_WHATSAPP_TOKEN", "tok-SECRET-4f1c2b"),
    ("WADISPATCH_APP_SECRET", "app-SECRET-88d0e1"),
    ("WADISPATCH_VERIFY_TOKEN", "verify-SECRET-19ab"),
    ("WADISPATCH_KAFKA_SASL_PASSWORD", "sasl-SECRET-7e7e"),
    ("WADISPATCH_SCYLLA_USERNAME", "user-SECRET-a1a1"),
    ("WADISPATCH_SCYLLA_PASSWORD", "pass-SECRET-b2b2"),
];

fn run_once(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), "");
    let kafka = Kafka::start(&config);
    let path = dir.path().join("wadispatch.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{}\"\n\n[store.embedded]\ndata_dir = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[whatsapp]\napi_base_url = \"http://127.0.0.1:9\"\n\n[log]\nformat = \"{format}\"\nlevel = \"trace,h2=info,hyper=info,rustls=info\"\n",
            kafka.brokers,
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wadispatch"));
    cmd.args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in SECRETS {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Let it start, join the group and log at trace level for a while.
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    format!("{}{}", out.join().unwrap(), err.join().unwrap())
}

#[test]
fn secrets_are_absent_from_json_and_pretty_logs() {
    for format in ["json", "pretty"] {
        let logs = run_once(format);
        assert!(
            logs.contains("wadispatch running"),
            "the daemon started and logged ({format}):\n{}",
            &logs[..logs.len().min(4000)]
        );
        for (var, secret) in SECRETS {
            assert!(
                !logs.contains(secret),
                "{var}'s value appears in the {format} logs"
            );
        }
    }
}
