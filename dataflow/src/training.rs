//! Training examples for the churn model, computed by the dataflow itself.
//!
//! `clickflow train --events FILE` and the demo's start-up training derive sessions from
//! events with exactly the code that computes `session_features` live, so a model never
//! learns from sessions cut differently from the ones it will score.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use clickflow_model::Sample;
use clickflow_sources::file::FileSplits;
use compact_str::CompactString;

use crate::config::DataflowConfig;
use crate::run::{run, InputSpec, RunConfig, RunError};

/// The closed sessions of an events file (all of them: the end of the file closes every
/// session) as training samples, in session id order.
pub fn samples_from_file(
    splits: FileSplits,
    dataflow: DataflowConfig,
    workers: usize,
) -> Result<Vec<Sample>, RunError> {
    let closed: Arc<Mutex<BTreeMap<CompactString, Sample>>> = Arc::default();
    let collect = closed.clone();
    let config = RunConfig {
        dataflow,
        ..RunConfig::default()
    };
    run(
        timely::Config::process(workers.max(1)),
        InputSpec::File(splits),
        config,
        Some(Box::new(move |output| {
            let mut closed = collect.lock().unwrap_or_else(|e| e.into_inner());
            for (row, diff) in &output.sessions {
                if let (1, Some(sample)) = (*diff, row.training_sample()) {
                    closed.insert(row.session_id.clone(), sample);
                }
            }
        })),
        Arc::new(AtomicBool::new(false)),
        Default::default(),
    )?;
    let closed = std::mem::take(&mut *closed.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(closed.into_values().collect())
}
