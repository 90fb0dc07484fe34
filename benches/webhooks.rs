//! Webhook throughput: signed status webhooks over HTTP into the receiver,
//! applied durably to the embedded store, events published to Kafka (the
//! in-process mock cluster).
//!
//! `cargo bench --bench webhooks` (contacts via WADISPATCH_BENCH_CONTACTS,
//! default 100,000; three statuses each: sent, delivered, read; 50 statuses
//! per POST as Meta batches them; 32 POSTs in flight).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use rdkafka::mocking::MockCluster;
use serde_json::json;
use wadispatch::domain::{ContactKey, FrozenParams};
use wadispatch::events::EventsProducer;
use wadispatch::ingest::catalog::CampaignCatalog;
use wadispatch::store::embedded::{Durability, EmbeddedStore};
use wadispatch::store::*;
use wadispatch::webhook::{signature, WebhookProcessor, WebhookSettings};

const SECRET: &str = "bench-secret";
const CAMPAIGN: &str = "bday-2026-11";
const PER_POST: usize = 50;
const IN_FLIGHT: usize = 32;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let n: u32 = std::env::var("WADISPATCH_BENCH_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}

fn contact(i: u32) -> ContactKey {
    ContactKey::raw(format!("+5255{:08}", 10_000_000 + i))
}

async fn run(n: u32) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("wa.events", 8, 1).unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(dir.path(), Durability::Process, 64).unwrap());
    eprintln!("staging and accepting {n} contacts …");
    let now = Utc::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let reqs: Vec<StageRequest> = chunk
            .iter()
            .map(|&i| StageRequest {
                campaign_id: CAMPAIGN.into(),
                contact: contact(i),
                shard: i % 8,
                seq: u64::from(i),
                params: FrozenParams::default(),
                exclusion: None,
                send_after: None,
                timezone: None,
                tags: vec![],
                staged_at: now,
            })
            .collect();
        store.stage_batch(&reqs).await.unwrap();
    }
    futures::stream::iter(0..n)
        .for_each_concurrent(64, |i| {
            let store = store.clone();
            async move {
                let claim = ClaimRequest {
                    campaign_id: CAMPAIGN.into(),
                    contact: contact(i),
                    exclusive: false,
                    replace_engagement: None,
                    owner: "bench".into(),
                    now,
                };
                store.claim(&claim).await.unwrap();
                store
                    .record_outcome(
                        CAMPAIGN,
                        &contact(i),
                        &Outcome::Accepted {
                            wamid: format!("wamid.{i}"),
                        },
                        now,
                    )
                    .await
                    .unwrap();
            }
        })
        .await;

    let catalog = CampaignCatalog::default();
    catalog
        .insert(CampaignCatalog::parse(CAMPAIGN, wadispatch::demo::PROMO_SPEC.as_bytes()).unwrap());
    let events = EventsProducer::new(&cluster.bootstrap_servers(), "wa.events", &[]).unwrap();
    let processor = Arc::new(WebhookProcessor::new(
        store.clone(),
        Some(events),
        catalog,
        WebhookSettings {
            app_secret: Some(SECRET.into()),
            verify_token: None,
            opt_out_keywords: vec!["STOP".into()],
        },
    ));
    let (server, addr) = wadispatch::webhook::serve(processor, "127.0.0.1:0", 2).unwrap();
    let handle = server.handle();
    tokio::spawn(server);

    // Bodies: statuses in the order Meta sends them, 50 per POST.
    let mut bodies = Vec::new();
    for status in ["sent", "delivered", "read"] {
        let ids: Vec<u32> = (0..n).collect();
        for chunk in ids.chunks(PER_POST) {
            let statuses: Vec<serde_json::Value> = chunk
                .iter()
                .map(|i| json!({"id": format!("wamid.{i}"), "status": status, "timestamp": now.timestamp().to_string(), "recipient_id": contact(*i).as_str().trim_start_matches('+')}))
                .collect();
            let body = serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": statuses}}]}]})).unwrap();
            let sig = signature::sign(SECRET.as_bytes(), &body);
            bodies.push((body, sig));
        }
        // Keep the ladder ordered: all `sent` before `delivered` before `read`.
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .unwrap();
    let url = format!("http://{addr}/webhook");
    let events = bodies.len() * PER_POST;
    eprintln!(
        "posting {} webhooks ({events} status events) …",
        bodies.len()
    );
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(bodies)
        .map(|(body, sig)| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("X-Hub-Signature-256", sig)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                t.elapsed()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    handle.stop(true).await;
    let summary = wadispatch::report::CampaignSummary::compute(store.as_ref(), CAMPAIGN)
        .await
        .unwrap();
    println!("webhook benchmark: {events} status events, {PER_POST} per POST, {IN_FLIGHT} POSTs in flight, embedded store (durability=process)");
    println!(
        "  applied durably:  {:>10.0} events/s ({:.2} s)",
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  POST latency:     p50 {:?}  p99 {:?}  max {:?}",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    println!(
        "  contacts read:    {} of {n}",
        summary.count(wadispatch::domain::DispatchState::Read)
    );
    drop(cluster);
}
