//! The whole pipeline into PostgreSQL: prepare, resume, run, commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clickflow_dataflow::run::{run, InputSpec, RunConfig, RunError, RunStats};
use clickflow_dataflow::{EpochOutput, PipelineMetrics};

use super::{load_resume_plan, prepare, spawn_sink, SinkConfig, SinkError, SinkHandle};

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// PostgreSQL refused at start or failed for good.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The dataflow failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// What to run: the cluster, the input, the dataflow's settings and where to write.
pub struct PipelineSpec {
    /// Threads and processes.
    pub timely: timely::Config,
    /// Where events come from.
    pub input: InputSpec,
    /// The dataflow's settings (its resume plan is loaded from the database).
    pub config: RunConfig,
    /// The sink's settings.
    pub sink: SinkConfig,
    /// Whether this process writes: only the one that gathers the output (process 0).
    pub writes: bool,
    /// Sees every closed epoch just before the sink does (the web server's live views).
    pub observe: Option<Observer>,
}

/// A callback that sees each closed epoch.
pub type Observer = Box<dyn FnMut(&EpochOutput) + Send>;

/// Prepares the database, loads where the pipeline stood, and runs the input into
/// PostgreSQL until it ends or `stop` is set. `metrics` are the dataflow's counters;
/// `on_sink` sees the running sink (for its metrics) before the dataflow starts.
pub fn run_into_postgres(
    spec: PipelineSpec,
    stop: Arc<AtomicBool>,
    metrics: Arc<PipelineMetrics>,
    on_sink: impl FnOnce(&SinkHandle),
) -> Result<RunStats, PipelineError> {
    let PipelineSpec {
        timely: timely_config,
        input,
        mut config,
        sink,
        writes,
        mut observe,
    } = spec;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|_| SinkError::Closed)?;
    runtime.block_on(prepare(&sink.url))?;
    config.resume = runtime.block_on(load_resume_plan(&sink.url, &input.partitions()))?;
    if !config.resume.partitions.is_empty() {
        let replaying = config
            .resume
            .partitions
            .values()
            .filter(|p| p.start != p.committed)
            .count();
        tracing::info!(
            partitions = config.resume.partitions.len(),
            replaying,
            "resuming from committed offsets"
        );
    }
    if !writes {
        return Ok(run(timely_config, input, config, None, stop, metrics)?);
    }
    let handle = spawn_sink(sink);
    on_sink(&handle);
    let mut send = handle.deliver();
    let failed = stop.clone();
    let deliver = Box::new(move |output: EpochOutput| {
        if let Some(observe) = observe.as_mut() {
            observe(&output);
        }
        if !send(output) {
            // The sink failed for good: stop reading; nothing past its last commit counts.
            failed.store(true, Ordering::Relaxed);
        }
    });
    let stats = run(timely_config, input, config, Some(deliver), stop, metrics);
    handle.finish()?;
    Ok(stats?)
}
