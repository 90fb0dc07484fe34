//! Campaign definitions, their observed state, halts and shards.

use super::*;

#[derive(Debug, DeserializeRow)]
pub(super) struct CampaignRow {
    id: String,
    spec: Option<String>,
    observed_state: Option<String>,
    updated_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
}

impl CampaignRow {
    pub(super) fn into_record(self) -> StoreResult<Option<CampaignRecord>> {
        let Some(spec) = self.spec else {
            return Ok(None);
        };
        let corrupt = |message: String| StoreError::Corrupt {
            key: format!("campaigns/{}", self.id),
            message,
        };
        let spec = serde_json::from_str(&spec)
            .map_err(|e| corrupt(format!("spec is not valid JSON: {e}")))?;
        let observed_state = match &self.observed_state {
            Some(s) => s
                .parse::<ObservedState>()
                .map_err(|_| corrupt(format!("unknown observed state {s:?}")))?,
            None => ObservedState::Scheduled,
        };
        Ok(Some(CampaignRecord {
            spec,
            observed_state,
            updated_at: self.updated_at.unwrap_or_default(),
            started_at: self.started_at,
        }))
    }
}

pub(super) async fn put_campaign(store: &ScyllaStore, record: &CampaignRecord) -> StoreResult<()> {
    let spec = serde_json::to_string(&record.spec)
        .map_err(|e| StoreError::io("cannot encode campaign spec", e))?;
    store
        .exec(
            &store.st.put_campaign,
            (
                spec,
                record.observed_state.as_str(),
                record.updated_at,
                record.started_at,
                &record.spec.id,
            ),
            "writing a campaign",
        )
        .await
        .map(drop)
}

pub(super) async fn get_campaign(
    store: &ScyllaStore,
    id: &str,
) -> StoreResult<Option<CampaignRecord>> {
    let rows: Vec<CampaignRow> = store
        .page(&store.st.get_campaign, (id,), 1, "reading a campaign")
        .await?;
    match rows.into_iter().next() {
        Some(row) => row.into_record(),
        None => Ok(None),
    }
}

pub(super) async fn campaign_halt(
    store: &ScyllaStore,
    id: &str,
) -> StoreResult<Option<CampaignHalt>> {
    let rows: Vec<(Option<String>,)> = store
        .page(&store.st.get_halt, (id,), 1, "reading a campaign halt")
        .await?;
    match rows.into_iter().next().and_then(|(h,)| h) {
        Some(json) => serde_json::from_str(&json)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                key: format!("campaign_halts/{id}"),
                message: e.to_string(),
            }),
        None => Ok(None),
    }
}

pub(super) async fn set_campaign_halt(
    store: &ScyllaStore,
    id: &str,
    halt: Option<&CampaignHalt>,
) -> StoreResult<()> {
    match halt {
        Some(h) => {
            let json = serde_json::to_string(h).map_err(|e| StoreError::Corrupt {
                key: format!("campaign_halts/{id}"),
                message: e.to_string(),
            })?;
            store
                .exec(&store.st.put_halt, (id, json), "writing a campaign halt")
                .await?;
        }
        None => {
            store
                .exec(&store.st.delete_halt, (id,), "lifting a campaign halt")
                .await?;
        }
    }
    Ok(())
}

pub(super) async fn list_campaigns(store: &ScyllaStore) -> StoreResult<Vec<CampaignRecord>> {
    let rows: Vec<CampaignRow> = store
        .rows(&store.st.list_campaigns, (), "listing campaigns")
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(record) = row.into_record()? {
            out.push(record);
        }
    }
    Ok(out)
}

pub(super) async fn set_observed_state(
    store: &ScyllaStore,
    id: &str,
    state: ObservedState,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let Some(record) = store.get_campaign(id).await? else {
        return Ok(());
    };
    store
        .exec(
            &store.st.set_observed,
            (state.as_str(), at, id),
            "writing a campaign state",
        )
        .await?;
    if state == ObservedState::Active && record.started_at.is_none() {
        // Any instance's start time will do: it only records that the
        // campaign started (a tombstone can no longer delete it).
        store
            .exec(
                &store.st.set_started,
                (at, id),
                "marking a campaign started",
            )
            .await?;
    }
    Ok(())
}

pub(super) async fn delete_campaign(store: &ScyllaStore, id: &str) -> StoreResult<()> {
    // Only campaigns that never started are deleted, so their rows hold
    // staging cells only (plain writes) and plain deletes shadow them.
    let shards = store.campaign_shards(id).await?;
    futures::stream::iter(0..BUCKETS)
        .map(|b| store.exec(&store.st.delete_bucket, (id, b), "deleting dispatch rows"))
        .buffer_unordered(FAN_OUT)
        .try_collect::<Vec<_>>()
        .await?;
    for shard in shards {
        let shard = shard as i32;
        store
            .exec(
                &store.st.delete_pending,
                (id, shard),
                "deleting pending entries",
            )
            .await?;
        store
            .exec(&store.st.delete_cursor, (id, shard), "deleting a cursor")
            .await?;
    }
    store
        .exec(&store.st.delete_shards, (id,), "deleting shards")
        .await?;
    store
        .exec(&store.st.delete_halt, (id,), "deleting a campaign halt")
        .await?;
    store
        .exec(&store.st.delete_campaign, (id,), "deleting a campaign")
        .await
        .map(drop)
}

pub(super) async fn campaign_shards(store: &ScyllaStore, id: &str) -> StoreResult<Vec<u32>> {
    let rows: Vec<(i32,)> = store
        .rows(&store.st.campaign_shards, (id,), "listing shards")
        .await?;
    let mut shards: Vec<u32> = rows.into_iter().map(|(s,)| s.max(0) as u32).collect();
    shards.sort_unstable();
    Ok(shards)
}
