//! What the dataflow computes: one file per stage.
//!
//! ```text
//!  accepted events ─► gate ─┬─► trends    (event_trends: events per window and type)
//!                           ├─► funnel    (funnel_summary: distinct users per window and type)
//!                           └─► sessions  (session_features) ─► churn (churn_scores)
//!                                                                 ▲
//!                                                       history (users' past sessions)
//! ```
//!
//! Every stage reads [`Accepted`](crate::input::Accepted) records and emits the changes of
//! its table as a differential collection; how epochs, watermarks and replay drive them is in
//! [`crate::runtime`], what they are built from in [`crate::operators`].

pub mod churn;
pub mod funnel;
pub mod gate;
pub mod history;
pub mod sessions;
pub mod trends;
