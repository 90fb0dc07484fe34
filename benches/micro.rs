//! Micro-benchmarks of the per-contact and per-webhook steps, each measured
//! alone and in process:
//!
//! - `template/*`: compiling the example promo spec, freezing its parameters
//!   for one audience record, and rendering the Cloud API request body of one
//!   contact as the sender does before posting it.
//! - `audience/*`: decoding one audience record, and decoding plus the
//!   staging decision ingest makes for it (phone, timezone, frozen
//!   parameters).
//! - `phone/*`: phone normalisation on common spellings, an invalid number,
//!   and a business-scoped user id.
//! - `limiter/*`: one permit from a sender's pacing limiter (governor, direct
//!   and through the dispatcher's `wait_turn`), a per-recipient keyed limiter,
//!   and the portfolio's unique-recipient window.
//! - `store/*`: the embedded store (fjall, `durability = "process"`) staging
//!   batches of 1,000 new contacts, one claim plus its `accepted` outcome, and
//!   one new recipient counted against the portfolio limit.
//! - `webhook/*`: the signature check of a Meta status webhook carrying 50
//!   statuses, and the whole POST through the receiver's own
//!   `WebhookProcessor::handle` (verify, parse, correlate, apply to the
//!   embedded store), for new statuses and for a redelivered POST.
//!
//! Run with `cargo bench --bench micro`; add a filter to run one group, e.g.
//! `cargo bench --bench micro -- phone/`.

/// The binary's allocator, so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: wadispatch::Allocator = wadispatch::Allocator;

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;
use tokio::runtime::Runtime;
use wadispatch::demo::PROMO_SPEC;
use wadispatch::dispatch::registry::PortfolioLimit;
use wadispatch::dispatch::sender::wait_turn;
use wadispatch::domain::{
    normalize_phone, stage, AudienceRecord, CampaignSpec, ContactKey, DispatchState, FrozenParams,
    OptOutScope,
};
use wadispatch::ingest::catalog::{CampaignCatalog, CatalogEntry};
use wadispatch::store::embedded::{Durability, EmbeddedStore};
use wadispatch::store::{ClaimOutcome, ClaimRequest, Outcome, StageRequest, Store};
use wadispatch::webhook::{signature, Verdict, WebhookProcessor, WebhookSettings};
use wadispatch::whatsapp::payload::{callback_data, template_message_bytes};

/// The id of the example promo campaign (`config/examples/promo.json`).
const CAMPAIGN: &str = "bday-2026-11";
/// Contacts per `stage_batch` call.
const STAGE_BATCH: u64 = 1_000;
/// Statuses per webhook POST, as Meta batches them.
const STATUSES_PER_POST: usize = 50;
const APP_SECRET: &[u8] = b"bench-app-secret";

/// A distinct, valid Mexico City number for every `i` below 90,000,000.
fn phone(i: u64) -> String {
    format!("+5255{:08}", 10_000_000 + i)
}

/// An audience record for the promo campaign, as upstreams publish it.
fn audience_json(i: u64) -> String {
    let phone = phone(i);
    json!({
        "campaign_id": CAMPAIGN,
        "contact": {"phone": phone, "name": format!("Cliente {i}")},
        "variables": {"name": format!("Cliente {i}"), "discount": "20%", "coupon": format!("C{i}")},
        "tags": ["vip"],
    })
    .to_string()
}

/// The promo campaign as the catalog holds it: the spec and its compiled
/// template.
fn promo() -> CatalogEntry {
    CampaignCatalog::parse(CAMPAIGN, PROMO_SPEC.as_bytes()).expect("the promo spec is valid")
}

/// The parameters ingest freezes for contact `i` of the promo campaign.
fn promo_params(entry: &CatalogEntry, i: u64) -> FrozenParams {
    let record = AudienceRecord::from_json(audience_json(i).as_bytes())
        .expect("the audience record decodes");
    let contact = ContactKey::raw(phone(i));
    entry
        .template
        .freeze(&record, &contact)
        .expect("the record fills every template variable")
}

fn stage_request(i: u64, params: &FrozenParams, now: DateTime<Utc>) -> StageRequest {
    StageRequest {
        campaign_id: CAMPAIGN.to_string(),
        contact: ContactKey::raw(phone(i)),
        shard: (i % 8) as u32,
        seq: i,
        params: params.clone(),
        exclusion: None,
        send_after: None,
        timezone: Some("America/Mexico_City".to_string()),
        tags: vec!["vip".to_string()],
        name: None,
        staged_at: now,
        journey: Default::default(),
    }
}

