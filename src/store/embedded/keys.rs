//! Keys of the embedded store's keyspaces (the layout is in the module
//! comment of `mod.rs`), the encodings of values (binary rows, JSON for the
//! rest), and the errors of both.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;
use crate::domain::{ContactKey, DispatchState};

pub(super) fn io_err(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::io("embedded store", e)
}

/// fjall refuses an empty key (it asserts): ids that come from outside are
/// checked before they become one.
pub(super) fn empty_key(what: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::new(),
        message: format!("a {what} needs a non-empty id"),
    }
}

/// The first byte of a value in the binary row encoding, version 1:
/// MessagePack with struct fields named (docs/ARCHITECTURE.md, "Row
/// encoding"). No JSON document starts with a control byte, so a value
/// tells its encoding by its first byte.
pub(super) const ROW_V1: u8 = 0x01;

/// A value of a cold keyspace (campaigns, halts, leases, markers, …):
/// JSON, read by any version and easy to inspect.
pub(super) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(io_err)
}

/// A value written on every message (dispatch rows, contact records, the
/// wamid index): the binary encoding, version 1.
pub(super) fn encode_row<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    let mut out = Vec::with_capacity(256);
    out.push(ROW_V1);
    rmp_serde::encode::write_named(&mut out, value).map_err(io_err)?;
    Ok(out)
}

/// Either encoding: binary rows by their version byte, JSON (every value
/// written before the binary encoding, and cold values) by its first
/// character.
pub(super) fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    let corrupt = |message: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        message,
    };
    match bytes.first() {
        Some(&ROW_V1) => rmp_serde::from_slice(&bytes[1..])
            .map_err(|e| corrupt(format!("binary row (version 1): {e}"))),
        Some(b) if b.is_ascii_graphic() || b.is_ascii_whitespace() => {
            serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))
        }
        Some(b) => Err(corrupt(format!(
            "row encoding version {b}, unknown to this build: the store was written by a newer wadispatch; run that version (or newer)"
        ))),
        None => Err(corrupt("empty value".into())),
    }
}

pub(super) fn dispatch_key(campaign: &str, contact: &ContactKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + 1 + contact.row_str().len());
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k.extend_from_slice(contact.row_str().as_bytes());
    k
}

/// `contact \0 campaign \0 occurrence` (the occurrence empty for a row
/// without one): a contact's entries are one prefix.
pub(super) fn reach_key(campaign: &str, contact: &ContactKey) -> Vec<u8> {
    let occurrence = contact.occurrence().unwrap_or("");
    let mut k = reach_prefix(contact);
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k.extend_from_slice(occurrence.as_bytes());
    k
}

pub(super) fn reach_prefix(contact: &ContactKey) -> Vec<u8> {
    let mut k = contact.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

pub(super) fn campaign_prefix(campaign: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + 1);
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k
}

pub(super) fn shard_key(campaign: &str, shard: u32) -> Vec<u8> {
    let mut k = campaign_prefix(campaign);
    k.extend_from_slice(&shard.to_be_bytes());
    k
}

pub(super) fn pending_key(campaign: &str, shard: u32, seq: u64) -> Vec<u8> {
    let mut k = shard_key(campaign, shard);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn claim_key(campaign: &str, shard: u32, owner: &str, contact: &ContactKey) -> Vec<u8> {
    let mut k = shard_key(campaign, shard);
    k.extend_from_slice(owner.as_bytes());
    k.push(0);
    k.extend_from_slice(contact.row_str().as_bytes());
    k
}

/// The index entry of a row that leaves `claimed` (`before` is the row as
/// it was), to remove in the same batch as the row's change.
pub(super) fn unclaimed_key(before: &DispatchRecord, after: &DispatchRecord) -> Option<Vec<u8>> {
    let owner = before.owner.as_deref()?;
    (before.state == DispatchState::Claimed && after.state != DispatchState::Claimed)
        .then(|| claim_key(&before.campaign_id, before.shard, owner, &before.contact))
}

pub(super) fn recipient_order_key(until: DateTime<Utc>, contact: &ContactKey) -> Vec<u8> {
    let ms = u64::try_from(until.timestamp_millis()).unwrap_or(0);
    let mut k = ms.to_be_bytes().to_vec();
    k.extend_from_slice(contact.as_str().as_bytes());
    k
}

/// `timers`: campaign 0 shard(be32) due(be64 ms) contact 0 step.
pub(super) fn timer_key(campaign: &str, entry: &TimerEntry) -> Vec<u8> {
    let mut k = shard_key(campaign, entry.shard);
    let ms = u64::try_from(entry.due.timestamp_millis()).unwrap_or(0);
    k.extend_from_slice(&ms.to_be_bytes());
    k.extend_from_slice(entry.contact.row_str().as_bytes());
    k.push(0);
    k.extend_from_slice(entry.step.as_bytes());
    k
}

/// The entry a `timers` key names (`prefix` is its shard's key).
pub(super) fn timer_entry(prefix_len: usize, shard: u32, key: &[u8]) -> StoreResult<TimerEntry> {
    let corrupt = || StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        message: "not a timer key".into(),
    };
    let rest = key.get(prefix_len..).ok_or_else(corrupt)?;
    let (ms, rest) = rest.split_at_checked(8).ok_or_else(corrupt)?;
    let ms = i64::try_from(u64::from_be_bytes(ms.try_into().map_err(|_| corrupt())?))
        .map_err(|_| corrupt())?;
    let split = rest.iter().position(|&b| b == 0).ok_or_else(corrupt)?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| corrupt());
    Ok(TimerEntry {
        shard,
        due: DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(corrupt)?,
        contact: ContactKey::from_row(text(&rest[..split])?),
        step: text(&rest[split + 1..])?,
    })
}
