//! The logistic-regression baseline the forest is measured against.
//!
//! linfa-logistic (L2-regularised, its defaults) on `ln(1 + x)` of every feature, each then
//! standardised with the training mean and deviation: the usual first model of a data
//! scientist, and a fair one for counts and durations with long tails.

use linfa::prelude::*;
use linfa_logistic::{FittedLogisticRegression, LogisticRegression};
use ndarray::{Array1, Array2};

use crate::features::{Example, Features, FEATURE_COUNT};

/// A fitted logistic regression with its feature scaling.
pub struct Logistic {
    fitted: FittedLogisticRegression<f64, bool>,
    scaling: Scaling,
}

/// `ln(1 + x)`, then centred and scaled by the training mean and deviation.
struct Scaling {
    mean: [f64; FEATURE_COUNT],
    deviation: [f64; FEATURE_COUNT],
}

impl Logistic {
    /// Fits on `train`; the error is linfa's message.
    pub fn fit(train: &[Example]) -> Result<Logistic, String> {
        let logged: Vec<[f64; FEATURE_COUNT]> = train.iter().map(|e| log1p(e.features)).collect();
        let scaling = Scaling::of(&logged);
        let records = scaling.matrix(&logged);
        let targets: Array1<bool> = train.iter().map(|e| e.churned).collect();
        let fitted = LogisticRegression::default()
            .max_iterations(200)
            .fit(&Dataset::new(records, targets))
            .map_err(|e| e.to_string())?;
        Ok(Logistic { fitted, scaling })
    }

    /// Churn probabilities, in order.
    pub fn predict_batch(&self, features: &[Features]) -> Vec<f64> {
        let logged: Vec<[f64; FEATURE_COUNT]> = features.iter().map(|f| log1p(*f)).collect();
        let p = self
            .fitted
            .predict_probabilities(&self.scaling.matrix(&logged));
        // linfa gives the probability of the class it calls positive: the more frequent one.
        let churn_is_positive = self.fitted.labels().pos.class;
        p.iter()
            .map(|p| if churn_is_positive { *p } else { 1.0 - p })
            .collect()
    }
}

impl Scaling {
    fn of(rows: &[[f64; FEATURE_COUNT]]) -> Scaling {
        let n = rows.len().max(1) as f64;
        let mut mean = [0.0; FEATURE_COUNT];
        let mut deviation = [0.0; FEATURE_COUNT];
        for x in rows {
            for (m, v) in mean.iter_mut().zip(x) {
                *m += v / n;
            }
        }
        for x in rows {
            for ((d, v), m) in deviation.iter_mut().zip(x).zip(&mean) {
                *d += (v - m).powi(2) / n;
            }
        }
        // A constant feature scales by 1 (it stays 0 after centring).
        deviation
            .iter_mut()
            .for_each(|d| *d = if *d > 0.0 { d.sqrt() } else { 1.0 });
        Scaling { mean, deviation }
    }

    fn matrix(&self, rows: &[[f64; FEATURE_COUNT]]) -> Array2<f64> {
        let mut matrix = Array2::zeros((rows.len(), FEATURE_COUNT));
        for (i, x) in rows.iter().enumerate() {
            for j in 0..FEATURE_COUNT {
                matrix[(i, j)] = (x[j] - self.mean[j]) / self.deviation[j];
            }
        }
        matrix
    }
}

fn log1p(features: Features) -> [f64; FEATURE_COUNT] {
    features.to_array().map(f64::ln_1p)
}
