//! One contact from the queue to a sender: the admission rules checked at
//! claim time, the claim, the portfolio count after it, and the send handed
//! to the pool; exclusions and halts on the way.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::Semaphore;

use crate::dispatch::policy::admission::{self, Admission, ContactFacts, WaitReason};
use crate::dispatch::sender::pool::{self, NoSender};
use crate::dispatch::sender::{QueuedSend, SendJob, SendReport};
use crate::domain::template::TemplateSpec;
use crate::domain::{
    send_id, Channel, ContactKey, ExclusionReason, FrequencyCap, On, SlotTake, TemplateCategory,
};
use crate::events::Event;
use crate::ingest::catalog::CatalogEntry;
use crate::metrics;
use crate::store::{
    CampaignHalt, ClaimOutcome, ClaimRequest, DispatchRecord, Outcome, RecipientCount,
};
use crate::sync::{MutexExt, RwLockExt};
use crate::whatsapp::payload::{step_callback_data, template_message_bytes};

use super::*;

impl Pump {
    pub(super) async fn exclude(&self, contact: &ContactKey, reason: ExclusionReason) {
        if let Ok(Some(step)) = self
            .store
            .exclude(&self.state.id, contact, &reason, Utc::now())
            .await
        {
            self.excluded(contact, &step, &reason);
        }
    }

    /// Counts and publishes an exclusion the store recorded at `step`.
    fn excluded(&self, contact: &ContactKey, step: &str, reason: &ExclusionReason) {
        let step = self.step_name(step);
        metrics::exclusion(&self.state.id, &step, reason.label());
        self.env.publish(vec![Event::Excluded {
            campaign_id: self.state.id.clone(),
            campaign_kind: self.state.entry.read_or_recover().spec.kind,
            step,
            contact: contact.as_str().to_string(),
            occurrence: contact.occurrence().map(str::to_string),
            reason: reason.to_string(),
            timestamp: Utc::now(),
        }]);
    }

    /// The id a row's step is shown by (metrics, events): the first step's
    /// id for `""`.
    pub(crate) fn step_name(&self, step: &str) -> String {
        self.state
            .entry
            .read_or_recover()
            .journey
            .name(step)
            .to_string()
    }

    /// Admission of one contact at `now` with what is known of it.
    pub(super) fn admit(
        &self,
        entry: &CatalogEntry,
        row: &DispatchRecord,
        contact: Option<&crate::store::ContactRecord>,
    ) -> Admission {
        // A suppression of the person's other identity holds too.
        let suppression = self.env.suppression(&row.contact).or_else(|| {
            contact
                .and_then(|c| c.linked.as_ref())
                .and_then(|linked| self.env.suppression(linked))
        });
        let portfolio = self.env.portfolio_wait(&row.contact);
        admission::admit(
            &self.state.facts(entry),
            &ContactFacts {
                key: &row.contact,
                row,
                contact,
                suppression: suppression.as_deref(),
                portfolio_wait: portfolio.as_deref(),
                follows_silence: entry.journey.entered_on(&row.step) == Some(On::NoReply),
                whatsapp: entry.journey.channel(&row.step) == Channel::Whatsapp,
            },
            Utc::now(),
        )
    }

    /// Picks up a pending contact: admission on what the row says, a
    /// sender, the campaign's in-flight slot and pace, then hands it to a
    /// task that waits for the sender's turn and only then claims it.
    pub(super) async fn consider(
        self: &Arc<Self>,
        contact: &ContactKey,
        in_flight: &Arc<Semaphore>,
    ) -> Considered {
        let id = &self.state.id;
        if self.state.in_hand.lock_or_recover().contains(contact) {
            return Considered::Skipped;
        }
        let Ok(Some(row)) = self.store.get_dispatch(id, contact).await else {
            return Considered::Skipped;
        };
        let entry = self.state.entry.read_or_recover().clone();
        if let Some(not_now) = self.admission(&entry, &row, contact).await {
            return not_now;
        }
        if entry.journey.channel(&row.step) == Channel::Sms {
            return self.consider_sms(row, in_flight).await;
        }
        let Some(template) = entry.template_of(&row.step) else {
            // A step the spec in force no longer has (replaced meanwhile).
            self.exclude(
                contact,
                ExclusionReason::InvalidField(format!("steps.{}", row.step)),
            )
            .await;
            return Considered::Skipped;
        };
        // Pick a sender first: with none available, don't take a slot.
        let marketing = template.category == crate::domain::TemplateCategory::Marketing;
        let sender = match self.pick_sender(&entry, contact, marketing) {
            Ok(sender) => sender,
            Err(wait) => return wait,
        };
        self.state.sender_found();
        let Some(permit) = self.take_slot(contact, in_flight).await else {
            return Considered::Skipped;
        };
        let job = self.send_job(template, &row, contact, &sender.core().id);
        // The send runs on the tokio pool straight on the sender's core: a
        // round trip through the sender actor's mailbox for every message
        // cost two thread hops and a third of the daemon's CPU per send. The
        // actor keeps the sender's lifecycle and control messages. Every log
        // line of the send carries the campaign and the sender.
        let span = tracing::info_span!("send", campaign = %id, sender = %sender.core().id);
        let pump = self.clone();
        tokio::spawn(async move {
            use tracing::Instrument;
            pump.send(sender, row, job, entry).instrument(span).await;
            drop(permit);
        });
        Considered::Dispatched
    }