/// An embedded store in a temporary directory, a runtime to drive it, and
/// the frozen parameters every staged contact carries.
struct BenchStore {
    rt: Runtime,
    store: Arc<EmbeddedStore>,
    params: FrozenParams,
    now: DateTime<Utc>,
    _dir: tempfile::TempDir,
}

impl BenchStore {
    fn open() -> BenchStore {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(
            EmbeddedStore::open(dir.path(), Durability::Process, 64).expect("the store opens"),
        );
        BenchStore {
            rt: runtime(),
            store,
            params: promo_params(&promo(), 0),
            now: Utc::now(),
            _dir: dir,
        }
    }

    /// Stage requests for contacts `range`.
    fn batch(&self, range: std::ops::Range<u64>) -> Vec<StageRequest> {
        range
            .map(|i| stage_request(i, &self.params, self.now))
            .collect()
    }
}

/// A current-thread runtime, as the store's async API needs one.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

/// A quota no benchmark loop can exhaust, so every check is admitted.
fn unlimited() -> Quota {
    Quota::per_second(NonZeroU32::MAX)
}

fn template(c: &mut Criterion) {
    let spec = CampaignSpec::from_json(PROMO_SPEC.as_bytes()).expect("the promo spec parses");
    let compiled = spec.compile().expect("the promo spec is valid");
    let record = AudienceRecord::from_json(audience_json(7).as_bytes())
        .expect("the audience record decodes");
    let contact = normalize_phone(&phone(7), None).expect("the phone is valid");
    let params = compiled
        .freeze(&record, &contact)
        .expect("the record fills every template variable");

    let mut group = c.benchmark_group("template");
    group.bench_function("compile", |b| b.iter(|| black_box(&spec).compile()));
    group.bench_function("freeze", |b| {
        b.iter(|| compiled.freeze(black_box(&record), black_box(&contact)))
    });
    group.bench_function("render", |b| {
        b.iter(|| {
            let callback = callback_data(CAMPAIGN, black_box(&contact));
            template_message_bytes(
                &spec.template,
                &contact,
                black_box(&params),
                &callback,
                wadispatch::domain::Endpoint::Messages,
            )
        })
    });
    group.finish();
}

fn audience(c: &mut Criterion) {
    let entry = promo();
    let payload = audience_json(42);
    let key = phone(42);
    let record = AudienceRecord::from_json(payload.as_bytes()).expect("the record decodes");
    let staged = stage(
        &entry.spec,
        &entry.template,
        Some(key.as_bytes()),
        &record,
        None,
    );
    assert_eq!(
        staged.exclusion, None,
        "the benchmark record must be staged"
    );

    let mut group = c.benchmark_group("audience");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| {
        b.iter(|| AudienceRecord::from_json(black_box(payload.as_bytes())))
    });
    group.bench_function("decode_validate", |b| {
        b.iter(|| {
            let record = AudienceRecord::from_json(black_box(payload.as_bytes()))
                .expect("the record decodes");
            stage(
                &entry.spec,
                &entry.template,
                Some(key.as_bytes()),
                &record,
                None,
            )
        })
    });
    group.finish();
}

fn phone_numbers(c: &mut Criterion) {
    // (benchmark id, input, default region, whether it normalises)
    let cases = [
        ("e164", "+525512345678", None, true),
        ("mx_legacy_mobile", "+52 1 55 1234 5678", None, true),
        ("national_spaces", "55 1234 5678", Some("MX"), true),
        ("us_punctuated", "+1 (415) 555-2671", None, true),
        ("invalid", "+52 123", None, false),
    ];
    let mut group = c.benchmark_group("phone");
    for (id, raw, region, valid) in cases {
        assert_eq!(
            normalize_phone(raw, region).is_ok(),
            valid,
            "{raw} in {region:?}"
        );
        group.bench_with_input(BenchmarkId::new("normalise", id), &raw, |b, raw| {
            b.iter(|| normalize_phone(black_box(raw), region))
        });
    }
    let bsuid = "MX.1349120865530274";
    let parsed = ContactKey::parse_id(bsuid, None).expect("a BSUID is a contact id");
    assert!(parsed.is_user_id());
    group.bench_function("parse_id/bsuid", |b| {
        b.iter(|| ContactKey::parse_id(black_box(bsuid), None))
    });
    group.finish();
}

