//! A campaign's shared state: what the registry, the admin listener and
//! the sender tasks read of it (rate, holds, wait reason, retries).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::dispatch::policy::admission::CampaignFacts;
use crate::domain::{ContactKey, DesiredState};
use crate::ingest::catalog::CatalogEntry;
use crate::metrics;
use crate::sync::{MutexExt, RwLockExt};

use super::*;

impl CampaignState {
    pub fn new(
        entry: Arc<CatalogEntry>,
        rate_override: Option<f64>,
        paused: bool,
        templates: Arc<crate::dispatch::templates::TemplateBook>,
    ) -> Self {
        let rate = rate_override.unwrap_or_else(|| entry.spec.pacing.rate_per_second());
        CampaignState {
            id: entry.spec.id.clone(),
            entry: RwLock::new(entry),
            paused_by_operator: AtomicBool::new(paused),
            rate_override: RwLock::new(rate_override),
            limiter: RwLock::new(Arc::new(crate::dispatch::sender::drained_limiter(rate))),
            halted: Mutex::new(None),
            halt_unsaved: AtomicBool::new(false),
            templates,
            template_hold: Mutex::new(TemplateHoldCache::default()),
            observed: Mutex::new(None),
            wait_reason: Mutex::new(None),
            sender_wait: std::sync::atomic::AtomicBool::new(false),
            marketing_endpoint_refused: std::sync::atomic::AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            dispatched: AtomicU64::new(0),
            progress: Mutex::new(None),
            stop: AtomicBool::new(false),
            in_hand: Mutex::new(HashSet::new()),
            retries: Mutex::new(HashMap::new()),
        }
    }

    /// True when no contact of the campaign may be claimed now, whatever
    /// the contact (stopping, operator pause, halt, spec paused or ended).
    /// Cheap: waiting sends poll it.
    pub fn holds(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            || self.paused_by_operator.load(Ordering::Acquire)
            || self.halted.lock_or_recover().is_some()
            || self.template_hold().is_some()
            || matches!(
                self.entry.read_or_recover().spec.state,
                DesiredState::Paused | DesiredState::Ended
            )
    }

    /// Why the campaign is halted, if it is: a template error's halt, or a
    /// template Meta holds.
    pub fn halt_reason(&self) -> Option<String> {
        self.halted
            .lock_or_recover()
            .as_ref()
            .map(|h| h.reason.clone())
            .or_else(|| self.template_hold())
    }

    /// Why one of the campaign's templates may not be sent now (paused,
    /// disabled, ... by Meta), if one may not. An atomic load and a lock
    /// while neither the book nor the spec changed.
    pub fn template_hold(&self) -> Option<String> {
        let generation = self.templates.generation();
        let entry = self.entry.read_or_recover();
        let mut cache = self.template_hold.lock_or_recover();
        let same_spec = cache.spec.as_ref().is_some_and(|s| Arc::ptr_eq(s, &entry));
        if cache.generation != generation || !same_spec {
            let hold = self.templates.first_hold(&entry.whatsapp_templates());
            if hold != cache.hold {
                match &hold {
                    Some(why) => {
                        tracing::warn!(campaign = %self.id, reason = %why, "campaign holds: a template it sends may not be sent now; it resumes when Meta approves the template again (or POST /campaigns/{}/clear-halt on the admin listener after fixing it)", self.id)
                    }
                    None => {
                        tracing::info!(campaign = %self.id, "no template of the campaign is held any more: it resumes")
                    }
                }
            }
            *cache = TemplateHoldCache {
                generation,
                spec: Some(Arc::clone(&entry)),
                hold,
            };
        }
        cache.hold.clone()
    }

    pub(super) fn facts<'a>(&self, entry: &'a CatalogEntry) -> CampaignFacts<'a> {
        CampaignFacts {
            desired: entry.spec.state,
            schedule: &entry.spec.schedule,
            paused_by_operator: self.paused_by_operator.load(Ordering::Acquire),
            halted: self.halted.lock_or_recover().is_some() || self.template_hold().is_some(),
            stopping: self.stop.load(Ordering::Acquire),
            marketing: entry.spec.template.category == crate::domain::TemplateCategory::Marketing,
        }
    }

    /// Earlier tries of a contact that went back to the queue unsent.
    pub(super) fn retries_of(&self, contact: &ContactKey) -> u32 {
        self.retries
            .lock_or_recover()
            .get(contact)
            .copied()
            .unwrap_or(0)
    }

    pub(super) fn note_retry(&self, contact: &ContactKey, requeued: bool) {
        let mut retries = self.retries.lock_or_recover();
        if requeued {
            if retries.len() >= MAX_RETRY_ENTRIES {
                retries.clear();
            }
            *retries.entry(contact.clone()).or_default() += 1;
        } else if !retries.is_empty() {
            retries.remove(contact);
        }
    }

    pub fn rate(&self) -> f64 {
        let rate_override = *self.rate_override.read_or_recover();
        rate_override.unwrap_or_else(|| self.entry.read_or_recover().spec.pacing.rate_per_second())
    }

    /// Rebuilds the pacing limiter (reload or new spec), without a burst.
    pub fn repace(&self) {
        *self.limiter.write_or_recover() =
            Arc::new(crate::dispatch::sender::drained_limiter(self.rate()));
    }

    /// Records why the campaign waits (`kind` is the bounded metric label:
    /// `portfolio_limit`, `senders_halted`), or that it no longer does.
    pub fn set_wait(&self, reason: Option<(&'static str, String)>) {
        let for_senders = reason.as_ref().is_some_and(|(kind, _)| {
            matches!(
                *kind,
                "senders_halted"
                    | "senders_unavailable"
                    | "sender_paused_by_meta"
                    | "sender_quality_held"
            )
        });
        self.sender_wait
            .store(for_senders, std::sync::atomic::Ordering::Release);
        let mut w = self.wait_reason.lock_or_recover();
        let text = reason.as_ref().map(|(_, r)| r.clone());
        if *w != text {
            match &reason {
                Some((kind, r)) => {
                    tracing::info!(campaign = %self.id, reason = %r, "campaign waits");
                    metrics::campaign_wait(&self.id, Some(kind));
                }
                None => metrics::campaign_wait(&self.id, None),
            }
            *w = text;
        }
    }

    /// A sender took a contact: a wait for the senders is over (one atomic
    /// load while there is none).
    pub fn sender_found(&self) {
        if self
            .sender_wait
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            self.set_wait(None);
        }
    }
}
