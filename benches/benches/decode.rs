//! Decoding throughput: JSON payload → `Event`, the per-message hot path of every source.

use clickflow_benches::payloads;
use clickflow_sources::decode::{decode, DecodeLimits};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn decode_events(c: &mut Criterion) {
    let payloads = payloads(100_000);
    let bytes: usize = payloads.iter().map(Vec::len).sum();
    let limits = DecodeLimits::default();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(payloads.len() as u64));
    group.bench_function(
        format!(
            "{} events, {} bytes avg",
            payloads.len(),
            bytes / payloads.len()
        ),
        |b| {
            b.iter(|| {
                let mut ok = 0usize;
                for payload in &payloads {
                    ok += usize::from(decode(payload, Some(1_900_000_000_000), &limits).is_ok());
                }
                assert_eq!(ok, payloads.len());
            })
        },
    );
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(8));
    targets = decode_events
}
criterion_main!(benches);
