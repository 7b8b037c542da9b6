//! Running the graph on timely workers: threads of one process, or a cluster of processes.
//!
//! Partition `p` (Kafka partition or file split) is read by global worker `p % workers`,
//! counting every worker of every process. Worker 0 of process 0 gathers the output and hands
//! each closed epoch to the `deliver` callback; other processes pass `None`. With
//! [`Delivery::PerWorker`], every worker of every process also hands its own rows to a
//! writer of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use clickflow_sources::decode::DecodeLimits;
use clickflow_sources::file::{FileSource, FileSplits};
use clickflow_sources::kafka::{KafkaSource, KafkaSourceConfig};
use clickflow_sources::{PartitionId, Source, SourceError};

use crate::alerts::detect::DetectorConfig;
use crate::config::{DataflowConfig, EpochConfig};
use crate::graph::{build_graph, AlertSetup, Outputs};
use crate::kpi::churn::ScoringSetup;
use crate::kpi::sessions::SessionRule;
use crate::lifecycle::LiveModel;
use crate::metrics::PipelineMetrics;
use crate::runtime::driver::{abandon, drive, DriveSettings, DriveStats};
use crate::runtime::output::{Deliver, EpochOutput, Handoff};
use crate::runtime::profile::OperatorProfile;
use crate::runtime::resume::{PartitionResume, ResumePlan};

/// Where the events come from.
#[derive(Clone, Debug)]
pub enum InputSpec {
    /// A Kafka topic.
    Kafka {
        /// `bootstrap.servers`.
        brokers: String,
        /// The topic.
        topic: String,
        /// Its number of partitions.
        partitions: i32,
    },
    /// A JSON-lines file, cut into splits.
    File(FileSplits),
}

impl InputSpec {
    /// Every partition of the input, by global index.
    pub fn partitions(&self) -> Vec<PartitionId> {
        match self {
            InputSpec::Kafka {
                topic, partitions, ..
            } => {
                let topic: Arc<str> = topic.as_str().into();
                (0..*partitions)
                    .map(|p| PartitionId::new(topic.clone(), p))
                    .collect()
            }
            InputSpec::File(splits) => (0..splits.len()).map(|i| splits.partition(i)).collect(),
        }
    }
}

/// Everything a run needs besides its input.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// Windows, lateness, sessions.
    pub dataflow: DataflowConfig,
    /// Epochs and pacing.
    pub epochs: EpochConfig,
    /// Decoding limits.
    pub limits: DecodeLimits,
    /// Where each partition resumes.
    pub resume: ResumePlan,
    /// The churn model scoring every open session, replaceable while the pipeline runs;
    /// without one, `churn_scores` stays empty.
    pub model: Option<LiveModel>,
    /// The anomaly detectors' tuning and rules.
    pub alerts: DetectorConfig,
    /// Where to sum each operator's busy time (`None`: timely's logging stays off).
    pub profile: Option<OperatorProfile>,
    /// Whether something reads the live views' feeds from the epochs (the web server's
    /// views): without it (the default) the epochs carry no session items, product names
    /// or popular products, which nothing else reads. It shapes the dataflow graph, so it
    /// must be the same on every process of a cluster.
    pub live_views: bool,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// timely could not start its workers (for example, a cluster peer did not connect).
    #[error("cannot start the timely workers: {0}")]
    Timely(String),
    /// A source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A worker panicked.
    #[error("a worker failed: {0}")]
    Worker(String),
}

/// The sum of what this process's workers did.
pub type RunStats = DriveStats;

/// The callback offered each closed epoch, on worker 0 of process 0; it must not block (see
/// [`Handoff`]).
pub type EpochSink = Box<dyn FnMut(EpochOutput) -> Handoff + Send>;

/// Makes the writer of one worker's rows, given the worker's global index and the number of
/// workers of the whole cluster (called once on each worker, on its thread).
pub type WriterFactory = Arc<dyn Fn(usize, usize) -> EpochSink + Send + Sync>;

/// Where the closed epochs go.
pub enum Delivery {
    /// Nowhere from this process (another process gathers them).
    Nowhere,
    /// Everything gathered on worker 0 of process 0 and handed to one consumer.
    Gathered(EpochSink),
    /// Each worker's rows to its own writer (`writers` makes one for every worker of this
    /// process); progress, retention and dead letters, with announcements of how far the
    /// epochs are closed, to `coordinator` (on process 0; `None` on the others).
    PerWorker {
        /// Receives the gathered part of every epoch.
        coordinator: Option<EpochSink>,
        /// Makes each worker's writer.
        writers: WriterFactory,
    },
}

impl From<Option<EpochSink>> for Delivery {
    fn from(deliver: Option<EpochSink>) -> Delivery {
        deliver.map_or(Delivery::Nowhere, Delivery::Gathered)
    }
}

/// An [`EpochSink`] that takes every epoch at once and hands it to `take` (tests, tools).
pub fn taking(mut take: impl FnMut(EpochOutput) + Send + 'static) -> EpochSink {
    Box::new(move |output| {
        take(output);
        Handoff::Taken
    })
}

