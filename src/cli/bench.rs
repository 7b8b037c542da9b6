//! `clickflow bench`: the end-to-end benchmark. Generates events with the synthetic shop,
//! runs the whole pipeline (source, dataflow, churn scoring, PostgreSQL sink) to the end of
//! its input, prints one summary, and checks the tables in PostgreSQL against the oracle: a
//! fast wrong answer fails.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use clickflow_dataflow::kpi::sessions::SessionRule;
use clickflow_dataflow::oracle::{recompute, recompute_file};
use clickflow_dataflow::runtime::profile::OperatorProfile;
use clickflow_dataflow::runtime::run::{InputSpec, RunConfig};
use clickflow_dataflow::runtime::watermark::END_OF_INPUT;
use clickflow_dataflow::{DataflowConfig, EpochConfig, LiveModel};
use clickflow_sinks::postgres::{load_resume_plan, read_tables, DatabaseUrl, PipelineSpec};
use clickflow_sources::file::FileSplits;
use clickflow_sources::kafka::{read_topic, EmbeddedBroker, EventProducer};
use clickflow_sources::shop::{Shop, ShopConfig};
use clickflow_sources::Event;

use super::args::DatabaseArgs;
use super::demo::{demo_server, fresh_database, train_on_history};
use super::emit::{create_embedded_topics, EmitArgs};
use super::launch::{launch, Outlets};
use super::web::WebArgs;

/// The database the benchmark recreates on every run.
const BENCH_DATABASE: &str = "clickflow_bench";

/// The embedded topic.
const TOPIC: &str = "user-events";

/// Where the benchmark's events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BenchSource {
    /// A JSON-lines file, read to its end.
    File,
    /// The embedded Kafka broker (in this process), filled before the run starts.
    Kafka,
}

/// Flags of `clickflow bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Events to generate and process.
    #[arg(long, default_value_t = 2_000_000)]
    events: usize,
    /// Read the events from a file or from the embedded Kafka broker.
    #[arg(long, value_enum, default_value_t = BenchSource::File)]
    source: BenchSource,
    /// Partitions of the embedded topic (the embedded broker silently keeps only ~5 MiB per
    /// partition: 2M events need more than 64; a drop is detected and fails the bench).
    #[arg(long, default_value_t = 128)]
    partitions: i32,
    /// Worker threads.
    #[arg(long, short = 'w', default_value_t = 2)]
    workers: usize,
    /// Splits of the generated file.
    #[arg(long, default_value_t = 16)]
    input_splits: usize,
    /// Seed of the synthetic shop.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Run without churn scoring.
    #[arg(long)]
    no_model: bool,
    /// Run without the recommender, to measure what it costs (the ordered funnel always
    /// runs).
    #[arg(long)]
    no_recommendations: bool,
    /// Length of an epoch while the workers read the file or the filled topic (a backlog),
    /// as `clickflow run --catch-up-epoch-ms`.
    #[arg(long, default_value_t = EpochConfig::default().catch_up_epoch.as_millis() as u64)]
    catch_up_epoch_ms: u64,
    /// Most events a worker reads into one epoch, as `clickflow run --max-epoch-events`.
    #[arg(long, default_value_t = EpochConfig::default().max_epoch_messages)]
    max_epoch_events: usize,
    /// Skip the comparison with the oracle (for profiling only).
    #[arg(long)]
    no_check: bool,
    /// At the end, print how long each dataflow operator was busy, as `clickflow run
    /// --profile-operators` (timely's logging; costs a few percent).
    #[arg(long)]
    profile_operators: bool,
    /// The server; the benchmark recreates its own database `clickflow_bench` there.
    #[command(flatten)]
    database: DatabaseArgs,
    /// Publish the changes too (`--emit-kafka embedded`: to an embedded broker of its own),
    /// to measure what emitting costs.
    #[command(flatten)]
    emit: EmitArgs,
}

