//! Crash safety: `clickflow run` over a million events is killed with SIGKILL at several
//! random moments and restarted each time; the final tables equal an uninterrupted run's,
//! with no duplicate dead letters.

mod common;

use std::time::{Duration, Instant};

use clickflow_testkit::TestDatabase;
use common::*;
use rand::{Rng, SeedableRng};

const EVENTS: usize = 1_000_000;

#[test]
fn killing_and_restarting_a_run_changes_nothing_in_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    produce_file(&input, EVENTS, 77);
    let input = input.to_str().unwrap();
    let args = |url: &str| -> Vec<String> {
        [
            "run",
            "--input",
            input,
            "--database-url",
            url,
            "--workers",
            "2",
            "--epoch-ms",
            "50",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    let reference = TestDatabase::create("crash_reference");
    let started = Instant::now();
    let reference_args = args(&reference.url);
    run_ok(
        &reference_args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let uninterrupted = started.elapsed();

    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261126);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let crashed = TestDatabase::create("crash_killed");
    let crashed_args = args(&crashed.url);
    let crashed_args: Vec<&str> = crashed_args.iter().map(String::as_str).collect();
    let mut kills = 0;
    for _ in 0..4 {
        let mut child = spawn(&crashed_args);
        // Each run lives a random share of an uninterrupted run's time: four of them cannot
        // finish the input, so every kill lands mid-run (restarts replay, so they are slower).
        let deadline = Instant::now()
            + uninterrupted
                .mul_f64(rng.gen_range(0.05..0.2))
                .max(Duration::from_millis(300));
        let mut exited = None;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match exited {
            Some(status) => {
                assert!(status.success(), "a restarted run failed: {status}");
                break;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    let mut last = spawn(&crashed_args);
    assert!(last.wait().unwrap().success(), "the final run completes");
    eprintln!("{kills} kills (seed {seed}, uninterrupted run {uninterrupted:?})");
    assert!(kills >= 3, "the test must actually crash the pipeline");

    let (expected, actual) = (read_tables(&reference.url), read_tables(&crashed.url));
    assert_eq!(actual.trends, expected.trends, "event_trends");
    assert_eq!(actual.funnel, expected.funnel, "funnel_summary");
    assert_eq!(actual.sessions, expected.sessions, "session_features");
    assert_eq!(actual.offsets, expected.offsets, "clickflow_offsets");
    let letters = |tables: &clickflow_dataflow::Tables| {
        let mut all: Vec<_> = tables
            .dead_letters
            .iter()
            .map(|d| (d.partition.clone(), d.offset, d.rejection.clone()))
            .collect();
        all.sort();
        all
    };
    assert_eq!(
        letters(&actual),
        letters(&expected),
        "dead_letters: same set, no duplicates"
    );
}
