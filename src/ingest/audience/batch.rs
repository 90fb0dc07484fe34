//! One batch of records: each decided (stage, exclude, dead-letter, wait),
//! the staged ones written in one durable store write with retries, the
//! dead letters sent to the DLQ topic, the counters updated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::Consumer;

use crate::domain::{self, AudienceRecord, DesiredState, ExclusionReason, RecordError};
use crate::ingest::catalog::CatalogEntry;
use crate::ingest::dlq::DeadLetter;
use crate::ingest::IngestError;
use crate::metrics::{self, AudienceResult, CancelOutcome};
use crate::store::{StageOutcome, StageRequest};
use crate::sync::MutexExt;

use super::*;

impl AudienceIngest {
    pub(super) fn decide(
        &self,
        raw: &Raw,
        cache: &mut HashMap<String, Option<Arc<CatalogEntry>>>,
    ) -> Decision {
        let Some(payload) = raw.payload.as_deref() else {
            return Decision::DeadLetter("empty record (tombstone) on the audience topic".into());
        };
        let record = match AudienceRecord::from_json(payload) {
            Ok(r) => r,
            Err(RecordError::NoCampaign) => {
                return Decision::DeadLetter(
                    "record names no campaign (campaign_id is missing or empty)".into(),
                )
            }
            Err(e) => return Decision::DeadLetter(e.to_string()),
        };
        let entry = cache
            .entry(record.campaign_id.clone())
            .or_insert_with(|| self.catalog.get(&record.campaign_id))
            .clone();
        let Some(entry) = entry else {
            // Until the campaigns topic was read to its end, "unknown" may
            // only mean "not read yet": wait, whatever the clock says.
            if self.catalog.is_caught_up()
                && raw.fetched_at.elapsed() >= self.config.unknown_campaign_wait
            {
                return Decision::DeadLetter(format!(
                    "campaign {} is not known on the campaigns topic (waited {} s; publish its spec first)",
                    record.campaign_id,
                    raw.fetched_at.elapsed().as_secs()
                ));
            }
            return Decision::Wait;
        };
        if let Some(problem) = event_problem(&entry, &record) {
            return Decision::DeadLetter(problem);
        }
        let mut staged = domain::stage(
            &entry.spec,
            &entry.template,
            raw.key.as_deref(),
            &record,
            self.config.default_region.as_deref(),
        );
        let now = Utc::now();
        if let Some(trigger) = &entry.trigger {
            domain::stage_occurrence(
                trigger,
                entry.spec.schedule.timezone(),
                &record,
                &mut staged,
                now,
            );
        }
        let mut exclusion = staged.exclusion;
        if exclusion.is_none() && entry.spec.state == DesiredState::Ended {
            exclusion = Some(ExclusionReason::OutsideWindow);
        }
        // Excluded at staging, the journey ends there: nothing to freeze.
        let journey = match exclusion {
            None => entry.staged_journey((&record).into(), &staged.contact),
            Some(_) => Default::default(),
        };
        Decision::Stage(Box::new(StageRequest {
            campaign_id: record.campaign_id,
            contact: staged.contact,
            shard: raw.partition.max(0) as u32,
            seq: raw.offset.max(0) as u64,
            params: staged.params,
            exclusion,
            send_after: staged.send_after,
            timezone: staged.timezone,
            tags: record.tags.to_row(),
            name: record.contact.name,
            staged_at: now,
            journey,
        }))
    }

