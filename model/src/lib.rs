//! The churn model: what is known of an open session → the probability it ends without a
//! purchase.
//!
//! A RandomForest assembled from linfa-trees decision trees ([`forest`]): every tree is
//! trained on a bootstrap sample and a random subset of the features, and the forest's
//! probability is the mean, over trees, of the churn share in the leaf a session falls into.
//! It learns from session *prefixes* (a session as known after some of its events, before
//! its first purchase: [`Example`]), is evaluated on later sessions than it learnt from,
//! against a logistic regression ([`baseline`](mod@baseline)), a single tree and the base
//! rate ([`train`], [`evaluate`]); the result is a [`ChurnModel`], saved and loaded as a
//! versioned file ([`file`](mod@file)). One function ([`Features::of`]) computes the features
//! for training, the dataflow's scoring and the REST API, so they cannot drift apart.
//!
//! Why not linfa-ensemble's RandomForest: it cannot be serialised, and it breaks majority-vote
//! ties by `HashMap` order, so the same data would not give the same model twice.

#![deny(missing_docs)]

pub mod baseline;
pub mod evaluate;
pub mod features;
pub mod file;
pub mod forest;
pub mod train;

pub use evaluate::Evaluation;
pub use features::{
    recency_checkpoints, Example, FeatureError, Features, SessionFacts, UserHistory, FEATURE_COUNT,
    FEATURE_NAMES, RECENCY_CHECKPOINTS_MS,
};
pub use file::{ModelError, ModelHeader};
pub use forest::Forest;
pub use train::{
    ChurnModel, FeatureDefaults, SplitRule, TimeSplit, TrainError, TrainOptions, TrainParams,
    TrainingReport,
};
