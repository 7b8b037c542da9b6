//! How good churn probabilities are against what happened.
//!
//! Churn is the positive class: a probability is the chance that the session ends without a
//! purchase. Besides the ranking (ROC AUC) the evaluation reports what a data scientist
//! checks before trusting a probability: precision–recall for each class (churn is the
//! common one, so its PR AUC is high for any model; the purchase class's shows how well the
//! few buyers are found), the Brier score and log loss (calibration and sharpness together),
//! a ten-bin calibration table, and the ranking by how much of the session was known
//! (after 1, 3 and 5 events).

use serde::{Deserialize, Serialize};

/// Prefix lengths (events seen) whose ROC AUC is reported on its own.
pub const PREFIX_LENGTHS: [u32; 3] = [1, 3, 5];

/// Probabilities are clipped to `[EPSILON, 1 - EPSILON]` for the log loss.
const EPSILON: f64 = 1e-6;

/// Quality on a set of examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Examples evaluated.
    pub examples: usize,
    /// Share of them that churned.
    pub churn_share: f64,
    /// Area under the ROC curve (0.5 is chance, 1.0 perfect).
    pub roc_auc: f64,
    /// Average precision of churn (the common class).
    pub pr_auc_churn: f64,
    /// Average precision of purchase (the rare class), ranking by `1 - p`.
    pub pr_auc_purchase: f64,
    /// Mean squared error of the probability (0 is perfect; the base rate scores
    /// `share · (1 − share)`).
    pub brier: f64,
    /// Mean negative log-likelihood, in nats.
    pub log_loss: f64,
    /// Share right when a probability of 0.5 or more means "churns".
    pub accuracy: f64,
    /// Ten equal-width bins of predicted probability.
    pub calibration: Vec<CalibrationBin>,
    /// ROC AUC of the examples that had seen exactly 1, 3 and 5 events.
    pub auc_by_prefix: Vec<PrefixAuc>,
}

/// One bin of the calibration table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lower edge of predicted probability (the upper is this plus 0.1).
    pub from: f64,
    /// Examples predicted in the bin.
    pub examples: usize,
    /// Their mean predicted probability (`None` when empty).
    pub predicted: Option<f64>,
    /// The share of them that churned (`None` when empty).
    pub observed: Option<f64>,
}

/// The ranking quality after a given number of events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrefixAuc {
    /// Events seen.
    pub events: u32,
    /// Examples with that many.
    pub examples: usize,
    /// Their ROC AUC (`None` when one class is missing).
    pub roc_auc: Option<f64>,
}

impl Evaluation {
    /// Evaluates `probabilities` against the true `churned` labels; `prefix_events[i]` is
    /// how many events example `i` had seen.
    pub fn of(probabilities: &[f64], churned: &[bool], prefix_events: &[u32]) -> Evaluation {
        assert_eq!(
            probabilities.len(),
            churned.len(),
            "one label per probability"
        );
        assert_eq!(
            probabilities.len(),
            prefix_events.len(),
            "one prefix per label"
        );
        let n = churned.len().max(1) as f64;
        let positives = churned.iter().filter(|c| **c).count();
        let right = probabilities
            .iter()
            .zip(churned)
            .filter(|(p, c)| (**p >= 0.5) == **c)
            .count();
        let brier = probabilities
            .iter()
            .zip(churned)
            .map(|(p, c)| (p - f64::from(u8::from(*c))).powi(2))
            .sum::<f64>()
            / n;
        let log_loss = probabilities
            .iter()
            .zip(churned)
            .map(|(p, c)| {
                let p = p.clamp(EPSILON, 1.0 - EPSILON);
                -if *c { p.ln() } else { (1.0 - p).ln() }
            })
            .sum::<f64>()
            / n;
        let purchase_scores: Vec<f64> = probabilities.iter().map(|p| 1.0 - p).collect();
        let purchased: Vec<bool> = churned.iter().map(|c| !c).collect();
        let auc_by_prefix = PREFIX_LENGTHS
            .into_iter()
            .map(|events| {
                let (scores, labels): (Vec<f64>, Vec<bool>) = probabilities
                    .iter()
                    .zip(churned)
                    .zip(prefix_events)
                    .filter(|(_, e)| **e == events)
                    .map(|((p, c), _)| (*p, *c))
                    .unzip();
                PrefixAuc {
                    events,
                    examples: scores.len(),
                    roc_auc: Some(roc_auc(&scores, &labels)).filter(|a| !a.is_nan()),
                }
            })
            .collect();
        Evaluation {
            examples: churned.len(),
            churn_share: positives as f64 / n,
            roc_auc: roc_auc(probabilities, churned),
            pr_auc_churn: average_precision(probabilities, churned),
            pr_auc_purchase: average_precision(&purchase_scores, &purchased),
            brier,
            log_loss,
            accuracy: right as f64 / n,
            calibration: calibration(probabilities, churned),
            auc_by_prefix,
        }
    }
}

