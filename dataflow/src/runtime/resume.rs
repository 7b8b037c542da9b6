//! Where each partition starts after a restart, as the sink's stored progress says.

use std::collections::HashMap;
use std::sync::Arc;

use clickflow_sources::{EventTime, PartitionId};

use crate::alerts::series::WindowPoint;
use crate::kpi::churn::HistorySeed;
use crate::runtime::watermark::{END_OF_INPUT, NO_WATERMARK};
use crate::window::WindowSize;

/// How one partition starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionResume {
    /// The offset to start reading at (`None`: the oldest the source has).
    pub start: Option<i64>,
    /// The partition's clock (highest event time delivered) just before `start`.
    pub highest: Option<EventTime>,
    /// The next offset committed with the output (`None`: nothing committed yet). Input
    /// before it is replayed to rebuild state, and its output is not applied again.
    pub committed: Option<i64>,
}

/// How the whole pipeline starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePlan {
    /// Per partition; a partition not listed starts fresh.
    pub partitions: HashMap<PartitionId, PartitionResume>,
    /// The pipeline watermark committed with the output.
    pub committed_watermark: EventTime,
    /// The earliest event time the open state depended on when it was committed (`None`:
    /// nothing was open).
    pub retain_from: Option<EventTime>,
    /// Users' histories from the sessions committed as final (read only when scoring).
    pub history: Arc<HistorySeed>,
    /// The closed windows' final counts committed before (`window_series`, in window
    /// order): they rebuild the anomaly detectors.
    pub window_history: Arc<[WindowPoint]>,
}

impl Default for ResumePlan {
    /// A fresh start: nothing committed.
    fn default() -> Self {
        ResumePlan {
            partitions: HashMap::new(),
            committed_watermark: NO_WATERMARK,
            retain_from: None,
            history: Arc::default(),
            window_history: Arc::from([]),
        }
    }
}

impl ResumePlan {
    /// Up to which final time users' closed sessions count for every session that can
    /// still be scored (see [`crate::kpi::history`]): the earliest start open state depended on,
    /// and never after the committed watermark.
    pub fn history_folds_before(&self, window: WindowSize) -> EventTime {
        let settled = self.committed_watermark.saturating_sub(window.millis());
        self.retain_from.map_or(settled, |r| r.min(settled))
    }

    /// A pipeline whose finite input ended committed the watermark `+infinity`: every
    /// window and session was closed and is final. Should the input grow (a file that is
    /// appended to), what came after the end is new input: the watermark it resumes from is
    /// the end of the newest window that held an event, so events in that window or earlier
    /// ones are late (those rows are final), later ones count, and ids seen before start new
    /// sessions (the end of the input closed theirs).
    pub fn reopen_after_end(&mut self, window: WindowSize) {
        // (Users' histories need not change: sessions final before the end were final at the
        // old watermark, and every event still to come starts after them.)
        if self.committed_watermark != END_OF_INPUT {
            return;
        }
        let highest = self.partitions.values().filter_map(|p| p.highest).max();
        self.committed_watermark = highest.map_or(NO_WATERMARK, |h| window.window_of(h).end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_input_reopens_after_its_newest_window() {
        let resumed = |highest| PartitionResume {
            start: Some(10),
            highest,
            committed: Some(10),
        };
        let mut plan = ResumePlan {
            partitions: [
                (PartitionId::new("f", 0), resumed(Some(125_000))),
                (PartitionId::new("f", 1), resumed(Some(61_000))),
                (PartitionId::new("f", 2), resumed(None)),
            ]
            .into(),
            committed_watermark: END_OF_INPUT,
            retain_from: None,
            ..ResumePlan::default()
        };
        plan.reopen_after_end(WindowSize::from_millis(60_000));
        assert_eq!(plan.committed_watermark, 180_000);
        // A watermark that is not the end of the input is left alone.
        plan.reopen_after_end(WindowSize::from_millis(60_000));
        assert_eq!(plan.committed_watermark, 180_000);
    }
}
