//! The PostgreSQL sink's speed against the local server: row changes committed per second,
//! for epochs of session rows and their scores as a backfill produces them (each session
//! inserted, then updated in a later epoch), through the public sink API: one writer
//! (queue, merge, COPY, upsert, commit with offsets), and 1, 2 and 4 writers of their own
//! keys committed together by two-phase commit (each epoch's rows split by session, as the
//! workers own them).

use std::time::{Duration, Instant};

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clickflow_benches::sink_epochs;
use clickflow_dataflow::runtime::output::Handoff;
use clickflow_dataflow::EpochOutput;
use clickflow_sinks::postgres::two_phase::{recover, spawn_coordinator, spawn_writer};
use clickflow_sinks::postgres::{prepare, spawn_sink, DatabaseUrl, SinkConfig};
use clickflow_testkit::TestDatabase;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn sink(c: &mut Criterion) {
    let db = TestDatabase::create("bench_sink");
    let url = DatabaseUrl::parse(&db.url).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(prepare(&url)).unwrap();
    // 20 epochs of 10k sessions: 10k inserted per epoch, the previous epoch's 10k updated.
    let epochs = sink_epochs(20, 10_000);
    let rows: usize = epochs
        .iter()
        .map(|e| {
            let written = |changes: usize, retracted: usize| changes - retracted;
            written(
                e.sessions.len(),
                e.sessions.iter().filter(|(_, d)| *d < 0).count(),
            ) + written(
                e.scores.len(),
                e.scores.iter().filter(|(_, d)| *d < 0).count(),
            )
        })
        .sum();
    let mut group = c.benchmark_group("postgres sink");
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function(
        format!("{} epochs, {rows} rows upserted", epochs.len()),
        |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    db.query("TRUNCATE session_features, churn_scores, clickflow_offsets");
                    let handle = spawn_sink(SinkConfig::new(url.clone()), None);
                    let started = Instant::now();
                    for epoch in &epochs {
                        assert!(handle.send_blocking(epoch.clone()));
                    }
                    handle.finish().unwrap();
                    total += started.elapsed();
                }
                total
            })
        },
    );
    for writers in [1, 2, 4] {
        let parts: Vec<(EpochOutput, Vec<EpochOutput>)> =
            epochs.iter().map(|e| split(e, writers)).collect();
        group.bench_function(
            format!("{writers} writers, two-phase commit, {rows} rows upserted"),
            |b| {
                b.iter_custom(|iterations| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        db.query("TRUNCATE session_features, churn_scores, clickflow_offsets");
                        runtime
                            .block_on(async { recover(&url.connect().await?, url.schema()).await })
                            .unwrap();
                        let config = SinkConfig::new(url.clone());
                        let stopped = Arc::new(AtomicBool::new(false));
                        let coordinator = spawn_coordinator(config.clone(), None, stopped.clone());
                        let (mut delivers, handles): (Vec<_>, Vec<_>) = (0..writers)
                            .map(|w| {
                                let metrics = coordinator.metrics.clone();
                                spawn_writer(
                                    config.clone(),
                                    w,
                                    writers,
                                    metrics,
                                    None,
                                    stopped.clone(),
                                    stopped.clone(),
                                )
                            })
                            .unzip();
                        let started = Instant::now();
                        for (own, rows) in &parts {
                            assert!(coordinator.send_blocking(own.clone()));
                            for (deliver, part) in delivers.iter_mut().zip(rows) {
                                let mut part = part.clone();
                                while let Handoff::Full(refused) = deliver(part) {
                                    part = *refused;
                                    std::thread::sleep(Duration::from_micros(200));
                                }
                            }
                        }
                        drop(delivers);
                        coordinator.finish().unwrap();
                        for handle in handles {
                            handle.finish().unwrap();
                        }
                        total += started.elapsed();
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

/// The coordinator's part of `epoch` (its progress) and each of `writers` writers' part of
/// its rows, split by session as the workers own them.
fn split(epoch: &EpochOutput, writers: usize) -> (EpochOutput, Vec<EpochOutput>) {
    let owner = |session: &str| xxhash_rust::xxh3::xxh3_64(session.as_bytes()) as usize % writers;
    let mut parts: Vec<EpochOutput> = (0..writers)
        .map(|_| EpochOutput {
            epoch: epoch.epoch,
            ..EpochOutput::default()
        })
        .collect();
    for (row, diff) in &epoch.sessions {
        parts[owner(&row.session_id)]
            .sessions
            .push((row.clone(), *diff));
    }
    for (row, diff) in &epoch.scores {
        parts[owner(&row.session_id)]
            .scores
            .push((row.clone(), *diff));
    }
    let own = EpochOutput {
        sessions: Vec::new(),
        scores: Vec::new(),
        ..epoch.clone()
    };
    (own, parts)
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(20));
    targets = sink
}
criterion_main!(benches);
