//! Training a forest on closed sessions, and the model it gives.
//!
//! Each tree gets its own random stream (the seed, and the tree's index as the stream), so the
//! same sessions and seed give the same model whatever the number of threads.
//!
//! Determinism needs one more thing: linfa-trees picks a leaf's class from a `HashMap`, so a
//! leaf whose two classes weigh exactly the same would get a class at random, and pruning
//! (which merges sibling leaves of the same class) would then shape the tree at random.
//! Churned sessions therefore weigh `1 + 2^-10` instead of 1: equal weights would need over a
//! thousand sessions in one leaf in an exact ratio, and the tilt is far too small to change
//! what the trees learn.

use linfa::prelude::*;
use linfa_trees::{DecisionTree, SplitQuality};
use ndarray::{Array1, Array2};
use rand::seq::index::sample as sample_indices;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::evaluate::Evaluation;
use crate::features::{Features, Sample, FEATURE_NAMES};
use crate::file::ModelHeader;
use crate::forest::{Forest, Tree};

/// The weight of a churned session relative to a retained one (see the module docs).
const CHURN_TILT: f32 = 1.0 + 1.0 / 1024.0;

/// The forest's hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// Trees in the forest.
    pub trees: usize,
    /// Maximum depth of a tree.
    pub max_depth: usize,
    /// Features each tree sees, drawn at random per tree (linfa-trees has no per-split
    /// subsampling).
    pub max_features: usize,
    /// Minimum training weight (bootstrap count) in a leaf.
    pub min_samples_leaf: f32,
    /// Seed of the bootstrap samples, feature subsets and holdout split.
    pub seed: u64,
}

impl Default for TrainParams {
    /// 31 trees (odd, like every default here that might vote), depth 8, 2 of the 3 features
    /// per tree, at least 5 sessions per leaf.
    fn default() -> TrainParams {
        TrainParams {
            trees: 31,
            max_depth: 8,
            max_features: 2,
            min_samples_leaf: 5.0,
            seed: 42,
        }
    }
}

/// Everything a training run needs besides the sessions.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Hyperparameters.
    pub params: TrainParams,
    /// Share of the sessions held out for evaluation.
    pub holdout: f64,
    /// Recorded in the model file. The caller passes it (usually now) so that a test can
    /// train the same model file twice.
    pub trained_at: OffsetDateTime,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions {
            params: TrainParams::default(),
            holdout: 0.2,
            trained_at: OffsetDateTime::now_utc(),
        }
    }
}

/// What training saw and achieved; stored in the model file's header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    /// Sessions given.
    pub rows: usize,
    /// Sessions the trees learned from (the rest were held out).
    pub train_rows: usize,
    /// Share of the given sessions that churned.
    pub churn_share: f64,
    /// Quality on the held-out sessions.
    pub holdout: Evaluation,
    /// Each feature's share of the impurity decrease, averaged over trees, in
    /// [`FEATURE_NAMES`] order.
    pub importances: Vec<(String, f64)>,
    /// The hyperparameters.
    pub params: TrainParams,
}

/// Why no model could be trained.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Too few sessions to learn and evaluate.
    #[error("{rows} closed sessions are too few to train on (at least {minimum} are needed)")]
    TooFewSessions {
        /// Sessions given.
        rows: usize,
        /// The minimum.
        minimum: usize,
    },
    /// Every session has the same label.
    #[error("every one of the {rows} sessions {}: a classifier needs both outcomes", if *.churned { "churned" } else { "purchased" })]
    OneClass {
        /// Sessions given.
        rows: usize,
        /// Their common label.
        churned: bool,
    },
    /// A hyperparameter is out of range.
    #[error("invalid training parameter: {0}")]
    Params(String),
    /// linfa refused to fit a tree.
    #[error("fitting tree {tree}: {message}")]
    Fit {
        /// The tree.
        tree: usize,
        /// linfa's message.
        message: String,
    },
}

/// The fewest sessions training accepts.
pub const MIN_SESSIONS: usize = 20;

/// A trained churn model: its header (versions, report) and its forest.
#[derive(Clone, Debug, PartialEq)]
pub struct ChurnModel {
    pub(crate) header: ModelHeader,
    pub(crate) forest: Forest,
}

