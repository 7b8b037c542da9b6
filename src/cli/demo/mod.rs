//! `clickflow demo`: the whole pipeline on one machine with nothing to set up.
//!
//! An embedded Kafka broker, the synthetic shop producing into it at a steady rate, the
//! pipeline consuming it into PostgreSQL (the local server, or a private one started for the
//! demo), with a churn model trained at start on a synthetic history, until Ctrl-C, which
//! commits the last epoch and stops.

mod model;
mod postgres;

use std::sync::atomic::Ordering;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use clickflow_dataflow::run::{InputSpec, RunConfig};
use clickflow_dataflow::PipelineMetrics;
use clickflow_sinks::postgres::{run_into_postgres, DatabaseUrl, PipelineSpec, SinkConfig};
use clickflow_sources::kafka::{EmbeddedBroker, EventProducer};
use clickflow_sources::shop::{Shop, ShopConfig};

use super::args::{DatabaseArgs, DataflowArgs};
use super::run::spawn_progress_log;
use super::signals::stop_flag;
use super::train::load_model;

/// Flags of `clickflow demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Events per second the synthetic shop produces.
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Partitions of the embedded topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Worker threads.
    #[arg(long, short = 'w', default_value_t = 2)]
    workers: usize,
    /// Seed of the synthetic shop.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of events the shop delivers out of order.
    #[arg(long, default_value_t = 0.01)]
    late_fraction: f64,
    /// Share of malformed payloads.
    #[arg(long, default_value_t = 0.002)]
    malformed_fraction: f64,
    /// Churn model file; without one, the demo trains a model on a synthetic history first.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The server to use; the demo creates (afresh) its own database `clickflow_demo` there.
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    dataflow: DataflowArgs,
}

const TOPIC: &str = "user-events";

/// Runs `clickflow demo`.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let server = postgres::demo_server(&DatabaseUrl::parse(&args.database.database_url)?)?;
    let url = postgres::fresh_demo_database(&server)?;
    let broker = EmbeddedBroker::start()?;
    broker.create_topic(TOPIC, args.partitions)?;
    let brokers = broker.bootstrap_servers().to_string();
    let stop = stop_flag()?;

    eprintln!("clickflow demo");
    let model = match &args.model {
        Some(path) => load_model(Some(path))?,
        None => Some(model::train_on_history(
            args.seed,
            args.dataflow.dataflow(),
            args.workers,
        )?),
    };
    let shop = Shop::new(ShopConfig {
        seed: args.seed,
        start_ms: (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
        events_per_second: args.rate,
        late_fraction: args.late_fraction,
        malformed_fraction: args.malformed_fraction,
        ..ShopConfig::default()
    });
    let producer = {
        let (brokers, stop, rate) = (brokers.clone(), stop.clone(), args.rate.max(1.0));
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut producer = EventProducer::new(&brokers, TOPIC)?;
            let started = Instant::now();
            let mut payload = Vec::with_capacity(256);
            let mut sent = 0u64;
            for record in shop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                payload.clear();
                record.write_payload(&mut payload);
                producer.send(record.key().as_bytes(), &payload)?;
                sent += 1;
                producer.poll();
                let due = Duration::from_secs_f64(sent as f64 / rate);
                if let Some(ahead) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(ahead);
                }
            }
            producer.flush(Duration::from_secs(10))?;
            Ok(sent)
        })
    };

    eprintln!(
        "  shop:      {} events/s into the embedded Kafka broker at {brokers} (topic {TOPIC})",
        args.rate
    );
    eprintln!(
        "  pipeline:  {} workers, 1-minute windows, results in {url}",
        args.workers
    );
    eprintln!(
        "  try:       psql {} -c 'SELECT * FROM funnel_summary ORDER BY window_start DESC LIMIT 6'",
        server.with_database(postgres::DEMO_DATABASE)
    );
    eprintln!("  stop:      Ctrl-C (commits the last epoch)");

    let config = RunConfig {
        dataflow: args.dataflow.dataflow(),
        epochs: args.dataflow.epochs(),
        model,
        ..RunConfig::default()
    };
    let input = InputSpec::Kafka {
        brokers,
        topic: TOPIC.into(),
        partitions: args.partitions,
    };
    let metrics = Arc::new(PipelineMetrics::default());
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = spawn_progress_log(metrics.clone(), finished.clone());
    let spec = PipelineSpec {
        timely: timely::Config::process(args.workers.max(1)),
        input,
        config,
        sink: SinkConfig::new(url),
        writes: true,
    };
    let mut sink_metrics = None;
    let result = run_into_postgres(spec, stop.clone(), metrics, |sink| {
        sink_metrics = Some(sink.metrics.clone())
    });
    stop.store(true, Ordering::Relaxed);
    finished.store(true, Ordering::Relaxed);
    let _ = progress.join();
    let sent = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the shop thread panicked"))??;
    let stats = result?;
    eprintln!(
        "demo stopped: the shop sent {sent} events; the pipeline counted {} and dead-lettered {}",
        stats.events, stats.dead_letters
    );
    if let Some(metrics) = sink_metrics {
        eprintln!("sink: {}", super::run::sink_summary(&metrics));
    }
    Ok(())
}
