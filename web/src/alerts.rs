//! The alerts the dashboard and `GET /api/v1/alerts` show: every open alert and the newest
//! resolved ones, kept in memory from the committed epochs (and, at start, from the `alerts`
//! table, so a restart shows the alerts that were open before it).

use std::collections::BTreeMap;

use clickflow_dataflow::rows::AlertRow;
use compact_str::CompactString;
use serde::Serialize;

use crate::rfc3339;

/// Resolved alerts kept beside the open ones.
pub const KEEP_RESOLVED: usize = 50;

/// Open and recently resolved alerts, by id.
#[derive(Debug, Default)]
pub(crate) struct AlertBoard {
    alerts: BTreeMap<CompactString, AlertRow>,
}

/// One alert, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlertView {
    /// Its id: `<series>:<opened window start>` or `rule:<name>:<...>`.
    pub alert_id: String,
    /// `spike`, `drop` or `rule`.
    pub kind: &'static str,
    /// The rule's name, for a rule's alert.
    pub rule: Option<String>,
    /// The series.
    pub series: &'static str,
    /// `warning` or `critical`.
    pub severity: &'static str,
    /// `open` or `resolved`.
    pub status: &'static str,
    /// The series' value in the latest anomalous window.
    pub observed: f64,
    /// What was expected there (a rule's bound).
    pub expected: f64,
    /// Start of the first anomalous window, Unix ms.
    pub opened_window_start: i64,
    /// The same, RFC 3339 (UTC).
    pub opened_window_start_at: String,
    /// Start of the latest anomalous window, Unix ms.
    pub latest_window_start: i64,
    /// The same, RFC 3339 (UTC).
    pub latest_window_start_at: String,
    /// Start of the first window back in the band, Unix ms.
    pub resolved_window_start: Option<i64>,
    /// The same, RFC 3339 (UTC).
    pub resolved_window_start_at: Option<String>,
}

impl AlertView {
    /// The view of `row`.
    pub fn of(row: &AlertRow) -> AlertView {
        AlertView {
            alert_id: row.alert_id.to_string(),
            kind: row.kind.as_str(),
            rule: row.rule.as_ref().map(ToString::to_string),
            series: row.series.name(),
            severity: row.severity.as_str(),
            status: if row.resolved.is_some() {
                "resolved"
            } else {
                "open"
            },
            observed: row.observed.0,
            expected: row.expected.0,
            opened_window_start: row.opened,
            opened_window_start_at: rfc3339(row.opened),
            latest_window_start: row.latest,
            latest_window_start_at: rfc3339(row.latest),
            resolved_window_start: row.resolved,
            resolved_window_start_at: row.resolved.map(rfc3339),
        }
    }
}

impl AlertBoard {
    /// Applies committed changes: an insertion replaces the alert's row; a retraction alone
    /// (never made by the detectors) removes it.
    pub(crate) fn apply(&mut self, changes: &[(AlertRow, isize)]) {
        for (row, diff) in changes {
            if *diff > 0 {
                self.alerts.insert(row.alert_id.clone(), row.clone());
            } else if !changes
                .iter()
                .any(|(r, d)| *d > 0 && r.alert_id == row.alert_id)
            {
                self.alerts.remove(&row.alert_id);
            }
        }
        self.forget_old_resolved();
    }

    fn forget_old_resolved(&mut self) {
        let mut resolved: Vec<(i64, CompactString)> = self
            .alerts
            .values()
            .filter_map(|a| a.resolved.map(|at| (at, a.alert_id.clone())))
            .collect();
        if resolved.len() <= KEEP_RESOLVED {
            return;
        }
        resolved.sort();
        for (_, id) in &resolved[..resolved.len() - KEEP_RESOLVED] {
            self.alerts.remove(id);
        }
    }

    /// Open alerts first (newest first), then resolved ones (newest first).
    pub(crate) fn views(&self) -> Vec<AlertView> {
        let mut views: Vec<AlertView> = self.alerts.values().map(AlertView::of).collect();
        views.sort_by_key(|v| {
            (
                v.resolved_window_start.is_some(),
                std::cmp::Reverse(v.resolved_window_start.unwrap_or(v.opened_window_start)),
                std::cmp::Reverse(v.opened_window_start),
            )
        });
        views
    }

    /// How many alerts are open.
    pub(crate) fn open(&self) -> usize {
        self.alerts
            .values()
            .filter(|a| a.resolved.is_none())
            .count()
    }
}
