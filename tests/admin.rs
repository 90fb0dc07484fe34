//! `/readyz` tells why the process is not ready: here the ScyllaDB store
//! (an in-process CQL server) goes away while the admin listener runs.

#[path = "common/cql.rs"]
mod cql;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cql::CqlServer;
use wadispatch::admin::{serve, AdminState};
use wadispatch::config::ScyllaStoreConfig;
use wadispatch::ingest::audience::IngestStats;
use wadispatch::store::scylladb::{SchemaMode, ScyllaStore};

async fn readyz(base: &str) -> (u16, String) {
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[actix_rt::test]
async fn readyz_names_kafka_then_the_unreachable_store() {
    let server = CqlServer::start();
    let config = ScyllaStoreConfig {
        nodes: vec![server.addr.to_string()],
        keyspace: "readyz".into(),
        replication_factor: 1,
        create_schema: true,
        request_timeout_ms: 500,
        ..ScyllaStoreConfig::default()
    };
    let store = ScyllaStore::connect(&config, SchemaMode::Apply)
        .await
        .unwrap();
    let ingest = Arc::new(IngestStats::default());
    let (http, addr) = serve(
        AdminState {
            store: Arc::new(store),
            ingest: ingest.clone(),
            campaigns: Arc::default(),
            store_timeout: Duration::from_secs(2),
            templates: Arc::default(),
        },
        "127.0.0.1:0",
    )
    .unwrap();
    let handle = http.handle();
    actix_rt::spawn(http);
    let base = format!("http://{addr}");

    // No Kafka assignment yet.
    let (code, body) = readyz(&base).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("kafka: no partition assignment"), "{body}");
    assert!(!body.contains("store:"), "the store answers: {body}");

    ingest.assigned.store(true, Ordering::Release);
    assert_eq!(readyz(&base).await, (200, "ready\n".into()));

    // The store goes away: not ready, and the body says it is the store.
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let (code, body) = readyz(&base).await;
        if code == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "still ready: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.starts_with("not ready\n"), "{body}");
    assert!(body.contains("store:"), "{body}");
    assert!(!body.contains("kafka:"), "{body}");
    handle.stop(false).await;
}
