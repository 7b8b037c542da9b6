//! Shared set-up of clickflow's benchmarks: pre-generated shop events, kept outside the
//! timed loops.
#![deny(missing_docs)]

use std::io::Write;
use std::path::Path;

use clickflow_sources::shop::{Shop, ShopConfig, ShopRecord};

/// The shop the benchmarks use: realistic mix, a little disorder, no malformed payloads.
pub fn bench_shop(seed: u64) -> Shop {
    Shop::new(ShopConfig::benchmark(seed))
}

/// `count` encoded payloads.
pub fn payloads(count: usize) -> Vec<Vec<u8>> {
    bench_shop(1)
        .bounded(count)
        .map(|record| {
            let mut payload = Vec::with_capacity(200);
            record.write_payload(&mut payload);
            payload
        })
        .collect()
}

/// Writes `count` records as JSON lines to `path`.
pub fn write_events_file(path: &Path, count: usize) -> std::io::Result<()> {
    write_shop_file(path, bench_shop(2), count)
}

/// `count` records of `shop` as a JSON-lines file at `path`.
pub fn write_shop_file(path: &Path, shop: Shop, count: usize) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut payload = Vec::with_capacity(256);
    for record in shop.bounded(count) {
        payload.clear();
        record.write_payload(&mut payload);
        payload.push(b'\n');
        out.write_all(&payload)?;
    }
    out.flush()
}

/// The records themselves.
pub fn records(count: usize) -> Vec<ShopRecord> {
    bench_shop(3).take_records(count)
}

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clickflow_dataflow::graph::{build_graph, AlertSetup, Outputs};
use clickflow_dataflow::runtime::driver::{drive, DriveSettings, DriveStats};
use clickflow_dataflow::runtime::output::Handoff;
use clickflow_dataflow::runtime::resume::PartitionResume;
use clickflow_dataflow::runtime::watermark::NO_WATERMARK;
use clickflow_dataflow::{DataflowConfig, EpochConfig};
use clickflow_sources::{
    Event, PartitionId, PartitionProgress, Source, SourceBatch, SourceError, SourcedEvent,
};

/// Pre-decoded events split into partitions by session, as Kafka would key them.
pub fn partitioned_events(count: usize, partitions: usize) -> Vec<Vec<Event>> {
    let mut split = vec![Vec::with_capacity(count / partitions + 1); partitions];
    for record in records(count) {
        if let ShopRecord::Event(event) = record {
            let hash = event
                .session_id
                .bytes()
                .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
            split[hash % partitions].push(event);
        }
    }
    split
}

/// A source over events already in memory: measures the graph without decoding.
struct MemorySource {
    ids: Vec<PartitionId>,
    events: Vec<Vec<Event>>,
    positions: Vec<usize>,
    finished: Vec<bool>,
}

impl Source for MemorySource {
    fn partitions(&self) -> &[PartitionId] {
        &self.ids
    }

    fn poll(&mut self, batch: &mut SourceBatch, max: usize) -> Result<(), SourceError> {
        let share = (max / self.events.len().max(1)).max(1);
        for (i, events) in self.events.iter().enumerate() {
            let start = self.positions[i];
            let end = (start + share).min(events.len());
            for (offset, event) in events[start..end].iter().enumerate() {
                batch.events.push(SourcedEvent {
                    partition: i,
                    offset: (start + offset) as i64,
                    event: event.clone(),
                });
            }
            self.positions[i] = end;
            let finished = end == events.len();
            if start != end || (finished && !self.finished[i]) {
                self.finished[i] = finished;
                batch.progress.push(PartitionProgress {
                    partition: i,
                    next_offset: end as i64,
                    caught_up: finished,
                    finished,
                });
            }
        }
        Ok(())
    }

    fn is_finished(&self) -> bool {
        self.finished.iter().all(|f| *f)
    }

    fn backlogged(&self) -> bool {
        !self.is_finished()
    }

    fn set_limit(&mut self, _partition: usize, _limit: Option<i64>) -> Result<(), SourceError> {
        // Nothing is ever committed before a benchmark run, so no hold is needed once the
        // replay barrier (trivially) passes; the bench starts fresh every time.
        Ok(())
    }
}

