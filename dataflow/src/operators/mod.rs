//! The building blocks every KPI stage is made of.
//!
//! ```text
//!  events ─► pre_aggregate ─exchange by key─► aggregate_by_key ─► (row, epoch, ±1)
//!                                                    ▲
//!  partition reports ──────────broadcast─────────────┘ (watermark: what is final)
//! ```
//!
//! Shop events are only ever added, never retracted, so every KPI is a merge of per-key
//! values (counts, sums, minima, maxima, sets) that can be kept in O(1) per key and updated
//! in O(1) per event. The stages therefore keep one merged value per key, rather than every
//! input record as a differential arrangement would; that is what lets a closed window or
//! session leave the state without a retraction that the sink would see as a deletion.
//!
//! The recommender keeps its input in differential arrangements instead; [`hold_until`]
//! feeds them and retracts what an event-time clock has passed, so those stay bounded too.
//! (The ordered funnel's paths come from the session stage, which retracts them itself.)

mod by_epoch;
mod holding;
mod keyed;
mod pre_aggregate;
mod probe_ahead;
mod restamp;
mod route;

pub use by_epoch::{
    by_epoch, by_epoch_streaming, by_epoch_streaming_with_side, EpochOpening, EpochWatermarks,
};
pub use holding::{hold_until, Entry, HeldRecords, Hold, Keeping};
pub use keyed::{aggregate_by_key, KeyedStage, Merge};
pub use pre_aggregate::pre_aggregate;
pub use probe_ahead::{prefetch, probe_ahead};
pub use restamp::at_own_epochs;
pub use route::{BySession, KeyedId, RouteKey};
