//! Kafka round trips through the embedded broker (librdkafka's mock cluster) and a real,
//! separate broker (tansu): what is produced is read back exactly, with contiguous offsets.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clickflow_sources::decode::DecodeLimits;
use clickflow_sources::kafka::{
    EmbeddedBroker, EventProducer, KafkaSource, KafkaSourceConfig, BACKLOG_AFTER,
};
use clickflow_sources::shop::{Shop, ShopConfig, ShopRecord};
use clickflow_sources::SourceBatch;
use clickflow_testkit::Tansu;

fn produce(brokers: &str, topic: &str, records: &[ShopRecord]) {
    let mut producer = EventProducer::new(brokers, topic).unwrap();
    let mut payload = Vec::new();
    for record in records {
        payload.clear();
        record.write_payload(&mut payload);
        producer.send(record.key().as_bytes(), &payload).unwrap();
    }
    let stats = producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(stats.delivered as usize, records.len());
    assert_eq!(stats.failed, 0);
}

/// A source reading partitions `0..partitions` of `topic` from their start.
fn source_from_start(brokers: &str, topic: &str, partitions: i32) -> KafkaSource {
    KafkaSource::new(KafkaSourceConfig {
        brokers: brokers.into(),
        topic: topic.into(),
        partitions: (0..partitions).map(|p| (p, None)).collect(),
        limits: DecodeLimits::default(),
    })
    .unwrap()
}

/// Reads every partition from its start until `expected` messages arrived; returns the
/// payloads per partition, keyed by offset.
fn read_back(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<BTreeMap<i64, Vec<u8>>> {
    let mut source = source_from_start(brokers, topic, partitions);
    let mut by_partition = vec![BTreeMap::new(); partitions as usize];
    let mut batch = SourceBatch::default();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < expected {
        assert!(
            Instant::now() < deadline,
            "only {seen} of {expected} messages came back"
        );
        source.poll(&mut batch, 10_000).unwrap();
        for event in batch.events.drain(..) {
            let payload = clickflow_sources::encode::encode(&event.event);
            assert!(by_partition[event.partition]
                .insert(event.offset, payload)
                .is_none());
            seen += 1;
        }
        for letter in batch.dead_letters.drain(..) {
            let index = letter.partition.partition as usize;
            assert!(by_partition[index]
                .insert(letter.offset, letter.payload.into_bytes())
                .is_none());
            seen += 1;
        }
        batch.clear();
        std::thread::sleep(Duration::from_millis(5));
    }
    by_partition
}

fn assert_round_trip(records: &[ShopRecord], read: &[BTreeMap<i64, Vec<u8>>]) {
    for (partition, messages) in read.iter().enumerate() {
        let offsets: Vec<i64> = messages.keys().copied().collect();
        let contiguous: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            offsets, contiguous,
            "partition {partition} offsets are contiguous from 0"
        );
    }
    let mut sent: Vec<Vec<u8>> = records
        .iter()
        .map(|r| {
            let mut payload = Vec::new();
            r.write_payload(&mut payload);
            match r {
                ShopRecord::Event(_) => payload,
                ShopRecord::Malformed { .. } => {
                    String::from_utf8_lossy(&payload[..payload.len().min(4096)])
                        .into_owned()
                        .into_bytes()
                }
            }
        })
        .collect();
    let mut received: Vec<Vec<u8>> = read.iter().flat_map(|m| m.values().cloned()).collect();
    sent.sort();
    received.sort();
    assert!(
        sent == received,
        "the multiset of payloads read equals what was produced"
    );
}

fn shop_records(count: usize) -> Vec<ShopRecord> {
    Shop::new(ShopConfig {
        malformed_fraction: 0.02,
        late_fraction: 0.05,
        ..ShopConfig::default()
    })
    .take_records(count)
}

#[test]
fn the_embedded_broker_returns_what_was_produced() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("user-events", 4).unwrap();
    let records = shop_records(20_000);
    produce(broker.bootstrap_servers(), "user-events", &records);
    assert_eq!(
        broker
            .check_retention("user-events", records.len() as u64)
            .unwrap(),
        0
    );
    let read = read_back(broker.bootstrap_servers(), "user-events", 4, records.len());
    assert_round_trip(&records, &read);
}

#[test]
fn the_embedded_broker_reports_what_it_silently_dropped() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("tiny", 1).unwrap();
    // ~200 bytes each: 60k messages are well over the mock's 5 MiB per partition.
    let records = Shop::new(ShopConfig::default()).take_records(60_000);
    produce(broker.bootstrap_servers(), "tiny", &records);
    let dropped = broker
        .check_retention("tiny", records.len() as u64)
        .unwrap();
    assert!(dropped > 0, "the loss is detected, not hidden");
}

#[test]
fn tansu_returns_what_was_produced() {
    let tansu = Tansu::start();
    tansu.create_topic("user-events", 4);
    let records = shop_records(5_000);
    produce(&tansu.bootstrap, "user-events", &records);
    let read = read_back(&tansu.bootstrap, "user-events", 4, records.len());
    assert_round_trip(&records, &read);
}

