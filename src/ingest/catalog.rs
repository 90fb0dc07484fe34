//! The materialised `wa.campaigns` topic: latest valid spec per campaign id.
//!
//! The reader consumes every partition from the beginning (no consumer-group
//! offsets: the compacted topic *is* the state), validates each spec, keeps the
//! latest valid one per key, mirrors it into the store and publishes changes.
//! An invalid update is logged with every problem and counted; the previous
//! valid spec stays in force, because a typo upstream must not stop a running
//! campaign.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use chrono::Utc;
use tokio::sync::broadcast;

use super::IngestError;
use crate::domain::template::TemplateSpec;
use crate::domain::{
    CampaignSpec, CompiledTemplate, ContactKey, ContactValues, DesiredState, Goal, GoalSpec,
    Journey, ObservedState, SpecProblem, Trigger, TriggerSpec,
};
use crate::metrics;
use crate::store::{CampaignRecord, StagedJourney, Store};
use crate::sync::RwLockExt;

/// A validated campaign with its template and journey compiled once.
#[derive(Debug)]
pub struct CatalogEntry {
    pub spec: CampaignSpec,
    pub template: CompiledTemplate,
    pub journey: Journey,
    /// The checked trigger of a triggered campaign.
    pub trigger: Option<Trigger>,
    /// The checked goal, when the campaign has one.
    pub goal: Option<Goal>,
}

impl CatalogEntry {
    /// Compiles a spec (already validated, or stored by an earlier version)
    /// into an entry: every problem of its template and journey at once.
    pub fn compile(spec: CampaignSpec) -> Result<CatalogEntry, Vec<SpecProblem>> {
        let template = spec.template.compile();
        let journey = spec.journey();
        let trigger = spec.trigger.as_ref().map(TriggerSpec::check).transpose();
        let goal = spec.goal.as_ref().map(GoalSpec::check).transpose();
        match (template, journey, trigger, goal) {
            (Ok(template), Ok(journey), Ok(trigger), Ok(goal)) => Ok(CatalogEntry {
                spec,
                template,
                journey,
                trigger,
                goal,
            }),
            (template, journey, trigger, goal) => Err(template
                .err()
                .into_iter()
                .chain(journey.err())
                .chain(trigger.err())
                .chain(goal.err())
                .flatten()
                .collect()),
        }
    }

    /// Every WhatsApp template the campaign sends, its steps' included:
    /// a hold on any of them holds the campaign (docs/ARCHITECTURE.md,
    /// "Template health").
    pub fn whatsapp_templates(&self) -> Vec<crate::domain::TemplateRef> {
        let mut out: Vec<crate::domain::TemplateRef> = Vec::new();
        let steps = self
            .spec
            .steps
            .iter()
            .skip(1)
            .filter_map(|s| s.template.as_ref());
        for t in std::iter::once(&self.spec.template).chain(steps) {
            let t = crate::domain::TemplateRef::new(&t.name, &t.language);
            if !t.name.is_empty() && !out.iter().any(|o| o.same(&t)) {
                out.push(t);
            }
        }
        out
    }

    /// The WhatsApp template of a step of the journey ("" is the first):
    /// `None` for an SMS step or a step the spec no longer has.
    pub fn template_of(&self, step: &str) -> Option<&TemplateSpec> {
        self.spec.template_of(step)
    }

    /// What staging stores of the journey for one contact: nothing for a
    /// one-step campaign; else the edges leaving the primary message and
    /// every later step frozen for this contact.
    pub fn staged_journey(&self, values: ContactValues<'_>, contact: &ContactKey) -> StagedJourney {
        if !self.journey.has_steps() {
            return StagedJourney::default();
        }
        StagedJourney {
            next: self.journey.edges(""),
            later: self.journey.freeze_later(values, contact),
        }
    }
}

#[derive(Debug, Clone)]
pub enum CatalogChange {
    Upserted(String),
    Deleted(String),
    /// A spec of this key was refused, with every problem (published on
    /// `wa.events` as `spec_rejected` so the upstream learns).
    Rejected {
        key: String,
        problems: Vec<String>,
    },
}

