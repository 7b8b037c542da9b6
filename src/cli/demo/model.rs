//! The demo's churn model: trained at start on a synthetic history, so the demo needs no
//! model file.

use std::sync::Arc;
use std::time::Instant;

use clickflow_dataflow::training::history_examples;
use clickflow_dataflow::DataflowConfig;
use clickflow_model::{ChurnModel, TrainOptions};

/// Trains a model on a synthetic history of the shop (a seed other than the live shop's,
/// three hours ending now; see `clickflow_dataflow::training::history_examples`).
pub fn train_on_history(seed: u64, dataflow: DataflowConfig) -> anyhow::Result<Arc<ChurnModel>> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let examples = history_examples(seed.wrapping_add(1), now_ms, dataflow, dir.path())?;
    // 100k examples keep the start to seconds; `clickflow train` takes 200k by default.
    let options = TrainOptions {
        max_examples: 100_000,
        ..TrainOptions::default()
    };
    let model = ChurnModel::train(&examples, &options)?;
    // The history's dataflow and the training freed far more than the model keeps, in
    // arenas of threads that are gone: give it back before the pipeline starts. On
    // `clickflow bench` (6 December 2026) the process held 118 MB at the run's start
    // without this and 28 MB with it, and its peak went from 480–485 MB to 421 MB.
    drop(examples);
    crate::memory::release_freed();
    eprintln!(
        "  model:     {} trained on three hours of synthetic history in {:.1} s",
        model.version(),
        started.elapsed().as_secs_f64()
    );
    for line in super::super::train::describe(&model).lines() {
        eprintln!("             {line}");
    }
    Ok(Arc::new(model))
}
