//! Inputs and operations a shop really has, against a real PostgreSQL: nothing from outside
//! stops the sink, one pipeline per schema, and a file is resumed only if it is the same.

mod common;

use std::io::Write;

use clickflow_dataflow::oracle::recompute_file;
use clickflow_dataflow::runtime::run::{RunConfig, RunStats};
use clickflow_dataflow::window::WindowSize;
use clickflow_dataflow::{DataflowConfig, Tables};
use clickflow_sinks::postgres::{DatabaseUrl, PipelineError, SinkError};
use clickflow_sources::file::FileSplits;
use clickflow_testkit::TestDatabase;
use common::{run_file_at, shop_file, short_epochs};
use proptest::prelude::*;

/// Runs `splits` into `url`, two workers, short epochs.
fn run(splits: &FileSplits, url: &DatabaseUrl) -> Result<RunStats, PipelineError> {
    let config = RunConfig {
        epochs: short_epochs(),
        ..RunConfig::default()
    };
    run_file_at(splits, 2, url, config)
}

fn read(url: &DatabaseUrl) -> Tables {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(clickflow_sinks::postgres::read_tables(url))
        .unwrap()
}

fn url_of(db: &TestDatabase, schema: &str) -> DatabaseUrl {
    DatabaseUrl::parse(&db.url)
        .unwrap()
        .with_schema(schema)
        .unwrap()
}

/// A JSON value for a contract field: often a string with anything in it (NUL, control
/// characters, huge), sometimes another type.
fn field_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        4 => "\\PC{0,12}".prop_map(Value::String),
        2 => proptest::collection::vec(any::<char>(), 0..8)
            .prop_map(|c| Value::String(c.into_iter().collect())),
        1 => (250usize..300).prop_map(|n| Value::String("x".repeat(n))),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        1 => Just(Value::Null),
        1 => Just(Value::Bool(true)),
    ]
}

/// One input line: arbitrary bytes, an arbitrary object over the contract's fields, or a
/// valid event with one field replaced by an arbitrary value.
fn input_line() -> impl Strategy<Value = Vec<u8>> {
    const FIELDS: [&str; 7] = [
        "event_id",
        "user_id",
        "session_id",
        "product_id",
        "event_type",
        "ts",
        "price",
    ];
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..80),
        2 => proptest::collection::vec((proptest::sample::select(&FIELDS[..]), field_value()), 0..8)
            .prop_map(|pairs| {
                let object: serde_json::Map<String, serde_json::Value> =
                    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                serde_json::Value::Object(object).to_string().into_bytes()
            }),
        3 => (0usize..7, field_value(), 0i64..600_000, 0u8..3).prop_map(|(replaced, value, at, kind)| {
            let event_type = ["click", "add_to_cart", "purchase"][kind as usize];
            let mut event = serde_json::json!({
                "event_id": format!("e{at}"), "user_id": format!("u{}", at % 7),
                "session_id": format!("s{}", at % 5), "product_id": "p1",
                "event_type": event_type,
                "ts": 1_751_952_000_000i64 + at, "price": 3.5,
            });
            event[FIELDS[replaced]] = value;
            event.to_string().into_bytes()
        }),
    ]
}

/// Lines the file source reads as records (it skips blank ones, and strips a final `\r`).
fn records_in(lines: &[Vec<u8>]) -> usize {
    lines
        .iter()
        .filter(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            !line.iter().all(u8::is_ascii_whitespace)
        })
        .count()
}

