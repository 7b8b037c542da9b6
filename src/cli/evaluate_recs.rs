//! `clickflow evaluate-recs`: the recommender judged on next-item prediction.
//!
//! The earlier part of an events file (the first `--train-fraction` of its lines) goes
//! through the real dataflow, which leaves `product_recommendations` and the popular
//! products as they stand at its end. Then every session that starts in the later part is
//! replayed event by event: before each view or cart add of a product the session has not
//! had yet, the session's items so far get `k` recommendations, exactly as
//! `GET /api/v1/recommendations` computes them, and the product that actually came next is
//! looked for among them. Reported: hit rate (HR@k) and mean reciprocal rank (MRR@k),
//! against the most popular products (the session's own items left out too), the baseline
//! every session recommender must beat. Products a session already had are not targets:
//! the API never recommends them back.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use clickflow_dataflow::recs::serve::recommend;
use clickflow_dataflow::runtime::run::{run, taking, InputSpec, RunConfig};
use clickflow_dataflow::Tables;
use clickflow_sources::decode::{decode, DecodeLimits};
use clickflow_sources::file::FileSplits;
use clickflow_sources::{Event, EventType};
use compact_str::CompactString;
use serde::Serialize;

use super::args::DataflowArgs;

/// Flags of `clickflow evaluate-recs`.
#[derive(Debug, Args)]
pub struct EvaluateRecsArgs {
    /// The events (JSON lines, as `clickflow produce --file` writes them).
    #[arg(long)]
    events: PathBuf,
    /// Share of the file's lines the recommender learns from; sessions that start in the
    /// rest are replayed.
    #[arg(long, default_value_t = 0.8)]
    train_fraction: f64,
    /// Recommendations per request.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Worker threads of the training run.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    dataflow: DataflowArgs,
}

/// Hits and reciprocal ranks of one recommender.
#[derive(Debug, Default, Serialize)]
pub struct Quality {
    /// Next items found among the recommendations.
    pub hits: u64,
    /// Sum of `1 / rank` of the hits.
    pub reciprocal_ranks: f64,
    /// HR@k.
    pub hit_rate: f64,
    /// MRR@k.
    pub mrr: f64,
}

impl Quality {
    fn record(&mut self, rank: Option<usize>) {
        if let Some(rank) = rank {
            self.hits += 1;
            self.reciprocal_ranks += 1.0 / (rank + 1) as f64;
        }
    }

    fn finish(&mut self, predictions: u64) {
        let n = predictions.max(1) as f64;
        self.hit_rate = self.hits as f64 / n;
        self.mrr = self.reciprocal_ranks / n;
    }
}

/// What `evaluate-recs` found.
#[derive(Debug, Serialize)]
pub struct RecsReport {
    /// Lines the recommender learnt from.
    pub training_lines: usize,
    /// Products with neighbours after training.
    pub products_with_neighbours: usize,
    /// Sessions replayed.
    pub sessions: usize,
    /// Next items predicted.
    pub predictions: u64,
    /// `k`.
    pub k: usize,
    /// The recommender.
    pub recommender: Quality,
    /// The most popular products.
    pub popular: Quality,
}

/// Runs `clickflow evaluate-recs`.
pub fn evaluate_recs(args: EvaluateRecsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.train_fraction > 0.0 && args.train_fraction < 1.0,
        "--train-fraction must lie strictly between 0 and 1, got {}",
        args.train_fraction
    );
    anyhow::ensure!(args.k >= 1, "--k must be at least 1");
    let config = args.dataflow.dataflow();
    anyhow::ensure!(
        config.recommendations.is_some(),
        "--no-recommendations leaves nothing to evaluate"
    );
    let file = std::fs::File::open(&args.events)
        .with_context(|| format!("opening {}", args.events.display()))?;
    let lines: Vec<Vec<u8>> = BufReader::new(file)
        .split(b'\n')
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", args.events.display()))?;
    let cut = (lines.len() as f64 * args.train_fraction) as usize;
    anyhow::ensure!(
        cut > 0 && cut < lines.len(),
        "{} has {} lines: too few to split",
        args.events.display(),
        lines.len()
    );
    eprintln!(
        "learning from the first {cut} of {} lines ({})",
        lines.len(),
        args.events.display()
    );
    let (neighbours, popular) = train(&lines[..cut], args.workers, config)?;
    let report = replay(&lines, cut, &neighbours, &popular, args.k, &config);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} sessions replayed, {} next items predicted, {} products with neighbours",
        report.sessions, report.predictions, report.products_with_neighbours
    );
    println!(
        "{:<22} {:>8} {:>8}",
        "",
        format!("HR@{}", report.k),
        format!("MRR@{}", report.k)
    );
    for (name, quality) in [
        ("session co-occurrence", &report.recommender),
        ("most popular", &report.popular),
    ] {
        println!("{name:<22} {:>8.4} {:>8.4}", quality.hit_rate, quality.mrr);
    }
    if report.popular.hit_rate > 0.0 {
        println!(
            "HR@{} is {:.2}x the baseline's",
            report.k,
            report.recommender.hit_rate / report.popular.hit_rate
        );
    }
    Ok(())
}

