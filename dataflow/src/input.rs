//! What enters the dataflow: accepted events with their coordinates.

use clickflow_sources::Event;
use serde::{Deserialize, Serialize};

/// An event accepted by its partition's clock, with where it was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputEvent {
    /// Global index of the partition (Kafka partition number, or file split index).
    pub partition: u32,
    /// Offset of the message in the partition.
    pub offset: i64,
    /// The event.
    pub event: Event,
}
