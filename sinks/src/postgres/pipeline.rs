//! The whole pipeline into PostgreSQL: prepare, resume, run, commit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clickflow_dataflow::run::{run, InputSpec, RunConfig, RunError, RunStats};

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

/// Prepares the database, loads where the pipeline stood, and runs `input` into PostgreSQL
/// until the input ends or `stop` is set. Only the process that gathers the output (process
/// 0 of a cluster) writes; `writes` says whether this is it. `on_sink` sees the running sink
/// (for its metrics) before the dataflow starts.
pub fn run_into_postgres(
    timely_config: timely::Config,
    input: InputSpec,
    mut config: RunConfig,
    sink: SinkConfig,
    writes: bool,
    stop: Arc<AtomicBool>,
    on_sink: impl FnOnce(&SinkHandle),
) -> Result<RunStats, PipelineError> {
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
        return Ok(run(timely_config, input, config, None, stop)?);
    }
    let handle = spawn_sink(sink);
    on_sink(&handle);
    let mut send = handle.deliver();
    let failed = stop.clone();
    let deliver = Box::new(move |output| {
        if !send(output) {
            // The sink failed for good: stop reading; nothing past its last commit counts.
            failed.store(true, Ordering::Relaxed);
        }
    });
    let stats = run(timely_config, input, config, Some(deliver), stop);
    handle.finish()?;
    Ok(stats?)
}
