//! The SMS channel of journeys: the provider's documented request, answer
//! and delivery report shapes (`payload`) and the HTTP client that sends
//! one message and says what became of it (`client`). README, "SMS
//! channel", says what was checked against which document.

pub mod client;
pub mod payload;

pub use client::{SmsClient, SmsClientError, SmsResult, SmsSettings};
pub use payload::{Report, ReportUpdate, Reports, SmsMessage};