    /// Applies the cancelling records of a staged batch whose occurrence was
    /// staged already (a `Duplicate`): the row's journey stops, its current
    /// step excluded unless it was claimed. A cancel staged first (`Excluded`)
    /// needs nothing more: the trigger after it is a duplicate. False when
    /// the store write never succeeded (the batch is then not complete).
    fn cancel(
        &self,
        requests: &[StageRequest],
        outcomes: &[StageOutcome],
        deadline: Option<Instant>,
    ) -> bool {
        for (req, outcome) in requests.iter().zip(outcomes) {
            let Some(reason @ ExclusionReason::Cancelled(_)) = &req.exclusion else {
                continue;
            };
            if *outcome == StageOutcome::Excluded {
                metrics::trigger_cancel(&req.campaign_id, CancelOutcome::Ahead);
                continue;
            }
            if *outcome != StageOutcome::Duplicate {
                continue;
            }
            let Some(stopped) = self.retry("cancel a triggered occurrence", deadline, || {
                self.rt
                    .block_on(self.store.stop_journey(
                        &req.campaign_id,
                        &req.contact,
                        reason,
                        req.staged_at,
                    ))
                    .map_err(IngestError::from)
            }) else {
                return false;
            };
            let outcome = match stopped {
                Some(stop) if stop.excluded => {
                    let step = self.catalog.step_name(&req.campaign_id, &stop.step);
                    metrics::exclusion(&req.campaign_id, &step, reason.label());
                    CancelOutcome::Cancelled
                }
                Some(_) => CancelOutcome::Stopped,
                None => CancelOutcome::Late,
            };
            metrics::trigger_cancel(&req.campaign_id, outcome);
        }
        true
    }

    /// Decides, stages and dead-letters one batch; marks every record that
    /// became durable complete. `deadline` bounds retries during shutdown.
    pub(super) fn process(&self, batch: Vec<Raw>, deadline: Option<Instant>) -> bool {
        let decisions = self.decide_all(&batch);
        let mut requests = Vec::new();
        let mut request_src = Vec::new();
        let mut letters = Vec::new();
        let mut waiting = Vec::new();
        for (raw, decision) in batch.into_iter().zip(decisions) {
            match decision {
                Decision::Stage(req) => {
                    requests.push(*req);
                    request_src.push((raw.partition, raw.offset));
                }
                Decision::DeadLetter(error) => letters.push((raw, error)),
                Decision::Wait => waiting.push(raw),
            }
        }

        if !requests.is_empty() && !self.stage(&requests, request_src, deadline) {
            return false;
        }

        if !letters.is_empty() {
            for (raw, error) in &letters {
                tracing::warn!(partition = raw.partition, offset = raw.offset, error = %error, "audience record sent to the dead-letter topic");
            }
            self.consumer.context().shared().unwritten.extend(letters);
            self.write_dead_letters();
        }

        let mut shared = self.consumer.context().shared();
        // A record waits only while its partition is still ours.
        waiting.retain(|r| shared.assigned.contains(&r.partition));
        shared.waiting.extend(waiting);
        self.stats
            .waiting
            .store(shared.waiting.len() as u64, Ordering::Relaxed);
        true
    }

    /// Decides every record of a batch. Decoding and phone validation are
    /// CPU work: a large batch is split across two threads (the machine
    /// profile we size for has 2 cores).
    fn decide_all(&self, batch: &[Raw]) -> Vec<Decision> {
        if batch.len() < 1024 {
            let mut cache = HashMap::new();
            return batch.iter().map(|r| self.decide(r, &mut cache)).collect();
        }
        let mid = batch.len() / 2;
        std::thread::scope(|s| {
            let (a, b) = batch.split_at(mid);
            let h = s.spawn(|| {
                let mut cache = HashMap::new();
                a.iter()
                    .map(|r| self.decide(r, &mut cache))
                    .collect::<Vec<_>>()
            });
            let mut cache = HashMap::new();
            let tail: Vec<Decision> = b.iter().map(|r| self.decide(r, &mut cache)).collect();
            let mut head = h.join().unwrap_or_default();
            head.extend(tail);
            head
        })
    }

