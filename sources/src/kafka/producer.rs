//! Writing events into a Kafka topic, keyed by session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::client::with_client_options;
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
    /// A producer writing to `topic` on `brokers`, for live traffic: a message waits at most
    /// 5 ms to fill a batch.
    pub fn new(brokers: &str, topic: &str) -> Result<EventProducer, KafkaSourceError> {
        EventProducer::with_linger(brokers, topic, Duration::from_millis(5))
    }

    /// A producer for loading a backlog as fast as possible: messages wait up to 100 ms to
    /// fill batches of up to 10,000. Fewer, larger batches are cheaper for every broker; for
    /// the embedded one they are decisive, since it searches a partition's batches one by one
    /// on every fetch (with 5 ms batches that search took over a third of a 2M-event bench).
    pub fn bulk(brokers: &str, topic: &str) -> Result<EventProducer, KafkaSourceError> {
        EventProducer::with_linger(brokers, topic, Duration::from_millis(100))
    }

    /// A producer of live traffic into the embedded broker ([`super::EmbeddedBroker`]): a
    /// message waits up to 25 ms to fill a batch, not 5 ms as for a real broker.
    ///
    /// The embedded broker (librdkafka's mock cluster) finds a fetch's batch by walking the
    /// partition's batches one by one, so its cost follows how many batches it holds, not
    /// their bytes; live traffic spread over many partitions makes small ones. Measured on
    /// `demo --rate 100000 --partitions 16` (6 December 2026, this 2-core machine; the shop
    /// sent about 36k events/s in every run): the walk took 15.9% of the process's samples
    /// (`perf`, 15 s) with 5 ms, 4.9% with 25 ms; over four runs of each, alternating, the
    /// sink committed 41–91 transactions with 5 ms and 111–141 with 25 ms, freshness p50
    /// 4.3–12.2 s against 1.2–3.9 s, p99 7.9–14.3 s against 7.2–8.9 s.
    pub fn live_into_embedded(
        brokers: &str,
        topic: &str,
    ) -> Result<EventProducer, KafkaSourceError> {
        EventProducer::with_linger(brokers, topic, Duration::from_millis(25))
    }

    fn with_linger(
        brokers: &str,
        topic: &str,
        linger: Duration,
    ) -> Result<EventProducer, KafkaSourceError> {
        let counter = Arc::new(DeliveryCounter::default());
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            // Retries never duplicate or reorder messages within a partition.
            .set("enable.idempotence", "true")
            // How long a message may wait to fill a batch.
            .set("linger.ms", linger.as_millis().to_string())
            // Large batches: one request carries thousands of ~200-byte events.
            .set("batch.num.messages", "10000")
            .set("batch.size", "1000000")
            // Room for a second of traffic at 1M events/s before `send` has to wait.
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            // The Java client's key hashing, so a session lands on the same partition whichever
            // client produced it.
            .set("partitioner", "murmur2_random");
        let producer = with_client_options(config)
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
