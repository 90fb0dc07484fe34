//! The SMS senders of journeys' `sms` steps: one per sender id, paced by a
//! governor limiter at its configured rate, with a bound on requests in
//! flight, halted by an answer that condemns every message (a wrong key or
//! URL). A send follows the same order as a WhatsApp one: the sender's turn,
//! then the claim (by the pump), then the request at once, then its outcome
//! (docs/ARCHITECTURE.md, "SMS channel").

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::policy::backoff::RetryPolicy;
use super::sender::{finish, poll_until, retry_after, wait_turn_unless, SendReport, SendTarget};
use crate::config::Config;
use crate::domain::{ContactKey, ErrorClass};
use crate::sms::{SmsClient, SmsResult, SmsSettings};
use crate::store::{Outcome, Store};
use crate::sync::{MutexExt, RwLockExt};

/// The rate of a sender id without a `[sms.senders]` entry.
pub const DEFAULT_SMS_PER_SECOND: f64 = 10.0;
/// Requests one SMS sender keeps in flight.
const MAX_IN_FLIGHT: usize = 32;

/// One SMS sender id.
pub struct SmsSender {
    pub id: String,
    limiter: Arc<DefaultDirectRateLimiter>,
    slots: Semaphore,
    halted: Mutex<Option<String>>,
}

impl SmsSender {
    fn new(id: &str, per_second: f64) -> SmsSender {
        // One message every 1/rate seconds, fractions of a message per
        // second included; a burst of one second's worth (at least one).
        let period = std::time::Duration::from_secs_f64(1.0 / per_second.clamp(1e-6, 1e6));
        let burst =
            NonZeroU32::new(per_second.ceil().clamp(1.0, 1e6) as u32).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        SmsSender {
            id: id.to_string(),
            limiter: Arc::new(RateLimiter::direct(quota)),
            slots: Semaphore::new(MAX_IN_FLIGHT),
            halted: Mutex::new(None),
        }
    }

    /// True when every in-flight slot is taken: a contact picked now would
    /// hold a slot of its campaign while it waits here.
    pub fn busy(&self) -> bool {
        self.slots.available_permits() == 0
    }

    /// Why this sender sends nothing, if it is halted.
    pub fn halted(&self) -> Option<String> {
        self.halted.lock_or_recover().clone()
    }

    /// Waits for an in-flight slot and the pace; `None` when `stop()` came
    /// first (nothing was taken, so the contact was never claimed).
    pub async fn take_turn(&self, stop: &(dyn Fn() -> bool + Sync)) -> Option<SemaphorePermit<'_>> {
        let slot = tokio::select! {
            slot = self.slots.acquire() => slot.ok()?,
            _ = poll_until(stop) => return None,
        };
        let limiter = self.limiter.clone();
        (wait_turn_unless(|| limiter.clone(), stop).await && self.halted().is_none())
            .then_some(slot)
    }
}

/// A claimed SMS step to send.
pub struct SmsJob {
    pub campaign: String,
    /// The journey step's id (its metrics label).
    pub step: String,
    pub contact: ContactKey,
    /// The request body, built before the claim.
    pub body: Bytes,
    /// Earlier tries that never left: the backoff grows with them.
    pub retries: u32,
}

/// The SMS channel: the client and the senders.
pub struct SmsChannel {
    client: SmsClient,
    store: Arc<dyn Store>,
    /// `notifyUrl` of every message (with its Basic credentials), if
    /// delivery reports are asked for.
    notify_url: Option<String>,
    default_sender: Option<String>,
    rates: BTreeMap<String, f64>,
    retry: RetryPolicy,
    senders: RwLock<HashMap<String, Arc<SmsSender>>>,
}

