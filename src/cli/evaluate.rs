//! `clickflow evaluate`: the backtest of every model version from the prediction log.
//!
//! Each logged prediction (what a model said about an open session, as known then) is
//! joined with how the session ended; per model version that gives the live ROC AUC, PR
//! AUC of buying, Brier score, log loss and a calibration table: how the model did on the
//! traffic it actually scored, not on its training data. Sessions still open are left out
//! (their outcome is unknown), and so is nothing else.

use clap::Args;
use clickflow_dataflow::training::session_key;
use clickflow_model::evaluate::{by_version, Served};
use clickflow_model::Features;
use clickflow_sinks::postgres::{read_labelled_predictions, DatabaseUrl, LabelledPrediction};

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

/// Runs `clickflow evaluate`.
pub fn evaluate(args: EvaluateArgs) -> anyhow::Result<()> {
    let url = args.database.url()?;
    let logged = read_log(&url)?;
    anyhow::ensure!(
        !logged.is_empty(),
        "no logged prediction about an ended session in {url}: run the pipeline with --model and \
         --log-predictions, and let sessions end"
    );
    let records = by_version(logged.iter().map(|p| Served {
        version: &p.model_version,
        probability: p.churn_probability,
        churned: p.churned,
        prefix_events: prefix_events(&p.features),
        session: session_key(&p.session_id, p.session_start),
    }));
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

/// Every logged prediction about a session that has ended, with its outcome.
pub(super) fn read_log(url: &DatabaseUrl) -> anyhow::Result<Vec<LabelledPrediction>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(read_labelled_predictions(url))?)
}

/// Events a session had seen when it was scored: all its views and cart adds (it had not
/// bought, or it would not be scored).
pub(super) fn prefix_events(features: &Features) -> u32 {
    (features.num_views + features.num_cart_adds) as u32
}
