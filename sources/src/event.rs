//! The `Event` type: one decoded interaction of a shopper with the shop.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Event time in milliseconds since the Unix epoch (UTC).
pub type EventTime = i64;

/// What the shopper did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A product view (`click` on the wire).
    Click,
    /// A product put into the cart.
    AddToCart,
    /// A completed order; carries the price.
    Purchase,
}

impl EventType {
    /// Every event type, in funnel order.
    pub const ALL: [EventType; 3] = [EventType::Click, EventType::AddToCart, EventType::Purchase];

    /// The name used on the wire and in PostgreSQL.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Click => "click",
            EventType::AddToCart => "add_to_cart",
            EventType::Purchase => "purchase",
        }
    }

    /// Parses a wire name; `None` for anything else.
    pub fn from_wire(name: &str) -> Option<EventType> {
        match name {
            "click" => Some(EventType::Click),
            "add_to_cart" => Some(EventType::AddToCart),
            "purchase" => Some(EventType::Purchase),
            _ => None,
        }
    }
}

/// The producer's id of an event: the contract allows a string or an integer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventId {
    /// A textual id such as `e-000123`.
    Text(CompactString),
    /// A numeric id.
    Number(i64),
}

/// One decoded shop event.
///
/// Ids are [`CompactString`]s: the ids of real trackers fit in 24 bytes and are then stored
/// inline, so decoding an event allocates nothing. Money is kept in integer cents so revenue
/// sums are exact and order-independent (floating-point sums are neither).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// The producer's id of this event.
    pub event_id: EventId,
    /// The shopper.
    pub user_id: CompactString,
    /// The visit this event belongs to (also the Kafka message key).
    pub session_id: CompactString,
    /// The product concerned, when the producer sent one.
    pub product_id: Option<CompactString>,
    /// What happened.
    pub event_type: EventType,
    /// When it happened (event time), in Unix milliseconds.
    pub ts: EventTime,
    /// The price in cents, when the producer sent one (purchases do).
    pub price_cents: Option<i64>,
}
