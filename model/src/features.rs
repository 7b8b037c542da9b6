//! The model's inputs: what is known of an open session at one moment, computed one way for
//! training, the dataflow's scoring and the REST API.
//!
//! | feature | what it is |
//! |---|---|
//! | `num_views` | product views (`click` events) so far |
//! | `num_cart_adds` | `add_to_cart` events so far |
//! | `duration_s` | seconds from the session's first event to its latest |
//! | `recency_s` | seconds from its latest event to the moment scored (see [`RECENCY_CHECKPOINTS_MS`]) |
//! | `distinct_products` | different products viewed |
//! | `cart_value` | the summed prices of its cart adds, in currency units |
//! | `user_sessions_before` | the user's earlier sessions that had ended (were final) when this one started |
//! | `user_purchases_before` | purchases in those sessions |
//!
//! A session is scored as known *before* its first purchase: the purchase, and everything
//! after it, are never features (a session that bought is converted and is not scored).

use serde::{Deserialize, Serialize};

/// The names of the features, in the order the model sees them.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "num_views",
    "num_cart_adds",
    "duration_s",
    "recency_s",
    "distinct_products",
    "cart_value",
    "user_sessions_before",
    "user_purchases_before",
];

/// How many features there are.
pub const FEATURE_COUNT: usize = 8;

/// The moments after a session's latest event at which it is scored again (event time): as
/// it happens, then after one, five and fifteen minutes of silence. Training takes its
/// examples at the same moments, so a model meets the recencies it learnt from; a recency
/// beyond the session gap never occurs (the session has ended by then), so only the
/// checkpoints within the gap apply ([`recency_checkpoints`]).
pub const RECENCY_CHECKPOINTS_MS: [i64; 4] = [0, 60_000, 300_000, 900_000];

/// The recency checkpoints that can occur with a session gap of `gap_ms`.
pub fn recency_checkpoints(gap_ms: i64) -> impl Iterator<Item = i64> + Clone {
    RECENCY_CHECKPOINTS_MS
        .into_iter()
        .filter(move |r| *r <= gap_ms)
}

/// What the model knows of a session at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Product views (`click` events).
    pub num_views: f64,
    /// `add_to_cart` events.
    pub num_cart_adds: f64,
    /// Seconds from the session's first to its latest event.
    pub duration_s: f64,
    /// Seconds from its latest event to the moment it is scored.
    pub recency_s: f64,
    /// Different products viewed.
    pub distinct_products: f64,
    /// Summed prices of the cart adds, in currency units.
    pub cart_value: f64,
    /// The user's sessions that were final before this one started.
    pub user_sessions_before: f64,
    /// Purchases in those sessions.
    pub user_purchases_before: f64,
}

/// What the dataflow counts of a session so far (before its first purchase).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionFacts {
    /// `click` events.
    pub num_views: i64,
    /// `add_to_cart` events.
    pub num_cart_adds: i64,
    /// Event time of its first event, Unix ms.
    pub session_start: i64,
    /// Event time of its latest event, Unix ms.
    pub last_event: i64,
    /// Different products viewed.
    pub distinct_products: i64,
    /// Summed prices of its cart adds, in cents.
    pub cart_value_cents: i64,
}

/// What is known of a user when one of their sessions starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserHistory {
    /// Their sessions that were final (closed by the gap) before it started.
    pub sessions: i64,
    /// Purchases in those sessions.
    pub purchases: i64,
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
    /// The features of `session` as known at event time `as_of` (at or after its latest
    /// event), for a user with `history`. Training, the dataflow and every other caller go
    /// through here, so the features are computed one way only.
    pub fn of(session: &SessionFacts, as_of: i64, history: UserHistory) -> Features {
        Features {
            num_views: session.num_views as f64,
            num_cart_adds: session.num_cart_adds as f64,
            duration_s: (session.last_event - session.session_start).max(0) as f64 / 1000.0,
            recency_s: (as_of - session.last_event).max(0) as f64 / 1000.0,
            distinct_products: session.distinct_products as f64,
            cart_value: session.cart_value_cents as f64 / 100.0,
            user_sessions_before: history.sessions as f64,
            user_purchases_before: history.purchases as f64,
        }
    }

    /// The features as the model's input vector, in [`FEATURE_NAMES`] order.
    pub fn to_array(self) -> [f64; FEATURE_COUNT] {
        [
            self.num_views,
            self.num_cart_adds,
            self.duration_s,
            self.recency_s,
            self.distinct_products,
            self.cart_value,
            self.user_sessions_before,
            self.user_purchases_before,
        ]
    }

    /// The features from an input vector in [`FEATURE_NAMES`] order.
    pub fn from_array(x: [f64; FEATURE_COUNT]) -> Features {
        Features {
            num_views: x[0],
            num_cart_adds: x[1],
            duration_s: x[2],
            recency_s: x[3],
            distinct_products: x[4],
            cart_value: x[5],
            user_sessions_before: x[6],
            user_purchases_before: x[7],
        }
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

/// One training or evaluation example: a session as known at one moment before its first
/// purchase, labelled by how the session ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Example {
    /// Its features at that moment.
    pub features: Features,
    /// True when the session ended without a purchase.
    pub churned: bool,
    /// Event time the session started (Unix ms): the time split orders sessions by it.
    pub session_start: i64,
    /// Event time from which the label was known: the session was final (Unix ms).
    pub known_at: i64,
    /// Events of the session seen at that moment.
    pub prefix_events: u32,
    /// Identifies the session among the examples (examples of one session share it).
    pub session: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_counts_seconds_and_money() {
        let session = SessionFacts {
            num_views: 4,
            num_cart_adds: 1,
            session_start: 10_000,
            last_event: 100_500,
            distinct_products: 3,
            cart_value_cents: 1999,
        };
        let history = UserHistory {
            sessions: 2,
            purchases: 1,
        };
        let f = Features::of(&session, 160_500, history);
        assert_eq!(f.to_array(), [4.0, 1.0, 90.5, 60.0, 3.0, 19.99, 2.0, 1.0]);
        assert_eq!(Features::from_array(f.to_array()), f);
    }

    #[test]
    fn validation_names_the_bad_feature() {
        let good = Features::of(&SessionFacts::default(), 0, UserHistory::default());
        assert!(good.validate().is_ok());
        let bad = Features {
            num_cart_adds: -1.0,
            ..good
        };
        assert_eq!(bad.validate().unwrap_err().feature, "num_cart_adds");
        let nan = Features {
            user_purchases_before: f64::NAN,
            ..good
        };
        assert_eq!(nan.validate().unwrap_err().feature, "user_purchases_before");
    }

    #[test]
    fn only_recencies_within_the_gap_are_checkpoints() {
        assert_eq!(
            recency_checkpoints(30 * 60_000).collect::<Vec<_>>(),
            RECENCY_CHECKPOINTS_MS
        );
        assert_eq!(
            recency_checkpoints(120_000).collect::<Vec<_>>(),
            [0, 60_000]
        );
    }
}
