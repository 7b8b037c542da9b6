//! Training a forest on session prefixes, evaluated the way a data scientist would.
//!
//! **Examples** are sessions as known at moments before their first purchase (see
//! [`Example`]), labelled by how the session ended. **The split is by time**: sessions are
//! ordered by their start; the latest `holdout` share of them are evaluated, and the forest
//! learns only from sessions whose outcome was known before the first evaluated session
//! started (a session that straddles the boundary is in neither). So the evaluation is the
//! one that matters in production: a model trained on the past, scoring the future.
//!
//! **Baselines**, on the same evaluated examples: the base rate (every session gets the
//! training churn share), a logistic regression (linfa-logistic, L2, on `ln(1 + x)` of
//! every feature, standardised), and a single decision tree over all features (what the
//! ensemble adds). The forest should beat all three; the report says when it does not.
//!
//! **The forest.** Every tree is fitted on a bootstrap sample of the training examples and
//! a random subset of `max_features` of the features: linfa-trees has no per-split feature
//! sampling, so per tree is as random as the library allows. Each tree gets its own random
//! stream (the seed, and the tree's index as the stream), so the same examples and seed give
//! the same model whatever the number of threads.
//!
//! Determinism needs one more thing: linfa-trees picks a leaf's class from a `HashMap`, so a
//! leaf whose two classes weigh exactly the same would get a class at random, and pruning
//! (which merges sibling leaves of the same class) would then shape the tree at random. The
//! class weights make exact ties practically impossible (see `class_weights`).

use std::collections::BTreeSet;

use linfa::prelude::*;
use linfa_trees::{DecisionTree, SplitQuality};
use ndarray::{Array1, Array2};
use rand::seq::index::sample as sample_indices;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::baseline::Logistic;
use crate::evaluate::Evaluation;
use crate::features::{Example, Features, FEATURE_COUNT, FEATURE_NAMES};
use crate::file::ModelHeader;
use crate::forest::{Forest, Tree};

/// The most training examples accepted: weights stay exactly summable (see
/// [`class_weights`]).
pub const MAX_TRAIN_EXAMPLES: usize = 250_000;

/// The forest's hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// Trees in the forest.
    pub trees: usize,
    /// Maximum depth of a tree.
    pub max_depth: usize,
    /// Features each tree sees, drawn at random per tree.
    pub max_features: usize,
    /// Minimum training weight in a leaf: bootstrap counts, a churned example weighing 1
    /// and a bought one about the ratio of churned to bought examples.
    pub min_samples_leaf: f32,
    /// How many examples of the overall churn share every leaf's share is shrunk with
    /// (see [`Tree::from_linfa`]).
    pub leaf_prior: f64,
    /// Seed of the bootstrap samples and feature subsets.
    pub seed: u64,
}

impl Default for TrainParams {
    /// 31 trees, depth 10, 5 of the 8 features per tree (56 different subsets; on the
    /// shop's history 5 gave ROC AUC 0.849 where the usual square root, 3, gave 0.835 and
    /// all 8, bagging alone, 0.850 at 1.7 times the training time), at least 20 examples
    /// per leaf, leaves shrunk with 10 examples of the overall share.
    fn default() -> TrainParams {
        TrainParams {
            trees: 31,
            max_depth: 10,
            max_features: 5,
            min_samples_leaf: 20.0,
            leaf_prior: 10.0,
            seed: 42,
        }
    }
}

/// Which earlier sessions a model learns from, besides the evaluated ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitRule {
    /// Only sessions whose outcome was known before the first evaluated session started:
    /// the evaluation is then exactly that of a model trained at that moment and deployed
    /// (`clickflow train`).
    #[default]
    OutcomeKnown,
    /// Every session that started before the first evaluated one (all of them have ended
    /// by now): for a retrainer whose window of ended sessions is shorter than a session
    /// and its gap, where the rule above would leave nothing to learn from. No evaluated
    /// session is ever learnt from either way.
    Started,
}

