//! Contiguous offset watermark per partition.
//!
//! An offset may be stored only when its record and every earlier record of
//! the partition is durable (staged, dead-lettered, or deliberately skipped).
//! Records finish out of order (a record for a campaign not yet known waits
//! while later ones stage), so the storable offset is the lowest offset still
//! outstanding, or one past the highest seen when nothing is outstanding.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default, Clone)]
pub struct PartitionMark {
    outstanding: BTreeSet<i64>,
    first_seen: Option<i64>,
    highest_seen: Option<i64>,
    last_stored: Option<i64>,
}

impl PartitionMark {
    /// A record was fetched and is now in our hands.
    pub fn begin(&mut self, offset: i64) {
        self.outstanding.insert(offset);
        self.first_seen = Some(self.first_seen.map_or(offset, |f| f.min(offset)));
        self.highest_seen = Some(self.highest_seen.map_or(offset, |h| h.max(offset)));
    }

    /// The record is durable (or deliberately finished).
    pub fn complete(&mut self, offset: i64) {
        self.outstanding.remove(&offset);
    }

    /// The next offset to consume that Kafka may record as committed.
    pub fn committable(&self) -> Option<i64> {
        match self.outstanding.first() {
            Some(&lowest) => Some(lowest),
            None => self.highest_seen.map(|h| h + 1),
        }
    }

    /// The committable offset if it moved since the last call.
    pub fn take_advance(&mut self) -> Option<i64> {
        let next = self.committable()?;
        if self.last_stored.is_some_and(|s| s >= next) {
            return None;
        }
        // Storing the first offset we ever saw would say nothing new (and
        // could move a committed offset backwards after a seek).
        if self.first_seen.is_some_and(|f| next <= f) {
            return None;
        }
        self.last_stored = Some(next);
        Some(next)
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The committable offset, if at least one record completed (used when a
    /// partition is revoked: committing where we started would say nothing).
    pub fn progress(&self) -> Option<i64> {
        let next = self.committable()?;
        self.first_seen.is_none_or(|f| next > f).then_some(next)
    }
}

/// Marks of every partition this process owns.
#[derive(Debug, Default)]
pub struct Watermarks {
    marks: HashMap<i32, PartitionMark>,
}

impl Watermarks {
    pub fn begin(&mut self, partition: i32, offset: i64) {
        self.marks.entry(partition).or_default().begin(offset);
    }

    pub fn complete(&mut self, partition: i32, offset: i64) {
        if let Some(m) = self.marks.get_mut(&partition) {
            m.complete(offset);
        }
    }

    /// Offsets to store now, per partition.
    pub fn advances(&mut self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .marks
            .iter_mut()
            .filter_map(|(p, m)| m.take_advance().map(|o| (*p, o)))
            .collect();
        out.sort_unstable();
        out
    }

    pub fn committable(&self, partition: i32) -> Option<i64> {
        self.marks.get(&partition).and_then(|m| m.committable())
    }

    /// Forgets a partition that is no longer owned.
    pub fn remove(&mut self, partition: i32) -> Option<PartitionMark> {
        self.marks.remove(&partition)
    }

    pub fn outstanding(&self) -> usize {
        self.marks.values().map(|m| m.outstanding()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completion_advances_past_the_last_record() {
        let mut m = PartitionMark::default();
        for o in 10..15 {
            m.begin(o);
        }
        for o in 10..15 {
            m.complete(o);
        }
        assert_eq!(m.take_advance(), Some(15));
        assert_eq!(m.take_advance(), None, "no second store of the same offset");
    }

    #[test]
    fn a_waiting_record_holds_the_watermark_until_it_completes() {
        let mut m = PartitionMark::default();
        for o in 0..5 {
            m.begin(o);
        }
        m.complete(0);
        assert_eq!(m.take_advance(), Some(1));
        m.complete(1);
        // 2 waits (unknown campaign), 3 and 4 are staged.
        m.complete(3);
        m.complete(4);
        assert_eq!(
            m.take_advance(),
            Some(2),
            "must not pass the waiting record"
        );
        m.complete(2);
        assert_eq!(m.take_advance(), Some(5));
    }

    #[test]
    fn nothing_is_stored_before_any_record_completes() {
        let mut m = PartitionMark::default();
        m.begin(7);
        assert_eq!(m.take_advance(), None);
        m.complete(7);
        assert_eq!(m.take_advance(), Some(8));
    }

    #[test]
    fn gaps_in_offsets_do_not_block() {
        // Compacted topics and transaction markers leave offset gaps.
        let mut m = PartitionMark::default();
        m.begin(3);
        m.begin(9);
        m.complete(3);
        m.complete(9);
        assert_eq!(m.committable(), Some(10));
    }

    #[test]
    fn watermarks_are_per_partition() {
        let mut w = Watermarks::default();
        w.begin(0, 0);
        w.begin(1, 0);
        w.begin(1, 1);
        w.complete(0, 0);
        w.complete(1, 1);
        assert_eq!(w.advances(), vec![(0, 1)]);
        w.complete(1, 0);
        assert_eq!(w.advances(), vec![(1, 2)]);
        assert!(w.remove(1).is_some());
        assert_eq!(w.committable(1), None);
    }
}