/// Regression: one event with `"user_id": "u\u0000x"` stopped `clickflow run` for good
/// (PostgreSQL refused the upsert, and the event was replayed on every restart).
#[test]
fn arbitrary_input_never_stops_the_sink_and_every_record_is_accounted_for() {
    // One database for every case, each case in a schema of its own.
    let db = TestDatabase::create("arbitrary");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 8,
        ..ProptestConfig::default()
    });
    let case = std::cell::Cell::new(0);
    let strategy = proptest::collection::vec(input_line(), 1..120);
    let result = runner.run(&strategy, |lines| {
        case.set(case.get() + 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arbitrary.jsonl");
        let mut file = std::fs::File::create(&path).unwrap();
        for line in &lines {
            file.write_all(line).unwrap();
            file.write_all(b"\n").unwrap();
        }
        drop(file);
        let url = url_of(&db, &format!("arbitrary_{}", case.get()));
        let splits = FileSplits::plan(&path, 2).unwrap();
        let result = run(&splits, &url);
        prop_assert!(result.is_ok(), "the run failed: {:?}", result.err());
        let tables = read(&url);
        let counted: i64 = tables.trends.values().map(|r| r.count).sum();
        prop_assert_eq!(
            counted as usize + tables.dead_letters.len(),
            records_in(&lines)
        );
        let oracle = recompute_file(&splits, &DataflowConfig::default()).unwrap();
        let differences = oracle.differences(&tables);
        prop_assert!(differences.is_empty(), "{}", differences.join("\n"));
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// Regression: a second file into the same database had every event dead-lettered as late
/// (the first file's finished watermark was +infinity) while the run reported none.
#[test]
fn another_input_is_refused_in_a_schema_and_runs_beside_it_in_its_own() {
    let db = TestDatabase::create("namespaces");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    shop_file(&a, 31, 3_000);
    shop_file(&b, 32, 3_000);
    let (a, b) = (
        FileSplits::plan(&a, 4).unwrap(),
        FileSplits::plan(&b, 4).unwrap(),
    );
    let public = url_of(&db, "public");
    run(&a, &public).unwrap();

    let error = run(&b, &public).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, PipelineError::Sink(SinkError::ForeignInput { .. })),
        "{message}"
    );
    assert!(
        message.contains(&a.path().display().to_string())
            && message.contains(&b.path().display().to_string())
            && message.contains("--schema"),
        "{message}"
    );

    let other = url_of(&db, "shop_b");
    run(&b, &other).unwrap();
    for (splits, url) in [(&a, &public), (&b, &other)] {
        let oracle = recompute_file(splits, &DataflowConfig::default()).unwrap();
        let differences = oracle.differences(&read(url));
        assert!(differences.is_empty(), "{}", differences.join("\n"));
    }
    assert!(matches!(
        public.with_schema("Bad-Name"),
        Err(SinkError::BadSchema(_))
    ));
}

/// Regression: offsets into a file were trusted whatever the file had become.
#[test]
fn an_edited_file_or_other_splits_are_refused_and_a_grown_file_continues() {
    let db = TestDatabase::create("file_identity");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let first = concat!(
        r#"{"event_id":"a1","user_id":"u1","session_id":"s1","event_type":"click","ts":1751952000000}"#,
        "\n",
        r#"{"event_id":"a2","user_id":"u2","session_id":"s2","event_type":"add_to_cart","ts":1751952030000}"#,
        "\n"
    );
    std::fs::write(&path, first).unwrap();
    let url = url_of(&db, "public");
    run(&FileSplits::plan(&path, 2).unwrap(), &url).unwrap();

    let refused = |splits: usize| run(&FileSplits::plan(&path, splits).unwrap(), &url);
    let message = refused(3).unwrap_err().to_string();
    assert!(message.contains("--input-splits is 3"), "{message}");

    // An hour later: new windows, and gaps longer than the session gap.
    let appended = concat!(
        r#"{"event_id":"b1","user_id":"u1","session_id":"s1","event_type":"click","ts":1751955600000}"#,
        "\n",
        r#"{"event_id":"b2","user_id":"u3","session_id":"s3","event_type":"purchase","ts":1751955601000,"price":9.5}"#,
        "\n"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(appended.as_bytes())
        .unwrap();
    let grown = FileSplits::plan(&path, 2).unwrap();
    run(&grown, &url).unwrap();
    let tables = read(&url);
    let oracle = recompute_file(&grown, &DataflowConfig::default()).unwrap();
    let differences = oracle.differences(&tables);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert_eq!(tables.trends.values().map(|r| r.count).sum::<i64>(), 4);
    assert!(tables.dead_letters.is_empty());

    // The end of the grown file closed its newest window ([T0 + 1 h, + 1 min)): an event
    // appended into it is late, although its split's own clock would still take it.
    let in_closed_window = concat!(
        r#"{"event_id":"c1","user_id":"u4","session_id":"s4","event_type":"click","ts":1751955605000}"#,
        "\n"
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(in_closed_window.as_bytes())
        .unwrap();
    run(&FileSplits::plan(&path, 2).unwrap(), &url).unwrap();
    let tables = read(&url);
    assert_eq!(tables.trends.values().map(|r| r.count).sum::<i64>(), 4);
    assert_eq!(tables.dead_letters.len(), 1);
    let reason = tables.dead_letters[0].rejection.reason();
    assert!(
        reason.starts_with("late:") && reason.contains("\"s4\""),
        "{reason}"
    );

    let mut edited = std::fs::read_to_string(&path).unwrap();
    edited = edited.replacen("\"u2\"", "\"u9\"", 1);
    std::fs::write(&path, edited).unwrap();
    let message = refused(2).unwrap_err().to_string();
    assert!(
        message.contains("changed since they were read"),
        "{message}"
    );
}

/// Regression: an event accepted for a session already closed and evicted could put the same
/// key twice into one folded transaction, which PostgreSQL refuses (SQLSTATE 21000). A few
/// ids reused across gaps of exactly, just under and just over the gap, with late events,
/// through the sink's fold of waiting epochs, must end equal to the oracle.
#[test]
fn reused_session_ids_across_gaps_reach_postgresql_equal_to_the_oracle() {
    use rand::{Rng, SeedableRng};
    let db = TestDatabase::create("session_gaps");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gaps.jsonl");
    let gap = 60_000i64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    let mut clock = 1_751_952_000_000i64;
    let mut lines = String::new();
    for i in 0..3_000 {
        let ts = match rng.gen_range(0..10) {
            0 => clock - rng.gen_range(1_000..25_000),
            1 => clock - rng.gen_range(40_000..200_000),
            2 => {
                clock += [gap - 1_000, gap, gap + 1, gap + 1_000][rng.gen_range(0..4)];
                clock
            }
            _ => {
                clock += rng.gen_range(0..3_000);
                clock
            }
        };
        let kind = ["click", "add_to_cart", "purchase"][rng.gen_range(0..3)];
        lines.push_str(&format!(
            r#"{{"event_id":"e{i}","user_id":"u{}","session_id":"s{}","event_type":"{kind}","ts":{ts}}}"#,
            rng.gen_range(0..5),
            rng.gen_range(0..8)
        ));
        lines.push('\n');
    }
    std::fs::write(&path, lines).unwrap();
    let splits = FileSplits::plan(&path, 3).unwrap();
    let dataflow = DataflowConfig {
        window: WindowSize::from_millis(60_000),
        allowed_lateness_ms: 30_000,
        session_gap_ms: gap,
        ..DataflowConfig::default()
    };
    let url = url_of(&db, "public");
    let config = RunConfig {
        dataflow,
        epochs: short_epochs(),
        ..RunConfig::default()
    };
    run_file_at(&splits, 2, &url, config).unwrap();
    let tables = read(&url);
    let oracle = recompute_file(&splits, &dataflow).unwrap();
    let differences = oracle.differences(&tables);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    let per_id = tables.sessions.keys().filter(|(id, _)| id == "s0").count();
    assert!(
        per_id > 3,
        "the input splits s0 into several sessions ({per_id})"
    );
}