impl SmsChannel {
    /// The channel `[sms]` describes: `None` without `sms.api_base_url`, an
    /// error that says what to set when it cannot work.
    pub fn from_config(
        config: &Config,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let sms = &config.sms;
        let Some(base_url) = &sms.api_base_url else {
            return Ok(None);
        };
        let Some(key) = &sms.api_key else {
            anyhow::bail!("sms.api_base_url is set but no API key is: set WADISPATCH_SMS_API_KEY (or sms.api_key)");
        };
        let client = SmsClient::new(SmsSettings {
            base_url: base_url.clone(),
            api_key: key.expose().to_string(),
            connect_timeout: std::time::Duration::from_millis(sms.connect_timeout_ms),
            request_timeout: std::time::Duration::from_millis(sms.request_timeout_ms),
        })?;
        let notify_url = match (&sms.report_url, &sms.report_password) {
            (Some(url), Some(password)) => {
                let mut url = reqwest::Url::parse(url)?;
                let credentials = url
                    .set_username(&sms.report_username)
                    .and_then(|()| url.set_password(Some(password.expose())));
                if credentials.is_err() {
                    anyhow::bail!("sms.report_url cannot carry credentials: {url}");
                }
                // The URL's user info is sent as it is written: a character
                // the URL must escape would reach the listener escaped and
                // never match.
                if url.username() != sms.report_username
                    || url.password() != Some(password.expose())
                {
                    anyhow::bail!("the SMS report user name and password (WADISPATCH_SMS_REPORT_PASSWORD) go in the notifyUrl: use only letters, digits and - . _ ~ in them");
                }
                Some(url.to_string())
            }
            (Some(_), None) => anyhow::bail!("sms.report_url is set but no report password is: set WADISPATCH_SMS_REPORT_PASSWORD, or delivery reports would be refused"),
            (None, _) => {
                tracing::warn!("sms.report_url is not set: SMS steps ask for no delivery report and end `accepted`");
                None
            }
        };
        let d = &config.dispatch;
        Ok(Some(Arc::new(SmsChannel {
            client,
            store,
            notify_url,
            default_sender: sms.default_sender.clone(),
            rates: sms
                .senders
                .iter()
                .map(|(id, s)| (id.clone(), s.per_second))
                .collect(),
            retry: RetryPolicy {
                max_attempts: d.transient_max_attempts,
                base: std::time::Duration::from_millis(d.backoff_base_ms),
                max: std::time::Duration::from_millis(d.backoff_max_ms),
            },
            senders: RwLock::new(HashMap::new()),
        })))
    }

    pub fn notify_url(&self) -> Option<&str> {
        self.notify_url.as_deref()
    }

    /// The sender of SMS steps (`sms.default_sender`), or why there is none.
    pub fn sender(&self) -> Result<Arc<SmsSender>, String> {
        let Some(id) = &self.default_sender else {
            return Err("sms.default_sender is not set: SMS steps have no sender id".into());
        };
        if let Some(sender) = self.senders.read_or_recover().get(id) {
            return Ok(sender.clone());
        }
        let rate = self
            .rates
            .get(id)
            .copied()
            .unwrap_or(DEFAULT_SMS_PER_SECOND);
        Ok(self
            .senders
            .write_or_recover()
            .entry(id.clone())
            .or_insert_with(|| Arc::new(SmsSender::new(id, rate)))
            .clone())
    }

    /// Sends a claimed step now and writes what became of it.
    pub async fn deliver(&self, sender: &SmsSender, job: SmsJob) -> SendReport {
        let result = self.client.send(job.body).await;
        let (outcome, report) = outcome(&self.retry, sender, &result, job.retries);
        match &result {
            SmsResult::Accepted { .. } => {}
            other => {
                tracing::info!(campaign = %job.campaign, contact = %job.contact, sender = %sender.id, result = other.label(), outcome = ?outcome, "sms not accepted")
            }
        }
        let on = SendTarget {
            campaign: &job.campaign,
            step: &job.step,
            contact: &job.contact,
        };
        finish(self.store.as_ref(), &sender.id, on, outcome, report).await
    }
}

