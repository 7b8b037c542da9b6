//! The dashboard's live views: what the dataflow's closed epochs say, kept in memory.
//!
//! Worker 0 hands every [`EpochOutput`] to [`LiveViews::apply`] before the sink gets it, so
//! the charts and the JSON API read memory, never PostgreSQL, and stay fast under load. The
//! views keep the newest [`KEEP_WINDOWS`] windows of `event_trends` and `funnel_summary`, every
//! open session with its churn score, and the arrival rate. They tolerate changes they cannot
//! match (after a restart, the views start empty while the dataflow replays): a retraction of
//! an unknown row is ignored, an insertion replaces what is there.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clickflow_dataflow::rows::{
    AlertRow, ConversionRow, FunnelRow, SessionKey, SessionRow, TrendRow,
};
use clickflow_dataflow::runtime::watermark::{END_OF_INPUT, NO_WATERMARK};
use clickflow_dataflow::window::Window;
use clickflow_dataflow::EpochOutput;
use clickflow_sources::{EventTime, EventType, PartitionId};

use serde::Serialize;

use crate::rfc3339;

use crate::alerts::{AlertBoard, AlertView};
use crate::recs::RecsBoard;
use crate::stream::ChangeStream;

/// Windows kept per table: two hours of 1-minute windows.
pub const KEEP_WINDOWS: usize = 120;

/// How far back the arrival rate looks.
const RATE_SPAN: Duration = Duration::from_secs(5);

/// The live state behind the dashboard, shared between worker 0 and the web server.
#[derive(Debug, Default)]
pub struct LiveViews {
    inner: Mutex<Views>,
    alerts: Mutex<AlertBoard>,
    recs: Mutex<RecsBoard>,
    stream: ChangeStream,
}

#[derive(Debug, Default)]
struct Views {
    trends: BTreeMap<(EventTime, EventType), TrendRow>,
    funnel: BTreeMap<(EventTime, EventType), FunnelRow>,
    conversion: BTreeMap<(EventTime, EventType), ConversionRow>,
    funnel_window_ms: Option<i64>,
    open: HashMap<SessionKey, SessionRow>,
    scores: HashMap<SessionKey, f64>,
    watermark: Option<EventTime>,
    arrivals: VecDeque<(Instant, u64)>,
    epochs: u64,
    offsets: BTreeMap<PartitionId, i64>,
    scores_produced: u64,
}

/// One window of `event_trends`, all event types together.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrendWindow {
    /// Window start, Unix ms.
    pub window_start: EventTime,
    /// Window start, RFC 3339 (UTC).
    pub window_start_at: String,
    /// Window end, Unix ms.
    pub window_end: EventTime,
    /// Window end, RFC 3339 (UTC).
    pub window_end_at: String,
    /// True once the watermark has passed its end: its numbers are final.
    pub complete: bool,
    /// `click` events.
    pub click: i64,
    /// `add_to_cart` events.
    pub add_to_cart: i64,
    /// `purchase` events.
    pub purchase: i64,
    /// Revenue of the purchases, in currency units.
    pub revenue: f64,
}

/// One window of `funnel_summary`: distinct users per step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FunnelWindow {
    /// Window start, Unix ms.
    pub window_start: EventTime,
    /// Window start, RFC 3339 (UTC).
    pub window_start_at: String,
    /// Window end, Unix ms.
    pub window_end: EventTime,
    /// Window end, RFC 3339 (UTC).
    pub window_end_at: String,
    /// True once the watermark has passed its end.
    pub complete: bool,
    /// Users who viewed a product.
    pub click: i64,
    /// Users who added to the cart.
    pub add_to_cart: i64,
    /// Users who bought.
    pub purchase: i64,
}

/// One window of `funnel_conversion`: sessions that started in it, per ordered step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConversionWindow {
    /// Window start, Unix ms.
    pub window_start: EventTime,
    /// Window start, RFC 3339 (UTC).
    pub window_start_at: String,
    /// True once the conversion window of its sessions has passed: its numbers are final.
    pub complete: bool,
    /// Its steps, in funnel order.
    pub steps: Vec<ConversionStep>,
}

/// One step of a [`ConversionWindow`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConversionStep {
    /// `click`, `add_to_cart` or `purchase`.
    pub step: &'static str,
    /// Sessions that reached it, in order, within the conversion window.
    pub sessions: i64,
    /// `sessions` over the previous step's (click: over the window's sessions).
    pub conversion_from_previous: Option<f64>,
    /// Median seconds from the previous step (click: from the session's first event).
    pub median_time_from_previous_s: Option<f64>,
}

