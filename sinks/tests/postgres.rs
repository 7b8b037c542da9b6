//! The PostgreSQL sink against a real server: exact results, idempotent replays, outages,
//! and clear refusals at start. Each test uses a database of its own.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clickflow_dataflow::oracle::recompute_file;
use clickflow_dataflow::DataflowConfig;
use clickflow_sinks::postgres::{prepare, DatabaseUrl, SinkError, SinkWriters};
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

/// Both sinks: the single writer and a writer per worker with the coordinator (their
/// connections all cut alike).
#[test]
fn connections_killed_mid_run_are_retried_without_loss_or_duplicates() {
    for writers in [SinkWriters::One, SinkWriters::PerWorker] {
        cut_connections_of_a_run(writers);
    }
}

fn cut_connections_of_a_run(writers: SinkWriters) {
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
        let config = clickflow_dataflow::runtime::run::RunConfig {
            epochs,
            ..Default::default()
        };
        let url = DatabaseUrl::parse(&db.url).unwrap();
        let run = run_file_with(&splits, 2, &url, config, writers);
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
        "{writers:?}, after {killed} killed connections: {}",
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
    runtime
        .block_on(prepare(&DatabaseUrl::parse(url).unwrap()))
        .map(drop)
}

#[test]
fn migrations_are_idempotent_and_a_mismatched_schema_is_refused_at_start() {
    let db = TestDatabase::create("schema");
    prepare_blocking(&db.url).unwrap();
    prepare_blocking(&db.url).unwrap();
    assert_eq!(
        db.query("SELECT string_agg(version::text, ',' ORDER BY version) FROM clickflow_schema_migrations"),
        "1,2,3,4,5,6,7,8,9,10,11",
        "each migration once"
    );
    assert_eq!(
        db.query("SELECT count(*) FROM pg_indexes WHERE indexname = 'churn_scores_risk'"),
        "0"
    );
    db.query("ALTER TABLE event_trends ALTER COLUMN count TYPE integer");
    db.query("ALTER TABLE funnel_summary DROP COLUMN unique_users");
    let error = prepare_blocking(&db.url).unwrap_err();
    assert!(matches!(error, SinkError::SchemaMismatch(_)), "{error}");
    // Every problem of every table is named, from the one query over all of them.
    assert!(
        error.to_string().contains("event_trends.count is integer"),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("funnel_summary.unique_users is missing"),
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

/// Two partitions: `p0` holds a session open since 0.5 s for the whole run, `p1` only
/// sessions of the last few minutes. The pipeline-wide rule would replay both from before
/// 0.5 s; per partition, `p1` restarts from its own newest checkpoint before its own
/// retention, and its older checkpoints are forgotten.
#[test]
fn each_partition_restarts_from_before_its_own_oldest_needed_event() {
    use clickflow_dataflow::runtime::output::PartitionState;
    use clickflow_dataflow::EpochOutput;
    use clickflow_sinks::postgres::{load_resume_plan, spawn_sink, SinkConfig};
    use clickflow_sources::PartitionId;

    let db = TestDatabase::create("partition_retention");
    let url = DatabaseUrl::parse(&db.url).unwrap();
    prepare_blocking(&db.url).unwrap();
    let (p0, p1) = (PartitionId::new("t", 0), PartitionId::new("t", 1));
    // (next offset, p0's clock, p1's clock, p0's retention, p1's retention) per epoch.
    let epochs = [
        (10, 400, 10_000, 500, 9_000),
        (20, 200_000, 200_000, 500, 150_000),
        (30, 300_000, 300_000, 500, 250_000),
    ];
    for (epoch, &(offset, clock0, clock1, retain0, retain1)) in epochs.iter().enumerate() {
        let state = |partition: &PartitionId, highest| PartitionState {
            partition: partition.clone(),
            next_offset: offset,
            highest: Some(highest),
        };
        let output = EpochOutput {
            epoch: epoch as u64 + 1,
            watermark: clock0.min(clock1) - 1_000,
            retain_from: Some(retain0.min(retain1)),
            partition_retain_from: vec![(p0.clone(), Some(retain0)), (p1.clone(), Some(retain1))],
            partitions: vec![state(&p0, clock0), state(&p1, clock1)],
            ..EpochOutput::default()
        };
        // One sink per epoch, so that each is its own transaction with a checkpoint.
        let mut config = SinkConfig::new(url.clone());
        config.checkpoint_interval = Duration::ZERO;
        let sink = spawn_sink(config, None);
        assert!(sink.send_blocking(output));
        sink.finish().unwrap();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plan = runtime
        .block_on(async {
            load_resume_plan(&url.connect().await?, &[p0.clone(), p1.clone()]).await
        })
        .unwrap();
    let start = |p: &PartitionId| {
        let resume = plan.partitions[p];
        (resume.start, resume.highest, resume.committed)
    };
    assert_eq!(start(&p0), (Some(10), Some(400), Some(30)));
    assert_eq!(start(&p1), (Some(20), Some(200_000), Some(30)));
    assert_eq!(
        plan.retain_from,
        Some(500),
        "users' histories fold up to the earliest"
    );
    assert_eq!(
        db.query(
            "SELECT string_agg(partition || ':' || next_offset, ' ' ORDER BY partition, next_offset)
             FROM clickflow_checkpoints"
        ),
        "0:10 0:20 0:30 1:20 1:30",
        "checkpoints no restart of their partition can need are forgotten"
    );
    // A database migrated from version 5 has no retention per partition: the pipeline's
    // (the earliest of all) applies, as before.
    db.query("UPDATE clickflow_offsets SET retain_from = NULL");
    let plan = runtime
        .block_on(async {
            load_resume_plan(&url.connect().await?, &[p0.clone(), p1.clone()]).await
        })
        .unwrap();
    assert_eq!(
        plan.partitions[&p1].start, None,
        "p1 has no checkpoint before 0.5 s"
    );
    assert_eq!(plan.partitions[&p0].start, Some(10));
}
