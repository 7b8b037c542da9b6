//! Helpers shared by the dataflow's integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickflow_dataflow::oracle::OracleTables;
use clickflow_dataflow::runtime::run::{run, taking, InputSpec, RunConfig};
use clickflow_dataflow::{DataflowConfig, EpochConfig, LiveModel, Tables};
use clickflow_model::ChurnModel;
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::ShopRecord;

/// Writes records as JSON lines.
pub fn write_lines(path: &Path, records: &[ShopRecord]) {
    let mut out = Vec::new();
    for record in records {
        record.write_payload(&mut out);
        out.push(b'\n');
    }
    std::fs::File::create(path)
        .unwrap()
        .write_all(&out)
        .unwrap();
}

/// Epochs as short as possible and tiny polls: many epoch boundaries in a small input.
pub fn stress_epochs() -> EpochConfig {
    EpochConfig {
        epoch: Duration::from_millis(1),
        catch_up_epoch: Duration::from_millis(1),
        poll_batch: 7,
        ..EpochConfig::default()
    }
}

/// Runs the pipeline over `splits` on `workers` threads and returns the final tables.
pub fn run_file(
    splits: &FileSplits,
    workers: usize,
    dataflow: DataflowConfig,
    epochs: EpochConfig,
) -> Tables {
    run_file_scored(splits, workers, dataflow, epochs, None)
}

/// [`run_file`], with sessions scored by `model`.
pub fn run_file_scored(
    splits: &FileSplits,
    workers: usize,
    dataflow: DataflowConfig,
    epochs: EpochConfig,
    model: Option<Arc<ChurnModel>>,
) -> Tables {
    let config = RunConfig {
        dataflow,
        epochs,
        model: model.map(LiveModel::new),
        ..RunConfig::default()
    };
    run_file_with(splits, workers, config)
}

/// Runs the pipeline over `splits` on `workers` threads as `config` says, and returns the
/// final tables.
pub fn run_file_with(splits: &FileSplits, workers: usize, config: RunConfig) -> Tables {
    let tables = Arc::new(Mutex::new(Tables::default()));
    let sink = tables.clone();
    run(
        timely::Config::process(workers),
        InputSpec::File(splits.clone()),
        config,
        Some(taking(move |output| {
            sink.lock().unwrap().apply(&output).unwrap()
        })),
        Arc::new(AtomicBool::new(false)),
        Default::default(),
    )
    .unwrap();
    let tables = tables.lock().unwrap().clone();
    tables
}

/// The oracle over the same splits, read sequentially.
pub fn oracle_for(splits: &FileSplits, dataflow: &DataflowConfig) -> OracleTables {
    clickflow_dataflow::oracle::recompute_file(splits, dataflow).unwrap()
}

/// Asserts the dataflow's tables equal the oracle's, naming the first rows that differ.
pub fn assert_matches_oracle(tables: &Tables, oracle: &OracleTables, context: &str) {
    let differences = oracle.differences(tables);
    assert!(
        differences.is_empty(),
        "{context}: the tables differ from the oracle:\n{}",
        differences.join("\n")
    );
}