/// Runs pre-decoded `partitions` through the whole graph on `workers` threads and returns how
/// many row changes the output carried.
pub fn run_in_memory(partitions: Arc<Vec<Vec<Event>>>, workers: usize) -> usize {
    let ids: Arc<[PartitionId]> = (0..partitions.len())
        .map(|p| PartitionId::new("memory", p as i32))
        .collect();
    let rows = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = rows.clone();
    let guards = timely::execute(
        timely::Config::process(workers),
        move |worker| -> DriveStats {
            let (index, peers) = (worker.index(), worker.peers());
            let own: Vec<usize> = (0..partitions.len())
                .filter(|p| p % peers == index)
                .collect();
            let counted = counted.clone();
            let deliver: Option<clickflow_dataflow::runtime::output::Deliver> =
                (index == 0).then(|| {
                    Box::new(move |output: clickflow_dataflow::EpochOutput| {
                        counted
                            .fetch_add(output.row_changes(), std::sync::atomic::Ordering::Relaxed);
                        Handoff::Taken
                    }) as clickflow_dataflow::runtime::output::Deliver
                });
            let inputs = build_graph(
                worker,
                DataflowConfig::default(),
                ids.clone(),
                NO_WATERMARK,
                None,
                AlertSetup::default(),
                Outputs {
                    gathered: deliver,
                    ..Outputs::default()
                },
            );
            let mut source = MemorySource {
                ids: own.iter().map(|&p| ids[p].clone()).collect(),
                events: own.iter().map(|&p| partitions[p].clone()).collect(),
                positions: vec![0; own.len()],
                finished: vec![false; own.len()],
            };
            let owned: Vec<(u32, PartitionResume)> = own
                .iter()
                .map(|&p| (p as u32, PartitionResume::default()))
                .collect();
            let settings = DriveSettings {
                dataflow: DataflowConfig::default(),
                epochs: EpochConfig {
                    poll_batch: 8192,
                    ..EpochConfig::default()
                },
                stop: Arc::new(AtomicBool::new(false)),
                metrics: Default::default(),
                models: None,
            };
            drive(worker, inputs, &mut source, &owned, &settings).expect("memory never fails")
        },
    )
    .expect("timely starts");
    for result in guards.join() {
        result.expect("a worker finished");
    }
    rows.load(std::sync::atomic::Ordering::Relaxed)
}

/// Event time at which the generated endless stream starts (2025-07-08T00:00:00Z).
pub const ENDLESS_START_MS: i64 = 1_751_932_800_000;

/// A source that generates shop events on the fly: `count` events spread over `hours` of
/// event time, for measuring memory on a long stream without storing it. Like partitions fed
/// in real time, generated partitions keep pace with each other: one never runs more than
/// five minutes of event time ahead of the pipeline watermark (else the others' slower
/// progress, not the pipeline, would decide how much open state piles up).
struct GeneratedSource {
    ids: Vec<PartitionId>,
    shop: Shop,
    remaining: u64,
    offset: i64,
    newest: i64,
    metrics: Arc<clickflow_dataflow::PipelineMetrics>,
}

/// How far a generated partition may run ahead of the pipeline watermark.
const PACE_MS: i64 = 5 * 60_000;

impl Source for GeneratedSource {
    fn partitions(&self) -> &[PartitionId] {
        &self.ids
    }

    fn poll(&mut self, batch: &mut SourceBatch, max: usize) -> Result<(), SourceError> {
        if self
            .metrics
            .watermark()
            .is_some_and(|w| self.newest > w.saturating_add(PACE_MS))
        {
            return Ok(());
        }
        let take = (max as u64).min(self.remaining);
        for _ in 0..take {
            if let ShopRecord::Event(event) = self.shop.next_record() {
                self.newest = self.newest.max(event.ts);
                batch.events.push(SourcedEvent {
                    partition: 0,
                    offset: self.offset,
                    event,
                });
            }
            self.offset += 1;
        }
        self.remaining -= take;
        let finished = self.remaining == 0;
        batch.progress.push(PartitionProgress {
            partition: 0,
            next_offset: self.offset,
            caught_up: finished,
            finished,
        });
        Ok(())
    }