    /// Stages the requests of a batch in one durable write (retried until
    /// `deadline`), counts them by outcome and marks their offsets
    /// complete. False when the write never succeeded.
    fn stage(
        &self,
        requests: &[StageRequest],
        sources: Vec<(i32, i64)>,
        deadline: Option<Instant>,
    ) -> bool {
        let Some(outcomes) = self.retry("stage audience batch", deadline, || {
            self.rt
                .block_on(self.store.stage_batch(requests))
                .map_err(IngestError::from)
        }) else {
            return false;
        };
        if !self.cancel(requests, &outcomes, deadline) {
            return false;
        }
        let (mut staged, mut excluded, mut dup) = (0u64, 0u64, 0u64);
        for (req, outcome) in requests.iter().zip(&outcomes) {
            match outcome {
                StageOutcome::Staged => staged += 1,
                StageOutcome::Excluded => {
                    excluded += 1;
                    if let Some(reason) = &req.exclusion {
                        // Staging excludes from the first step.
                        let step = self.catalog.step_name(&req.campaign_id, "");
                        metrics::exclusion(&req.campaign_id, &step, reason.label());
                    }
                }
                StageOutcome::Duplicate => dup += 1,
            }
        }
        self.count(AudienceResult::Staged, &self.stats.staged, staged);
        self.count(AudienceResult::Excluded, &self.stats.excluded, excluded);
        self.count(AudienceResult::Duplicate, &self.stats.duplicate, dup);
        let mut shared = self.consumer.context().shared();
        for (p, o) in sources {
            shared.marks.complete(p, o);
        }
        true
    }

    /// One write of every dead letter not yet acknowledged, when it is due
    /// (at once the first time, then backing off from 1 s to 60 s while the
    /// DLQ keeps failing). A record is marked
    /// complete only once the DLQ acknowledged it: until then its partition's
    /// committed offset stays before it, so neither a restart nor a
    /// rebalance loses it. Between tries the loop goes on (the heartbeat
    /// moves, records of other partitions are staged); a try itself blocks
    /// the loop until the broker answers or the producer's 10 s
    /// `message.timeout.ms` runs out.
    pub(super) fn write_dead_letters(&self) {
        let letters = {
            let mut shared = self.consumer.context().shared();
            if shared.unwritten.is_empty() {
                return;
            }
            let due = shared.dlq_retry.is_none_or(|(at, _)| Instant::now() >= at);
            if !due {
                return;
            }
            std::mem::take(&mut shared.unwritten)
        };
        let dead: Vec<DeadLetter<'_>> = letters
            .iter()
            .map(|(raw, error)| DeadLetter {
                source_topic: &self.config.topic,
                partition: raw.partition,
                offset: raw.offset,
                key: raw.key.as_deref(),
                payload: raw.payload.as_deref(),
                error,
            })
            .collect();
        let result = self.rt.block_on(self.dlq.send_all(&dead));
        drop(dead);
        let mut shared = self.consumer.context().shared();
        let mut failure = self.stats.dead_letters.lock_or_recover();
        match result {
            Ok(()) => {
                self.count(AudienceResult::Dlq, &self.stats.dlq, letters.len() as u64);
                for (raw, _) in &letters {
                    shared.marks.complete(raw.partition, raw.offset);
                }
                if shared.unwritten.is_empty() {
                    if failure.take().is_some() {
                        tracing::info!(topic = %self.dlq.topic(), "dead-letter topic takes writes again");
                    }
                    shared.dlq_retry = None;
                }
            }
            Err(e) => {
                let delay = shared.dlq_retry.map_or(Duration::from_secs(1), |(_, d)| {
                    (d * 2).min(Duration::from_secs(60))
                });
                shared.dlq_retry = Some((Instant::now() + delay, delay));
                // A letter waits only while its partition is still ours.
                let assigned = shared.assigned.clone();
                shared.unwritten.extend(
                    letters
                        .into_iter()
                        .filter(|(r, _)| assigned.contains(&r.partition)),
                );
                let since = failure.as_ref().map_or_else(Instant::now, |f| f.since);
                let now = DlqFailure {
                    topic: self.dlq.topic().to_string(),
                    records: shared.unwritten.len(),
                    since,
                    error: e.to_string(),
                };
                tracing::error!(retry_in_s = delay.as_secs(), "{}", now.describe());
                *failure = Some(now);
            }
        }
        metrics::dead_letters_unwritten(self.dlq.topic(), shared.unwritten.len());
    }

