//! What a source hands to the dataflow: decoded events, dead letters and progress.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{DeadLetter, Event};

/// One partition of the input: a Kafka topic partition, or a split of an input file.
///
/// The topic is shared (`Arc<str>`) because every event carries its partition.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionId {
    /// The Kafka topic, or `file:<path>` for an input file.
    pub topic: Arc<str>,
    /// The Kafka partition, or the index of the file split.
    pub partition: i32,
}

impl PartitionId {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> PartitionId {
        PartitionId {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// A decoded event with the partition index (within its source) and offset it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcedEvent {
    /// Index of the partition in the source's partition list.
    pub partition: usize,
    /// Offset of the message in that partition.
    pub offset: i64,
    /// The event.
    pub event: Event,
}

/// How far a source has read one of its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    /// Index of the partition in the source's partition list.
    pub partition: usize,
    /// The next offset to read: everything before it has been delivered.
    pub next_offset: i64,
    /// True when the partition has nothing more to deliver for now (Kafka: caught up with
    /// the broker) or ever (a file split at its end, with `finished`).
    pub caught_up: bool,
    /// True when the partition will never deliver anything again (end of a file split).
    pub finished: bool,
}

/// What one poll of a source produced.
#[derive(Debug, Default)]
pub struct SourceBatch {
    /// Decoded events, in partition order.
    pub events: Vec<SourcedEvent>,
    /// Payloads that could not be decoded.
    pub dead_letters: Vec<DeadLetter>,
    /// The progress of every partition that moved (or changed state) in this poll.
    pub progress: Vec<PartitionProgress>,
}

impl SourceBatch {
    /// True when the poll produced nothing at all.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.dead_letters.is_empty() && self.progress.is_empty()
    }

    /// Forgets the contents, keeping the allocations for the next poll.
    pub fn clear(&mut self) {
        self.events.clear();
        self.dead_letters.clear();
        self.progress.clear();
    }
}
