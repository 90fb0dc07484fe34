//! A contact's claim and what follows it: outcomes, exclusions, requeues,
//! and the claim index that finds claims a crash left behind.

use super::*;

pub(super) async fn claimed(
    store: &ScyllaStore,
    campaign: &str,
    shard: u32,
) -> StoreResult<Vec<ClaimEntry>> {
    let rows: Vec<(String, String, Option<DateTime<Utc>>)> = store
        .rows(
            &store.st.list_claims,
            (campaign, shard as i32),
            "reading the claim index",
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(owner, contact, at)| ClaimEntry {
            contact: ContactKey::from_row(contact),
            owner,
            claimed_at: at.unwrap_or_default(),
        })
        .collect())
}

pub(super) async fn settle_claim(
    store: &ScyllaStore,
    campaign: &str,
    shard: u32,
    entry: &ClaimEntry,
    message: &str,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let outcome = Outcome::Unknown {
        message: message.to_string(),
    };
    let written = store
        .update_journey(campaign, &entry.contact, |current| {
            current.claimed_by(&entry.owner).then(|| {
                let mut new = current.clone();
                new.apply_outcome(&outcome, at);
                new
            })
        })
        .await?;
    store
        .unindex_claim(campaign, shard, &entry.owner, &entry.contact)
        .await?;
    Ok(matches!(written, Some(Ok(_))))
}

/// The contact's engagement as read before a claim of an exclusive campaign.
enum Engagement {
    /// Not an exclusive campaign: nothing to take.
    NotNeeded,
    /// Free, ours, or the one this claim replaces: take it after the row.
    Take(Option<String>),
    /// Held by another campaign.
    Elsewhere(String),
}

/// Reads the engagement before claiming, so the common refusal costs no
/// write.
async fn read_engagement(store: &ScyllaStore, req: &ClaimRequest) -> StoreResult<Engagement> {
    if !req.exclusive {
        return Ok(Engagement::NotNeeded);
    }
    let current = store
        .get_contact_row(&req.contact)
        .await?
        .and_then(|c| c.engaged_campaign);
    Ok(match current {
        Some(other)
            if other != req.campaign_id
                && req.replace_engagement.as_deref() != Some(other.as_str()) =>
        {
            Engagement::Elsewhere(other)
        }
        current => Engagement::Take(current),
    })
}

/// Takes the engagement for a row this claim has just written (`new`, at
/// revision `new_rev`). Always a conditional write, even when the engagement
/// looks like ours already: a plain read may be stale, and another instance
/// may be replacing it. Only a holder sends, so when another campaign holds
/// the contact the row is given back and that campaign is returned.
async fn hold_engagement(
    store: &ScyllaStore,
    req: &ClaimRequest,
    (old, new, new_rev): (&DispatchRecord, &DispatchRecord, i64),
    current: Option<String>,
) -> StoreResult<Option<String>> {
    let holder = match store.take_engagement(req, current).await {
        Ok(holder) => holder,
        Err(e) => {
            let _ = store.write_journey(new, old, Some(new_rev)).await;
            return Err(e);
        }
    };
    if let Some(holder) = holder {
        store.write_journey(new, old, Some(new_rev)).await?;
        store
            .unindex_claim(&req.campaign_id, old.shard, &req.owner, &req.contact)
            .await?;
        return Ok(Some(holder));
    }
    Ok(None)
}

/// The row as this claim writes it.
fn claimed_row(old: &DispatchRecord, req: &ClaimRequest) -> DispatchRecord {
    let mut new = old.clone();
    new.state = DispatchState::Claimed;
    new.attempts += 1;
    new.owner = Some(req.owner.clone());
    new.times.claimed = Some(req.now);
    new
}

