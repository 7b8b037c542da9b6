//! Everything the routes read.

use std::sync::Arc;

use clickflow_dataflow::lifecycle::ModelMonitor;
use clickflow_dataflow::LiveModel;
use clickflow_model::ChurnModel;

use crate::status::PipelineStatus;
use crate::views::LiveViews;

/// Loads a model into the running pipeline (`POST /api/v1/models`): replaces the live model
/// and records it.
pub type ModelLoader = Arc<dyn Fn(Arc<ChurnModel>) + Send + Sync>;

/// The shared state behind every route.
#[derive(Clone)]
pub struct WebContext {
    /// The dataflow's live views.
    pub views: Arc<LiveViews>,
    /// The churn model scoring now, for predictions (`None`: the pipeline runs without one).
    pub model: Option<LiveModel>,
    /// How the served predictions turn out (`None`: not followed).
    pub monitor: Option<Arc<ModelMonitor>>,
    /// Loads a model into the pipeline (`None`: the pipeline does not score).
    pub loader: Option<ModelLoader>,
    /// Run state, counters and the sink.
    pub status: Arc<PipelineStatus>,
}
