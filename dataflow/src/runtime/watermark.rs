//! The pipeline's watermark: the minimum over every source partition of its own watermark.
//!
//! Each worker reports, at the end of an epoch, every partition of its own that changed. The
//! reports are broadcast, so every stateful stage on every worker folds the same reports in
//! the same epoch order (see [`crate::operators::by_epoch`]) and computes the same `W(epoch)`: windows that end at or before
//! it, and sessions inactive for the session gap before it, are final after that epoch and
//! leave the dataflow's state. A finished partition (end of a file split) no longer holds the
//! watermark back; so at the end of a finite input the watermark is `+infinity`. A Kafka
//! partition that has been caught up and silent for the idle timeout is left out of the
//! minimum, unless every partition is idle, in which case the watermark stays where it was.

use clickflow_sources::EventTime;
use serde::{Deserialize, Serialize};

/// The watermark before any event: nothing is final.
pub const NO_WATERMARK: EventTime = EventTime::MIN;
/// The watermark after the end of a finite input: everything is final.
pub const END_OF_INPUT: EventTime = EventTime::MAX;

/// What a worker says about one of its partitions at the end of an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReport {
    /// Global index of the partition (Kafka partition number, or file split index).
    pub partition: u32,
    /// The partition's watermark, `None` before its first event.
    pub watermark: Option<EventTime>,
    /// The highest event time the partition has delivered (its clock, stored for resuming).
    pub highest: Option<EventTime>,
    /// The next offset to read in the partition.
    pub next_offset: i64,
    /// The partition will deliver nothing more (end of a file split).
    pub finished: bool,
    /// The partition has been caught up and silent for the idle timeout.
    pub idle: bool,
    /// The partition is still replaying input whose output was committed before a restart.
    pub replaying: bool,
    /// Events of the partition accepted during the epoch.
    pub arrived: u64,
    /// Wall-clock time (Unix ms) at which the reporting worker opened the epoch: no event of
    /// the epoch arrived earlier, so commit time minus this bounds their freshness.
    pub opened_at_ms: i64,
}

/// What the stages know before the first epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgressSeed {
    /// How many partitions the input has.
    pub partitions: usize,
    /// The watermark committed before a restart ([`NO_WATERMARK`] on a fresh start). Windows
    /// and sessions it had closed have their final rows committed: replay may rebuild them
    /// in part, but never emits them again, and the gate keeps them closed.
    pub committed_watermark: EventTime,
}

/// Folds partition reports into the pipeline watermark.
#[derive(Clone, Debug)]
pub struct WatermarkTracker {
    partitions: Vec<Option<PartitionReport>>,
    current: EventTime,
    held_at_end: EventTime,
}

impl WatermarkTracker {
    /// A tracker over `partitions` partitions, none of which has reported yet.
    pub fn new(partitions: usize) -> WatermarkTracker {
        WatermarkTracker {
            partitions: vec![None; partitions],
            current: NO_WATERMARK,
            held_at_end: NO_WATERMARK,
        }
    }

    /// Records a report.
    pub fn update(&mut self, report: PartitionReport) {
        let index = report.partition as usize;
        if index >= self.partitions.len() {
            self.partitions.resize(index + 1, None);
        }
        self.partitions[index] = Some(report);
    }

    /// Recomputes and returns the watermark (and [`WatermarkTracker::held_at_end`]); neither
    /// ever goes back.
    pub fn advance(&mut self) -> EventTime {
        if let Some(minimum) = self.minimum(true) {
            self.current = self.current.max(minimum);
        }
        if let Some(minimum) = self.minimum(false) {
            self.held_at_end = self.held_at_end.max(minimum);
        }
        self.current
    }

    /// The least watermark of the partitions that hold the pipeline back, a finished one
    /// at `+infinity` if `finished_ends`, at its own last watermark otherwise; `None` when
    /// every partition is idle.
    fn minimum(&self, finished_ends: bool) -> Option<EventTime> {
        let mut minimum = None::<EventTime>;
        for report in &self.partitions {
            let own = match report {
                None => NO_WATERMARK,
                Some(r) if r.finished && finished_ends => END_OF_INPUT,
                Some(r) if r.idle => continue,
                Some(r) => r.watermark.unwrap_or(NO_WATERMARK),
            };
            minimum = Some(minimum.map_or(own, |m| m.min(own)));
        }
        minimum
    }

    /// The watermark as of the last [`WatermarkTracker::advance`], but with each finished
    /// partition at its own last watermark rather than `+infinity`: the clock of what should
    /// stand as of the input's newest events when a finite input ends (the recommender's
    /// horizon), where the watermark itself closes everything.
    pub fn held_at_end(&self) -> EventTime {
        self.held_at_end
    }

    /// True once every partition has reported and none is replaying: from then on the
    /// sources read new input and the output is new.
    pub fn all_replayed(&self) -> bool {
        self.partitions
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| !r.replaying))
    }

    /// The watermark as of the last [`WatermarkTracker::advance`].
    pub fn current(&self) -> EventTime {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(partition: u32, watermark: EventTime, finished: bool, idle: bool) -> PartitionReport {
        PartitionReport {
            partition,
            watermark: Some(watermark),
            highest: Some(watermark),
            next_offset: 0,
            finished,
            idle,
            replaying: false,
            arrived: 0,
            opened_at_ms: 0,
        }
    }

    #[test]
    fn a_finished_partition_ends_the_watermark_but_holds_the_clock_held_at_end() {
        let mut tracker = WatermarkTracker::new(3);
        tracker.update(report(0, 5_000, false, false));
        tracker.update(report(1, 9_000, false, false));
        tracker.update(report(2, 1_000, false, true));
        // The idle partition is left out of both.
        assert_eq!(tracker.advance(), 5_000);
        assert_eq!(tracker.held_at_end(), 5_000);
        tracker.update(report(0, 7_000, true, false));
        assert_eq!(tracker.advance(), 9_000);
        assert_eq!(tracker.held_at_end(), 7_000);
        tracker.update(report(1, 12_000, true, false));
        assert_eq!(tracker.advance(), END_OF_INPUT);
        assert_eq!(tracker.held_at_end(), 7_000);
        // Neither goes back.
        tracker.update(report(0, 6_000, false, false));
        assert_eq!(tracker.advance(), END_OF_INPUT);
        assert_eq!(tracker.held_at_end(), 7_000);
    }
}
