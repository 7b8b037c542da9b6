//! `clickflow bench`: the end-to-end benchmark. Generates events with the synthetic shop,
//! runs the whole pipeline (source, dataflow, churn scoring, PostgreSQL sink) to the end of
//! its input, prints one summary, and checks the tables in PostgreSQL against the oracle: a
//! fast wrong answer fails.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use clickflow_dataflow::oracle::recompute_file;
use clickflow_dataflow::run::{InputSpec, RunConfig};
use clickflow_dataflow::DataflowConfig;
use clickflow_sinks::postgres::{read_tables, DatabaseUrl, PipelineSpec, SinkConfig};
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Shop, ShopConfig};

use super::args::DatabaseArgs;
use super::demo::{demo_server, fresh_database, train_on_history};
use super::launch::launch;
use super::web::WebArgs;

/// The database the benchmark recreates on every run.
const BENCH_DATABASE: &str = "clickflow_bench";

/// Flags of `clickflow bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Events to generate and process.
    #[arg(long, default_value_t = 2_000_000)]
    events: usize,
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
    /// Skip the comparison with the oracle (for profiling only).
    #[arg(long)]
    no_check: bool,
    /// The server; the benchmark recreates its own database `clickflow_bench` there.
    #[command(flatten)]
    database: DatabaseArgs,
}

/// Runs `clickflow bench`.
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let server = demo_server(&DatabaseUrl::parse(&args.database.database_url)?)?;
    let url = fresh_database(&server, BENCH_DATABASE)?;
    let dataflow = DataflowConfig::default();
    let model = if args.no_model {
        None
    } else {
        Some(train_on_history(args.seed, dataflow, args.workers)?)
    };

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("events.jsonl");
    let generated = Instant::now();
    write_shop(&path, args.seed, args.events)?;
    let bytes = std::fs::metadata(&path)?.len();
    eprintln!(
        "generated {} events ({:.0} MB) in {:.1} s",
        args.events,
        bytes as f64 / 1e6,
        generated.elapsed().as_secs_f64()
    );

    let splits = FileSplits::plan(&path, args.input_splits)?;
    let spec = PipelineSpec {
        timely: timely::Config::process(args.workers.max(1)),
        input: InputSpec::File(splits.clone()),
        config: RunConfig {
            dataflow,
            model: model.clone(),
            ..RunConfig::default()
        },
        sink: SinkConfig::new(url.clone()),
        writes: true,
        observe: None,
    };
    let rss_before = peak_rss_mb();
    let started = Instant::now();
    let no_web = WebArgs {
        addr: "127.0.0.1:0".parse()?,
        api_token: None,
        no_http: true,
    };
    let finished = launch(spec, &no_web, Arc::new(AtomicBool::new(false)))?;
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
        "events {} | wall {seconds:.2} s | {:.0} events/s | freshness p50 {} p99 {} | peak RSS {:.0} MB (before the run {:.0} MB) | rows written {} in {} transactions | {} workers, file source, {}",
        stats.events + stats.dead_letters,
        (stats.events + stats.dead_letters) as f64 / seconds,
        show(p50),
        show(p99),
        peak_rss_mb(),
        rss_before,
        sink.rows.load(Ordering::Relaxed),
        sink.epochs.load(Ordering::Relaxed),
        args.workers,
        if model.is_some() { "with churn scoring" } else { "without churn scoring" }
    );

    if args.no_check {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tables = runtime.block_on(read_tables(&url))?;
    let mut oracle = recompute_file(&splits, &dataflow)?;
    if let Some(model) = &model {
        oracle.score_with(model);
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

/// The shop's events as JSON lines: a realistic mix with some late and malformed records.
fn write_shop(path: &std::path::Path, seed: u64, count: usize) -> std::io::Result<()> {
    let shop = Shop::new(ShopConfig {
        seed,
        users: 100_000,
        products: 5_000,
        events_per_second: 20_000.0,
        concurrent_sessions: 20_000,
        late_fraction: 0.01,
        max_lateness_ms: 20_000,
        malformed_fraction: 0.001,
        ..ShopConfig::default()
    });
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
