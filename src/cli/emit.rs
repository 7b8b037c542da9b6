//! `--emit-kafka` and its settings: the change topics (see `clickflow_sinks::changes`).

use clap::Args;
use clickflow_sinks::changes::{ChangeTable, FeedConfig};

/// Publishing the committed changes of the tables to Kafka.
#[derive(Debug, Args)]
pub struct EmitArgs {
    /// Publish every committed change of the result tables to these Kafka bootstrap
    /// servers, one topic per table, keyed by the row's primary key, as Debezium-style JSON
    /// (at least once, in order per key; `source.seq` lets a consumer drop repeats). The
    /// process's --kafka-option settings apply. In `demo`, `embedded` means the demo's own
    /// broker.
    #[arg(long, value_name = "BROKERS")]
    emit_kafka: Option<String>,
    /// The tables to publish, comma-separated: event_trends, funnel_summary,
    /// session_features, churn_scores, window_series, alerts (default: all of them).
    #[arg(long, value_delimiter = ',', value_name = "TABLES")]
    emit_tables: Vec<ChangeTable>,
    /// A table's topic is this prefix followed by the table's name.
    #[arg(long, value_name = "PREFIX")]
    emit_topic_prefix: Option<String>,
    /// Partitions of a change topic clickflow creates (a missing topic is created,
    /// compacted); -1: the broker's default.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    emit_partitions: Option<i32>,
    /// Replication factor of a change topic clickflow creates; -1: the broker's default.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    emit_replication: Option<i32>,
}

/// Creates the topics of `feed` on the embedded broker, whose admin API does not create
/// them (one partition each unless `--emit-partitions` says otherwise).
pub fn create_embedded_topics(
    broker: &clickflow_sources::kafka::EmbeddedBroker,
    feed: &FeedConfig,
) -> anyhow::Result<()> {
    for table in &feed.tables {
        broker.create_topic(&feed.topic(*table), feed.partitions.max(1))?;
    }
    Ok(())
}

/// The prefix of the change topics' names when none is given.
const DEFAULT_PREFIX: &str = "clickflow.";

impl EmitArgs {
    /// True for `--emit-kafka embedded`.
    pub fn is_embedded(&self) -> bool {
        self.emit_kafka.as_deref() == Some("embedded")
    }

    /// The feed asked for, `None` without `--emit-kafka`; `embedded` stands for
    /// `embedded_brokers` (the demo's broker; elsewhere there is none, and it is refused).
    pub fn feed(&self, embedded_brokers: Option<&str>) -> anyhow::Result<Option<FeedConfig>> {
        let Some(brokers) = &self.emit_kafka else {
            anyhow::ensure!(
                self.emit_tables.is_empty()
                    && self.emit_topic_prefix.is_none()
                    && self.emit_partitions.is_none()
                    && self.emit_replication.is_none(),
                "--emit-tables, --emit-topic-prefix, --emit-partitions and --emit-replication \
                 need --emit-kafka"
            );
            return Ok(None);
        };
        let brokers = match (brokers.as_str(), embedded_brokers) {
            ("embedded", Some(embedded)) => embedded.to_string(),
            ("embedded", None) => {
                anyhow::bail!("--emit-kafka embedded is for `clickflow demo`: give BROKERS")
            }
            (brokers, _) => brokers.to_string(),
        };
        anyhow::ensure!(!brokers.trim().is_empty(), "--emit-kafka needs brokers");
        let mut tables = if self.emit_tables.is_empty() {
            ChangeTable::ALL.to_vec()
        } else {
            self.emit_tables.clone()
        };
        tables.sort();
        tables.dedup();
        let (partitions, replication) = (
            self.emit_partitions.unwrap_or(-1),
            self.emit_replication.unwrap_or(-1),
        );
        anyhow::ensure!(
            partitions == -1 || partitions >= 1,
            "--emit-partitions is at least 1 (or -1 for the broker's default)"
        );
        anyhow::ensure!(
            replication == -1 || replication >= 1,
            "--emit-replication is at least 1 (or -1 for the broker's default)"
        );
        Ok(Some(FeedConfig {
            brokers,
            tables,
            topic_prefix: self
                .emit_topic_prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_PREFIX.into()),
            partitions,
            replication,
        }))
    }
}
