//! The portfolio limit: unique recipients per rolling 24 hours, counted in
//! a ring of slots shared by every instance; and the frequency cap per
//! contact, counted in the contact's own slots.

use super::*;
use crate::domain::{FrequencyCap, SlotTake};

/// Slots of the portfolio limit tried per count before it is reported full.
const PORTFOLIO_PROBES: i64 = 8;

pub(super) async fn count_recipient(
    store: &ScyllaStore,
    contact: &ContactKey,
    now: DateTime<Utc>,
    limit: u64,
) -> StoreResult<RecipientCount> {
    let known: Vec<(Option<DateTime<Utc>>,)> = store
        .page(
            &store.st.get_recipient,
            (contact.as_str(),),
            1,
            "reading a portfolio recipient",
        )
        .await?;
    if known.first().and_then(|(u,)| *u).is_some_and(|u| u > now) {
        return Ok(RecipientCount::Known);
    }
    let slots = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
    let cursor: Vec<(Option<i64>,)> = store
        .page(
            &store.st.get_portfolio_cursor,
            (0i32,),
            1,
            "reading the portfolio cursor",
        )
        .await?;
    let next = cursor.first().and_then(|(n,)| *n).unwrap_or(0);
    let until = now + chrono::TimeDelta::hours(24);
    // The slot the cursor names is the oldest; a few after it cover
    // places taken concurrently by other instances.
    for step in 0..slots.min(PORTFOLIO_PROBES) {
        let position = next.saturating_add(step);
        let slot = i32::try_from(position.rem_euclid(slots)).unwrap_or(0);
        let mut reply = store
            .conditional(&store.st.take_slot, (contact.as_str(), until, slot, now))
            .await;
        if reply == LwtReply::NotApplied {
            // Also false for a slot never used: create it then.
            reply = store
                .conditional(&store.st.first_slot, (slot, contact.as_str(), until))
                .await;
        }
        match reply {
            LwtReply::Applied => {
                store
                    .exec(
                        &store.st.put_portfolio_cursor,
                        (position.saturating_add(1), 0i32),
                        "moving the portfolio cursor",
                    )
                    .await?;
                store
                    .exec(
                        &store.st.put_recipient,
                        (contact.as_str(), until),
                        "recording a portfolio recipient",
                    )
                    .await?;
                return Ok(RecipientCount::Counted);
            }
            // Taken, or perhaps taken by this very write (an uncertain
            // answer): either way not counted on, which errs on the
            // side of fewer recipients.
            LwtReply::NotApplied | LwtReply::Uncertain(_) => {}
            LwtReply::Failed(m) => {
                return Err(StoreError::Unavailable(format!(
                    "taking a place of the portfolio limit: {m}"
                )))
            }
        }
    }
    let oldest = i32::try_from(next.rem_euclid(slots)).unwrap_or(0);
    let row: Vec<(Option<DateTime<Utc>>,)> = store
        .page(&store.st.get_slot, (oldest,), 1, "reading a portfolio slot")
        .await?;
    let frees = row
        .first()
        .and_then(|(u,)| *u)
        .filter(|u| *u > now)
        .unwrap_or(now + chrono::TimeDelta::seconds(1));
    Ok(RecipientCount::Full { until: frees })
}

/// Takes one of a contact's send slots of a frequency cap (see
/// `send_slots` in the schema): the slots are read, then each free
/// one in turn is taken by a conditional write on the value read, so a slot
/// another instance took meanwhile is skipped.
pub(super) async fn take_send_slot(
    store: &ScyllaStore,
    scope: &str,
    contact: &ContactKey,
    send: &str,
    cap: FrequencyCap,
    now: DateTime<Utc>,
) -> StoreResult<SlotTake> {
    let rows: Vec<(i32, Option<String>, Option<DateTime<Utc>>)> = store
        .page(
            &store.st.send_slots,
            (contact.as_str(), scope),
            1_000,
            "reading a contact's send slots",
        )
        .await?;
    let live = |until: &Option<DateTime<Utc>>| until.is_some_and(|u| u > now);
    if rows
        .iter()
        .any(|(_, s, until)| s.as_deref() == Some(send) && live(until))
    {
        return Ok(SlotTake::Known);
    }
    let until = now + cap.window();
    let count = i32::try_from(cap.count).unwrap_or(i32::MAX);
    let mut frees: Option<DateTime<Utc>> = None;
    for slot in 0..count {
        let held = rows.iter().find(|(s, _, _)| *s == slot);
        let reply = match held {
            None => {
                store
                    .conditional(
                        &store.st.first_send_slot,
                        (contact.as_str(), scope, slot, send, until),
                    )
                    .await
            }
            Some((_, _, old)) if !live(old) => {
                store
                    .conditional(
                        &store.st.take_send_slot,
                        (send, until, contact.as_str(), scope, slot, *old),
                    )
                    .await
            }
            Some((_, _, old)) => {
                let old = old.unwrap_or(now);
                frees = Some(frees.map_or(old, |f| f.min(old)));
                continue;
            }
        };
        match reply {
            LwtReply::Applied => return Ok(SlotTake::Taken),
            // Taken meanwhile, or perhaps by this very write (an uncertain
            // answer): not counted on, which errs on the side of fewer sends.
            LwtReply::NotApplied | LwtReply::Uncertain(_) => {}
            LwtReply::Failed(m) => {
                return Err(StoreError::Unavailable(format!(
                    "taking a send slot of {contact}: {m}"
                )))
            }
        }
    }
    Ok(SlotTake::Full {
        until: frees.unwrap_or(now + chrono::TimeDelta::seconds(1)),
    })
}
