//! Each KPI stage as clickflow builds it (a keyed stage holding one merged value per key)
//! against the same stage on differential dataflow's own operators, on the same pre-decoded
//! events in the same epochs (issue 14, item 4):
//!
//! | stage | keyed stage | differential |
//! |---|---|---|
//! | `event_trends` | `pre_aggregate` + `aggregate_by_key` | `explode` to a `(count, revenue)` diff, `count_total` |
//! | `funnel_summary` | distinct `(window, type, user)`, then counts | `distinct_total`, then `count_total` |
//! | `session_features` | gap sessions merged per event | `reduce` per session id over its events, cut at the gap |
//!
//! No watermark advances here, so neither side evicts anything: the comparison is of the
//! computation alone. (In the pipeline the keyed stages also drop what is final; an
//! arrangement keeps every record it was given until it is retracted.)

use std::sync::Arc;

use clickflow_benches::partitioned_events;
use clickflow_dataflow::conversion::Sealing;
use clickflow_dataflow::input::{product_hash, Accepted};
use clickflow_dataflow::kpi::funnel::{user_sighting, Funnel};
use clickflow_dataflow::kpi::sessions::{SessionRule, Sessions};
use clickflow_dataflow::kpi::trends::{tally, EventTrends};
use clickflow_dataflow::operators::BySession;
use clickflow_dataflow::runtime::watermark::{PartitionReport, ProgressSeed, NO_WATERMARK};
use clickflow_dataflow::window::{Window, WindowSize};
use clickflow_dataflow::Epoch;
use clickflow_sources::{EventTime, EventType};
use compact_str::CompactString;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use differential_dataflow::input::Input as _;
use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::{Broadcast, Input as _, Map};
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};

const EVENTS: usize = 500_000;
/// Events per epoch, as a caught-up pipeline's 50 ms epochs hold at about 160k events/s.
const EPOCH_EVENTS: usize = 8_192;
/// Epochs a worker runs ahead of its output, as the driver allows.
const IN_FLIGHT: Epoch = 4;
/// The pipeline's defaults: one-minute windows, a 30-minute session gap.
const WINDOW_MS: i64 = 60_000;
const GAP_MS: i64 = 30 * 60_000;

fn window() -> WindowSize {
    WindowSize::from_millis(WINDOW_MS)
}

fn rule() -> SessionRule {
    SessionRule {
        gap_ms: GAP_MS,
        window: window(),
    }
}

/// The ordered funnel's default conversion window (the session stage keeps each
/// session's path through it).
fn sealing() -> Sealing {
    Sealing {
        window: window(),
        funnel_window_ms: 30 * 60_000,
    }
}

#[derive(Clone, Copy, Debug)]
enum Stage {
    Trends,
    Funnel,
    Sessions,
}

#[derive(Clone, Copy, Debug)]
enum Build {
    Keyed,
    Differential,
}

/// The bench's events in arrival order, cut into epochs.
fn epochs() -> Arc<Vec<Vec<Accepted>>> {
    let events: Vec<Accepted> = partitioned_events(EVENTS, 1)
        .into_iter()
        .flatten()
        .map(|event| Accepted::new(0, event))
        .collect();
    Arc::new(events.chunks(EPOCH_EVENTS).map(<[_]>::to_vec).collect())
}

/// Runs `stage` built as `build` over `epochs` on `workers` threads.
fn run(epochs: Arc<Vec<Vec<Accepted>>>, workers: usize, stage: Stage, build: Build) {
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let probe = ProbeHandle::new();
        let mut events = InputHandleVec::<Epoch, Accepted>::new();
        let mut reports = InputHandleVec::<Epoch, PartitionReport>::new();
        let mut session = worker.dataflow::<Epoch, _, _>(|scope| {
            let seed = ProgressSeed {
                partitions: 1,
                committed_watermark: NO_WATERMARK,
            };
            let accepted = scope.input_from(&mut events);
            let reports = scope.input_from(&mut reports).broadcast();
            let (session, collection) = scope.new_collection::<Accepted, isize>();
            match build {
                Build::Keyed => match stage {
                    Stage::Trends => {
                        accepted
                            .map(|event| tally(window(), &event))
                            .event_trends(reports, seed)
                            .inner
                            .probe_with(&probe);
                    }
                    Stage::Funnel => {
                        accepted
                            .map(|event| user_sighting(window(), &event))
                            .funnel(window(), reports, seed)
                            .inner
                            .probe_with(&probe);
                    }
                    Stage::Sessions => {
                        BySession::route(accepted)
                            .session_features(rule(), sealing(), reports, seed)
                            .rows
                            .inner
                            .probe_with(&probe);
                    }
                },
                Build::Differential => match stage {
                    Stage::Trends => {
                        differential_trends(collection).inner.probe_with(&probe);
                    }
                    Stage::Funnel => {
                        differential_funnel(collection).inner.probe_with(&probe);
                    }
                    Stage::Sessions => {
                        differential_sessions(collection).inner.probe_with(&probe);
                    }
                },
            }
            session
        });
        for (epoch, batch) in epochs.iter().enumerate() {
            for event in batch.iter().skip(index).step_by(peers) {
                match build {
                    Build::Keyed => events.send(event.clone()),
                    Build::Differential => session.insert(event.clone()),
                }
            }
            let next = epoch as Epoch + 1;
            events.advance_to(next);
            reports.advance_to(next);
            session.advance_to(next);
            session.flush();
            while probe.less_than(&next.saturating_sub(IN_FLIGHT)) {
                worker.step();
            }
        }
    })
    .expect("timely starts")
    .join()
    .into_iter()
    .for_each(|worker| worker.expect("a worker finished"));
}