/// Runs `clickflow bench`.
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let server = demo_server(&args.database.url()?)?;
    let url = fresh_database(&server, BENCH_DATABASE)?;
    let mut dataflow = DataflowConfig::default();
    if args.no_recommendations {
        dataflow.recommendations = None;
    }
    let model = if args.no_model {
        None
    } else {
        Some(train_on_history(args.seed, dataflow)?)
    };

    let dir = tempfile::tempdir()?;
    let generated = Instant::now();
    let prepared = match args.source {
        BenchSource::File => prepare_file(&dir.path().join("events.jsonl"), &args)?,
        BenchSource::Kafka => prepare_kafka(&args)?,
    };
    eprintln!(
        "generated {} events into the {} in {:.1} s",
        args.events,
        prepared.describe,
        generated.elapsed().as_secs_f64()
    );
    let stop = Arc::new(AtomicBool::new(false));
    if let BenchSource::Kafka = args.source {
        // A topic has no end: stop once every message's offset is committed.
        stop_when_committed(url.clone(), args.events as i64, stop.clone());
    }
    let spec = PipelineSpec {
        timely: timely::Config::process(args.workers.max(1)),
        input: prepared.input.clone(),
        config: RunConfig {
            dataflow,
            model: model.clone().map(LiveModel::new),
            epochs: EpochConfig {
                catch_up_epoch: Duration::from_millis(args.catch_up_epoch_ms.max(1)),
                max_epoch_messages: args.max_epoch_events.max(1),
                ..EpochConfig::default()
            },
            profile: args.profile_operators.then(OperatorProfile::default),
            ..RunConfig::default()
        },
        sink: args.database.sink(url.clone()),
        writes: true,
        observe: None,
    };
    let profile = spec.config.profile.clone();
    let rss_before = peak_rss_mb();
    let started = Instant::now();
    let no_web = WebArgs {
        addr: "127.0.0.1:0".parse()?,
        api_token: None,
        api_token_file: None,
        allowed_hosts: Vec::new(),
        tls_cert: None,
        tls_key: None,
        cors_origins: Vec::new(),
        stream_reconnect_after: std::time::Duration::from_secs(300),
        no_http: true,
    };
    // The change topics' own broker, apart from the input's.
    let feed_broker = match args.emit.is_embedded() {
        true => Some(EmbeddedBroker::start()?),
        false => None,
    };
    let outlets = Outlets {
        webhook: None,
        feed: args
            .emit
            .feed(feed_broker.as_ref().map(|b| b.bootstrap_servers()))?,
    };
    if let (Some(broker), Some(feed)) = (&feed_broker, &outlets.feed) {
        create_embedded_topics(broker, feed)?;
    }
    let finished = launch(spec, &no_web, outlets, None, stop)?;
    let seconds = started.elapsed().as_secs_f64();
    let sink = finished.sink.context("the sink did not start")?;
    let (p50, p99) = sink
        .freshness
        .lock()
        .map(|f| (f.quantile(0.5), f.quantile(0.99)))
        .unwrap_or((None, None));
    let show = |q: Option<i64>| q.map_or("-".to_string(), |ms| format!("{ms} ms"));
    let stats = finished.stats;
    println!(
        "events {} | wall {seconds:.2} s | {:.0} events/s | freshness p50 {} p99 {} | peak RSS {:.0} MB (before the run {:.0} MB) | rows written {} in {} transactions | {} workers, {} source, {}",
        stats.events + stats.dead_letters,
        (stats.events + stats.dead_letters) as f64 / seconds,
        show(p50),
        show(p99),
        peak_rss_mb(),
        rss_before,
        sink.rows.load(Ordering::Relaxed),
        sink.epochs.load(Ordering::Relaxed),
        args.workers,
        prepared.describe,
        if model.is_some() { "with churn scoring" } else { "without churn scoring" }
    );
    if let Some(profile) = profile {
        eprint!("{profile}");
    }
    if let Some(feed) = &finished.feed {
        let lag = feed.lag.lock().unwrap_or_else(|e| e.into_inner());
        println!(
            "change feed: {} changes published | publish lag p50 {} p99 {}",
            feed.published.load(Ordering::Relaxed),
            show(lag.quantile(0.5)),
            show(lag.quantile(0.99)),
        );
    }

    if args.no_check {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tables = runtime.block_on(read_tables(&url))?;
    let (mut oracle, watermark) = match &prepared.input {
        InputSpec::File(splits) => (recompute_file(splits, &dataflow)?, END_OF_INPUT),
        InputSpec::Kafka {
            brokers,
            topic,
            partitions,
        } => {
            let contents = read_topic(
                brokers,
                topic,
                *partitions,
                args.events,
                Duration::from_secs(300),
            )?;
            let events: Vec<Vec<(i64, Event)>> = contents
                .into_iter()
                .map(|partition| {
                    partition
                        .into_iter()
                        .filter_map(|(offset, message)| Some((offset, message.ok()?)))
                        .collect()
                })
                .collect();
            // A topic never ends: only sessions final at the committed watermark are closed
            // (and open ones are scored as known at it).
            let watermark = runtime
                .block_on(async {
                    load_resume_plan(&url.connect().await?, &prepared.input.partitions()).await
                })?
                .committed_watermark;
            let mut oracle = recompute(&events, &dataflow);
            let rule = SessionRule {
                gap_ms: dataflow.session_gap_ms,
                window: dataflow.window,
            };
            for session in oracle.tables.sessions.values_mut() {
                session.closed = rule.final_at(session.last_event) <= watermark;
            }
            (oracle, watermark)
        }
    };
    if let Some(model) = &model {
        oracle.score_at(model, &dataflow, watermark);
    }
    let differences = oracle.differences(&tables);
    anyhow::ensure!(
        differences.is_empty(),
        "the tables differ from the oracle:\n{}",
        differences.join("\n")
    );
    println!(
        "check: the tables equal the oracle ({} trend rows, {} funnel rows, {} sessions, {} scores, {} dead letters)",
        tables.trends.len(),
        tables.funnel.len(),
        tables.sessions.len(),
        tables.scores.len(),
        tables.dead_letters.len()
    );
    Ok(())
}

