//! The oracle: the final tables recomputed by a plain sequential program.
//!
//! Independent of the dataflow's code on purpose (it shares only the row types): it walks
//! each partition in order, applies the late rule with its own arithmetic, and aggregates
//! with ordinary maps. Tests and the end-to-end benchmark compare the dataflow's final tables
//! with it; any difference is a bug in one of them.

mod conversion;
mod recs;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::fmt::Debug;
use std::sync::Arc;

use clickflow_model::{recency_checkpoints, ChurnModel, Features, UserHistory};

use clickflow_sources::decode::DecodeLimits;
use clickflow_sources::file::{FileSource, FileSourceError, FileSplits};
use clickflow_sources::{Event, EventTime, EventType, RejectKind, SourceBatch};
use compact_str::CompactString;

use crate::alerts::detect::{Detector, DetectorConfig};
use crate::alerts::series::{WindowCounts, WindowPoint};
use crate::config::DataflowConfig;
use crate::rows::{FeatureValues, FunnelRow, Probability, ScoreRow, SessionRow, TrendRow};
use crate::runtime::watermark::END_OF_INPUT;
use crate::tables::Tables;
use crate::window::Window;

/// The oracle's answer: the final rows, and which `(partition, offset)`s were late.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OracleTables {
    /// Final rows; its `dead_letters` and `offsets` are left empty.
    pub tables: Tables,
    /// `(global partition index, offset)` of every event rejected as late.
    pub late: BTreeSet<(u32, i64)>,
    /// `(global partition index, offset)` of every record that does not decode, when the
    /// oracle read the raw input ([`recompute_file`]); `None` when it was given events.
    pub malformed: Option<BTreeSet<(u32, i64)>>,
    /// Per partition, `(offset, highest event time counted up to and including it)` at every
    /// offset where the partition's clock moved: where a rejected payload is charged.
    pub clocks: Vec<Vec<(i64, EventTime)>>,
    /// True once [`OracleTables::judge_windows`] filled `window_series` and `alerts`, which
    /// [`OracleTables::differences`] then compares too.
    pub judged: bool,
}

/// Recomputes every table from the decoded events of each partition, given in partition
/// order as `(offset, event)`, as they stand once the input has ended (every window and
/// session final).
pub fn recompute(partitions: &[Vec<(i64, Event)>], config: &DataflowConfig) -> OracleTables {
    recompute_closed_by(partitions, config, END_OF_INPUT)
}

/// [`recompute`] for an input that has not ended, read up to the pipeline watermark
/// `watermark`: the recommender counts only the items whose window it has closed. (The
/// tables of windows and sessions are as [`recompute`] gives them; a caller whose input's
/// sessions are still open says so.)
pub fn recompute_streaming(
    partitions: &[Vec<(i64, Event)>],
    config: &DataflowConfig,
    watermark: EventTime,
) -> OracleTables {
    recompute_closed_by(partitions, config, watermark)
}

