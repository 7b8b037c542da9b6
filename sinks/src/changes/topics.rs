//! Creating the change topics that do not exist yet.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::publisher::FeedConfig;

/// Creates every topic of `feed` that is missing, compacted (a topic keeps each key's
/// latest row), with the feed's partitions and replication. A topic that exists is left as
/// it is, and when all exist the admin API is not used (a user may be allowed to write
/// topics without being allowed to create them). Errors name the topic and the broker's
/// reason.
pub(super) async fn ensure_topics(feed: &FeedConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> =
        clickflow_sources::kafka::client_config(&feed.brokers)
            .create()
            .map_err(|e| format!("the Kafka admin client: {e}"))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(|e| format!("reading the cluster's topics: {e}"))?;
    let names: Vec<String> = feed
        .tables
        .iter()
        .map(|t| feed.topic(*t))
        .filter(|name| {
            !metadata
                .topics()
                .iter()
                .any(|t| t.name() == name && t.error().is_none())
        })
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                feed.partitions,
                TopicReplication::Fixed(feed.replication),
            )
            .set("cleanup.policy", "compact")
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| format!("creating the change topics: {e}"))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "change topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("creating change topic {name}: {code}")),
        }
    }
    Ok(())
}