pub(super) async fn claim(store: &ScyllaStore, req: &ClaimRequest) -> StoreResult<ClaimOutcome> {
    // Whether this call wrote the claim's index entry (written before the
    // row's conditional write, so a crash between the two leaves an
    // entry too many, never a claimed row the index does not know).
    let mut indexed = false;
    let unindex = |old: &DispatchRecord| {
        store.unindex_claim(&req.campaign_id, old.shard, &req.owner, &req.contact)
    };
    for _ in 0..CAS_ATTEMPTS {
        let Some((old, rev)) = store
            .read_dispatch(&req.campaign_id, &req.contact, false)
            .await?
        else {
            return Ok(ClaimOutcome::NotClaimable { state: None });
        };
        if !old.claimable_by(req) {
            if indexed && !old.claimed_by(&req.owner) {
                unindex(&old).await?;
            }
            return Ok(ClaimOutcome::NotClaimable {
                state: Some(old.state),
            });
        }
        let engagement = match read_engagement(store, req).await? {
            Engagement::Elsewhere(campaign) => {
                if indexed {
                    unindex(&old).await?;
                }
                return Ok(ClaimOutcome::EngagedElsewhere { campaign });
            }
            engagement => engagement,
        };
        let new = claimed_row(&old, req);
        if !indexed {
            store.index_claim(&old, &req.owner, req.now).await?;
            indexed = true;
        }
        let Some(new_rev) = store.write_journey(&old, &new, rev).await? else {
            // Lost to another writer: look again (it may be claimed now).
            continue;
        };
        if let Engagement::Take(current) = engagement {
            if let Some(campaign) =
                hold_engagement(store, req, (&old, &new, new_rev), current).await?
            {
                return Ok(ClaimOutcome::EngagedElsewhere { campaign });
            }
        }
        store.remove_pending(&old).await?;
        return Ok(ClaimOutcome::Claimed {
            attempts: new.attempts,
        });
    }
    Err(StoreError::Unavailable(format!(
        "{}/{}: the claim lost {CAS_ATTEMPTS} conditional writes in a row to concurrent writers",
        req.campaign_id, req.contact
    )))
}

pub(super) async fn record_outcome(
    store: &ScyllaStore,
    campaign: &str,
    contact: &ContactKey,
    outcome: &Outcome,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let mut parked: Vec<StatusUpdate> = Vec::new();
    if let Outcome::Accepted { wamid, .. } = outcome {
        // Index first, so a status arriving from now on finds the row.
        store
            .exec(
                &store.st.put_wamid,
                (wamid, campaign, contact.row_str(), at),
                "indexing a wamid",
            )
            .await?;
        store
            .exec(
                &store.st.set_last_campaign,
                (campaign, contact.occurrence(), contact.as_str()),
                "recording the contact's last campaign",
            )
            .await?;
        store
            .exec(
                &store.st.put_reach,
                (
                    contact.as_str(),
                    campaign,
                    contact.occurrence().unwrap_or(""),
                    at,
                ),
                "indexing the journeys that reached a contact",
            )
            .await?;
        let rows: Vec<(Option<String>,)> = store
            .rows(&store.st.parked, (wamid,), "reading parked statuses")
            .await?;
        for (json,) in rows {
            if let Some(update) = json.and_then(|j| serde_json::from_str(&j).ok()) {
                parked.push(update);
            }
        }
    }
    let written = store
        .update_journey(campaign, contact, |current| {
            let mut new = current.clone();
            new.apply_outcome(outcome, at);
            for update in &parked {
                new.apply_status(update);
            }
            Some(new)
        })
        .await?;
    let Some(Ok((old, new))) = written else {
        return Err(StoreError::Corrupt {
            key: format!("{campaign}/{contact}"),
            message: "outcome for a contact that was never staged".into(),
        });
    };
    store.after_unclaim(&old, &new).await?;
    match outcome {
        Outcome::Accepted { wamid, .. } if !parked.is_empty() => {
            store
                .exec(&store.st.unpark, (wamid,), "clearing parked statuses")
                .await?;
        }
        _ if new.requeued_by(outcome) => store.add_pending(&new).await?,
        _ => {}
    }
    Ok(())
}

