//! Training determinism, the model file's round trip, and its refusals of damaged files.

use std::path::Path;

use clickflow_model::{
    ChurnModel, Example, Features, ModelError, TimeSplit, TrainOptions, TrainParams, FEATURE_COUNT,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use time::macros::datetime;

/// Prefix examples of `count` sessions, one a minute, each final ten minutes after it
/// started: cart adds, dwell and a buying history make a purchase likelier, with noise;
/// views are noise.
fn examples(count: usize, seed: u64) -> Vec<Example> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for session in 0..count {
        let carts: i32 = rng.gen_range(0..3);
        let history: i32 = rng.gen_range(0..3);
        let buy = 0.05 + 0.25 * f64::from(carts) + 0.1 * f64::from(history);
        let churned = rng.gen::<f64>() >= buy;
        let start = session as i64 * 60_000;
        for prefix in 1..=rng.gen_range(1..5u32) {
            let mut x = [0.0; FEATURE_COUNT];
            x[0] = rng.gen_range(1..15) as f64;
            x[1] = f64::from(carts.min(prefix as i32));
            x[2] = rng.gen_range(0.0..600.0);
            x[5] = x[1] * 20.0;
            x[6] = f64::from(history);
            out.push(Example {
                features: Features::from_array(x),
                churned,
                session_start: start,
                known_at: start + 600_000,
                prefix_events: prefix,
                session: session as u64,
            });
        }
    }
    out
}

fn options(seed: u64) -> TrainOptions {
    TrainOptions {
        params: TrainParams {
            trees: 15,
            min_samples_leaf: 5.0,
            seed,
            ..TrainParams::default()
        },
        holdout: 0.25,
        split: Default::default(),
        max_examples: 200_000,
        trained_at: datetime!(2026-11-26 00:00 UTC),
    }
}

fn some_features() -> Vec<Features> {
    examples(300, 99).into_iter().map(|s| s.features).collect()
}

#[test]
fn the_same_seed_and_data_give_the_same_file() {
    let data = examples(2_000, 1);
    let first = ChurnModel::train(&data, &options(7)).unwrap();
    let second = ChurnModel::train(&data, &options(7)).unwrap();
    assert_eq!(first.to_bytes(), second.to_bytes());
    let other_seed = ChurnModel::train(&data, &options(8)).unwrap();
    assert_ne!(first.version(), other_seed.version());
}

#[test]
fn the_split_is_by_time_and_learns_only_what_was_known_before_it() {
    let data = examples(1_000, 3);
    let split = TimeSplit::of(&data, 0.25);
    assert!(!split.train.is_empty() && !split.test.is_empty());
    // Every evaluated session starts at or after the split, every learnt one had its
    // outcome known by then, and no session is on both sides.
    assert!(split
        .test
        .iter()
        .all(|e| e.session_start >= split.split_at_ms));
    assert!(split.train.iter().all(|e| e.known_at <= split.split_at_ms));
    let learnt: std::collections::HashSet<u64> = split.train.iter().map(|e| e.session).collect();
    assert!(split.test.iter().all(|e| !learnt.contains(&e.session)));
    // A quarter of the sessions are evaluated; the nine before the split straddle it.
    let tested: std::collections::HashSet<u64> = split.test.iter().map(|e| e.session).collect();
    assert_eq!(tested.len(), 250);
    assert_eq!(learnt.len(), 741);

    let model = ChurnModel::train(&data, &options(3)).unwrap();
    let report = &model.header().report;
    assert_eq!(report.split_at_ms, split.split_at_ms);
    assert_eq!(report.test_examples, split.test.len());
    assert_eq!(report.train_sessions, 741);
}

