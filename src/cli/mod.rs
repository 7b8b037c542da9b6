//! The subcommands and their flags.

mod args;
mod bench;
pub mod config;
mod demo;
mod emit;
mod evaluate;
mod evaluate_recs;
mod launch;
mod predict;
mod produce;
mod run;
mod scoring;
mod signals;
mod tail;
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
    /// TOML file of settings: keys are flag names, at the top level for every command, in a
    /// `[run]` (`[demo]`, ...) table for one; flags and CLICKFLOW_* variables win over it.
    #[arg(long, global = true, env = "CLICKFLOW_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// A librdkafka property for every Kafka client, e.g. `security.protocol=SASL_SSL`,
    /// `sasl.mechanisms=SCRAM-SHA-512`, `ssl.ca.location=/etc/kafka/ca.pem` (repeat the flag;
    /// in a variable, separate them with `;`).
    #[arg(
        long = "kafka-option",
        global = true,
        env = "CLICKFLOW_KAFKA_OPTION",
        hide_env_values = true,
        value_name = "KEY=VALUE",
        value_delimiter = ';'
    )]
    kafka_options: Vec<clickflow_sources::kafka::KafkaOption>,
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
    /// Configuration: `clickflow config check [COMMAND FLAGS...]` prints the effective
    /// settings of a command line (flags, CLICKFLOW_* variables, --config file, defaults),
    /// where each came from, secrets redacted.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The whole system on one machine: embedded broker, synthetic shop, pipeline, PostgreSQL.
    Demo(demo::DemoArgs),
    /// Backtest every churn model version from the prediction log: live ROC AUC,
    /// calibration and more, on the sessions each scored.
    Evaluate(evaluate::EvaluateArgs),
    /// Judge the recommender on an events file: learn from its earlier part, replay the
    /// later sessions event by event, report next-item HR@k and MRR@k against the most
    /// popular products.
    EvaluateRecs(evaluate_recs::EvaluateRecsArgs),
    /// Generate synthetic shop events into a Kafka topic or a JSON-lines file.
    Produce(produce::ProduceArgs),
    /// Churn probabilities for session features given as JSON lines (standard input or a
    /// file), one JSON line out per line in.
    Predict(predict::PredictArgs),
    /// Run the pipeline: Kafka topic or JSON-lines file in, PostgreSQL out.
    Run(run::RunArgs),
    /// Print a change topic (`--emit-kafka`) as it fills: one line per change, for checking
    /// the feed by hand.
    Tail(tail::TailArgs),
    /// Train the churn model on session prefixes (an events file, or the prediction log in
    /// PostgreSQL), evaluated on later sessions against baselines.
    Train(train::TrainArgs),
}

/// `clickflow config ...`.
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective settings of a command line (default: `run`) and check it parses.
    Check {
        /// The command and its flags, e.g. `run --brokers kafka:9092`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// Runs the chosen subcommand.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    clickflow_sources::kafka::set_client_options(cli.kafka_options).map_err(anyhow::Error::msg)?;
    match cli.command {
        Command::Config(ConfigCommand::Check { args }) => {
            config::check(cli.config.as_deref(), &args)
        }
        Command::Bench(args) => bench::bench(args),
        Command::Demo(args) => demo::demo(args),
        Command::Evaluate(args) => evaluate::evaluate(args),
        Command::EvaluateRecs(args) => evaluate_recs::evaluate_recs(args),
        Command::Produce(args) => produce::produce(args),
        Command::Predict(args) => predict::predict(args),
        Command::Run(args) => run::run(args),
        Command::Tail(args) => tail::tail(args),
        Command::Train(args) => train::train(args),
    }
}
