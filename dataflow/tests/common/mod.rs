//! Helpers shared by the dataflow's integration tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickflow_dataflow::oracle::{recompute, OracleTables};
use clickflow_dataflow::run::{run, InputSpec, RunConfig};
use clickflow_dataflow::{DataflowConfig, EpochConfig, Tables};
use clickflow_sources::decode::DecodeLimits;
use clickflow_sources::file::{FileSource, FileSplits};
use clickflow_sources::shop::ShopRecord;
use clickflow_sources::{RejectKind, SourceBatch};

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
    let tables = Arc::new(Mutex::new(Tables::default()));
    let sink = tables.clone();
    let config = RunConfig {
        dataflow,
        epochs,
        limits: DecodeLimits::default(),
        resume: Default::default(),
    };
    run(
        timely::Config::process(workers),
        InputSpec::File(splits.clone()),
        config,
        Some(Box::new(move |output| {
            sink.lock().unwrap().apply(&output).unwrap()
        })),
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap();
    let tables = tables.lock().unwrap().clone();
    tables
}

/// The oracle over the same splits, read sequentially.
pub fn oracle_for(splits: &FileSplits, dataflow: &DataflowConfig) -> OracleTables {
    let partitions: Vec<_> = (0..splits.len())
        .map(|index| {
            let mut source =
                FileSource::open(splits, &[(index, None)], DecodeLimits::default()).unwrap();
            let mut events = Vec::new();
            let mut batch = SourceBatch::default();
            while !source.is_finished() {
                source.poll(&mut batch, 1000).unwrap();
                events.extend(batch.events.drain(..).map(|e| (e.offset, e.event)));
                batch.clear();
            }
            events
        })
        .collect();
    recompute(&partitions, dataflow)
}

/// `(split, offset)` of every dead letter of `kind`.
pub fn dead_letters_of(tables: &Tables, kind: RejectKind) -> BTreeSet<(u32, i64)> {
    tables
        .dead_letters
        .iter()
        .filter(|d| d.rejection.kind == kind)
        .map(|d| (d.partition.partition as u32, d.offset))
        .collect()
}

/// Asserts the dataflow's tables equal the oracle's, table by table, naming the first rows
/// that differ.
pub fn assert_matches_oracle(tables: &Tables, oracle: &OracleTables, context: &str) {
    assert_same(
        "event_trends",
        &tables.trends,
        &oracle.tables.trends,
        context,
    );
    assert_same(
        "funnel_summary",
        &tables.funnel,
        &oracle.tables.funnel,
        context,
    );
    assert_same(
        "session_features",
        &tables.sessions,
        &oracle.tables.sessions,
        context,
    );
    let late = dead_letters_of(tables, RejectKind::Late);
    let only_dataflow: Vec<_> = late.difference(&oracle.late).take(5).collect();
    let only_oracle: Vec<_> = oracle.late.difference(&late).take(5).collect();
    assert!(
        only_dataflow.is_empty() && only_oracle.is_empty(),
        "late events differ ({context}): dataflow only {only_dataflow:?}, oracle only {only_oracle:?}"
    );
}

fn assert_same<K: Ord + Debug, V: PartialEq + Debug>(
    table: &str,
    dataflow: &BTreeMap<K, V>,
    oracle: &BTreeMap<K, V>,
    context: &str,
) {
    let keys: BTreeSet<&K> = dataflow.keys().chain(oracle.keys()).collect();
    let differences: Vec<String> = keys
        .into_iter()
        .filter(|k| dataflow.get(k) != oracle.get(k))
        .take(3)
        .map(|k| {
            format!(
                "{k:?}: dataflow {:?}, oracle {:?}",
                dataflow.get(k),
                oracle.get(k)
            )
        })
        .collect();
    assert!(
        differences.is_empty(),
        "{table} differs from the oracle ({context}; {} vs {} rows), e.g.\n{}",
        dataflow.len(),
        oracle.len(),
        differences.join("\n")
    );
}
