//! `clickflow train`: the churn model, from closed sessions in PostgreSQL or from an events
//! file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use clickflow_dataflow::training::samples_from_file;
use clickflow_model::{ChurnModel, Sample, TrainOptions, TrainParams};
use clickflow_sinks::postgres::read_closed_sessions;
use clickflow_sources::file::FileSplits;

use super::args::{DatabaseArgs, DataflowArgs};

/// Flags of `clickflow train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Learn from the sessions of this JSON-lines events file (derived by the dataflow's own
    /// session code) instead of the closed rows of `session_features` in PostgreSQL.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Where to write the model file.
    #[arg(long, default_value = "churn.model")]
    out: PathBuf,
    /// Trees in the forest (odd by default, so a majority never ties).
    #[arg(long, default_value_t = TrainParams::default().trees)]
    trees: usize,
    /// Maximum depth of a tree.
    #[arg(long, default_value_t = TrainParams::default().max_depth)]
    max_depth: usize,
    /// Features each tree sees, drawn at random per tree (1 to 3).
    #[arg(long, default_value_t = TrainParams::default().max_features)]
    max_features: usize,
    /// Minimum training sessions in a leaf.
    #[arg(long, default_value_t = TrainParams::default().min_samples_leaf)]
    min_samples_leaf: f32,
    /// Seed of bootstrap samples, feature subsets and the holdout split.
    #[arg(long, default_value_t = TrainParams::default().seed)]
    seed: u64,
    /// Share of sessions held out to measure accuracy and ROC AUC.
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// Worker threads deriving sessions from `--events`.
    #[arg(long, short = 'w', default_value_t = 2)]
    workers: usize,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    dataflow: DataflowArgs,
}

/// Runs `clickflow train`.
pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let samples = match &args.events {
        Some(path) => {
            eprintln!("deriving sessions from {}", path.display());
            let splits = FileSplits::plan(path, 16)?;
            samples_from_file(splits, args.dataflow.dataflow(), args.workers)?
        }
        None => {
            let url = args.database.url()?;
            eprintln!("reading closed sessions from {url}");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(read_closed_sessions(&url))?
                .iter()
                .filter_map(|row| row.training_sample())
                .collect()
        }
    };
    print_balance(&samples);
    let options = TrainOptions {
        params: TrainParams {
            trees: args.trees,
            max_depth: args.max_depth,
            max_features: args.max_features,
            min_samples_leaf: args.min_samples_leaf,
            seed: args.seed,
        },
        holdout: args.holdout,
        ..TrainOptions::default()
    };
    let model = ChurnModel::train(&samples, &options)?;
    eprintln!("{}", describe(&model));
    model
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "model {} written to {} in {:.1} s",
        model.version(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_balance(samples: &[Sample]) {
    let churned = samples.iter().filter(|s| s.churned).count();
    eprintln!(
        "sessions: {} closed, {churned} churned ({:.1}%), {} purchased",
        samples.len(),
        churned as f64 * 100.0 / samples.len().max(1) as f64,
        samples.len() - churned
    );
}

/// What a model learned from and how well it does, in a few lines.
pub(super) fn describe(model: &ChurnModel) -> String {
    let report = &model.header().report;
    let importances: Vec<String> = report
        .importances
        .iter()
        .map(|(name, share)| format!("{name} {share:.2}"))
        .collect();
    format!(
        "trained {} trees (depth <= {}) on {} sessions, held out {}: accuracy {:.3}, ROC AUC {:.3}\nfeature importances: {}",
        report.params.trees,
        report.params.max_depth,
        report.train_rows,
        report.holdout.rows,
        report.holdout.accuracy,
        report.holdout.roc_auc,
        importances.join(", ")
    )
}

/// Loads `--model`, or says that no scores will be produced without one.
pub(super) fn load_model(path: Option<&PathBuf>) -> anyhow::Result<Option<Arc<ChurnModel>>> {
    let Some(path) = path else {
        tracing::warn!(
            "no --model given: churn_scores stays empty (train one with `clickflow train`)"
        );
        return Ok(None);
    };
    let model = ChurnModel::load(path)?;
    let header = model.header();
    tracing::info!(
        model = %header.model_version,
        trained_at = %header.trained_at,
        roc_auc = header.report.holdout.roc_auc,
        "scoring every session with {}",
        path.display()
    );
    Ok(Some(Arc::new(model)))
}
