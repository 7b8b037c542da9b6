//! `clickflow demo`: the whole pipeline on one machine with nothing to set up.
//!
//! An embedded Kafka broker, the synthetic shop producing into it at a steady rate, the
//! pipeline consuming it into PostgreSQL (the local server, or a private one started for the
//! demo), with a churn model trained at start on a synthetic history, until Ctrl-C, which
//! commits the last epoch and stops.

mod model;
mod postgres;

pub(super) use model::train_on_history;
pub(super) use postgres::{demo_server, fresh_database};

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use clickflow_dataflow::runtime::profile::OperatorProfile;
use clickflow_dataflow::runtime::run::{InputSpec, RunConfig};
use clickflow_sinks::postgres::{ModelSource, PipelineSpec};
use clickflow_sources::kafka::{EmbeddedBroker, EventProducer};
use clickflow_sources::shop::{Incident, Shop, ShopConfig, ShopRecord};

use super::args::{duration, AlertArgs, DatabaseArgs, DataflowArgs};
use super::emit::{create_embedded_topics, EmitArgs};
use super::launch::{launch, Outlets};
use super::produce::rfc3339_ms;
use super::scoring::{Scoring, ScoringArgs};
use super::signals::stop_flag;
use super::train::load_model;
use super::web::WebArgs;

/// Flags of `clickflow demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Events per second the synthetic shop sends once its visits are under way (in the
    /// first minutes, while the visits it starts with unfold, somewhat fewer; the dashboard
    /// shows what arrives).
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
    /// Retrain a challenger this often on the sessions that ended, and promote it when it
    /// beats the live model (`0s`: never).
    #[arg(long, default_value = "10m", value_parser = duration)]
    retrain_every: Duration,
    /// From when the shop's buyers change their patterns: an RFC 3339 time, or a duration
    /// after the demo starts (e.g. `5m`). The live model's ROC AUC drops; retraining
    /// recovers it.
    #[arg(long)]
    drift_at: Option<String>,
    /// Stage an incident, `KIND@AFTER/LASTING` after the demo starts (repeatable), e.g.
    /// `checkout-outage@30m/10m`: kinds spike, drop, checkout-outage, cart-bug,
    /// malformed-storm. The detectors judge a series after 20 minutes of history.
    #[arg(long = "incident")]
    incidents: Vec<Incident>,
    /// When the demo stops, print how long each dataflow operator was busy, as `clickflow
    /// run --profile-operators` (timely's logging; costs a few percent): what an epoch costs
    /// at a steady rate, where the backlog runs of `run` and `bench` show the batch costs.
    #[arg(long)]
    profile_operators: bool,
    #[command(flatten)]
    alerts: AlertArgs,
    #[command(flatten)]
    emit: EmitArgs,
    /// The server to use; the demo creates (afresh) its own database `clickflow_demo` there.
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    dataflow: DataflowArgs,
    #[command(flatten)]
    web: WebArgs,
}

const TOPIC: &str = "user-events";

