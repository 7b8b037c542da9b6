//! The trained forest, stored flat for fast scoring and for the model file.
//!
//! Each linfa-trees decision tree is copied into a vector of [`Node`]s after training: a
//! split names the original feature and its threshold, a leaf holds the share of churned
//! sessions among the training sessions that reached it. Scoring walks the vector with no
//! allocation; the forest's probability is the mean of the leaves' shares over all trees
//! (smoother than a vote count, and never tied).

use linfa_trees::{DecisionTree, TreeNode};
use serde::{Deserialize, Serialize};

use crate::features::{Features, FEATURE_COUNT, FEATURE_NAMES};

/// One node of a flat tree. Children always come after their parent, so a walk from the
/// root ends.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// Go left when `features[feature] < threshold` (linfa's rule), right otherwise.
    Split {
        /// Index into [`FEATURE_NAMES`].
        feature: u8,
        /// The split value.
        threshold: f64,
        /// Index of the left child.
        left: u32,
        /// Index of the right child.
        right: u32,
    },
    /// The share of churned training sessions that ended here.
    Leaf {
        /// A probability in `[0, 1]`.
        churn: f64,
    },
}

/// One decision tree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    nodes: Vec<Node>,
}

/// A tree or forest that cannot be scored safely (from a damaged or foreign model file).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("tree {tree}, node {node}: {problem}")]
pub struct InvalidForest {
    /// The tree.
    pub tree: usize,
    /// The node.
    pub node: usize,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl Tree {
    /// Copies a linfa tree trained on the features `subset` (its feature `i` is
    /// `subset[i]` of [`FEATURE_NAMES`]); the leaves get the churn share of `samples`
    /// (features, churned, weight), the training examples of this tree, shrunk towards
    /// their overall share as if `prior` more examples of that share were in every leaf (an
    /// m-estimate: a small leaf's share is noisy, and an overconfident 0 or 1 costs dearly
    /// in log loss and calibration).
    pub(crate) fn from_linfa(
        tree: &DecisionTree<f64, bool>,
        subset: &[usize],
        samples: impl Iterator<Item = (Features, bool, f64)>,
        prior: f64,
    ) -> Tree {
        let mut nodes = Vec::new();
        copy_node(tree.root_node(), subset, &mut nodes);
        // (churned weight, total weight) per node; only leaves are ever reached.
        let mut tally = vec![(0.0, 0.0); nodes.len()];
        let (mut all_churned, mut all) = (0.0, 0.0);
        let mut tree = Tree { nodes };
        for (features, churned, weight) in samples {
            let leaf = tree.leaf_of(&features.to_array());
            let churned = if churned { weight } else { 0.0 };
            tally[leaf].0 += churned;
            tally[leaf].1 += weight;
            all_churned += churned;
            all += weight;
        }
        let share = if all > 0.0 { all_churned / all } else { 0.5 };
        for (index, node) in tree.nodes.iter_mut().enumerate() {
            if let Node::Leaf { churn } = node {
                let (churned, total) = tally[index];
                *churn = if total + prior > 0.0 {
                    (churned + prior * share) / (total + prior)
                } else {
                    share
                };
            }
        }
        tree
    }

    /// The index of the leaf `x` falls into.
    fn leaf_of(&self, x: &[f64; FEATURE_COUNT]) -> usize {
        let mut index = 0;
        loop {
            match self.nodes[index] {
                Node::Leaf { .. } => return index,
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    index = if x[usize::from(feature)] < threshold {
                        left
                    } else {
                        right
                    } as usize;
                }
            }
        }
    }

    /// The churn share of the leaf `x` falls into.
    fn predict(&self, x: &[f64; FEATURE_COUNT]) -> f64 {
        match self.nodes[self.leaf_of(x)] {
            Node::Leaf { churn } => churn,
            Node::Split { .. } => unreachable!("leaf_of returns leaves"),
        }
    }

