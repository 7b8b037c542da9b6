//! `session_features`: views, cart adds, purchases and duration of every session.
//!
//! **The session rule, in event time alone.** A session is a `session_id` together with a
//! gap: the events of one id, ordered by event time, split into separate sessions wherever
//! two consecutive events are more than `gap` apart. Each session has its own row, keyed by
//! `(session_id, session_start)`. The rule depends on the events only, never on when they
//! arrive: an event that falls between two sessions of its id within the gap of both joins
//! them into one (the later row is retracted), one that arrives out of order before a
//! session's start moves the start (the row moves to its new key).
//!
//! **When a session is final.** Once the pipeline watermark passes the end of the window
//! that contains `last_event + gap`, no event that could still join the session can be
//! accepted: such an event lies in that window or an earlier one, which is closed, so its
//! partition's clock or the closed-window gate dead-letters it as `late` (the reason names
//! its session). The row then gets `closed = true` and is final. Hence the same input gives
//! the same sessions on any number of workers, with any epoch length, arrival order within
//! the allowed lateness, and across restarts.
//!
//! **The ordered funnel's paths.** Each session also keeps what its events tell of its path
//! through the ordered funnel ([`crate::conversion::paths::FunnelSteps`]) and emits
//! `(window of its start, path)` whenever that changes: [`crate::conversion`] counts them
//! per window. A closed session stays in the state (and in the retention a restart replays
//! from) until its funnel window is sealed, then leaves it, and its path is retracted where
//! the funnel drops the changes of sealed windows. With the default gap and conversion
//! window (both 30 min) a session's window is sealed by the time it is final, and it leaves
//! an epoch after it closes.
//!
//! ```text
//!  accepted events (on their session's worker) ─► per id: spans sorted by start, > gap apart
//!                                                   │ per epoch: changed spans → (row, ±1),
//!                                                   │   changed paths → ((window, path), ±1)
//!  partition reports ─broadcast─► watermark ────────┘ final spans → closed row;
//!                                                     sealed closed spans → path −1, forgotten
//! ```
//!
//! **Against differential's own operators** (`cargo bench -p clickflow-benches --bench
//! kpi_operators`: 500k events of the benchmark shop, epochs of 8,192, no watermark so
//! neither side evicts; 4 December 2026, fourth sitting, this 2-core machine):
//!
//! | build | 1 worker | 2 workers |
//! |---|---|---|
//! | this stage | 970k events/s | 2.25M events/s |
//! | `reduce` per session id over its events, cut at the gap | 681k events/s | 1.33M events/s |
//!
//! (On 2 December: this stage 629k and 1.63M, the reduction 490k and 742k.)
//!
//! The reduction recomputes an id's sessions from all its events whenever one arrives, and
//! its arrangement keeps every event; this stage merges the event into the span it joins
//! and forgets the span once final. It stays. (Before an event was merged into its span
//! rather than the span into the event, and before an epoch kept only the facts of what it
//! changed, not their product sets, this stage ran at 463k and 1.01M events/s, the reduction
//! at 434k and 759k, in an earlier sitting: slower than the reduction on one worker.)

mod span;
mod state;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use clickflow_sources::EventTime;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::StreamVec;

use crate::conversion::paths::Path;
use crate::conversion::Sealing;
use crate::input::Accepted;
use crate::operators::{by_epoch_streaming_with_side, BySession};
use crate::rows::SessionRow;
use crate::runtime::replay::Retention;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::window::{Window, WindowSize};
use crate::Epoch;

pub(crate) use span::Span;
use span::SpanFacts;
use state::{Clocks, SessionState};

/// The gap rule: how far apart two events of one id may be and still share a session, and
/// the windows whose closing makes a session final.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRule {
    /// The longest silence (event time) inside one session.
    pub gap_ms: i64,
    /// The pipeline's tumbling windows.
    pub window: WindowSize,
}

impl SessionRule {
    /// Whether an event at `ts` is within the gap of the session `a`, and so belongs to it.
    fn joins(&self, a: &SpanFacts, ts: EventTime) -> bool {
        a.first.saturating_sub(self.gap_ms) <= ts && ts <= a.last.saturating_add(self.gap_ms)
    }

    /// The watermark from which `span` is final: the end of the window holding its last
    /// event plus the gap.
    pub fn final_at(&self, last_event: EventTime) -> EventTime {
        self.window
            .window_of(last_event.saturating_add(self.gap_ms))
            .end
    }
}

