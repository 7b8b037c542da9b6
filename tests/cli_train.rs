//! `clickflow train` from an events file and from PostgreSQL, and `clickflow run --model`
//! filling `churn_scores` with the model's predictions.

mod common;

use std::path::Path;

use clickflow_model::ChurnModel;
use clickflow_testkit::TestDatabase;
use common::*;

fn train(source: &[&str], out: &Path) -> String {
    let mut args = vec!["train", "--out", out.to_str().unwrap(), "--trees", "15"];
    args.extend_from_slice(source);
    String::from_utf8(run_ok(&args).stderr).unwrap()
}

#[test]
fn a_model_trained_from_events_scores_every_unconverted_session_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history.jsonl");
    produce_file(&history, 40_000, 21);
    let model_path = dir.path().join("churn.model");
    let printed = train(&["--events", history.to_str().unwrap()], &model_path);
    for expected in [
        "sessions:",
        "churned",
        "accuracy",
        "ROC AUC",
        "num_cart_adds",
    ] {
        assert!(printed.contains(expected), "no {expected:?} in:\n{printed}");
    }
    let model = ChurnModel::load(&model_path).unwrap();
    assert!(model.header().report.holdout.roc_auc > 0.8);

    let db = TestDatabase::create("cli_train");
    let live = dir.path().join("live.jsonl");
    produce_file(&live, 5_000, 22);
    run_ok(&[
        "run",
        "--input",
        live.to_str().unwrap(),
        "--model",
        model_path.to_str().unwrap(),
        "--database-url",
        &db.url,
    ]);
    let tables = read_tables(&db.url);
    assert!(!tables.sessions.is_empty());
    let unconverted = tables.sessions.iter().filter(|(_, s)| s.num_purchases == 0);
    assert_eq!(tables.scores.len(), unconverted.clone().count());
    for (id, session) in unconverted {
        let score = &tables.scores[id];
        assert_eq!(
            score.churn_probability.0,
            model.predict(&session.features())
        );
        assert_eq!(&*score.model_version, model.version());
    }

    // The closed sessions now in PostgreSQL train a model too.
    let from_db = dir.path().join("from-db.model");
    let printed = train(&["--database-url", &db.url], &from_db);
    assert!(
        printed.contains(&format!("{} closed", tables.sessions.len())),
        "{printed}"
    );
    assert!(ChurnModel::load(&from_db).is_ok());
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
