//! The sink that writes from every worker: each worker's writer prepares its part of an
//! epoch, the coordinator commits them with the offsets; what a crash leaves prepared is
//! settled at the next start.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clickflow_dataflow::oracle::recompute_file;
use clickflow_dataflow::rows::SessionRow;
use clickflow_dataflow::runtime::output::Handoff;
use clickflow_dataflow::runtime::run::RunConfig;
use clickflow_dataflow::runtime::watermark::END_OF_INPUT;
use clickflow_dataflow::{DataflowConfig, EpochOutput};
use clickflow_sinks::postgres::two_phase::{recover, spawn_coordinator, spawn_writer, Recovered};
use clickflow_sinks::postgres::{
    prepare, spawn_sink, DatabaseUrl, SinkConfig, SinkWriters, WAKEUP_CHANNEL,
};
use clickflow_sources::file::FileSplits;
use clickflow_testkit::TestDatabase;
use common::*;

/// Four writers and one writer write the same tables, equal to the oracle; the four
/// writers are all through the end, and nothing is left prepared or decided.
#[test]
fn four_writers_and_one_writer_commit_the_same_exact_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    shop_file(&path, 23, 8_000);
    let splits = FileSplits::plan(&path, 8).unwrap();
    let oracle = recompute_file(&splits, &DataflowConfig::default()).unwrap();
    let config = || RunConfig {
        epochs: short_epochs(),
        ..RunConfig::default()
    };
    let mut results = Vec::new();
    for (writers, workers) in [(SinkWriters::PerWorker, 4), (SinkWriters::One, 4)] {
        let db = TestDatabase::create("writers");
        let url = DatabaseUrl::parse(&db.url).unwrap();
        run_file_with(&splits, workers, &url, config(), writers).unwrap();
        let tables = read_tables(&db.url);
        let differences = oracle.differences(&tables);
        assert!(
            differences.is_empty(),
            "{writers:?}: {}",
            differences.join("\n")
        );
        let writer_rows = db.query(
            "SELECT count(*) || ' ' || count(*) FILTER (WHERE prepared_through = 9223372036854775807)
             FROM clickflow_writers",
        );
        let expected = match writers {
            SinkWriters::PerWorker => "4 4",
            _ => "0 0",
        };
        assert_eq!(
            writer_rows, expected,
            "{writers:?}: writers through the end"
        );
        assert_eq!(
            db.query(
                "SELECT (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database())
                      + (SELECT count(*) FROM clickflow_commit_log)"
            ),
            "0",
            "{writers:?}: nothing left prepared or decided"
        );
        results.push(tables);
    }
    assert_eq!(results[0].trends, results[1].trends);
    assert_eq!(results[0].sessions, results[1].sessions);
}

