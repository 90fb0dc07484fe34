//! Business-scoped user ids: who a webhook is about when Meta names a user
//! by user id only, and the links that make a phone and a user id one
//! contact (docs/ARCHITECTURE.md, "Business-scoped user ids").
//!
//! A link is stored on both contact records (`linked`). Opt-outs written
//! through the webhook reach both identities, and a link copies what
//! either side opted out of to the other; claims read both records.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use super::payload::ChangeValue;
use super::*;
use crate::domain::is_bsuid;
use crate::store::ContactRecord;
use crate::sync::MutexExt;

/// Links known to be stored, so that the pair Meta puts on every status
/// costs two reads once per contact and process, not once per status.
#[derive(Default)]
pub(super) struct LinkCache {
    seen: Mutex<HashSet<u64>>,
}

/// Past this many remembered links the cache starts again (8 MiB or so).
const LINK_CACHE_MAX: usize = 1 << 19;

impl LinkCache {
    fn fingerprint(a: &ContactKey, b: &ContactKey) -> u64 {
        let (first, second) = if a.as_str() <= b.as_str() {
            (a, b)
        } else {
            (b, a)
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        first.as_str().hash(&mut h);
        second.as_str().hash(&mut h);
        h.finish()
    }

    fn contains(&self, a: &ContactKey, b: &ContactKey) -> bool {
        self.seen
            .lock_or_recover()
            .contains(&Self::fingerprint(a, b))
    }

    fn insert(&self, a: &ContactKey, b: &ContactKey) {
        let mut seen = self.seen.lock_or_recover();
        if seen.len() >= LINK_CACHE_MAX {
            seen.clear();
        }
        seen.insert(Self::fingerprint(a, b));
    }
}

/// A user id as a contact key, when it has the shape of one.
pub fn contact_from_user_id(user_id: &str) -> Option<ContactKey> {
    let id = user_id.trim();
    is_bsuid(id).then(|| ContactKey::raw(id))
}

/// The contact a webhook item names: its phone (`wa_id`, `from`), else its
/// user id; `Ok(None)` when it names neither, `Err` (the value and why) for
/// a user id of the wrong shape.
pub(super) fn named_contact(
    phone: Option<&str>,
    user_id: Option<&str>,
) -> Result<Option<ContactKey>, String> {
    match (present(phone), present(user_id)) {
        (Some(phone), _) => Ok(Some(contact_from_wa_id(phone))),
        (None, Some(user_id)) => contact_from_user_id(user_id)
            .map(Some)
            .ok_or_else(|| format!("{user_id:?} is not a user id")),
        (None, None) => Ok(None),
    }
}

/// What a change says of a person's identities.
#[derive(Debug, PartialEq)]
pub(super) enum Link {
    /// The same person: a phone and a user id.
    Same(ContactKey, ContactKey),
    /// The user's id changed (`user_changed_user_id`, `user_id_update`);
    /// the phone is named when the change carries it.
    Changed {
        previous: ContactKey,
        current: ContactKey,
        phone: Option<ContactKey>,
    },
}

/// Every link a change shows: `contacts[]` entries, statuses and messages
/// that carry both a phone and a user id, and user id changes.
pub(super) fn links(v: &ChangeValue) -> Vec<Link> {
    let phone = |w: Option<&str>| present(w).map(contact_from_wa_id);
    let user = |u: Option<&str>| present(u).and_then(contact_from_user_id);
    let mut out = Vec::new();
    let mut same = |p: Option<ContactKey>, u: Option<ContactKey>| {
        if let (Some(p), Some(u)) = (p, u) {
            let link = Link::Same(p, u);
            if !out.contains(&link) {
                out.push(link);
            }
        }
    };
    for c in v.contacts.iter().filter_map(ok) {
        same(phone(c.wa_id.as_deref()), user(c.user_id.as_deref()));
    }
    for s in v.statuses.iter().filter_map(ok) {
        same(
            phone(s.recipient_id.as_deref()),
            user(s.recipient_user_id.as_deref()),
        );
    }
    for m in v.messages.iter().filter_map(ok) {
        same(phone(m.from.as_deref()), user(m.from_user_id.as_deref()));
    }
    let mut changes = Vec::new();
    for m in v.messages.iter().filter_map(ok) {
        let Some(sys) = &m.system else { continue };
        if sys.kind.as_deref() != Some("user_changed_user_id") {
            continue;
        }
        if let (Some(previous), Some(current)) = (
            user(sys.previous_user_id.as_deref()),
            user(sys.user_id.as_deref()),
        ) {
            changes.push(Link::Changed {
                previous,
                current,
                phone: phone(sys.wa_id.as_deref().or(m.from.as_deref())),
            });
        }
    }
    for u in v.user_id_update.iter().filter_map(ok) {
        let Some(ids) = &u.user_id else { continue };
        if let (Some(previous), Some(current)) =
            (user(ids.previous.as_deref()), user(ids.current.as_deref()))
        {
            changes.push(Link::Changed {
                previous,
                current,
                phone: phone(u.wa_id.as_deref()),
            });
        }
    }
    out.extend(changes);
    out
}

fn ok<T>(item: &Lenient<T>) -> Option<&T> {
    match item {
        Lenient::Ok(t) => Some(t),
        Lenient::Bad(_) => None,
    }
}

impl WebhookProcessor {
    /// Stores what a link says (both records, and the opt-outs of each
    /// copied to the other).
    pub(super) async fn link(&self, link: &Link) -> Result<(), StoreError> {
        match link {
            Link::Same(a, b) => self.link_pair(a, b).await,
            Link::Changed {
                previous,
                current,
                phone,
            } => {
                // The phone the old id was linked to, unless the change
                // names it.
                let phone = match phone {
                    Some(p) => Some(p.clone()),
                    None => self
                        .store
                        .get_contact(previous)
                        .await?
                        .and_then(|r| r.linked)
                        .filter(|l| l.is_phone()),
                };
                // The new id takes the old one's opt-outs; the old id
                // points at the new one, and so does the phone.
                self.link_pair(current, previous).await?;
                if let Some(phone) = phone {
                    self.link_pair(current, &phone).await?;
                }
                metrics::webhook_status("user_id_changed");
                Ok(())
            }
        }
    }

