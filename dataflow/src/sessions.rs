//! `session_features`: views, cart adds, purchases and duration of every session.

use clickflow_sources::{EventTime, EventType};
use compact_str::CompactString;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;

use crate::input::Accepted;
use crate::rows::SessionRow;
use crate::stage::{aggregate_by_key, pre_aggregate, KeyedStage, Merge, Retention};
use crate::watermark::{PartitionReport, ProgressSeed};
use crate::Epoch;

/// What is known of a session: mergeable in any order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    user_id: CompactString,
    views: i64,
    cart_adds: i64,
    purchases: i64,
    first: EventTime,
    last: EventTime,
}

impl Merge for SessionSummary {
    fn merge(&mut self, other: SessionSummary) {
        if other.user_id < self.user_id {
            self.user_id = other.user_id;
        }
        self.views += other.views;
        self.cart_adds += other.cart_adds;
        self.purchases += other.purchases;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

struct SessionStage {
    gap_ms: i64,
}

impl KeyedStage for SessionStage {
    type Key = CompactString;
    type Value = SessionSummary;
    type Row = SessionRow;

    fn row(session_id: &CompactString, s: &SessionSummary, closed: bool) -> SessionRow {
        SessionRow {
            session_id: session_id.clone(),
            user_id: s.user_id.clone(),
            num_views: s.views,
            num_cart_adds: s.cart_adds,
            num_purchases: s.purchases,
            session_start: s.first,
            last_event: s.last,
            closed,
        }
    }

    fn closes_at(&self, _: &CompactString, s: &SessionSummary) -> EventTime {
        s.last.saturating_add(self.gap_ms)
    }

    fn depends_since(&self, _: &CompactString, s: &SessionSummary) -> Option<EventTime> {
        Some(s.first)
    }

    const EMITS_CLOSED_ROW: bool = true;
}

/// Computes `session_features` from accepted events.
pub trait Sessions<'scope> {
    /// One row per session, as row changes per epoch. A session closes (its row gets
    /// `closed = true` and becomes final) once the pipeline watermark is `gap_ms` past its
    /// last event; it then leaves the state. Should its id appear again later, a new
    /// session with that id begins (and its row replaces the closed one). Also reports the
    /// earliest event time any open session depends on, which bounds a restart's replay.
    fn session_features(
        self,
        gap_ms: i64,
        reports: StreamVec<'scope, Epoch, PartitionReport>,
        seed: ProgressSeed,
    ) -> (
        VecCollection<'scope, Epoch, SessionRow>,
        StreamVec<'scope, Epoch, Retention>,
    );
}

impl<'scope> Sessions<'scope> for StreamVec<'scope, Epoch, Accepted> {
    fn session_features(
        self,
        gap_ms: i64,
        reports: StreamVec<'scope, Epoch, PartitionReport>,
        seed: ProgressSeed,
    ) -> (
        VecCollection<'scope, Epoch, SessionRow>,
        StreamVec<'scope, Epoch, Retention>,
    ) {
        let summaries = pre_aggregate(self, "Sessions: pre-aggregate", |event: &Accepted, emit| {
            let is = |t: EventType| i64::from(event.event_type == t);
            emit(
                event.session_id.clone(),
                SessionSummary {
                    user_id: event.user_id.clone(),
                    views: is(EventType::Click),
                    cart_adds: is(EventType::AddToCart),
                    purchases: is(EventType::Purchase),
                    first: event.ts,
                    last: event.ts,
                },
            );
        });
        aggregate_by_key(
            SessionStage { gap_ms },
            summaries,
            reports,
            seed,
            "Sessions: per session",
        )
    }
}
