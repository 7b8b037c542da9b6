//! The publisher: the outbox (`clickflow_changes`) to the change topics, in `seq` order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_postgres::Client;

use super::capture::ChangeTable;
use super::topics::ensure_topics;
use crate::outbox::{spawn_drainer, Drainer, Outbox, Pacing};
use crate::postgres::{DatabaseUrl, Freshness};

/// The most changes one round reads from the outbox and publishes before it deletes them.
const PAGE: i64 = 5_000;
/// How long a round waits for Kafka to acknowledge its messages.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how the changes are published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedConfig {
    /// The Kafka cluster (`--emit-kafka`).
    pub brokers: String,
    /// The tables whose changes are published (`--emit-tables`).
    pub tables: Vec<ChangeTable>,
    /// A table's topic is this followed by the table's name (`--emit-topic-prefix`,
    /// `clickflow.` by default).
    pub topic_prefix: String,
    /// Partitions of a topic it creates (`--emit-partitions`; -1: the broker's default).
    pub partitions: i32,
    /// Replication factor of a topic it creates (`--emit-replication`; -1: the broker's
    /// default).
    pub replication: i32,
}

impl FeedConfig {
    /// The topic of `table`'s changes.
    pub fn topic(&self, table: ChangeTable) -> String {
        self.topic_of(table.name())
    }
}

/// What the publisher has done: `/metrics` and the tests read it.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Changes Kafka acknowledged (tombstones not counted).
    pub published: AtomicU64,
    /// Of those, changes an earlier run had committed but not seen acknowledged: published
    /// again after a restart (some may have reached Kafka before it).
    pub republished: AtomicU64,
    /// Rounds that failed (Kafka or PostgreSQL unreachable) and were retried.
    pub failed: AtomicU64,
    /// Publish lag per change, commit to acknowledgement, in milliseconds.
    pub lag: Mutex<Freshness>,
}

/// The running publisher.
pub struct Publisher {
    drainer: Drainer,
    /// Its counts.
    pub stats: Arc<FeedStats>,
}

impl Publisher {
    /// Stops it once the outbox is empty (what the pipeline committed last is published),
    /// or after 10 s when Kafka does not take it; the rest waits in the outbox for the next
    /// start.
    pub fn stop(self) {
        self.drainer.stop();
    }
}

/// Starts publishing the changes captured in `database` as `feed` says. Call it once the
/// tables exist (the outbox is created with them).
pub fn spawn_publisher(database: DatabaseUrl, feed: FeedConfig) -> std::io::Result<Publisher> {
    let stats = Arc::new(FeedStats::default());
    let outbox = ChangeOutbox {
        database,
        feed,
        client: None,
        producer: None,
        backlog_through: None,
        stats: stats.clone(),
    };
    let pacing = Pacing {
        poll: Duration::from_millis(20),
        max_backoff: Duration::from_secs(30),
        drain_for: Duration::from_secs(10),
    };
    let drainer = spawn_drainer("clickflow-changes", outbox, pacing)?;
    Ok(Publisher { drainer, stats })
}

/// `clickflow_changes` as the feed's outbox.
struct ChangeOutbox {
    database: DatabaseUrl,
    feed: FeedConfig,
    client: Option<Client>,
    producer: Option<FutureProducer>,
    /// The newest change in the outbox when this process first read it: it and those before
    /// it were committed by an earlier run.
    backlog_through: Option<i64>,
    stats: Arc<FeedStats>,
}

/// One change read from the outbox, ready to send.
struct Change {
    seq: i64,
    table: String,
    key: String,
    deleted: bool,
    envelope: String,
    epoch: i64,
    committed_ms: i64,
}