/// An open session and its churn probability.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtRisk {
    /// The session's id.
    pub session_id: String,
    /// The session's first event (Unix ms): with the id, its key.
    pub session_start: EventTime,
    /// The session's first event, RFC 3339 (UTC).
    pub session_start_at: String,
    /// Its user.
    pub user_id: String,
    /// Product views so far.
    pub num_views: i64,
    /// Cart additions so far.
    pub num_cart_adds: i64,
    /// Seconds from its first to its last event.
    pub duration_s: f64,
    /// The model's churn probability.
    pub churn_probability: f64,
}

/// Open sessions and how their churn scores spread.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChurnSummary {
    /// Open sessions.
    pub open_sessions: usize,
    /// Of those, sessions with a score.
    pub scored: usize,
    /// Scored sessions per probability bin of width `1 / bins.len()`, lowest first.
    pub bins: Vec<u64>,
}

/// The dataflow's side of pipeline health.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flow {
    /// Events accepted per second, over the last few seconds.
    pub events_per_second: f64,
    /// The pipeline watermark (Unix ms), once there is one.
    pub watermark: Option<EventTime>,
    /// Epochs seen.
    pub epochs: u64,
}

impl LiveViews {
    /// Shows `alerts` (read from the `alerts` table at start) as committed.
    pub fn seed_alerts(&self, alerts: &[AlertRow]) {
        let inserted: Vec<(AlertRow, isize)> = alerts.iter().map(|a| (a.clone(), 1)).collect();
        self.alert_board().apply(&inserted);
    }

    /// Open alerts first, then the newest resolved ones.
    pub fn alerts(&self) -> Vec<AlertView> {
        self.alert_board().views()
    }

    /// How many alerts are open.
    pub fn open_alerts(&self) -> usize {
        self.alert_board().open()
    }