/// Shared, cheaply cloneable view of the known campaigns.
#[derive(Clone)]
pub struct CampaignCatalog {
    entries: Arc<RwLock<HashMap<String, Arc<CatalogEntry>>>>,
    changes: broadcast::Sender<CatalogChange>,
    caught_up: Arc<AtomicBool>,
}

impl Default for CampaignCatalog {
    fn default() -> Self {
        let (changes, _) = broadcast::channel(1024);
        CampaignCatalog {
            entries: Arc::default(),
            changes,
            caught_up: Arc::default(),
        }
    }
}

/// Why a spec was not applied.
#[derive(Debug, thiserror::Error)]
pub enum SpecRejection {
    #[error("campaign {key}: {}", problems.join("; "))]
    Invalid { key: String, problems: Vec<String> },
}

impl CampaignCatalog {
    pub fn get(&self, id: &str) -> Option<Arc<CatalogEntry>> {
        self.entries.read_or_recover().get(id).cloned()
    }

    /// The campaign's kind (`real` when it is not known here).
    pub fn kind(&self, id: &str) -> crate::domain::CampaignKind {
        self.entries
            .read_or_recover()
            .get(id)
            .map(|e| e.spec.kind)
            .unwrap_or_default()
    }

    /// The id a row's step is shown by in metrics and events: its own, or
    /// for `""` the first step's id in the campaign's spec (`primary` when
    /// the campaign is not known here).
    pub fn step_name(&self, campaign: &str, step: &str) -> String {
        if !step.is_empty() {
            return step.to_string();
        }
        self.get(campaign).map_or_else(
            || crate::domain::PRIMARY_STEP.to_string(),
            |e| e.journey.first_id().to_string(),
        )
    }

    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.entries.read_or_recover().keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn subscribe(&self) -> broadcast::Receiver<CatalogChange> {
        self.changes.subscribe()
    }

    /// True once the reader has read the topic up to the end it saw at start.
    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    /// Parses, validates and compiles a spec value of key `key`, with every
    /// problem at once (unknown fields included).
    pub fn parse(key: &str, value: &[u8]) -> Result<CatalogEntry, SpecRejection> {
        let invalid = |problems: Vec<String>| SpecRejection::Invalid {
            key: key.to_string(),
            problems,
        };
        let (spec, _) = match CampaignSpec::from_json_validated(value) {
            Ok(parsed) => parsed,
            Err(crate::domain::SpecError::Invalid { problems, .. }) => {
                return Err(invalid(problems.iter().map(|p| p.to_string()).collect()))
            }
            Err(e) => return Err(invalid(vec![e.to_string()])),
        };
        if spec.id != key {
            return Err(invalid(vec![format!(
                "record key {key:?} differs from spec id {:?} (the key must be the campaign id)",
                spec.id
            )]));
        }
        CatalogEntry::compile(spec)
            .map_err(|problems| invalid(problems.iter().map(|p| p.to_string()).collect()))
    }

    /// Inserts an entry directly (used by tests and the demo's catalog seeding).
    pub fn insert(&self, entry: CatalogEntry) {
        let id = entry.spec.id.clone();
        self.entries
            .write_or_recover()
            .insert(id.clone(), Arc::new(entry));
        let _ = self.changes.send(CatalogChange::Upserted(id));
    }

    fn remove(&self, id: &str) {
        self.entries.write_or_recover().remove(id);
        let _ = self.changes.send(CatalogChange::Deleted(id.to_string()));
    }

    /// Loads the campaigns the store already knows, so a restart does not
    /// wait for the topic before it can dispatch.
    pub async fn load_from_store(&self, store: &dyn Store) -> Result<usize, IngestError> {
        let records = store.list_campaigns().await?;
        let mut n = 0;
        for record in records {
            let id = record.spec.id.clone();
            match CatalogEntry::compile(record.spec) {
                Ok(entry) => {
                    self.insert(entry);
                    n += 1;
                }
                Err(problems) => tracing::warn!(
                    campaign = %id,
                    problems = ?problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                    "stored campaign spec no longer compiles; waiting for a new one on the topic"
                ),
            }
        }
        Ok(n)
    }

