//! `clickflow evaluate`: the backtest of every model version from the prediction log.
//!
//! Each logged prediction (what a model said about an open session, as known then) is
//! joined with how the session ended; per model version that gives the live ROC AUC, PR
//! AUC of buying, Brier score, log loss and a calibration table: how the model did on the
//! traffic it actually scored, not on its training data. Sessions still open are left out
//! (their outcome is unknown), and so is nothing else.

use std::collections::{BTreeMap, HashSet};

use clap::Args;
use clickflow_model::Evaluation;
use clickflow_sinks::postgres::{read_labelled_predictions, LabelledPrediction};
use serde::Serialize;

use super::args::DatabaseArgs;

/// Flags of `clickflow evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// Print JSON (one object per model version) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    database: DatabaseArgs,
}

/// One model version's live record.
#[derive(Debug, Serialize)]
struct VersionRecord {
    model_version: String,
    predictions: usize,
    sessions: usize,
    evaluation: Evaluation,
}

/// Runs `clickflow evaluate`.
pub fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let url = args.database.url()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let logged = runtime.block_on(read_labelled_predictions(&url))?;
    anyhow::ensure!(
        !logged.is_empty(),
        "no logged prediction about an ended session in {url}: run the pipeline with --model and \
         --log-predictions, and let sessions end"
    );
    let records = by_version(&logged);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    println!(
        "{:<22} {:>11} {:>9} {:>8} {:>11} {:>8} {:>9}",
        "model version", "predictions", "sessions", "ROC AUC", "PR AUC buy", "Brier", "log loss"
    );
    for r in &records {
        let e = &r.evaluation;
        println!(
            "{:<22} {:>11} {:>9} {:>8.3} {:>11.3} {:>8.4} {:>9.4}",
            r.model_version,
            r.predictions,
            r.sessions,
            e.roc_auc,
            e.pr_auc_purchase,
            e.brier,
            e.log_loss
        );
    }
    for r in &records {
        println!(
            "calibration of {} (predicted vs observed churn):",
            r.model_version
        );
        for bin in &r.evaluation.calibration {
            if let (Some(predicted), Some(observed)) = (bin.predicted, bin.observed) {
                println!(
                    "  {:.1}-{:.1}: {:>8} predictions, predicted {predicted:.3}, observed {observed:.3}",
                    bin.from,
                    bin.from + 0.1,
                    bin.examples
                );
            }
        }
    }
    Ok(())
}

/// Each version's predictions evaluated against the outcomes, by version.
fn by_version(logged: &[LabelledPrediction]) -> Vec<VersionRecord> {
    let mut grouped: BTreeMap<&str, Vec<&LabelledPrediction>> = BTreeMap::new();
    for prediction in logged {
        grouped
            .entry(&prediction.model_version)
            .or_default()
            .push(prediction);
    }
    grouped
        .into_iter()
        .map(|(version, predictions)| {
            let probabilities: Vec<f64> = predictions.iter().map(|p| p.churn_probability).collect();
            let churned: Vec<bool> = predictions.iter().map(|p| p.churned).collect();
            let prefixes: Vec<u32> = predictions
                .iter()
                .map(|p| (p.features.num_views + p.features.num_cart_adds) as u32)
                .collect();
            let sessions: HashSet<(&str, i64)> = predictions
                .iter()
                .map(|p| (p.session_id.as_str(), p.session_start))
                .collect();
            VersionRecord {
                model_version: version.to_string(),
                predictions: predictions.len(),
                sessions: sessions.len(),
                evaluation: Evaluation::of(&probabilities, &churned, &prefixes),
            }
        })
        .collect()
}