    /// Reads the recommender's state.
    pub fn recs<T>(&self, read: impl FnOnce(&RecsBoard) -> T) -> T {
        read(
            &self
                .recs
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// Tells the views how the pipeline runs: with the recommender, how many of a session's
    /// latest items its recommendations are drawn from (`None`: without it, and its routes
    /// answer 503), and the ordered funnel's conversion window (default 30 minutes), after
    /// which a window's conversion is complete.
    pub fn configure(&self, session_items: Option<usize>, funnel_window_ms: i64) {
        let mut board = self
            .recs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        board.enabled = session_items.is_some();
        board.items_per_session = session_items.unwrap_or(board.items_per_session);
        drop(board);
        self.lock().funnel_window_ms = Some(funnel_window_ms);
    }

    fn alert_board(&self) -> std::sync::MutexGuard<'_, AlertBoard> {
        self.alerts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pushed changes (`GET /api/v1/stream`).
    pub fn stream(&self) -> &ChangeStream {
        &self.stream
    }

    /// Folds one closed epoch into the views, and pushes what it changed to the stream.
    pub fn apply(&self, output: &EpochOutput) {
        self.take(output);
        self.stream.publish(self, output);
    }

    fn take(&self, output: &EpochOutput) {
        if !output.alerts.is_empty() {
            self.alert_board().apply(&output.alerts);
        }
        {
            let mut recs = self.recs.lock().unwrap_or_else(|p| p.into_inner());
            recs.apply(
                &output.recommendations,
                &output.session_items,
                &output.product_names,
                &output.popular,
            );
            for (row, _) in output.sessions.iter().filter(|(r, d)| *d > 0 && r.closed) {
                recs.forget_session(&row.session_id);
            }
        }
        let mut views = self.lock();
        // A writer's part of an epoch (the parallel sink) carries rows, not progress.
        if !output.partitions.is_empty() || output.watermark != NO_WATERMARK {
            views.epochs += 1;
        }
        if output.watermark != NO_WATERMARK && output.watermark != END_OF_INPUT {
            views.watermark = Some(output.watermark);
        }
        let now = Instant::now();
        views.arrivals.push_back((now, output.arrived));
        while views
            .arrivals
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_SPAN)
        {
            views.arrivals.pop_front();
        }
        apply_keyed(&mut views.trends, &output.trends, |r| {
            (r.window.start, r.event_type)
        });
        apply_keyed(&mut views.funnel, &output.funnel, |r| {
            (r.window.start, r.event_type)
        });
        apply_keyed(&mut views.conversion, &output.conversion, |r| {
            (r.window.start, r.step)
        });
        keep_newest_windows(&mut views.conversion);
        keep_newest_windows(&mut views.trends);
        keep_newest_windows(&mut views.funnel);
        for (row, _) in output.sessions.iter().filter(|(_, d)| *d < 0) {
            let key = row.key();
            views.open.remove(&key);
            views.scores.remove(&key);
        }
        for (row, _) in output.sessions.iter().filter(|(_, d)| *d > 0) {
            if !row.closed {
                views.open.insert(row.key(), row.clone());
            }
        }
        for state in &output.partitions {
            views
                .offsets
                .insert(state.partition.clone(), state.next_offset);
        }
        for (score, _) in output.scores.iter().filter(|(_, d)| *d > 0) {
            views.scores_produced += 1;
            let key = score.key();
            if views.open.contains_key(&key) {
                views.scores.insert(key, score.churn_probability.0);
            }
        }
    }

    /// The newest `last` windows of `event_trends`, oldest first.
    pub fn trends(&self, last: usize) -> Vec<TrendWindow> {
        let views = self.lock();
        let rows = views.trends.values().map(|r| (r.window, r));
        pivot(
            rows,
            last,
            |window| TrendWindow {
                window_start: window.start,
                window_start_at: rfc3339(window.start),
                window_end: window.end,
                window_end_at: rfc3339(window.end),
                complete: views.is_complete(window.end),
                click: 0,
                add_to_cart: 0,
                purchase: 0,
                revenue: 0.0,
            },
            |window, row| {
                *step(window, row.event_type) = row.count;
                window.revenue += row.revenue_cents as f64 / 100.0;
            },
        )
    }

    /// The newest `last` windows of `funnel_summary`, oldest first.
    pub fn funnel(&self, last: usize) -> Vec<FunnelWindow> {
        let views = self.lock();
        let rows = views.funnel.values().map(|r| (r.window, r));
        pivot(
            rows,
            last,
            |window| FunnelWindow {
                window_start: window.start,
                window_start_at: rfc3339(window.start),
                window_end: window.end,
                window_end_at: rfc3339(window.end),
                complete: views.is_complete(window.end),
                click: 0,
                add_to_cart: 0,
                purchase: 0,
            },
            |window, row| {
                *step(window, row.event_type) = row.unique_users;
            },
        )
    }

    /// The newest `last` windows of `funnel_conversion`, oldest first. A window is complete
    /// once the watermark has passed the conversion window of its latest session.
    pub fn conversion(&self, last: usize) -> Vec<ConversionWindow> {
        let views = self.lock();
        let funnel_window_ms = views.funnel_window_ms.unwrap_or(30 * 60_000);
        let mut windows: Vec<ConversionWindow> = Vec::new();
        for row in views.conversion.values() {
            if windows
                .last()
                .is_none_or(|w| w.window_start != row.window.start)
            {
                windows.push(ConversionWindow {
                    window_start: row.window.start,
                    window_start_at: rfc3339(row.window.start),
                    complete: views.is_complete(row.window.end.saturating_add(funnel_window_ms)),
                    steps: Vec::new(),
                });
            }
            let window = windows.last_mut().expect("pushed");
            window.steps.push(ConversionStep {
                step: row.step.as_str(),
                sessions: row.sessions,
                conversion_from_previous: row.conversion_from_previous.map(|c| c.0),
                median_time_from_previous_s: row
                    .median_ms_from_previous
                    .map(|ms| ms as f64 / 1000.0),
            });
        }
        windows.split_off(windows.len().saturating_sub(last))
    }

    /// The `limit` scored open sessions most likely to churn, riskiest first (ties by
    /// session id, so the order is stable).
    pub fn at_risk(&self, limit: usize) -> Vec<AtRisk> {
        let views = self.lock();
        // The riskiest `limit` by a bounded heap: open sessions can number in the millions.
        let mut top: BinaryHeap<Reverse<Risk<'_>>> = BinaryHeap::with_capacity(limit + 1);
        for (id, p) in &views.scores {
            top.push(Reverse(Risk(*p, id)));
            if top.len() > limit {
                top.pop();
            }
        }
        let mut riskiest: Vec<Risk<'_>> = top.into_iter().map(|Reverse(r)| r).collect();
        riskiest.sort_by(|a, b| b.cmp(a));
        riskiest
            .into_iter()
            .filter_map(|Risk(p, key)| {
                let row = views.open.get(key)?;
                Some(AtRisk {
                    session_id: key.0.to_string(),
                    session_start: key.1,
                    session_start_at: rfc3339(key.1),
                    user_id: row.user_id.to_string(),
                    num_views: row.num_views,
                    num_cart_adds: row.num_cart_adds,
                    duration_s: row.duration_s(),
                    churn_probability: p,
                })
            })
            .collect()
    }

    /// How many sessions are open (without walking their scores, as [`LiveViews::churn`]
    /// does: the change stream asks on every epoch).
    pub fn open_sessions(&self) -> usize {
        self.lock().open.len()
    }

    /// How the open sessions' churn probabilities spread over `bins` equal bins.
    pub fn churn(&self, bins: usize) -> ChurnSummary {
        let views = self.lock();
        let bins = bins.max(1);
        let mut counts = vec![0u64; bins];
        for p in views.scores.values() {
            let bin = ((p * bins as f64) as usize).min(bins - 1);
            counts[bin] += 1;
        }
        ChurnSummary {
            open_sessions: views.open.len(),
            scored: views.scores.len(),
            bins: counts,
        }
    }

    /// Arrival rate, watermark and epochs.
    pub fn flow(&self) -> Flow {
        let views = self.lock();
        let events: u64 = views.arrivals.iter().map(|(_, n)| n).sum();
        let span = match (views.arrivals.front(), views.arrivals.back()) {
            (Some(first), Some(last)) => last.0.duration_since(first.0).max(RATE_SPAN / 5),
            _ => RATE_SPAN,
        };
        Flow {
            events_per_second: events as f64 / span.as_secs_f64(),
            watermark: views.watermark,
            epochs: views.epochs,
        }
    }

    /// The next offset of every partition seen.
    pub fn offsets(&self) -> Vec<(PartitionId, i64)> {
        let views = self.lock();
        views.offsets.iter().map(|(p, o)| (p.clone(), *o)).collect()
    }

    /// Churn scores inserted so far (a changed score counts once).
    pub fn scores_produced(&self) -> u64 {
        self.lock().scores_produced
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Views> {
        // The views hold no invariant a panic elsewhere could break half-way.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Views {
    fn is_complete(&self, window_end: EventTime) -> bool {
        self.watermark.is_some_and(|w| window_end <= w)
    }
}

/// A session's risk: higher probability first, then the smaller session key.
#[derive(PartialEq)]
struct Risk<'a>(f64, &'a SessionKey);

impl Eq for Risk<'_> {}

impl PartialOrd for Risk<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Risk<'_> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then_with(|| other.1.cmp(self.1))
    }
}