/// Every table, with the windows ending at or before `closed` closed.
fn recompute_closed_by(
    partitions: &[Vec<(i64, Event)>],
    config: &DataflowConfig,
    closed: EventTime,
) -> OracleTables {
    let size = config.window.millis();
    let mut counts: BTreeMap<(i64, EventType), (i64, i64)> = BTreeMap::new();
    let mut users: BTreeMap<(i64, EventType), BTreeSet<CompactString>> = BTreeMap::new();
    let mut by_session: HashMap<CompactString, Vec<&Event>> = HashMap::new();
    let mut late = BTreeSet::new();
    let mut clocks = Vec::with_capacity(partitions.len());
    for (index, events) in partitions.iter().enumerate() {
        let mut highest: Option<i64> = None;
        let mut clock = Vec::new();
        for (offset, event) in events {
            let start = event.ts.div_euclid(size) * size;
            if let Some(highest) = highest {
                if start + size <= highest - config.allowed_lateness_ms {
                    late.insert((index as u32, *offset));
                    continue;
                }
            }
            let moved = highest.is_none_or(|h| event.ts > h);
            highest = Some(highest.map_or(event.ts, |h: i64| h.max(event.ts)));
            if moved {
                clock.push((*offset, event.ts));
            }
            let tally = counts.entry((start, event.event_type)).or_default();
            tally.0 += 1;
            if event.event_type == EventType::Purchase {
                tally.1 += event.price_cents.unwrap_or(0);
            }
            users
                .entry((start, event.event_type))
                .or_default()
                .insert(event.user_id.clone());
            by_session
                .entry(event.session_id.clone())
                .or_default()
                .push(event);
        }
        clocks.push(clock);
    }
    let window = |start: i64| Window {
        start,
        end: start + size,
    };
    let mut tables = Tables::default();
    for ((start, event_type), (count, revenue_cents)) in counts {
        let row = TrendRow {
            window: window(start),
            event_type,
            count,
            revenue_cents,
        };
        tables.trends.insert((row.window, event_type), row);
    }
    for ((start, event_type), users) in users {
        let row = FunnelRow {
            window: window(start),
            event_type,
            unique_users: users.len() as i64,
        };
        tables.funnel.insert((row.window, event_type), row);
    }
    for events in by_session.values_mut() {
        events.sort_by_key(|e| e.ts);
    }
    let sessions = || {
        by_session
            .values()
            .flat_map(|events| split_at_gaps(events, config.session_gap_ms))
    };
    for session in sessions() {
        let row = session_row(session);
        tables.sessions.insert(row.key(), row);
    }
    tables.conversion = conversion::recount(sessions(), size, config.funnel_window_ms);
    if let Some(recs) = &config.recommendations {
        // The horizon's clock at the end: the lowest of the partitions' last watermarks
        // (none before a partition's first event).
        let clock = clocks
            .iter()
            .map(|clock| {
                clock.last().map_or(EventTime::MIN, |&(_, highest)| {
                    highest.saturating_sub(config.allowed_lateness_ms)
                })
            })
            .min()
            .unwrap_or(EventTime::MIN);
        tables.recommendations = recs::recount(&by_session, clock, closed, config.window, recs);
    }
    OracleTables {
        tables,
        late,
        malformed: None,
        clocks,
        judged: false,
    }
}

/// The sessions of one id's events (sorted by time): a new one wherever two consecutive
/// events are more than `gap_ms` apart.
fn split_at_gaps<'a>(
    events: &'a [&'a Event],
    gap_ms: i64,
) -> impl Iterator<Item = &'a [&'a Event]> {
    events.chunk_by(move |a, b| b.ts - a.ts <= gap_ms)
}

fn session_row(events: &[&Event]) -> SessionRow {
    let count = |t: EventType| events.iter().filter(|e| e.event_type == t).count() as i64;
    let of_type = |t: EventType| events.iter().filter(move |e| e.event_type == t);
    let products: BTreeSet<&str> = of_type(EventType::Click)
        .filter_map(|e| e.product_id.as_deref())
        .collect();
    SessionRow {
        session_id: events[0].session_id.clone(),
        user_id: events
            .iter()
            .map(|e| e.user_id.clone())
            .min()
            .expect("a session has events"),
        num_views: count(EventType::Click),
        num_cart_adds: count(EventType::AddToCart),
        num_purchases: count(EventType::Purchase),
        session_start: events[0].ts,
        last_event: events[events.len() - 1].ts,
        num_products: products.len() as i64,
        cart_value_cents: of_type(EventType::AddToCart)
            .map(|e| e.price_cents.unwrap_or(0))
            .sum(),
        closed: true,
    }
}

/// The oracle over an input file: each split read on its own, in order.
pub fn recompute_file(
    splits: &FileSplits,
    config: &DataflowConfig,
) -> Result<OracleTables, FileSourceError> {
    let mut partitions = Vec::with_capacity(splits.len());
    let mut malformed = BTreeSet::new();
    for index in 0..splits.len() {
        let mut source = FileSource::open(splits, &[(index, None)], DecodeLimits::default())?;
        let mut events = Vec::new();
        let mut batch = SourceBatch::default();
        while !source.is_finished() {
            source.poll(&mut batch, 4096)?;
            events.extend(batch.events.drain(..).map(|e| (e.offset, e.event)));
            malformed.extend(batch.dead_letters.iter().map(|d| (index as u32, d.offset)));
            batch.clear();
        }
        partitions.push(events);
    }
    let mut oracle = recompute(&partitions, config);
    oracle.malformed = Some(malformed);
    Ok(oracle)
}

