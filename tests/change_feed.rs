//! The Kafka change topics (`--emit-kafka`), read by an independent consumer.
//!
//! `clickflow run` over a file publishes every committed change of the tables to tansu (a
//! separate Kafka-protocol broker) while it is SIGKILLed at random moments and restarted; a
//! consumer written with another Kafka client (Python's confluent-kafka) then reads every
//! topic. After dropping repeats by `source.seq`, the rows it holds equal the PostgreSQL
//! tables; so do the rows a compacted topic would keep (the last message per key); and no
//! key's changes go backwards in epoch.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use clickflow_testkit::{Tansu, TestDatabase};
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const EVENTS: usize = 60_000;

/// Each emitted table and its key columns.
const TABLES: [(&str, &[&str]); 8] = [
    ("event_trends", &["window_start", "event_type"]),
    ("funnel_summary", &["window_start", "event_type"]),
    ("session_features", &["session_id", "session_start"]),
    ("churn_scores", &["session_id", "session_start"]),
    ("window_series", &["window_start"]),
    ("alerts", &["alert_id"]),
    ("product_recommendations", &["product_id", "rank"]),
    ("funnel_conversion", &["window_start", "step"]),
];

#[test]
fn a_consumer_of_the_change_topics_ends_equal_to_the_tables_across_kill_9_restarts() {
    let tansu = Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    produce_file(&input, EVENTS, 41);
    let (_, model_path) = small_model(dir.path(), 41);
    let db = TestDatabase::create("change_feed");
    let args: Vec<String> = [
        "run",
        "--input",
        input.to_str().unwrap(),
        "--database-url",
        &db.url,
        "--workers",
        "2",
        "--epoch-ms",
        "20",
        "--catch-up-epoch-ms",
        "20",
        "--max-epoch-events",
        "500",
        "--model",
        model_path.to_str().unwrap(),
        "--emit-kafka",
        &tansu.bootstrap,
        "--emit-partitions",
        "3",
        "--emit-replication",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261203);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut kills = 0;
    for _ in 0..3 {
        let mut child = spawn(&args);
        // Well inside a whole run (about 3.8 s on the CI machine since 4 December 2026; it
        // was longer, and kills drawn up to 4 s could miss a run that had already ended).
        let deadline = Instant::now() + Duration::from_millis(rng.gen_range(600..2_400));
        let mut finished = false;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "a restarted run failed: {status}");
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if finished {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    run_ok(&args);
    eprintln!("{kills} kills (seed {seed})");
    assert!(kills >= 1, "the test must actually crash the pipeline");
    assert_eq!(
        db.query("SELECT count(*) FROM clickflow_changes"),
        "0",
        "the last run published everything committed before it stopped"
    );

    let topics: Vec<String> = TABLES
        .iter()
        .map(|(table, _)| format!("clickflow.{table}"))
        .collect();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/consumers/read_changes.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(&tansu.bootstrap)
        .args(&topics)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the consumer failed (pip install confluent-kafka): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();

    let mut total_repeats = 0;
    for ((table, keys), topic) in TABLES.iter().zip(&topics) {
        let feed = &read[topic];
        let expected = table_rows(&db, table, keys);
        assert!(
            feed["backwards"].as_array().unwrap().is_empty(),
            "{topic}: changes went backwards in epoch: {}",
            feed["backwards"]
        );
        assert_eq!(
            keyed(&feed["applied"]),
            expected,
            "{topic}: the consumer's rows after dropping repeats equal {table}"
        );
        assert_eq!(
            keyed(&feed["compacted"]),
            expected,
            "{topic}: the last message per key equals {table}"
        );
        total_repeats += feed["repeats"].as_u64().unwrap();
        eprintln!(
            "{topic}: {} rows, {} messages, {} repeats",
            expected.len(),
            feed["messages"],
            feed["repeats"]
        );
    }
    eprintln!("{total_repeats} repeated messages dropped by seq");
    let tables_with_rows = TABLES
        .iter()
        .filter(|(table, keys)| !table_rows(&db, table, keys).is_empty())
        .count();
    assert!(tables_with_rows >= 5, "the run filled the tables it emits");

    // `clickflow tail` prints the same feed, a JSON line per message.
    let tailed = run_ok(&[
        "tail",
        "--brokers",
        &tansu.bootstrap,
        "--topic",
        "clickflow.window_series",
        "--from-beginning",
        "--idle-exit",
        "3s",
    ]);
    let lines: Vec<Value> = String::from_utf8(tailed.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let series = table_rows(&db, "window_series", &["window_start"]);
    let mut seen = BTreeMap::new();
    for line in &lines {
        assert_eq!(line["value"]["source"]["table"], "window_series", "{line}");
        assert_eq!(
            line["headers"]["clickflow-seq"], line["value"]["source"]["seq"],
            "{line}"
        );
        seen.insert(line["key"].to_string(), line["value"]["after"].clone());
    }
    assert_eq!(seen, series, "tail shows every window_series row");
}

/// The rows of `table` as a consumer sees them, by their key (as canonical JSON): every
/// column, the webhook's delivery marks left out as the feed leaves them out.
fn table_rows(db: &TestDatabase, table: &str, keys: &[&str]) -> BTreeMap<String, Value> {
    let text = db.query(&format!(
        "SELECT coalesce(json_agg(to_jsonb(t) - 'open_notified_at' - 'resolve_notified_at'), '[]')
         FROM {table} t"
    ));
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    rows.into_iter()
        .map(|row| {
            let key: serde_json::Map<String, Value> = keys
                .iter()
                .map(|k| (k.to_string(), row[*k].clone()))
                .collect();
            (Value::Object(key).to_string(), row)
        })
        .collect()
}

/// A consumer's `{key text: row}` with the keys made canonical JSON.
fn keyed(rows: &Value) -> BTreeMap<String, Value> {
    rows.as_object()
        .unwrap()
        .iter()
        .map(|(key, row)| {
            let key: Value = serde_json::from_str(key).unwrap();
            (key.to_string(), row.clone())
        })
        .collect()
}
