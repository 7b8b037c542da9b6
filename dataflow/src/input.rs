//! What enters the dataflow: accepted events with their coordinates.

use clickflow_sources::{Event, EventTime, EventType};
use compact_str::CompactString;
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

/// What the KPI stages need of an event the gate let through. Each of the three stages gets
/// its own copy of every accepted event, so the copy leaves out what none of them reads (the
/// event id, the offset): about half the bytes of an [`InputEvent`] (product ids of real
/// shops fit in a [`CompactString`] inline, so the copy allocates nothing for them). The partition stays:
/// the session stage tells each partition how far back its open sessions reach, which bounds
/// that partition's replay after a restart.
/// Ordered, so that a differential collection can hold it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Accepted {
    /// Global index of the partition it was read from.
    pub partition: u32,
    /// The shopper.
    pub user_id: CompactString,
    /// The visit.
    pub session_id: CompactString,
    /// What happened.
    pub event_type: EventType,
    /// Event time, in Unix milliseconds.
    pub ts: EventTime,
    /// The price in cents, when the event carries one.
    pub price_cents: Option<i64>,
    /// The product, when the event names one (the recommender serves its id back).
    pub product_id: Option<CompactString>,
}

impl Accepted {
    /// The lean record of `event`, read from partition `partition`.
    pub fn new(partition: u32, event: Event) -> Accepted {
        Accepted {
            partition,
            product_id: event.product_id,
            user_id: event.user_id,
            session_id: event.session_id,
            event_type: event.event_type,
            ts: event.ts,
            price_cents: event.price_cents,
        }
    }
}

/// The 64-bit hash standing for a product id inside the dataflow. Two different ids share
/// one with probability 2^-64 per pair: far below anything a session's dozens of products
/// could meet.
pub fn product_hash(product_id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(product_id.as_bytes())
}
