//! Writing events into a Kafka topic, keyed by session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::KafkaSourceError;

/// Counts of what the broker acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Messages the broker acknowledged.
    pub delivered: u64,
    /// Messages the broker (finally) refused.
    pub failed: u64,
}

#[derive(Default)]
struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
}

struct CountingContext(Arc<DeliveryCounter>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((error, _)) => {
                tracing::warn!(%error, "message not delivered");
                self.0.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// A producer of event payloads into one topic.
pub struct EventProducer {
    producer: BaseProducer<CountingContext>,
    topic: String,
    counter: Arc<DeliveryCounter>,
}

impl EventProducer {
    /// A producer writing to `topic` on `brokers`.
    pub fn new(brokers: &str, topic: &str) -> Result<EventProducer, KafkaSourceError> {
        let counter = Arc::new(DeliveryCounter::default());
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Retries never duplicate or reorder messages within a partition.
            .set("enable.idempotence", "true")
            // Wait up to 5 ms to fill batches: throughput at a negligible latency cost.
            .set("linger.ms", "5")
            // Large batches: one request carries thousands of ~200-byte events.
            .set("batch.num.messages", "10000")
            .set("batch.size", "1000000")
            // Room for a second of traffic at 1M events/s before `send` has to wait.
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            // The Java client's key hashing, so a session lands on the same partition whichever
            // client produced it.
            .set("partitioner", "murmur2_random")
            .create_with_context(CountingContext(counter.clone()))
            .map_err(KafkaSourceError::Client)?;
        Ok(EventProducer {
            producer,
            topic: topic.to_string(),
            counter,
        })
    }

    /// Queues one message; waits (serving delivery reports) while the local queue is full.
    pub fn send(&mut self, key: &[u8], payload: &[u8]) -> Result<(), KafkaSourceError> {
        let mut record = BaseRecord::to(&self.topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    // `poll` blocks for its whole timeout since rdkafka 0.38: poll without
                    // waiting, and yield the core to librdkafka's threads instead.
                    self.producer.poll(Duration::ZERO);
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((error, _)) => return Err(KafkaSourceError::Produce(error)),
            }
        }
    }

    /// Serves pending delivery reports without waiting; call it regularly.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every queued message is acknowledged (or `timeout` passes).
    pub fn flush(&mut self, timeout: Duration) -> Result<ProducerStats, KafkaSourceError> {
        self.producer
            .flush(timeout)
            .map_err(KafkaSourceError::Produce)?;
        Ok(self.stats())
    }

    /// What has been acknowledged so far.
    pub fn stats(&self) -> ProducerStats {
        ProducerStats {
            delivered: self.counter.delivered.load(Ordering::Relaxed),
            failed: self.counter.failed.load(Ordering::Relaxed),
        }
    }
}
