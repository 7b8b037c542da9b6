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
    // Short backlog epochs: kills land between many commits, not before the first. A
    // session gap far shorter than the conversion window: closed sessions stay held until
    // their funnel window is sealed, reaching back further than any open session, so
    // kills land while some are and a restart must replay them. Without the
    // recommender, whose horizon would replay further back than the sessions need (the
    // two-process test below keeps it), the sessions' own retention bounds the replay.
    let args = |url: &str| {
        run_args(
            input,
            url,
            &[
                "--epoch-ms",
                "50",
                "--catch-up-epoch-ms",
                "400",
                "--session-gap",
                "2m",
                "--funnel-window",
                "30m",
                "--no-recommendations",
            ],
        )
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
    assert!(
        !actual.conversion.is_empty(),
        "sessions went through the funnel"
    );
    assert_same_results(&actual, &expected);
    assert_eq!(actual.offsets, expected.offsets, "clickflow_offsets");
}

/// The sink that writes from every worker, across processes: a cluster of two processes of
/// two workers (four writers, each preparing its part of every epoch; the coordinator on
/// process 0) is SIGKILLed three times, one process at a random moment and the other a
/// random moment later (its writers may be mid-part), then runs to the end. The tables
/// equal an uninterrupted single-worker run's, with no duplicate dead letters and nothing
/// left prepared.
#[test]
fn killing_a_two_process_cluster_at_random_moments_changes_nothing_in_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    produce_file(&input, 600_000, 78);
    let input = input.to_str().unwrap();
    let reference = TestDatabase::create("cluster_reference");
    let started = Instant::now();
    run_ok(&[
        "run",
        "--input",
        input,
        "--database-url",
        &reference.url,
        "--workers",
        "1",
        "--sink-writers",
        "one",
        "--recs-horizon",
        RECS_HORIZON,
    ]);
    let uninterrupted = started.elapsed();

    let crashed = TestDatabase::create("cluster_killed");
    let hostfile = dir.path().join("hosts");
    let cluster = |index: usize| {
        spawn(&[
            "run",
            "--input",
            input,
            "--database-url",
            &crashed.url,
            "--workers",
            "2",
            "--processes",
            "2",
            "--process",
            &index.to_string(),
            "--hostfile",
            hostfile.to_str().unwrap(),
            "--epoch-ms",
            "50",
            "--catch-up-epoch-ms",
            "50",
            "--sink-writers",
            "per-worker",
            "--recs-horizon",
            RECS_HORIZON,
        ])
    };
    let new_hosts = || {
        let ports = format!(
            "127.0.0.1:{}\n127.0.0.1:{}\n",
            clickflow_testkit::free_port(),
            clickflow_testkit::free_port()
        );
        std::fs::write(&hostfile, ports).unwrap();
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261202);
    let committed = || -> i64 {
        crashed
            .try_query("SELECT coalesce(sum(next_offset), 0) FROM clickflow_offsets")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let mut kills = 0;
    for _ in 0..3 {
        new_hosts();
        let before = committed();
        let mut processes = [cluster(0), cluster(1)];
        // Kill only once this run has committed something of its own (a cluster takes a
        // moment to form), then at a random moment within the next part of the input.
        wait_until(
            Duration::from_secs(60),
            "the cluster commits an epoch",
            || {
                committed() > before
                    || processes
                        .iter_mut()
                        .any(|p| p.try_wait().unwrap().is_some())
            },
        );
        std::thread::sleep(uninterrupted.mul_f64(rng.gen_range(0.0..0.3)));
        if processes
            .iter_mut()
            .any(|p| p.try_wait().unwrap().is_some())
        {
            break;
        }
        let first = rng.gen_range(0..2);
        for (order, index) in [first, 1 - first].into_iter().enumerate() {
            if order == 1 {
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..200)));
            }
            let _ = processes[index].kill();
            let _ = processes[index].wait();
        }
        kills += 1;
        let left = crashed.query(
            "SELECT (SELECT count(*) FROM clickflow_commit_log) || ' decided, '
                 || (SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database())
                 || ' prepared'",
        );
        eprintln!("killed at offset sum {}: {left} parts left", committed());
    }
    assert!(
        kills >= 2,
        "the test must actually kill the cluster mid-run"
    );
    new_hosts();
    let mut processes = [cluster(0), cluster(1)];
    let deadline = Instant::now() + Duration::from_secs(300);
    for (index, process) in processes.iter_mut().enumerate() {
        let status = loop {
            if let Some(status) = process.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the final cluster run did not end within 5 minutes"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "cluster process {index} failed: {status}");
    }

    let (expected, actual) = (read_tables(&reference.url), read_tables(&crashed.url));
    assert!(!actual.recommendations.is_empty(), "the recommender ran");
    assert_same_results(&actual, &expected);
    assert_eq!(
        crashed.query(
            "SELECT count(*) || ' ' || (SELECT count(*) FROM pg_prepared_xacts
                                          WHERE database = current_database())
             FROM clickflow_writers WHERE prepared_through = 9223372036854775807"
        ),
        "4 0",
        "four writers through the end, nothing left prepared"
    );
}

