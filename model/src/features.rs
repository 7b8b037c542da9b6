//! The model's inputs, computed one way for training, scoring and the REST API.

use serde::{Deserialize, Serialize};

/// The names of the features, in the order the model sees them.
pub const FEATURE_NAMES: [&str; 3] = ["num_views", "num_cart_adds", "duration_s"];

/// What the model knows of a session.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Product views (`click` events).
    pub num_views: f64,
    /// `add_to_cart` events.
    pub num_cart_adds: f64,
    /// Seconds from the session's first to its last event.
    pub duration_s: f64,
}

/// A feature value the model cannot take.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{feature} must be a finite number >= 0, got {value}")]
pub struct FeatureError {
    /// The feature's name.
    pub feature: &'static str,
    /// The value given.
    pub value: f64,
}

impl Features {
    /// The features of a session with `num_views` clicks, `num_cart_adds` cart additions and
    /// `duration_ms` milliseconds between its first and last event. Every caller (training,
    /// the dataflow) goes through here, so the features are computed one way only.
    pub fn of_session(num_views: i64, num_cart_adds: i64, duration_ms: i64) -> Features {
        Features {
            num_views: num_views as f64,
            num_cart_adds: num_cart_adds as f64,
            duration_s: duration_ms as f64 / 1000.0,
        }
    }

    /// The features as the model's input vector, in [`FEATURE_NAMES`] order.
    pub fn to_array(self) -> [f64; 3] {
        [self.num_views, self.num_cart_adds, self.duration_s]
    }

    /// Checks that every value is a finite number `>= 0`, as the features of a real session
    /// are; input from outside (REST) goes through here.
    pub fn validate(self) -> Result<Features, FeatureError> {
        for (feature, value) in FEATURE_NAMES.into_iter().zip(self.to_array()) {
            if !value.is_finite() || value < 0.0 {
                return Err(FeatureError { feature, value });
            }
        }
        Ok(self)
    }
}

/// One closed session to learn from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Its features.
    pub features: Features,
    /// True when it ended without a purchase.
    pub churned: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_features_are_counts_and_seconds() {
        let f = Features::of_session(4, 1, 90_500);
        assert_eq!(f.to_array(), [4.0, 1.0, 90.5]);
    }

    #[test]
    fn validation_names_the_bad_feature() {
        let bad = Features {
            num_views: 1.0,
            num_cart_adds: -1.0,
            duration_s: 0.0,
        };
        assert_eq!(bad.validate().unwrap_err().feature, "num_cart_adds");
        let nan = Features {
            duration_s: f64::NAN,
            ..Features::of_session(1, 0, 0)
        };
        assert_eq!(nan.validate().unwrap_err().feature, "duration_s");
        assert!(Features::of_session(0, 0, 0).validate().is_ok());
    }
}
