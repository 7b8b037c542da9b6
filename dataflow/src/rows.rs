//! The rows of the output tables, as the dataflow produces them.
//!
//! Each table is a collection of rows; the dataflow hands on its changes as `(row, diff)`
//! pairs: a changed row is a retraction of the old row (`-1`) and an insertion of the new one
//! (`+1`).

use clickflow_sources::{EventTime, EventType};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::window::Window;

/// `event_trends`: events (and revenue) per window and event type.
///
/// Revenue lives here, as a column of every `(window, event_type)` row, so that one table
/// answers "events and money per minute"; it is non-zero only on `purchase` rows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrendRow {
    /// The window.
    pub window: Window,
    /// The event type.
    pub event_type: EventType,
    /// Events of that type in the window.
    pub count: i64,
    /// Sum of the prices of those events, in cents.
    pub revenue_cents: i64,
}

/// `funnel_summary`: exact distinct users per window and event type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FunnelRow {
    /// The window.
    pub window: Window,
    /// The event type.
    pub event_type: EventType,
    /// Distinct users with at least one event of that type in the window.
    pub unique_users: i64,
}

/// `session_features`: one row per session.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionRow {
    /// The session.
    pub session_id: CompactString,
    /// Its user (the smallest id, should a session carry several).
    pub user_id: CompactString,
    /// Product views (`click` events).
    pub num_views: i64,
    /// `add_to_cart` events.
    pub num_cart_adds: i64,
    /// `purchase` events.
    pub num_purchases: i64,
    /// Event time of its first event.
    pub session_start: EventTime,
    /// Event time of its last event.
    pub last_event: EventTime,
    /// True once the session has been inactive for the session gap: the row is final.
    pub closed: bool,
}

impl SessionRow {
    /// `last_event - session_start`, in seconds.
    pub fn duration_s(&self) -> f64 {
        (self.last_event - self.session_start) as f64 / 1000.0
    }
}
