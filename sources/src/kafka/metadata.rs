//! Topic metadata: how many partitions, and their offset range.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::client::with_client_options;
use super::KafkaSourceError;

fn metadata_client(brokers: &str) -> Result<BaseConsumer, KafkaSourceError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // Required by librdkafka for any consumer handle, even one that never joins a group.
        .set("group.id", "clickflow-metadata");
    with_client_options(config)
        .create()
        .map_err(KafkaSourceError::Client)
}

/// The number of partitions of `topic`; an error if the topic does not exist.
pub fn partition_count(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<i32, KafkaSourceError> {
    let client = metadata_client(brokers)?;
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(KafkaSourceError::metadata(topic, brokers))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    if count == 0 {
        return Err(KafkaSourceError::NoSuchTopic {
            topic: topic.into(),
            brokers: brokers.into(),
        });
    }
    Ok(count)
}

/// The (low, high) watermark offsets of every partition of `topic`, in partition order.
///
/// The low watermark is the oldest offset still kept: above zero means the broker dropped
/// data (the embedded broker does so silently when a partition outgrows its retention).
pub fn watermarks(
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i64, i64)>, KafkaSourceError> {
    let partitions = partition_count(brokers, topic, timeout)?;
    let client = metadata_client(brokers)?;
    (0..partitions)
        .map(|p| {
            client
                .fetch_watermarks(topic, p, timeout)
                .map_err(KafkaSourceError::metadata(topic, brokers))
        })
        .collect()
}
