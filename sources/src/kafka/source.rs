//! Reading assigned partitions of a topic, for one timely worker.
//!
//! Partitions are assigned explicitly (`assign`, never group rebalancing) and start at the
//! offsets the caller gives, which the sink stores with the output: the consumer group's
//! committed offsets play no part, so auto-commit is off. Polling never waits: librdkafka's
//! own threads fetch in the background and `poll` only drains what has already arrived.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaSourceError;
use crate::batch::{PartitionId, PartitionProgress, SourceBatch, SourcedEvent};
use crate::dead_letter::DeadLetter;
use crate::decode::{decode, DecodeLimits};

/// What a [`KafkaSource`] reads.
#[derive(Clone, Debug)]
pub struct KafkaSourceConfig {
    /// The `bootstrap.servers` list.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// The partitions this source reads, each with the offset to start from (`None`: the
    /// oldest offset the broker still has).
    pub partitions: Vec<(i32, Option<i64>)>,
    /// Payload limits for decoding.
    pub limits: DecodeLimits,
}

/// One worker's Kafka consumer.
pub struct KafkaSource {
    consumer: Option<BaseConsumer>,
    partitions: Vec<PartitionId>,
    index: HashMap<i32, usize>,
    next_offsets: Vec<Option<i64>>,
    caught_up: Vec<bool>,
    /// Per partition: messages at or after this offset are held back.
    holds: Vec<Option<i64>>,
    /// Per partition: paused at this offset because a message reached the hold.
    paused_at: Vec<Option<i64>>,
    topic: String,
    limits: DecodeLimits,
}

impl KafkaSource {
    /// Connects and assigns the configured partitions. A source with no partitions is valid
    /// (a worker that owns none) and never produces anything.
    pub fn new(config: KafkaSourceConfig) -> Result<KafkaSource, KafkaSourceError> {
        let topic: std::sync::Arc<str> = config.topic.as_str().into();
        let partitions: Vec<PartitionId> = config
            .partitions
            .iter()
            .map(|(p, _)| PartitionId::new(topic.clone(), *p))
            .collect();
        let index = config
            .partitions
            .iter()
            .enumerate()
            .map(|(i, (p, _))| (*p, i))
            .collect();
        let next_offsets = config.partitions.iter().map(|(_, o)| *o).collect();
        let caught_up = vec![false; partitions.len()];
        let consumer = if config.partitions.is_empty() {
            None
        } else {
            Some(Self::connect(&config)?)
        };
        Ok(KafkaSource {
            consumer,
            holds: vec![None; partitions.len()],
            paused_at: vec![None; partitions.len()],
            partitions,
            index,
            next_offsets,
            caught_up,
            topic: config.topic,
            limits: config.limits,
        })
    }

    fn connect(config: &KafkaSourceConfig) -> Result<BaseConsumer, KafkaSourceError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            // `assign` needs a group id, but no group is joined and nothing is committed.
            .set("group.id", "clickflow")
            // Offsets that matter are stored in PostgreSQL with the output, never in Kafka.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Tells us when a partition is caught up, so an idle partition stops holding back
            // the pipeline's watermark.
            .set("enable.partition.eof", "true")
            // A partition with no stored offset starts from the oldest message kept.
            .set("auto.offset.reset", "earliest")
            // Answer fetches quickly: lower latency, and some brokers (tansu) wait half of
            // this on every fetch.
            .set("fetch.wait.max.ms", "10")
            // Prefetch generously so `poll` finds messages waiting.
            .set("queued.min.messages", "200000")
            .create()
            .map_err(KafkaSourceError::Client)?;
        let mut assignment = TopicPartitionList::new();
        for (partition, start) in &config.partitions {
            let offset = start.map(Offset::Offset).unwrap_or(Offset::Beginning);
            assignment
                .add_partition_offset(&config.topic, *partition, offset)
                .map_err(KafkaSourceError::Assign)?;
        }
        consumer
            .assign(&assignment)
            .map_err(KafkaSourceError::Assign)?;
        Ok(consumer)
    }

    fn one(&self, i: usize) -> Result<TopicPartitionList, KafkaSourceError> {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, self.partitions[i].partition);
        Ok(list)
    }

    /// Holds back messages of partition `i` at or after `limit` (`None`: releases it). A
    /// partition that reached its hold is paused, and on release sought back to the first
    /// message it held, so nothing is skipped and nothing buffers up meanwhile.
    pub fn set_limit(&mut self, i: usize, limit: Option<i64>) -> Result<(), KafkaSourceError> {
        self.holds[i] = limit;
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        if let Some(paused_at) = self.paused_at[i] {
            if limit.is_none_or(|hold| paused_at < hold) {
                let partition = self.partitions[i].partition;
                consumer
                    .seek(
                        &self.topic,
                        partition,
                        Offset::Offset(paused_at),
                        Duration::from_secs(10),
                    )
                    .map_err(KafkaSourceError::Fetch)?;
                consumer
                    .resume(&self.one(i)?)
                    .map_err(KafkaSourceError::Fetch)?;
                self.paused_at[i] = None;
            }
        }
        Ok(())
    }

    /// The partitions this source reads, in the order `SourcedEvent::partition` indexes.
    pub fn partitions(&self) -> &[PartitionId] {
        &self.partitions
    }

    /// Moves up to `max_messages` already-fetched messages into `batch` without waiting, and
    /// records the progress of every partition that moved.
    pub fn poll(
        &mut self,
        batch: &mut SourceBatch,
        max_messages: usize,
    ) -> Result<(), KafkaSourceError> {
        let Some(consumer) = &self.consumer else {
            return Ok(());
        };
        let mut moved = vec![false; self.partitions.len()];
        for _ in 0..max_messages {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    if let Some(&i) = self.index.get(&partition) {
                        moved[i] |= !self.caught_up[i];
                        self.caught_up[i] = true;
                    }
                }
                Some(Err(error)) => return Err(KafkaSourceError::Fetch(error)),
                Some(Ok(message)) => {
                    let Some(&i) = self.index.get(&message.partition()) else {
                        continue;
                    };
                    let offset = message.offset();
                    let payload = message.payload().unwrap_or_default();
                    match decode(payload, message.timestamp().to_millis(), &self.limits) {
                        Ok(event) => batch.events.push(SourcedEvent {
                            partition: i,
                            offset,
                            event,
                        }),
                        Err(rejection) => batch.dead_letters.push(DeadLetter::new(
                            self.partitions[i].clone(),
                            offset,
                            rejection,
                            payload,
                        )),
                    }
                    self.next_offsets[i] = Some(offset + 1);
                    self.caught_up[i] = false;
                    moved[i] = true;
                }
            }
        }
        for (i, moved) in moved.into_iter().enumerate() {
            if moved {
                batch.progress.push(PartitionProgress {
                    partition: i,
                    next_offset: self.next_offsets[i].unwrap_or(0),
                    caught_up: self.caught_up[i],
                    finished: false,
                });
            }
        }
        Ok(())
    }
}
