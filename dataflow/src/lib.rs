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
//! ([`runtime::lateness`]), windows and sessions close on the pipeline watermark
//! ([`runtime::watermark`]), and closed state is evicted without retracting its final rows
//! ([`operators`]).
//!
//! The folders separate what is computed from how it runs:
//!
//! | folder | holds |
//! |---|---|
//! | [`kpi`] | what is computed: one file per stage (the gate, trends, funnel, sessions, churn scoring with users' histories) |
//! | [`operators`] | the building blocks stages are made of (per-epoch batching, pre-aggregation, the keyed stage, routing) |
//! | [`runtime`] | how it runs: the worker loop and its epochs, lateness and watermarks, replay and resume after a restart, the hand-off to the sinks, threads and processes |
//! | [`alerts`] | anomaly alerts: the closed windows' series, the detectors, the alerting file |
//! | [`lifecycle`] | the churn model's life in a running pipeline: live model, monitor, retrainer |
//! | [`recs`] | the session-based recommender, on differential's operators |
//! | [`conversion`] | the ordered funnel: each session's path (kept by the session stage), counted per window on differential's operators |
//!
//! Beside them: the records that enter ([`input`]) and leave ([`rows`], [`tables`]), event-time
//! windows ([`window`]), the graph that wires the stages ([`graph`]), the sequential
//! [`oracle`] every test compares with, and the churn model's [`training`] examples.
#![deny(missing_docs)]

pub mod alerts;
pub mod config;
pub mod conversion;
pub mod graph;
pub mod input;
pub mod kpi;
pub mod lifecycle;
pub mod metrics;
pub mod operators;
pub mod oracle;
pub mod recs;
pub mod rows;
pub mod runtime;
pub mod tables;
pub mod training;
pub mod window;

/// A processing-time epoch: the timely timestamp. One epoch is one sink transaction.
pub type Epoch = u64;

pub use config::{DataflowConfig, EpochConfig};
pub use lifecycle::LiveModel;
pub use metrics::PipelineMetrics;
pub use runtime::output::EpochOutput;
pub use tables::Tables;
