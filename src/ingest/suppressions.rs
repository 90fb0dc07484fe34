//! `wa.suppressions` (compacted): contacts not to message, with a reason and
//! an optional end. Key: contact id. Value `{"reason": "open_case", "until":
//! "2026-12-01T00:00:00Z"}` (`until` optional), or a tombstone to lift it.
//! Checked at claim time; a suppressed contact is excluded as
//! `suppressed:<reason>`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::ContactKey;
use crate::sync::RwLockExt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    pub reason: String,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Value {
    reason: Option<String>,
    until: Option<String>,
}

/// The current suppressions, keyed like staged contacts.
#[derive(Clone, Default)]
pub struct SuppressionList {
    entries: Arc<RwLock<HashMap<String, Suppression>>>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    /// `dispatch.default_region`: national-format keys are read in it, as
    /// audience phones are, so that they match the staged contact.
    region: Option<Arc<str>>,
}

impl SuppressionList {
    /// A list whose keys are normalised with `default_region`.
    pub fn with_region(default_region: Option<&str>) -> Self {
        SuppressionList {
            region: default_region.map(Arc::from),
            ..Default::default()
        }
    }

    /// The topic was read to the end it had at start.
    pub fn set_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Applies one record of the topic.
    pub fn apply(&self, key: &[u8], value: Option<&[u8]>) {
        let raw = String::from_utf8_lossy(key);
        let contact = ContactKey::parse_id(raw.trim(), self.region.as_deref())
            .unwrap_or_else(|_| ContactKey::raw(raw.trim()));
        let mut entries = self.entries.write_or_recover();
        let Some(value) = value else {
            entries.remove(contact.as_str());
            return;
        };
        match serde_json::from_slice::<Value>(value) {
            Ok(v) => {
                let until = match v.until.as_deref().map(DateTime::parse_from_rfc3339) {
                    Some(Ok(t)) => Some(t.with_timezone(&Utc)),
                    Some(Err(e)) => {
                        tracing::error!(contact = %contact, error = %e, "suppression ignored: `until` is not an RFC 3339 time");
                        return;
                    }
                    None => None,
                };
                let reason = v
                    .reason
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| "unspecified".into());
                entries.insert(contact.as_str().to_string(), Suppression { reason, until });
            }
            Err(e) => {
                tracing::error!(contact = %contact, error = %e, "suppression ignored: value is not {{\"reason\", \"until\"}} JSON")
            }
        }
    }

    /// The reason a contact is suppressed now, if it is.
    pub fn reason(&self, contact: &ContactKey, now: DateTime<Utc>) -> Option<String> {
        let entries = self.entries.read_or_recover();
        entries
            .get(contact.as_str())
            .filter(|s| s.until.is_none_or(|u| u > now))
            .map(|s| s.reason.clone())
    }

    pub fn len(&self) -> usize {
        self.entries.read_or_recover().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn suppressions_apply_expire_and_lift() {
        let list = SuppressionList::default();
        list.apply(
            b"+52 55 1234 5678",
            Some(br#"{"reason":"open_case","until":"2026-12-01T00:00:00Z"}"#),
        );
        list.apply(b"+525587654321", Some(br#"{"reason":"legal_hold"}"#));
        let a = ContactKey::parse_id("+525512345678", None).unwrap();
        let b = ContactKey::parse_id("+525587654321", None).unwrap();
        assert_eq!(
            list.reason(&a, at("2026-11-22T00:00:00Z")).as_deref(),
            Some("open_case"),
            "keys are normalised like contacts"
        );
        assert_eq!(list.reason(&a, at("2026-12-02T00:00:00Z")), None, "expired");
        assert_eq!(
            list.reason(&b, at("2030-01-01T00:00:00Z")).as_deref(),
            Some("legal_hold")
        );
        list.apply(b"+525587654321", None);
        assert_eq!(
            list.reason(&b, at("2026-11-22T00:00:00Z")),
            None,
            "a tombstone lifts it"
        );
        list.apply(b"+525500000000", Some(b"not json"));
        list.apply(
            b"+525500000001",
            Some(br#"{"reason":"x","until":"tomorrow"}"#),
        );
        assert_eq!(list.len(), 1, "bad values are ignored, not applied");
    }

    #[test]
    fn national_keys_are_read_in_the_default_region() {
        let list = SuppressionList::with_region(Some("MX"));
        list.apply(b"55 1234 5678", Some(br#"{"reason":"open_case"}"#));
        let staged = ContactKey::parse_id("5512345678", Some("MX")).unwrap();
        assert_eq!(staged.as_str(), "+525512345678");
        assert_eq!(
            list.reason(&staged, at("2026-11-22T00:00:00Z")).as_deref(),
            Some("open_case")
        );
    }
}
