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
