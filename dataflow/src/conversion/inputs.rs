//! What the ordered funnel holds: per session id, when its sessions start and when its
//! events happen, until their windows are sealed.

use clickflow_sources::{EventTime, EventType};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Concat;
use timely::dataflow::StreamVec;

use crate::conversion::Sealing;
use crate::input::Accepted;
use crate::kpi::sessions::Retention;
use crate::operators::{hold_until, EpochWatermarks, Hold, RouteKey};
use crate::rows::SessionRow;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::Epoch;

/// One instant of a session id's history. A start sorts before an event at the same time,
/// so a session's first event follows its own start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Mark {
    /// A session of the id starts (a row of `session_features`).
    SessionStart,
    /// An event of the id.
    Event(EventType),
}

/// What the funnel reads: `(session id's key, (time, mark))`. The funnel's output names no
/// session, so ids are held as their 64-bit hash (XXH3 of [`RouteKey`]): integers to
/// compare, sort and clone instead of text. Two ids with the same hash would be read as
/// one id with both histories; among a million ids the chance of any such pair is about 3
/// in 10^8.
pub type FunnelMark = (u64, (EventTime, Mark));

/// The clock of sealing: what the gate has closed before the epoch.
fn closed_before(watermarks: EpochWatermarks, seed: &ProgressSeed) -> EventTime {
    watermarks.before.max(seed.committed_watermark)
}

/// Every accepted event and every session start, each held until the window it counts for
/// is sealed: a start until its own window's sessions are sealed, an event until the
/// window it happened in is (never before its session's start, which precedes it).
///
/// Only starts are taken from `session_features`, not whole spans: a session's row changes
/// with each of its events, its start rarely, so the funnel's input changes once per event.
pub fn held_marks<'scope>(
    accepted: StreamVec<'scope, Epoch, Accepted>,
    sessions: VecCollection<'scope, Epoch, SessionRow>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    sealing: Sealing,
) -> (
    VecCollection<'scope, Epoch, FunnelMark>,
    StreamVec<'scope, Epoch, Retention>,
) {
    let events = accepted.map(move |event| Hold {
        origin: Some((event.partition, event.ts)),
        until: sealing.sealed_at(event.ts),
        diff: 1,
        record: (
            event.session_id.route(),
            (event.ts, Mark::Event(event.event_type)),
        ),
    });
    let starts = sessions.inner.map(move |(row, _, diff)| Hold {
        origin: None,
        until: sealing.sealed_at(row.session_start),
        diff,
        record: (
            row.session_id.route(),
            (row.session_start, Mark::SessionStart),
        ),
    });
    hold_until(
        events.concat(starts),
        reports,
        seed,
        "Funnel (ordered): events and session starts",
        |(session, _)| *session,
        closed_before,
    )
}
