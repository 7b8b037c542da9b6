//! Reading a whole topic back: what the oracle of a Kafka run (tests, the end-to-end bench)
//! recomputes from.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::decode::DecodeLimits;
use crate::{DeadLetter, Event, SourceBatch};

use super::{KafkaSource, KafkaSourceConfig, KafkaSourceError};

/// Every message of a topic, per partition by offset: the decoded event or its dead letter.
pub type TopicContents = Vec<BTreeMap<i64, Result<Event, DeadLetter>>>;

/// Reads partitions `0..partitions` of `topic` from the start until `count` messages have
/// arrived, or fails after `timeout` (saying how many came) or on a message seen twice.
pub fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    count: usize,
    timeout: Duration,
) -> Result<TopicContents, KafkaSourceError> {
    let mut source = KafkaSource::new(KafkaSourceConfig {
        brokers: brokers.into(),
        topic: topic.into(),
        partitions: (0..partitions).map(|p| (p, None)).collect(),
        limits: DecodeLimits::default(),
    })?;
    let mut messages: TopicContents = vec![BTreeMap::new(); partitions as usize];
    let mut seen = 0;
    let mut batch = SourceBatch::default();
    let deadline = Instant::now() + timeout;
    while seen < count {
        if Instant::now() > deadline {
            return Err(KafkaSourceError::Incomplete {
                topic: topic.to_string(),
                expected: count,
                read: seen,
            });
        }
        source.poll(&mut batch, 10_000)?;
        let arrived = batch
            .events
            .drain(..)
            .map(|e| (e.partition, e.offset, Ok(e.event)))
            .chain(batch.dead_letters.drain(..).map(|letter| {
                let partition = letter.partition.partition as usize;
                (partition, letter.offset, Err(letter))
            }));
        for (partition, offset, message) in arrived {
            if messages[partition].insert(offset, message).is_some() {
                return Err(KafkaSourceError::Duplicate {
                    topic: topic.to_string(),
                    partition,
                    offset,
                });
            }
            seen += 1;
        }
        batch.clear();
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(messages)
}
