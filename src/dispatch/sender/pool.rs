//! The senders of this process by phone_number_id, and the choice of the
//! sender that takes a campaign's next contact.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use actix::Addr;

use super::{SenderActor, SenderCore};
use crate::domain::ContactKey;
use crate::sync::RwLockExt;

/// Every sender actor of the process with its core, by phone_number_id.
pub type SenderMap = Arc<RwLock<BTreeMap<String, (Addr<SenderActor>, Arc<SenderCore>)>>>;

/// Why no sender of a pool can take a contact now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSender {
    /// Every sender of the pool is halted (token, account, policy, paused).
    Halted,
    /// Some are not halted, but their circuits are open (an outage) or
    /// Meta paused them (131057: why, for the first paused one).
    Unavailable { paused: Option<String> },
    /// A marketing send, and every available sender's number is flagged
    /// under `whatsapp.number_quality = "halt"` (why, for the first).
    QualityHeld { why: String },
}

/// The least loaded available sender of `pool`; the scan starts at a hash
/// of the contact, so equally loaded senders share the work. A fixed hash
/// per contact left some senders idle while others had long queues holding
/// the campaign's in-flight permits: with 100 paced senders the idle ones
/// sent 2–7 % under their rate.
pub fn pick(
    senders: &SenderMap,
    pool: &[String],
    contact: &ContactKey,
    marketing: bool,
) -> Result<Arc<SenderCore>, NoSender> {
    let senders = senders.read_or_recover();
    let known: Vec<&Arc<SenderCore>> = pool
        .iter()
        .filter_map(|s| senders.get(s))
        .map(|(_, core)| core)
        .collect();
    let available: Vec<&Arc<SenderCore>> =
        known.iter().copied().filter(|c| c.available()).collect();
    let ready: Vec<&Arc<SenderCore>> = if marketing {
        available
            .iter()
            .copied()
            .filter(|c| c.marketing_held().is_none())
            .collect()
    } else {
        available.clone()
    };
    if ready.is_empty() && !available.is_empty() {
        return Err(NoSender::QualityHeld {
            why: available
                .iter()
                .find_map(|c| c.marketing_held().map(|why| format!("{}: {why}", c.id)))
                .unwrap_or_default(),
        });
    }
    if ready.is_empty() {
        return Err(if known.iter().all(|c| c.is_halted()) {
            NoSender::Halted
        } else {
            NoSender::Unavailable {
                paused: known
                    .iter()
                    .find_map(|c| c.paused().map(|why| format!("{}: {why}", c.id))),
            }
        });
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    contact.as_str().hash(&mut h);
    let start = (h.finish() as usize) % ready.len();
    (0..ready.len())
        .map(|i| ready[(start + i) % ready.len()])
        .min_by_key(|core| core.queued())
        .cloned()
        .ok_or(NoSender::Halted)
}