/// A row of `event_trends` or `funnel_summary`.
type TrendKey = (Window, EventType);

/// `event_trends`: count and revenue per `(window, type)` as one `(count, revenue)` diff.
fn differential_trends(
    events: VecCollection<'_, Epoch, Accepted, isize>,
) -> VecCollection<'_, Epoch, (TrendKey, (isize, isize)), isize> {
    events
        .explode(|event: Accepted| {
            let revenue = match event.event_type {
                EventType::Purchase => event.price_cents.unwrap_or(0) as isize,
                _ => 0,
            };
            Some((
                (window().window_of(event.ts), event.event_type),
                (1, revenue),
            ))
        })
        .count_total()
}

/// `funnel_summary`: distinct users per `(window, type)`.
fn differential_funnel(
    events: VecCollection<'_, Epoch, Accepted, isize>,
) -> VecCollection<'_, Epoch, (TrendKey, isize), isize> {
    events
        .map(|event| {
            (
                (window().window_of(event.ts), event.event_type),
                event.user_id,
            )
        })
        .distinct_total()
        .map(|(key, _user)| key)
        .count_total()
}

/// One event as the session reduction reads it, ordered by time.
type Visit = (
    EventTime,
    EventType,
    Option<i64>,
    Option<u64>,
    CompactString,
);
/// A session's row: start, last event, views, cart adds, purchases, distinct products, cart
/// value, user.
type SessionValue = (EventTime, EventTime, i64, i64, i64, i64, i64, CompactString);

/// `session_features`: every session id's events, cut where the silence exceeds the gap.
fn differential_sessions(
    events: VecCollection<'_, Epoch, Accepted, isize>,
) -> VecCollection<'_, Epoch, (CompactString, SessionValue), isize> {
    events
        .map(|event| {
            let visit: Visit = (
                event.ts,
                event.event_type,
                event.price_cents,
                event.product_id.as_deref().map(product_hash),
                event.user_id,
            );
            (event.session_id, visit)
        })
        .reduce(|_session, visits: &[(&Visit, isize)], rows| {
            let mut products: Vec<u64> = Vec::new();
            let mut row: Option<SessionValue> = None;
            for ((ts, event_type, price, product, user), count) in visits {
                if row.as_ref().is_some_and(|r| *ts > r.1 + GAP_MS) {
                    rows.push((row.take().expect("checked"), 1));
                    products.clear();
                }
                let r = row.get_or_insert_with(|| (*ts, *ts, 0, 0, 0, 0, 0, user.clone()));
                r.1 = *ts;
                let count = *count as i64;
                match event_type {
                    EventType::Click => {
                        r.2 += count;
                        if let Some(product) = product {
                            if !products.contains(product) {
                                products.push(*product);
                                r.5 += 1;
                            }
                        }
                    }
                    EventType::AddToCart => {
                        r.3 += count;
                        r.6 += count * price.unwrap_or(0);
                    }
                    EventType::Purchase => r.4 += count,
                }
                r.7 = r.7.clone().min(user.clone());
            }
            rows.extend(row.map(|r| (r, 1)));
        })
}

fn stages(c: &mut Criterion) {
    let epochs = epochs();
    let events: usize = epochs.iter().map(Vec::len).sum();
    for stage in [Stage::Trends, Stage::Funnel, Stage::Sessions] {
        let mut group = c.benchmark_group(format!("{stage:?}"));
        group.throughput(Throughput::Elements(events as u64));
        for workers in [1, 2] {
            for build in [Build::Keyed, Build::Differential] {
                group.bench_function(format!("{build:?}, {workers} workers"), |b| {
                    b.iter(|| run(epochs.clone(), workers, stage, build))
                });
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(10));
    targets = stages
}
criterion_main!(benches);
