//! The embedded broker: librdkafka's mock cluster, in-process, on a local TCP port.
//!
//! It speaks the real Kafka protocol, so the pipeline talks to it exactly as to a real broker.
//! Its limits are handled, not hidden: it keeps only about 100k messages or 5 MiB per
//! partition and silently drops older data, so topics get many partitions, the pipeline
//! consumes while the shop produces, and [`EmbeddedBroker::check_retention`] compares each
//! partition's low watermark with what was expected and reports any loss loudly.

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::{watermarks, KafkaSourceError};

/// A running embedded broker. Dropping it stops the broker.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
    bootstrap_servers: String,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster on a free local port.
    pub fn start() -> Result<EmbeddedBroker, KafkaSourceError> {
        let cluster = MockCluster::new(1).map_err(KafkaSourceError::Embedded)?;
        let bootstrap_servers = cluster.bootstrap_servers();
        Ok(EmbeddedBroker {
            cluster,
            bootstrap_servers,
        })
    }

    /// The `bootstrap.servers` value clients connect with.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Creates `topic` with `partitions` partitions (the Admin API hangs on the mock cluster).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), KafkaSourceError> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .map_err(KafkaSourceError::Embedded)
    }

    /// Checks that no partition of `topic` has dropped messages: with every low watermark at
    /// zero, all `expected` messages produced are still there. Returns how many were lost.
    pub fn check_retention(&self, topic: &str, expected: u64) -> Result<u64, KafkaSourceError> {
        let marks = watermarks(&self.bootstrap_servers, topic, Duration::from_secs(5))?;
        let dropped: i64 = marks.iter().map(|(low, _)| *low).sum();
        let kept: i64 = marks.iter().map(|(low, high)| high - low).sum();
        if dropped > 0 {
            tracing::error!(
                topic,
                dropped,
                kept,
                expected,
                "the embedded broker DROPPED {dropped} old messages: it keeps only ~100k \
                 messages / 5 MiB per partition. Use more partitions, consume while producing, \
                 or run against a real broker with --brokers"
            );
        }
        Ok(dropped.max(0) as u64)
    }
}
