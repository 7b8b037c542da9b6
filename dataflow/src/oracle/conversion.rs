//! The ordered funnel's final rows, recounted session by session.

use std::collections::BTreeMap;

use clickflow_sources::{Event, EventType};

use crate::rows::{ConversionRow, Measure};
use crate::window::Window;

/// `funnel_conversion` over `sessions` (each one session's events, sorted by time), with
/// windows of `window_ms` and a conversion window of `funnel_window_ms`.
pub fn recount<'a>(
    sessions: impl IntoIterator<Item = &'a [&'a Event]>,
    window_ms: i64,
    funnel_window_ms: i64,
) -> BTreeMap<(Window, EventType), ConversionRow> {
    // Per window of start: sessions, and each step's times from the step before.
    let mut windows: BTreeMap<i64, (i64, [Vec<i64>; 3])> = BTreeMap::new();
    for events in sessions {
        let start = events[0].ts;
        let mut counted: Vec<(i64, EventType)> = events
            .iter()
            .filter(|e| e.ts < start + funnel_window_ms)
            .map(|e| (e.ts, e.event_type))
            .collect();
        counted.sort();
        let tally = windows
            .entry(start.div_euclid(window_ms) * window_ms)
            .or_default();
        tally.0 += 1;
        let mut at = start;
        let mut step = 0;
        for (ts, kind) in counted {
            if step < 3 && kind == EventType::ALL[step] && ts >= at {
                tally.1[step].push(ts - at);
                at = ts;
                step += 1;
            }
        }
    }
    let mut rows = BTreeMap::new();
    for (start, (sessions, mut times)) in windows {
        let window = Window {
            start,
            end: start + window_ms,
        };
        let mut previous = sessions;
        for (step, took) in EventType::ALL.into_iter().zip(times.iter_mut()) {
            took.sort();
            let reached = took.len() as i64;
            let row = ConversionRow {
                window,
                step,
                sessions: reached,
                conversion_from_previous: (previous > 0)
                    .then(|| Measure(reached as f64 / previous as f64)),
                median_ms_from_previous: (!took.is_empty()).then(|| took[(took.len() - 1) / 2]),
            };
            rows.insert((window, step), row);
            previous = reached;
        }
    }
    rows
}
