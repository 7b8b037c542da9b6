//! Training determinism, the model file's round trip, and its refusals of damaged files.

use std::path::Path;

use clickflow_model::{ChurnModel, Features, ModelError, Sample, TrainOptions, TrainParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use time::macros::datetime;

/// Sessions where cart adds and long visits make a purchase likelier, with noise.
fn sessions(count: usize, seed: u64) -> Vec<Sample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let views = rng.gen_range(1..15);
            let carts = rng.gen_range(0..4);
            let duration_ms = rng.gen_range(0..1_800_000);
            let buy = 0.1 + 0.2 * f64::from(carts) + duration_ms as f64 / 9_000_000.0;
            Sample {
                features: Features::of_session(views, i64::from(carts), duration_ms),
                churned: rng.gen::<f64>() >= buy,
            }
        })
        .collect()
}

fn options(seed: u64) -> TrainOptions {
    TrainOptions {
        params: TrainParams {
            trees: 15,
            seed,
            ..TrainParams::default()
        },
        holdout: 0.25,
        trained_at: datetime!(2026-11-26 00:00 UTC),
    }
}

fn some_features() -> Vec<Features> {
    sessions(500, 99).into_iter().map(|s| s.features).collect()
}

#[test]
fn the_same_seed_and_data_give_the_same_file() {
    let data = sessions(3_000, 1);
    let first = ChurnModel::train(&data, &options(7)).unwrap();
    let second = ChurnModel::train(&data, &options(7)).unwrap();
    assert_eq!(first.to_bytes(), second.to_bytes());
    let other_seed = ChurnModel::train(&data, &options(8)).unwrap();
    assert_ne!(first.version(), other_seed.version());
}

#[test]
fn the_model_learns_the_signal_and_reports_it() {
    let model = ChurnModel::train(&sessions(4_000, 2), &options(3)).unwrap();
    let report = &model.header().report;
    assert_eq!(report.rows, 4_000);
    assert_eq!(report.train_rows, 3_000);
    assert_eq!(report.holdout.rows, 1_000);
    assert!(
        report.holdout.roc_auc > 0.7,
        "AUC {}",
        report.holdout.roc_auc
    );
    let importance = |name: &str| {
        report
            .importances
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
    };
    // Cart adds and duration carry the signal; views are noise.
    assert!(importance("num_cart_adds") > importance("num_views"));
    assert!((report.importances.iter().map(|(_, s)| s).sum::<f64>() - 1.0).abs() < 1e-9);
    // A session with a full cart is less likely to churn than one without.
    let empty = model.predict(&Features::of_session(5, 0, 600_000));
    let full = model.predict(&Features::of_session(5, 3, 600_000));
    assert!(full < empty, "full cart {full} vs empty {empty}");
    for p in model.predict_batch(&some_features()) {
        assert!((0.0..=1.0).contains(&p));
    }
}

#[test]
fn a_saved_model_loads_with_identical_predictions() {
    let model = ChurnModel::train(&sessions(2_000, 4), &options(5)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("churn.model");
    model.save(&path).unwrap();
    let loaded = ChurnModel::load(&path).unwrap();
    assert_eq!(loaded, model);
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
    let model = ChurnModel::train(&sessions(1_000, 6), &options(9)).unwrap();
    let bytes = model.to_bytes();
    assert!(load(&bytes).is_ok());

    let err = load(b"{\"not\": \"a model\"}").unwrap_err();
    assert!(matches!(err, ModelError::NotAModel { .. }), "{err}");
    assert!(matches!(
        load(b"").unwrap_err(),
        ModelError::NotAModel { .. }
    ));

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
    let few = sessions(5, 1);
    assert!(ChurnModel::train(&few, &options(1)).is_err());
    let mut all_churned = sessions(100, 1);
    all_churned.iter_mut().for_each(|s| s.churned = true);
    let err = ChurnModel::train(&all_churned, &options(1)).unwrap_err();
    assert!(err.to_string().contains("both outcomes"), "{err}");
    let mut bad = options(1);
    bad.params.max_features = 4;
    assert!(ChurnModel::train(&sessions(100, 1), &bad).is_err());
}