/// A pipeline killed while an alert is open, at random moments after, and restarted: the
/// detectors are rebuilt from `window_series`, so the open alert goes on under its id (not
/// raised again: its `raised_at` is the first run's) and resolves; `alerts` and
/// `window_series` equal an uninterrupted run's.
#[test]
fn killing_a_run_while_an_alert_is_open_neither_duplicates_nor_loses_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let mut produce_args = vec!["produce".to_string(), "--output".into()];
    produce_args.push(input.to_str().unwrap().into());
    produce_args.extend(shop_flags(600_000, 91));
    produce_args.extend(
        [
            "--incident",
            "checkout-outage@25m/12m",
            "--incident",
            "malformed-storm@40m/4m",
        ]
        .map(String::from),
    );
    run_ok(&produce_args.iter().map(String::as_str).collect::<Vec<_>>());
    let input = input.to_str().unwrap();
    // One split, read in event-time order, so that windows close one after another (splits
    // read side by side close most windows at the end of the file, where an alert opens and
    // resolves in one epoch); shorter epochs than a backfill's.
    let args = |url: &str| {
        run_args(
            input,
            url,
            &["--input-splits", "1", "--max-epoch-events", "5000"],
        )
    };

    let reference = TestDatabase::create("crash_alerts_reference");
    let reference_args = args(&reference.url);
    run_ok(
        &reference_args
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let expected = read_tables(&reference.url);
    assert!(
        expected.alerts.len() >= 2,
        "the incidents raise alerts: {:?}",
        expected.alerts.keys().collect::<Vec<_>>()
    );

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20261202);
    let crashed = TestDatabase::create("crash_alerts_killed");
    let crashed_args = args(&crashed.url);
    let crashed_args: Vec<&str> = crashed_args.iter().map(String::as_str).collect();
    // Polled over one connection, every few milliseconds: the alert is open for a few
    // hundred of them in a run of seconds.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, connection) = runtime
        .block_on(tokio_postgres::connect(&crashed.url, tokio_postgres::NoTls))
        .unwrap();
    runtime.spawn(connection);
    let open_alerts = || -> String {
        runtime
            .block_on(client.query_one(
                "SELECT coalesce(string_agg(alert_id || ' ' || raised_at, ',' ORDER BY alert_id), '')
                 FROM alerts WHERE status = 'open'",
                &[],
            ))
            .map(|row| row.get(0))
            // Before the first run's migrations the table does not exist: nothing open.
            .unwrap_or_default()
    };
    let mut seen_open = Vec::new();
    for _ in 0..3 {
        let mut child = spawn(&crashed_args);
        let mut killed_at = None;
        while child.try_wait().unwrap().is_none() {
            let open = open_alerts();
            if !open.is_empty() {
                // Open now: kill at once, or a little later (mid-update, mid-resolution).
                std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
                killed_at = Some(open);
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        if let Some(open) = killed_at {
            seen_open.push(open);
        }
    }
    eprintln!("{} kills with alerts open: {seen_open:?}", seen_open.len());
    assert!(
        !seen_open.is_empty(),
        "the pipeline was killed with an alert open"
    );
    let mut last = spawn(&crashed_args);
    assert!(last.wait().unwrap().success(), "the final run completes");

    let actual = read_tables(&crashed.url);
    assert!(!actual.recommendations.is_empty(), "the recommender ran");
    assert_same_results(&actual, &expected);
    // Every alert seen open at a kill is the same row afterwards: raised once, at the time
    // the first run raised it.
    for open in seen_open {
        for alert in open.split(',') {
            let (id, raised_at) = alert.split_once(' ').unwrap();
            assert_eq!(
                crashed.query(&format!(
                    "SELECT raised_at FROM alerts WHERE alert_id = '{id}'"
                )),
                raised_at,
                "{id} was raised again after a restart"
            );
        }
    }
}

/// The recommender's horizon in these runs: shorter than the files' hour or more of event
/// time, so that items expire during a run and a restart replays a horizon of input, not
/// the whole file (as the default day would).
const RECS_HORIZON: &str = "20m";

/// `clickflow run` over the file `input` into `url` on two workers, with `extra` flags.
fn run_args(input: &str, url: &str, extra: &[&str]) -> Vec<String> {
    let mut args = [
        "run",
        "--input",
        input,
        "--database-url",
        url,
        "--workers",
        "2",
        "--recs-horizon",
        RECS_HORIZON,
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The KPI, insight and alert tables equal, and the same dead letters: none lost, none
/// written twice.
fn assert_same_results(actual: &clickflow_dataflow::Tables, expected: &clickflow_dataflow::Tables) {
    assert_eq!(actual.trends, expected.trends, "event_trends");
    assert_eq!(actual.funnel, expected.funnel, "funnel_summary");
    assert_eq!(actual.sessions, expected.sessions, "session_features");
    assert_eq!(actual.conversion, expected.conversion, "funnel_conversion");
    assert_eq!(
        actual.recommendations, expected.recommendations,
        "product_recommendations"
    );
    assert_eq!(actual.series, expected.series, "window_series");
    assert_eq!(actual.alerts, expected.alerts, "alerts");
    assert_eq!(
        dead_letters(actual),
        dead_letters(expected),
        "dead_letters: same set, no duplicates"
    );
}

/// Every dead letter, as (partition, offset, rejection), in order: equal sets mean none was
/// lost and none written twice.
fn dead_letters(
    tables: &clickflow_dataflow::Tables,
) -> Vec<(
    clickflow_sources::PartitionId,
    i64,
    clickflow_sources::Rejection,
)> {
    let mut all: Vec<_> = tables
        .dead_letters
        .iter()
        .map(|d| (d.partition.clone(), d.offset, d.rejection.clone()))
        .collect();
    all.sort();
    all
}