fn limiter(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("limiter");

    let direct: DefaultDirectRateLimiter = RateLimiter::direct(unlimited());
    assert!(direct.check().is_ok());
    group.bench_function("check", |b| b.iter(|| black_box(&direct).check()));

    // The sender keeps its limiter behind a lock so that a reload can swap
    // it; `wait_turn` reads it afresh on every attempt. The figure includes
    // entering the runtime and the governor clock `wait_turn` builds per call.
    let current = RwLock::new(Arc::new(RateLimiter::direct(unlimited())));
    group.bench_function("wait_turn", |b| {
        b.iter(|| {
            rt.block_on(wait_turn(|| {
                current
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone()
            }))
        })
    });

    // Per-recipient spacing: a keyed limiter holding 10,000 recipients.
    let recipients: Vec<String> = (0..10_000).map(phone).collect();
    let keyed: DefaultKeyedRateLimiter<String> = RateLimiter::keyed(unlimited());
    for recipient in &recipients {
        assert!(keyed.check_key(recipient).is_ok());
    }
    group.bench_function("keyed_check", |b| {
        let mut next = recipients.iter().cycle();
        b.iter(|| {
            let recipient = next.next().expect("the cycle never ends");
            keyed.check_key(black_box(recipient))
        })
    });

    // Unique recipients per 24 h: 10,000 already in the window, each send
    // asks whether the limit allows it, then notes the recipient.
    let portfolio = PortfolioLimit::default();
    portfolio.set_limit(Some(100_000));
    let now = Utc::now();
    let contacts: Vec<ContactKey> = recipients.iter().cloned().map(ContactKey::raw).collect();
    for contact in &contacts {
        portfolio.note(contact, now);
    }
    group.bench_function("portfolio", |b| {
        let mut next = contacts.iter().cycle();
        b.iter(|| {
            let contact = next.next().expect("the cycle never ends");
            let wait = portfolio.wait(black_box(contact), now);
            portfolio.note(contact, now);
            wait
        })
    });
    group.finish();
}

fn store_stage(c: &mut Criterion) {
    let bench = BenchStore::open();
    let mut next: u64 = 0;

    let mut group = c.benchmark_group("store");
    group
        .throughput(Throughput::Elements(STAGE_BATCH))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20);
    group.bench_function("stage_upsert", |b| {
        b.iter_batched(
            || {
                let batch = bench.batch(next..next + STAGE_BATCH);
                next += STAGE_BATCH;
                batch
            },
            |batch| {
                bench
                    .rt
                    .block_on(bench.store.stage_batch(&batch))
                    .expect("staging succeeds")
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Claims staged contact `i` and records its `accepted` outcome, as a send
/// that the API accepted leaves it.
async fn claim_and_accept(store: &dyn Store, i: u64, exclusive: bool, now: DateTime<Utc>) {
    let contact = ContactKey::raw(phone(i));
    let request = ClaimRequest {
        campaign_id: CAMPAIGN.to_string(),
        contact: contact.clone(),
        exclusive,
        replace_engagement: None,
        owner: "bench".to_string(),
        now,
        step: String::new(),
    };
    let claimed = store.claim(&request).await.expect("claiming succeeds");
    assert!(
        matches!(claimed, ClaimOutcome::Claimed { .. }),
        "{contact} was not claimable: {claimed:?}"
    );
    store
        .record_outcome(
            CAMPAIGN,
            &contact,
            &Outcome::Accepted {
                wamid: wamid(i),
                sender: None,
                held: None,
            },
            now,
        )
        .await
        .expect("recording the outcome succeeds");
}

fn store_claim(c: &mut Criterion) {
    let bench = BenchStore::open();
    let (rt, store, now) = (&bench.rt, &bench.store, bench.now);
    let mut next: u64 = 0;

    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function("claim_outcome", |b| {
        b.iter_custom(|iters| {
            // Stage exactly the contacts this sample claims, untimed.
            let first = next;
            next += iters;
            let mut start = first;
            while start < next {
                let end = (start + STAGE_BATCH).min(next);
                rt.block_on(store.stage_batch(&bench.batch(start..end)))
                    .expect("staging succeeds");
                start = end;
            }

            let started = Instant::now();
            for i in first..next {
                rt.block_on(claim_and_accept(store.as_ref(), i, true, now));
            }
            started.elapsed()
        })
    });
    group.finish();
}

/// The portfolio limit's count in the embedded store: a new recipient of a
/// window far from full, as each send under a limit pays it.
fn store_portfolio(c: &mut Criterion) {
    let bench = BenchStore::open();
    let (rt, store, now) = (&bench.rt, &bench.store, bench.now);
    let mut next: u64 = 0;
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function("count_recipient", |b| {
        b.iter(|| {
            next += 1;
            let contact = ContactKey::raw(phone(next));
            rt.block_on(store.count_recipient(&contact, now, u64::MAX))
                .expect("counting succeeds")
        })
    });
    group.finish();
}

/// The wamid the sandbox-like answers give contact `i` (as `store_claim`).
fn wamid(i: u64) -> String {
    format!("wamid.HBgNNTI1NTEwMDAwMDAwFQIAERgS{i:016X}")
}

/// A Meta status webhook: `delivered` for contacts `first..first + 50`,
/// with the conversation and pricing objects Meta sends along.
fn status_webhook(first: u64) -> Vec<u8> {
    let timestamp = Utc::now().timestamp().to_string();
    let statuses: Vec<serde_json::Value> = (first..first + STATUSES_PER_POST as u64)
        .map(|i| {
            let contact = ContactKey::raw(phone(i));
            json!({
                "id": wamid(i),
                "status": "delivered",
                "timestamp": timestamp,
                "recipient_id": contact.as_str().trim_start_matches('+'),
                "biz_opaque_callback_data": callback_data(CAMPAIGN, &contact),
                "conversation": {"id": "b6a6d1c5f8e0f3a1e2d4c6b8a0f2e4d6", "origin": {"type": "marketing"}},
                "pricing": {"billable": true, "pricing_model": "PMP", "category": "marketing"},
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                    "statuses": statuses,
                },
            }],
        }],
    }))
    .expect("a JSON value serialises")
}

