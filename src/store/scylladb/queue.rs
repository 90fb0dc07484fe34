//! Staging, the pending queue and its cursors, and scans of dispatch rows.

use super::*;

pub(super) async fn stage_batch(
    store: &ScyllaStore,
    items: &[StageRequest],
) -> StoreResult<Vec<StageOutcome>> {
    // Duplicates inside the batch: the first occurrence wins.
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let first: Vec<bool> = items
        .iter()
        .map(|i| seen.insert((i.campaign_id.as_str(), i.contact.row_str())))
        .collect();
    let jobs: Vec<_> = items
        .iter()
        .zip(first)
        .map(|(item, first)| store.stage_one(item, first))
        .collect();
    let outcomes = futures::stream::iter(jobs)
        .buffered(FAN_OUT)
        .collect::<Vec<StoreResult<StageOutcome>>>()
        .await;
    outcomes.into_iter().collect()
}

pub(super) async fn get_dispatch(
    store: &ScyllaStore,
    campaign: &str,
    contact: &ContactKey,
) -> StoreResult<Option<DispatchRecord>> {
    Ok(store
        .read_dispatch(campaign, contact, false)
        .await?
        .map(|(r, _)| r))
}

pub(super) async fn scan_pending(
    store: &ScyllaStore,
    campaign: &str,
    shard: u32,
    after: Option<u64>,
    limit: usize,
) -> StoreResult<Vec<PendingEntry>> {
    let rows: Vec<(i64, String)> = match after {
        Some(seq) => {
            let Ok(seq) = i64::try_from(seq) else {
                return Ok(Vec::new());
            };
            store
                .page(
                    &store.st.scan_pending_after,
                    (campaign, shard as i32, seq),
                    limit,
                    "scanning pending contacts",
                )
                .await?
        }
        None => {
            store
                .page(
                    &store.st.scan_pending,
                    (campaign, shard as i32),
                    limit,
                    "scanning pending contacts",
                )
                .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(seq, contact)| PendingEntry {
            seq: seq.max(0) as u64,
            contact: ContactKey::from_row(contact),
        })
        .collect())
}

/// Rows come in (bucket, contact) order, not contact order; `after` (the
/// last contact of the previous page) resumes in its bucket.
pub(super) async fn scan_dispatches(
    store: &ScyllaStore,
    campaign: &str,
    after: Option<&ContactKey>,
    limit: usize,
) -> StoreResult<Vec<DispatchRecord>> {
    let mut out = Vec::new();
    let mut bucket = after.map(rows::bucket).unwrap_or(0);
    let mut resume: Option<String> = after.map(|c| c.row_str().to_owned());
    while out.len() < limit && bucket < BUCKETS {
        let want = limit - out.len();
        let page: Vec<DispatchRow> = match &resume {
            Some(contact) => {
                store
                    .page(
                        &store.st.scan_bucket_after,
                        (campaign, bucket, contact.as_str()),
                        want,
                        "scanning dispatch rows",
                    )
                    .await?
            }
            None => {
                store
                    .page(
                        &store.st.scan_bucket,
                        (campaign, bucket),
                        want,
                        "scanning dispatch rows",
                    )
                    .await?
            }
        };
        let exhausted = page.len() < want;
        resume = page.last().map(|r| r.contact.clone());
        for row in page {
            // Fragments (no staging cells) are skipped, but still move
            // the position forward.
            if let Some((record, _)) = row.into_record()? {
                out.push(record);
            }
        }
        if exhausted {
            bucket += 1;
            resume = None;
        }
    }
    Ok(out)
}

pub(super) async fn load_cursor(
    store: &ScyllaStore,
    campaign: &str,
    shard: u32,
) -> StoreResult<Option<u64>> {
    let rows: Vec<(Option<i64>,)> = store
        .page(
            &store.st.load_cursor,
            (campaign, shard as i32),
            1,
            "reading a cursor",
        )
        .await?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|(s,)| s)
        .map(|s| s.max(0) as u64))
}

pub(super) async fn save_cursor(
    store: &ScyllaStore,
    campaign: &str,
    shard: u32,
    seq: u64,
) -> StoreResult<()> {
    store
        .exec(
            &store.st.save_cursor,
            (seq.min(i64::MAX as u64) as i64, campaign, shard as i32),
            "saving a cursor",
        )
        .await
        .map(drop)
}

pub(super) async fn due_timers(
    store: &ScyllaStore,
    campaign: &str,
    shard: u32,
    until: DateTime<Utc>,
    limit: usize,
) -> StoreResult<Vec<TimerEntry>> {
    let rows: Vec<(DateTime<Utc>, String, String)> = store
        .page(
            &store.st.due_timers,
            (campaign, shard as i32, until),
            limit,
            "scanning journey timers",
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(due, contact, step)| TimerEntry {
            shard,
            due,
            contact: ContactKey::from_row(contact),
            step,
        })
        .collect())
}

pub(super) async fn fire_timer(
    store: &ScyllaStore,
    campaign: &str,
    entry: &TimerEntry,
    edges: &[Edge],
    now: DateTime<Utc>,
    force: bool,
) -> StoreResult<Option<DispatchState>> {
    let written = store
        .update_journey(campaign, &entry.contact, |current| {
            let mut new = current.clone();
            new.promote(&entry.step, edges.to_vec(), now, force)
                .then_some(new)
        })
        .await?;
    let (moved, keep) = match written {
        Some(Ok((_, new))) => {
            if new.state == DispatchState::Pending {
                store.add_pending(&new).await?;
            }
            (Some(new.state), false)
        }
        // Declined while the row waits for exactly this entry: not due yet,
        // so it stays queued.
        Some(Err(current)) => (None, TimerEntry::of(&current).as_ref() == Some(entry)),
        None => (None, false),
    };
    // Only once the row moved (or declined): a crash before this line fires
    // the entry again, and the row then declines.
    if !keep {
        store.unindex_timer(campaign, entry).await?;
    }
    Ok(moved)
}
