//! The dataflow's final tables equal a sequential recomputation, on 1, 2 and 4 workers, for
//! shuffled arrival orders, with events late within and beyond the allowed lateness.

mod common;

use clickflow_dataflow::window::WindowSize;
use clickflow_dataflow::DataflowConfig;
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Shop, ShopConfig, ShopRecord};
use clickflow_sources::RejectKind;
use common::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Shop records with bounded disorder: shuffled within blocks of `block` records.
fn shuffled_shop(seed: u64, count: usize, block: usize) -> Vec<ShopRecord> {
    let shop = Shop::new(ShopConfig {
        seed,
        users: 300,
        products: 50,
        events_per_second: 20.0,
        late_fraction: 0.05,
        max_lateness_ms: 90_000,
        malformed_fraction: 0.01,
        ..ShopConfig::default()
    });
    let mut records = shop.take_records(count);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xdead_beef);
    for chunk in records.chunks_mut(block.max(1)) {
        chunk.shuffle(&mut rng);
    }
    records
}

#[test]
fn final_tables_equal_the_oracle_for_any_worker_count_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let dataflow = DataflowConfig {
        window: WindowSize::from_millis(60_000),
        allowed_lateness_ms: 30_000,
        session_gap_ms: 5 * 60_000,
        ..DataflowConfig::default()
    };
    for (case, (seed, block, splits)) in [
        (1u64, 1usize, 1usize),
        (2, 25, 3),
        (3, 200, 4),
        (4, 2000, 8),
    ]
    .into_iter()
    .enumerate()
    {
        let records = shuffled_shop(seed, 3000, block);
        let path = dir.path().join(format!("case{case}.jsonl"));
        write_lines(&path, &records);
        let plan = FileSplits::plan(&path, splits).unwrap();
        let oracle = oracle_for(&plan, &dataflow);
        assert!(
            !oracle.late.is_empty() || block == 1,
            "case {case} should exercise late events"
        );
        for workers in [1, 2, 4] {
            let tables = run_file(&plan, workers, dataflow, stress_epochs());
            let context =
                format!("seed {seed}, shuffle block {block}, {splits} splits, {workers} workers");
            assert_matches_oracle(&tables, &oracle, &context);
            let malformed = tables
                .dead_letters
                .iter()
                .filter(|d| d.rejection.kind != RejectKind::Late)
                .count();
            let expected = records
                .iter()
                .filter(|r| matches!(r, ShopRecord::Malformed { .. }))
                .count();
            assert_eq!(
                malformed, expected,
                "every malformed payload is dead-lettered ({context})"
            );
        }
    }
}

#[test]
fn windows_within_lateness_are_updated_and_beyond_it_are_not() {
    // Sanity of the test data itself: both kinds of out-of-order event occur.
    let dir = tempfile::tempdir().unwrap();
    let dataflow = DataflowConfig::default();
    let records = shuffled_shop(9, 4000, 500);
    let path = dir.path().join("late.jsonl");
    write_lines(&path, &records);
    let plan = FileSplits::plan(&path, 2).unwrap();
    let oracle = oracle_for(&plan, &dataflow);
    let total: i64 = oracle.tables.trends.values().map(|r| r.count).sum();
    let valid = records
        .iter()
        .filter(|r| matches!(r, ShopRecord::Event(_)))
        .count() as i64;
    assert!(
        !oracle.late.is_empty(),
        "some events must be beyond the allowed lateness"
    );
    assert_eq!(
        total + oracle.late.len() as i64,
        valid,
        "every valid event is counted or late"
    );
    let tables = run_file(&plan, 2, dataflow, stress_epochs());
    assert_matches_oracle(&tables, &oracle, "late mix");
}

/// Regression: the first epoch of every start, which reads nothing while the replay hold is
/// on, was stretched to a backlog epoch's length (a file is a backlog), so every run and
/// restart stalled that long before reading. With backlog epochs of two minutes, a small
/// file must still be read, and equal the oracle, long before one has passed.
#[test]
fn a_start_does_not_wait_out_a_backlog_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    write_lines(&path, &shuffled_shop(5, 500, 1));
    let plan = FileSplits::plan(&path, 2).unwrap();
    let dataflow = DataflowConfig::default();
    let backlog_epoch = std::time::Duration::from_secs(120);
    let epochs = clickflow_dataflow::EpochConfig {
        catch_up_epoch: backlog_epoch,
        ..clickflow_dataflow::EpochConfig::default()
    };
    let started = std::time::Instant::now();
    let tables = run_file(&plan, 2, dataflow, epochs);
    let took = started.elapsed();
    assert!(
        took < backlog_epoch / 2,
        "the run waited {took:?}, as long as a backlog epoch"
    );
    assert_matches_oracle(
        &tables,
        &oracle_for(&plan, &dataflow),
        "long backlog epochs",
    );
}
