//! The churn model on the synthetic shop: it learns churn well above chance, and the dataflow
//! scores every session exactly as the model scores the oracle's sessions.

mod common;

use std::sync::Arc;

use clickflow_dataflow::training::samples_from_file;
use clickflow_dataflow::window::WindowSize;
use clickflow_dataflow::DataflowConfig;
use clickflow_model::{ChurnModel, TrainOptions};
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Shop, ShopConfig};
use common::*;
use time::macros::datetime;

fn dataflow() -> DataflowConfig {
    DataflowConfig {
        window: WindowSize::from_millis(60_000),
        allowed_lateness_ms: 30_000,
        session_gap_ms: 5 * 60_000,
    }
}

fn shop(seed: u64) -> Shop {
    Shop::new(ShopConfig {
        seed,
        users: 2_000,
        products: 200,
        events_per_second: 50.0,
        late_fraction: 0.02,
        max_lateness_ms: 90_000,
        malformed_fraction: 0.01,
        ..ShopConfig::default()
    })
}

/// A model trained on a history of the shop, through the dataflow's own sessions.
fn trained_model(dir: &std::path::Path) -> ChurnModel {
    let path = dir.join("history.jsonl");
    write_lines(&path, &shop(11).take_records(60_000));
    let samples = samples_from_file(FileSplits::plan(&path, 4).unwrap(), dataflow(), 2).unwrap();
    assert!(samples.len() > 5_000, "{} sessions", samples.len());
    let options = TrainOptions {
        trained_at: datetime!(2026-11-26 00:00 UTC),
        ..TrainOptions::default()
    };
    ChurnModel::train(&samples, &options).unwrap()
}

#[test]
fn the_model_beats_chance_and_the_dataflow_scores_like_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = trained_model(dir.path());
    let report = &model.header().report;
    eprintln!(
        "trained on {} of {} sessions (churn {:.1}%): holdout accuracy {:.3}, ROC AUC {:.3}",
        report.train_rows,
        report.rows,
        report.churn_share * 100.0,
        report.holdout.accuracy,
        report.holdout.roc_auc
    );
    assert!(
        report.holdout.roc_auc >= 0.80,
        "holdout ROC AUC {} is below 0.80",
        report.holdout.roc_auc
    );

    let model = Arc::new(model);
    let path = dir.path().join("live.jsonl");
    write_lines(&path, &shop(12).take_records(4_000));
    for (splits, workers) in [(1, 1), (4, 3)] {
        let plan = FileSplits::plan(&path, splits).unwrap();
        let mut oracle = oracle_for(&plan, &dataflow());
        oracle.score_with(&model);
        let tables = run_file_scored(
            &plan,
            workers,
            dataflow(),
            stress_epochs(),
            Some(model.clone()),
        );
        assert!(!tables.scores.is_empty());
        // Converted sessions (they bought) have no churn probability.
        let converted: Vec<_> = tables
            .sessions
            .iter()
            .filter(|(_, s)| s.num_purchases > 0)
            .map(|(key, _)| key)
            .collect();
        assert!(!converted.is_empty());
        assert!(converted
            .iter()
            .all(|key| !tables.scores.contains_key(*key)));
        assert_eq!(tables.scores.len(), tables.sessions.len() - converted.len());
        assert!(tables
            .scores
            .values()
            .all(|s| &*s.model_version == model.version()));
        assert_matches_oracle(&tables, &oracle, &format!("{workers} workers"));
    }
}
