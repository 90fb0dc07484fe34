//! wadispatch: paced WhatsApp template campaigns from Kafka.
//!
//! Layout (one concern per module; pure logic apart from I/O glue; the same
//! list, with more on each part, is in docs/ARCHITECTURE.md, "Layout"):
//! - [`domain`]: specs, journeys, audience records, contacts, templates, states, error classes (pure).
//! - [`config`]: the TOML file model, environment overrides, validation, reload diff.
//! - [`ingest`]: Kafka readers of campaigns, audience, suppressions and
//!   conversions; watermark; DLQ.
//! - [`store`]: the `Store` trait, its rows and the latency wrapper [`store::timed`].
//! - [`store::embedded`]: the embedded backend: fjall on local disk, one process.
//! - [`store::scylladb`]: the ScyllaDB backend: several instances on one cluster.
//! - [`dispatch`]: the engine: pure policy, actors, pacing, claims, leases.
//! - [`whatsapp`]: Cloud API payloads and the HTTP client.
//! - [`webhook`]: Meta's webhooks: signature, statuses, replies, opt-outs.
//! - [`events`]: the `wa.events` producer for downstream consumers.
//! - [`sandbox`]: the Cloud API simulator (depends on nothing else in the crate).
//! - [`admin`]: the admin listener: `/metrics`, `/healthz`, `/readyz`, `/campaigns`.
//! - [`metrics`]: every Prometheus metric, defined once.
//! - `notify` (crate-private): systemd readiness, status and watchdog notifications.
//! - `reload` (crate-private): reload on SIGHUP or a file change: validated, restart keys refused.
//! - `requeue` (crate-private): `unknown` or `failed` contacts back to pending (operator or automatic).
//! - [`app`]: the wiring of a running daemon and its shutdown.
//! - [`cli`]: the command line.
//! - [`demo`]: the self-contained demo on an in-process Kafka mock cluster.
//! - `import` (crate-private): `audience import`: a CSV file to keyed records on `wa.audience`.
//! - [`report`]: funnel summaries computed by scanning the store.
//! - `sync` (crate-private): locks that stay usable after a panic of their holder.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod events;
pub(crate) mod import;
pub mod ingest;
pub mod metrics;
pub(crate) mod notify;
pub mod ops;
pub(crate) mod reload;
pub mod report;
pub(crate) mod requeue;
pub mod sandbox;
pub mod sms;
pub mod store;
pub(crate) mod sync;
pub mod webhook;
pub mod whatsapp;

/// The allocator the `wadispatch` binary and the benchmarks install as the
/// global one: mimalloc, whose thread-local free lists cost a fraction of
/// glibc malloc's for the daemon's pattern (many small allocations freed on
/// another worker thread). See docs/ARCHITECTURE.md, "Allocator".
pub use mimalloc::MiMalloc as Allocator;