/// What the store records of a send's result, and what the campaign learns.
fn outcome(
    retry_policy: &RetryPolicy,
    sender: &SmsSender,
    result: &SmsResult,
    retries: u32,
) -> (Outcome, SendReport) {
    // A request that never left, or a passing refusal, is tried again
    // with a growing delay; once the attempts are spent the step fails
    // (class `transient`) and the journey goes on from there, as a
    // WhatsApp send's does. Throttling is retried without a limit.
    let retry = |code: Option<i64>, throttled: bool| match retry_policy
        .next(retries + 1, rand::random::<f64>())
    {
        Some(delay) => (retry_after(code, delay), SendReport::Requeued),
        None if throttled => (retry_after(code, retry_policy.max), SendReport::Requeued),
        None => (
            Outcome::Failed {
                code,
                class: ErrorClass::Transient.as_str().to_string(),
                message: format!("not sent after {} attempts", retries + 1),
            },
            SendReport::Done("failed"),
        ),
    };
    match result {
        SmsResult::Accepted { message_id } => (
            Outcome::Accepted {
                wamid: message_id.clone(),
                sender: Some(sender.id.clone()),
                held: None,
            },
            SendReport::Done("accepted"),
        ),
        SmsResult::NotSent { .. } => retry(None, false),
        SmsResult::Unknown { reason } => (
            Outcome::Unknown {
                message: reason.clone(),
            },
            SendReport::Done("unknown"),
        ),
        SmsResult::Rejected {
            class: ErrorClass::Sender,
            code,
            message,
        } => {
            tracing::error!(sender = %sender.id, reason = %message, "SMS sender halted: the provider refuses its key or address; fix [sms] and restart");
            *sender.halted.lock_or_recover() = Some(message.clone());
            (
                Outcome::Retry {
                    code: *code,
                    not_before: None,
                },
                SendReport::SenderHalted,
            )
        }
        SmsResult::Rejected {
            class: class @ (ErrorClass::Throttled | ErrorClass::Transient),
            code,
            ..
        } => retry(*code, *class == ErrorClass::Throttled),
        SmsResult::Rejected {
            class,
            code,
            message,
        } => (
            Outcome::Failed {
                code: *code,
                class: class.as_str().to_string(),
                message: message.clone(),
            },
            SendReport::Done("failed"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_of_a_message_per_second_are_kept() {
        let slow = SmsSender::new("s", 0.5);
        assert!(slow.limiter.check().is_ok());
        assert!(slow.limiter.check().is_err(), "one message per 2 s");
        let fast = SmsSender::new("f", 3.0);
        assert_eq!((0..5).filter(|_| fast.limiter.check().is_ok()).count(), 3);
    }

    #[test]
    fn attempts_run_out_except_for_throttling() {
        let policy = RetryPolicy {
            max_attempts: 3,
            base: std::time::Duration::from_millis(10),
            max: std::time::Duration::from_secs(1),
        };
        let sender = SmsSender::new("s", 10.0);
        let not_sent = SmsResult::NotSent {
            reason: "refused".into(),
        };
        let (first, report) = outcome(&policy, &sender, &not_sent, 0);
        assert!(matches!(first, Outcome::Retry { .. }));
        assert_eq!(report, SendReport::Requeued);
        let (last, _) = outcome(&policy, &sender, &not_sent, 2);
        assert!(
            matches!(&last, Outcome::Failed { class, .. } if class == "transient"),
            "{last:?}"
        );
        let throttled = SmsResult::Rejected {
            class: ErrorClass::Throttled,
            code: Some(429),
            message: "too many".into(),
        };
        assert!(matches!(
            outcome(&policy, &sender, &throttled, 9).0,
            Outcome::Retry { .. }
        ));
        let halted = SmsResult::Rejected {
            class: ErrorClass::Sender,
            code: Some(401),
            message: "UNAUTHORIZED".into(),
        };
        assert_eq!(
            outcome(&policy, &sender, &halted, 0).1,
            SendReport::SenderHalted
        );
        assert_eq!(sender.halted().as_deref(), Some("UNAUTHORIZED"));
    }
}