/// The benchmark's input, ready to run.
struct Prepared {
    input: InputSpec,
    describe: &'static str,
    /// Keeps the embedded broker alive for the run.
    _broker: Option<EmbeddedBroker>,
}

fn prepare_file(path: &Path, args: &BenchArgs) -> anyhow::Result<Prepared> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut payload = Vec::with_capacity(256);
    for record in bench_shop(args.seed).bounded(args.events) {
        payload.clear();
        record.write_payload(&mut payload);
        payload.push(b'\n');
        out.write_all(&payload)?;
    }
    out.flush()?;
    Ok(Prepared {
        input: InputSpec::File(FileSplits::plan(path, args.input_splits)?),
        describe: "file",
        _broker: None,
    })
}

fn prepare_kafka(args: &BenchArgs) -> anyhow::Result<Prepared> {
    let broker = EmbeddedBroker::start()?;
    broker.create_topic(TOPIC, args.partitions)?;
    let brokers = broker.bootstrap_servers().to_string();
    let mut producer = EventProducer::bulk(&brokers, TOPIC)?;
    let mut payload = Vec::with_capacity(256);
    for record in bench_shop(args.seed).bounded(args.events) {
        payload.clear();
        record.write_payload(&mut payload);
        producer.send(record.key().as_bytes(), &payload)?;
    }
    producer.flush(Duration::from_secs(60))?;
    let dropped = broker.check_retention(TOPIC, args.events as u64)?;
    anyhow::ensure!(
        dropped == 0,
        "the embedded broker dropped {dropped} messages: use more --partitions"
    );
    Ok(Prepared {
        input: InputSpec::Kafka {
            brokers,
            topic: TOPIC.into(),
            partitions: args.partitions,
        },
        describe: "embedded Kafka",
        _broker: Some(broker),
    })
}

/// Sets `stop` once the offsets committed in `url` add up to `messages`.
fn stop_when_committed(url: DatabaseUrl, messages: i64, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = url.connect().await?;
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let committed: Option<i64> = client
                    .query_opt(
                        "SELECT sum(next_offset)::bigint FROM clickflow_offsets",
                        &[],
                    )
                    .await
                    .ok()
                    .flatten()
                    .and_then(|row| row.get(0));
                if committed.unwrap_or(0) >= messages {
                    stop.store(true, Ordering::Relaxed);
                    return anyhow::Ok(());
                }
            }
        })
    });
}

/// The benchmark's shop: the criterion benches' mix, with a few malformed records.
fn bench_shop(seed: u64) -> Shop {
    Shop::new(ShopConfig {
        malformed_fraction: 0.001,
        ..ShopConfig::benchmark(seed)
    })
}

/// The process's peak resident set (VmHWM), in MB; 0 where /proc does not tell.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb / 1024.0)
        })
        .unwrap_or(0.0)
}
