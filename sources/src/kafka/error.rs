//! Errors of the Kafka side.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What went wrong talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// The client could not be created (bad configuration).
    #[error("cannot create the Kafka client: {0}")]
    Client(#[source] KafkaError),
    /// The broker did not answer a metadata request for the topic in time.
    #[error("cannot read metadata of topic {:?} from {}: {}", .0.topic, .0.brokers, .0.source)]
    Metadata(Box<MetadataFailure>),
    /// The topic does not exist (or has no partitions).
    #[error("topic {topic:?} does not exist on {brokers}; create it first")]
    NoSuchTopic {
        /// The topic asked about.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
    /// Assigning partitions to the consumer failed.
    #[error("cannot assign partitions: {0}")]
    Assign(#[source] KafkaError),
    /// Producing or flushing failed.
    #[error("producing failed: {0}")]
    Produce(#[source] KafkaError),
    /// The embedded broker could not start.
    #[error("cannot start the embedded broker: {0}")]
    Embedded(#[source] KafkaError),
    /// A consumer error while fetching.
    #[error("fetching failed: {0}")]
    Fetch(#[source] KafkaError),
    /// Reading a topic back met an offset twice.
    #[error("topic {topic:?} partition {partition} delivered offset {offset} twice")]
    Duplicate {
        /// The topic.
        topic: String,
        /// The partition.
        partition: usize,
        /// The offset.
        offset: i64,
    },
    /// Reading a topic back ended before every message arrived.
    #[error("read {read} of the {expected} messages of topic {topic:?} in time")]
    Incomplete {
        /// The topic.
        topic: String,
        /// Messages expected.
        expected: usize,
        /// Messages that arrived.
        read: usize,
    },
}

/// A failed metadata request, with what was asked of whom.
#[derive(Debug)]
pub struct MetadataFailure {
    /// The topic asked about.
    pub topic: String,
    /// The bootstrap servers.
    pub brokers: String,
    /// The client's error.
    pub source: KafkaError,
}

impl KafkaSourceError {
    pub(super) fn metadata(
        topic: &str,
        brokers: &str,
    ) -> impl FnOnce(KafkaError) -> KafkaSourceError {
        let (topic, brokers) = (topic.to_string(), brokers.to_string());
        move |source| {
            KafkaSourceError::Metadata(Box::new(MetadataFailure {
                topic,
                brokers,
                source,
            }))
        }
    }

    /// Whether trying again later may succeed (a broker that is down, a leader moving, a
    /// timeout), as opposed to a refusal or a mistake in configuration that will not fix
    /// itself (no authorization, a topic or partition that no longer exists, a fatal client
    /// state).
    pub fn is_retriable(&self) -> bool {
        match self {
            KafkaSourceError::Metadata(_) => true,
            KafkaSourceError::Fetch(error) => !error
                .rdkafka_error_code()
                .is_some_and(is_fatal_consumer_error),
            _ => false,
        }
    }
}

/// Consumer errors that retrying cannot cure.
pub(super) fn is_fatal_consumer_error(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        code,
        Code::TopicAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::SaslAuthenticationFailed
            | Code::Authentication
            | Code::UnknownTopicOrPartition
            | Code::UnknownTopic
            | Code::UnknownPartition
            | Code::OffsetOutOfRange
            | Code::InvalidConfig
            | Code::UnsupportedVersion
            | Code::UnsupportedFeature
            | Code::Fatal
    )
}
