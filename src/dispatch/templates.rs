//! The template book: what Meta said of each template (status, quality,
//! 132015 / 132016 answers), in memory for the check before every claim and
//! in the store for restarts and the other instances (docs/ARCHITECTURE.md,
//! "Template health").
//!
//! Writers (the webhook receiver, a sender that met 132015) learn through
//! [`TemplateBook::learn`], which writes the store first; every instance
//! reads the store again every few seconds ([`TemplateBook::run_refresh`]).
//! Readers compare [`TemplateBook::generation`] with the one they cached, so
//! the check on the claim path is an atomic load while nothing changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{RedQualityPolicy, TemplateHealth, TemplateRef, TemplateSignal};
use crate::metrics;
use crate::store::{Store, StoreResult};
use crate::sync::RwLockExt;

/// The `kind` of the store's learned facts that holds template health.
pub const KIND: &str = "template";

/// How often an instance reads the book again from the store.
pub const REFRESH: Duration = Duration::from_secs(2);

pub struct TemplateBook {
    /// By [`TemplateRef::key`].
    known: RwLock<BTreeMap<String, TemplateHealth>>,
    policy: RwLock<RedQualityPolicy>,
    /// Bumped on every change of `known` or `policy`.
    generation: AtomicU64,
    /// Serialises this process's read-modify-writes of one template.
    learning: tokio::sync::Mutex<()>,
}

impl Default for TemplateBook {
    fn default() -> Self {
        TemplateBook::new(RedQualityPolicy::default())
    }
}

impl TemplateBook {
    pub fn new(policy: RedQualityPolicy) -> Self {
        TemplateBook {
            known: RwLock::new(BTreeMap::new()),
            policy: RwLock::new(policy),
            generation: AtomicU64::new(1),
            learning: tokio::sync::Mutex::new(()),
        }
    }