/// Everything a training run needs besides the examples.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Hyperparameters.
    pub params: TrainParams,
    /// Share of the sessions, the latest by start, evaluated instead of learnt from.
    pub holdout: f64,
    /// Which earlier sessions are learnt from.
    pub split: SplitRule,
    /// At most this many training examples are used (a seeded sample beyond): keeps
    /// training to seconds on millions of examples.
    pub max_examples: usize,
    /// Recorded in the model file. The caller passes it (usually now) so that a test can
    /// train the same model file twice.
    pub trained_at: OffsetDateTime,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions {
            params: TrainParams::default(),
            holdout: 0.2,
            split: SplitRule::OutcomeKnown,
            max_examples: 200_000,
            trained_at: OffsetDateTime::now_utc(),
        }
    }
}

/// What training saw and achieved; stored in the model file's header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingReport {
    /// Sessions given.
    pub sessions: usize,
    /// Examples given.
    pub examples: usize,
    /// Sessions learnt from (outcome known before `split_at_ms`).
    pub train_sessions: usize,
    /// Examples learnt from (after the `max_examples` sample).
    pub train_examples: usize,
    /// Sessions evaluated (started at or after `split_at_ms`).
    pub test_sessions: usize,
    /// Examples evaluated.
    pub test_examples: usize,
    /// The time split (Unix ms).
    pub split_at_ms: i64,
    /// Share of the training examples that churned.
    pub churn_share: f64,
    /// The forest on the evaluated examples.
    pub forest: Evaluation,
    /// One tree over all features (no bootstrap), for comparison.
    pub single_tree: Evaluation,
    /// The logistic-regression baseline (`None` if it could not be fitted).
    pub logistic: Option<Evaluation>,
    /// The base rate: every example gets the training churn share.
    pub base_rate: Evaluation,
    /// Each feature's share of the impurity decrease, averaged over trees, in
    /// [`FEATURE_NAMES`] order.
    pub importances: Vec<(String, f64)>,
    /// The hyperparameters.
    pub params: TrainParams,
}

impl TrainingReport {
    /// Where the forest does worse than the logistic regression, by metric name (ROC AUC,
    /// PR AUC of buying, Brier score, log loss): empty when it is at least as good on all.
    pub fn worse_than_logistic(&self) -> Vec<&'static str> {
        let Some(logistic) = &self.logistic else {
            return Vec::new();
        };
        let forest = &self.forest;
        [
            ("ROC AUC", forest.roc_auc < logistic.roc_auc),
            (
                "PR AUC of buying",
                forest.pr_auc_purchase < logistic.pr_auc_purchase,
            ),
            ("Brier score", forest.brier > logistic.brier),
            ("log loss", forest.log_loss > logistic.log_loss),
        ]
        .into_iter()
        .filter(|(_, worse)| *worse)
        .map(|(name, _)| name)
        .collect()
    }

    /// The baselines the forest does not beat on ROC AUC, by name: empty when it beats all.
    pub fn beaten_by(&self) -> Vec<&'static str> {
        let mut beaten = Vec::new();
        let forest = self.forest.roc_auc;
        if self.single_tree.roc_auc >= forest {
            beaten.push("a single tree");
        }
        if self.logistic.as_ref().is_some_and(|l| l.roc_auc >= forest) {
            beaten.push("the logistic regression");
        }
        if forest.is_nan() || forest <= 0.5 {
            beaten.push("the base rate");
        }
        beaten
    }
}

/// What a REST request may leave out, and the value it then gets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureDefaults {
    /// The mean price of a cart add in the training data (currency units): a request
    /// without `cart_value` gets `num_cart_adds` times this.
    pub cart_add_price: f64,
}

