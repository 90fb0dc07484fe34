//! Inbound messages: replies attributed to their campaign (or parked for
//! the message they answer), keyword opt-outs, parked replies settled, and
//! `user_preferences` opt-outs.

use std::sync::Arc;

use chrono::Utc;

use super::payload::{parse_timestamp, Inbound, UserPreference};
use crate::domain::{ContactKey, DispatchState, OptOutScope};
use crate::events::Event;
use crate::metrics;
use crate::store::{ContactRecord, ParkedReply, StatusApplied, StatusUpdate};

use super::*;

impl WebhookProcessor {
    /// Replies parked for their `context.id`: those whose wamid is now
    /// indexed, or whose wait ended (then the contact's latest campaign),
    /// are taken out of the store (one instance wins each), processed and
    /// published. A failure parks the reply again for the next round.
    /// Returns how many were settled.
    pub async fn settle_parked_replies(&self) -> usize {
        let parked = match self.store.parked_replies(500).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list parked replies; trying again");
                return 0;
            }
        };
        let wait = chrono::Duration::from_std(self.settings.reply_context_wait)
            .unwrap_or(chrono::Duration::zero());
        let mut settled = 0;
        for reply in parked {
            let due = Utc::now() - reply.parked_at >= wait
                || matches!(self.store.lookup_wamid(&reply.wamid).await, Ok(Some(_)));
            if !due {
                continue;
            }
            match self.store.take_parked_reply(&reply.message_id).await {
                Ok(true) => {}
                Ok(false) => continue, // another instance took it
                Err(e) => {
                    tracing::warn!(message_id = %reply.message_id, error = %e, "cannot take a parked reply; trying again");
                    continue;
                }
            }
            let message: Inbound = match serde_json::from_str(&reply.message) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(message_id = %reply.message_id, error = %e, "a parked reply does not parse; dropped");
                    continue;
                }
            };
            let received_by = message.received_by.clone();
            let published = match self
                .inbound(&message, Some(reply.parked_at), received_by.as_deref())
                .await
            {
                Ok(events) => match &self.events {
                    Some(producer) if !events.is_empty() => {
                        producer.publish(&events).await.map_err(ProcessError::from)
                    }
                    _ => Ok(()),
                },
                Err(e) => Err(e),
            };
            match published {
                Ok(()) => settled += 1,
                Err(e) => {
                    tracing::warn!(message_id = %reply.message_id, error = %e, "cannot settle a parked reply; it waits for the next round");
                    if let Err(e) = self.store.park_reply(&reply).await {
                        tracing::error!(message_id = %reply.message_id, error = %e, "a reply could not be parked again and is lost to the agent");
                    }
                }
            }
        }
        settled
    }

    /// Settles parked replies every `every` until the processor is dropped
    /// elsewhere (the task ends with the runtime).
    pub async fn run_parked_replies(self: Arc<Self>, every: std::time::Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.settle_parked_replies().await;
        }
    }

    pub(super) fn is_opt_out_keyword(&self, text: Option<&str>) -> bool {
        text.map(|t| t.trim().to_uppercase())
            .is_some_and(|t| self.settings.opt_out_keywords.contains(&t))
    }

    /// One inbound message. `parked` is when it was parked, for a reply
    /// taken back from the store; a new one whose `context.id` is not
    /// indexed yet is parked (nothing published yet) instead of being
    /// attributed to a guess.
    pub(super) async fn inbound(
        &self,
        m: &Inbound,
        parked: Option<chrono::DateTime<Utc>>,
        received_by: Option<&str>,
    ) -> Result<Vec<Event>, ProcessError> {
        // A system message (a changed number or user id) is no reply; its
        // link was stored with the change.
        if m.kind.as_deref() == Some("system") {
            return Ok(Vec::new());
        }
        // A user Meta names by user id only (a username) has no `from`.
        let sender = match identity::named_contact(m.from.as_deref(), m.from_user_id.as_deref()) {
            Ok(Some(contact)) => contact,
            Ok(None) => return Ok(rejected("message", "neither from nor from_user_id")),
            Err(e) => return Ok(rejected("message", &format!("from_user_id {e}"))),
        };
        let at = match parse_timestamp(m.timestamp.as_ref(), Utc::now()) {
            Ok(at) => at,
            Err(e) => return Ok(rejected("message", &e)),
        };
        let context = present(m.context.as_ref().and_then(|c| c.id.as_deref()));
        // The campaign message it answers, else the contact's latest campaign.
        let correlated = self.correlate(context, None).await?;
        let (kind, text, payload) = m.content();
        let opts_out =
            self.is_opt_out_keyword(text.as_deref()) || self.is_opt_out_keyword(payload.as_deref());
        if correlated.is_none()
            && self
                .park_for_context(m, context, parked, (&sender, received_by), opts_out, at)
                .await?
        {
            return Ok(Vec::new());
        }
        let (campaign, contact) = match correlated {
            Some((campaign, contact)) => (Some(campaign), contact),
            None => match self.latest_campaign(&sender).await? {
                Some(found) => found,
                None => (None, sender),
            },
        };
        let (step, sent_by) = match &campaign {
            Some(campaign) => match self.mark_replied(campaign, &contact, at).await? {
                Some((step, sent_by)) => (Some(step), sent_by),
                None => (None, None),
            },
            None => (None, None),
        };
        let mut events = Vec::new();
        if opts_out {
            let scope = self.settings.keyword_scope;
            self.set_person_opt_out(&contact, scope, true, at).await?;
            events.push(Event::OptOut {
                contact: contact.as_str().to_string(),
                opted_out: true,
                scope,
                source: "keyword".into(),
                campaign_id: campaign.clone(),
                timestamp: at,
            });
        }
        let entry = campaign.as_deref().and_then(|c| self.catalog.get(c));
        events.push(Event::Reply {
            campaign_kind: entry.as_ref().map(|e| e.spec.kind).unwrap_or_default(),
            campaign_id: campaign,
            step,
            contact: contact.as_str().to_string(),
            occurrence: contact.occurrence().map(str::to_string),
            agent: entry
                .as_ref()
                .and_then(|e| e.spec.reply_routing.as_ref().map(|r| r.agent.clone())),
            tags: entry
                .as_ref()
                .map(|e| e.spec.tags.clone())
                .unwrap_or_default(),
            message_id: m.id.clone().unwrap_or_default(),
            in_reply_to: context.map(String::from),
            kind,
            text,
            payload,
            received_by: received_by.map(str::to_string),
            sent_by,
            details: Box::new(m.details()),
            timestamp: at,
        });
        Ok(events)
    }

    /// The contact's latest campaign and its row there (a triggered
    /// campaign's message: the row of its occurrence), from the record of
    /// the identity that wrote, else of the identity linked to it (a
    /// contact staged by phone who answers by user id).
    async fn latest_campaign(
        &self,
        sender: &ContactKey,
    ) -> Result<Option<(Option<String>, ContactKey)>, StoreError> {
        let mut key = sender.clone();
        let mut record = self.store.get_contact(&key).await?;
        if let Some(linked) = record
            .as_ref()
            .filter(|r| r.last_campaign.is_none())
            .and_then(|r| r.linked.clone())
        {
            record = self.store.get_contact(&linked).await?;
            key = linked;
        }
        Ok(match record {
            Some(ContactRecord {
                last_campaign: Some(campaign),
                last_occurrence,
                ..
            }) => {
                let row = match last_occurrence.as_deref() {
                    Some(occurrence) => key.with_occurrence(occurrence),
                    None => key,
                };
                Some((Some(campaign), row))
            }
            _ => None,
        })
    }

    /// A reply to a message whose wamid is not indexed yet waits for it
    /// (`http.reply_context_wait_ms`): it is parked and answers true. A STOP
    /// holds from now on, not from when the reply is settled (its `opt_out`
    /// event is published then). A parked reply taken back after its wait
    /// (`parked` set) is not parked again: it goes to the contact's latest
    /// campaign.
    pub(super) async fn park_for_context(
        &self,
        m: &Inbound,
        context: Option<&str>,
        parked: Option<chrono::DateTime<Utc>>,
        (sender, received_by): (&ContactKey, Option<&str>),
        opts_out: bool,
        at: chrono::DateTime<Utc>,
    ) -> Result<bool, ProcessError> {
        let (Some(wamid), Some(id)) = (context, present(m.id.as_deref())) else {
            return Ok(false);
        };
        if parked.is_some() {
            metrics::webhook_status("reply_unattributed");
            return Ok(false);
        }
        if self.settings.reply_context_wait.is_zero() {
            return Ok(false);
        }
        if opts_out {
            self.set_person_opt_out(sender, self.settings.keyword_scope, true, at)
                .await?;
        }
        // The message as Meta sent it, with the number that received it.
        let mut message = serde_json::to_value(m).unwrap_or_default();
        if let (Some(by), Some(o)) = (received_by, message.as_object_mut()) {
            o.insert("received_by".into(), by.into());
        }
        self.store
            .park_reply(&ParkedReply {
                message_id: id.to_string(),
                wamid: wamid.to_string(),
                message: message.to_string(),
                parked_at: Utc::now(),
            })
            .await?;
        metrics::webhook_status("reply_parked");
        Ok(true)
    }

    /// Marks the contact's current step replied; answers that step and the
    /// sender that sent its message (none when the contact has no row in
    /// the campaign).
    pub(super) async fn mark_replied(
        &self,
        campaign: &str,
        contact: &ContactKey,
        at: chrono::DateTime<Utc>,
    ) -> Result<Option<(String, Option<String>)>, ProcessError> {
        let update = StatusUpdate {
            state: DispatchState::Replied,
            at,
            wamid: None,
            error_code: None,
            error_class: None,
            error_message: None,
            defer_until: None,
            deferral: None,
            pricing: None,
        };
        Ok(
            match self.store.apply_status(campaign, contact, &update).await? {
                StatusApplied::Changed {
                    to, step, record, ..
                } => {
                    let step = self.catalog.step_name(campaign, &step);
                    metrics::funnel(campaign, &step, to);
                    Some((step, record.status_sender(&update).map(str::to_string)))
                }
                StatusApplied::Unchanged { step, sender, .. } => {
                    Some((self.catalog.step_name(campaign, &step), sender))
                }
                StatusApplied::Missing => None,
            },
        )
    }

    pub(super) async fn preference(&self, p: &UserPreference) -> Result<Vec<Event>, ProcessError> {
        let contact = match identity::named_contact(p.wa_id.as_deref(), p.user_id.as_deref()) {
            Ok(Some(contact)) => contact,
            Ok(None) => return Ok(Vec::new()),
            Err(e) => return Ok(rejected("user preference", &format!("user_id {e}"))),
        };
        let Some(value) = p.value.as_deref() else {
            return Ok(Vec::new());
        };
        if p.category
            .as_deref()
            .is_some_and(|c| c != "marketing_messages")
        {
            return Ok(Vec::new());
        }
        let opted_out = match value {
            "stop" => true,
            "resume" => false,
            _ => return Ok(Vec::new()),
        };
        let at = match parse_timestamp(p.timestamp.as_ref(), Utc::now()) {
            Ok(at) => at,
            Err(e) => return Ok(rejected("user preference", &e)),
        };
        // A `marketing_messages` preference covers marketing templates only.
        self.set_person_opt_out(&contact, OptOutScope::Marketing, opted_out, at)
            .await?;
        Ok(vec![Event::OptOut {
            contact: contact.as_str().to_string(),
            opted_out,
            scope: OptOutScope::Marketing,
            source: "user_preferences".into(),
            campaign_id: None,
            timestamp: at,
        }])
    }
}