    async fn link_pair(&self, a: &ContactKey, b: &ContactKey) -> Result<(), StoreError> {
        if a.as_str() == b.as_str() || self.links.contains(a, b) {
            return Ok(());
        }
        let ra = self.store.get_contact(a).await?.unwrap_or_default();
        let rb = self.store.get_contact(b).await?.unwrap_or_default();
        if ra.linked.as_ref().map(ContactKey::as_str) != Some(b.as_str()) {
            self.store.link_contact(a, b).await?;
            metrics::webhook_status("identity_linked");
        }
        if rb.linked.as_ref().map(ContactKey::as_str) != Some(a.as_str()) {
            self.store.link_contact(b, a).await?;
        }
        self.copy_opt_outs(&ra, b, &rb).await?;
        self.copy_opt_outs(&rb, a, &ra).await?;
        self.links.insert(a, b);
        Ok(())
    }

    /// Applies to `to` (whose record is `current`) each opt-out or opt-in
    /// of `from` that is newer than what `to` holds.
    async fn copy_opt_outs(
        &self,
        from: &ContactRecord,
        to: &ContactKey,
        current: &ContactRecord,
    ) -> Result<(), StoreError> {
        let all_at = |r: &ContactRecord| r.opt_changed_at.or(r.opted_out_at);
        if let Some(at) = all_at(from) {
            if all_at(current).is_none_or(|c| c < at) && from.opted_out != current.opted_out {
                self.store
                    .set_opt_out(to, OptOutScope::All, from.opted_out, at)
                    .await?;
            }
        }
        if let Some(at) = from.marketing_opt_changed_at {
            if current.marketing_opt_changed_at.is_none_or(|c| c < at)
                && from.marketing_opted_out != current.marketing_opted_out
            {
                self.store
                    .set_opt_out(to, OptOutScope::Marketing, from.marketing_opted_out, at)
                    .await?;
            }
        }
        Ok(())
    }

    /// An opt-out (or opt-in) of the person: the contact and the identity
    /// linked to it.
    pub(super) async fn set_person_opt_out(
        &self,
        contact: &ContactKey,
        scope: OptOutScope,
        opted_out: bool,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        let contact = contact.recipient();
        self.store
            .set_opt_out(&contact, scope, opted_out, at)
            .await?;
        if let Some(other) = self
            .store
            .get_contact(&contact)
            .await?
            .and_then(|r| r.linked)
        {
            self.store.set_opt_out(&other, scope, opted_out, at).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: serde_json::Value) -> ChangeValue {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn links_come_from_contacts_statuses_messages_and_id_changes() {
        let v = value(serde_json::json!({
            "contacts": [
                {"profile": {"name": "A", "username": "a.user"}, "wa_id": "525520000001", "user_id": "US.1001"},
                {"profile": {"name": "B"}, "user_id": "US.1002"}
            ],
            "statuses": [{"id": "w1", "status": "delivered", "recipient_id": "525520000001", "recipient_user_id": "US.1001"}],
            "messages": [
                {"from_user_id": "US.1003", "id": "m1", "type": "text", "text": {"body": "hi"}},
                {"from": "525520000002", "id": "m2", "type": "system",
                 "system": {"type": "user_changed_user_id", "previous_user_id": "US.2001", "user_id": "US.2002"}}
            ],
            "user_id_update": [{"wa_id": "525520000003", "user_id": {"previous": "US.3001", "current": "US.3002"}}]
        }));
        let k = ContactKey::raw;
        assert_eq!(
            links(&v),
            vec![
                // The contact entry and the status say the same: once.
                Link::Same(k("+525520000001"), k("US.1001")),
                Link::Changed {
                    previous: k("US.2001"),
                    current: k("US.2002"),
                    phone: Some(k("+525520000002")),
                },
                Link::Changed {
                    previous: k("US.3001"),
                    current: k("US.3002"),
                    phone: Some(k("+525520000003")),
                },
            ]
        );
    }

    #[test]
    fn a_user_id_is_told_from_a_phone() {
        assert_eq!(
            contact_from_user_id(" US.13491208655302741918 "),
            Some(ContactKey::raw("US.13491208655302741918"))
        );
        assert_eq!(contact_from_user_id("16505551234"), None);
        assert_eq!(contact_from_user_id(""), None);
    }
}