/// Why no model could be trained.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Too few sessions on one side of the time split.
    #[error("{what}: {found} sessions are too few (at least {minimum} are needed); give more data or another --holdout")]
    TooFewSessions {
        /// Which side.
        what: &'static str,
        /// Sessions found.
        found: usize,
        /// The minimum.
        minimum: usize,
    },
    /// Every training example has the same label.
    #[error("every one of the {examples} training examples {}: a classifier needs both outcomes", if *.churned { "churned" } else { "purchased" })]
    OneClass {
        /// Training examples.
        examples: usize,
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

/// The fewest sessions training accepts on each side of the split.
pub const MIN_SESSIONS: usize = 10;

/// A trained churn model: its header (versions, report) and its forest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChurnModel {
    pub(crate) header: ModelHeader,
    pub(crate) forest: Forest,
}

/// Examples split by time: what is learnt from and what is evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeSplit {
    /// Examples of sessions whose outcome was known before `split_at_ms`.
    pub train: Vec<Example>,
    /// Examples of sessions that started at or after `split_at_ms`.
    pub test: Vec<Example>,
    /// The first start of an evaluated session (Unix ms).
    pub split_at_ms: i64,
}

impl TimeSplit {
    /// Splits `examples` so that the latest `holdout` share of sessions (by start) are
    /// evaluated and only sessions known before them are learnt from.
    pub fn of(examples: &[Example], holdout: f64) -> TimeSplit {
        TimeSplit::by(examples, holdout, SplitRule::OutcomeKnown)
    }

    /// Splits `examples`: the latest `holdout` share of sessions (by start) are evaluated,
    /// earlier ones learnt from as `rule` says.
    pub fn by(examples: &[Example], holdout: f64, rule: SplitRule) -> TimeSplit {
        let mut starts: Vec<(i64, u64)> = examples
            .iter()
            .map(|e| (e.session_start, e.session))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        starts.sort_unstable();
        let first_test = ((starts.len() as f64) * (1.0 - holdout)).floor() as usize;
        let split_at_ms = starts.get(first_test).map_or(i64::MAX, |s| s.0);
        TimeSplit {
            train: examples
                .iter()
                .filter(|e| e.session_start < split_at_ms)
                .filter(|e| rule == SplitRule::Started || e.known_at <= split_at_ms)
                .copied()
                .collect(),
            test: examples
                .iter()
                .filter(|e| e.session_start >= split_at_ms)
                .copied()
                .collect(),
            split_at_ms,
        }
    }
}

/// Sessions among `examples`.
fn sessions(examples: &[Example]) -> usize {
    examples
        .iter()
        .map(|e| e.session)
        .collect::<BTreeSet<_>>()
        .len()
}