/// Runs `clickflow demo`.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let server = postgres::demo_server(&args.database.url()?)?;
    let url = postgres::fresh_database(&server, postgres::DEMO_DATABASE)?;
    let broker = EmbeddedBroker::start()?;
    broker.create_topic(TOPIC, args.partitions)?;
    let brokers = broker.bootstrap_servers().to_string();
    let broker_address = brokers.clone();
    let stop = stop_flag()?;

    eprintln!("clickflow demo");
    let model = match &args.model {
        Some(path) => load_model(Some(path))?.expect("a path was given"),
        None => train_on_history(args.seed, args.dataflow.dataflow())?,
    };
    let start_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let drift_at_ms = match args.drift_at.as_deref() {
        None => None,
        Some(at) => Some(match duration(at) {
            Ok(after) => start_ms + after.as_millis() as i64,
            Err(_) => rfc3339_ms(at).map_err(|_| {
                anyhow::anyhow!("--drift-at {at:?} is neither an RFC 3339 time nor a duration")
            })?,
        }),
    };
    // A flat rate (no daily rhythm): `--rate` is what arrives.
    let shop = Shop::new(ShopConfig {
        seed: args.seed,
        start_ms,
        events_per_second: args.rate,
        daily_rhythm: 0.0,
        late_fraction: args.late_fraction,
        malformed_fraction: args.malformed_fraction,
        drift_at_ms,
        incidents: args.incidents.clone(),
        ..ShopConfig::default()
    });
    // Each event is sent when the wall clock reaches its event time, as in a real shop: the
    // watermark then follows the clock and windows complete in real time.
    let producer = {
        let (brokers, stop) = (brokers.clone(), stop.clone());
        std::thread::spawn(move || -> anyhow::Result<(u64, Duration)> {
            let mut producer = EventProducer::live_into_embedded(&brokers, TOPIC)?;
            let started = Instant::now();
            let mut payload = Vec::with_capacity(256);
            let mut sent = 0u64;
            for record in shop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let ShopRecord::Event(event) = &record {
                    let due = Duration::from_millis((event.ts - start_ms).max(0) as u64);
                    if let Some(ahead) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(ahead);
                    }
                }
                payload.clear();
                record.write_payload(&mut payload);
                producer.send(record.key().as_bytes(), &payload)?;
                sent += 1;
                producer.poll();
            }
            let sending = started.elapsed();
            producer.flush(Duration::from_secs(10))?;
            Ok((sent, sending))
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
        alerts: args.alerts.detectors()?,
        profile: args.profile_operators.then(OperatorProfile::default),
        ..RunConfig::default()
    };
    let profile = config.profile.clone();
    let scoring_args = ScoringArgs {
        model: args.model.clone(),
        log_predictions: true,
        prediction_retention: Duration::from_secs(7 * 86_400),
        retrain_every: Some(args.retrain_every).filter(|d| !d.is_zero()),
        retrain_margin: 0.005,
    };
    let source = match &args.model {
        Some(_) => ModelSource::File,
        None => ModelSource::History,
    };
    let scoring = Scoring::new(model, &scoring_args);
    let mut sink = args.database.sink(url);
    sink.prediction_log = scoring_args
        .log_predictions
        .then_some(scoring_args.prediction_retention);
    let input = InputSpec::Kafka {
        brokers,
        topic: TOPIC.into(),
        partitions: args.partitions,
    };
    let spec = PipelineSpec {
        timely: timely::Config::process(args.workers.max(1)),
        input,
        config,
        sink,
        writes: true,
        observe: None,
    };
    let outlets = Outlets {
        webhook: args.alerts.webhook()?,
        feed: args.emit.feed(Some(&broker_address))?,
    };
    if let Some(feed) = &outlets.feed {
        if args.emit.is_embedded() {
            create_embedded_topics(&broker, feed)?;
        }
        eprintln!(
            "  change topics: {}<table> on {} (clickflow tail --brokers {} --topic {}alerts)",
            feed.topic_prefix, feed.brokers, feed.brokers, feed.topic_prefix
        );
    }
    let result = launch(
        spec,
        &args.web,
        outlets,
        Some((scoring, source)),
        stop.clone(),
    );
    stop.store(true, Ordering::Relaxed);
    let (sent, sending) = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the shop thread panicked"))??;
    let finished = result?;
    let stats = finished.stats;
    // The shop sends until the pipeline has stopped, and the pipeline stops after the
    // epoch under way: what the shop sent after that epoch's last read stays in the
    // broker, unread, and is said so rather than left for the reader to subtract.
    let unread = sent.saturating_sub(stats.events + stats.dead_letters);
    eprintln!(
        "demo stopped: the shop sent {sent} events in {:.1} s ({:.0} events/s); the pipeline counted {} and dead-lettered {}; {unread} sent after its last epoch were left unread",
        sending.as_secs_f64(),
        sent as f64 / sending.as_secs_f64().max(1e-3),
        stats.events,
        stats.dead_letters
    );
    if let Some(metrics) = finished.sink {
        eprintln!("sink: {}", super::run::sink_summary(&metrics));
    }
    if let Some(profile) = profile {
        eprint!("{profile}");
    }
    Ok(())
}