/// Runs the pipeline over `input` until it is consumed (a file) or `stop` is set.
pub fn run(
    timely_config: timely::Config,
    input: InputSpec,
    config: RunConfig,
    delivery: impl Into<Delivery>,
    stop: Arc<AtomicBool>,
    metrics: Arc<PipelineMetrics>,
) -> Result<RunStats, RunError> {
    let (deliver, writers) = match delivery.into() {
        Delivery::Nowhere => (None, None),
        Delivery::Gathered(deliver) => (Some(deliver), None),
        Delivery::PerWorker {
            coordinator,
            writers,
        } => (coordinator, Some(writers)),
    };
    let partitions: Arc<[PartitionId]> = input.partitions().into();
    let settings = DriveSettings {
        dataflow: config.dataflow,
        epochs: config.epochs,
        stop,
        metrics: metrics.clone(),
        models: None,
    };
    let deliver = Arc::new(Mutex::new(deliver));
    let guards = timely::execute(
        timely_config,
        move |worker| -> Result<DriveStats, SourceError> {
            let (index, peers) = (worker.index(), worker.peers());
            let own: Vec<u32> = (0..partitions.len() as u32)
                .filter(|p| *p as usize % peers == index)
                .collect();
            let resume: Vec<PartitionResume> = own
                .iter()
                .map(|&p| {
                    config
                        .resume
                        .partitions
                        .get(&partitions[p as usize])
                        .copied()
                        .unwrap_or_default()
                })
                .collect();
            let sink: Option<Deliver> = if index == 0 {
                let shared = metrics.clone();
                deliver
                    .lock()
                    .ok()
                    .and_then(|mut d| d.take())
                    .map(|mut deliver| {
                        Box::new(move |output: EpochOutput| {
                            let watermark = output.watermark;
                            // An announcement of how far the epochs are closed carries no
                            // progress of its own.
                            let announcement = output.is_empty();
                            let handoff = deliver(output);
                            if let (Handoff::Taken, false) = (&handoff, announcement) {
                                shared.epochs.fetch_add(1, Ordering::Relaxed);
                                shared.watermark.store(watermark, Ordering::Relaxed);
                            }
                            handoff
                        }) as Deliver
                    })
            } else {
                None
            };
            if let Some(profile) = &config.profile {
                profile.attach(worker);
            }
            let committed = config.resume.committed_watermark;
            let scoring = config.model.as_ref().map(|live| ScoringSetup {
                model: live.current(),
                rule: SessionRule {
                    gap_ms: config.dataflow.session_gap_ms,
                    window: config.dataflow.window,
                },
                history: config.resume.history.clone(),
            });
            let inputs = build_graph(
                worker,
                config.dataflow,
                partitions.clone(),
                committed,
                scoring,
                AlertSetup {
                    config: config.alerts.clone(),
                    history: config.resume.window_history.clone(),
                },
                Outputs {
                    gathered: sink,
                    own_rows: writers
                        .as_ref()
                        .map(|make| Box::new(make(index, peers)) as Deliver),
                    live_views: config.live_views,
                },
            );
            // Worker 0 sends replacement models into the dataflow.
            let mut settings = settings.clone();
            if index == 0 {
                settings.models = config.model.clone();
            }
            // The graph exists on every worker before any source opens: a worker whose source
            // fails must still take part in the dataflow until it is run dry.
            match open_source(&input, &own, &resume, config.limits) {
                Ok(mut source) => {
                    let owned: Vec<(u32, PartitionResume)> =
                        own.iter().copied().zip(resume).collect();
                    drive(worker, inputs, source.as_mut(), &owned, &settings)
                }
                Err(error) => abandon(worker, inputs, &settings.stop, error),
            }
        },
    )
    .map_err(RunError::Timely)?;
    let mut total = DriveStats::default();
    for result in guards.join() {
        let stats = result.map_err(RunError::Worker)??;
        total.events += stats.events;
        total.dead_letters += stats.dead_letters;
        total.late += stats.late;
        total.epochs = total.epochs.max(stats.epochs);
    }
    Ok(total)
}

fn open_source(
    input: &InputSpec,
    own: &[u32],
    resume: &[PartitionResume],
    limits: DecodeLimits,
) -> Result<Box<dyn Source>, SourceError> {
    let starts = own.iter().zip(resume).map(|(&p, r)| (p, r.start));
    Ok(match input {
        InputSpec::Kafka { brokers, topic, .. } => Box::new(KafkaSource::new(KafkaSourceConfig {
            brokers: brokers.clone(),
            topic: topic.clone(),
            partitions: starts.map(|(p, start)| (p as i32, start)).collect(),
            limits,
        })?),
        InputSpec::File(splits) => {
            let assigned: Vec<(usize, Option<i64>)> =
                starts.map(|(p, start)| (p as usize, start)).collect();
            Box::new(FileSource::open(splits, &assigned, limits)?)
        }
    })
}
