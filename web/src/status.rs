//! What the web server knows of the pipeline beyond the live views: the dataflow's run state
//! and counters, and the sink's state (the binary reads it from the sink and hands it over
//! as a [`SinkSnapshot`], so this crate does not depend on the sink's).

use std::sync::{Arc, Mutex};

use clickflow_dataflow::PipelineMetrics;
use serde::Serialize;

/// Where the dataflow is in its life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum DataflowState {
    /// Preparing (database, model, resume plan).
    Starting,
    /// Consuming input.
    Running,
    /// Stopped on request or at the end of its input.
    Stopped,
    /// Stopped by an error.
    Failed(String),
}

/// The sink's state at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SinkSnapshot {
    /// True while PostgreSQL answers.
    pub connected: bool,
    /// Transactions committed.
    pub transactions: u64,
    /// Rows inserted, updated or deleted.
    pub rows: u64,
    /// Connection losses retried.
    pub retries: u64,
    /// Time spent committing, in seconds.
    pub commit_seconds_total: f64,
    /// Duration of the last commit, in seconds.
    pub last_commit_seconds: f64,
    /// Events committed so far, each counted with how long it waited from arrival to commit:
    /// `(upper bound in seconds, events at or below it)`, cumulative, ascending.
    pub freshness_buckets: Vec<(f64, u64)>,
    /// Events counted in the freshness histogram.
    pub freshness_events: u64,
    /// Median wait from arrival to commit, in milliseconds.
    pub freshness_p50_ms: Option<i64>,
    /// 99th percentile of that wait.
    pub freshness_p99_ms: Option<i64>,
    /// The Kafka change feed, when the pipeline publishes one (`--emit-kafka`).
    pub changes: Option<FeedSnapshot>,
}

/// The change feed's counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FeedSnapshot {
    /// Changes Kafka acknowledged.
    pub published: u64,
    /// Of those, changes committed by an earlier run and published again after a restart.
    pub republished: u64,
    /// Rounds that failed and were retried.
    pub failed: u64,
    /// Publish lag (commit to acknowledgement) per change: `(upper bound in seconds, changes
    /// at or below it)`, cumulative, ascending.
    pub lag_buckets: Vec<(f64, u64)>,
    /// Changes counted in the lag histogram.
    pub lag_changes: u64,
}

/// Reads the sink's state on demand.
pub type SinkProbe = Arc<dyn Fn() -> Option<SinkSnapshot> + Send + Sync>;

/// The pipeline's health as the server reports it.
pub struct PipelineStatus {
    /// The dataflow's counters.
    pub metrics: Arc<PipelineMetrics>,
    state: Mutex<DataflowState>,
    sink: SinkProbe,
}

impl PipelineStatus {
    /// A status for a pipeline that is starting, with its counters and sink probe.
    pub fn new(metrics: Arc<PipelineMetrics>, sink: SinkProbe) -> PipelineStatus {
        PipelineStatus {
            metrics,
            state: Mutex::new(DataflowState::Starting),
            sink,
        }
    }

    /// Records where the dataflow is.
    pub fn set_state(&self, state: DataflowState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Where the dataflow is.
    pub fn state(&self) -> DataflowState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The sink's state, `None` while it has not started.
    pub fn sink(&self) -> Option<SinkSnapshot> {
        (self.sink)()
    }

    /// Why the pipeline is not healthy; empty when it is (dataflow running, sink connected).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.state() {
            DataflowState::Running => {}
            DataflowState::Starting => problems.push("the dataflow is starting".to_string()),
            DataflowState::Stopped => problems.push("the dataflow has stopped".to_string()),
            DataflowState::Failed(reason) => {
                problems.push(format!("the dataflow failed: {reason}"))
            }
        }
        match self.sink() {
            Some(sink) if sink.connected => {}
            Some(sink) => problems.push(format!(
                "PostgreSQL is unreachable; the sink is retrying ({} retries so far)",
                sink.retries
            )),
            None => problems.push("the PostgreSQL sink has not started".to_string()),
        }
        problems
    }
}
