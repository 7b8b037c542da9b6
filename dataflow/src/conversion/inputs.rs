//! What the ordered funnel holds: events and session spans, until their windows are sealed.

use clickflow_sources::{EventTime, EventType};
use compact_str::CompactString;
use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use crate::conversion::Sealing;
use crate::input::Accepted;
use crate::kpi::sessions::Retention;
use crate::operators::{hold_until, EpochWatermarks, Hold, RouteKey};
use crate::rows::SessionRow;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::Epoch;

/// An event as the funnel reads it: `(session id, (time, type))`.
pub type FunnelEvent = (CompactString, (EventTime, EventType));

/// A session as the funnel reads it: `(session id, (first event, last event that can
/// count))`; the last is capped at the conversion window, so the span stops changing once
/// the session has outlived it.
pub type FunnelSpan = (CompactString, (EventTime, EventTime));

/// The clock of sealing: what the gate has closed before the epoch.
fn closed_before(watermarks: EpochWatermarks, seed: &ProgressSeed) -> EventTime {
    watermarks.before.max(seed.committed_watermark)
}

/// Every accepted event, held until its window's sessions are sealed.
pub fn held_events<'scope>(
    accepted: StreamVec<'scope, Epoch, Accepted>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    sealing: Sealing,
) -> (
    VecCollection<'scope, Epoch, FunnelEvent>,
    StreamVec<'scope, Epoch, Retention>,
) {
    let updates = accepted.map(move |event| Hold {
        origin: Some((event.partition, event.ts)),
        until: sealing.sealed_at(event.ts),
        diff: 1,
        record: (event.session_id, (event.ts, event.event_type)),
    });
    hold_until(
        updates,
        reports,
        seed,
        "Funnel (ordered): events",
        |(session, _)| session.route(),
        closed_before,
    )
}

/// Every session's span, from the rows of `session_features`, held until the session's
/// start window is sealed. The events it covers are held at least as long (none starts
/// before it).
pub fn held_spans<'scope>(
    sessions: VecCollection<'scope, Epoch, SessionRow>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    sealing: Sealing,
) -> VecCollection<'scope, Epoch, FunnelSpan> {
    let updates = sessions.inner.map(move |(row, _, diff)| {
        let counted_until = row
            .session_start
            .saturating_add(sealing.funnel_window_ms - 1);
        Hold {
            until: sealing.sealed_at(row.session_start),
            diff,
            origin: None,
            record: (
                row.session_id,
                (row.session_start, row.last_event.min(counted_until)),
            ),
        }
    });
    let (spans, _nothing_retained) = hold_until(
        updates,
        reports,
        seed,
        "Funnel (ordered): sessions",
        |(session, _)| session.route(),
        closed_before,
    );
    spans
}
