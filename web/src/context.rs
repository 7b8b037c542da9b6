//! Everything the routes read.

use std::sync::Arc;

use clickflow_model::ChurnModel;

use crate::status::PipelineStatus;
use crate::views::LiveViews;

/// The shared state behind every route.
#[derive(Clone)]
pub struct WebContext {
    /// The dataflow's live views.
    pub views: Arc<LiveViews>,
    /// The churn model, for predictions (`None`: the pipeline runs without one).
    pub model: Option<Arc<ChurnModel>>,
    /// Run state, counters and the sink.
    pub status: Arc<PipelineStatus>,
}
