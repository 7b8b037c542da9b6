//! The churn model: session features → churn probability.
//!
//! A RandomForest assembled from linfa-trees decision trees ([`forest`]): every tree is
//! trained on a bootstrap sample of the sessions and a random subset of the features, and the
//! forest's probability is the mean, over trees, of the churn share in the leaf a session
//! falls into. Training ([`train`]) holds out part of the sessions to measure accuracy and
//! ROC AUC ([`evaluate`]); the result is a [`ChurnModel`], saved and loaded as a versioned file
//! ([`file`](mod@file)). The same [`Features`] function feeds training, the dataflow's scoring and the
//! REST API, so they cannot drift apart.
//!
//! Why not linfa-ensemble's RandomForest: it cannot be serialised, and it breaks majority-vote
//! ties by `HashMap` order, so the same data would not give the same model twice.

#![deny(missing_docs)]

pub mod evaluate;
pub mod features;
pub mod file;
pub mod forest;
pub mod train;

pub use evaluate::Evaluation;
pub use features::{FeatureError, Features, Sample, FEATURE_NAMES};
pub use file::{ModelError, ModelHeader};
pub use forest::Forest;
pub use train::{ChurnModel, TrainError, TrainOptions, TrainParams, TrainingReport};
