//! The churn model's life in a running pipeline: the model scoring now ([`LiveModel`]),
//! how well its predictions turn out ([`ModelMonitor`]), and its replacement by a better
//! one trained on recent sessions ([`retrain`]).
//!
//! ```text
//!  EpochOutput (worker 0) ─► ModelMonitor: each score kept until its session ends, then
//!                            labelled (bought or not) ─► live AUC per model version
//!                                                      └► recent examples ─┐
//!  retrainer thread, every --retrain-every: challenger trained on them ◄───┘
//!        better than the live model on the newest sessions by the margin?
//!        └─► LiveModel::replace ─► worker 0 sends it into the dataflow (next epoch)
//! ```
//!
//! None of it runs on a timely worker: the monitor is fed where the sink is fed, and the
//! retrainer has a thread of its own.

mod live_model;
mod monitor;
pub mod retrain;

pub use live_model::LiveModel;
pub use monitor::{ModelMonitor, MonitorLimits};
