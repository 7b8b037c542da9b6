//! Where each partition starts after a restart, as the sink's stored progress says.

use std::collections::HashMap;

use clickflow_sources::{EventTime, PartitionId};

use crate::watermark::NO_WATERMARK;

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
}

impl Default for ResumePlan {
    /// A fresh start: nothing committed.
    fn default() -> Self {
        ResumePlan {
            partitions: HashMap::new(),
            committed_watermark: NO_WATERMARK,
        }
    }
}