/// The receiver's own processor over an embedded store (no events topic:
/// publishing is the Kafka client's cost, measured by the load benchmark).
struct Receiver {
    bench: BenchStore,
    processor: WebhookProcessor,
}

impl Receiver {
    fn open() -> Receiver {
        let bench = BenchStore::open();
        let store: Arc<dyn Store> = bench.store.clone();
        let catalog = CampaignCatalog::default();
        catalog.insert(promo());
        let processor = WebhookProcessor::new(
            store,
            None,
            catalog,
            WebhookSettings {
                app_secret: Some(String::from_utf8_lossy(APP_SECRET).into_owned()),
                verify_token: None,
                opt_out_keywords: vec!["STOP".into()],
                keyword_scope: OptOutScope::All,
                reply_context_wait: Duration::ZERO,
                marketing_limit_retry: Default::default(),
                sms_reports: None,
            },
        );
        Receiver { bench, processor }
    }

    /// Stages, claims and accepts contacts `range`, as dispatch leaves them
    /// before their first status arrives.
    fn accept(&self, range: std::ops::Range<u64>) {
        let b = &self.bench;
        b.rt.block_on(async {
            for chunk in b.batch(range.clone()).chunks(STAGE_BATCH as usize) {
                b.store.stage_batch(chunk).await.expect("staging succeeds");
            }
            for i in range {
                claim_and_accept(b.store.as_ref(), i, false, b.now).await;
            }
        });
    }

    /// One signed POST through `WebhookProcessor::handle`, as the HTTP
    /// listener hands it over.
    fn handle(&self, body: &[u8], signature: &str) {
        let verdict = self
            .bench
            .rt
            .block_on(self.processor.handle(body, Some(signature)));
        assert_eq!(verdict, Verdict::Ok);
    }
}

fn webhook(c: &mut Criterion) {
    let receiver = Receiver::open();
    let posts = STATUSES_PER_POST as u64;
    // A POST applied once: the state of every contact moves.
    receiver.accept(0..posts);
    let body = status_webhook(0);
    let header = signature::sign(APP_SECRET, &body);
    receiver.handle(&body, &header);
    let delivered = receiver
        .bench
        .rt
        .block_on(receiver.bench.store.scan_dispatches(CAMPAIGN, None, 100))
        .expect("scanning succeeds");
    assert!(
        delivered
            .iter()
            .all(|r| r.state == DispatchState::Delivered),
        "the receiver applied the statuses"
    );

    let mut group = c.benchmark_group("webhook");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("verify", |b| {
        b.iter(|| signature::verify(APP_SECRET, black_box(&body), Some(&header)))
    });
    group.throughput(Throughput::Elements(posts));
    // Fresh contacts each POST: verify, parse, correlate, apply, as a first
    // delivery of each status.
    let mut next = posts;
    group.bench_function("handle/new", |b| {
        b.iter_custom(|iters| {
            let first = next;
            next += iters * posts;
            receiver.accept(first..next);
            let signed: Vec<(Vec<u8>, String)> = (0..iters)
                .map(|k| {
                    let body = status_webhook(first + k * posts);
                    let header = signature::sign(APP_SECRET, &body);
                    (body, header)
                })
                .collect();
            let started = Instant::now();
            for (body, header) in &signed {
                receiver.handle(body, header);
            }
            started.elapsed()
        })
    });
    // The same POST again (Meta redelivers): every status is read and
    // changes nothing.
    group.bench_function("handle/redelivered", |b| {
        b.iter(|| receiver.handle(black_box(&body), &header))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = micro;
    config = config();
    targets = template, audience, phone_numbers, limiter, store_stage, store_claim, store_portfolio, webhook
}
criterion_main!(micro);