    /// Changes what a RED score does (a reload).
    pub fn set_policy(&self, policy: RedQualityPolicy) {
        let changed = {
            let mut p = self.policy.write_or_recover();
            let changed = *p != policy;
            *p = policy;
            changed
        };
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.publish_metrics();
        }
    }

    /// Changes whenever what the book answers may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Why the first held template of `templates` may not be sent, if one
    /// is held.
    pub fn first_hold(&self, templates: &[TemplateRef]) -> Option<String> {
        let policy = *self.policy.read_or_recover();
        let known = self.known.read_or_recover();
        templates
            .iter()
            .find_map(|t| known.get(&t.key())?.hold(policy))
    }

    /// Everything known, by template.
    pub fn all(&self) -> Vec<TemplateHealth> {
        self.known.read_or_recover().values().cloned().collect()
    }

    /// Learns `signal` of `template` at `at`: the store first (so a crash
    /// forgets nothing an answer relied on), then memory. Answers the new
    /// health when the signal changed anything.
    pub async fn learn(
        &self,
        store: &dyn Store,
        template: &TemplateRef,
        signal: &TemplateSignal,
        at: DateTime<Utc>,
    ) -> StoreResult<Option<TemplateHealth>> {
        let _one_at_a_time = self.learning.lock().await;
        // Another instance may have learned something newer.
        self.refresh(store).await?;
        let key = template.key();
        let prev = self.known.read_or_recover().get(&key).cloned();
        let Some(next) = TemplateHealth::after(prev.as_ref(), template, signal, at) else {
            return Ok(None);
        };
        let json = serde_json::to_string(&next).unwrap_or_default();
        store.set_learned(KIND, &key, Some(&json)).await?;
        self.known.write_or_recover().insert(key, next.clone());
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.publish_metrics();
        Ok(Some(next))
    }

    /// Forgets what is known of `template` (an operator's `clear-halt`
    /// after fixing it in WhatsApp Manager). Answers whether it was held.
    pub async fn forget(&self, store: &dyn Store, template: &TemplateRef) -> StoreResult<bool> {
        let _one_at_a_time = self.learning.lock().await;
        let key = template.key();
        let policy = *self.policy.read_or_recover();
        let held = self
            .known
            .read_or_recover()
            .get(&key)
            .is_some_and(|h| h.hold(policy).is_some());
        store.set_learned(KIND, &key, None).await?;
        if self.known.write_or_recover().remove(&key).is_some() {
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.publish_metrics();
        }
        Ok(held)
    }

    /// Reads the whole book from the store; a value that does not parse is
    /// skipped with a warning (it holds nothing).
    pub async fn refresh(&self, store: &dyn Store) -> StoreResult<()> {
        let mut read = BTreeMap::new();
        for (key, json) in store.learned(KIND).await? {
            match serde_json::from_str::<TemplateHealth>(&json) {
                Ok(h) => {
                    read.insert(key, h);
                }
                Err(e) => {
                    tracing::warn!(key = %key.replace('\u{1f}', " "), error = %e, "a stored template health does not parse; ignored");
                }
            }
        }
        let mut known = self.known.write_or_recover();
        if *known != read {
            *known = read;
            drop(known);
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.publish_metrics();
        }
        Ok(())
    }

    /// Reads the book again every [`REFRESH`], for as long as the task runs.
    pub async fn run_refresh(self: Arc<Self>, store: Arc<dyn Store>) {
        loop {
            tokio::time::sleep(REFRESH).await;
            // Never between a learn's store write and its memory update: the
            // older read would undo it for a round.
            let _one_at_a_time = self.learning.lock().await;
            if let Err(e) = self.refresh(store.as_ref()).await {
                tracing::warn!(error = %e, "cannot read template health from the store; trying again");
            }
        }
    }

    /// `wadispatch_templates_held`: how many templates are held now.
    fn publish_metrics(&self) {
        let policy = *self.policy.read_or_recover();
        let held = self
            .known
            .read_or_recover()
            .values()
            .filter(|h| h.hold(policy).is_some())
            .count();
        metrics::templates_held(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{Durability, EmbeddedStore};

    #[tokio::test]
    async fn a_held_template_holds_until_approved_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path(), Durability::Process, 8).unwrap());
        let book = TemplateBook::default();
        let promo = TemplateRef::new("promo", "es_MX");
        let other = TemplateRef::new("other", "es_MX");
        let g0 = book.generation();
        let paused = TemplateSignal::Status {
            event: "PAUSED".into(),
            reason: Some("FIRST_PAUSE".into()),
        };
        let now = Utc::now();
        assert!(book
            .learn(
                store.as_ref(),
                &TemplateRef::new("promo", "es-mx"),
                &paused,
                now
            )
            .await
            .unwrap()
            .is_some());
        assert!(book.generation() > g0);
        let hold = book.first_hold(&[other.clone(), promo.clone()]).unwrap();
        assert!(hold.contains("PAUSED"), "{hold}");
        assert_eq!(book.first_hold(std::slice::from_ref(&other)), None);

        // Another instance reads it from the store.
        let second = TemplateBook::default();
        second.refresh(store.as_ref()).await.unwrap();
        assert!(second.first_hold(std::slice::from_ref(&promo)).is_some());

        let approved = TemplateSignal::Status {
            event: "APPROVED".into(),
            reason: None,
        };
        book.learn(
            store.as_ref(),
            &promo,
            &approved,
            now + chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
        assert_eq!(book.first_hold(std::slice::from_ref(&promo)), None);
        let g = second.generation();
        second.refresh(store.as_ref()).await.unwrap();
        assert!(second.generation() > g);
        assert_eq!(second.first_hold(std::slice::from_ref(&promo)), None);
        // Nothing changed: the generation stays.
        let g = second.generation();
        second.refresh(store.as_ref()).await.unwrap();
        assert_eq!(second.generation(), g);
    }

    #[tokio::test]
    async fn red_quality_follows_the_policy_and_forget_lifts_a_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path(), Durability::Process, 8).unwrap());
        let book = TemplateBook::new(RedQualityPolicy::Warn);
        let promo = TemplateRef::new("promo", "es_MX");
        let red = TemplateSignal::Quality {
            score: "RED".into(),
        };
        book.learn(store.as_ref(), &promo, &red, Utc::now())
            .await
            .unwrap();
        assert_eq!(book.first_hold(std::slice::from_ref(&promo)), None);
        let g = book.generation();
        book.set_policy(RedQualityPolicy::Halt);
        assert!(book.generation() > g);
        assert!(book.first_hold(std::slice::from_ref(&promo)).is_some());
        assert!(book.forget(store.as_ref(), &promo).await.unwrap());
        assert_eq!(book.first_hold(std::slice::from_ref(&promo)), None);
        assert!(store.learned(KIND).await.unwrap().is_empty());
        assert!(!book.forget(store.as_ref(), &promo).await.unwrap());
    }
}
