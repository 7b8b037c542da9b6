//! The rows of the output tables, as the dataflow produces them.
//!
//! Each table is a collection of rows; the dataflow hands on its changes as `(row, diff)`
//! pairs: a changed row is a retraction of the old row (`-1`) and an insertion of the new one
//! (`+1`).

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use clickflow_model::{Features, SessionFacts, FEATURE_COUNT};
use clickflow_sources::{EventTime, EventType};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::operators::RouteKey;
use crate::window::Window;

/// `event_trends`: events (and revenue) per window and event type.
///
/// Revenue lives here, as a column of every `(window, event_type)` row, so that one table
/// answers "events and money per minute"; it is non-zero only on `purchase` rows.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrendRow {
    /// The window.
    pub window: Window,
    /// The event type.
    pub event_type: EventType,
    /// Events of that type in the window.
    pub count: i64,
    /// Sum of the prices of those events, in cents.
    pub revenue_cents: i64,
}

/// `funnel_summary`: exact distinct users per window and event type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FunnelRow {
    /// The window.
    pub window: Window,
    /// The event type.
    pub event_type: EventType,
    /// Distinct users with at least one event of that type in the window.
    pub unique_users: i64,
}

/// `session_features`: one row per session, keyed by `(session_id, session_start)`: one id
/// split by event-time gaps is several sessions (see [`crate::kpi::sessions`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionRow {
    /// The session.
    pub session_id: CompactString,
    /// Its user (the smallest id, should a session carry several).
    pub user_id: CompactString,
    /// Product views (`click` events).
    pub num_views: i64,
    /// `add_to_cart` events.
    pub num_cart_adds: i64,
    /// `purchase` events.
    pub num_purchases: i64,
    /// Event time of its first event.
    pub session_start: EventTime,
    /// Event time of its last event.
    pub last_event: EventTime,
    /// Different products viewed.
    pub num_products: i64,
    /// Summed prices of its cart adds, in cents.
    pub cart_value_cents: i64,
    /// True once the session is final: the watermark passed the end of the window holding
    /// `last_event` plus the session gap, so no event can join it any more.
    pub closed: bool,
}

impl SessionRow {
    /// The row's key: `(session_id, session_start)`.
    pub fn key(&self) -> SessionKey {
        (self.session_id.clone(), self.session_start)
    }

    /// `last_event - session_start`, in seconds.
    pub fn duration_s(&self) -> f64 {
        (self.last_event - self.session_start) as f64 / 1000.0
    }

    /// What the churn model counts of the session: the one place scoring, training and
    /// the oracle take it from.
    pub fn facts(&self) -> SessionFacts {
        SessionFacts {
            num_views: self.num_views,
            num_cart_adds: self.num_cart_adds,
            session_start: self.session_start,
            last_event: self.last_event,
            distinct_products: self.num_products,
            cart_value_cents: self.cart_value_cents,
        }
    }
}

/// The key of a session: its id and its start.
pub type SessionKey = (CompactString, EventTime);

/// `churn_scores`: the churn probability of every session, from its current features.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScoreRow {
    /// The session's id.
    pub session_id: CompactString,
    /// The session's start: with the id, the key of its `session_features` row.
    pub session_start: EventTime,
    /// Its user.
    pub user_id: CompactString,
    /// The model's churn probability.
    pub churn_probability: Probability,
    /// The version of the model that scored it.
    pub model_version: Arc<str>,
    /// The features it was scored on.
    pub features: FeatureValues,
    /// The event time the features describe: the session's last event plus the recency.
    pub as_of: EventTime,
}

/// Feature values, compared bit by bit so that rows holding them consolidate like any other
/// (features are finite numbers).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct FeatureValues(pub [f64; FEATURE_COUNT]);

impl FeatureValues {
    /// The values of `features`.
    pub fn of(features: &Features) -> FeatureValues {
        FeatureValues(features.to_array())
    }

    /// The features again.
    pub fn features(&self) -> Features {
        Features::from_array(self.0)
    }

    fn bits(&self) -> [u64; FEATURE_COUNT] {
        self.0.map(f64::to_bits)
    }
}

impl PartialEq for FeatureValues {
    fn eq(&self, other: &FeatureValues) -> bool {
        self.bits() == other.bits()
    }
}

impl Eq for FeatureValues {}

impl PartialOrd for FeatureValues {
    fn partial_cmp(&self, other: &FeatureValues) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FeatureValues {
    fn cmp(&self, other: &FeatureValues) -> Ordering {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| a.total_cmp(b))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl Hash for FeatureValues {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bits().hash(state);
    }
}

/// Implements equality, order and hashing on the bits of a newtype over `f64`, so that
/// rows holding one consolidate like any other (the values are never NaN).
macro_rules! compared_by_bits {
    ($name:ident) => {
        impl PartialEq for $name {
            fn eq(&self, other: &$name) -> bool {
                self.0.to_bits() == other.0.to_bits()
            }
        }

        impl Eq for $name {}

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &$name) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl Ord for $name {
            fn cmp(&self, other: &$name) -> Ordering {
                self.0.total_cmp(&other.0)
            }
        }

        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.0.to_bits().hash(state);
            }
        }
    };
}