    fn is_finished(&self) -> bool {
        self.remaining == 0
    }

    fn backlogged(&self) -> bool {
        !self.is_finished()
    }

    fn set_limit(&mut self, _partition: usize, _limit: Option<i64>) -> Result<(), SourceError> {
        Ok(())
    }
}

/// Runs `count` generated events spanning `hours` of event time through the graph on
/// `workers` threads (one generated partition per worker); returns the events counted.
pub fn run_generated(
    count: u64,
    hours: u64,
    workers: usize,
    metrics: Arc<clickflow_dataflow::PipelineMetrics>,
) -> u64 {
    let ids: Arc<[PartitionId]> = (0..workers)
        .map(|p| PartitionId::new("generated", p as i32))
        .collect();
    let per_worker = count / workers as u64;
    let rate = per_worker as f64 / (hours as f64 * 3600.0);
    let guards = timely::execute(
        timely::Config::process(workers),
        move |worker| -> DriveStats {
            let index = worker.index();
            let shared = metrics.clone();
            let deliver: Option<clickflow_dataflow::runtime::output::Deliver> =
                (index == 0).then(|| {
                    Box::new(move |output: clickflow_dataflow::EpochOutput| {
                        shared
                            .watermark
                            .store(output.watermark, std::sync::atomic::Ordering::Relaxed);
                        Handoff::Taken
                    }) as clickflow_dataflow::runtime::output::Deliver
                });
            let inputs = build_graph(
                worker,
                DataflowConfig::default(),
                ids.clone(),
                NO_WATERMARK,
                None,
                AlertSetup::default(),
                Outputs {
                    gathered: deliver,
                    ..Outputs::default()
                },
            );
            let shop = Shop::new(ShopConfig {
                seed: 100 + index as u64,
                users: 50_000,
                products: 5_000,
                start_ms: ENDLESS_START_MS,
                events_per_second: rate,
                daily_rhythm: 0.0,
                late_fraction: 0.01,
                max_lateness_ms: 60_000,
                ..ShopConfig::default()
            });
            let mut source = GeneratedSource {
                ids: vec![ids[index].clone()],
                shop,
                remaining: per_worker,
                offset: 0,
                newest: i64::MIN,
                metrics: metrics.clone(),
            };
            let settings = DriveSettings {
                dataflow: DataflowConfig::default(),
                epochs: EpochConfig {
                    poll_batch: 8192,
                    ..EpochConfig::default()
                },
                stop: Arc::new(AtomicBool::new(false)),
                metrics: metrics.clone(),
                models: None,
            };
            drive(
                worker,
                inputs,
                &mut source,
                &[(index as u32, PartitionResume::default())],
                &settings,
            )
            .expect("generation never fails")
        },
    )
    .expect("timely starts");
    guards
        .join()
        .into_iter()
        .map(|r| r.expect("a worker finished").events)
        .sum()
}

use clickflow_dataflow::rows::{
    FeatureValues, FunnelRow, Probability, ScoreRow, SessionRow, TrendRow,
};
use clickflow_dataflow::training::history_examples;
use clickflow_dataflow::window::Window;
use clickflow_dataflow::EpochOutput;
use clickflow_model::{ChurnModel, Example, TrainOptions, FEATURE_COUNT};
use clickflow_sources::EventType;
use clickflow_web::LiveViews;

/// The default churn model trained on a synthetic history (as the demo's), with its
/// examples.
pub fn shop_model() -> (ChurnModel, Vec<Example>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let examples = history_examples(7, 1_900_000_000_000, DataflowConfig::default(), dir.path())
        .expect("the history is written and read");
    let model = ChurnModel::train(&examples, &TrainOptions::default()).expect("the model trains");
    (model, examples)
}

