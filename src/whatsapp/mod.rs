//! The WhatsApp Cloud API: the JSON of a template message and the HTTP
//! client that posts it.
//!
//! - [`payload`]: pure functions from a campaign's template and a
//!   contact's frozen parameters to the Cloud API request body, and the
//!   `biz_opaque_callback_data` that ties status webhooks back to a
//!   (campaign, contact).
//! - [`client`]: [`WhatsAppClient`], a pooled HTTP/1.1 + HTTP/2 client for
//!   `POST {base}/{version}/{phone_number_id}/messages`, and
//!   [`SendResult`], which keeps "provably not sent" apart from "may have
//!   been sent" because WhatsApp has no idempotency key
//!   (docs/ARCHITECTURE.md, "Error classes").
//!
//! Error classes come from [`crate::domain::classify_code`]; this module
//! only reads them off the response.

pub mod client;
pub mod payload;

pub use client::{ApiError, ClientError, ClientSettings, SendResult, WhatsAppClient};
pub use payload::{
    callback_data, parse_callback_data, step_callback_data, template_message,
    template_message_bytes, TemplateMessage,
};