impl ChurnModel {
    /// Trains on `samples`: a seeded shuffle holds out `options.holdout` of them, the forest
    /// learns from the rest and is evaluated on the held-out ones. The model returned is the
    /// one evaluated, so the report describes exactly what is shipped.
    pub fn train(samples: &[Sample], options: &TrainOptions) -> Result<ChurnModel, TrainError> {
        let params = &options.params;
        check_params(params, options.holdout)?;
        if samples.len() < MIN_SESSIONS {
            return Err(TrainError::TooFewSessions {
                rows: samples.len(),
                minimum: MIN_SESSIONS,
            });
        }
        let churned = samples.iter().filter(|s| s.churned).count();
        if churned == 0 || churned == samples.len() {
            return Err(TrainError::OneClass {
                rows: samples.len(),
                churned: churned > 0,
            });
        }
        let mut order: Vec<usize> = (0..samples.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        rng.set_stream(0);
        rand::seq::SliceRandom::shuffle(order.as_mut_slice(), &mut rng);
        let held = ((samples.len() as f64 * options.holdout).ceil() as usize).max(1);
        let (test, train): (Vec<Sample>, Vec<Sample>) = (
            order[..held].iter().map(|&i| samples[i]).collect(),
            order[held..].iter().map(|&i| samples[i]).collect(),
        );

        let (forest, importances) = fit_forest(&train, params)?;
        let probabilities =
            forest.predict_batch(&test.iter().map(|s| s.features).collect::<Vec<Features>>());
        let labels: Vec<bool> = test.iter().map(|s| s.churned).collect();
        let report = TrainingReport {
            rows: samples.len(),
            train_rows: train.len(),
            churn_share: churned as f64 / samples.len() as f64,
            holdout: Evaluation::of(&probabilities, &labels),
            importances: FEATURE_NAMES
                .iter()
                .zip(importances)
                .map(|(name, share)| (name.to_string(), share))
                .collect(),
            params: params.clone(),
        };
        let header = ModelHeader::new(&forest, options.trained_at, report);
        Ok(ChurnModel { header, forest })
    }

    /// The churn probability of one session.
    pub fn predict(&self, features: &Features) -> f64 {
        self.forest.predict(features)
    }

    /// The churn probabilities of many sessions, in order.
    pub fn predict_batch(&self, features: &[Features]) -> Vec<f64> {
        self.forest.predict_batch(features)
    }

    /// The model version: a hash of the forest, the same for the same trees.
    pub fn version(&self) -> &str {
        &self.header.model_version
    }

    /// The header: versions, training date and report.
    pub fn header(&self) -> &ModelHeader {
        &self.header
    }

    /// The forest.
    pub fn forest(&self) -> &Forest {
        &self.forest
    }
}

fn check_params(params: &TrainParams, holdout: f64) -> Result<(), TrainError> {
    let fail = |what: String| Err(TrainError::Params(what));
    if params.trees == 0 {
        return fail("--trees must be at least 1".into());
    }
    if params.max_depth == 0 {
        return fail("--max-depth must be at least 1".into());
    }
    if !(1..=FEATURE_NAMES.len()).contains(&params.max_features) {
        return fail(format!(
            "--max-features must be between 1 and {}",
            FEATURE_NAMES.len()
        ));
    }
    if !params.min_samples_leaf.is_finite() || params.min_samples_leaf < 1.0 {
        return fail("--min-samples-leaf must be at least 1".into());
    }
    if !(holdout > 0.0 && holdout < 1.0) {
        return fail(format!("--holdout must be between 0 and 1, got {holdout}"));
    }
    Ok(())
}

/// Fits every tree (on as many threads as the machine has) and returns the forest with the
/// mean feature importances.
fn fit_forest(train: &[Sample], params: &TrainParams) -> Result<(Forest, Vec<f64>), TrainError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(params.trees);
    let fitted: Vec<Result<(Tree, Vec<f64>), TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    (thread..params.trees)
                        .step_by(threads)
                        .map(|index| (index, fit_tree(train, params, index)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("a training thread panicked"))
            .collect();
        all.sort_by_key(|(index, _)| *index);
        all.into_iter().map(|(_, tree)| tree).collect()
    });
    let mut trees = Vec::with_capacity(params.trees);
    let mut importances = vec![0.0; FEATURE_NAMES.len()];
    for result in fitted {
        let (tree, importance) = result?;
        trees.push(tree);
        importances
            .iter_mut()
            .zip(importance)
            .for_each(|(a, b)| *a += b);
    }
    let total: f64 = importances.iter().sum();
    if total > 0.0 {
        importances.iter_mut().for_each(|share| *share /= total);
    }
    Ok((Forest::new(trees), importances))
}

/// Fits tree `index` on its bootstrap sample and feature subset; also returns its impurity
/// decrease per feature (all features, zero for those it did not see).
fn fit_tree(
    train: &[Sample],
    params: &TrainParams,
    index: usize,
) -> Result<(Tree, Vec<f64>), TrainError> {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    rng.set_stream(index as u64 + 1);
    let mut multiplicity = vec![0u32; train.len()];
    for _ in 0..train.len() {
        multiplicity[rng.gen_range(0..train.len())] += 1;
    }
    let mut subset = sample_indices(&mut rng, FEATURE_NAMES.len(), params.max_features).into_vec();
    subset.sort_unstable();

    let in_bag: Vec<(usize, u32)> = multiplicity
        .iter()
        .enumerate()
        .filter(|(_, m)| **m > 0)
        .map(|(i, m)| (i, *m))
        .collect();
    let mut records = Array2::<f64>::zeros((in_bag.len(), subset.len()));
    for (row, &(i, _)) in in_bag.iter().enumerate() {
        let x = train[i].features.to_array();
        for (column, &feature) in subset.iter().enumerate() {
            records[(row, column)] = x[feature];
        }
    }
    let targets: Array1<bool> = in_bag.iter().map(|&(i, _)| train[i].churned).collect();
    let weights: Array1<f32> = in_bag
        .iter()
        .map(|&(i, m)| m as f32 * if train[i].churned { CHURN_TILT } else { 1.0 })
        .collect();
    let names: Vec<String> = subset
        .iter()
        .map(|&f| FEATURE_NAMES[f].to_string())
        .collect();
    let dataset = Dataset::new(records, targets)
        .with_weights(weights)
        .with_feature_names(names);
    let tree = DecisionTree::params()
        .split_quality(SplitQuality::Gini)
        .max_depth(Some(params.max_depth))
        .min_weight_leaf(params.min_samples_leaf)
        .min_weight_split(2.0 * params.min_samples_leaf)
        .fit(&dataset)
        .map_err(|e| TrainError::Fit {
            tree: index,
            message: e.to_string(),
        })?;

    let mut importance = vec![0.0; FEATURE_NAMES.len()];
    for (column, share) in tree.feature_importance().into_iter().enumerate() {
        if share.is_finite() {
            importance[subset[column]] += share;
        }
    }
    let bag = in_bag
        .iter()
        .map(|&(i, m)| (train[i].features, train[i].churned, f64::from(m)));
    Ok((Tree::from_linfa(&tree, &subset, bag), importance))
}