/// Live views as full as the dashboard ever sees them: 120 windows of trends and funnel, one
/// still open, and `open_sessions` scored open sessions.
pub fn full_views(open_sessions: usize) -> LiveViews {
    const T0: i64 = 1_900_000_000_000;
    let mut output = EpochOutput {
        watermark: T0 + 119 * 60_000,
        ..EpochOutput::default()
    };
    for w in 0..120 {
        let window = Window {
            start: T0 + w * 60_000,
            end: T0 + (w + 1) * 60_000,
        };
        for (i, event_type) in EventType::ALL.into_iter().enumerate() {
            let count = 30_000 / (1 + 3 * i as i64) + w * 7;
            let revenue_cents = if event_type == EventType::Purchase {
                count * 2_499
            } else {
                0
            };
            output.trends.push((
                TrendRow {
                    window,
                    event_type,
                    count,
                    revenue_cents,
                },
                1,
            ));
            output.funnel.push((
                FunnelRow {
                    window,
                    event_type,
                    unique_users: count / 3,
                },
                1,
            ));
        }
    }
    for s in 0..open_sessions as i64 {
        let session_id = format!("s{s}");
        let user_id = format!("u{}", s % 50_000);
        output.sessions.push((
            SessionRow {
                session_id: session_id.as_str().into(),
                user_id: user_id.as_str().into(),
                num_views: 1 + s % 9,
                num_cart_adds: s % 3,
                num_purchases: 0,
                session_start: T0,
                last_event: T0 + s % 600_000,
                num_products: 1 + s % 7,
                cart_value_cents: (s % 3) * 1_999,
                closed: false,
            },
            1,
        ));
        output.scores.push((
            ScoreRow {
                session_id: session_id.as_str().into(),
                session_start: T0,
                user_id: user_id.as_str().into(),
                churn_probability: Probability((s % 1000) as f64 / 1000.0),
                model_version: "rf-bench".into(),
                features: FeatureValues([0.0; FEATURE_COUNT]),
                as_of: T0 + s % 600_000,
            },
            1,
        ));
    }
    let views = LiveViews::default();
    views.apply(&output);
    views
}

/// `epochs` epochs as the sink receives them from a backfill: each inserts `sessions` new
/// open sessions with scores, and updates (retraction + insertion) the previous epoch's.
pub fn sink_epochs(epochs: usize, sessions: usize) -> Vec<EpochOutput> {
    let row = |s: usize, views: i64| SessionRow {
        session_id: format!("s{s}").as_str().into(),
        user_id: format!("u{}", s % 50_000).as_str().into(),
        num_views: views,
        num_cart_adds: (s % 3) as i64,
        num_purchases: 0,
        session_start: 1_900_000_000_000,
        last_event: 1_900_000_000_000 + views * 1_000,
        num_products: views,
        cart_value_cents: (s % 3) as i64 * 1_999,
        closed: false,
    };
    let score = |s: usize, views: i64| ScoreRow {
        session_id: format!("s{s}").as_str().into(),
        session_start: 1_900_000_000_000,
        user_id: format!("u{}", s % 50_000).as_str().into(),
        churn_probability: Probability(1.0 / (1.0 + views as f64)),
        model_version: "rf-bench".into(),
        features: FeatureValues([views as f64; FEATURE_COUNT]),
        as_of: 1_900_000_000_000 + views * 1_000,
    };
    let partition = clickflow_sources::PartitionId::new("bench", 0);
    (0..epochs)
        .map(|epoch| {
            let mut output = EpochOutput {
                epoch: epoch as u64,
                watermark: 1_900_000_000_000,
                ..EpochOutput::default()
            };
            for s in epoch * sessions..(epoch + 1) * sessions {
                output.sessions.push((row(s, 1), 1));
                output.scores.push((score(s, 1), 1));
                if epoch > 0 {
                    let old = s - sessions;
                    output.sessions.push((row(old, 1), -1));
                    output.sessions.push((row(old, 2), 1));
                    output.scores.push((score(old, 1), -1));
                    output.scores.push((score(old, 2), 1));
                }
            }
            output
                .partitions
                .push(clickflow_dataflow::runtime::output::PartitionState {
                    partition: partition.clone(),
                    next_offset: ((epoch + 1) * sessions) as i64,
                    highest: Some(1_900_000_000_000),
                });
            output
        })
        .collect()
}
