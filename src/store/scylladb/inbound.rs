//! What webhooks write: the wamid index, statuses (applied or parked until
//! their send is recorded) and replies parked until their route is known.

use super::*;

/// The one partition of `parked_replies` (replies wait there for seconds).
const REPLY_BUCKET: i32 = 0;

/// A digest naming a parked status, so a redelivery is stored once.
fn status_id(json: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(json.as_bytes())[..16])
}

pub(super) async fn park_reply(store: &ScyllaStore, reply: &ParkedReply) -> StoreResult<()> {
    // A redelivery keeps the first arrival's wait. Redeliveries come
    // seconds apart, so the read and the write need not be one step.
    let existing: Vec<(Option<String>,)> = store
        .page(
            &store.st.get_parked_reply,
            (REPLY_BUCKET, reply.message_id.as_str()),
            1,
            "reading a parked reply",
        )
        .await?;
    if !existing.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(reply).map_err(|e| StoreError::Corrupt {
        key: format!("parked_replies/{}", reply.message_id),
        message: e.to_string(),
    })?;
    store
        .exec(
            &store.st.park_reply,
            (REPLY_BUCKET, reply.message_id.as_str(), json),
            "parking a reply",
        )
        .await
        .map(drop)
}

pub(super) async fn parked_replies(
    store: &ScyllaStore,
    limit: usize,
) -> StoreResult<Vec<ParkedReply>> {
    let rows: Vec<(Option<String>,)> = store
        .rows(
            &store.st.parked_replies,
            (REPLY_BUCKET,),
            "listing parked replies",
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for json in rows.into_iter().filter_map(|(r,)| r) {
        let reply: ParkedReply = serde_json::from_str(&json).map_err(|e| StoreError::Corrupt {
            key: "parked_replies".into(),
            message: e.to_string(),
        })?;
        out.push(reply);
    }
    out.sort_by_key(|r| r.parked_at);
    out.truncate(limit);
    Ok(out)
}

pub(super) async fn take_parked_reply(store: &ScyllaStore, message_id: &str) -> StoreResult<bool> {
    // A lightweight transaction: of several instances settling the same
    // reply, one removes it and publishes it.
    match store
        .conditional(&store.st.take_parked_reply, (REPLY_BUCKET, message_id))
        .await
    {
        LwtReply::Applied => Ok(true),
        LwtReply::NotApplied => Ok(false),
        // Whether it went is unknown: leave it to the next round (a
        // reply may then be published twice, never zero times).
        LwtReply::Failed(m) | LwtReply::Uncertain(m) => Err(StoreError::Unavailable(format!(
            "taking a parked reply: {m}"
        ))),
    }
}

/// `wamids` columns: campaign, contact, created_at.
type WamidRow = (Option<String>, Option<String>, Option<DateTime<Utc>>);

pub(super) async fn lookup_wamid(
    store: &ScyllaStore,
    wamid: &str,
) -> StoreResult<Option<WamidEntry>> {
    let rows: Vec<WamidRow> = store
        .page(&store.st.get_wamid, (wamid,), 1, "looking up a wamid")
        .await?;
    Ok(rows.into_iter().next().and_then(|(c, k, at)| {
        Some(WamidEntry {
            campaign_id: c?,
            contact: ContactKey::from_row(k?),
            created_at: at.unwrap_or_default(),
        })
    }))
}

pub(super) async fn apply_status(
    store: &ScyllaStore,
    campaign: &str,
    contact: &ContactKey,
    update: &StatusUpdate,
) -> StoreResult<StatusApplied> {
    let mut change = None;
    let written = store
        .update_journey(campaign, contact, |current| {
            let mut new = current.clone();
            change = new.apply_status(update);
            change.map(|_| new)
        })
        .await?;
    match written {
        None => Ok(StatusApplied::Missing),
        Some(Err(current)) => {
            let (step, state) = current.status_step(update);
            Ok(StatusApplied::Unchanged {
                state,
                step: step.to_string(),
                sender: current.status_sender(update).map(str::to_string),
            })
        }
        Some(Ok((old, new))) => {
            store.after_unclaim(&old, &new).await?;
            if new.state == DispatchState::Deferred {
                store.add_pending(&new).await?;
            }
            // The step's own transition: a status of an earlier step's
            // message leaves the current step's state as it was.
            let (from, to) = change.unwrap_or((old.state, new.state));
            let priced =
                old.status_pricing(update).is_none() && new.status_pricing(update).is_some();
            Ok(StatusApplied::Changed {
                from,
                to,
                step: new.status_step(update).0.to_string(),
                record: Box::new(new),
                priced,
            })
        }
    }
}

pub(super) async fn park_status(
    store: &ScyllaStore,
    wamid: &str,
    update: &StatusUpdate,
) -> StoreResult<()> {
    let json =
        serde_json::to_string(update).map_err(|e| StoreError::io("cannot encode a status", e))?;
    store
        .exec(
            &store.st.park,
            (wamid, status_id(&json), &json),
            "parking a status",
        )
        .await
        .map(drop)
}
