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

pub(super) async fn set_marker(store: &ScyllaStore, name: &str) -> StoreResult<()> {
    store
        .exec(&store.st.put_marker, (name, Utc::now()), "writing a marker")
        .await
        .map(drop)
}
