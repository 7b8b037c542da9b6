//! The subcommands and their flags.

mod args;
mod bench;
mod demo;
mod evaluate;
mod launch;
mod predict;
mod produce;
mod run;
mod scoring;
mod signals;
mod train;
mod web;

use clap::{Parser, Subcommand};

/// clickflow: real-time e-commerce interaction analytics on timely/differential dataflow.
#[derive(Debug, Parser)]
#[command(name = "clickflow", version, about, long_about = None)]
pub struct Cli {
    /// Log lines as `text` (for people) or `json` (one object per line, for log shippers).
    #[arg(
        long,
        global = true,
        env = "CLICKFLOW_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written (to standard error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// End-to-end benchmark: generate events, run the whole pipeline into PostgreSQL, check
    /// the result against the oracle, print events/s, freshness and peak memory.
    Bench(bench::BenchArgs),
    /// The whole system on one machine: embedded broker, synthetic shop, pipeline, PostgreSQL.
    Demo(demo::DemoArgs),
    /// Backtest every churn model version from the prediction log: live ROC AUC,
    /// calibration and more, on the sessions each scored.
    Evaluate(evaluate::EvaluateArgs),
    /// Generate synthetic shop events into a Kafka topic or a JSON-lines file.
    Produce(produce::ProduceArgs),
    /// Churn probabilities for session features given as JSON lines (standard input or a
    /// file), one JSON line out per line in.
    Predict(predict::PredictArgs),
    /// Run the pipeline: Kafka topic or JSON-lines file in, PostgreSQL out.
    Run(run::RunArgs),
    /// Train the churn model on session prefixes (an events file, or the prediction log in
    /// PostgreSQL), evaluated on later sessions against baselines.
    Train(train::TrainArgs),
}

/// Runs the chosen subcommand.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(args) => bench::bench(args),
        Command::Demo(args) => demo::demo(args),
        Command::Evaluate(args) => evaluate::evaluate(args),
        Command::Produce(args) => produce::produce(args),
        Command::Predict(args) => predict::predict(args),
        Command::Run(args) => run::run(args),
        Command::Train(args) => train::train(args),
    }
}
