//! How a worker cuts a file into epochs.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickflow_dataflow::runtime::run::{run, taking, InputSpec, RunConfig};
use clickflow_dataflow::{DataflowConfig, EpochConfig};
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Shop, ShopConfig};
use common::*;

/// Runs 10,000 lines of one split on one worker, an epoch cut at `max_epoch_messages` (and
/// never by time), and returns, for each epoch that changed a row, whether it reached the
/// end of the input.
fn epochs_reaching_the_end(splits: &FileSplits, max_epoch_messages: usize) -> Vec<bool> {
    let epochs = Arc::new(Mutex::new(Vec::new()));
    let seen = epochs.clone();
    run(
        timely::Config::process(1),
        InputSpec::File(splits.clone()),
        RunConfig {
            dataflow: DataflowConfig::default(),
            epochs: EpochConfig {
                epoch: Duration::from_millis(1),
                catch_up_epoch: Duration::from_secs(600),
                poll_batch: 500,
                max_epoch_messages,
                ..EpochConfig::default()
            },
            ..RunConfig::default()
        },
        Some(taking(move |output| {
            if output.row_changes() > 0 {
                seen.lock().unwrap().push(output.input_ended);
            }
        })),
        Arc::new(AtomicBool::new(false)),
        Default::default(),
    )
    .unwrap();
    let epochs = epochs.lock().unwrap().clone();
    epochs
}

#[test]
fn a_full_epoch_reads_on_to_the_end_when_little_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(
        &path,
        &Shop::new(ShopConfig {
            users: 300,
            ..ShopConfig::default()
        })
        .take_records(10_000),
    );
    let splits = FileSplits::plan(&path, 1).unwrap();

    // 1,000 lines are left when the epoch is full: they are read into it, which reaches the
    // end of the input; the next epoch only closes what is open.
    let read_on = epochs_reaching_the_end(&splits, 9_000);
    assert_eq!(
        read_on.first(),
        Some(&true),
        "the first epoch reached the end: {read_on:?}"
    );

    // 4,000 lines left are more than a quarter of an epoch: they get an epoch of their own.
    let cut = epochs_reaching_the_end(&splits, 6_000);
    assert_eq!(
        &cut[..2],
        &[false, true],
        "a first epoch of 6,000 lines, then the rest: {cut:?}"
    );
}

/// A topic filled before the pipeline starts is read in one epoch on every worker, however
/// short the epochs: the consumers' first fetches after the replay hold come a few dozen
/// messages at a time, and an epoch judged by them alone (1 ms here, 50 ms by default)
/// closed with part of the backlog and left the rest to the next, so every session was
/// written twice, open and then closed.
#[test]
fn a_topic_filled_before_the_start_is_read_in_one_epoch() {
    const EVENTS: usize = 40_000;
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("user-events", 4, 1).unwrap();
    let mut producer =
        clickflow_sources::kafka::EventProducer::new(&cluster.bootstrap_servers(), "user-events")
            .unwrap();
    let mut payload = Vec::new();
    for record in Shop::new(ShopConfig::default()).take_records(EVENTS) {
        payload.clear();
        record.write_payload(&mut payload);
        producer.send(record.key().as_bytes(), &payload).unwrap();
    }
    let flushed = producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(flushed.delivered as usize, EVENTS);

    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, stopper) = (arrivals.clone(), stop.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    run(
        timely::Config::process(2),
        InputSpec::Kafka {
            brokers: cluster.bootstrap_servers(),
            topic: "user-events".into(),
            partitions: 4,
        },
        RunConfig {
            epochs: EpochConfig {
                epoch: Duration::from_millis(1),
                ..EpochConfig::default()
            },
            ..RunConfig::default()
        },
        Some(taking(move |output| {
            let mut seen = seen.lock().unwrap();
            if output.arrived > 0 {
                seen.push(output.arrived);
            }
            let read: u64 = seen.iter().sum();
            if read as usize >= EVENTS || std::time::Instant::now() > deadline {
                stopper.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })),
        stop,
        Default::default(),
    )
    .unwrap();
    let arrivals = arrivals.lock().unwrap().clone();
    assert_eq!(
        arrivals,
        vec![EVENTS as u64],
        "every event arrived in one epoch: {arrivals:?}"
    );
}
