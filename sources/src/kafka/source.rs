//! Reading assigned partitions of a topic, for one timely worker.
//!
//! Partitions are assigned explicitly (`assign`, never group rebalancing) and start at the
//! offsets the caller gives, which the sink stores with the output: the consumer group's
//! committed offsets play no part, so auto-commit is off. Polling never waits: librdkafka's
//! own threads fetch in the background and `poll` only drains what has already arrived.
//!
//! A partition can be held at an offset (during a restart's replay): messages at or past it
//! are decoded into a per-partition queue and the partition is paused, so at most what was
//! already prefetched waits in memory; releasing the hold delivers the queue, in order, and
//! resumes fetching.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::client::with_client_options;
use super::error::is_fatal_consumer_error;
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

/// The consumer's client context. librdkafka reports here what it retries on its own (a
/// broker unreachable, a connection lost): each is logged and counted, so that `/metrics`
/// shows them. A fatal client error (librdkafka's fatal state, failed authentication) is
/// kept for [`KafkaSource::poll`] to return: retrying would never end. Partition EOFs are
/// progress information here (a partition is caught up), not errors.
///
/// It also keeps each partition's high watermark (the offset after its newest message) from
/// librdkafka's statistics, for [`KafkaSource::remaining_messages`]: the cached figure
/// costs no request to the broker, where asking for it would block the worker.
#[derive(Default)]
pub(super) struct SourceContext {
    retried: AtomicU64,
    fatal: Mutex<Option<KafkaError>>,
    high_watermarks: Mutex<HashMap<i32, i64>>,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        let Ok(mut high) = self.high_watermarks.lock() else {
            return;
        };
        let partitions = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values());
        // Partition -1 is librdkafka's own placeholder; -1 offsets are not known yet.
        for partition in partitions.filter(|p| p.partition >= 0 && p.hi_offset >= 0) {
            high.insert(partition.partition, partition.hi_offset);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
                tracing::trace!(reason, "partition caught up")
            }
            error
                if error
                    .rdkafka_error_code()
                    .is_some_and(is_fatal_consumer_error) =>
            {
                tracing::error!(%error, reason, "fatal Kafka client error");
                if let Ok(mut fatal) = self.fatal.lock() {
                    fatal.get_or_insert(error);
                }
            }
            error => {
                tracing::warn!(%error, reason, "Kafka client error; librdkafka retries");
                self.retried.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl ConsumerContext for SourceContext {}

/// How long a partition must deliver without reaching its end to count as a backlog.
pub const BACKLOG_AFTER: Duration = Duration::from_secs(1);

/// How often librdkafka reports its statistics (the partitions' high watermarks), in ms.
const STATISTICS_INTERVAL_MS: &str = "1000";

/// How long the source waits at the start for a partition's offset range.
const OFFSET_RANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A decoded message: an event or a dead letter.
type Decoded = Result<SourcedEvent, DeadLetter>;

/// One assigned partition.
struct Assigned {
    id: PartitionId,
    next_offset: Option<i64>,
    caught_up: bool,
    /// Since when the partition has been delivering without reaching its end (`None`: it is
    /// at its end). Unknown at the start, so it starts behind.
    behind_since: Option<Instant>,
    /// The partition's end (high watermark) when the source started, if the broker said.
    start_end: Option<i64>,
    /// Whether the partition has yet to read up to `start_end`: what was waiting before the
    /// pipeline started is a backlog from the first poll on, however slowly the first
    /// fetches come (a consumer starting, or resuming after the replay hold, can hand over
    /// a few dozen messages in its first 50 ms, and an epoch judged on them alone took a
    /// backlog for live traffic and cut it in two).
    reading_backlog: bool,
    /// Messages at or after this offset are held back.
    hold: Option<i64>,
    /// Messages received at or past the hold, in order.
    held: VecDeque<(i64, Decoded)>,
    paused: bool,
}

impl Assigned {
    /// Moves past the message at `offset`, just delivered.
    fn delivered(&mut self, offset: i64) {
        self.next_offset = Some(offset + 1);
        self.reading_backlog &= self.start_end.is_some_and(|end| offset + 1 < end);
    }
}

/// One worker's Kafka consumer.
pub struct KafkaSource {
    consumer: Option<BaseConsumer<SourceContext>>,
    partitions: Vec<PartitionId>,
    assigned: Vec<Assigned>,
    index: HashMap<i32, usize>,
    topic: String,
    limits: DecodeLimits,
}

impl KafkaSource {
    /// Connects, asks the broker where each configured partition begins and ends (one
    /// request a partition, before the first poll; see [`KafkaSource::backlogged`]), and
    /// assigns the partitions from the offsets that follows. A source with no partitions is
    /// valid (a worker that owns none) and never produces anything.
    ///
    /// A partition is assigned at an explicit offset wherever the broker said where it
    /// begins: one assigned at a logical offset (`Offset::Beginning`) before the client
    /// knows the partition's leader waits half a second before it asks for it (a fixed
    /// backoff in librdkafka's `rd_kafka_toppar_offset_request`), and a run through the
    /// embedded broker started reading 0.49 s after its first poll (6 December 2026).
    pub fn new(config: KafkaSourceConfig) -> Result<KafkaSource, KafkaSourceError> {
        let topic: std::sync::Arc<str> = config.topic.as_str().into();
        let consumer = if config.partitions.is_empty() {
            None
        } else {
            Some(Self::connect(&config)?)
        };
        let assigned: Vec<Assigned> = config
            .partitions
            .iter()
            .map(|&(p, start)| {
                let range = consumer
                    .as_ref()
                    .and_then(|consumer| offset_range(consumer, &config.topic, p));
                // A start below the oldest offset kept reads from the oldest.
                let next_offset = match (start, range) {
                    (Some(start), Some((low, _))) => Some(start.max(low)),
                    (None, Some((low, _))) => Some(low),
                    (start, None) => start,
                };
                Assigned {
                    id: PartitionId::new(topic.clone(), p),
                    next_offset,
                    caught_up: false,
                    behind_since: Some(Instant::now()),
                    start_end: range.map(|(_, high)| high),
                    reading_backlog: range
                        .zip(next_offset)
                        .is_some_and(|((_, high), next)| next < high),
                    hold: None,
                    held: VecDeque::new(),
                    paused: false,
                }
            })
            .collect();
        if let Some(consumer) = &consumer {
            let mut assignment = TopicPartitionList::new();
            for partition in &assigned {
                let offset = partition
                    .next_offset
                    .map(Offset::Offset)
                    .unwrap_or(Offset::Beginning);
                assignment
                    .add_partition_offset(&config.topic, partition.id.partition, offset)
                    .map_err(KafkaSourceError::Assign)?;
            }
            consumer
                .assign(&assignment)
                .map_err(KafkaSourceError::Assign)?;
        }
        Ok(KafkaSource {
            consumer,
            partitions: assigned.iter().map(|a| a.id.clone()).collect(),
            index: config
                .partitions
                .iter()
                .enumerate()
                .map(|(i, (p, _))| (*p, i))
                .collect(),
            assigned,
            topic: config.topic,
            limits: config.limits,
        })
    }

    fn connect(
        config: &KafkaSourceConfig,
    ) -> Result<BaseConsumer<SourceContext>, KafkaSourceError> {
        let mut client = ClientConfig::new();
        client
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
            // Once the prefetched messages reach `queued.max.messages.kbytes` (64 MiB, about
            // 440,000 shop events), a partition's next fetch waits this long; librdkafka's
            // default is a second, in which a backlog's readers emptied the queue and sat
            // idle. `clickflow bench --source kafka` (6 December 2026, 2 workers, 16
            // partitions): idle gaps of about half a second, over and over, in a thread
            // trace; 238–255k events/s with the default, 315–329k with 10, 50 or 100 ms (two
            // runs each). A queue below its thresholds (live traffic) is fetched as before.
            .set("fetch.queue.backoff.ms", "100")
            // The partitions' high watermarks, for `remaining_messages`.
            .set("statistics.interval.ms", STATISTICS_INTERVAL_MS);
        with_client_options(client)
            .create_with_context(SourceContext::default())
            .map_err(KafkaSourceError::Client)
    }

    /// The partitions this source reads, in the order `SourcedEvent::partition` indexes.
    pub fn partitions(&self) -> &[PartitionId] {
        &self.partitions
    }

    /// Client errors librdkafka reported and retries on its own, since the last call.
    pub fn take_retried(&self) -> u64 {
        self.consumer
            .as_ref()
            .map_or(0, |c| c.context().retried.swap(0, Ordering::Relaxed))
    }

    fn only(&self, i: usize) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, self.assigned[i].id.partition);
        list
    }

    /// Holds back messages of partition `i` at or after `limit` (`None`: no hold).
    pub fn set_limit(&mut self, i: usize, limit: Option<i64>) -> Result<(), KafkaSourceError> {
        self.assigned[i].hold = limit;
        Ok(())
    }

    fn decode(&self, i: usize, message: &BorrowedMessage<'_>) -> Decoded {
        let offset = message.offset();
        let payload = message.payload().unwrap_or_default();
        match decode(payload, message.timestamp().to_millis(), &self.limits) {
            Ok(event) => Ok(SourcedEvent {
                partition: i,
                offset,
                event,
            }),
            Err(rejection) => Err(DeadLetter::new(
                self.assigned[i].id.clone(),
                offset,
                rejection,
                payload,
            )),
        }
    }

    /// True when some partition is working through a backlog: it has not yet read up to
    /// where it ended when the source started (a restart, a topic filled before the pipeline
    /// started), or it has been delivering for [`BACKLOG_AFTER`] without reaching its end (a
    /// consumer that fell behind). A partition that keeps up reaches its end after every
    /// fetch, many times a second.
    pub fn backlogged(&self) -> bool {
        self.assigned.iter().any(|partition| {
            partition.reading_backlog
                || partition
                    .behind_since
                    .is_some_and(|since| since.elapsed() >= BACKLOG_AFTER)
        })
    }

    /// About how many messages are left before every assigned partition is read to its
    /// end, from the high watermarks librdkafka last reported (once a second, so a topic
    /// still being written to has more by now), or before its first report from the ends
    /// the broker gave at the start. `None` where neither is known.
    pub fn remaining_messages(&self) -> Option<usize> {
        let consumer = self.consumer.as_ref()?;
        let high = consumer.context().high_watermarks.lock().ok()?;
        self.assigned.iter().try_fold(0, |left, partition| {
            let reported = high.get(&partition.id.partition).copied();
            let end = reported.max(partition.start_end)?;
            let next = partition.next_offset?;
            Some(left + usize::try_from(end - next).unwrap_or(0))
        })
    }

    /// Moves up to `max_messages` already-fetched messages into `batch` without waiting, and
    /// records the progress of every partition that moved.
    pub fn poll(
        &mut self,
        batch: &mut SourceBatch,
        max_messages: usize,
    ) -> Result<(), KafkaSourceError> {
        if let Some(fatal) = self
            .consumer
            .as_ref()
            .and_then(|c| c.context().fatal.lock().ok()?.take())
        {
            return Err(KafkaSourceError::Fetch(fatal));
        }
        let mut moved = vec![false; self.assigned.len()];
        let mut budget = max_messages;
        // A consumer error ends the poll, but what was taken before it is still delivered
        // with its progress: those messages cannot be fetched again.
        let mut failure = None;
        self.release_held(batch, &mut moved, &mut budget)?;
        if let Some(consumer) = &self.consumer {
            while budget > 0 {
                let message = match consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(KafkaError::PartitionEOF(partition))) => {
                        if let Some(&i) = self.index.get(&partition) {
                            moved[i] |= !self.assigned[i].caught_up;
                            self.assigned[i].caught_up = true;
                            self.assigned[i].behind_since = None;
                            self.assigned[i].reading_backlog = false;
                        }
                        continue;
                    }
                    Some(Err(error)) => {
                        failure = Some(KafkaSourceError::Fetch(error));
                        break;
                    }
                    Some(Ok(message)) => message,
                };
                let Some(&i) = self.index.get(&message.partition()) else {
                    continue;
                };
                let offset = message.offset();
                let decoded = self.decode(i, &message);
                let partition = &mut self.assigned[i];
                if partition.hold.is_some_and(|hold| offset >= hold) || !partition.held.is_empty() {
                    partition.held.push_back((offset, decoded));
                    if !partition.paused {
                        // Stop fetching more of it: what is queued is all that waits.
                        consumer
                            .pause(&self.only(i))
                            .map_err(KafkaSourceError::Fetch)?;
                        self.assigned[i].paused = true;
                    }
                    continue;
                }
                budget -= 1;
                deliver(batch, decoded);
                partition.delivered(offset);
                partition.caught_up = false;
                partition.behind_since.get_or_insert_with(Instant::now);
                moved[i] = true;
            }
        }
        for (i, moved) in moved.into_iter().enumerate() {
            if moved {
                let partition = &self.assigned[i];
                batch.progress.push(PartitionProgress {
                    partition: i,
                    next_offset: partition.next_offset.unwrap_or(0),
                    caught_up: partition.caught_up && partition.held.is_empty(),
                    finished: false,
                });
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Delivers held messages that are now below their partition's hold, and resumes a
    /// paused partition whose queue is empty and whose hold is lifted.
    fn release_held(
        &mut self,
        batch: &mut SourceBatch,
        moved: &mut [bool],
        budget: &mut usize,
    ) -> Result<(), KafkaSourceError> {
        let mut resumed = Vec::new();
        for (i, partition) in self.assigned.iter_mut().enumerate() {
            while *budget > 0 {
                let Some((offset, _)) = partition.held.front() else {
                    break;
                };
                if partition.hold.is_some_and(|hold| *offset >= hold) {
                    break;
                }
                let (offset, decoded) = partition.held.pop_front().expect("front exists");
                deliver(batch, decoded);
                partition.delivered(offset);
                moved[i] = true;
                *budget -= 1;
            }
            if partition.paused && partition.hold.is_none() && partition.held.is_empty() {
                partition.paused = false;
                resumed.push(i);
            }
        }
        if let Some(consumer) = &self.consumer {
            for i in resumed {
                consumer
                    .resume(&self.only(i))
                    .map_err(KafkaSourceError::Fetch)?;
            }
        }
        Ok(())
    }
}

/// The (low, high) watermarks of `partition`, or `None` (logged) if the broker did not say
/// within 10 s: the source then learns of a backlog from how it reads, as it always could.
fn offset_range(
    consumer: &BaseConsumer<SourceContext>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    consumer
        .fetch_watermarks(topic, partition, OFFSET_RANGE_TIMEOUT)
        .inspect_err(|error| {
            tracing::warn!(%error, topic, partition, "cannot learn where the partition ends")
        })
        .ok()
}

fn deliver(batch: &mut SourceBatch, decoded: Decoded) {
    match decoded {
        Ok(event) => batch.events.push(event),
        Err(letter) => batch.dead_letters.push(letter),
    }
}