    /// The campaign's in-flight slot and pace for a contact about to go to
    /// a sender, and the contact marked in hand; `None` (nothing held) when
    /// the campaign stops holding or the contact is in hand already.
    pub(super) async fn take_slot(
        &self,
        contact: &ContactKey,
        in_flight: &Arc<Semaphore>,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = in_flight.clone().acquire_owned().await.ok()?;
        let holds = || self.state.holds();
        if !crate::dispatch::sender::wait_turn_unless(
            || self.state.limiter.read_or_recover().clone(),
            &holds,
        )
        .await
        {
            return None;
        }
        if !self.state.in_hand.lock_or_recover().insert(contact.clone()) {
            return None;
        }
        self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(permit)
    }

    /// The end of a send taken by [`Self::take_slot`], whatever became of it.
    pub(super) fn release(&self, contact: &ContactKey) {
        self.state.in_hand.lock_or_recover().remove(contact);
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Admission on what the row says: `None` when the contact may go now,
    /// else what the pump does with it (wait, or skip after excluding it).
    async fn admission(
        &self,
        entry: &CatalogEntry,
        row: &DispatchRecord,
        contact: &ContactKey,
    ) -> Option<Considered> {
        match self.admit(entry, row, None) {
            Admission::Ready => None,
            Admission::Wait { until, reason } => {
                if let WaitReason::Portfolio(r) = reason {
                    self.state.set_wait(Some(("portfolio_limit", r)));
                }
                Some(Considered::Wait(until))
            }
            Admission::Exclude(reason) => {
                self.exclude(contact, reason).await;
                Some(Considered::Skipped)
            }
            Admission::Hold(_) | Admission::Skip => Some(Considered::Skipped),
        }
    }

    /// A sender of the campaign's pool for the contact, or how long to
    /// wait when every one is halted or failing.
    fn pick_sender(
        &self,
        entry: &CatalogEntry,
        contact: &ContactKey,
        marketing: bool,
    ) -> Result<QueuedSend, Considered> {
        match pool::pick(&self.senders, &entry.spec.senders, contact, marketing) {
            Ok(core) => Ok(QueuedSend::new(core)),
            Err(NoSender::Halted) => {
                self.state.set_wait(Some((
                    "senders_halted",
                    "every sender of the campaign is halted".into(),
                )));
                Err(Considered::Wait(Utc::now() + chrono::Duration::seconds(5)))
            }
            Err(NoSender::QualityHeld { why }) => {
                self.state.set_wait(Some((
                    "sender_quality_held",
                    format!("Meta flagged the quality of the campaign's senders ({why}): marketing sends from them halt (whatsapp.number_quality = \"halt\") until Meta lifts it or whatsapp.number_quality_hold_secs passes"),
                )));
                Err(Considered::Wait(Utc::now() + chrono::Duration::seconds(1)))
            }
            Err(NoSender::Unavailable { paused: Some(why) }) => {
                self.state.set_wait(Some((
                    "sender_paused_by_meta",
                    format!("Meta has the campaign's senders in maintenance ({why}); they resume by themselves (dispatch.maintenance_pause_secs), contacts stay pending"),
                )));
                Err(Considered::Wait(
                    Utc::now() + chrono::Duration::milliseconds(500),
                ))
            }
            Err(NoSender::Unavailable { paused: None }) => {
                self.state.set_wait(Some((
                    "senders_unavailable",
                    "the campaign's senders are failing transiently (outage): contacts stay pending until a probe gets through".into(),
                )));
                Err(Considered::Wait(
                    Utc::now() + chrono::Duration::milliseconds(500),
                ))
            }
        }
    }

    /// The request of one contact, built before the claim: its body from
    /// the template of the row's step and the frozen parameters, which
    /// claim of it this is, and its retries.
    fn send_job(
        &self,
        template: &TemplateSpec,
        row: &DispatchRecord,
        contact: &ContactKey,
        sender: &str,
    ) -> SendJob {
        let id = &self.state.id;
        let marketing = template.category == crate::domain::TemplateCategory::Marketing;
        let endpoint = self.env.marketing_messages(id, sender).endpoint(
            marketing,
            self.state
                .marketing_endpoint_refused
                .load(std::sync::atomic::Ordering::Acquire),
        );
        SendJob {
            endpoint,
            marketing,
            campaign: id.clone(),
            step: self.step_name(&row.step),
            contact: contact.clone(),
            body: template_message_bytes(
                template,
                contact,
                &row.params,
                &step_callback_data(id, &row.step, contact),
                endpoint,
            ),
            deferral: self.env.marketing_limit_retry().wait(
                crate::dispatch::decision::attempt_number(row.attempts),
                row.times.staged,
                Utc::now(),
            ),
            retries: self.state.retries_of(contact),
        }
    }

    /// The sender's turn, the claim, the request: nothing in between the
    /// last two. A contact whose turn never came (a stop, a halt, an open
    /// circuit) was never claimed and stays pending as it was.
    pub(super) async fn send(
        &self,
        sender: QueuedSend,
        row: DispatchRecord,
        job: SendJob,
        entry: Arc<CatalogEntry>,
    ) {
        let state = &self.state;
        let holds = || state.holds();
        if job.marketing && !sender.core().marketing_pace(&holds).await {
            self.release(&row.contact);
            return;
        }
        if let Some(turn) = sender.core().take_turn(&job.contact, &holds).await {
            // Claim time: Meta may have flagged the number while the send
            // waited for its turn (whatsapp.number_quality = "halt").
            if job.marketing && sender.core().marketing_held().is_some() {
                drop(turn);
                self.release(&row.contact);
                return;
            }
            if self.claim(&row).await {
                let contact = job.contact.clone();
                let report = sender.core().deliver(turn, job).await;
                state.note_retry(&contact, report == SendReport::Requeued);
                match &report {
                    SendReport::CampaignHalted { code, reason } => {
                        self.halt(*code, reason, &entry, &row.step).await;
                    }
                    SendReport::MarketingEndpointRefused { reason }
                        if !state
                            .marketing_endpoint_refused
                            .swap(true, Ordering::AcqRel) =>
                    {
                        tracing::warn!(campaign = %state.id, reason = %reason, "campaign sends its template through /messages: the Marketing Messages API refuses it as not marketing");
                    }
                    _ => {}
                }
                state.dispatched.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.release(&row.contact);
    }

    /// A campaign-class error stops the campaign. A paused or disabled
    /// template (132015, 132016) goes to the template book, which holds
    /// every campaign that sends it until Meta approves it again; any other
    /// (132001, no such template) halts this campaign, in memory at once and
    /// in the store for the next start, bound to the spec the request was
    /// built from.
    pub(super) async fn halt(
        &self,
        code: Option<i64>,
        reason: &str,
        entry: &CatalogEntry,
        step: &str,
    ) {
        let state = &self.state;
        let signal = code.and_then(|c| crate::domain::TemplateSignal::from_error(c, reason));
        if let (Some(signal), Some(template)) = (signal, entry.template_of(step)) {
            let template = crate::domain::TemplateRef::new(&template.name, &template.language);
            metrics::template_update(&format!("error_{}", code.unwrap_or_default()));
            match state
                .templates
                .learn(self.store.as_ref(), &template, &signal, Utc::now())
                .await
            {
                Ok(_) => return,
                Err(e) => {
                    // The halt below holds it instead, until the store answers.
                    tracing::warn!(campaign = %state.id, template = %template, error = %e, "cannot record the template's hold in the store; halting the campaign instead");
                }
            }
        }
        let halt = CampaignHalt {
            reason: reason.to_string(),
            spec: entry.spec.halt_digest(),
            at: Utc::now(),
        };
        if state.entry.read_or_recover().spec.halt_digest() != halt.spec {
            // A request built from a spec replaced since: the new template
            // gets its own chance.
            tracing::info!(campaign = %state.id, reason = %reason, "template error for a spec replaced meanwhile; not halting the new one");
            return;
        }
        if state
            .halted
            .lock_or_recover()
            .as_ref()
            .is_some_and(|h| h.spec == halt.spec)
        {
            return; // another send of the same spec got there first
        }
        tracing::error!(campaign = %state.id, reason = %reason, "campaign halted by WhatsApp (template problem): fix the template, then publish a changed spec or POST /campaigns/{}/clear-halt on the admin listener", state.id);
        *state.halted.lock_or_recover() = Some(halt.clone());
        state.halt_unsaved.store(true, Ordering::Release);
        self.save_halt(&halt).await;
    }

    /// Writes the halt in memory to the store; until that succeeds the halt
    /// is written again on every check (and never lifted by the check).
    pub(super) async fn save_halt(&self, halt: &CampaignHalt) {
        match self
            .store
            .set_campaign_halt(&self.state.id, Some(halt))
            .await
        {
            Ok(()) => self.state.halt_unsaved.store(false, Ordering::Release),
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, error = %e, "cannot store the campaign's halt yet; it holds in memory and is written again in 5 s");
            }
        }
    }

    /// The contact's record with what its linked identity's record says
    /// merged in (docs/ARCHITECTURE.md, "Business-scoped user ids"), and
    /// the campaign that identity is engaged by. One read more, only for a
    /// contact Meta showed under both identities.
    async fn person(
        &self,
        contact: &ContactKey,
    ) -> crate::store::StoreResult<(Option<crate::store::ContactRecord>, Option<String>)> {
        let Some(mut record) = self.store.get_contact(contact).await? else {
            return Ok((None, None));
        };
        let Some(linked) = record.linked.clone() else {
            return Ok((Some(record), None));
        };
        let other = self.store.get_contact(&linked).await?.unwrap_or_default();
        record.merge_linked(&other);
        Ok((Some(record), other.engaged_campaign))
    }

    /// Claim time: every check again with the contact's current record, the
    /// current spec and overrides, then the compare-and-set. True when this
    /// process now owns the send.
    pub(super) async fn claim(&self, row: &DispatchRecord) -> bool {
        let contact = &row.contact;
        let (record, linked_engagement) = match self.person(contact).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, error = %e, "cannot read the contact before its claim; it stays pending");
                return false;
            }
        };
        let entry = self.state.entry.read_or_recover().clone();
        match self.admit(&entry, row, record.as_ref()) {
            Admission::Ready => {}
            Admission::Exclude(reason) => {
                self.exclude(contact, reason).await;
                return false;
            }
            Admission::Wait { .. } | Admission::Hold(_) | Admission::Skip => return false,
        }
        // The same person under the other identity is engaged by another
        // exclusive campaign still running.
        if entry.spec.exclusive
            && linked_engagement
                .as_deref()
                .is_some_and(|c| c != self.state.id && !self.env.releases_engagement(c))
        {
            self.exclude(contact, ExclusionReason::EngagedElsewhere)
                .await;
            return false;
        }
        if !self.env.holds_lease() {
            self.state.set_wait(Some((
                "lease",
                "this instance's lease is not renewed (is the store reachable?): claims wait so that no other instance settles a send still in flight".into(),
            )));
            return false;
        }
        let mut request = ClaimRequest {
            campaign_id: self.state.id.clone(),
            contact: contact.clone(),
            // A triggered campaign never ends by itself: the engagement it
            // took would hold its contacts from every exclusive campaign for
            // good (docs/ARCHITECTURE.md, "Triggered campaigns").
            exclusive: entry.spec.exclusive && entry.trigger.is_none(),
            replace_engagement: None,
            owner: self.owner.clone(),
            now: Utc::now(),
            step: row.step.clone(),
        };
        let mut outcome = self.store.claim(&request).await;
        if let Ok(ClaimOutcome::EngagedElsewhere { campaign }) = &outcome {
            if self.env.releases_engagement(campaign) {
                request.replace_engagement = Some(campaign.clone());
                outcome = self.store.claim(&request).await;
            }
        }
        match outcome {
            // The caps first, so that a contact they exclude takes no place
            // of the portfolio's window; that limit and the marketing cap
            // count WhatsApp messages only, a campaign's own cap every
            // channel.
            Ok(ClaimOutcome::Claimed { .. })
                if entry.journey.channel(&row.step) == Channel::Whatsapp =>
            {
                self.within_caps(&entry, row).await && self.count_recipient(contact).await
            }
            Ok(ClaimOutcome::Claimed { .. }) => self.within_caps(&entry, row).await,
            Ok(ClaimOutcome::EngagedElsewhere { .. }) => {
                self.exclude(contact, ExclusionReason::EngagedElsewhere)
                    .await;
                false
            }
            Ok(ClaimOutcome::NotClaimable { .. }) => false,
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, error = %e, "claim failed; the contact stays pending");
                false
            }
        }
    }
    /// After the claim, before the request: the frequency caps. A triggered
    /// campaign's `trigger.max_per_contact` counts each occurrence once, at
    /// its first step (its later steps are the same occurrence); the
    /// portfolio's `dispatch.marketing_per_contact` counts every marketing
    /// WhatsApp message of every campaign. False when the contact does not
    /// go now (see [`Self::take_cap_slot`]).
    pub(super) async fn within_caps(&self, entry: &CatalogEntry, row: &DispatchRecord) -> bool {
        let own = entry
            .trigger
            .as_ref()
            .and_then(|t| t.cap)
            .filter(|_| row.step.is_empty());
        if let Some(cap) = own {
            if !self.take_cap_slot(&self.state.id, cap, row).await {
                return false;
            }
        }
        let Some(cap) = self.env.marketing_cap() else {
            return true;
        };
        let marketing = entry.journey.channel(&row.step) == Channel::Whatsapp
            && entry
                .template_of(&row.step)
                .is_some_and(|t| t.category == TemplateCategory::Marketing);
        !marketing || self.take_cap_slot("", cap, row).await
    }

    /// Takes one of the contact's send slots of a cap of `scope` (`""` the
    /// portfolio's, else a campaign's; in the store, shared by every
    /// instance). A contact whose slots are all held by other sends is
    /// excluded `frequency_cap`; when the store does not answer, the claim
    /// goes back (the request never left, so it is no attempt) with a retry
    /// time.
    async fn take_cap_slot(&self, scope: &str, cap: FrequencyCap, row: &DispatchRecord) -> bool {
        let (id, contact) = (&self.state.id, &row.contact);
        let now = Utc::now();
        let back = match self
            .store
            .take_send_slot(scope, contact, &send_id(id, &row.step, contact), cap, now)
            .await
        {
            Ok(SlotTake::Taken | SlotTake::Known) => return true,
            Ok(SlotTake::Full { .. }) => {
                let reason = ExclusionReason::FrequencyCap;
                let excluded = Outcome::Excluded {
                    reason: reason.clone(),
                };
                match self.store.record_outcome(id, contact, &excluded, now).await {
                    Ok(()) => self.excluded(contact, &row.step, &reason),
                    Err(e) => {
                        tracing::error!(campaign = %id, contact = %contact, error = %e, "cannot exclude a contact over the frequency cap; a restart settles its claim unknown, though nothing was sent");
                    }
                }
                return false;
            }
            Err(e) => {
                tracing::warn!(campaign = %id, error = %e, "cannot count the message against the frequency cap; the contact goes back to pending");
                Outcome::Retry {
                    code: None,
                    not_before: Some(now + chrono::Duration::seconds(1)),
                }
            }
        };
        if let Err(e) = self.store.record_outcome(id, contact, &back, now).await {
            tracing::error!(campaign = %id, contact = %contact, error = %e, "cannot give back a claim held for the frequency cap");
        }
        false
    }

    pub(super) async fn count_recipient(&self, contact: &ContactKey) -> bool {
        let Some(limit) = self.env.portfolio_limit() else {
            return true;
        };
        let now = Utc::now();
        let retry_at = match self.store.count_recipient(contact, now, limit).await {
            Ok(RecipientCount::Counted | RecipientCount::Known) => {
                self.env.note_recipient(contact);
                return true;
            }
            Ok(RecipientCount::Full { until }) => {
                self.env.portfolio_full(until);
                let why = self.env.portfolio_wait(contact).unwrap_or_else(|| {
                    format!("portfolio limit of {limit} unique recipients per 24 h reached")
                });
                self.state.set_wait(Some(("portfolio_limit", why)));
                // Looked at again soon, not when the oldest place frees: a
                // limit Meta raises meanwhile frees places at once. Until
                // then the window known full holds it without a claim.
                until.min(now + chrono::Duration::seconds(admission::PORTFOLIO_RECHECK_SECS))
            }
            Err(e) => {
                tracing::warn!(campaign = %self.state.id, error = %e, "cannot count the recipient against the portfolio limit; the contact goes back to pending");
                now + chrono::Duration::seconds(1)
            }
        };
        let back = Outcome::Retry {
            code: None,
            not_before: Some(retry_at),
        };
        if let Err(e) = self
            .store
            .record_outcome(&self.state.id, contact, &back, Utc::now())
            .await
        {
            // The row stays claimed by this live instance; a restart
            // settles it `unknown`, though nothing was sent.
            tracing::error!(campaign = %self.state.id, contact = %contact, error = %e, "cannot give back a claim held for the portfolio limit");
        }
        false
    }
}
