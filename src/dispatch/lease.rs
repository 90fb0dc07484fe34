//! Instance leases (docs/ARCHITECTURE.md, "Leases").
//!
//! Every running instance holds a lease in the store under a name unique to
//! the run (`instance id/run`) and renews it every third of its length. A
//! claimed row belongs to its owner while the owner's lease is ahead; once
//! the lease lapsed (a crash, a pod that never came back under that name) or
//! was released (a clean stop), the instance that owns the row's shard
//! settles it. An instance whose own lease is about to lapse (the store did
//! not take its renewals) claims nothing, so no other instance settles a
//! claim it is still sending.

use std::sync::RwLock;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{Lease, Store, StoreResult};
use crate::sync::RwLockExt;

/// Extra time past a lapsed lease before its claims are settled: covers
/// clock differences between instances and a renewal on its way.
pub const GRACE: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// True when the claims of `owner` may be settled at `now`: its lease is
/// absent from `leases` (released, or never written, as for rows claimed by
/// a version without leases), or lapsed more than [`GRACE`] ago.
pub fn lapsed(leases: &[Lease], owner: &str, now: DateTime<Utc>) -> bool {
    match leases.iter().find(|l| l.owner == owner) {
        None => true,
        Some(l) => l.until.checked_add_signed(GRACE).is_none_or(|t| t < now),
    }
}

/// A name for this run of the instance: claims and leases carry it, so a
/// restart on the same host, or a pod renamed by its Deployment, is told
/// apart from the run before it.
pub fn run_owner(instance_id: &str) -> String {
    format!("{instance_id}/{:08x}", rand::random::<u32>())
}

#[derive(Default)]
struct View {
    /// Our lease as last written.
    own_until: Option<DateTime<Utc>>,
    /// Every lease as last read (None until the first read).
    all: Option<Vec<Lease>>,
}

/// This instance's lease and the latest view of everyone's.
pub struct Leases {
    owner: String,
    ttl: chrono::TimeDelta,
    view: RwLock<View>,
}

impl Leases {
    pub fn new(owner: String, ttl: Duration) -> Self {
        Leases {
            owner,
            ttl: chrono::TimeDelta::from_std(ttl).unwrap_or(chrono::TimeDelta::seconds(15)),
            view: RwLock::default(),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// How often the lease is renewed.
    pub fn renew_every(&self) -> Duration {
        (self.ttl / 3).to_std().unwrap_or(Duration::from_secs(5))
    }

    /// True while our lease is ahead of `now` by more than a third of its
    /// length: claims stop before the lease can lapse.
    pub fn holds(&self, now: DateTime<Utc>) -> bool {
        let view = self.view.read_or_recover();
        view.own_until
            .is_some_and(|until| until - now > self.ttl / 3)
    }

    /// True when `owner`'s claims may be settled now (never ours, and never
    /// before the first read of the leases).
    pub fn lapsed(&self, owner: &str, now: DateTime<Utc>) -> bool {
        if owner == self.owner {
            return false;
        }
        let view = self.view.read_or_recover();
        view.all
            .as_deref()
            .is_some_and(|all| lapsed(all, owner, now))
    }

    /// Extends our lease, then reads everyone's.
    pub async fn renew(&self, store: &dyn Store, now: DateTime<Utc>) -> StoreResult<()> {
        let until = now + self.ttl;
        store
            .renew_lease(&Lease {
                owner: self.owner.clone(),
                until,
            })
            .await?;
        // Both at once: whoever sees the lease held also sees everyone's.
        let all = store.leases().await?;
        let mut view = self.view.write_or_recover();
        view.own_until = Some(until);
        view.all = Some(all);
        Ok(())
    }

    /// Renews the lease until the task is aborted.
    pub async fn run(self: std::sync::Arc<Self>, store: std::sync::Arc<dyn Store>) {
        let mut failing_since: Option<std::time::Instant> = None;
        loop {
            match self.renew(store.as_ref(), Utc::now()).await {
                Ok(()) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(owner = %self.owner, after_secs = since.elapsed().as_secs(), "instance lease renewed again");
                    }
                }
                Err(e) => {
                    failing_since.get_or_insert_with(std::time::Instant::now);
                    tracing::warn!(owner = %self.owner, error = %e, "cannot renew the instance lease; claims stop before it lapses and start again once the store takes it");
                }
            }
            tokio::time::sleep(self.renew_every()).await;
        }
    }

    /// Gives the lease up (a clean stop): the owners of our shards settle
    /// what we left claimed at once.
    pub async fn release(&self, store: &dyn Store) {
        self.view.write_or_recover().own_until = None;
        if let Err(e) = store.release_lease(&self.owner).await {
            tracing::warn!(owner = %self.owner, error = %e, "cannot release the instance lease; it lapses on its own");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_lease_lapses_after_its_grace_and_an_absent_one_at_once() {
        let leases = vec![Lease {
            owner: "a/1".into(),
            until: at(15),
        }];
        assert!(!lapsed(&leases, "a/1", at(10)));
        assert!(!lapsed(&leases, "a/1", at(20)), "within the grace");
        assert!(lapsed(&leases, "a/1", at(21)));
        assert!(lapsed(&leases, "b/2", at(0)), "no lease: settle");
    }

    #[test]
    fn claims_stop_a_third_before_the_lease_lapses() {
        let l = Leases::new("me/1".into(), Duration::from_secs(15));
        assert!(!l.holds(at(0)), "no lease written yet");
        l.view.write().unwrap().own_until = Some(at(15));
        assert!(l.holds(at(9)));
        assert!(!l.holds(at(10)));
    }

    #[test]
    fn nothing_lapses_before_the_first_read_and_never_our_own() {
        let l = Leases::new("me/1".into(), Duration::from_secs(15));
        assert!(!l.lapsed("other/2", at(0)));
        l.view.write().unwrap().all = Some(Vec::new());
        assert!(l.lapsed("other/2", at(0)));
        assert!(!l.lapsed("me/1", at(0)));
    }

    #[test]
    fn run_owners_differ_between_runs() {
        let a = run_owner("host");
        assert!(a.starts_with("host/"));
        assert_ne!(a, run_owner("host"));
    }
}
