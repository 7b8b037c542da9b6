//! How good a model is on sessions it did not learn from.

use serde::{Deserialize, Serialize};

/// Quality on a holdout set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Sessions evaluated.
    pub rows: usize,
    /// Share predicted right when a probability of 0.5 or more means "churns".
    pub accuracy: f64,
    /// Area under the ROC curve: the chance that a churned session scores higher than a
    /// retained one (0.5 is chance, 1.0 perfect).
    pub roc_auc: f64,
}

impl Evaluation {
    /// Evaluates `probabilities` against the true `churned` labels, pairwise.
    pub fn of(probabilities: &[f64], churned: &[bool]) -> Evaluation {
        assert_eq!(
            probabilities.len(),
            churned.len(),
            "one label per probability"
        );
        let right = probabilities
            .iter()
            .zip(churned)
            .filter(|(p, c)| (**p >= 0.5) == **c)
            .count();
        Evaluation {
            rows: churned.len(),
            accuracy: right as f64 / churned.len().max(1) as f64,
            roc_auc: roc_auc(probabilities, churned),
        }
    }
}

/// ROC AUC by the rank-sum (Mann–Whitney) formula, ties counted as half. `NaN` when one class
/// is missing.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start..=end (1-based: start+1..=end+1) share their mean.
        let mean_rank = (start + end) as f64 / 2.0 + 1.0;
        let positives = order[start..=end].iter().filter(|&&i| positive[i]).count();
        rank_sum += mean_rank * positives as f64;
        start = end + 1;
    }
    let positives = positive.iter().filter(|p| **p).count() as f64;
    let negatives = positive.len() as f64 - positives;
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_orderings() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &labels), 0.5);
        // One positive below one negative: 3 of 4 pairs ordered right.
        assert_eq!(roc_auc(&[0.1, 0.7, 0.6, 0.9], &labels), 0.75);
        assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_nan());
    }

    #[test]
    fn accuracy_uses_half_as_the_threshold() {
        let e = Evaluation::of(&[0.5, 0.49, 0.9, 0.1], &[true, false, false, false]);
        assert_eq!(e.rows, 4);
        assert_eq!(e.accuracy, 0.75);
    }
}
