//! The messaging limit Meta stated for the business portfolio, in memory
//! for the portfolio check and in the store (`learned` facts, kind `limit`)
//! for restarts and the other instances (docs/ARCHITECTURE.md, "Portfolio
//! limit"). The webhook receiver learns it; every instance reads it again
//! every few seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::domain::{LearnedLimit, MessagingLimit};
use crate::store::{Store, StoreResult};
use crate::sync::RwLockExt;

/// The store's `learned` kind and key of the portfolio's limit.
pub const KIND: &str = "limit";
pub const KEY: &str = "portfolio";

#[derive(Default)]
pub struct LimitBook {
    learned: RwLock<Option<LearnedLimit>>,
    /// Bumped whenever `learned` changes.
    generation: AtomicU64,
    /// Serialises this process's read-modify-writes.
    learning: tokio::sync::Mutex<()>,
}

impl LimitBook {
    /// What Meta last said, if it said anything.
    pub fn learned(&self) -> Option<LearnedLimit> {
        self.learned.read_or_recover().clone()
    }

    /// The limit Meta stated, if any: read on every claim, so no clone of
    /// the record.
    pub fn limit(&self) -> Option<MessagingLimit> {
        self.learned.read_or_recover().as_ref().map(|l| l.limit)
    }

    /// Changes whenever what Meta said changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn set(&self, value: Option<LearnedLimit>) {
        let mut learned = self.learned.write_or_recover();
        if *learned != value {
            *learned = value;
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Learns `limit` from the webhook field `source` sent at `at`: the
    /// store first, then memory. False when it is older than what is known
    /// or says the same.
    pub async fn learn(
        &self,
        store: &dyn Store,
        limit: MessagingLimit,
        source: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let _one_at_a_time = self.learning.lock().await;
        self.refresh(store).await?;
        if let Some(known) = self.learned() {
            if at < known.at || known.limit == limit {
                return Ok(false);
            }
        }
        let next = LearnedLimit {
            limit,
            source: source.to_string(),
            at,
        };
        let json = serde_json::to_string(&next).unwrap_or_default();
        store.set_learned(KIND, KEY, Some(&json)).await?;
        self.set(Some(next));
        Ok(true)
    }

    /// Reads what the store holds (another instance may have learned it).
    pub async fn refresh(&self, store: &dyn Store) -> StoreResult<()> {
        let stored = store
            .learned(KIND)
            .await?
            .into_iter()
            .find(|(k, _)| k == KEY)
            .and_then(|(_, json)| match serde_json::from_str::<LearnedLimit>(&json) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "the stored messaging limit does not parse; ignored");
                    None
                }
            });
        self.set(stored);
        Ok(())
    }

    /// Reads the book again every `every`, for as long as the task runs,
    /// then calls `changed` (the portfolio publishes its gauge).
    pub async fn run_refresh(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        every: std::time::Duration,
        changed: impl Fn() + Send + 'static,
    ) {
        loop {
            tokio::time::sleep(every).await;
            {
                // Never between a learn's store write and its memory update.
                let _one_at_a_time = self.learning.lock().await;
                if let Err(e) = self.refresh(store.as_ref()).await {
                    tracing::warn!(error = %e, "cannot read the messaging limit from the store; trying again");
                }
            }
            changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::{Durability, EmbeddedStore};

    #[tokio::test]
    async fn the_latest_limit_is_kept_and_read_by_another_instance() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path(), Durability::Process, 8).unwrap());
        let book = LimitBook::default();
        let t = |s: i64| DateTime::<Utc>::from_timestamp(1_790_000_000 + s, 0).unwrap();
        let src = "business_capability_update";
        assert!(book
            .learn(store.as_ref(), MessagingLimit::Users(2_000), src, t(10))
            .await
            .unwrap());
        assert!(
            !book
                .learn(store.as_ref(), MessagingLimit::Users(250), src, t(5))
                .await
                .unwrap(),
            "older: ignored"
        );
        assert!(
            !book
                .learn(store.as_ref(), MessagingLimit::Users(2_000), src, t(20))
                .await
                .unwrap(),
            "the same"
        );
        let other = LimitBook::default();
        other.refresh(store.as_ref()).await.unwrap();
        assert_eq!(other.learned().unwrap().limit, MessagingLimit::Users(2_000));
        assert!(book
            .learn(store.as_ref(), MessagingLimit::Unlimited, src, t(30))
            .await
            .unwrap());
        other.refresh(store.as_ref()).await.unwrap();
        assert_eq!(other.learned().unwrap().limit, MessagingLimit::Unlimited);
    }
}
