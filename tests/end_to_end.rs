//! `clickflow run` end to end: a real broker (tansu) and the embedded one into PostgreSQL,
//! a restart in the middle of a Kafka run, and a two-process cluster; every result is
//! checked against the oracle.

mod common;

use std::time::Duration;

use clickflow_dataflow::oracle::recompute_file;
use clickflow_dataflow::DataflowConfig;
use clickflow_sources::file::FileSplits;
use clickflow_sources::kafka::{EmbeddedBroker, EventProducer};
use clickflow_sources::shop::{Shop, ShopConfig};
use clickflow_testkit::{free_port, Tansu, TestDatabase};
use common::*;

const EVENTS: usize = 30_000;

fn committed_offsets(db: &TestDatabase) -> usize {
    // Before the pipeline's first start the table does not exist yet.
    let sum = db.try_query("SELECT coalesce(sum(next_offset), 0) FROM clickflow_offsets");
    sum.ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Waits until every message is committed, stops the run gracefully, and compares the
/// tables with the oracle over the topic (sessions still open: a Kafka run never ends).
fn finish_and_check(
    run: &mut std::process::Child,
    db: &TestDatabase,
    brokers: &str,
    partitions: i32,
    context: &str,
) {
    wait_until(
        Duration::from_secs(120),
        "every message is committed",
        || committed_offsets(db) == EVENTS,
    );
    terminate(run);
    let watermark = db.query("SELECT watermark FROM clickflow_pipeline WHERE id = 1");
    let oracle = oracle_for_topic(
        brokers,
        "user-events",
        partitions,
        EVENTS,
        &DataflowConfig::default(),
        watermark.parse().unwrap(),
    );
    assert!(
        !oracle.tables.recommendations.is_empty(),
        "{context}: the watermark closed windows with recommendations in them"
    );
    assert_matches(&read_tables(&db.url), &with_open_sessions(oracle), context);
}

fn run_kafka(brokers: &str, db: &TestDatabase) -> Spawned {
    spawn(&[
        "run",
        "--brokers",
        brokers,
        "--topic",
        "user-events",
        "--database-url",
        &db.url,
        "--workers",
        "2",
        "--epoch-ms",
        "50",
    ])
}

/// Produces records `range` of a fixed shop stream of `EVENTS` records.
fn produce_shop(brokers: &str, range: std::ops::Range<usize>) {
    let shop = Shop::new(ShopConfig {
        seed: 21,
        users: 2_000,
        events_per_second: 200.0,
        late_fraction: 0.02,
        max_lateness_ms: 90_000,
        malformed_fraction: 0.002,
        ..ShopConfig::default()
    });
    let mut producer = EventProducer::new(brokers, "user-events").unwrap();
    let mut payload = Vec::new();
    let count = range.len();
    for record in shop.bounded(EVENTS).skip(range.start).take(count) {
        payload.clear();
        record.write_payload(&mut payload);
        producer.send(record.key().as_bytes(), &payload).unwrap();
    }
    assert_eq!(
        producer.flush(Duration::from_secs(60)).unwrap().delivered as usize,
        count
    );
}

#[test]
fn tansu_topic_into_postgres_equals_the_oracle() {
    let tansu = Tansu::start();
    tansu.create_topic("user-events", 4);
    produce_shop(&tansu.bootstrap, 0..EVENTS);
    let db = TestDatabase::create("e2e_tansu");
    let mut run = run_kafka(&tansu.bootstrap, &db);
    finish_and_check(&mut run, &db, &tansu.bootstrap, 4, "tansu");
}

#[test]
fn embedded_broker_topic_into_postgres_equals_the_oracle() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("user-events", 8).unwrap();
    produce_shop(broker.bootstrap_servers(), 0..EVENTS);
    assert_eq!(
        broker
            .check_retention("user-events", EVENTS as u64)
            .unwrap(),
        0
    );
    let db = TestDatabase::create("e2e_embedded");
    let mut run = run_kafka(broker.bootstrap_servers(), &db);
    finish_and_check(
        &mut run,
        &db,
        broker.bootstrap_servers(),
        8,
        "embedded broker",
    );
}

#[test]
fn a_kafka_run_killed_midway_resumes_with_its_open_state() {
    let tansu = Tansu::start();
    tansu.create_topic("user-events", 4);
    let db = TestDatabase::create("e2e_restart");
    // First half, consumed, then SIGKILL: open windows and sessions exist only in memory.
    produce_shop(&tansu.bootstrap, 0..EVENTS / 2);
    let mut run = run_kafka(&tansu.bootstrap, &db);
    wait_until(
        Duration::from_secs(120),
        "the first half is committed",
        || committed_offsets(&db) == EVENTS / 2,
    );
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(
        db.query("SELECT count(*) FROM session_features WHERE closed"),
        "0",
        "sessions were open at the kill"
    );
    // Second half, consumed by a new process that must rebuild the open state first.
    produce_shop(&tansu.bootstrap, EVENTS / 2..EVENTS);
    let mut run = run_kafka(&tansu.bootstrap, &db);
    // The oracle accounts for every dead letter: each malformed and late record exactly once.
    finish_and_check(&mut run, &db, &tansu.bootstrap, 4, "after a restart");
}

#[test]
fn two_processes_of_two_workers_equal_one_process_of_one_worker() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    produce_file(&input, 40_000, 5);
    let input = input.to_str().unwrap();

    let single = TestDatabase::create("single");
    run_ok(&[
        "run",
        "--input",
        input,
        "--database-url",
        &single.url,
        "--workers",
        "1",
    ]);

    let cluster = TestDatabase::create("cluster");
    let hostfile = dir.path().join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let hostfile = hostfile.to_str().unwrap();
    let process = |index: &str| {
        spawn(&[
            "run",
            "--input",
            input,
            "--database-url",
            &cluster.url,
            "--workers",
            "2",
            "--processes",
            "2",
            "--process",
            index,
            "--hostfile",
            hostfile,
        ])
    };
    let mut cluster_processes = [process("0"), process("1")];
    // A process whose peer died before connecting waits for it forever (timely retries).
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    for index in 0..2 {
        let status = loop {
            if let Some(status) = cluster_processes[index].try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                cluster_processes.iter_mut().for_each(|c| drop(c.kill()));
                panic!("the cluster did not finish within 3 minutes");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "cluster process {index} failed: {status}");
    }
    let (one, two) = (read_tables(&single.url), read_tables(&cluster.url));
    assert_eq!(one.trends, two.trends);
    assert_eq!(one.funnel, two.funnel);
    assert_eq!(one.sessions, two.sessions);
    let mut late_one: Vec<_> = one
        .dead_letters
        .iter()
        .map(|d| (&d.partition, d.offset, &d.rejection.kind))
        .collect();
    let mut late_two: Vec<_> = two
        .dead_letters
        .iter()
        .map(|d| (&d.partition, d.offset, &d.rejection.kind))
        .collect();
    late_one.sort();
    late_two.sort();
    assert_eq!(late_one, late_two);
    let oracle = recompute_file(
        &FileSplits::plan(std::path::Path::new(input), 16).unwrap(),
        &DataflowConfig::default(),
    )
    .unwrap();
    assert_matches(&two, &oracle, "two processes");
}
