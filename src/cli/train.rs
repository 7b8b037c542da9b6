//! `clickflow train`: the churn model, from an events file or from the prediction log in
//! PostgreSQL, evaluated on later sessions than it learns from.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use clickflow_dataflow::kpi::sessions::SessionRule;
use clickflow_dataflow::training::{examples_from_file, session_key};
use clickflow_model::{ChurnModel, Evaluation, Example, TrainOptions, TrainParams, FEATURE_COUNT};
use clickflow_sources::file::FileSplits;
use time::format_description::well_known::Rfc3339;

use super::args::{DatabaseArgs, DataflowArgs};
use super::evaluate::{prefix_events, read_log};

/// Flags of `clickflow train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Learn from the sessions of this JSON-lines events file (cut and counted by the
    /// dataflow's own code), as known after each of their first events. Without it, learn
    /// from the prediction log in PostgreSQL (`churn_predictions` of a pipeline run with
    /// --log-predictions) and the outcomes of its ended sessions.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Where to write the model file.
    #[arg(long, default_value = "churn.model")]
    out: PathBuf,
    /// Trees in the forest.
    #[arg(long, default_value_t = TrainParams::default().trees)]
    trees: usize,
    /// Maximum depth of a tree.
    #[arg(long, default_value_t = TrainParams::default().max_depth)]
    max_depth: usize,
    /// Features each tree sees, drawn at random per tree (1 to 8).
    #[arg(long, default_value_t = TrainParams::default().max_features)]
    max_features: usize,
    /// Minimum training weight in a leaf (examples, with both outcomes weighted equally).
    #[arg(long, default_value_t = TrainParams::default().min_samples_leaf)]
    min_samples_leaf: f32,
    /// Examples of the overall churn share each leaf's share is shrunk with (0: none).
    #[arg(long, default_value_t = TrainParams::default().leaf_prior)]
    leaf_prior: f64,
    /// Seed of bootstrap samples and feature subsets.
    #[arg(long, default_value_t = TrainParams::default().seed)]
    seed: u64,
    /// Share of the sessions, the latest by start, evaluated instead of learnt from.
    #[arg(long, default_value_t = 0.2)]
    holdout: f64,
    /// At most this many training examples (a seeded sample beyond).
    #[arg(long, default_value_t = TrainOptions::default().max_examples)]
    max_examples: usize,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    dataflow: DataflowArgs,
}

/// Runs `clickflow train`.
pub fn train(args: TrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dataflow = args.dataflow.dataflow();
    let examples = match &args.events {
        Some(path) => {
            eprintln!("reading sessions from {}", path.display());
            let splits = FileSplits::plan(path, 16)?;
            examples_from_file(&splits, dataflow)?
        }
        None => {
            let url = args.database.url()?;
            eprintln!("reading the prediction log of {url}");
            let logged = read_log(&url)?;
            anyhow::ensure!(
                !logged.is_empty(),
                "churn_predictions holds no prediction about an ended session: run the pipeline \
                 with --model and --log-predictions first, or train from --events FILE"
            );
            let rule = SessionRule {
                gap_ms: dataflow.session_gap_ms,
                window: dataflow.window,
            };
            logged
                .iter()
                .map(|p| Example {
                    features: p.features,
                    churned: p.churned,
                    session_start: p.session_start,
                    known_at: rule.final_at(p.last_event),
                    prefix_events: prefix_events(&p.features),
                    session: session_key(&p.session_id, p.session_start),
                })
                .collect()
        }
    };
    let sessions: HashSet<u64> = examples.iter().map(|e| e.session).collect();
    let churned = examples.iter().filter(|e| e.churned).count();
    eprintln!(
        "examples: {} from {} ended sessions, {:.1}% of them churned",
        examples.len(),
        sessions.len(),
        churned as f64 * 100.0 / examples.len().max(1) as f64
    );
    let options = TrainOptions {
        params: TrainParams {
            trees: args.trees,
            max_depth: args.max_depth,
            max_features: args.max_features,
            min_samples_leaf: args.min_samples_leaf,
            leaf_prior: args.leaf_prior,
            seed: args.seed,
        },
        holdout: args.holdout,
        max_examples: args.max_examples,
        ..TrainOptions::default()
    };
    let model = ChurnModel::train(&examples, &options)?;
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

/// What a model learned from and how well it does against its baselines.
pub(super) fn describe(model: &ChurnModel) -> String {
    let r = &model.header().report;
    let mut out = String::new();
    let split = time::OffsetDateTime::from_unix_timestamp_nanos(r.split_at_ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| r.split_at_ms.to_string());
    let _ = writeln!(
        out,
        "learnt from {} sessions ({} examples, {:.1}% churned) whose outcome was known by {split}; evaluated on the {} sessions ({} examples) that started after",
        r.train_sessions,
        r.train_examples,
        r.churn_share * 100.0,
        r.test_sessions,
        r.test_examples
    );
    let _ = writeln!(
        out,
        "{:<22} {:>8} {:>11} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "on later sessions",
        "ROC AUC",
        "PR AUC buy",
        "Brier",
        "log loss",
        "AUC @1",
        "AUC @3",
        "AUC @5"
    );
    let row = |out: &mut String, name: &str, e: &Evaluation| {
        let prefix: Vec<String> = e
            .auc_by_prefix
            .iter()
            .map(|p| p.roc_auc.map_or("-".into(), |a| format!("{a:.3}")))
            .collect();
        let _ = writeln!(
            out,
            "{name:<22} {:>8.3} {:>11.3} {:>8.4} {:>9.4} {:>8} {:>8} {:>8}",
            e.roc_auc, e.pr_auc_purchase, e.brier, e.log_loss, prefix[0], prefix[1], prefix[2]
        );
    };
    row(
        &mut out,
        &format!("forest ({} trees)", r.params.trees),
        &r.forest,
    );
    row(&mut out, "single tree", &r.single_tree);
    match &r.logistic {
        Some(logistic) => row(&mut out, "logistic regression", logistic),
        None => {
            let _ = writeln!(out, "logistic regression    could not be fitted");
        }
    }
    row(&mut out, "base rate", &r.base_rate);
    let beaten = r.beaten_by();
    if beaten.is_empty() {
        let _ = writeln!(out, "the forest beats every baseline on ROC AUC");
    } else {
        let _ = writeln!(
            out,
            "WARNING: the forest does not beat {} on ROC AUC",
            beaten.join(", ")
        );
    }
    let worse = r.worse_than_logistic();
    if !worse.is_empty() {
        let _ = writeln!(
            out,
            "WARNING: the logistic regression does better than the forest on {}",
            worse.join(", ")
        );
    }
    let bins: Vec<String> = r
        .forest
        .calibration
        .iter()
        .filter_map(|b| {
            Some(format!(
                "{:.1}-{:.1}: {} predicted {:.3} observed {:.3}",
                b.from,
                b.from + 0.1,
                b.examples,
                b.predicted?,
                b.observed?
            ))
        })
        .collect();
    let _ = writeln!(out, "calibration of the forest (churn probability bins):");
    for bin in bins {
        let _ = writeln!(out, "  {bin}");
    }
    let importances: Vec<String> = r
        .importances
        .iter()
        .map(|(name, share)| format!("{name} {share:.2}"))
        .collect();
    debug_assert_eq!(importances.len(), FEATURE_COUNT);
    let _ = write!(out, "feature importances: {}", importances.join(", "));
    out
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
        roc_auc = header.report.forest.roc_auc,
        "scoring every open session with {}",
        path.display()
    );
    Ok(Some(Arc::new(model)))
}
