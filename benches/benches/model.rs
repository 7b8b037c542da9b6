//! Churn scoring: predictions per second, one session at a time (the REST path) and in
//! batches, with the default forest (31 trees, depth 10) trained on the synthetic shop's
//! session prefixes.

use clickflow_benches::shop_model;
use clickflow_model::Features;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn scoring(c: &mut Criterion) {
    let (model, examples) = shop_model();
    let features: Vec<Features> = examples.iter().map(|e| e.features).take(10_000).collect();
    let mut group = c.benchmark_group("churn scoring");
    group.throughput(Throughput::Elements(features.len() as u64));
    group.bench_function("single predictions, 10k sessions", |b| {
        b.iter(|| {
            let sum: f64 = features.iter().map(|f| model.predict(f)).sum();
            assert!(sum > 0.0);
        })
    });
    group.bench_function("one batch of 10k sessions", |b| {
        b.iter_batched(
            || features.clone(),
            |batch| {
                let scores = model.predict_batch(&batch);
                assert_eq!(scores.len(), batch.len());
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = scoring
}
criterion_main!(benches);
