//! Rendering the dashboard's charts from full live views: 60 windows of trends, 15 of the
//! funnel, 100k scored open sessions. The aim is under 5 ms per chart.

use clickflow_benches::full_views;
use clickflow_web::charts::{churn_chart, funnel_chart, trends_chart};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn charts(c: &mut Criterion) {
    let views = full_views(100_000);
    let mut group = c.benchmark_group("chart rendering");
    group.throughput(Throughput::Elements(1));
    group.bench_function("funnel.svg", |b| {
        b.iter(|| {
            let complete: Vec<_> = views
                .funnel(120)
                .into_iter()
                .filter(|w| w.complete)
                .collect();
            funnel_chart(&complete, 15).unwrap()
        })
    });
    group.bench_function("trends.svg", |b| {
        b.iter(|| trends_chart(&views.trends(60), &[]).unwrap())
    });
    group.bench_function("churn.svg (100k open sessions)", |b| {
        b.iter(|| churn_chart(&views.churn(20)).unwrap())
    });
    group.bench_function("at-risk top 10 (100k open sessions)", |b| {
        b.iter(|| views.at_risk(10))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = charts
}
criterion_main!(benches);
