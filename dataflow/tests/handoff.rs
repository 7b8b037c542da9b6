//! The hand-off of closed epochs never blocks a worker: a consumer that refuses epochs
//! (its queue full) gets each of them again later, in order, none lost, and the sources
//! pause meanwhile instead of buffering without bound.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickflow_dataflow::runtime::output::Handoff;
use clickflow_dataflow::runtime::run::{run, Delivery, InputSpec, RunConfig};
use clickflow_dataflow::{DataflowConfig, EpochConfig, Tables};
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Shop, ShopConfig};
use common::*;

#[test]
fn refused_epochs_are_offered_again_in_order_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(
        &path,
        &Shop::new(ShopConfig {
            users: 500,
            events_per_second: 50.0,
            late_fraction: 0.02,
            ..ShopConfig::default()
        })
        .take_records(20_000),
    );
    let splits = FileSplits::plan(&path, 4).unwrap();
    let tables = Arc::new(Mutex::new(Tables::default()));
    let (sink, offers, refusals) = (
        tables.clone(),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let (counted_offers, counted_refusals) = (offers.clone(), refusals.clone());
    let mut last_epoch = None;
    // Refuses two offers out of three: a consumer that is mostly behind.
    let deliver = Box::new(move |output: clickflow_dataflow::EpochOutput| {
        let n = counted_offers.fetch_add(1, Ordering::Relaxed);
        if n % 3 != 0 {
            counted_refusals.fetch_add(1, Ordering::Relaxed);
            return Handoff::Full(Box::new(output));
        }
        assert!(
            last_epoch.is_none_or(|last| last < output.epoch),
            "epochs arrive in order"
        );
        last_epoch = Some(output.epoch);
        sink.lock().unwrap().apply(&output).unwrap();
        Handoff::Taken
    });
    run(
        timely::Config::process(2),
        InputSpec::File(splits.clone()),
        RunConfig {
            dataflow: DataflowConfig::default(),
            // Epochs of 200 lines a worker, never cut by time: a hundred of them on every
            // run. Epochs of 1 ms read more lines each on a fast machine, and a run once saw
            // too few epochs to be refused more than ten times.
            epochs: EpochConfig {
                epoch: Duration::from_secs(600),
                catch_up_epoch: Duration::from_secs(600),
                max_epoch_messages: 200,
                poll_batch: 7,
                ..EpochConfig::default()
            },
            ..RunConfig::default()
        },
        Delivery::Gathered(deliver),
        Arc::new(AtomicBool::new(false)),
        Default::default(),
    )
    .unwrap();
    assert!(
        refusals.load(Ordering::Relaxed) > 10,
        "the consumer refused epochs"
    );
    let tables = tables.lock().unwrap().clone();
    assert_matches_oracle(
        &tables,
        &oracle_for(&splits, &DataflowConfig::default()),
        "refusing consumer",
    );
}
