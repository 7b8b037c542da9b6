//! Per-partition watermarks and the late-event rule.
//!
//! A partition's watermark is the highest event time it has delivered minus the allowed
//! lateness. An event is late when its window ended at or before the watermark of its own
//! partition, as it stood just before the event. Deciding on the partition's own history
//! (rather than on the pipeline's watermark at the moment the event happens to be processed)
//! makes the decision a function of the partition's order alone: the same input gives the
//! same late events on any number of workers, in any interleaving of partitions, and again
//! when a crashed pipeline replays it. A partition that runs ahead never makes another
//! partition's events late. The pipeline's watermark (the minimum over partitions, see
//! [`crate::runtime::watermark`]) is never ahead of any partition's, so an event accepted here always
//! finds its window still open.

use clickflow_sources::EventTime;

use crate::config::DataflowConfig;

/// The watermark of one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionClock {
    highest: Option<EventTime>,
}

impl PartitionClock {
    /// A clock that has already seen events up to `highest` (restored after a restart).
    pub fn seeded(highest: Option<EventTime>) -> PartitionClock {
        PartitionClock { highest }
    }

    /// The highest event time accepted so far.
    pub fn highest(&self) -> Option<EventTime> {
        self.highest
    }

    /// The watermark: highest event time delivered minus the allowed lateness, or `None`
    /// before the first event.
    pub fn watermark(&self, config: &DataflowConfig) -> Option<EventTime> {
        self.highest
            .map(|h| h.saturating_sub(config.allowed_lateness_ms))
    }

    /// Judges the next event of the partition, at time `ts`, then advances the clock.
    /// Returns the watermark it was late against, or `None` when it counts.
    pub fn observe(&mut self, ts: EventTime, config: &DataflowConfig) -> Option<EventTime> {
        let late = self
            .watermark(config)
            .filter(|&watermark| config.window.window_of(ts).end <= watermark);
        if late.is_none() {
            self.highest = Some(self.highest.map_or(ts, |h| h.max(ts)));
        }
        late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_late_only_once_its_window_is_behind_the_watermark() {
        let config = DataflowConfig::default(); // 60 s windows, 30 s lateness
        let mut clock = PartitionClock::default();
        assert_eq!(clock.observe(120_000, &config), None);
        // Watermark 90 s: window [60, 120) ended at 120 s > 90 s, still open.
        assert_eq!(clock.observe(61_000, &config), None);
        assert_eq!(clock.observe(150_000, &config), None);
        // Watermark 120 s: window [60, 120) is now behind it.
        assert_eq!(clock.observe(61_000, &config), Some(120_000));
        // A late event does not move the clock.
        assert_eq!(clock.watermark(&config), Some(120_000));
    }
}
