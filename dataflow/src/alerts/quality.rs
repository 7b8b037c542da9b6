//! How well the detectors catch the shop's staged incidents: detection delay, misses, and
//! false alarms on the normal stretches (the measure of the alert-quality bench and of the
//! tests).
//!
//! An incident counts as detected when an alert of a series it should move, in the direction
//! it should move it ([`expected_alerts`]), is raised within [`DETECTION_WINDOWS`] windows of
//! the incident's first window; the delay is the number of windows from the incident's first
//! window to the one the alert was raised in, both counted (1: raised at the close of the
//! window where the incident began). An alert that opens during an incident or within
//! [`AFTERMATH_MS`] of its end belongs to it (visits under way when it ends, or a secondary
//! series); every other alert is a false alarm.

use std::collections::BTreeMap;

use clickflow_sources::shop::{Incident, IncidentKind};
use clickflow_sources::EventTime;
use compact_str::CompactString;

use crate::alerts::series::Series;
use crate::rows::{AlertKind, AlertRow};
use crate::window::WindowSize;

/// The windows within which an incident must be detected.
pub const DETECTION_WINDOWS: i64 = 3;
/// How long after an incident its effects may still raise alerts that belong to it: visits
/// that began during it go on for minutes.
pub const AFTERMATH_MS: i64 = 20 * 60_000;

/// The alerts an incident should raise: any one of them detects it.
pub fn expected_alerts(kind: IncidentKind) -> &'static [(Series, AlertKind)] {
    match kind {
        IncidentKind::Spike => &[
            (Series::Clicks, AlertKind::Spike),
            (Series::ClickUsers, AlertKind::Spike),
        ],
        IncidentKind::Drop => &[
            (Series::Clicks, AlertKind::Drop),
            (Series::ClickUsers, AlertKind::Drop),
        ],
        IncidentKind::CheckoutOutage => &[
            (Series::Purchases, AlertKind::Drop),
            (Series::PurchaseUsers, AlertKind::Drop),
            (Series::CartToPurchase, AlertKind::Drop),
            (Series::Revenue, AlertKind::Drop),
        ],
        IncidentKind::CartBug => &[
            (Series::CartAdds, AlertKind::Drop),
            (Series::CartUsers, AlertKind::Drop),
            (Series::ViewToCart, AlertKind::Drop),
        ],
        IncidentKind::MalformedStorm => &[(Series::Malformed, AlertKind::Spike)],
    }
}

/// What became of one incident.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentOutcome {
    /// The incident.
    pub incident: Incident,
    /// The first fitting alert raised in time: its id and the delay in windows.
    pub detected: Option<(CompactString, i64)>,
    /// Windows from the incident's end to that alert's resolution (`None`: still open).
    pub resolved_after: Option<i64>,
}

/// The detectors' quality over one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    /// Every incident, in order.
    pub outcomes: Vec<IncidentOutcome>,
    /// Alerts that belong to no incident.
    pub false_alarms: Vec<AlertRow>,
    /// The judged time outside every incident and its aftermath, in ms.
    pub normal_ms: i64,
}

impl Quality {
    /// Incidents detected in time.
    pub fn detected(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| o.detected.is_some())
            .count()
    }

    /// False alarms per day of normal traffic.
    pub fn false_alarms_per_day(&self) -> f64 {
        self.false_alarms.len() as f64 / (self.normal_ms.max(1) as f64 / 86_400_000.0)
    }
}

/// Judges `alerts` against the `incidents` of a shop that started at `start_ms`, over the
/// windows judged from `judged_from` to `judged_until` (event time); `open_after` is the
/// detectors' number of windows before an alert opens.
pub fn judge_quality(
    start_ms: EventTime,
    incidents: &[Incident],
    alerts: &BTreeMap<CompactString, AlertRow>,
    window: WindowSize,
    open_after: usize,
    (judged_from, judged_until): (EventTime, EventTime),
) -> Quality {
    let size = window.millis();
    let raised_at = |alert: &AlertRow| alert.opened + (open_after.max(1) as i64 - 1) * size;
    let span = |i: &Incident| {
        let from = window.window_of(start_ms + i.after_ms).start;
        (from, start_ms + i.after_ms + i.lasting_ms)
    };
    let outcomes = incidents
        .iter()
        .map(|incident| {
            let (first, end) = span(incident);
            let fitting = alerts
                .values()
                .filter(|a| expected_alerts(incident.kind).contains(&(a.series, a.kind)))
                .filter(|a| (first..first + DETECTION_WINDOWS * size).contains(&raised_at(a)))
                .min_by_key(|a| (raised_at(a), a.alert_id.clone()));
            IncidentOutcome {
                incident: *incident,
                detected: fitting.map(|a| (a.alert_id.clone(), (raised_at(a) - first) / size + 1)),
                resolved_after: fitting
                    .and_then(|a| a.resolved)
                    .map(|r| (r - window.window_of(end).start) / size),
            }
        })
        .collect();
    let belongs = |alert: &AlertRow| {
        incidents.iter().any(|i| {
            let (first, end) = span(i);
            (first..end + AFTERMATH_MS).contains(&alert.opened)
        })
    };
    let false_alarms = alerts.values().filter(|a| !belongs(a)).cloned().collect();
    let affected: i64 = incidents
        .iter()
        .map(|i| {
            let (first, end) = span(i);
            (end + AFTERMATH_MS).min(judged_until) - first.max(judged_from)
        })
        .filter(|ms| *ms > 0)
        .sum();
    Quality {
        outcomes,
        false_alarms,
        normal_ms: (judged_until - judged_from - affected).max(0),
    }
}