impl ChurnModel {
    /// Trains on `examples`: splits them by time, fits the forest on the earlier sessions
    /// and evaluates it, and the baselines, on the later ones. The model returned is the one
    /// evaluated, so the report describes exactly what is shipped.
    pub fn train(examples: &[Example], options: &TrainOptions) -> Result<ChurnModel, TrainError> {
        let params = &options.params;
        check_params(params, options.holdout)?;
        check_examples(options.max_examples)?;
        let split = TimeSplit::by(examples, options.holdout, options.split);
        let (train_sessions, test_sessions) = (sessions(&split.train), sessions(&split.test));
        for (what, found) in [
            ("sessions to learn from", train_sessions),
            ("sessions to evaluate on", test_sessions),
        ] {
            if found < MIN_SESSIONS {
                return Err(TrainError::TooFewSessions {
                    what,
                    found,
                    minimum: MIN_SESSIONS,
                });
            }
        }
        let train = sample(&split.train, options.max_examples, params.seed);
        let churned = train.iter().filter(|e| e.churned).count();
        if churned == 0 || churned == train.len() {
            return Err(TrainError::OneClass {
                examples: train.len(),
                churned: churned > 0,
            });
        }
        let churn_share = churned as f64 / train.len() as f64;

        let (forest, importances) = fit_forest(&train, params)?;
        let all_features: Vec<usize> = (0..FEATURE_COUNT).collect();
        let (single, _) = fit_tree(&train, params, &all_features, None, usize::MAX)?;
        let single_tree = Forest::single(single);
        // linfa's logistic regression may fail on degenerate data; the model does not
        // depend on it, so the report then has no baseline (`None`).
        let logistic = Logistic::fit(&train).ok();

        let test = &split.test;
        let features: Vec<Features> = test.iter().map(|e| e.features).collect();
        let evaluate = |probabilities: &[f64]| {
            let labels: Vec<bool> = test.iter().map(|e| e.churned).collect();
            let prefixes: Vec<u32> = test.iter().map(|e| e.prefix_events).collect();
            Evaluation::of(probabilities, &labels, &prefixes)
        };
        let report = TrainingReport {
            sessions: sessions(examples),
            examples: examples.len(),
            train_sessions,
            train_examples: train.len(),
            test_sessions,
            test_examples: test.len(),
            split_at_ms: split.split_at_ms,
            churn_share,
            forest: evaluate(&forest.predict_batch(&features)),
            single_tree: evaluate(&single_tree.predict_batch(&features)),
            logistic: logistic.map(|l| evaluate(&l.predict_batch(&features))),
            base_rate: evaluate(&vec![churn_share; test.len()]),
            importances: FEATURE_NAMES
                .iter()
                .zip(importances)
                .map(|(name, share)| (name.to_string(), share))
                .collect(),
            params: params.clone(),
        };
        let defaults = FeatureDefaults {
            cart_add_price: mean_cart_add_price(&train),
        };
        let header = ModelHeader::new(&forest, options.trained_at, report, defaults);
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

    /// This model on `examples`.
    pub fn evaluate(&self, examples: &[Example]) -> Evaluation {
        let features: Vec<Features> = examples.iter().map(|e| e.features).collect();
        let labels: Vec<bool> = examples.iter().map(|e| e.churned).collect();
        let prefixes: Vec<u32> = examples.iter().map(|e| e.prefix_events).collect();
        Evaluation::of(&self.predict_batch(&features), &labels, &prefixes)
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
    if !(1..=FEATURE_COUNT).contains(&params.max_features) {
        return fail(format!(
            "--max-features must be between 1 and {FEATURE_COUNT}"
        ));
    }
    if !params.leaf_prior.is_finite() || params.leaf_prior < 0.0 {
        return fail("--leaf-prior must be a number >= 0".into());
    }
    if !params.min_samples_leaf.is_finite() || params.min_samples_leaf < 1.0 {
        return fail("--min-samples-leaf must be at least 1".into());
    }
    if !(holdout > 0.0 && holdout < 1.0) {
        return fail(format!("--holdout must be between 0 and 1, got {holdout}"));
    }
    Ok(())
}

fn check_examples(max_examples: usize) -> Result<(), TrainError> {
    if !(1..=MAX_TRAIN_EXAMPLES).contains(&max_examples) {
        return Err(TrainError::Params(format!(
            "--max-examples must be between 1 and {MAX_TRAIN_EXAMPLES} (linfa-trees sums weights in f32)"
        )));
    }
    Ok(())
}

/// At most `max` of `examples`, a seeded sample in their original order.
fn sample(examples: &[Example], max: usize, seed: u64) -> Vec<Example> {
    if examples.len() <= max {
        return examples.to_vec();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX);
    let mut chosen = sample_indices(&mut rng, examples.len(), max).into_vec();
    chosen.sort_unstable();
    chosen.into_iter().map(|i| examples[i]).collect()
}

fn mean_cart_add_price(examples: &[Example]) -> f64 {
    let (value, adds) = examples.iter().fold((0.0, 0.0), |(v, a), e| {
        (v + e.features.cart_value, a + e.features.num_cart_adds)
    });
    if adds > 0.0 {
        value / adds
    } else {
        0.0
    }
}

/// Fits every tree (on as many threads as the machine has) and returns the forest with the
/// mean feature importances.
fn fit_forest(train: &[Example], params: &TrainParams) -> Result<(Forest, Vec<f64>), TrainError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(params.trees);
    let fitted: Vec<Result<(Tree, Vec<f64>), TrainError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    (thread..params.trees)
                        .step_by(threads)
                        .map(|index| (index, random_tree(train, params, index)))
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
    let mut importances = vec![0.0; FEATURE_COUNT];
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

/// Tree `index` of the forest: its own bootstrap sample and feature subset.
fn random_tree(
    train: &[Example],
    params: &TrainParams,
    index: usize,
) -> Result<(Tree, Vec<f64>), TrainError> {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    rng.set_stream(index as u64 + 1);
    let mut multiplicity = vec![0u32; train.len()];
    for _ in 0..train.len() {
        multiplicity[rng.gen_range(0..train.len())] += 1;
    }
    let mut subset = sample_indices(&mut rng, FEATURE_COUNT, params.max_features).into_vec();
    subset.sort_unstable();
    fit_tree(train, params, &subset, Some(&multiplicity), index)
}

/// Weights that give both outcomes about the same total weight. Sessions that buy are a
/// few percent of all, so with equal weights every leaf's majority would be "churns" and
/// linfa-trees, which merges sibling leaves that predict the same class, would prune most
/// trees to a single leaf. Balanced weights shape the trees; the leaves' probabilities are
/// then counted without them, so they stay calibrated (see [`Tree::from_linfa`]).
///
/// linfa-trees sums weights in `f32`, so they are chosen to be summed exactly: a churned
/// example weighs 1 and a bought one `k + 1/32` (`k` the whole ratio of churned to bought),
/// multiples of 1/32 whose sums stay exact below 2^19 (hence [`MAX_TRAIN_EXAMPLES`]); with
/// inexact sums, rounding left a split side with a zero class total, which linfa asserts
/// against. The 1/32 also makes a leaf whose two classes weigh exactly the same need 32
/// bought examples in an exact ratio, so linfa's arbitrary choice on a tie (a `HashMap`
/// order) practically never shapes a tree.
fn class_weights(train: &[Example]) -> (f32, f32) {
    let churned = train.iter().filter(|e| e.churned).count().max(1);
    let bought = (train.len() - churned.min(train.len())).max(1);
    let k = (churned / bought).max(1);
    (1.0, k as f32 + 1.0 / 32.0)
}

/// Fits one linfa tree on the features `subset` of `train`, each example counted
/// `multiplicity` times (once each without); also returns its impurity decrease per feature
/// (all features, zero for those it did not see).
fn fit_tree(
    train: &[Example],
    params: &TrainParams,
    subset: &[usize],
    multiplicity: Option<&[u32]>,
    index: usize,
) -> Result<(Tree, Vec<f64>), TrainError> {
    let in_bag: Vec<(usize, u32)> = (0..train.len())
        .map(|i| (i, multiplicity.map_or(1, |m| m[i])))
        .filter(|(_, m)| *m > 0)
        .collect();
    let mut records = Array2::<f64>::zeros((in_bag.len(), subset.len()));
    for (row, &(i, _)) in in_bag.iter().enumerate() {
        let x = train[i].features.to_array();
        for (column, &feature) in subset.iter().enumerate() {
            records[(row, column)] = x[feature];
        }
    }
    let targets: Array1<bool> = in_bag.iter().map(|&(i, _)| train[i].churned).collect();
    let (churn_weight, buy_weight) = class_weights(train);
    let weights: Array1<f32> = in_bag
        .iter()
        .map(|&(i, m)| {
            m as f32
                * if train[i].churned {
                    churn_weight
                } else {
                    buy_weight
                }
        })
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

    let mut importance = vec![0.0; FEATURE_COUNT];
    for (column, share) in tree.feature_importance().into_iter().enumerate() {
        if share.is_finite() {
            importance[subset[column]] += share;
        }
    }
    let bag = in_bag
        .iter()
        .map(|&(i, m)| (train[i].features, train[i].churned, f64::from(m)));
    Ok((
        Tree::from_linfa(&tree, subset, bag, params.leaf_prior),
        importance,
    ))
}
