//! Keys of the embedded store's keyspaces (the layout is in the module
//! comment of `mod.rs`), JSON encoding of values, and the errors of both.

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

pub(super) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(io_err)
}

pub(super) fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        message: e.to_string(),
    })
}

pub(super) fn dispatch_key(campaign: &str, contact: &ContactKey) -> Vec<u8> {
    let mut k = Vec::with_capacity(campaign.len() + 1 + contact.as_str().len());
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k.extend_from_slice(contact.as_str().as_bytes());
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
    k.extend_from_slice(contact.as_str().as_bytes());
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
