//! wadispatch: paced WhatsApp template campaigns from Kafka.
//!
//! Layout (one concern per module; pure logic apart from I/O glue):
//! - [`domain`]: campaign specs, audience records, contact keys, template
//!   expressions, dispatch states, exclusion reasons, WhatsApp error classes.
//!   Pure and synchronous.
//! - [`config`]: the TOML file model, environment overrides, validation and
//!   the diff a reload applies.
//! - [`store`]: the `Store` trait and its backends (embedded fjall).
//! - [`ingest`]: Kafka consumers of `wa.campaigns` and `wa.audience`, the
//!   contiguous offset watermark and the dead-letter producer.
//! - [`dispatch`]: the engine: campaign and sender actors, pacing, claims.
//! - [`reload`]: SIGHUP and file-change reload, validated, restart keys refused.
//! - [`import`]: `audience import`, CSV → keyed records on `wa.audience`.
//! - [`report`]: funnel summaries computed by scanning the store.
//! - [`requeue`]: `unknown`/`failed` contacts back to pending (operator or automatic).
//! - [`app`]: wiring of a running daemon (`run`) and its shutdown.
//! - [`demo`]: the self-contained demo on an in-process Kafka mock cluster.
//! - [`whatsapp`]: Cloud API payloads and the HTTP client (error classes).
//! - [`sandbox`]: a WhatsApp Cloud API simulator for demos, tests and load
//!   tests (stand-alone: depends on nothing else in the crate).
//! - [`webhook`]: Meta's webhooks: signature, statuses, replies, opt-outs.
//! - [`events`]: the `wa.events` producer for downstream consumers.
//! - [`metrics`]: every Prometheus metric, defined once.
//! - [`cli`]: the command line.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod import;
pub mod ingest;
pub mod metrics;
pub mod notify;
pub mod reload;
pub mod report;
pub mod requeue;
pub mod sandbox;
pub mod store;
pub mod webhook;
pub mod whatsapp;