pub(super) async fn exclude(
    store: &ScyllaStore,
    campaign: &str,
    contact: &ContactKey,
    reason: &ExclusionReason,
    at: DateTime<Utc>,
) -> StoreResult<Option<String>> {
    let written = store
        .update_journey(campaign, contact, |current| {
            if !matches!(
                current.state,
                DispatchState::Pending | DispatchState::Deferred
            ) {
                return None;
            }
            let mut new = current.clone();
            new.apply_outcome(
                &Outcome::Excluded {
                    reason: reason.clone(),
                },
                at,
            );
            Some(new)
        })
        .await?;
    match written {
        Some(Ok((old, _))) => {
            store.remove_pending(&old).await?;
            Ok(Some(old.step))
        }
        _ => Ok(None),
    }
}

pub(super) async fn stop_journey(
    store: &ScyllaStore,
    campaign: &str,
    contact: &ContactKey,
    reason: &ExclusionReason,
    at: DateTime<Utc>,
) -> StoreResult<Option<JourneyStop>> {
    let mut stopped = None;
    let written = store
        .update_journey(campaign, contact, |current| {
            let mut new = current.clone();
            stopped = new.stop(reason, at);
            stopped.is_some().then_some(new)
        })
        .await?;
    match (written, stopped) {
        (Some(Ok((old, _))), Some(stop)) => {
            if stop.excluded {
                store.remove_pending(&old).await?;
            }
            Ok(Some(stop))
        }
        _ => Ok(None),
    }
}

pub(super) async fn record_conversion(
    store: &ScyllaStore,
    campaign: &str,
    contact: &ContactKey,
    conversion: &crate::domain::Conversion,
    stop: Option<&ExclusionReason>,
    at: DateTime<Utc>,
) -> StoreResult<Option<ConversionApplied>> {
    let mut applied = None;
    let written = store
        .update_journey(campaign, contact, |current| {
            let mut new = current.clone();
            let outcome = new.convert(conversion, stop, at);
            let changed = matches!(outcome, ConversionApplied::Recorded(_));
            applied = Some(outcome);
            changed.then_some(new)
        })
        .await?;
    match (written, applied) {
        (Some(Ok((old, _))), Some(ConversionApplied::Recorded(converted))) => {
            if converted.stopped.as_ref().is_some_and(|s| s.excluded) {
                store.remove_pending(&old).await?;
            }
            Ok(Some(ConversionApplied::Recorded(converted)))
        }
        (Some(Err(_)), applied) => Ok(applied),
        _ => Ok(None),
    }
}

pub(super) async fn reached(
    store: &ScyllaStore,
    contact: &ContactKey,
) -> StoreResult<Vec<crate::domain::Reach>> {
    let rows: Vec<(String, Option<String>, Option<DateTime<Utc>>)> = store
        .rows(
            &store.st.get_reach,
            (contact.as_str(),),
            "reading the journeys that reached a contact",
        )
        .await?;
    let oldest = Utc::now() - chrono::Duration::seconds(crate::domain::MAX_GOAL_WINDOW_SECS as i64);
    Ok(rows
        .into_iter()
        .filter_map(|(campaign_id, occurrence, at)| {
            let at = at.filter(|at| *at >= oldest)?;
            Some(crate::domain::Reach {
                campaign_id,
                occurrence: occurrence.filter(|o| !o.is_empty()),
                at,
            })
        })
        .collect())
}

pub(super) async fn requeue(
    store: &ScyllaStore,
    campaign: &str,
    contact: &ContactKey,
    from: &Requeue,
) -> StoreResult<bool> {
    let written = store
        .update_journey(campaign, contact, |current| {
            let mut new = current.clone();
            new.requeue(from).then_some(new)
        })
        .await?;
    match written {
        Some(Ok((_, new))) => {
            store.add_pending(&new).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}