/// An embedded broker with a 2-partition topic of `count` shop records, and a source
/// reading it from the start (keep the broker while the source reads).
fn filled_topic(count: usize) -> (EmbeddedBroker, Vec<ShopRecord>, KafkaSource) {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("user-events", 2).unwrap();
    let records = shop_records(count);
    produce(broker.bootstrap_servers(), "user-events", &records);
    let source = source_from_start(broker.bootstrap_servers(), "user-events", 2);
    (broker, records, source)
}

/// Polls `source` until both of its partitions have reported reaching their end.
fn read_to_the_end(source: &mut KafkaSource) {
    let mut batch = SourceBatch::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut caught_up = [false, false];
    while caught_up != [true, true] {
        assert!(Instant::now() < deadline, "never reached the end");
        batch.clear();
        source.poll(&mut batch, 10_000).unwrap();
        for progress in &batch.progress {
            caught_up[progress.partition] = progress.caught_up;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A source that kept up and then falls behind: a partition that delivers for longer than
/// `BACKLOG_AFTER` without reaching its end is a backlog until it does.
#[test]
fn a_partition_that_does_not_reach_its_end_is_a_backlog_until_it_does() {
    let (broker, _records, mut source) = filled_topic(0);
    read_to_the_end(&mut source);
    assert!(!source.backlogged(), "an empty topic read to its end");
    produce(
        broker.bootstrap_servers(),
        "user-events",
        &shop_records(20_000),
    );
    let mut batch = SourceBatch::default();
    // A trickle of reads for longer than BACKLOG_AFTER never gets near the end.
    let trickle = Instant::now();
    while trickle.elapsed() < BACKLOG_AFTER + Duration::from_millis(200) {
        batch.clear();
        source.poll(&mut batch, 5).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(source.backlogged(), "20k waiting messages are a backlog");
    read_to_the_end(&mut source);
    assert!(!source.backlogged(), "a source at its end is no backlog");
}

/// A topic filled before the source starts: the source knows from the start, before any
/// fetch has come back, that it reads a backlog and how many messages are left, down to
/// none.
#[test]
fn a_topic_filled_before_the_start_is_a_counted_backlog_from_the_first_poll() {
    let (_broker, records, mut source) = filled_topic(20_000);
    assert!(source.backlogged(), "nothing read yet of 20k messages");
    assert_eq!(source.remaining_messages(), Some(records.len()));
    let mut batch = SourceBatch::default();
    let mut delivered = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered < records.len() {
        assert!(Instant::now() < deadline, "never read to the end");
        assert!(source.backlogged(), "{delivered} of {} read", records.len());
        batch.clear();
        source.poll(&mut batch, 1_000).unwrap();
        delivered += batch.events.len() + batch.dead_letters.len();
        assert_eq!(source.remaining_messages(), Some(records.len() - delivered));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(delivered, records.len());
    read_to_the_end(&mut source);
    assert!(!source.backlogged(), "everything held at the start is read");
}

/// A source resuming a partition from an offset (a restart's committed position) reads from
/// exactly there to the end, every message once and none before it, while another
/// partition reads from its start.
#[test]
fn a_partition_resumed_at_an_offset_reads_from_exactly_there() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("user-events", 2).unwrap();
    let records = shop_records(2_000);
    produce(broker.bootstrap_servers(), "user-events", &records);
    let read = read_back(broker.bootstrap_servers(), "user-events", 2, records.len());
    let sizes: Vec<i64> = read.iter().map(|p| p.len() as i64).collect();
    assert!(
        sizes.iter().all(|&n| n > 10),
        "both partitions hold some: {sizes:?}"
    );
    let resume_at = sizes[0] / 2;
    let mut source = KafkaSource::new(KafkaSourceConfig {
        brokers: broker.bootstrap_servers().into(),
        topic: "user-events".into(),
        partitions: vec![(0, Some(resume_at)), (1, None)],
        limits: DecodeLimits::default(),
    })
    .unwrap();
    let expected = (sizes[0] - resume_at + sizes[1]) as usize;
    assert_eq!(source.remaining_messages(), Some(expected));
    let mut offsets = [Vec::new(), Vec::new()];
    let mut caught_up = [false, false];
    let mut batch = SourceBatch::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while caught_up != [true, true] {
        assert!(Instant::now() < deadline, "never read to the end");
        batch.clear();
        source.poll(&mut batch, 1_000).unwrap();
        for event in &batch.events {
            offsets[event.partition].push(event.offset);
        }
        for letter in &batch.dead_letters {
            offsets[letter.partition.partition as usize].push(letter.offset);
        }
        for progress in &batch.progress {
            caught_up[progress.partition] = progress.caught_up;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // A batch keeps its events and its dead letters apart: order by offset.
    offsets.iter_mut().for_each(|read| read.sort_unstable());
    assert_eq!(offsets[0], (resume_at..sizes[0]).collect::<Vec<_>>());
    assert_eq!(offsets[1], (0..sizes[1]).collect::<Vec<_>>());
}
