//! `clickflow predict`: the churn model over JSON lines, for batch scoring and checks by hand.
//!
//! Each non-blank input line is one object of features (`num_views`, `num_cart_adds`,
//! `duration_s`, and optionally the others), parsed, checked and completed with the same
//! defaults as `POST /api/v1/churn/predict`. Each gives one output
//! line, in order: `{"churn_probability", "model_version"}`, or `{"line", "error"}` for a line
//! that cannot be scored, so the output stays aligned with the input. The command then fails
//! (exit 1) if any line could not be scored, saying how many: a pipeline of shell tools
//! should not take a partly failed batch for a good one.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use clickflow_model::ChurnModel;
use clickflow_web::predict::features_from_json;
use serde_json::{json, Value};

/// Flags of `clickflow predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Model file, from `clickflow train`.
    #[arg(long)]
    model: PathBuf,
    /// JSON-lines file of features to score; `-` (the default) reads standard input.
    #[arg(long, default_value = "-")]
    input: PathBuf,
}

/// Runs `clickflow predict`.
pub fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let model = ChurnModel::load(&args.model)?;
    let input: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.input)
            .with_context(|| format!("cannot read {}", args.input.display()))?;
        Box::new(BufReader::new(file))
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let (mut scored, mut failed) = (0u64, 0u64);
    for (index, line) in input.lines().enumerate() {
        let line = line.context("reading the input")?;
        if line.trim().is_empty() {
            continue;
        }
        let features = serde_json::from_str::<Value>(&line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|value| features_from_json(value, &model.header().defaults));
        let answer = match features {
            Ok(features) => {
                scored += 1;
                json!({"churn_probability": model.predict(&features), "model_version": model.version()})
            }
            Err(error) => {
                failed += 1;
                json!({"line": index + 1, "error": error})
            }
        };
        writeln!(out, "{answer}").context("writing the output")?;
    }
    out.flush().context("writing the output")?;
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} lines could not be scored (their output lines say why)",
        scored + failed
    );
    Ok(())
}