    /// Applies one record of the campaigns topic.
    pub async fn apply(&self, store: &dyn Store, key: &str, value: Option<&[u8]>) {
        match value {
            None => self.apply_tombstone(store, key).await,
            Some(value) => match Self::parse(key, value) {
                Ok(entry) => {
                    let existing = store.get_campaign(key).await.ok().flatten();
                    let observed = match (&existing, entry.spec.state) {
                        (Some(r), _)
                            if matches!(
                                r.observed_state,
                                ObservedState::Completed | ObservedState::Failed
                            ) =>
                        {
                            r.observed_state
                        }
                        (_, DesiredState::Scheduled) => ObservedState::Scheduled,
                        (_, DesiredState::Active) => existing
                            .as_ref()
                            .map_or(ObservedState::Scheduled, |r| r.observed_state),
                        (_, DesiredState::Paused) => ObservedState::Paused,
                        (_, DesiredState::Ended) => ObservedState::Ended,
                    };
                    let record = CampaignRecord {
                        spec: entry.spec.clone(),
                        observed_state: observed,
                        updated_at: Utc::now(),
                        started_at: existing.and_then(|r| r.started_at),
                    };
                    if let Err(e) = store.put_campaign(&record).await {
                        tracing::error!(campaign = key, error = %e, "cannot store campaign spec; it applies in memory and is stored again on its next update");
                    }
                    tracing::info!(campaign = key, state = ?entry.spec.state, "campaign spec applied");
                    metrics::campaign_spec("applied");
                    self.insert(entry);
                }
                Err(rejection) => {
                    metrics::campaign_spec("invalid");
                    let kept = if self.get(key).is_some() {
                        "the previous valid spec stays in force"
                    } else {
                        "the campaign is not known until a valid spec arrives"
                    };
                    tracing::error!(error = %rejection, "invalid campaign spec ignored; {kept}");
                    let SpecRejection::Invalid { key, problems } = rejection;
                    let _ = self.changes.send(CatalogChange::Rejected { key, problems });
                }
            },
        }
    }

    async fn apply_tombstone(&self, store: &dyn Store, key: &str) {
        let started = match store.get_campaign(key).await {
            Ok(Some(r)) => r.started_at.is_some(),
            Ok(None) => false,
            Err(e) => {
                tracing::error!(campaign = key, error = %e, "cannot read campaign for tombstone; keeping it");
                return;
            }
        };
        if started {
            metrics::campaign_spec("refused");
            tracing::warn!(
                campaign = key,
                "tombstone ignored: the campaign has started and its journey is kept; publish state \"ended\" to stop it"
            );
            return;
        }
        if let Err(e) = store.delete_campaign(key).await {
            tracing::error!(campaign = key, error = %e, "cannot delete campaign");
            return;
        }
        metrics::campaign_spec("deleted");
        tracing::info!(campaign = key, "campaign deleted by tombstone");
        self.remove(key);
    }
}

/// Reads the campaigns topic forever on a dedicated thread.
pub struct CampaignReader {
    reader: super::compacted::CompactedReader,
}

impl CampaignReader {
    pub fn new(
        brokers: &str,
        topic: &str,
        extra: &[(String, String)],
    ) -> Result<Self, IngestError> {
        Ok(CampaignReader {
            reader: super::compacted::CompactedReader::new(brokers, topic, extra, "campaigns")?,
        })
    }

