//! clickflow's web server: the live dashboard, the JSON API, churn predictions over REST,
//! Prometheus metrics and a health check, on warp.
//!
//! The charts and the JSON API read the dataflow's live views ([`views`]), fed by worker 0
//! with every closed epoch, never PostgreSQL: the dashboard stays fast whatever the load on
//! the database. Predictions use the same [`clickflow_model::ChurnModel`] the dataflow scores
//! with. See [`routes`] for the list of routes.
#![deny(missing_docs)]

pub mod alerts;
pub mod api;
pub mod auth;
pub mod charts;
pub mod context;
pub mod contract;
pub mod errors;
pub mod https;
pub mod metrics;
pub mod models;
pub mod predict;
pub mod recs;
pub mod routes;
pub mod server;
pub mod status;
pub mod stream;
pub mod views;

pub use context::{ModelLoader, WebContext};

/// A Unix-ms time as the JSON API shows it beside the number: RFC 3339, UTC, milliseconds
/// (`2026-12-02T21:41:00.000Z`).
pub fn rfc3339(millis: i64) -> String {
    let mut buf = [0u8; 24];
    clickflow_sources::encode::format_rfc3339_millis(millis, &mut buf).to_string()
}
pub use server::{WebConfig, WebError, WebServer};
pub use status::{DataflowState, FeedSnapshot, PipelineStatus, SinkProbe, SinkSnapshot};
pub use views::LiveViews;
