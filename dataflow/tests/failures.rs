//! Source failures stop or heal the whole pipeline, never one worker of it.
//!
//! Errors are injected into the fetches of librdkafka's mock cluster: a refusal that will
//! not pass (topic authorization) must end the run promptly with that error, every worker
//! stopped; errors that pass (a leader moving, a timeout) are retried and the run's tables
//! end equal to the oracle.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickflow_dataflow::oracle::{recompute_streaming, OracleTables};
use clickflow_dataflow::runtime::run::{run, taking, EpochSink, InputSpec, RunConfig, RunError};
use clickflow_dataflow::runtime::watermark::NO_WATERMARK;
use clickflow_dataflow::{PipelineMetrics, Tables};
use clickflow_sources::kafka::EventProducer;
use clickflow_sources::shop::{Shop, ShopConfig};
use clickflow_sources::Event;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const TOPIC: &str = "user-events";
const PARTITIONS: i32 = 4;
const EVENTS: usize = 2_000;

/// A mock cluster holding `EVENTS` shop events, and the events of each partition in order.
fn cluster_with_events() -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Vec<Vec<(i64, Event)>>,
) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    // Seven minutes of event time: the recommender counts the windows the watermark closes.
    let shop = Shop::new(ShopConfig {
        seed: 77,
        users: 200,
        events_per_second: 5.0,
        ..ShopConfig::default()
    });
    let mut producer = EventProducer::new(&cluster.bootstrap_servers(), TOPIC).unwrap();
    let records = shop.take_records(EVENTS);
    let mut payload = Vec::new();
    for record in &records {
        payload.clear();
        record.write_payload(&mut payload);
        producer.send(record.key().as_bytes(), &payload).unwrap();
    }
    assert_eq!(
        producer.flush(Duration::from_secs(30)).unwrap().delivered as usize,
        EVENTS
    );
    let contents = clickflow_sources::kafka::read_topic(
        &cluster.bootstrap_servers(),
        TOPIC,
        PARTITIONS,
        EVENTS,
        Duration::from_secs(60),
    )
    .unwrap();
    let events = contents
        .into_iter()
        .map(|messages| {
            messages
                .into_iter()
                .filter_map(|(offset, m)| Some((offset, m.ok()?)))
                .collect()
        })
        .collect();
    (cluster, events)
}

/// A sink applying every epoch to `tables`, and keeping the pipeline watermark of the last.
fn applying(tables: Arc<Mutex<Tables>>, watermark: Arc<AtomicI64>) -> EpochSink {
    taking(move |output| {
        tables.lock().unwrap().apply(&output).unwrap();
        watermark.store(output.watermark, Ordering::Relaxed);
    })
}

/// What a stream read up to `watermark` holds: every event counted, no session closed (the
/// stream never ends), and the recommender's items of the windows it closed.
fn oracle_of_stream(events: &[Vec<(i64, Event)>], watermark: &AtomicI64) -> OracleTables {
    let mut oracle = recompute_streaming(
        events,
        &Default::default(),
        watermark.load(Ordering::Relaxed),
    );
    for session in oracle.tables.sessions.values_mut() {
        session.closed = false;
    }
    assert!(
        !oracle.tables.recommendations.is_empty(),
        "the watermark closed windows with recommendations in them"
    );
    oracle
}

fn input(cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>) -> InputSpec {
    InputSpec::Kafka {
        brokers: cluster.bootstrap_servers(),
        topic: TOPIC.into(),
        partitions: PARTITIONS,
    }
}

#[test]
fn a_fatal_source_error_ends_the_whole_run_promptly_with_that_error() {
    let (cluster, _) = cluster_with_events();
    let refusals = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1_000];
    cluster.request_errors(RDKafkaApiKey::Fetch, &refusals);
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let result = run(
        timely::Config::process(2),
        input(&cluster),
        RunConfig::default(),
        None,
        stop,
        Arc::new(PipelineMetrics::default()),
    );
    let error = match result {
        Err(RunError::Source(error)) => error,
        other => panic!("expected the source's error, got {other:?}"),
    };
    assert!(!error.is_retriable(), "{error}");
    assert!(
        error.to_string().to_lowercase().contains("authoriz"),
        "the error names the cause: {error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "every worker stopped promptly (took {:?})",
        started.elapsed()
    );
}

#[test]
fn retriable_fetch_errors_are_retried_and_the_run_ends_equal_to_the_oracle() {
    let (cluster, events) = cluster_with_events();
    let mut errors = Vec::new();
    for _ in 0..10 {
        errors.push(RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
        errors.push(RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
        errors.push(RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT);
    }
    cluster.request_errors(RDKafkaApiKey::Fetch, &errors);
    let tables = Arc::new(Mutex::new(Tables::default()));
    let watermark = Arc::new(AtomicI64::new(NO_WATERMARK));
    let stop = Arc::new(AtomicBool::new(false));
    let sink = applying(tables.clone(), watermark.clone());
    let watcher = {
        let (tables, stop) = (tables.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                let offsets: i64 = tables.lock().unwrap().offsets.values().sum();
                if offsets as usize >= EVENTS {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let stats = run(
        timely::Config::process(2),
        input(&cluster),
        RunConfig::default(),
        Some(sink),
        stop,
        Arc::new(PipelineMetrics::default()),
    )
    .unwrap();
    watcher.join().unwrap();
    let tables = tables.lock().unwrap().clone();
    let offsets: i64 = tables.offsets.values().sum();
    assert_eq!(
        offsets as usize, EVENTS,
        "every message was read ({stats:?})"
    );
    let differences = oracle_of_stream(&events, &watermark).differences(&tables);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn an_unreachable_broker_is_retried_counted_and_nothing_is_lost() {
    let (cluster, events) = cluster_with_events();
    cluster.broker_down(1).unwrap();
    let tables = Arc::new(Mutex::new(Tables::default()));
    let watermark = Arc::new(AtomicI64::new(NO_WATERMARK));
    let stop = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(PipelineMetrics::default());
    let running = {
        let (sink, stop, metrics, input) = (
            applying(tables.clone(), watermark.clone()),
            stop.clone(),
            metrics.clone(),
            input(&cluster),
        );
        std::thread::spawn(move || {
            run(
                timely::Config::process(2),
                input,
                RunConfig::default(),
                Some(sink),
                stop,
                metrics,
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while metrics.source_retries.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no retried error was counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        tables.lock().unwrap().offsets.values().sum::<i64>(),
        0,
        "nothing is read while the broker is down"
    );
    cluster.broker_up(1).unwrap();
    while tables.lock().unwrap().offsets.values().sum::<i64>() < EVENTS as i64 {
        assert!(Instant::now() < deadline, "the run did not catch up");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    running.join().unwrap().unwrap();
    let tables = tables.lock().unwrap().clone();
    let differences = oracle_of_stream(&events, &watermark).differences(&tables);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
