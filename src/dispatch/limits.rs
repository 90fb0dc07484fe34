//! The messaging limit Meta stated for the business portfolio, and the
//! numbers whose throughput Meta upgraded, in memory for dispatch and in
//! the store (`learned` facts, kinds `limit` and `throughput`) for restarts
//! and the other instances (docs/ARCHITECTURE.md, "Portfolio limit",
//! "Throughput"). The webhook receiver learns them; every instance reads
//! them again every few seconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::domain::{LearnedLimit, MessagingLimit};
use crate::store::{Store, StoreResult};
use crate::sync::RwLockExt;

/// The store's `learned` kind and key of the portfolio's limit.
pub const KIND: &str = "limit";
pub const KEY: &str = "portfolio";
/// The store's `learned` kind of the numbers' throughput, keyed by display
/// phone number (digits only).
pub const THROUGHPUT_KIND: &str = "throughput";
/// The store's `learned` kind of the numbers' quality events.
pub const QUALITY_KIND: &str = "quality";

/// What Meta said of a number's throughput
/// (`phone_number_quality_update`, event `THROUGHPUT_UPGRADE`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LearnedThroughput {
    pub event: String,
    /// The webhook entry's `time`.
    pub at: DateTime<Utc>,
}

impl LearnedThroughput {
    /// Meta raised the number to its higher throughput (1,000 messages
    /// per second).
    pub fn upgraded(&self) -> bool {
        self.event == "THROUGHPUT_UPGRADE"
    }
}

/// A display phone number as the book keys it: its digits.
pub fn number_key(display: &str) -> String {
    display.chars().filter(char::is_ascii_digit).collect()
}

#[derive(Default)]
pub struct LimitBook {
    learned: RwLock<Option<LearnedLimit>>,
    /// Bumped whenever `learned` changes.
    generation: AtomicU64,
    throughput: RwLock<HashMap<String, LearnedThroughput>>,
    /// What Meta said of each number's quality (`FLAGGED`, `UNFLAGGED`,
    /// `DOWNGRADE`, `UPGRADE`), by the number's digits; kind `quality`.
    quality: RwLock<HashMap<String, LearnedThroughput>>,
    /// Bumped whenever `throughput` or `quality` changes.
    throughput_generation: AtomicU64,
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

    /// Whether Meta upgraded the throughput of the number shown as
    /// `display`.
    pub fn upgraded(&self, display: &str) -> bool {
        self.throughput
            .read_or_recover()
            .get(&number_key(display))
            .is_some_and(LearnedThroughput::upgraded)
    }

    /// What Meta said of each number's throughput, by display number.
    pub fn throughputs(&self) -> HashMap<String, LearnedThroughput> {
        self.throughput.read_or_recover().clone()
    }

    /// Meta's latest quality event of the number shown as `display`
    /// (`FLAGGED`, `DOWNGRADE`: flagged; `UNFLAGGED`, `UPGRADE`: lifted).
    pub fn quality(&self, display: &str) -> Option<LearnedThroughput> {
        self.quality
            .read_or_recover()
            .get(&number_key(display))
            .cloned()
    }

    fn set_quality(&self, value: HashMap<String, LearnedThroughput>) {
        let mut known = self.quality.write_or_recover();
        if *known != value {
            *known = value;
            self.throughput_generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Learns a quality `event` of the number shown as `display`, sent at
    /// `at`: the store first, then memory. False when older or the same.
    pub async fn learn_quality(
        &self,
        store: &dyn Store,
        display: &str,
        event: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let key = number_key(display);
        if key.is_empty() {
            return Ok(false);
        }
        let _one_at_a_time = self.learning.lock().await;
        self.refresh(store).await?;
        if let Some(known) = self.quality.read_or_recover().get(&key) {
            if at < known.at || known.event == event {
                return Ok(false);
            }
        }
        let next = LearnedThroughput {
            event: event.to_string(),
            at,
        };
        let json = serde_json::to_string(&next).unwrap_or_default();
        store.set_learned(QUALITY_KIND, &key, Some(&json)).await?;
        let mut all = self.quality.read_or_recover().clone();
        all.insert(key, next);
        self.set_quality(all);
        Ok(true)
    }

    /// Changes whenever what Meta said of a number's throughput or quality
    /// changes.
    pub fn throughput_generation(&self) -> u64 {
        self.throughput_generation.load(Ordering::Acquire)
    }

    fn set_throughputs(&self, value: HashMap<String, LearnedThroughput>) {
        let mut known = self.throughput.write_or_recover();
        if *known != value {
            *known = value;
            self.throughput_generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Learns a throughput `event` of the number shown as `display`, sent at
    /// `at`: the store first, then memory. False when it is older than what
    /// is known or says the same.
    pub async fn learn_throughput(
        &self,
        store: &dyn Store,
        display: &str,
        event: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let key = number_key(display);
        if key.is_empty() {
            return Ok(false);
        }
        let _one_at_a_time = self.learning.lock().await;
        self.refresh(store).await?;
        if let Some(known) = self.throughput.read_or_recover().get(&key) {
            if at < known.at || known.event == event {
                return Ok(false);
            }
        }
        let next = LearnedThroughput {
            event: event.to_string(),
            at,
        };
        let json = serde_json::to_string(&next).unwrap_or_default();
        store
            .set_learned(THROUGHPUT_KIND, &key, Some(&json))
            .await?;
        let mut all = self.throughputs();
        all.insert(key, next);
        self.set_throughputs(all);
        Ok(true)
    }

    /// Reads what the store holds (another instance may have learned it).
    pub async fn refresh(&self, store: &dyn Store) -> StoreResult<()> {
        let numbers = store
            .learned(THROUGHPUT_KIND)
            .await?
            .into_iter()
            .filter_map(|(key, json)| match serde_json::from_str(&json) {
                Ok(t) => Some((key, t)),
                Err(e) => {
                    tracing::warn!(number = %key, error = %e, "a stored throughput does not parse; ignored");
                    None
                }
            })
            .collect();
        self.set_throughputs(numbers);
        let quality = store
            .learned(QUALITY_KIND)
            .await?
            .into_iter()
            .filter_map(|(key, json)| serde_json::from_str(&json).ok().map(|q| (key, q)))
            .collect();
        self.set_quality(quality);
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

#[cfg(test)]
mod throughput_tests {
    use super::*;
    use crate::store::embedded::{Durability, EmbeddedStore};

    #[tokio::test]
    async fn an_upgrade_is_kept_per_number_and_read_by_another_instance() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path(), Durability::Process, 8).unwrap());
        let book = LimitBook::default();
        let t = |s: i64| DateTime::<Utc>::from_timestamp(1_790_000_000 + s, 0).unwrap();
        let before = book.throughput_generation();
        assert!(book
            .learn_throughput(
                store.as_ref(),
                "+1 555-078-3881",
                "THROUGHPUT_UPGRADE",
                t(10)
            )
            .await
            .unwrap());
        assert!(book.upgraded("15550783881"), "keyed by digits");
        assert!(!book.upgraded("15550000000"), "another number");
        assert_ne!(book.throughput_generation(), before);
        assert!(
            !book
                .learn_throughput(store.as_ref(), "15550783881", "ONBOARDING", t(5))
                .await
                .unwrap(),
            "older: ignored"
        );
        let other = LimitBook::default();
        other.refresh(store.as_ref()).await.unwrap();
        assert!(other.upgraded("15550783881"));
        assert_eq!(other.limit(), None, "the portfolio limit is apart");
    }
}
