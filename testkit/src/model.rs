//! A small churn model trained on made-up sessions, for tests that need one but not its
//! quality.

use clickflow_model::{ChurnModel, Example, Features, TrainOptions, TrainParams, FEATURE_COUNT};

/// A model of `trees` trees learnt from 400 made-up sessions in which cart adds make a
/// purchase likelier and long visits a churn (a cart add worth 20), with `seed`: other seeds
/// give other versions.
pub fn small_model(seed: u64, trees: usize) -> ChurnModel {
    let params = TrainParams {
        trees,
        min_samples_leaf: 5.0,
        seed,
        ..TrainParams::default()
    };
    model_of(400, params, |i| {
        let (views, carts, duration) = ((i % 9) as f64, (i % 3) as f64, (i * 7 % 900) as f64);
        let mut x = [0.0; FEATURE_COUNT];
        x[0] = views;
        x[1] = carts;
        x[2] = duration;
        x[5] = carts * 20.0;
        (x, carts == 0.0 || (duration > 600.0 && i % 2 == 0))
    })
}

/// A model trained with `params` on `sessions` made-up sessions, one example each, session
/// `i` starting at `i` seconds with the features and churn label `session(i)` gives.
pub fn model_of(
    sessions: u64,
    params: TrainParams,
    session: impl Fn(u64) -> ([f64; FEATURE_COUNT], bool),
) -> ChurnModel {
    let examples: Vec<Example> = (0..sessions)
        .map(|i| {
            let (features, churned) = session(i);
            Example {
                features: Features::from_array(features),
                churned,
                session_start: i as i64 * 1_000,
                known_at: i as i64 * 1_000 + 500,
                prefix_events: 1,
                session: i,
            }
        })
        .collect();
    let options = TrainOptions {
        params,
        ..TrainOptions::default()
    };
    ChurnModel::train(&examples, &options).expect("the made-up sessions train a model")
}