impl Outbox for ChangeOutbox {
    async fn round(&mut self) -> Result<bool, String> {
        let result = self.publish_waiting().await;
        if result.is_err() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

impl ChangeOutbox {
    async fn publish_waiting(&mut self) -> Result<bool, String> {
        if self.producer.is_none() {
            ensure_topics(&self.feed).await?;
            let producer = clickflow_sources::kafka::client_config(&self.feed.brokers)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .create()
                .map_err(|e| format!("the change feed's producer: {e}"))?;
            self.producer = Some(producer);
        }
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(self.database.connect().await.map_err(|e| e.to_string())?);
        }
        let (Some(client), Some(producer)) = (&self.client, &self.producer) else {
            unreachable!("both set above");
        };
        if self.backlog_through.is_none() {
            let row = client
                .query_one("SELECT coalesce(max(seq), 0) FROM clickflow_changes", &[])
                .await
                .map_err(|e| format!("reading the outbox: {e}"))?;
            let through: i64 = row.get(0);
            if through > 0 {
                tracing::info!(
                    through_seq = through,
                    "publishing changes committed before this start"
                );
            }
            self.backlog_through = Some(through);
        }
        let changes = read_changes(client).await?;
        if changes.is_empty() {
            return Ok(false);
        }
        // Enqueued one after another, in seq order (a delete's tombstone right after it), so
        // a key's messages keep their order in its partition; then every acknowledgement is
        // awaited. A full local queue fails the round (it cannot be: each round starts with
        // an empty one), which is then retried whole.
        let mut deliveries = Vec::with_capacity(changes.len());
        for change in &changes {
            enqueue(
                producer,
                &self.feed.topic_of(&change.table),
                change,
                &mut deliveries,
            )
            .map_err(|e| format!("publishing changes: {e}"))?;
        }
        for delivered in tokio::time::timeout(DELIVERY_TIMEOUT, join_all(deliveries))
            .await
            .map_err(|_| format!("Kafka did not acknowledge within {DELIVERY_TIMEOUT:?}"))?
        {
            match delivered {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(format!("publishing changes: {error}")),
                Err(_) => return Err("publishing changes: the producer went away".into()),
            }
        }
        let now_ms = unix_ms(SystemTime::now());
        let published = mark_published(client, &changes).await?;
        let backlog = self.backlog_through.unwrap_or(0);
        let republished = changes.iter().filter(|c| c.seq <= backlog).count();
        self.stats.published.fetch_add(published, Ordering::Relaxed);
        self.stats
            .republished
            .fetch_add(republished as u64, Ordering::Relaxed);
        if let Ok(mut lag) = self.stats.lag.lock() {
            for change in &changes {
                lag.record((now_ms - change.committed_ms).max(0), 1);
            }
        }
        Ok(changes.len() as i64 >= PAGE)
    }
}

impl FeedConfig {
    fn topic_of(&self, table: &str) -> String {
        format!("{}{table}", self.topic_prefix)
    }
}

/// Enqueues `change` for `topic` and, for a delete, its tombstone after it; their delivery
/// reports go to `deliveries`.
fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    change: &Change,
    deliveries: &mut Vec<DeliveryFuture>,
) -> Result<(), KafkaError> {
    let (epoch, seq) = (change.epoch.to_string(), change.seq.to_string());
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "clickflow-epoch",
            value: Some(&epoch),
        })
        .insert(Header {
            key: "clickflow-seq",
            value: Some(&seq),
        });
    let record = FutureRecord::to(topic)
        .key(&change.key)
        .payload(&change.envelope)
        .headers(headers.clone());
    deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
    if change.deleted {
        let tombstone = FutureRecord::<str, str>::to(topic)
            .key(&change.key)
            .headers(headers);
        deliveries.push(producer.send_result(tombstone).map_err(|(e, _)| e)?);
    }
    Ok(())
}

/// The oldest changes waiting, in `seq` order, as messages.
async fn read_changes(client: &Client) -> Result<Vec<Change>, String> {
    let rows = client
        .query(
            "SELECT seq, source_table, key::text, op = 'd', epoch,
                    (extract(epoch FROM committed_at) * 1000)::bigint,
                    json_build_object(
                        'before', before, 'after', after, 'op', op,
                        'source', json_build_object(
                            'name', 'clickflow', 'schema', current_schema(),
                            'table', source_table, 'epoch', epoch, 'seq', seq,
                            'ts_ms', (extract(epoch FROM committed_at) * 1000)::bigint),
                        'ts_ms', (extract(epoch FROM clock_timestamp()) * 1000)::bigint)::text
             FROM clickflow_changes ORDER BY seq LIMIT $1",
            &[&PAGE],
        )
        .await
        .map_err(|e| format!("reading the outbox: {e}"))?;
    Ok(rows
        .iter()
        .map(|row| Change {
            seq: row.get(0),
            table: row.get(1),
            key: row.get(2),
            deleted: row.get(3),
            epoch: row.get(4),
            committed_ms: row.get(5),
            envelope: row.get(6),
        })
        .collect())
}

/// Deletes the acknowledged `changes` from the outbox (exactly those: a change of another
/// transaction with a lower `seq` may become visible after this round read) and records the
/// newest; answers how many were deleted.
async fn mark_published(client: &Client, changes: &[Change]) -> Result<u64, String> {
    let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
    let last = changes
        .last()
        .expect("a round publishes at least one change");
    let row = client
        .query_one(
            "WITH gone AS (DELETE FROM clickflow_changes WHERE seq = ANY($1) RETURNING seq),
                  counted AS (SELECT count(*) AS n FROM gone),
                  recorded AS (
                      INSERT INTO clickflow_publisher (id, last_seq, last_epoch, published, updated_at)
                      SELECT 1, $2, $3, n, now() FROM counted
                      ON CONFLICT (id) DO UPDATE SET
                          last_seq = greatest(clickflow_publisher.last_seq, EXCLUDED.last_seq),
                          last_epoch = greatest(clickflow_publisher.last_epoch, EXCLUDED.last_epoch),
                          published = clickflow_publisher.published + EXCLUDED.published,
                          updated_at = EXCLUDED.updated_at)
             SELECT n FROM counted",
            &[&seqs, &last.seq, &last.epoch],
        )
        .await
        .map_err(|e| format!("published, but not marked (they will be sent again): {e}"))?;
    Ok(row.get::<_, i64>(0) as u64)
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
