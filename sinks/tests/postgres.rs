//! The PostgreSQL sink against a real server: exact results, idempotent replays, outages,
//! and clear refusals at start. Each test uses a database of its own.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clickflow_dataflow::oracle::recompute_file;
use clickflow_dataflow::DataflowConfig;
use clickflow_sinks::postgres::{prepare, DatabaseUrl, SinkError};
use clickflow_sources::file::FileSplits;
use clickflow_testkit::TestDatabase;
use common::*;

#[test]
fn a_file_run_commits_exactly_the_oracle_tables() {
    let db = TestDatabase::create("exact");
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(shop_model(dir.path()));
    let path = dir.path().join("events.jsonl");
    shop_file(&path, 11, 6_000);
    let splits = FileSplits::plan(&path, 4).unwrap();
    run_file_scored(&splits, 2, &db.url, short_epochs(), Some(model.clone())).unwrap();
    let tables = read_tables(&db.url);
    let mut oracle = recompute_file(&splits, &DataflowConfig::default()).unwrap();
    oracle.score_with(&model, &DataflowConfig::default());
    assert_eq!(
        tables.scores.len(),
        tables
            .sessions
            .values()
            .filter(|s| s.num_purchases == 0)
            .count(),
        "every session that did not buy is scored, and only those"
    );
    let differences = oracle.differences(&tables);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert!(
        tables.sessions.values().all(|s| s.closed),
        "the end of the file closes every session"
    );
    let malformed = tables
        .dead_letters
        .iter()
        .filter(|d| d.rejection.kind.as_str() != "late")
        .count();
    assert!(
        malformed > 30,
        "malformed payloads are dead-lettered, got {malformed}"
    );
    let file_len = std::fs::metadata(&path).unwrap().len() as i64;
    assert_eq!(
        tables.offsets.values().max().copied(),
        Some(file_len),
        "offsets reach the end of the file"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM clickflow_pipeline WHERE retain_from IS NULL"),
        "1"
    );
}

#[test]
fn running_the_same_file_again_changes_nothing() {
    let db = TestDatabase::create("idempotent");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    shop_file(&path, 12, 3_000);
    let splits = FileSplits::plan(&path, 3).unwrap();
    run_file(&splits, 2, &db.url, short_epochs()).unwrap();
    let snapshot = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM (
        SELECT window_start, event_type, count, revenue, batch_time FROM event_trends UNION ALL
        SELECT window_start, event_type, unique_users, 0, batch_time FROM funnel_summary) t";
    let before = (
        db.query(snapshot),
        db.query("SELECT count(*), max(id) FROM dead_letters"),
    );
    let sessions_before = db
        .query("SELECT md5(string_agg(s::text, ',' ORDER BY session_id)) FROM session_features s");
    run_file(&splits, 3, &db.url, short_epochs()).unwrap();
    assert_eq!(
        (
            db.query(snapshot),
            db.query("SELECT count(*), max(id) FROM dead_letters")
        ),
        before
    );
    assert_eq!(
        db.query(
            "SELECT md5(string_agg(s::text, ',' ORDER BY session_id)) FROM session_features s"
        ),
        sessions_before
    );
}

#[test]
fn connections_killed_mid_run_are_retried_without_loss_or_duplicates() {
    let db = TestDatabase::create("outage");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    shop_file(&path, 13, 50_000);
    let splits = FileSplits::plan(&path, 4).unwrap();
    // Short epochs: many transactions to cut.
    let epochs = clickflow_dataflow::EpochConfig {
        epoch: Duration::from_millis(5),
        catch_up_epoch: Duration::from_millis(5),
        poll_batch: 16,
        ..Default::default()
    };
    // Cut every connection of the run every 100 ms, at start (the start retries) and while
    // it writes (the sink's retries), ten times in all or until the run ends: a fixed number
    // of attempts could end before the run wrote anything, and cutting without end would
    // never let a large transaction commit.
    let done = AtomicBool::new(false);
    let (run, killed) = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let sql = format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
                db.name
            );
            let mut killed = 0;
            while !done.load(Ordering::Relaxed) && killed < 10 {
                killed += clickflow_testkit::psql(&sql).parse::<i32>().unwrap_or(0);
                std::thread::sleep(Duration::from_millis(100));
            }
            killed
        });
        let run = run_file(&splits, 2, &db.url, epochs);
        done.store(true, Ordering::Relaxed);
        (run, killer.join().unwrap())
    });
    run.unwrap();
    assert!(killed > 0, "the test must actually cut connections");
    let tables = read_tables(&db.url);
    let oracle = recompute_file(&splits, &DataflowConfig::default()).unwrap();
    let differences = oracle.differences(&tables);
    assert!(
        differences.is_empty(),
        "after {killed} killed connections: {}",
        differences.join("\n")
    );
    // Regression: this used to count duplicate dead letters, which the UNIQUE constraint
    // forbids anyway. The oracle now accounts for each one: every malformed and late record
    // dead-lettered exactly once, no other.
    assert!(oracle.malformed.as_ref().is_some_and(|m| !m.is_empty()));
}

fn prepare_blocking(url: &str) -> Result<(), SinkError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(prepare(&DatabaseUrl::parse(url).unwrap()))
}

#[test]
fn migrations_are_idempotent_and_a_mismatched_schema_is_refused_at_start() {
    let db = TestDatabase::create("schema");
    prepare_blocking(&db.url).unwrap();
    prepare_blocking(&db.url).unwrap();
    assert_eq!(
        db.query("SELECT string_agg(version::text, ',' ORDER BY version) FROM clickflow_schema_migrations"),
        "1,2,3,4,5",
        "each migration once"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM pg_indexes WHERE indexname = 'churn_scores_risk'"),
        "0"
    );
    db.query("ALTER TABLE event_trends ALTER COLUMN count TYPE integer");
    let error = prepare_blocking(&db.url).unwrap_err();
    assert!(matches!(error, SinkError::SchemaMismatch(_)), "{error}");
    assert!(
        error.to_string().contains("event_trends.count is integer"),
        "{error}"
    );
    assert!(!error.is_retriable());
}

#[test]
fn a_user_without_write_privileges_is_refused_at_start() {
    let db = TestDatabase::create("privileges");
    prepare_blocking(&db.url).unwrap();
    let role = format!("{}_reader", db.name);
    clickflow_testkit::psql(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"
    ));
    db.query(&format!(
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
    ));
    let url = db.url.replacen("postgres@", &format!("{role}@"), 1);
    let error = prepare_blocking(&url).unwrap_err();
    db.query(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"
    ));
    assert!(matches!(error, SinkError::Privileges(_)), "{error}");
    assert!(
        error.to_string().contains("INSERT on event_trends"),
        "{error}"
    );
}

#[test]
fn an_unreachable_server_is_a_clear_retriable_error_without_the_password() {
    let port = clickflow_testkit::free_port();
    let url = format!("postgres://postgres:s3cret@127.0.0.1:{port}/postgres");
    let error = prepare_blocking(&url).unwrap_err();
    assert!(error.is_retriable());
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(
        !message.contains("s3cret"),
        "the password never appears: {message}"
    );
}
