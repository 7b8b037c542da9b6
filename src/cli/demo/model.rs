//! The demo's churn model: trained at start on a synthetic history, so the demo needs no
//! model file.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use clickflow_dataflow::training::samples_from_file;
use clickflow_dataflow::DataflowConfig;
use clickflow_model::{ChurnModel, TrainOptions};
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Shop, ShopConfig};

/// Events in the history: about 30,000 sessions, a few seconds of work.
const HISTORY_EVENTS: usize = 100_000;

/// Generates a history with the synthetic shop (a seed other than the live shop's, an hour
/// before now), derives its sessions with the dataflow, and trains a model on them.
pub fn train_on_history(
    seed: u64,
    dataflow: DataflowConfig,
    workers: usize,
) -> anyhow::Result<Arc<ChurnModel>> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("history.jsonl");
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let shop = Shop::new(ShopConfig {
        seed: seed.wrapping_add(1),
        start_ms: now_ms - 3_600_000,
        ..ShopConfig::default()
    });
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut payload = Vec::with_capacity(256);
    for record in shop.bounded(HISTORY_EVENTS) {
        payload.clear();
        record.write_payload(&mut payload);
        payload.push(b'\n');
        out.write_all(&payload)?;
    }
    out.flush()?;
    drop(out);
    let samples = samples_from_file(FileSplits::plan(&path, 8)?, dataflow, workers)?;
    let model = ChurnModel::train(&samples, &TrainOptions::default())?;
    eprintln!(
        "  model:     {} trained on a synthetic history of {HISTORY_EVENTS} events in {:.1} s",
        model.version(),
        started.elapsed().as_secs_f64()
    );
    for line in super::super::train::describe(&model).lines() {
        eprintln!("             {line}");
    }
    Ok(Arc::new(model))
}
