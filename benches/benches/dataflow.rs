//! The KPI graph's throughput: pre-decoded events through every stage on 1 and 2 workers,
//! and the same from a JSON-lines file, decoding included.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use clickflow_benches::{partitioned_events, run_in_memory, write_events_file};
use clickflow_dataflow::runtime::run::{run, taking, InputSpec, RunConfig};
use clickflow_dataflow::EpochConfig;
use clickflow_sources::file::FileSplits;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const EVENTS: usize = 1_000_000;

fn in_memory(c: &mut Criterion) {
    let partitions = Arc::new(partitioned_events(EVENTS, 16));
    let events: usize = partitions.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("graph, pre-decoded events");
    group.throughput(Throughput::Elements(events as u64));
    for workers in [1, 2] {
        group.bench_function(format!("{workers} workers"), |b| {
            b.iter(|| run_in_memory(partitions.clone(), workers))
        });
    }
    group.finish();
}

fn from_file(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_events_file(&path, EVENTS).unwrap();
    let splits = FileSplits::plan(&path, 16).unwrap();
    let mut group = c.benchmark_group("graph from file (decode included)");
    group.throughput(Throughput::Elements(EVENTS as u64));
    for workers in [1, 2] {
        group.bench_function(format!("{workers} workers"), |b| {
            b.iter(|| {
                let rows = Arc::new(Mutex::new(0usize));
                let counted = rows.clone();
                let config = RunConfig {
                    epochs: EpochConfig {
                        poll_batch: 8192,
                        ..EpochConfig::default()
                    },
                    ..RunConfig::default()
                };
                let stats = run(
                    timely::Config::process(workers),
                    InputSpec::File(splits.clone()),
                    config,
                    Some(taking(move |output| {
                        *counted.lock().unwrap() += output.row_changes()
                    })),
                    Arc::new(AtomicBool::new(false)),
                    Default::default(),
                )
                .unwrap();
                assert_eq!(stats.events as usize + stats.dead_letters as usize, EVENTS);
                let changes = *rows.lock().unwrap();
                changes
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(20));
    targets = in_memory, from_file
}
criterion_main!(benches);
