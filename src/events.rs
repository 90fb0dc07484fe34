//! `wa.events`: what downstream consumers (AI agents, bots, analytics) learn.
//!
//! JSON events keyed by contact id. Each publish waits for the broker's
//! acknowledgement, so a webhook is answered 200 only once its events are
//! durable in Kafka too; Meta redelivers otherwise, and consumers must
//! de-duplicate by `message_id` / (`wamid`, `status`) (at-least-once).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::CampaignKind;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use crate::ingest::client_config;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A delivery status of a campaign message.
    Status {
        campaign_id: String,
        /// `test` for a test campaign's event; absent for a real one.
        #[serde(skip_serializing_if = "CampaignKind::is_real")]
        campaign_kind: CampaignKind,
        /// The journey step whose message it is (the first step's id for a
        /// one-step campaign).
        step: String,
        contact: String,
        /// The occurrence (order, cart) of a triggered campaign's contact.
        #[serde(skip_serializing_if = "Option::is_none")]
        occurrence: Option<String>,
        status: String,
        wamid: Option<String>,
        timestamp: DateTime<Utc>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<EventError>,
    },
    /// A customer's message, attributed to the campaign it answers.
    Reply {
        campaign_id: Option<String>,
        /// `test` for a test campaign's event; absent for a real one.
        #[serde(skip_serializing_if = "CampaignKind::is_real")]
        campaign_kind: CampaignKind,
        /// The journey step the contact was at when it replied.
        step: Option<String>,
        contact: String,
        /// The occurrence (order, cart) of a triggered campaign's contact.
        #[serde(skip_serializing_if = "Option::is_none")]
        occurrence: Option<String>,
        /// From the campaign's `reply_routing.agent`.
        agent: Option<String>,
        tags: Vec<String>,
        message_id: String,
        /// The campaign message it answers (`context.id`), if any.
        in_reply_to: Option<String>,
        kind: String,
        text: Option<String>,
        payload: Option<String>,
        /// The business number (`phone_number_id`) that received it.
        received_by: Option<String>,
        /// The sender (its config id) whose message the contact got at
        /// that step: with `received_by`, where the conversation goes on.
        sent_by: Option<String>,
        /// A media's id (download it with `GET /{media_id}`), type and
        /// caption; a location; an interactive answer (a Flow's parsed);
        /// a reaction. Absent when the reply has none.
        #[serde(flatten)]
        details: Box<crate::webhook::payload::ReplyContent>,
        timestamp: DateTime<Utc>,
    },
    /// The contact opted out of (or back into) messages of `scope`.
    OptOut {
        contact: String,
        opted_out: bool,
        /// `marketing` (131050, `user_preferences`) or `all` (a keyword,
        /// unless `whatsapp.opt_out_keyword_scope` says `marketing`).
        scope: crate::domain::OptOutScope,
        /// `keyword`, `user_preferences` or `error_131050`.
        source: String,
        campaign_id: Option<String>,
        timestamp: DateTime<Utc>,
    },
    /// A campaign's observed state changed.
    Campaign {
        campaign_id: String,
        /// `test` for a test campaign's event; absent for a real one.
        #[serde(skip_serializing_if = "CampaignKind::is_real")]
        campaign_kind: CampaignKind,
        state: String,
        timestamp: DateTime<Utc>,
    },
    /// A campaign spec refused by validation, with every problem; the
    /// previous valid spec (if any) stays in force.
    SpecRejected {
        campaign_id: String,
        problems: Vec<String>,
        timestamp: DateTime<Utc>,
    },
    /// A contact that will not be sent, with its reason.
    Excluded {
        campaign_id: String,
        /// `test` for a test campaign's event; absent for a real one.
        #[serde(skip_serializing_if = "CampaignKind::is_real")]
        campaign_kind: CampaignKind,
        /// The journey step skipped (the first step's id for a contact
        /// excluded from the campaign).
        step: String,
        contact: String,
        /// The occurrence (order, cart) of a triggered campaign's contact.
        #[serde(skip_serializing_if = "Option::is_none")]
        occurrence: Option<String>,
        reason: String,
        timestamp: DateTime<Utc>,
    },
    /// A goal conversion credited to a campaign's journey (once per
    /// journey); `stopped` when it stopped the journey's steps not sent yet.
    Conversion {
        campaign_id: String,
        /// The step the journey was at (the first step's id before it
        /// moved on).
        step: String,
        contact: String,
        /// The occurrence (order, cart) of a triggered campaign's contact.
        #[serde(skip_serializing_if = "Option::is_none")]
        occurrence: Option<String>,
        goal: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        currency: Option<String>,
        stopped_journey: bool,
        /// When the conversion happened (the record's `at`).
        timestamp: DateTime<Utc>,
    },
    /// Meta stated the portfolio's messaging limit (unique users per
    /// rolling 24 h). Keyed by `portfolio`.
    MessagingLimit {
        /// Null when unlimited.
        limit: Option<u64>,
        /// The webhook field: `business_capability_update` or
        /// `phone_number_quality_update`.
        source: String,
        timestamp: DateTime<Utc>,
    },
    /// What Meta said of a template changed what is known of it. Keyed by
    /// the template's name.
    Template {
        template: String,
        language: String,
        /// Meta's latest status (`APPROVED`, `PAUSED`, …), or `PAUSED` /
        /// `DISABLED` after a 132015 / 132016 answer.
        status: Option<String>,
        /// Meta's latest quality score since the last approval.
        quality: Option<String>,
        reason: Option<String>,
        /// Why the campaigns that send it hold, or null when it may be sent.
        held: Option<String>,
        /// When Meta said it.
        timestamp: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventError {
    pub code: Option<i64>,
    pub class: Option<String>,
    pub message: Option<String>,
}

impl Event {
    pub fn contact(&self) -> &str {
        match self {
            Event::Status { contact, .. }
            | Event::Reply { contact, .. }
            | Event::OptOut { contact, .. }
            | Event::Excluded { contact, .. }
            | Event::Conversion { contact, .. } => contact,
            Event::Campaign { campaign_id, .. } | Event::SpecRejected { campaign_id, .. } => {
                campaign_id
            }
            Event::Template { template, .. } => template,
            Event::MessagingLimit { .. } => "portfolio",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot publish to {topic}: {message}")]
pub struct PublishError {
    pub topic: String,
    pub message: String,
}

#[derive(Clone)]
pub struct EventsProducer {
    producer: FutureProducer<crate::ingest::kafka_log::QuietContext>,
    topic: String,
}

impl EventsProducer {
    pub fn new(
        brokers: &str,
        topic: &str,
        extra: &[(String, String)],
    ) -> Result<Self, PublishError> {
        let mut cfg = client_config(brokers, extra);
        cfg.set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "10000");
        let producer = cfg
            .create_with_context(crate::ingest::kafka_log::QuietContext)
            .map_err(|e| PublishError {
                topic: topic.to_string(),
                message: e.to_string(),
            })?;
        Ok(EventsProducer {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Publishes the events and waits for every acknowledgement.
    pub async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        let payloads: Vec<(String, Vec<u8>)> = events
            .iter()
            .map(|e| Ok((e.contact().to_string(), serde_json::to_vec(e)?)))
            .collect::<Result<_, serde_json::Error>>()
            .map_err(|e| PublishError {
                topic: self.topic.clone(),
                message: e.to_string(),
            })?;
        let sends = payloads.iter().map(|(key, payload)| {
            self.producer.send(
                FutureRecord::to(&self.topic).key(key).payload(payload),
                Duration::from_secs(10),
            )
        });
        for result in futures::future::join_all(sends).await {
            if let Err((e, _)) = result {
                return Err(PublishError {
                    topic: self.topic.clone(),
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_with_their_type() {
        let at = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = Event::OptOut {
            contact: "+525512345678".into(),
            opted_out: true,
            scope: crate::domain::OptOutScope::All,
            source: "keyword".into(),
            campaign_id: Some("bday".into()),
            timestamp: at,
        };
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "opt_out");
        assert_eq!(v["contact"], "+525512345678");
        assert_eq!(v["source"], "keyword");
        let s = Event::Status {
            campaign_id: "bday".into(),
            campaign_kind: CampaignKind::Real,
            step: "primary".into(),
            contact: "+525512345678".into(),
            occurrence: None,
            status: "delivered".into(),
            wamid: Some("wamid.X".into()),
            timestamp: at,
            error: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["type"], "status");
        assert_eq!(v["step"], "primary");
        assert!(v.get("error").is_none(), "no error key without an error");
        assert!(
            v.get("occurrence").is_none(),
            "no occurrence key outside triggers"
        );
    }
}
