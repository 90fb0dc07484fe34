//! A row at an SMS step, from the queue to the SMS channel: its
//! destination and text, an SMS sender, the campaign's slot and pace, then
//! (in a task) the sender's turn, the claim and the request, in that order
//! (docs/ARCHITECTURE.md, "SMS channel").

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::Semaphore;

use crate::dispatch::sender::SendReport;
use crate::dispatch::sms::{SmsChannel, SmsJob, SmsSender};
use crate::domain::ExclusionReason;
use crate::sms::payload::{destination, request_bytes};
use crate::sms::SmsMessage;
use crate::store::DispatchRecord;
use crate::whatsapp::payload::step_callback_data;

use super::*;

/// How long contacts at an SMS step wait when there is no way to send it.
const NO_CHANNEL_RECHECK_SECS: i64 = 5;

impl Pump {
    /// [`Pump::consider`] for a row whose step is an SMS.
    pub(super) async fn consider_sms(
        self: &Arc<Self>,
        row: DispatchRecord,
        in_flight: &Arc<Semaphore>,
    ) -> Considered {
        let contact = &row.contact;
        let recheck =
            || Considered::Wait(Utc::now() + chrono::Duration::seconds(NO_CHANNEL_RECHECK_SECS));
        let Some(channel) = self.sms.clone() else {
            self.state.set_wait(Some((
                "sms_unavailable",
                "the journey has SMS steps and no SMS provider is configured: set sms.api_base_url and WADISPATCH_SMS_API_KEY".into(),
            )));
            return recheck();
        };
        let sender = match channel.sender() {
            Ok(sender) => sender,
            Err(reason) => {
                self.state.set_wait(Some(("sms_unavailable", reason)));
                return recheck();
            }
        };
        if let Some(reason) = sender.halted() {
            self.state.set_wait(Some((
                "sms_sender_halted",
                format!("SMS sender {} is halted: {reason}", sender.id),
            )));
            return recheck();
        }
        if sender.busy() {
            // Every request of the SMS sender is in flight: taking a slot of
            // the campaign now would hold it from its WhatsApp sends.
            return Considered::Wait(Utc::now() + chrono::Duration::milliseconds(100));
        }
        // A contact known by a WhatsApp user id only has no SMS number: the
        // step is skipped and the journey goes on.
        let Some(to) = destination(contact) else {
            self.exclude(contact, ExclusionReason::MissingVariable("phone".into()))
                .await;
            return Considered::Skipped;
        };
        let Some(text) = row.sms_text() else {
            self.exclude(
                contact,
                ExclusionReason::InvalidField(format!("steps.{}", row.step)),
            )
            .await;
            return Considered::Skipped;
        };
        let body = request_bytes(&SmsMessage {
            from: &sender.id,
            to: &to,
            text,
            notify_url: channel.notify_url(),
            callback_data: &step_callback_data(&self.state.id, &row.step, contact),
        });
        let Some(permit) = self.take_slot(contact, in_flight).await else {
            return Considered::Skipped;
        };
        let job = SmsJob {
            campaign: self.state.id.clone(),
            step: self.step_name(&row.step),
            contact: contact.clone(),
            body,
            retries: self.state.retries_of(contact),
        };
        let span = tracing::info_span!("sms", campaign = %self.state.id, sender = %sender.id);
        let pump = self.clone();
        tokio::spawn(async move {
            use tracing::Instrument;
            pump.send_sms(&channel, &sender, row, job)
                .instrument(span)
                .await;
            drop(permit);
        });
        Considered::Dispatched
    }

    /// The sender's turn, the claim, the request: a step whose turn never
    /// came was never claimed and stays pending as it was.
    async fn send_sms(
        &self,
        channel: &SmsChannel,
        sender: &SmsSender,
        row: DispatchRecord,
        job: SmsJob,
    ) {
        let holds = || self.state.holds();
        if let Some(_turn) = sender.take_turn(&holds).await {
            if self.claim(&row).await {
                let report = channel.deliver(sender, job).await;
                self.state
                    .note_retry(&row.contact, report == SendReport::Requeued);
                self.state
                    .dispatched
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.release(&row.contact);
    }
}
