//! What the dataflow computes: one file per stage.
//!
//! ```text
//!  accepted events ─► gate ─► split ─┬─► trends    (event_trends: events per window and type)
//!                                    ├─► funnel    (funnel_summary: distinct users per window and type)
//!                                    ├─► sessions  (session_features) ─► churn (churn_scores)
//!                                    │                                    ▲
//!                                    │                          history (users' past sessions)
//!                                    └─► the recommender ([`crate::recs`])
//! ```
//!
//! The gate judges [`Accepted`](crate::input::Accepted) records, the split gives each stage
//! what it reads of them, and each stage emits the changes of its table as a differential
//! collection; how epochs, watermarks and replay drive them is in [`crate::runtime`], what
//! they are built from in [`crate::operators`].

pub mod churn;
pub mod funnel;
pub mod gate;
pub mod history;
pub mod sessions;
pub mod split;
pub mod trends;
