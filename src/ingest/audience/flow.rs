//! Flow control: the sole-member check of the embedded store, pausing and
//! resuming partitions (back-pressure while records wait), storing offsets
//! up to the watermark, and the clean shutdown with its final commit.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::ingest::IngestError;
use crate::metrics;

use super::*;

impl AudienceIngest {
    /// Ends the wait to be the group's only member: resumes the partitions
    /// once this process holds all of them, or fails past the deadline.
    pub(super) fn check_sole_member(&self) -> Result<(), IngestError> {
        let Some(within) = self.config.sole_member_within else {
            return Ok(());
        };
        let (since, held) = {
            let shared = self.consumer.context().shared();
            if shared.resume_due {
                // The callback found every partition assigned at last.
                drop(shared);
                self.consumer.context().shared().resume_due = false;
                self.resume_all();
                return Ok(());
            }
            match shared.sole_wait {
                Some(since) => (since, shared.assigned.len()),
                None => return Ok(()),
            }
        };
        let mut total = self.stats.total_partitions.load(Ordering::Relaxed) as usize;
        if total == 0 {
            total = self.partition_count();
        }
        if total > 0 && held >= total {
            {
                let mut shared = self.consumer.context().shared();
                shared.sole_wait = None;
                shared.held_all = true;
            }
            self.stats.sole_wait.store(false, Ordering::Release);
            tracing::info!(partitions = total, "this process holds every audience partition: the only member of its group; staging starts");
            self.resume_all();
            return Ok(());
        }
        if since.elapsed() > within {
            return Err(IngestError::SharedGroup {
                group: self.config.group_id.clone(),
                held,
                total,
            });
        }
        Ok(())
    }

    pub(super) fn partition_count(&self) -> usize {
        let n = self
            .consumer
            .fetch_metadata(Some(&self.config.topic), Duration::from_secs(2))
            .ok()
            .and_then(|md| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == self.config.topic)
                    .map(|t| t.partitions().len())
            })
            .unwrap_or(0);
        self.stats
            .total_partitions
            .store(n as u32, Ordering::Relaxed);
        n
    }

    pub(super) fn pause_all(&self) {
        let assigned: Vec<i32> = self
            .consumer
            .context()
            .shared()
            .assigned
            .iter()
            .copied()
            .collect();
        self.set_paused(&assigned, true);
    }

    pub(super) fn resume_all(&self) {
        let paused: Vec<i32> = self
            .consumer
            .context()
            .shared()
            .paused
            .iter()
            .copied()
            .collect();
        self.set_paused(&paused, false);
    }

    pub(super) fn set_paused(&self, partitions: &[i32], pause: bool) {
        if partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition(&self.config.topic, p);
        }
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, pause, "cannot change the pause state of audience partitions");
            return;
        }
        let mut shared = self.consumer.context().shared();
        for &p in partitions {
            if pause {
                shared.paused.insert(p);
            } else {
                shared.paused.remove(&p);
            }
        }
        metrics::paused_partitions(&self.config.topic, shared.paused.len());
    }

    /// Records waiting for an unknown campaign or for the DLQ hold the
    /// watermark of their partition; past `max_buffered` of them, pause those
    /// partitions so the backlog stops growing. Resume once it drains below
    /// half.
    pub(super) fn apply_backpressure(&self) {
        let (waiting_partitions, count, paused) = {
            let shared = self.consumer.context().shared();
            if shared.sole_wait.is_some() {
                return; // paused until this process is the only member
            }
            let parts: BTreeSet<i32> = shared
                .waiting
                .iter()
                .chain(shared.unwritten.iter().map(|(r, _)| r))
                .map(|r| r.partition)
                .collect();
            (
                parts,
                shared.waiting.len() + shared.unwritten.len(),
                shared.paused.clone(),
            )
        };
        if count >= self.config.max_buffered {
            let to_pause: Vec<i32> = waiting_partitions.difference(&paused).copied().collect();
            if !to_pause.is_empty() {
                tracing::warn!(waiting = count, partitions = ?to_pause, "audience records wait for unknown campaigns or the dead-letter topic; pausing their partitions");
                self.set_paused(&to_pause, true);
            }
        } else if count <= self.config.max_buffered / 2 && !paused.is_empty() {
            let to_resume: Vec<i32> = paused.into_iter().collect();
            self.set_paused(&to_resume, false);
        }
    }

    pub(super) fn store_offsets(&self) {
        let advances = self.consumer.context().shared().marks.advances();
        if advances.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in &advances {
            let _ = tpl.add_partition_offset(&self.config.topic, *p, Offset::Offset(*next));
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // Happens when a partition was revoked in between: its offsets
            // are the next owner's business.
            tracing::debug!(error = %e, "storing audience offsets failed");
        }
    }

    pub(super) fn shutdown(self) {
        // Four fifths of the budget: the caller waits for the whole of it.
        let deadline = Instant::now() + self.config.shutdown_timeout.mul_f32(0.8);
        tracing::info!("audience ingest stopping: finishing fetched records");
        self.pause_all();
        // Records already fetched are staged. Records waiting for an unknown
        // campaign are not: the watermark stops before them, so the next
        // start (or the next owner) reads them again.
        let batch = std::mem::take(&mut self.consumer.context().shared().buffer);
        if !batch.is_empty() {
            self.process(batch, Some(deadline));
        }
        // Dead letters the DLQ did not take are read again at the next start
        // (the watermark stops before them).
        self.store_offsets();
        tracing::info!(
            staged = self.stats.staged.load(Ordering::Relaxed),
            dlq = self.stats.dlq.load(Ordering::Relaxed),
            "audience ingest drained"
        );
        // Commit exactly the watermark (not only the stored offsets) and leave
        // the group so partitions move to other instances at once.
        let mut tpl = TopicPartitionList::new();
        {
            let shared = self.consumer.context().shared();
            for &p in &shared.assigned {
                if let Some(next) = shared.marks.committable(p) {
                    let _ = tpl.add_partition_offset(&self.config.topic, p, Offset::Offset(next));
                }
            }
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
                tracing::warn!(error = %e, "final audience offset commit failed; the next start re-reads from the previous commit (staging is idempotent)");
            }
        }
        self.consumer
            .context()
            .closing
            .store(true, Ordering::Release);
        // Leave the group within the deadline. Dropping a consumer waits for
        // the group leave with no bound; a stuck coordinator must not keep
        // the process from exiting (the broker's session timeout then
        // releases our partitions, and our offsets are already committed).
        let closed = match self.consumer.close_queue() {
            Ok(()) => {
                while !self.consumer.closed() && Instant::now() < deadline {
                    let _ = self.consumer.poll(Duration::from_millis(50));
                }
                self.consumer.closed()
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot close the audience consumer");
                false
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.dlq.flush(remaining.min(Duration::from_secs(5)));
        if !closed {
            tracing::warn!("audience consumer did not leave the group in time; its partitions move after the session timeout");
            std::mem::forget(self.consumer);
            return;
        }
        tracing::info!("audience consumer left the group");
    }
}