impl OracleTables {
    /// Fills `window_series` and `alerts` as a sequential run sees them at the end of the
    /// input: every window from the first to the last that counted anything, with the rows
    /// of the oracle's own `event_trends` and `funnel_summary`, and each rejection charged
    /// to its partition's clock just before it; then the detectors fed those windows in order.
    pub fn judge_windows(&mut self, config: &DataflowConfig, detector: &DetectorConfig) {
        let size = config.window.millis();
        let mut counts: BTreeMap<i64, WindowCounts> = BTreeMap::new();
        for row in self.tables.trends.values() {
            counts
                .entry(row.window.start)
                .or_default()
                .add_trend(row, 1);
        }
        for row in self.tables.funnel.values() {
            counts
                .entry(row.window.start)
                .or_default()
                .add_funnel(row, 1);
        }
        let clock_before = |partition: u32, offset: i64| -> Option<EventTime> {
            let clock = self.clocks.get(partition as usize)?;
            let known = clock.partition_point(|(o, _)| *o < offset);
            known.checked_sub(1).map(|i| clock[i].1)
        };
        let rejected = self
            .late
            .iter()
            .map(|&(p, o)| (p, o, true))
            .chain(self.malformed.iter().flatten().map(|&(p, o)| (p, o, false)));
        for (partition, offset, late) in rejected {
            if let Some(at) = clock_before(partition, offset) {
                counts
                    .entry(at.div_euclid(size) * size)
                    .or_default()
                    .add_rejection(late);
            }
        }
        let (Some(&first), Some(&last)) = (counts.keys().next(), counts.keys().next_back()) else {
            self.judged = true;
            return;
        };
        let mut detector = Detector::new(detector.clone());
        let mut changes = Vec::new();
        for start in (first..=last).step_by(size as usize) {
            let point = WindowPoint {
                window: config.window.window_of(start),
                counts: counts.get(&start).copied().unwrap_or_default(),
            };
            detector.observe(&point, &mut changes);
            self.tables.series.insert(start, point);
        }
        for (row, diff) in changes {
            if diff < 0 {
                self.tables.alerts.remove(&row.alert_id);
            } else {
                self.tables.alerts.insert(row.alert_id.clone(), row);
            }
        }
        self.judged = true;
    }

    /// Fills `churn_scores` as the model sees each final session that did not buy: as known
    /// at its last recency checkpoint within the gap (where every session is when it
    /// closes), with its user's sessions final before it started (final: the end of the
    /// window holding `last_event + gap`). One `predict` per session, independent of the
    /// dataflow's per-user scoring. For a finished input, where every session is closed.
    pub fn score_with(&mut self, model: &ChurnModel, config: &DataflowConfig) {
        self.score_at(model, config, EventTime::MAX);
    }

    /// [`OracleTables::score_with`] for a pipeline stopped at `watermark`, whose open
    /// sessions (`closed == false`) are scored as known then: at the last recency
    /// checkpoint the watermark has passed, with the user's sessions final by then.
    pub fn score_at(&mut self, model: &ChurnModel, config: &DataflowConfig, watermark: EventTime) {
        let version: Arc<str> = model.version().into();
        let size = config.window.millis();
        let final_at = |last: i64| ((last + config.session_gap_ms).div_euclid(size) + 1) * size;
        let mut by_user: HashMap<&CompactString, Vec<(i64, i64)>> = HashMap::new();
        for session in self.tables.sessions.values().filter(|s| s.closed) {
            by_user
                .entry(&session.user_id)
                .or_default()
                .push((final_at(session.last_event), session.num_purchases));
        }
        let checkpoints: Vec<i64> = recency_checkpoints(config.session_gap_ms).collect();
        let scores = self
            .tables
            .sessions
            .iter()
            .filter(|(_, session)| session.num_purchases == 0)
            .map(|(key, session)| {
                let known_by = session.session_start.min(watermark);
                let mut history = UserHistory::default();
                for (closed_at, purchases) in by_user.get(&session.user_id).into_iter().flatten() {
                    if *closed_at <= known_by {
                        history.sessions += 1;
                        history.purchases += purchases;
                    }
                }
                let recency = checkpoints
                    .iter()
                    .rev()
                    .find(|r| session.closed || session.last_event.saturating_add(**r) <= watermark)
                    .copied()
                    .unwrap_or(0);
                let as_of = session.last_event + recency;
                let features = Features::of(&session.facts(), as_of, history);
                let score = ScoreRow {
                    session_id: key.0.clone(),
                    session_start: key.1,
                    user_id: session.user_id.clone(),
                    churn_probability: Probability(model.predict(&features)),
                    model_version: version.clone(),
                    features: FeatureValues::of(&features),
                    as_of,
                };
                (key.clone(), score)
            })
            .collect();
        self.tables.scores = scores;
    }

