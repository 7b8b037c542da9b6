//! The clickflow dataflow: every KPI kept up to date incrementally on timely dataflow.
//!
//! ```text
//!  source (per worker) ─► partition clock ─► events ─► gate ─┬─► event_trends
//!      │                   (late → dead letters)             ├─► funnel_summary
//!      │                                                     └─► session_features ─► churn_scores
//!      └─► partition reports ─broadcast─► watermark                    │   (per user) │   ▲
//!                                                                      ▼              ▼   │
//!                                 worker 0: one EpochOutput per closed epoch ─► sink     models
//! ```
//!
//! Timestamps are processing-time epochs ([`Epoch`]); event time is data. Each closed epoch
//! yields the consolidated changes of every table together with the offsets reached, which
//! the sink commits as one transaction. Late events are judged per partition
//! ([`lateness`]), windows and sessions close on the pipeline watermark ([`watermark`]),
//! and closed state is evicted without retracting its final rows ([`stage`]).
#![deny(missing_docs)]

pub mod churn;
pub mod config;
pub mod driver;
pub mod funnel;
pub mod gate;
pub mod graph;
pub mod history;
pub mod input;
pub mod lateness;
pub mod lifecycle;
pub mod metrics;
pub mod oracle;
pub mod output;
pub mod replay;
pub mod resume;
pub mod rows;
pub mod run;
pub mod sessions;
pub mod stage;
pub mod tables;
pub mod training;
pub mod trends;
pub mod watermark;
pub mod window;

/// A processing-time epoch: the timely timestamp. One epoch is one sink transaction.
pub type Epoch = u64;

pub use config::{DataflowConfig, EpochConfig};
pub use lifecycle::LiveModel;
pub use metrics::PipelineMetrics;
pub use output::EpochOutput;
pub use tables::Tables;