/// One model version's predictions, evaluated against what happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionEvaluation {
    /// The model version.
    pub model_version: String,
    /// Its predictions.
    pub predictions: usize,
    /// The sessions they were about.
    pub sessions: usize,
    /// Their evaluation.
    pub evaluation: Evaluation,
}

/// One served prediction with how its session ended, as [`by_version`] takes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Served<'a> {
    /// The model version that said it.
    pub version: &'a str,
    /// The churn probability it gave.
    pub probability: f64,
    /// The session ended without a purchase.
    pub churned: bool,
    /// Events the session had seen.
    pub prefix_events: u32,
    /// The session (any number that tells sessions apart).
    pub session: u64,
}

/// Predictions grouped by the model version that made them, each group evaluated: the
/// backtest of `clickflow evaluate` and the live record of the dashboard.
pub fn by_version<'a>(served: impl IntoIterator<Item = Served<'a>>) -> Vec<VersionEvaluation> {
    let mut grouped: std::collections::BTreeMap<&str, Vec<Served<'a>>> = Default::default();
    for prediction in served {
        grouped
            .entry(prediction.version)
            .or_default()
            .push(prediction);
    }
    grouped
        .into_iter()
        .map(|(version, predictions)| {
            let probabilities: Vec<f64> = predictions.iter().map(|p| p.probability).collect();
            let churned: Vec<bool> = predictions.iter().map(|p| p.churned).collect();
            let prefixes: Vec<u32> = predictions.iter().map(|p| p.prefix_events).collect();
            let sessions: std::collections::HashSet<u64> =
                predictions.iter().map(|p| p.session).collect();
            VersionEvaluation {
                model_version: version.to_string(),
                predictions: predictions.len(),
                sessions: sessions.len(),
                evaluation: Evaluation::of(&probabilities, &churned, &prefixes),
            }
        })
        .collect()
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

/// Average precision (the area under the precision–recall curve as scikit-learn's
/// `average_precision_score` computes it): the mean, over positives, of the precision at
/// their score, tied scores taken together. `NaN` without positives.
pub fn average_precision(scores: &[f64], positive: &[bool]) -> f64 {
    let total_positives = positive.iter().filter(|p| **p).count();
    if total_positives == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut seen, mut hits, mut area) = (0usize, 0usize, 0.0);
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        let new_hits = order[start..=end].iter().filter(|&&i| positive[i]).count();
        seen += end - start + 1;
        hits += new_hits;
        area += new_hits as f64 / total_positives as f64 * (hits as f64 / seen as f64);
        start = end + 1;
    }
    area
}

fn calibration(probabilities: &[f64], churned: &[bool]) -> Vec<CalibrationBin> {
    let mut sums = [(0usize, 0.0, 0usize); 10];
    for (p, c) in probabilities.iter().zip(churned) {
        let bin = ((p * 10.0) as usize).min(9);
        sums[bin].0 += 1;
        sums[bin].1 += p;
        sums[bin].2 += usize::from(*c);
    }
    sums.iter()
        .enumerate()
        .map(|(i, (count, predicted, observed))| CalibrationBin {
            from: i as f64 / 10.0,
            examples: *count,
            predicted: (*count > 0).then(|| predicted / *count as f64),
            observed: (*count > 0).then(|| *observed as f64 / *count as f64),
        })
        .collect()
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
    fn average_precision_matches_a_hand_computation() {
        // Ranked: 0.9 (+), 0.8 (-), 0.7 (+), 0.1 (-): precision 1 at the first positive,
        // 2/3 at the second; mean 5/6 (scikit-learn gives the same).
        let ap = average_precision(&[0.1, 0.9, 0.7, 0.8], &[false, true, true, false]);
        assert!((ap - 5.0 / 6.0).abs() < 1e-12);
        // Ties are taken together: all four tied, half positive: precision 1/2.
        assert_eq!(
            average_precision(&[0.5; 4], &[true, false, true, false]),
            0.5
        );
    }

    #[test]
    fn scores_of_a_small_case() {
        let p = [0.9, 0.8, 0.3, 0.05];
        let churned = [true, false, true, false];
        let e = Evaluation::of(&p, &churned, &[1, 1, 3, 3]);
        assert_eq!(e.examples, 4);
        assert_eq!(e.accuracy, 0.5);
        let brier = (0.01 + 0.64 + 0.49 + 0.0025) / 4.0;
        assert!((e.brier - brier).abs() < 1e-12);
        let log_loss = -(0.9f64.ln() + 0.2f64.ln() + 0.3f64.ln() + 0.95f64.ln()) / 4.0;
        assert!((e.log_loss - log_loss).abs() < 1e-12);
        assert_eq!(e.calibration[9].examples, 1);
        assert_eq!(e.calibration[8].observed, Some(0.0));
        assert_eq!(e.calibration[5].predicted, None);
        assert_eq!(e.auc_by_prefix[0].examples, 2);
        assert_eq!(e.auc_by_prefix[0].roc_auc, Some(1.0));
        assert_eq!(e.auc_by_prefix[1].roc_auc, Some(1.0));
        assert_eq!(e.auc_by_prefix[2].roc_auc, None);
    }
}
