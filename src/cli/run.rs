//! `clickflow run`: the pipeline against a Kafka topic or a JSON-lines file, into PostgreSQL.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use clickflow_dataflow::runtime::profile::OperatorProfile;
use clickflow_dataflow::runtime::run::{InputSpec, RunConfig};
use clickflow_dataflow::PipelineMetrics;
use clickflow_sinks::postgres::{ModelSource, PipelineSpec, SinkMetrics};
use clickflow_sources::file::FileSplits;
use clickflow_sources::kafka::partition_count;

use super::args::{AlertArgs, ClusterArgs, DatabaseArgs, DataflowArgs};
use super::emit::EmitArgs;
use super::launch::{launch, Outlets};
use super::scoring::{Scoring, ScoringArgs};
use super::signals::stop_flag;
use super::train::load_model;
use super::web::WebArgs;

/// Flags of `clickflow run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read this JSON-lines file (a backfill or replay) instead of Kafka; the command ends
    /// once the whole file is committed.
    #[arg(long, conflicts_with = "brokers")]
    input: Option<PathBuf>,
    /// Splits of the input file (independent of the worker count, so results are too).
    #[arg(long, default_value_t = 16)]
    input_splits: usize,
    /// Kafka bootstrap servers (this or --input is needed).
    #[arg(long)]
    brokers: Option<String>,
    /// Kafka topic.
    #[arg(long, default_value = "user-events")]
    topic: String,
    /// At the end, print how long each dataflow operator was busy, summed over this
    /// process's workers (timely's logging; costs a few percent).
    #[arg(long)]
    profile_operators: bool,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    dataflow: DataflowArgs,
    #[command(flatten)]
    alerts: AlertArgs,
    #[command(flatten)]
    emit: EmitArgs,
    #[command(flatten)]
    web: WebArgs,
}

/// Runs `clickflow run`.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let url = args.database.url()?;
    let input = match (&args.input, &args.brokers) {
        (Some(path), _) => InputSpec::File(FileSplits::plan(path, args.input_splits)?),
        (None, Some(brokers)) => {
            let partitions = partition_count(brokers, &args.topic, Duration::from_secs(10))?;
            InputSpec::Kafka {
                brokers: brokers.clone(),
                topic: args.topic.clone(),
                partitions,
            }
        }
        (None, None) => anyhow::bail!("give --input FILE or --brokers HOST:PORT"),
    };
    let (timely_config, writes) = args.cluster.timely()?;
    let model = load_model(args.scoring.model.as_ref())?;
    anyhow::ensure!(
        model.is_some() || (args.scoring.retrain_every.is_none() && !args.scoring.log_predictions),
        "--retrain-every and --log-predictions need a model to start from: give --model FILE"
    );
    let scoring = model.map(|m| (Scoring::new(m, &args.scoring), ModelSource::File));
    let config = RunConfig {
        dataflow: args.dataflow.dataflow(),
        epochs: args.dataflow.epochs(),
        alerts: args.alerts.detectors()?,
        profile: args.profile_operators.then(OperatorProfile::default),
        ..RunConfig::default()
    };
    let profile = config.profile.clone();
    let mut sink = args.database.sink(url.clone());
    if args.scoring.log_predictions {
        sink.prediction_log = Some(args.scoring.prediction_retention);
    }
    tracing::info!(database = %url, input = describe(&input), writes, "starting the pipeline");
    let stop = stop_flag()?;
    let started = Instant::now();
    let spec = PipelineSpec {
        timely: timely_config,
        input,
        config,
        sink,
        writes,
        observe: None,
    };
    let outlets = Outlets {
        webhook: args.alerts.webhook()?,
        feed: args.emit.feed(None)?,
    };
    let finished = launch(spec, &args.web, outlets, scoring, stop)?;
    let stats = finished.stats;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "done: {} events ({:.0} events/s) in {seconds:.2} s",
        stats.events,
        stats.events as f64 / seconds.max(1e-9),
    );
    if let Some(metrics) = finished.sink {
        eprintln!("dead letters written: {}", dead_letter_summary(&metrics));
        eprintln!("sink: {}", sink_summary(&metrics));
    }
    if let Some(profile) = profile {
        eprint!("{profile}");
    }
    Ok(())
}

/// The dead letters the sink inserted, in all and by reason: `0`, or `25 (late 20, not_json 5)`.
/// Counted from what PostgreSQL says it inserted, so a replayed dead letter is not counted
/// twice and a late event rejected anywhere in the dataflow is.
pub(super) fn dead_letter_summary(metrics: &SinkMetrics) -> String {
    let by_kind = metrics
        .dead_letters
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let total: u64 = by_kind.values().sum();
    if total == 0 {
        return "0".into();
    }
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("{total} ({})", kinds.join(", "))
}

/// Transactions, rows, the sink's own speed, and how fresh committed results were.
pub(super) fn sink_summary(metrics: &SinkMetrics) -> String {
    let epochs = metrics.epochs.load(Ordering::Relaxed);
    let rows = metrics.rows.load(Ordering::Relaxed);
    let busy = metrics.commit_micros_total.load(Ordering::Relaxed) as f64 / 1e6;
    let (p50, p99) = metrics
        .freshness
        .lock()
        .map(|f| (f.quantile(0.5), f.quantile(0.99)))
        .unwrap_or((None, None));
    let show = |q: Option<i64>| q.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "-".into());
    format!(
        "{epochs} transactions, {rows} rows ({:.0} rows/s while committing), freshness p50 {} p99 {} (arrival to commit)",
        rows as f64 / busy.max(1e-9),
        show(p50),
        show(p99)
    )
}

fn describe(input: &InputSpec) -> String {
    match input {
        InputSpec::Kafka {
            brokers,
            topic,
            partitions,
        } => format!("kafka {brokers} {topic} ({partitions} partitions)"),
        InputSpec::File(splits) => format!("{} ({} splits)", splits.topic, splits.len()),
    }
}

/// The thread that logs throughput every five seconds.
pub(super) struct ProgressLog {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ProgressLog {
    /// Starts logging `metrics`.
    pub(super) fn spawn(metrics: Arc<PipelineMetrics>) -> ProgressLog {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut last = (Instant::now(), 0u64);
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(PROGRESS_EVERY) {
                let events = metrics.events.load(Ordering::Relaxed);
                let rate = (events - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), events);
                tracing::info!(
                    events,
                    events_per_second = rate.round(),
                    dead_letters = metrics.dead_letters.load(Ordering::Relaxed),
                    epochs = metrics.epochs.load(Ordering::Relaxed),
                    watermark_ms = metrics.watermark(),
                    "progress"
                );
            }
        });
        ProgressLog { stop, thread }
    }

    /// Stops the log at once and waits for its thread. (It used to look for a stop flag
    /// every 200 ms, and every run's exit waited up to that long for it: the side-by-side
    /// file's wall times came in steps of 0.2 s, 4 December 2026.)
    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// How often the progress line is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
