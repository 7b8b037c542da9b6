//! Helpers shared by the sink's integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clickflow_dataflow::runtime::run::{InputSpec, RunConfig, RunStats};
use clickflow_dataflow::training::history_examples;
use clickflow_dataflow::{DataflowConfig, EpochConfig, LiveModel, Tables};
use clickflow_model::{ChurnModel, TrainOptions, TrainParams};
use clickflow_sinks::postgres::{
    run_into_postgres, DatabaseUrl, PipelineError, PipelineSpec, SinkConfig, SinkWriters,
};
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Shop, ShopConfig};

/// Runs `future` to its end on a runtime of its own.
pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A shop file of `count` records with late and malformed ones.
pub fn shop_file(path: &Path, seed: u64, count: usize) {
    let shop = Shop::new(ShopConfig {
        seed,
        users: 500,
        events_per_second: 50.0,
        late_fraction: 0.03,
        max_lateness_ms: 90_000,
        malformed_fraction: 0.01,
        ..ShopConfig::default()
    });
    let mut out = Vec::new();
    for record in shop.bounded(count) {
        record.write_payload(&mut out);
        out.push(b'\n');
    }
    std::fs::File::create(path)
        .unwrap()
        .write_all(&out)
        .unwrap();
}

/// Short epochs, so that a small input spans many transactions.
pub fn short_epochs() -> EpochConfig {
    EpochConfig {
        epoch: Duration::from_millis(5),
        catch_up_epoch: Duration::from_millis(5),
        poll_batch: 64,
        ..EpochConfig::default()
    }
}

/// Runs a file into the database at `url`.
pub fn run_file(
    splits: &FileSplits,
    workers: usize,
    url: &str,
    epochs: EpochConfig,
) -> Result<RunStats, PipelineError> {
    run_file_scored(splits, workers, url, epochs, None)
}

/// [`run_file`], with sessions scored by `model`.
pub fn run_file_scored(
    splits: &FileSplits,
    workers: usize,
    url: &str,
    epochs: EpochConfig,
    model: Option<Arc<ChurnModel>>,
) -> Result<RunStats, PipelineError> {
    let config = RunConfig {
        dataflow: DataflowConfig::default(),
        epochs,
        model: model.map(LiveModel::new),
        ..RunConfig::default()
    };
    run_file_at(splits, workers, &DatabaseUrl::parse(url).unwrap(), config)
}

/// Runs a file with `config` into `url`, whose schema it keeps.
pub fn run_file_at(
    splits: &FileSplits,
    workers: usize,
    url: &DatabaseUrl,
    config: RunConfig,
) -> Result<RunStats, PipelineError> {
    run_file_with(splits, workers, url, config, SinkWriters::Auto)
}

/// [`run_file_at`] with the sink's `writers` chosen.
pub fn run_file_with(
    splits: &FileSplits,
    workers: usize,
    url: &DatabaseUrl,
    config: RunConfig,
    writers: SinkWriters,
) -> Result<RunStats, PipelineError> {
    let mut sink = SinkConfig::new(url.clone());
    sink.writers = writers;
    sink.checkpoint_interval = Duration::from_millis(20);
    let spec = PipelineSpec {
        timely: timely::Config::process(workers),
        input: InputSpec::File(splits.clone()),
        config,
        sink,
        writes: true,
        observe: None,
    };
    run_into_postgres(
        spec,
        Arc::new(AtomicBool::new(false)),
        Default::default(),
        |_| {},
    )
}

/// Everything the tables hold, read back from PostgreSQL.
pub fn read_tables(url: &str) -> Tables {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(clickflow_sinks::postgres::read_tables(
            &DatabaseUrl::parse(url).unwrap(),
        ))
        .unwrap()
}

/// A churn model trained on a synthetic history of the shop (as the demo's).
pub fn shop_model(dir: &Path) -> ChurnModel {
    let examples =
        history_examples(1_000, 1_751_932_800_000, DataflowConfig::default(), dir).unwrap();
    let options = TrainOptions {
        params: TrainParams {
            trees: 11,
            ..TrainParams::default()
        },
        ..TrainOptions::default()
    };
    ChurnModel::train(&examples, &options).unwrap()
}