/// The epochs after the end of a file only close what is open: a sink commits them with
/// the epoch that read the end, so that each session is written once, closed (before, a
/// backfill's last transaction wrote every open session, and the next wrote each again,
/// closed). Both sinks get an epoch that ends the input with an open session, then, after
/// a pause in which either would have committed it, the epoch that closes it; a trigger
/// counts every update and delete of `session_features`.
#[test]
fn the_epochs_after_the_end_of_the_input_are_committed_with_it() {
    let session = |closed: bool| SessionRow {
        session_id: "s1".into(),
        user_id: "u1".into(),
        num_views: 3,
        num_cart_adds: 1,
        num_purchases: 0,
        session_start: 1_751_900_000_000,
        last_event: 1_751_900_060_000,
        num_products: 2,
        cart_value_cents: 1_250,
        closed,
    };
    let part = |epoch: u64, sessions: Vec<(SessionRow, isize)>| EpochOutput {
        epoch,
        watermark: END_OF_INPUT,
        input_ended: true,
        sessions,
        ..EpochOutput::default()
    };
    let read_the_end = || part(1, vec![(session(false), 1)]);
    let closed_it = || part(2, vec![(session(false), -1), (session(true), 1)]);
    let pause = || std::thread::sleep(Duration::from_millis(1_500));
    for writers in [SinkWriters::PerWorker, SinkWriters::One] {
        let db = TestDatabase::create("after_the_end");
        let url = DatabaseUrl::parse(&db.url).unwrap();
        block_on(prepare(&url)).unwrap();
        db.query(
            "CREATE TABLE test_rewrites (op text);
             CREATE FUNCTION test_rewritten() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO test_rewrites VALUES (TG_OP); RETURN NULL; END $$;
             CREATE TRIGGER test_sessions AFTER UPDATE OR DELETE ON session_features
                 FOR EACH ROW EXECUTE FUNCTION test_rewritten();",
        );
        let config = SinkConfig::new(url.clone());
        let metrics = match writers {
            SinkWriters::PerWorker => {
                let (stopped, abandon) = (Arc::default(), Arc::new(AtomicBool::new(false)));
                let coordinator = spawn_coordinator(config.clone(), None, abandon.clone());
                let metrics = coordinator.metrics.clone();
                let (mut rows, writer) =
                    spawn_writer(config, 0, 1, metrics.clone(), None, stopped, abandon);
                // The writer gets the rows, the coordinator the gathered part (progress).
                let gathered = |epoch: u64| EpochOutput {
                    sessions: Vec::new(),
                    ..part(epoch, Vec::new())
                };
                assert!(matches!(rows(read_the_end()), Handoff::Taken));
                assert!(coordinator.send_blocking(gathered(1)));
                pause();
                assert!(matches!(rows(closed_it()), Handoff::Taken));
                assert!(coordinator.send_blocking(gathered(2)));
                // The coordinator first, as the pipeline does: past the end of the input
                // it sets the writer's last cut only once its own input is closed.
                drop(rows);
                coordinator.finish().unwrap();
                writer.finish().unwrap();
                metrics
            }
            _ => {
                let sink = spawn_sink(config, None);
                let metrics = sink.metrics.clone();
                assert!(sink.send_blocking(read_the_end()));
                pause();
                assert!(sink.send_blocking(closed_it()));
                sink.finish().unwrap();
                metrics
            }
        };
        assert_eq!(
            db.query("SELECT closed::text FROM session_features"),
            "true",
            "{writers:?}"
        );
        assert_eq!(
            db.query("SELECT count(*) FROM test_rewrites"),
            "0",
            "{writers:?}: the session was written twice"
        );
        assert_eq!(
            metrics.epochs.load(Ordering::Relaxed),
            1,
            "{writers:?}: one transaction"
        );
    }
}

/// The writers and the coordinator announce their progress on the sink's channel, each
/// over its own connection: without the announcements the exactly-once protocol stays
/// correct and only waits the fallback recheck each time, so the other tests would not see
/// them go. A listener counts the backends that announced for the pipeline's schema: the
/// coordinator and every writer.
#[test]
fn the_writers_and_the_coordinator_announce_their_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    shop_file(&path, 29, 4_000);
    let splits = FileSplits::plan(&path, 4).unwrap();
    let db = TestDatabase::create("announce");
    let url = DatabaseUrl::parse(&db.url).unwrap();
    let listener = Listener::start(&db.url);
    let config = RunConfig {
        epochs: short_epochs(),
        ..RunConfig::default()
    };
    let workers = 3;
    run_file_with(&splits, workers, &url, config, SinkWriters::PerWorker).unwrap();
    let heard = listener.stop();
    let ours: Vec<&(i32, String)> = heard
        .iter()
        .filter(|(_, payload)| payload == url.schema())
        .collect();
    let backends: BTreeSet<i32> = ours.iter().map(|(pid, _)| *pid).collect();
    assert!(
        backends.len() > workers,
        "{} announcements from {} backends: every writer's and the coordinator's expected",
        ours.len(),
        backends.len()
    );
}

/// Listens on the sink's channel from a thread of its own, collecting `(backend pid,
/// payload)` of each notification until stopped.
struct Listener {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<Vec<(i32, String)>>,
}

impl Listener {
    fn start(url: &str) -> Listener {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready, listening) = std::sync::mpsc::channel();
        let url = url.to_string();
        let thread = std::thread::spawn(move || {
            block_on(async move {
                let (client, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(async move {
                    while let Some(message) =
                        std::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        if let Ok(tokio_postgres::AsyncMessage::Notification(n)) = message {
                            let _ = heard.send((n.process_id(), n.payload().to_string()));
                        }
                    }
                });
                client
                    .batch_execute(&format!("LISTEN {WAKEUP_CHANNEL}"))
                    .await
                    .unwrap();
                ready.send(()).unwrap();
                let _ = stopped.await;
                // A round trip: every notification sent before it has arrived.
                client.batch_execute("SELECT 1").await.unwrap();
                let mut all = Vec::new();
                while let Ok(notification) = hearing.try_recv() {
                    all.push(notification);
                }
                all
            })
        });
        listening.recv().unwrap();
        Listener { stop, thread }
    }

    fn stop(self) -> Vec<(i32, String)> {
        self.stop.send(()).unwrap();
        self.thread.join().unwrap()
    }
}