#[test]
fn the_model_learns_the_signal_and_reports_it_against_baselines() {
    let model = ChurnModel::train(&examples(4_000, 2), &options(3)).unwrap();
    let report = &model.header().report;
    assert_eq!(report.sessions, 4_000);
    assert_eq!(report.test_sessions, 1_000);
    assert!(report.forest.roc_auc > 0.7, "AUC {}", report.forest.roc_auc);
    assert!(report.forest.roc_auc > report.base_rate.roc_auc);
    assert_eq!(report.base_rate.roc_auc, 0.5);
    let logistic = report.logistic.as_ref().expect("the baseline fits");
    assert!(logistic.roc_auc > 0.6, "logistic AUC {}", logistic.roc_auc);
    assert_eq!(report.forest.calibration.len(), 10);
    assert_eq!(
        report
            .forest
            .calibration
            .iter()
            .map(|b| b.examples)
            .sum::<usize>(),
        report.test_examples
    );
    assert!(report.forest.brier < report.base_rate.brier);
    let importance = |name: &str| {
        report
            .importances
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
    };
    // Cart adds carry the signal; views are noise.
    assert!(importance("num_cart_adds") > importance("num_views"));
    assert!((report.importances.iter().map(|(_, s)| s).sum::<f64>() - 1.0).abs() < 1e-9);
    // A session with a full cart is less likely to churn than one without.
    let session = |carts: f64| {
        let mut x = [0.0; FEATURE_COUNT];
        x[0] = 5.0;
        x[1] = carts;
        x[5] = carts * 20.0;
        Features::from_array(x)
    };
    let (empty, full) = (model.predict(&session(0.0)), model.predict(&session(2.0)));
    assert!(full < empty, "full cart {full} vs empty {empty}");
    for p in model.predict_batch(&some_features()) {
        assert!((0.0..=1.0).contains(&p));
    }
    // The REST default for a missing cart value is the mean price of a cart add.
    assert!((model.header().defaults.cart_add_price - 20.0).abs() < 1e-9);
}

#[test]
fn a_saved_model_loads_with_identical_predictions() {
    let model = ChurnModel::train(&examples(1_000, 4), &options(5)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("churn.model");
    model.save(&path).unwrap();
    let loaded = ChurnModel::load(&path).unwrap();
    assert_eq!(loaded.to_bytes(), model.to_bytes());
    assert_eq!(loaded.forest(), model.forest());
    let features = some_features();
    assert_eq!(
        loaded.predict_batch(&features),
        model.predict_batch(&features)
    );
    for f in &features {
        assert_eq!(loaded.predict(f), model.predict(f));
    }
}

fn load(bytes: &[u8]) -> Result<ChurnModel, ModelError> {
    ChurnModel::from_bytes(bytes, Path::new("test.model"))
}

#[test]
fn damaged_or_foreign_files_are_refused_with_the_reason() {
    let model = ChurnModel::train(&examples(500, 6), &options(9)).unwrap();
    let bytes = model.to_bytes();
    assert!(load(&bytes).is_ok());

    let err = load(b"{\"not\": \"a model\"}").unwrap_err();
    assert!(matches!(err, ModelError::NotAModel { .. }), "{err}");
    assert!(matches!(
        load(b"").unwrap_err(),
        ModelError::NotAModel { .. }
    ));

    // A model file of the first format (three features of finished sessions) is refused
    // with the reason and what to do.
    let old = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/format-v1.model"
    ))
    .unwrap();
    let err = load(&old).unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedFormat { found: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("clickflow train"), "{err}");

    let mut newer = bytes.clone();
    newer[8] = 9;
    let err = load(&newer).unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedFormat { found: 9, .. }),
        "{err}"
    );

    // Every truncation is refused, none panics.
    for cut in [9, 12, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = load(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, ModelError::Corrupt { .. }),
            "cut at {cut}: {err}"
        );
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"trailing");
    assert!(matches!(
        load(&longer).unwrap_err(),
        ModelError::Corrupt { .. }
    ));

    // Flipping bytes anywhere in the body never panics and never loads a changed forest.
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for _ in 0..300 {
        let mut damaged = bytes.clone();
        let at = rng.gen_range(12..damaged.len());
        damaged[at] ^= 1 << rng.gen_range(0..8);
        if let Ok(loaded) = load(&damaged) {
            assert_eq!(loaded.forest(), model.forest(), "byte {at}");
        }
    }
}

#[test]
fn a_missing_file_names_its_path() {
    let err = ChurnModel::load(Path::new("/nonexistent/churn.model")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/churn.model"),
        "{err}"
    );
}

#[test]
fn training_refuses_what_it_cannot_learn_from() {
    let few = examples(15, 1);
    let err = ChurnModel::train(&few, &options(1)).unwrap_err();
    assert!(err.to_string().contains("too few"), "{err}");
    let mut all_churned = examples(100, 1);
    all_churned.iter_mut().for_each(|s| s.churned = true);
    let err = ChurnModel::train(&all_churned, &options(1)).unwrap_err();
    assert!(err.to_string().contains("both outcomes"), "{err}");
    let mut bad = options(1);
    bad.params.max_features = FEATURE_COUNT + 1;
    assert!(ChurnModel::train(&examples(100, 1), &bad).is_err());
}
