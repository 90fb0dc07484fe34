//! The dispatch engine: staged contacts → paced sends, no double send, no
//! lost contact.
//!
//! - [`policy`]: pure decisions (schedule and quiet hours, lifecycle, AIMD,
//!   backoff), unit-tested with an injected clock.
//! - [`decision`]: what a WhatsApp answer means for the contact, the sender
//!   and the campaign.
//! - [`sender`]: `SenderActor` per phone_number_id (limiters, circuit, HTTP,
//!   outcome) and the pool a campaign picks its sender from.
//! - [`campaign`]: `CampaignActor` per campaign (scan, checks, claim).
//! - [`registry`]: `CampaignRegistry` (catalog → actors, overrides, reload).
//! - [`lease`]: this instance's lease; [`settle`]: claims of instances gone.
//! - [`limits`]: the messaging limit Meta stated for the portfolio.
//! - [`templates`]: the template book (what Meta said of each template),
//!   read before every claim.

pub mod campaign;
pub mod decision;
pub mod lease;
pub mod limits;
pub mod policy;
pub mod registry;
pub mod sender;
pub mod settle;
pub mod sms;
pub mod templates;