/// Each product's neighbours (best first) and the popular products, as the dataflow leaves
/// them after the training lines.
type Neighbours = HashMap<CompactString, Vec<(CompactString, f64)>>;

fn train(
    lines: &[Vec<u8>],
    workers: usize,
    config: clickflow_dataflow::DataflowConfig,
) -> anyhow::Result<(Neighbours, Vec<CompactString>)> {
    let mut file = tempfile::NamedTempFile::new().context("creating the training file")?;
    for line in lines {
        file.write_all(line)?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    let splits = FileSplits::plan(file.path(), workers.max(1))?;
    let tables = Arc::new(Mutex::new(Tables::default()));
    let popular = Arc::new(Mutex::new(BTreeMap::new()));
    let (sink, ranked) = (tables.clone(), popular.clone());
    run(
        timely::Config::process(workers.max(1)),
        InputSpec::File(splits),
        RunConfig {
            dataflow: config,
            // The popular products, the baseline, come from the live views' feed.
            live_views: true,
            ..RunConfig::default()
        },
        Some(taking(move |output| {
            if let Err(error) = sink.lock().expect("not poisoned").apply(&output) {
                tracing::error!(%error, "an inconsistent change");
            }
            let mut ranked = ranked.lock().expect("not poisoned");
            for (row, diff) in &output.popular {
                if *diff < 0 {
                    ranked.remove(&row.rank);
                }
            }
            for (row, diff) in &output.popular {
                if *diff > 0 {
                    ranked.insert(row.rank, row.product_id.clone());
                }
            }
        })),
        Arc::new(AtomicBool::new(false)),
        Default::default(),
    )?;
    let tables = tables.lock().expect("not poisoned");
    let mut neighbours = Neighbours::new();
    for row in tables.recommendations.values() {
        neighbours
            .entry(row.product_id.clone())
            .or_default()
            .push((row.recommended_id.clone(), row.score.0));
    }
    let popular = popular
        .lock()
        .expect("not poisoned")
        .values()
        .cloned()
        .collect();
    Ok((neighbours, popular))
}

fn replay(
    lines: &[Vec<u8>],
    cut: usize,
    neighbours: &Neighbours,
    popular: &[CompactString],
    k: usize,
    config: &clickflow_dataflow::DataflowConfig,
) -> RecsReport {
    let limits = DecodeLimits::default();
    let mut started_before: std::collections::HashSet<CompactString> = Default::default();
    let mut sessions: HashMap<CompactString, Vec<Event>> = HashMap::new();
    for (index, line) in lines.iter().enumerate() {
        let Ok(event) = decode(line, None, &limits) else {
            continue;
        };
        if index < cut {
            started_before.insert(event.session_id);
        } else if !started_before.contains(&event.session_id) {
            sessions
                .entry(event.session_id.clone())
                .or_default()
                .push(event);
        }
    }
    let mut report = RecsReport {
        training_lines: cut,
        products_with_neighbours: neighbours.len(),
        sessions: 0,
        predictions: 0,
        k,
        recommender: Quality::default(),
        popular: Quality::default(),
    };
    let max_items = config
        .recommendations
        .map_or(usize::MAX, |r| r.max_items_per_session);
    for events in sessions.values_mut() {
        events.sort_by_key(|e| e.ts);
        report.sessions += 1;
        let mut items: Vec<CompactString> = Vec::new();
        for event in events
            .iter()
            .filter(|e| e.event_type != EventType::Purchase)
        {
            let Some(product) = &event.product_id else {
                continue;
            };
            if items.contains(product) {
                continue;
            }
            if !items.is_empty() {
                let held: Vec<&str> = items
                    .iter()
                    .rev()
                    .take(max_items)
                    .rev()
                    .map(|s| s.as_str())
                    .collect();
                let lookup = |p: &str| neighbours.get(p).map(Vec::as_slice);
                let ranked = recommend(&held, lookup, popular, k);
                let at = |list: &[CompactString]| list.iter().position(|p| p == product);
                let suggested: Vec<CompactString> =
                    ranked.into_iter().map(|s| s.product_id).collect();
                report.recommender.record(at(&suggested));
                let baseline = recommend(&held, |_| None, popular, k);
                let baseline: Vec<CompactString> =
                    baseline.into_iter().map(|s| s.product_id).collect();
                report.popular.record(at(&baseline));
                report.predictions += 1;
            }
            items.push(product.clone());
        }
    }
    report.recommender.finish(report.predictions);
    report.popular.finish(report.predictions);
    report
}