/// A probability, ordered and compared by its bits so that rows holding it can be
/// consolidated like any other (the model never produces NaN).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Probability(pub f64);

compared_by_bits!(Probability);

impl ScoreRow {
    /// The row's key, the key of the session it scores.
    pub fn key(&self) -> SessionKey {
        (self.session_id.clone(), self.session_start)
    }
}

/// The kind of an alert: which way its series departed, or a static rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Above its band.
    Spike,
    /// Below its band.
    Drop,
    /// A static rule's bound crossed.
    Rule,
}

impl AlertKind {
    /// The name stored in `alerts.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Spike => "spike",
            AlertKind::Drop => "drop",
            AlertKind::Rule => "rule",
        }
    }
}

/// How bad an alert is: `critical` beyond twice the band (or as a rule says).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Outside the band.
    Warning,
    /// Far outside it.
    Critical,
}

impl Severity {
    /// The name stored in `alerts.severity`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A measured value, compared by its bits so that rows holding it consolidate like any other
/// (the detectors never produce NaN).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Measure(pub f64);

compared_by_bits!(Measure);

/// `alerts`: one row per alert, keyed by `alert_id`, from its opening to its resolution (see
/// [`crate::alerts`]). Every field is a function of the closed windows, so a replay computes
/// the same row; the wall-clock times (`raised_at`, `resolved_at`) are the sink's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertRow {
    /// `<series>:<opened window start, Unix ms>`, or `rule:<name>:<...>`: the key, and the
    /// webhook's idempotency key with the event's name.
    pub alert_id: CompactString,
    /// Spike, drop or rule.
    pub kind: AlertKind,
    /// The rule's name, for a rule's alert.
    pub rule: Option<CompactString>,
    /// The series it is about.
    pub series: crate::alerts::series::Series,
    /// The worst severity it reached.
    pub severity: Severity,
    /// The series' value in the latest anomalous window.
    pub observed: Measure,
    /// What was expected there (for a rule: its bound).
    pub expected: Measure,
    /// The start of the first anomalous window (Unix ms).
    pub opened: EventTime,
    /// The start of the latest anomalous window.
    pub latest: EventTime,
    /// The start of the first window back in the band (`None` while open).
    pub resolved: Option<EventTime>,
}

/// `product_recommendations`: one of a product's nearest neighbours by co-occurrence in
/// sessions, best first (see [`crate::recs`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecommendationRow {
    /// The product the neighbours are of.
    pub product_id: CompactString,
    /// 1 for the nearest.
    pub rank: i64,
    /// The neighbour.
    pub recommended_id: CompactString,
    /// Sessions with both over `sessions(product)^0.9 · sessions(recommended)^0.1` (the
    /// asymmetric cosine of [`crate::recs::similar::similarity`], in (0, 1]).
    pub score: Measure,
    /// Sessions (of the horizon, after down-sampling) that held both.
    pub co_sessions: i64,
}

impl RecommendationRow {
    /// The row's key: `(product_id, rank)`.
    pub fn key(&self) -> (CompactString, i64) {
        (self.product_id.clone(), self.rank)
    }
}

/// An item a live session viewed or carted, as counted by the recommender: what
/// `GET /api/v1/recommendations` starts from (kept by the live views, not written to
/// PostgreSQL).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionItem {
    /// The session, by the hash of its id ([`SessionItem::key_of`]): the recommender does
    /// not carry sessions' text.
    pub session_key: u64,
    /// The product, by the hash of its id ([`SessionItem::key_of`]); its text comes in a
    /// [`ProductName`].
    pub product_key: u64,
}

impl SessionItem {
    /// The key of the session or product `id` in [`SessionItem::session_key`] and
    /// [`SessionItem::product_key`].
    pub fn key_of(id: &str) -> u64 {
        CompactString::from(id).route()
    }
}

/// The text of a product key, present while some session of the horizon holds the product
/// (kept by the live views, which name a session's items with it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProductName {
    /// The product, by the hash of its id ([`SessionItem::key_of`]).
    pub product_key: u64,
    /// Its id.
    pub product_id: CompactString,
}

/// One of the most popular products of the horizon (kept by the live views for sessions
/// with nothing to go on).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PopularRow {
    /// 1 for the most popular.
    pub rank: i64,
    /// The product.
    pub product_id: CompactString,
    /// Sessions of the horizon that viewed or carted it.
    pub sessions: i64,
}

/// `funnel_conversion`: how many sessions that started in a window reached a step of the
/// ordered funnel click → add_to_cart → purchase within the conversion window (see
/// [`crate::conversion`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConversionRow {
    /// The window the sessions started in.
    pub window: Window,
    /// The step.
    pub step: EventType,
    /// Sessions that reached at least this step, in order.
    pub sessions: i64,
    /// `sessions` over the previous step's (for `click`: over every session that started
    /// in the window); `None` when the previous step has none.
    pub conversion_from_previous: Option<Measure>,
    /// The median (the lower one of an even count) time from the previous step (for
    /// `click`: from the session's first event), in milliseconds; `None` with no sessions.
    pub median_ms_from_previous: Option<i64>,
}
