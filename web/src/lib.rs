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
pub mod errors;
pub mod metrics;
pub mod models;
pub mod predict;
pub mod routes;
pub mod server;
pub mod status;
pub mod views;

pub use context::{ModelLoader, WebContext};
pub use server::{WebConfig, WebError, WebServer};
pub use status::{DataflowState, PipelineStatus, SinkProbe, SinkSnapshot};
pub use views::LiveViews;