/// What a crash leaves: a part the coordinator had decided to commit (listed in the log) is
/// committed at the next start, a part it had not decided is rolled back.
#[test]
fn a_start_commits_the_decided_parts_and_rolls_back_the_others() {
    let db = TestDatabase::create("recover");
    let url = DatabaseUrl::parse(&db.url).unwrap();
    block_on(prepare(&url)).unwrap();
    let oid = db.query("SELECT oid FROM pg_database WHERE datname = current_database()");
    let part = |writer: u32, epoch: u32, count: u32| {
        let gid = format!("clickflow:{oid}:public:{writer}:{epoch}");
        db.query(&format!(
            "BEGIN;
             INSERT INTO event_trends (window_start, window_end, event_type, count, revenue, batch_time)
             VALUES (timestamptz 'epoch' + interval '{epoch} minutes',
                     timestamptz 'epoch' + interval '{} minutes', 'click', {count}, 0, now());
             PREPARE TRANSACTION '{gid}';",
            epoch + 1
        ));
        gid
    };
    let decided = part(0, 7, 70);
    part(1, 8, 80);
    db.query(&format!(
        "INSERT INTO clickflow_commit_log (gid) VALUES ('{decided}')"
    ));
    db.query("INSERT INTO clickflow_writers (writer, writers, prepared_through) VALUES (0, 2, 7)");
    // Another database's prepared transaction with the same schema is not this pipeline's.
    let other = TestDatabase::create("recover_other");
    other.query(&format!(
        "BEGIN; CREATE TABLE t (x int); PREPARE TRANSACTION 'clickflow:{}:public:0:9';",
        other.query("SELECT oid FROM pg_database WHERE datname = current_database()")
    ));

    let recovered = block_on(async { recover(&url.connect().await?, url.schema()).await }).unwrap();
    assert_eq!(
        recovered,
        Recovered {
            committed: 1,
            rolled_back: 1
        }
    );
    assert_eq!(
        db.query("SELECT string_agg(count::text, ',') FROM event_trends"),
        "70",
        "the decided part is committed, the other rolled back"
    );
    assert_eq!(
        db.query(
            "SELECT (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database())
                  + (SELECT count(*) FROM clickflow_commit_log)
                  + (SELECT count(*) FROM clickflow_writers)"
        ),
        "0"
    );
    assert_eq!(
        other.query("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()"),
        "1",
        "another database's parts are left alone"
    );
}

/// A pipeline whose source fails for good while every worker has a writer of its own ends
/// with the source's error, promptly (the coordinator and the writers give up instead of
/// waiting for each other), and what it left prepared is rolled back at the next start.
#[test]
fn a_fatal_source_error_stops_the_writers_and_the_coordinator_with_that_error() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("user-events", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut producer =
        clickflow_sources::kafka::EventProducer::new(&brokers, "user-events").unwrap();
    let shop = clickflow_sources::shop::Shop::new(clickflow_sources::shop::ShopConfig {
        seed: 5,
        users: 100,
        ..Default::default()
    });
    let mut payload = Vec::new();
    for record in shop.take_records(500) {
        payload.clear();
        record.write_payload(&mut payload);
        producer.send(record.key().as_bytes(), &payload).unwrap();
    }
    producer.flush(std::time::Duration::from_secs(30)).unwrap();
    let refusals = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1_000];
    cluster.request_errors(RDKafkaApiKey::Fetch, &refusals);

    let db = TestDatabase::create("writers_fail");
    let url = DatabaseUrl::parse(&db.url).unwrap();
    let mut sink = clickflow_sinks::postgres::SinkConfig::new(url.clone());
    sink.writers = SinkWriters::PerWorker;
    let spec = clickflow_sinks::postgres::PipelineSpec {
        timely: timely::Config::process(2),
        input: clickflow_dataflow::runtime::run::InputSpec::Kafka {
            brokers,
            topic: "user-events".into(),
            partitions: 2,
        },
        config: RunConfig::default(),
        sink,
        writes: true,
        observe: None,
    };
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let outcome =
            clickflow_sinks::postgres::run_into_postgres(spec, stop, Default::default(), |_| {});
        let _ = done.send(outcome.map(drop).map_err(|e| e.to_string()));
    });
    let error = result
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the pipeline stopped within a minute")
        .expect_err("the source's error ends the run");
    assert!(
        error.to_lowercase().contains("authoriz"),
        "the error names the cause: {error}"
    );
    block_on(async { recover(&url.connect().await?, url.schema()).await }).unwrap();
    assert_eq!(
        db.query("SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()"),
        "0"
    );
}