    /// How `tables` differ from the oracle: at most a few rows per table, described; empty
    /// when they are equal. Dead letters are compared on the offsets of late events and,
    /// when the oracle read the raw input, of malformed records; a record dead-lettered
    /// twice is a difference too.
    pub fn differences(&self, tables: &Tables) -> Vec<String> {
        let mut found = Vec::new();
        differ(
            "event_trends",
            &tables.trends,
            &self.tables.trends,
            &mut found,
        );
        differ(
            "funnel_summary",
            &tables.funnel,
            &self.tables.funnel,
            &mut found,
        );
        differ(
            "session_features",
            &tables.sessions,
            &self.tables.sessions,
            &mut found,
        );
        differ(
            "churn_scores",
            &tables.scores,
            &self.tables.scores,
            &mut found,
        );
        if self.judged {
            differ(
                "window_series",
                &tables.series,
                &self.tables.series,
                &mut found,
            );
            differ("alerts", &tables.alerts, &self.tables.alerts, &mut found);
        }
        differ(
            "product_recommendations",
            &tables.recommendations,
            &self.tables.recommendations,
            &mut found,
        );
        differ(
            "funnel_conversion",
            &tables.conversion,
            &self.tables.conversion,
            &mut found,
        );
        let late: BTreeSet<(u32, i64)> = tables
            .dead_letters
            .iter()
            .filter(|d| d.rejection.kind == RejectKind::Late)
            .map(|d| (d.partition.partition as u32, d.offset))
            .collect();
        for extra in late.difference(&self.late).take(3) {
            found.push(format!(
                "late: {extra:?} is late in the tables but not for the oracle"
            ));
        }
        for missing in self.late.difference(&late).take(3) {
            found.push(format!(
                "late: {missing:?} is late for the oracle but not in the tables"
            ));
        }
        let all: BTreeSet<(u32, i64)> = tables
            .dead_letters
            .iter()
            .map(|d| (d.partition.partition as u32, d.offset))
            .collect();
        if all.len() != tables.dead_letters.len() {
            found.push(format!(
                "dead letters: {} rows for {} records",
                tables.dead_letters.len(),
                all.len()
            ));
        }
        if let Some(malformed) = &self.malformed {
            let rejected: BTreeSet<(u32, i64)> = tables
                .dead_letters
                .iter()
                .filter(|d| d.rejection.kind != RejectKind::Late)
                .map(|d| (d.partition.partition as u32, d.offset))
                .collect();
            for extra in rejected.symmetric_difference(malformed).take(3) {
                found.push(format!(
                    "malformed: {extra:?} is dead-lettered in only one of the tables and the oracle"
                ));
            }
        }
        found
    }
}

fn differ<K: Ord + Debug, V: PartialEq + Debug>(
    table: &str,
    actual: &BTreeMap<K, V>,
    oracle: &BTreeMap<K, V>,
    found: &mut Vec<String>,
) {
    let keys: BTreeSet<&K> = actual.keys().chain(oracle.keys()).collect();
    let differing = keys.into_iter().filter(|k| actual.get(k) != oracle.get(k));
    for key in differing.take(3) {
        found.push(format!(
            "{table} ({} rows, oracle {}): {key:?}: got {:?}, oracle {:?}",
            actual.len(),
            oracle.len(),
            actual.get(key),
            oracle.get(key)
        ));
    }
}
