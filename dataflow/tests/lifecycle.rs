//! The model's life in a running pipeline: served predictions are monitored against what
//! happened, a behaviour change (drift) lowers the live model's ROC AUC, and retraining on
//! the monitored sessions promotes a challenger that recovers it.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clickflow_dataflow::kpi::sessions::SessionRule;
use clickflow_dataflow::lifecycle::retrain::{retrain_once, RetrainPolicy};
use clickflow_dataflow::lifecycle::{ModelMonitor, MonitorLimits};
use clickflow_dataflow::runtime::run::{run, taking, InputSpec, RunConfig};
use clickflow_dataflow::training::examples_from_file;
use clickflow_dataflow::window::WindowSize;
use clickflow_dataflow::{DataflowConfig, EpochConfig, LiveModel};
use clickflow_model::evaluate::VersionEvaluation;
use clickflow_model::{ChurnModel, TrainOptions, TrainParams};
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Shop, ShopConfig};
use common::*;
use time::macros::datetime;

fn dataflow() -> DataflowConfig {
    DataflowConfig {
        window: WindowSize::from_millis(60_000),
        allowed_lateness_ms: 30_000,
        session_gap_ms: 10 * 60_000,
        ..DataflowConfig::default()
    }
}

fn rule() -> SessionRule {
    SessionRule {
        gap_ms: dataflow().session_gap_ms,
        window: dataflow().window,
    }
}

/// 80k events (44 minutes) of a shop of 3,000 shoppers; drifted from its first event on
/// with `drifted`.
fn shop_file(dir: &std::path::Path, seed: u64, drifted: bool) -> FileSplits {
    let start = ShopConfig::default().start_ms + seed as i64 * 86_400_000;
    let shop = Shop::new(ShopConfig {
        seed,
        users: 3_000,
        products: 300,
        start_ms: start,
        events_per_second: 30.0,
        daily_rhythm: 0.0,
        drift_at_ms: drifted.then_some(start),
        ..ShopConfig::default()
    });
    let path = dir.join(format!("shop-{seed}.jsonl"));
    write_lines(&path, &shop.take_records(80_000));
    FileSplits::plan(&path, 1).unwrap()
}

fn options() -> TrainOptions {
    TrainOptions {
        params: TrainParams {
            trees: 15,
            ..TrainParams::default()
        },
        holdout: 0.25,
        trained_at: datetime!(2026-12-02 00:00 UTC),
        ..TrainOptions::default()
    }
}

/// Runs `plan` scored by `model` and returns what the monitor learnt of it.
fn monitored_run(plan: &FileSplits, model: Arc<ChurnModel>) -> Arc<ModelMonitor> {
    let monitor = Arc::new(ModelMonitor::new(rule(), MonitorLimits::default()));
    let observer = monitor.clone();
    // Small epochs, as a live stream has: sessions are scored as they go, not only at the
    // end of the file.
    let config = RunConfig {
        dataflow: dataflow(),
        epochs: EpochConfig {
            max_epoch_messages: 500,
            ..EpochConfig::default()
        },
        model: Some(LiveModel::new(model)),
        ..RunConfig::default()
    };
    run(
        timely::Config::process(2),
        InputSpec::File(plan.clone()),
        config,
        Some(taking(move |output| observer.observe(&output))),
        Arc::new(AtomicBool::new(false)),
        Default::default(),
    )
    .unwrap();
    monitor
}

fn live(monitor: &ModelMonitor, model: &ChurnModel) -> VersionEvaluation {
    monitor
        .live_metrics()
        .into_iter()
        .find(|m| m.model_version == model.version())
        .expect("the model's predictions were monitored")
}

#[test]
fn drift_lowers_the_live_auc_and_retraining_promotes_a_model_that_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    let history = shop_file(dir.path(), 1, false);
    let first = Arc::new(
        ChurnModel::train(
            &examples_from_file(&history, dataflow()).unwrap(),
            &options(),
        )
        .unwrap(),
    );

    let before = monitored_run(&shop_file(dir.path(), 2, false), first.clone());
    let after = monitored_run(&shop_file(dir.path(), 3, true), first.clone());
    let (auc_before, auc_after) = (
        live(&before, &first).evaluation.roc_auc,
        live(&after, &first).evaluation.roc_auc,
    );
    eprintln!(
        "live AUC of the first model: {auc_before:.3} before the drift, {auc_after:.3} after"
    );
    assert!(
        auc_after < auc_before - 0.05,
        "the drift lowers the live AUC: {auc_before:.3} -> {auc_after:.3}"
    );
    // Every monitored prediction is the first model's, on sessions that ended.
    assert_eq!(before.live_metrics().len(), 1);
    assert!(live(&before, &first).sessions > 500);

    let policy = RetrainPolicy::every(std::time::Duration::from_secs(60));
    let policy = RetrainPolicy {
        options: TrainOptions {
            split: policy.options.split,
            ..options()
        },
        ..policy
    };
    let decision = retrain_once(&policy, &after.examples(), &first).unwrap();
    eprintln!(
        "challenger {:.3} vs live {:.3} on the newest sessions",
        decision.challenger_auc, decision.live_auc
    );
    assert!(decision.promoted, "{decision:?}");
    assert!(decision.challenger_auc > decision.live_auc + policy.margin);

    let recovered = monitored_run(&shop_file(dir.path(), 4, true), decision.challenger.clone());
    let auc_recovered = live(&recovered, &decision.challenger).evaluation.roc_auc;
    eprintln!("live AUC of the promoted model after the drift: {auc_recovered:.3}");
    assert!(
        auc_recovered > auc_after + 0.05,
        "retraining recovers: {auc_after:.3} -> {auc_recovered:.3}"
    );

    // A challenger no better than the live model is not promoted: retrained on the same
    // sessions, it is the same forest, and the margin keeps the live one.
    let again = retrain_once(&policy, &after.examples(), &decision.challenger).unwrap();
    assert_eq!(again.challenger.version(), decision.challenger.version());
    assert_eq!(again.challenger_auc, again.live_auc);
    assert!(!again.promoted);
}