    /// The nodes, root first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    fn validate(&self, tree: usize) -> Result<(), InvalidForest> {
        let fail = |node, problem| {
            Err(InvalidForest {
                tree,
                node,
                problem,
            })
        };
        if self.nodes.is_empty() {
            return fail(0, "the tree has no nodes");
        }
        for (index, node) in self.nodes.iter().enumerate() {
            match *node {
                Node::Leaf { churn } if !(0.0..=1.0).contains(&churn) => {
                    return fail(index, "leaf probability outside [0, 1]");
                }
                Node::Leaf { .. } => {}
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    if usize::from(feature) >= FEATURE_NAMES.len() {
                        return fail(index, "split on an unknown feature");
                    }
                    if threshold.is_nan() {
                        return fail(index, "split threshold is not a number");
                    }
                    for child in [left, right] {
                        if child as usize <= index || child as usize >= self.nodes.len() {
                            return fail(index, "child index out of order or out of range");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Appends `node` and its subtree to `nodes` (pre-order) and returns its index; leaves get
/// their probability later.
fn copy_node(node: &TreeNode<f64, bool>, subset: &[usize], nodes: &mut Vec<Node>) -> u32 {
    let index = nodes.len();
    nodes.push(Node::Leaf { churn: 0.5 });
    let children = node.children();
    if let (false, Some(left), Some(right)) = (node.is_leaf(), children[0], children[1]) {
        let (feature, threshold, _) = node.split();
        let left = copy_node(left, subset, nodes);
        let right = copy_node(right, subset, nodes);
        nodes[index] = Node::Split {
            feature: subset[feature] as u8,
            threshold,
            left,
            right,
        };
    }
    index as u32
}

/// A RandomForest: the mean of its trees' leaf probabilities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    trees: Vec<Tree>,
}

impl Forest {
    pub(crate) fn new(trees: Vec<Tree>) -> Forest {
        Forest { trees }
    }

    /// The forest of one of its trees: to show what the ensemble adds.
    pub(crate) fn single(tree: Tree) -> Forest {
        Forest { trees: vec![tree] }
    }

    /// The churn probability of one session.
    pub fn predict(&self, features: &Features) -> f64 {
        let x = features.to_array();
        let sum: f64 = self.trees.iter().map(|tree| tree.predict(&x)).sum();
        sum / self.trees.len() as f64
    }

    /// The churn probabilities of many sessions, in order. Session by session, each through
    /// every tree: measured faster than tree by tree over the batch (the whole forest fits
    /// in cache; the batch's rows and sums did not).
    pub fn predict_batch(&self, features: &[Features]) -> Vec<f64> {
        features.iter().map(|f| self.predict(f)).collect()
    }

    /// The trees.
    pub fn trees(&self) -> &[Tree] {
        &self.trees
    }

    /// Checks that every tree can be walked safely: children after parents and in range,
    /// known features, probabilities in `[0, 1]`, at least one tree.
    pub fn validate(&self) -> Result<(), InvalidForest> {
        if self.trees.is_empty() {
            return Err(InvalidForest {
                tree: 0,
                node: 0,
                problem: "the forest has no trees",
            });
        }
        self.trees
            .iter()
            .enumerate()
            .try_for_each(|(index, tree)| tree.validate(index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stump(threshold: f64, below: f64, above: f64) -> Tree {
        Tree {
            nodes: vec![
                Node::Split {
                    feature: 1,
                    threshold,
                    left: 1,
                    right: 2,
                },
                Node::Leaf { churn: below },
                Node::Leaf { churn: above },
            ],
        }
    }

    #[test]
    fn the_forest_averages_its_leaves() {
        let forest = Forest::new(vec![stump(0.5, 0.9, 0.2), stump(1.5, 0.7, 0.1)]);
        let session = |carts| {
            let mut x = [0.0; FEATURE_COUNT];
            x[0] = 3.0;
            x[1] = carts;
            Features::from_array(x)
        };
        let no_cart = session(0.0);
        let one_item = session(1.0);
        assert!((forest.predict(&no_cart) - 0.8).abs() < 1e-12);
        assert!((forest.predict(&one_item) - 0.45).abs() < 1e-12);
        assert_eq!(
            forest.predict_batch(&[no_cart, one_item]),
            vec![forest.predict(&no_cart), forest.predict(&one_item)]
        );
        assert!(forest.validate().is_ok());
    }

    #[test]
    fn a_cycle_or_bad_feature_is_rejected() {
        let mut cyclic = stump(0.5, 0.1, 0.2);
        cyclic.nodes[0] = Node::Split {
            feature: 0,
            threshold: 1.0,
            left: 0,
            right: 2,
        };
        assert!(Forest::new(vec![cyclic]).validate().is_err());
        let mut unknown = stump(0.5, 0.1, 0.2);
        unknown.nodes[0] = Node::Split {
            feature: FEATURE_COUNT as u8,
            threshold: 1.0,
            left: 1,
            right: 2,
        };
        assert!(Forest::new(vec![unknown]).validate().is_err());
        assert!(Forest::new(vec![]).validate().is_err());
        assert!(Forest::new(vec![stump(0.5, 1.5, 0.0)]).validate().is_err());
    }
}