fn apply_keyed<K: Ord, R: Clone>(
    table: &mut BTreeMap<K, R>,
    changes: &[(R, isize)],
    key: impl Fn(&R) -> K,
) {
    for (row, _) in changes.iter().filter(|(_, d)| *d < 0) {
        table.remove(&key(row));
    }
    for (row, _) in changes.iter().filter(|(_, d)| *d > 0) {
        table.insert(key(row), row.clone());
    }
}

fn keep_newest_windows<R>(table: &mut BTreeMap<(EventTime, EventType), R>) {
    let starts: Vec<EventTime> = {
        let mut starts: Vec<EventTime> = table.keys().map(|(start, _)| *start).collect();
        starts.dedup();
        starts
    };
    if let Some(&oldest_kept) = starts.iter().rev().nth(KEEP_WINDOWS - 1) {
        table.retain(|(start, _), _| *start >= oldest_kept);
    }
}

/// Rows of one table, one per (window, event type), turned into one value per window (made
/// by `new`, filled by `add`); the newest `last` windows, oldest first.
fn pivot<'a, R: 'a, W>(
    rows: impl Iterator<Item = (Window, &'a R)>,
    last: usize,
    new: impl Fn(Window) -> W,
    add: impl Fn(&mut W, &R),
) -> Vec<W> {
    let mut windows: BTreeMap<EventTime, W> = BTreeMap::new();
    for (window, row) in rows {
        add(
            windows.entry(window.start).or_insert_with(|| new(window)),
            row,
        );
    }
    let skip = windows.len().saturating_sub(last);
    windows.into_values().skip(skip).collect()
}

/// The one of three per-step fields that belongs to `event_type`.
/// A window with one count per funnel step.
trait StepCounts {
    /// The counts of `click`, `add_to_cart` and `purchase`, in that order.
    fn counts(&mut self) -> [&mut i64; 3];
}

impl StepCounts for TrendWindow {
    fn counts(&mut self) -> [&mut i64; 3] {
        [&mut self.click, &mut self.add_to_cart, &mut self.purchase]
    }
}

impl StepCounts for FunnelWindow {
    fn counts(&mut self) -> [&mut i64; 3] {
        [&mut self.click, &mut self.add_to_cart, &mut self.purchase]
    }
}

/// The count of `event_type` in `window`.
fn step(window: &mut impl StepCounts, event_type: EventType) -> &mut i64 {
    let [click, add_to_cart, purchase] = window.counts();
    match event_type {
        EventType::Click => click,
        EventType::AddToCart => add_to_cart,
        EventType::Purchase => purchase,
    }
}
