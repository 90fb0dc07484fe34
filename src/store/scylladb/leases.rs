//! Instance leases (who is alive to own shards) and one-time markers.

use super::*;

pub(super) async fn renew_lease(store: &ScyllaStore, lease: &Lease) -> StoreResult<()> {
    store
        .exec(
            &store.st.put_lease,
            (0i32, &lease.owner, lease.until),
            "renewing the instance's lease",
        )
        .await
        .map(drop)
}

pub(super) async fn release_lease(store: &ScyllaStore, owner: &str) -> StoreResult<()> {
    store
        .exec(
            &store.st.drop_lease,
            (0i32, owner),
            "releasing the instance's lease",
        )
        .await
        .map(drop)
}

pub(super) async fn leases(store: &ScyllaStore) -> StoreResult<Vec<Lease>> {
    let rows: Vec<(String, Option<DateTime<Utc>>)> = store
        .rows(&store.st.list_leases, (0i32,), "reading instance leases")
        .await?;
    Ok(rows
        .into_iter()
        .map(|(owner, until)| Lease {
            owner,
            until: until.unwrap_or_default(),
        })
        .collect())
}

pub(super) async fn marker(store: &ScyllaStore, name: &str) -> StoreResult<bool> {
    let rows: Vec<(String,)> = store
        .page(&store.st.get_marker, (name,), 1, "reading a marker")
        .await?;
    Ok(!rows.is_empty())
}

pub(super) async fn learned(store: &ScyllaStore, kind: &str) -> StoreResult<Vec<(String, String)>> {
    let rows: Vec<(String, Option<String>)> = store
        .rows(&store.st.list_learned, (kind,), "reading what Meta told")
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect())
}

pub(super) async fn set_learned(
    store: &ScyllaStore,
    kind: &str,
    key: &str,
    value: Option<&str>,
) -> StoreResult<()> {
    match value {
        Some(v) => store
            .exec(
                &store.st.put_learned,
                (kind, key, v, Utc::now()),
                "recording what Meta told",
            )
            .await
            .map(drop),
        None => store
            .exec(
                &store.st.drop_learned,
                (kind, key),
                "forgetting what Meta told",
            )
            .await
            .map(drop),
    }
}

pub(super) async fn set_marker(store: &ScyllaStore, name: &str) -> StoreResult<()> {
    store
        .exec(&store.st.put_marker, (name, Utc::now()), "writing a marker")
        .await
        .map(drop)
}
