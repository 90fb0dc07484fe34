//! A contact's cross-campaign cells: engagement, opt-outs, deliverability.

use super::*;

#[derive(Debug, Default, DeserializeRow)]
pub(super) struct ContactRow {
    pub(super) engaged_campaign: Option<String>,
    pub(super) opted_out: Option<bool>,
    pub(super) opted_out_at: Option<DateTime<Utc>>,
    pub(super) last_campaign: Option<String>,
    pub(super) undeliverable_at: Option<DateTime<Utc>>,
    pub(super) marketing_opted_out: Option<bool>,
    pub(super) marketing_opt_changed_at: Option<DateTime<Utc>>,
    pub(super) last_occurrence: Option<String>,
    pub(super) linked: Option<String>,
}

impl From<ContactRow> for ContactRecord {
    fn from(r: ContactRow) -> Self {
        ContactRecord {
            engaged_campaign: r.engaged_campaign,
            opted_out: r.opted_out.unwrap_or(false),
            opted_out_at: r.opted_out_at.filter(|_| r.opted_out == Some(true)),
            last_campaign: r.last_campaign,
            last_occurrence: r.last_occurrence,
            undeliverable_at: r.undeliverable_at,
            opt_changed_at: r.opted_out_at,
            marketing_opted_out: r.marketing_opted_out.unwrap_or(false),
            marketing_opt_changed_at: r.marketing_opt_changed_at,
            linked: r.linked.map(ContactKey::from_row),
        }
    }
}

pub(super) async fn get_contact(
    store: &ScyllaStore,
    contact: &ContactKey,
) -> StoreResult<Option<ContactRecord>> {
    Ok(store
        .get_contact_row(contact)
        .await?
        .map(ContactRecord::from))
}

pub(super) async fn set_opt_out(
    store: &ScyllaStore,
    contact: &ContactKey,
    scope: OptOutScope,
    opted_out: bool,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    // `opted_out_at` (`marketing_opt_changed_at`) holds the event time
    // of the scope's latest change (stop or resume): an older event
    // redelivered after a newer one is dropped. Opt changes of one person
    // are rare and seconds apart; the read and the write are not one
    // step, which only matters for two changes of the same contact within
    // the same moment.
    let row = store.get_contact_row(contact).await?;
    let (last, statement) = match scope {
        OptOutScope::All => (row.and_then(|c| c.opted_out_at), &store.st.set_opt_out),
        OptOutScope::Marketing => (
            row.and_then(|c| c.marketing_opt_changed_at),
            &store.st.set_marketing_opt_out,
        ),
    };
    if last.is_some_and(|last| last > at) {
        return Ok(());
    }
    store
        .exec(
            statement,
            (opted_out, Some(at), contact.as_str()),
            "recording an opt-out",
        )
        .await
        .map(drop)
}

pub(super) async fn mark_undeliverable(
    store: &ScyllaStore,
    contact: &ContactKey,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    store
        .exec(
            &store.st.set_undeliverable,
            (at, contact.as_str()),
            "marking a contact undeliverable",
        )
        .await
        .map(drop)
}

pub(super) async fn link_contact(
    store: &ScyllaStore,
    contact: &ContactKey,
    other: &ContactKey,
) -> StoreResult<()> {
    store
        .exec(
            &store.st.set_linked,
            (other.as_str(), contact.as_str()),
            "linking a contact's identities",
        )
        .await
        .map(drop)
}
