//! `clickflow train` from an events file and from the prediction log, `clickflow run
//! --model --log-predictions` filling `churn_scores` with the model's predictions on the
//! oracle's features, and `clickflow evaluate` agreeing with a direct computation.

mod common;

use std::path::Path;

use clickflow_dataflow::oracle::recompute_file;
use clickflow_dataflow::window::WindowSize;
use clickflow_dataflow::DataflowConfig;
use clickflow_model::evaluate::roc_auc;
use clickflow_model::ChurnModel;
use clickflow_sources::file::FileSplits;
use clickflow_testkit::TestDatabase;
use common::*;

fn train(source: &[&str], out: &Path) -> String {
    let mut args = vec![
        "train",
        "--out",
        out.to_str().unwrap(),
        "--trees",
        "15",
        "--session-gap",
        "10m",
    ];
    args.extend_from_slice(source);
    String::from_utf8(run_ok(&args).stderr).unwrap()
}

/// `count` events of a shop of 3,000 shoppers at `traffic` events/s of event time, into
/// `path`.
fn small_shop(path: &Path, count: usize, traffic: u32, seed: u64, start: &str) {
    run_ok(&[
        "produce",
        "--output",
        path.to_str().unwrap(),
        "--count",
        &count.to_string(),
        "--rate",
        "0",
        "--traffic",
        &traffic.to_string(),
        "--users",
        "3000",
        "--daily-rhythm",
        "0",
        "--seed",
        &seed.to_string(),
        "--start",
        start,
        "--late-fraction",
        "0.02",
        "--max-lateness",
        "60s",
    ]);
}

fn dataflow() -> DataflowConfig {
    DataflowConfig {
        window: WindowSize::from_millis(60_000),
        allowed_lateness_ms: 30_000,
        session_gap_ms: 10 * 60_000,
        ..DataflowConfig::default()
    }
}

#[test]
fn a_model_trained_from_events_scores_every_open_session_and_the_log_backtests_it() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    small_shop(&history, 60_000, 20, 21, "2025-07-08T00:00:00Z");
    let model_path = dir.path().join("churn.model");
    let printed = train(&["--events", history.to_str().unwrap()], &model_path);
    for expected in [
        "examples:",
        "ROC AUC",
        "PR AUC buy",
        "logistic regression",
        "single tree",
        "base rate",
        "calibration of the forest",
        "user_purchases_before",
    ] {
        assert!(printed.contains(expected), "no {expected:?} in:\n{printed}");
    }
    let model = ChurnModel::load(&model_path).unwrap();
    let report = &model.header().report;
    assert!(report.forest.roc_auc > 0.7, "{printed}");

    let db = TestDatabase::create("cli_train");
    let live = dir.path().join("live.jsonl");
    // 80 minutes: sessions end (10-minute gap) well before the data does, so the log of
    // their predictions can be split by time.
    small_shop(&live, 24_000, 5, 22, "2025-07-09T00:00:00Z");
    run_ok(&[
        "run",
        "--input",
        live.to_str().unwrap(),
        "--model",
        model_path.to_str().unwrap(),
        "--log-predictions",
        "--session-gap",
        "10m",
        "--epoch-ms",
        "1",
        "--catch-up-epoch-ms",
        "1",
        "--max-epoch-events",
        "40",
        "--database-url",
        &db.url,
    ]);
    let tables = read_tables(&db.url);
    let mut oracle = recompute_file(&FileSplits::plan(&live, 16).unwrap(), &dataflow()).unwrap();
    oracle.score_with(&model, &dataflow());
    let differences = oracle.differences(&tables);
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    assert!(!tables.scores.is_empty());

    // The log holds what the model said: its probability of the logged features, the
    // latest score of every session among them.
    let logged = db.query(
        "SELECT count(*) FROM churn_predictions p JOIN churn_scores c
             USING (session_id, session_start, as_of, features, churn_probability, model_version)",
    );
    assert_eq!(logged, tables.scores.len().to_string());
    let rows = db.query(
        "SELECT p.churn_probability, s.num_purchases = 0, array_to_string(p.features, ',')
         FROM churn_predictions p JOIN session_features s USING (session_id, session_start)
         WHERE s.closed",
    );
    let (mut probabilities, mut churned) = (Vec::new(), Vec::new());
    for line in rows.lines() {
        let fields: Vec<&str> = line.split('|').collect();
        let probability: f64 = fields[0].parse().unwrap();
        let values: Vec<f64> = fields[2].split(',').map(|v| v.parse().unwrap()).collect();
        let features = clickflow_model::Features::from_array(values.try_into().unwrap());
        assert_eq!(probability, model.predict(&features));
        probabilities.push(probability);
        churned.push(fields[1] == "t");
    }
    assert!(
        probabilities.len() > tables.scores.len(),
        "sessions are logged as they go, not only their last score"
    );

    // `evaluate` agrees with that direct computation.
    let output = run_ok(&["evaluate", "--json", "--database-url", &db.url]);
    let records: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let record = &records[0];
    assert_eq!(records.as_array().unwrap().len(), 1);
    assert_eq!(record["model_version"], model.version());
    assert_eq!(record["predictions"], probabilities.len());
    let auc = record["evaluation"]["roc_auc"].as_f64().unwrap();
    assert!(
        (auc - roc_auc(&probabilities, &churned)).abs() < 1e-12,
        "{auc}"
    );
    let table = String::from_utf8(run_ok(&["evaluate", "--database-url", &db.url]).stdout).unwrap();
    assert!(
        table.contains(model.version()) && table.contains("calibration"),
        "{table}"
    );

    // The prediction log trains a model too.
    let from_log = dir.path().join("from-log.model");
    let printed = train(&["--database-url", &db.url, "--holdout", "0.3"], &from_log);
    assert!(printed.contains("reading the prediction log"), "{printed}");
    assert!(ChurnModel::load(&from_log).is_ok());
}

#[test]
fn without_a_model_the_run_says_so_and_writes_no_scores() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.jsonl");
    produce_file(&live, 2_000, 23);
    let db = TestDatabase::create("cli_no_model");
    let output = run_ok(&[
        "run",
        "--input",
        live.to_str().unwrap(),
        "--database-url",
        &db.url,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("churn_scores stays empty"), "{stderr}");
    let tables = read_tables(&db.url);
    assert!(!tables.sessions.is_empty());
    assert!(tables.scores.is_empty());
}

#[test]
fn a_bad_model_file_stops_the_run_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.model");
    std::fs::write(&bogus, b"this is not a model").unwrap();
    let output = clickflow()
        .args(["run", "--input", bogus.to_str().unwrap(), "--model"])
        .arg(&bogus)
        .args(["--database-url", "postgres://postgres@127.0.0.1:1/none"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a clickflow model file"), "{stderr}");
}
