//! The PostgreSQL sink's speed against the local server: row changes committed per second,
//! for epochs of session rows and their scores as a backfill produces them (each session
//! inserted, then updated in a later epoch), through the public sink API (queue, merge,
//! COPY, upsert, commit with offsets).

use std::time::{Duration, Instant};

use clickflow_benches::sink_epochs;
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
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(20));
    targets = sink
}
criterion_main!(benches);