    /// Runs until `stop` is set. Blocking: call from a dedicated thread.
    pub fn run(
        self,
        catalog: CampaignCatalog,
        store: Arc<dyn Store>,
        rt: tokio::runtime::Handle,
        stop: Arc<AtomicBool>,
    ) -> Result<(), IngestError> {
        let caught_up = catalog.caught_up.clone();
        let ids = catalog.clone();
        self.reader.run(
            &stop,
            |key, payload, partition, offset| {
                let key = String::from_utf8_lossy(key);
                if key.is_empty() {
                    metrics::campaign_spec("invalid");
                    tracing::error!(
                        partition,
                        offset,
                        "campaign record without a key ignored (the key must be the campaign id)"
                    );
                } else {
                    rt.block_on(catalog.apply(store.as_ref(), &key, payload));
                }
            },
            || {
                tracing::info!(
                    campaigns = ids.ids().len(),
                    "campaigns topic read to its end"
                );
                caught_up.store(true, Ordering::Release);
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journey(sms_text: &str) -> Vec<u8> {
        serde_json::json!({
            "id": "j", "senders": ["1001"],
            "steps": [
                {"id": "primary", "template": {"name": "t", "language": "en"}},
                {"id": "sms", "channel": "sms", "text": sms_text, "when": {"after": "primary", "on": "failed"}},
            ],
        })
        .to_string()
        .into_bytes()
    }

    fn problems(value: &[u8]) -> Vec<String> {
        match CampaignCatalog::parse("j", value) {
            Err(SpecRejection::Invalid { problems, .. }) => problems,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_journey_with_an_sms_step_is_validated_and_compiled() {
        assert_eq!(
            problems(&journey("Hola {{name")),
            vec!["steps[1].text: \"Hola {{name\" has a {{ without a closing }}".to_string()]
        );
        let entry = CampaignCatalog::parse("j", &journey("Hola {{name}}")).unwrap();
        assert_eq!(entry.journey.channel("sms"), crate::domain::Channel::Sms);
        assert_eq!(entry.journey.channel(""), crate::domain::Channel::Whatsapp);
        assert_eq!(
            entry.template_of("sms"),
            None,
            "an SMS step has no template"
        );
        // A journey of its primary message alone is a one-step campaign.
        let one = serde_json::json!({
            "id": "j", "senders": ["1001"],
            "steps": [{"id": "primary", "template": {"name": "t", "language": "en"}}],
        });
        let entry = CampaignCatalog::parse("j", one.to_string().as_bytes()).unwrap();
        assert_eq!(entry.spec.template.name, "t");
        assert!(!entry.journey.has_steps());
    }

    #[test]
    fn a_whatsapp_journey_is_compiled_with_its_steps() {
        let spec = serde_json::json!({
            "id": "j", "senders": ["1001"],
            "template": {"name": "t", "language": "en"},
            "steps": [
                {"id": "primary"},
                {"id": "nudge", "template": {"name": "t2", "language": "es", "body": ["{{name}}"]},
                 "when": {"after": "primary", "on": "no_reply", "delay": "1h"}},
            ],
        });
        let entry = CampaignCatalog::parse("j", spec.to_string().as_bytes()).unwrap();
        assert_eq!(entry.template_of("").map(|t| t.name.as_str()), Some("t"));
        assert_eq!(
            entry.template_of("nudge").map(|t| t.name.as_str()),
            Some("t2")
        );
        assert_eq!(entry.template_of("gone"), None);
        assert_eq!(
            entry.journey.entered_on("nudge"),
            Some(crate::domain::On::NoReply)
        );
        assert_eq!(entry.journey.entered_on(""), None);
        let variables = [("name".to_string(), "Ana".to_string())].into();
        let values = ContactValues {
            variables: &variables,
            phone: None,
            name: None,
            timezone: None,
            user_id: None,
            tags: &crate::domain::NO_TAGS,
        };
        let staged = entry.staged_journey(values, &ContactKey::raw("+5215550001"));
        assert_eq!(staged.next.len(), 1);
        assert_eq!(
            (staged.next[0].to.as_str(), staged.next[0].delay_secs),
            ("nudge", 3_600)
        );
        assert_eq!(staged.later.len(), 1);
        assert_eq!(staged.later[0].step, "nudge");
        // A one-step campaign stages no journey.
        let one = CampaignCatalog::parse("j", &journey_free()).unwrap();
        assert_eq!(
            one.staged_journey(values, &ContactKey::raw("+5215550001")),
            StagedJourney::default()
        );
    }

    fn journey_free() -> Vec<u8> {
        serde_json::json!({"id": "j", "senders": ["1001"], "template": {"name": "t", "language": "en"}})
            .to_string()
            .into_bytes()
    }
}
