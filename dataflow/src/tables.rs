//! The output tables held in memory: what PostgreSQL holds after applying every epoch.
//!
//! Used by tests and benchmarks to compare the dataflow with the oracle, and as the
//! reference of what the sink must write.

use std::collections::BTreeMap;

use clickflow_sources::{DeadLetter, EventTime, EventType, PartitionId};
use compact_str::CompactString;

use crate::alerts::series::WindowPoint;
use crate::rows::{
    AlertRow, ConversionRow, FunnelRow, RecommendationRow, ScoreRow, SessionKey, SessionRow,
    TrendRow,
};
use crate::runtime::output::EpochOutput;
use crate::window::Window;

/// The final rows of every table, keyed as in PostgreSQL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    /// `event_trends` by `(window, event_type)`.
    pub trends: BTreeMap<(Window, EventType), TrendRow>,
    /// `funnel_summary` by `(window, event_type)`.
    pub funnel: BTreeMap<(Window, EventType), FunnelRow>,
    /// `session_features` by `(session_id, session_start)`.
    pub sessions: BTreeMap<SessionKey, SessionRow>,
    /// `churn_scores` by `(session_id, session_start)`.
    pub scores: BTreeMap<SessionKey, ScoreRow>,
    /// `window_series` by window start.
    pub series: BTreeMap<EventTime, WindowPoint>,
    /// `alerts` by `alert_id`.
    pub alerts: BTreeMap<CompactString, AlertRow>,
    /// `product_recommendations` by `(product_id, rank)`.
    pub recommendations: BTreeMap<(CompactString, i64), RecommendationRow>,
    /// `funnel_conversion` by `(window, step)`.
    pub conversion: BTreeMap<(Window, EventType), ConversionRow>,
    /// `dead_letters`, in arrival order.
    pub dead_letters: Vec<DeadLetter>,
    /// `clickflow_offsets`.
    pub offsets: BTreeMap<PartitionId, i64>,
}

/// A change that does not fit the tables: a sign of a bug upstream.
#[derive(Debug, thiserror::Error)]
#[error("epoch {epoch}: {what}")]
pub struct InconsistentChange {
    /// The epoch that carried it.
    pub epoch: u64,
    /// What did not fit.
    pub what: String,
}

impl Tables {
    /// Applies one epoch: retractions first, then insertions, as the sink does. A replayed
    /// epoch is skipped, as the sink skips it.
    pub fn apply(&mut self, output: &EpochOutput) -> Result<(), InconsistentChange> {
        if output.replay {
            return Ok(());
        }
        let fail = |what: String| InconsistentChange {
            epoch: output.epoch,
            what,
        };
        apply_changes(&mut self.trends, &output.trends, |r| {
            (r.window, r.event_type)
        })
        .map_err(fail)?;
        apply_changes(&mut self.funnel, &output.funnel, |r| {
            (r.window, r.event_type)
        })
        .map_err(fail)?;
        apply_changes(&mut self.sessions, &output.sessions, SessionRow::key).map_err(fail)?;
        apply_changes(&mut self.scores, &output.scores, ScoreRow::key).map_err(fail)?;
        apply_changes(&mut self.alerts, &output.alerts, |r| r.alert_id.clone()).map_err(fail)?;
        apply_changes(
            &mut self.recommendations,
            &output.recommendations,
            RecommendationRow::key,
        )
        .map_err(fail)?;
        apply_changes(&mut self.conversion, &output.conversion, |r| {
            (r.window, r.step)
        })
        .map_err(fail)?;
        for point in &output.series {
            if let Some(old) = self.series.insert(point.window.start, *point) {
                return Err(fail(format!("window {old:?} closed twice")));
            }
        }
        self.dead_letters
            .extend(output.dead_letters.iter().cloned());
        for state in &output.partitions {
            self.offsets
                .insert(state.partition.clone(), state.next_offset);
        }
        Ok(())
    }
}

fn apply_changes<K: Ord, R: Clone + PartialEq + std::fmt::Debug>(
    table: &mut BTreeMap<K, R>,
    changes: &[(R, isize)],
    key: impl Fn(&R) -> K,
) -> Result<(), String> {
    for (row, diff) in changes.iter().filter(|(_, d)| *d < 0) {
        match table.remove(&key(row)) {
            Some(old) if old == *row && *diff == -1 => {}
            other => return Err(format!("retraction {row:?} ({diff}) found {other:?}")),
        }
    }
    for (row, diff) in changes.iter().filter(|(_, d)| *d > 0) {
        if *diff != 1 {
            return Err(format!("insertion {row:?} with multiplicity {diff}"));
        }
        if let Some(old) = table.insert(key(row), row.clone()) {
            return Err(format!("insertion {row:?} over existing {old:?}"));
        }
    }
    Ok(())
}