/// What the session stage emits.
pub struct SessionStreams<'scope> {
    /// `session_features`: one row per session, as row changes per epoch. Each row is
    /// shared ([`Arc`]) by its two readers, the worker's writer and the churn stage, which
    /// each held a copy of every row of an epoch until it was complete: at the end of a
    /// backlog, every session's row twice while the stage still held every session.
    /// `clickflow bench` (7 December 2026, twenty-sixth sitting, 8 alternating pairs):
    /// peak RSS 345–353 MB against 389–397 MB, wall time 5.49–6.27 s against 5.13–6.41 s.
    /// The readers sort shared rows by key ([`crate::runtime::output::consolidate_shared`]
    /// and `ArrivingRows::sessions`); sorting them whole, which reads two rows from the
    /// heap for each comparison, made the bench about 5% slower.
    pub rows: VecCollection<'scope, Epoch, Arc<SessionRow>>,
    /// Every session's path through the ordered funnel, keyed by the window it started in,
    /// from its first event until its window is sealed ([`crate::conversion`]).
    pub paths: VecCollection<'scope, Epoch, (Window, Path)>,
    /// The earliest event time any held session depends on, per worker and partition,
    /// which bounds a restart's replay.
    pub retention: StreamVec<'scope, Epoch, Retention>,
}

/// Computes `session_features` from accepted events.
pub trait Sessions<'scope> {
    /// One row per session under `rule`, as row changes per epoch; a final session's row
    /// gets `closed = true`. Also each session's path through the ordered funnel, which
    /// `sealing` says when to retract: a session leaves the state once it is final and its
    /// window sealed.
    fn session_features(
        self,
        rule: SessionRule,
        sealing: Sealing,
        reports: StreamVec<'scope, Epoch, PartitionReport>,
        seed: ProgressSeed,
    ) -> SessionStreams<'scope>;
}

/// A change the stage emits.
enum Change {
    Row(SessionRow),
    Path((Window, Path)),
}

/// What the stage emits beside its rows: path changes, and now and then its retention.
type Side = Result<((Window, Path), Epoch, isize), Retention>;

impl<'scope> Sessions<'scope> for BySession<'scope, Accepted> {
    fn session_features(
        self,
        rule: SessionRule,
        sealing: Sealing,
        reports: StreamVec<'scope, Epoch, PartitionReport>,
        seed: ProgressSeed,
    ) -> SessionStreams<'scope> {
        const NAME: &str = "Sessions: per session";
        let events = self.into_stream();
        let worker = events.scope().index();
        let state = Rc::new(RefCell::new(SessionState::default()));
        let absorbing = state.clone();
        let mut reported_since: Option<Vec<(u32, EventTime)>> = None;
        let clocks = Clocks {
            rule,
            sealing,
            committed: seed.committed_watermark,
        };
        let (rows, side) = by_epoch_streaming_with_side(
            events,
            Pipeline,
            reports,
            seed,
            NAME,
            move |_epoch,
                  events,
                  _opening,
                  _rows: &mut dyn FnMut((Arc<SessionRow>, Epoch, isize))| {
                absorbing.borrow_mut().absorb(events, &clocks);
            },
            move |epoch, watermarks, rows, side: &mut dyn FnMut(Side)| {
                let mut state = state.borrow_mut();
                let mut emit = |change: Change, diff: isize| match change {
                    Change::Row(row) => rows((Arc::new(row), epoch, diff)),
                    Change::Path(path) => side(Ok((path, epoch, diff))),
                };
                state.emit_touched(&clocks, watermarks.after, &mut emit);
                state.close(watermarks.after, &clocks, &mut emit);
                state.forget(watermarks.before, &clocks, &mut emit);
                let since = state.earliest_by_partition();
                if reported_since.as_ref() != Some(&since)
                    && !(since.is_empty() && reported_since.is_none())
                {
                    side(Err(Retention {
                        stage: NAME.to_string(),
                        worker,
                        since: since.clone(),
                    }));
                    reported_since = Some(since);
                }
            },
        );
        let (paths, retention) = side.ok_err(|side| side);
        SessionStreams {
            rows: rows.as_collection(),
            paths: paths.as_collection(),
            retention,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_final_once_the_window_of_its_end_closed() {
        let rule = SessionRule {
            gap_ms: 60_000,
            window: WindowSize::from_millis(60_000),
        };
        // Last event at 100 s: it could be joined until 160 s, whose window ends at 180 s.
        assert_eq!(rule.final_at(100_000), 180_000);
    }
}
