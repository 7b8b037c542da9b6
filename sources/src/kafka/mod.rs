//! Kafka: the producer the synthetic shop writes with, the source the dataflow reads with,
//! and the embedded broker used when no `--brokers` is given.

mod client;
mod embedded;
mod error;
mod metadata;
mod producer;
mod read_back;
mod source;

pub use client::{
    apply_options, client_config, is_secret, set_client_options, KafkaOption, PROTECTED,
};
pub use embedded::EmbeddedBroker;
pub use error::KafkaSourceError;
pub use metadata::{partition_count, watermarks};
pub use producer::{EventProducer, ProducerStats};
pub use read_back::{read_topic, TopicContents};
pub use source::{KafkaSource, KafkaSourceConfig, BACKLOG_AFTER};