    pub(super) fn count(&self, result: AudienceResult, counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
            metrics::audience_records(result, n);
        }
    }

    /// Retries `op` with capped exponential backoff until it succeeds or the
    /// deadline passes. While retrying, the owned partitions stay paused so
    /// nothing more is fetched (backpressure reaches the broker).
    pub(super) fn retry<T>(
        &self,
        what: &str,
        deadline: Option<Instant>,
        mut op: impl FnMut() -> Result<T, IngestError>,
    ) -> Option<T> {
        let mut delay = Duration::from_millis(100);
        let mut paused = false;
        loop {
            // Retrying is progress for the systemd watchdog: a store outage
            // must not become a restart loop (`STATUS=` says what we wait for).
            self.stats.heartbeat.fetch_add(1, Ordering::Relaxed);
            match op() {
                Ok(v) => {
                    if paused {
                        self.resume_all();
                        *self.stats.retrying.lock_or_recover() = None;
                    }
                    return Some(v);
                }
                Err(e) => {
                    *self.stats.retrying.lock_or_recover() = Some(format!("cannot {what}: {e}"));
                    tracing::error!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot {what}; retrying (offsets are not stored meanwhile)");
                    if !paused {
                        self.pause_all();
                        paused = true;
                    }
                    if deadline.is_some_and(|d| Instant::now() + delay > d) {
                        *self.stats.retrying.lock_or_recover() = None;
                        return None;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Why a cancelling record cannot be applied, for the dead-letter topic:
/// it names a campaign without a trigger, an event the trigger does not
/// cancel on, or no occurrence.
fn event_problem(entry: &CatalogEntry, record: &AudienceRecord) -> Option<String> {
    let event = record.event.as_deref()?.trim();
    let campaign = &record.campaign_id;
    let Some(trigger) = &entry.trigger else {
        return Some(format!(
            "event record \"{event}\" for campaign {campaign}, which has no trigger: events cancel occurrences of triggered campaigns only"
        ));
    };
    if !trigger.cancels_on(event) {
        return Some(format!(
            "event \"{event}\" does not cancel campaign {campaign} (its trigger.cancel_on is [{}]); add it there or stop sending it",
            trigger.cancel_on.join(", ")
        ));
    }
    if record
        .occurrence
        .as_deref()
        .is_none_or(|o| o.trim().is_empty())
    {
        return Some(format!(
            "event record \"{event}\" for campaign {campaign} names no occurrence: set occurrence to the id its trigger record carried"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CampaignSpec;

    fn entry(trigger: &str) -> CatalogEntry {
        let spec = CampaignSpec::from_json(
            format!(
                r#"{{"id":"cart","senders":["1"],"template":{{"name":"t","language":"es"}}{trigger}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        CatalogEntry::compile(spec).unwrap()
    }

    fn record(json: &str) -> AudienceRecord {
        AudienceRecord::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn a_cancel_names_a_triggered_campaign_an_event_it_cancels_on_and_an_occurrence() {
        let triggered = entry(r#","trigger":{"delay":"1h","cancel_on":["order_placed"]}"#);
        let cancel = r#"{"campaign_id":"cart","contact":"+5215512345678","occurrence":"c-1","event":"order_placed"}"#;
        assert_eq!(event_problem(&triggered, &record(cancel)), None);
        let trigger =
            r#"{"campaign_id":"cart","contact":{"phone":"+5215512345678"},"occurrence":"c-1"}"#;
        assert_eq!(
            event_problem(&triggered, &record(trigger)),
            None,
            "not an event"
        );

        let plain = event_problem(&entry(""), &record(cancel)).unwrap();
        assert!(plain.contains("has no trigger"), "{plain}");
        let other = cancel.replace("order_placed", "order_shipped");
        let why = event_problem(&triggered, &record(&other)).unwrap();
        assert!(
            why.contains("does not cancel campaign cart") && why.contains("[order_placed]"),
            "{why}"
        );
        let bare = cancel.replace(r#""occurrence":"c-1","#, "");
        let why = event_problem(&triggered, &record(&bare)).unwrap();
        assert!(why.contains("names no occurrence"), "{why}");
    }
}
