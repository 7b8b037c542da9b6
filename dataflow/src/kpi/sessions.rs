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
//! its session). The row then gets `closed = true`, is final, and the session leaves the
//! state. Hence the same input gives the same sessions on any number of workers, with any
//! epoch length, arrival order within the allowed lateness, and across restarts.
//!
//! ```text
//!  accepted events ─exchange by session_id─► per id: spans sorted by start, > gap apart
//!                                                   │ per epoch: changed spans → (row, ±1)
//!  partition reports ─broadcast─► watermark ────────┘ final spans → closed row, evicted
//! ```
//!
//! **Against differential's own operators** (`cargo bench -p clickflow-benches --bench
//! kpi_operators`: 500k events of the benchmark shop, epochs of 8,192, no watermark so
//! neither side evicts; 2 December 2026, this 2-core machine):
//!
//! | build | 1 worker | 2 workers |
//! |---|---|---|
//! | this stage | 629k events/s | 1.63M events/s |
//! | `reduce` per session id over its events, cut at the gap | 490k events/s | 742k events/s |
//!
//! The reduction recomputes an id's sessions from all its events whenever one arrives, and
//! its arrangement keeps every event; this stage merges the event into the span it joins
//! and forgets the span once final. It stays. (Before an event was merged into its span
//! rather than the span into the event, and before an epoch kept only the facts of what it
//! changed, not their product sets, this stage ran at 463k and 1.01M events/s, the reduction
//! at 434k and 759k, in an earlier sitting: slower than the reduction on one worker.)

use std::collections::BTreeSet;

use clickflow_sources::{EventTime, EventType};
use compact_str::CompactString;
use differential_dataflow::{AsCollection, VecCollection};
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::StreamVec;

use crate::input::{product_hash, Accepted};
use crate::operators::{by_epoch, RouteKey};
use crate::rows::SessionRow;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::window::WindowSize;
use crate::Epoch;

/// How far back a worker's open sessions reach into each partition, after an epoch: a
/// restart must replay each partition from before its own earliest event they hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// The stage (its operator name).
    pub stage: String,
    /// The worker.
    pub worker: usize,
    /// `(partition, earliest event time)` for every partition some open session holds an
    /// event of, by partition; empty when the worker holds no open session.
    pub since: Vec<(u32, EventTime)>,
}

impl Retention {
    /// The earliest event time of any open session of the worker: the earliest start.
    pub fn earliest(&self) -> Option<EventTime> {
        self.since.iter().map(|&(_, since)| since).min()
    }
}

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
    /// Whether `a` and `b` (each one session) are within the gap of each other, and so one
    /// session.
    fn joins(&self, a: &Span, b: &Span) -> bool {
        let (a, b) = (&a.facts, &b.facts);
        a.first.saturating_sub(self.gap_ms) <= b.last
            && b.first <= a.last.saturating_add(self.gap_ms)
    }

    /// The watermark from which `span` is final: the end of the window holding its last
    /// event plus the gap.
    pub fn final_at(&self, last_event: EventTime) -> EventTime {
        self.window
            .window_of(last_event.saturating_add(self.gap_ms))
            .end
    }
}

/// What is known of one session of an id (or of some of its events: spans merge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// All but the product set: what the row and the indexes read.
    facts: SpanFacts,
    /// The products viewed, as sorted distinct hashes: a session views a few dozen at most.
    products: SmallVec<[u64; 4]>,
}

/// A span without its product set, only their number: what a session's row and the
/// state's indexes are made of, and what an epoch keeps of the spans it changes (copying
/// the product sets of every touched session, once per epoch, was a visible share of a
/// profile).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SpanFacts {
    user_id: CompactString,
    views: i64,
    cart_adds: i64,
    purchases: i64,
    first: EventTime,
    last: EventTime,
    num_products: i64,
    /// Summed prices of the cart adds.
    cart_value_cents: i64,
    /// `(partition, earliest event time)` of each partition the session has events from, by
    /// partition: almost always one (a session's events share its Kafka key).
    partitions: SmallVec<[(u32, EventTime); 1]>,
}

impl SpanFacts {
    /// The row of this span as the session `session_id`.
    fn row(&self, session_id: &CompactString, closed: bool) -> SessionRow {
        SessionRow {
            session_id: session_id.clone(),
            user_id: self.user_id.clone(),
            num_views: self.views,
            num_cart_adds: self.cart_adds,
            num_purchases: self.purchases,
            session_start: self.first,
            last_event: self.last,
            num_products: self.num_products,
            cart_value_cents: self.cart_value_cents,
            closed,
        }
    }

    /// Its entry in the closing index: `(final_at, session_start)`.
    fn closing(&self, rule: &SessionRule) -> (EventTime, EventTime) {
        (rule.final_at(self.last), self.first)
    }
}

impl Span {
    /// The span of one event.
    pub(crate) fn of(event: Accepted) -> Span {
        let is = |t: EventType| i64::from(event.event_type == t);
        let viewed = event
            .product_id
            .as_deref()
            .filter(|_| event.event_type == EventType::Click)
            .map(product_hash);
        Span {
            facts: SpanFacts {
                views: is(EventType::Click),
                cart_adds: is(EventType::AddToCart),
                purchases: is(EventType::Purchase),
                first: event.ts,
                last: event.ts,
                num_products: i64::from(viewed.is_some()),
                partitions: [(event.partition, event.ts)].into_iter().collect(),
                user_id: event.user_id,
                cart_value_cents: match event.event_type {
                    EventType::AddToCart => event.price_cents.unwrap_or(0),
                    _ => 0,
                },
            },
            products: viewed.into_iter().collect(),
        }
    }

    /// Folds the events of `other` into this span.
    pub(crate) fn merge(&mut self, other: Span) {
        let (facts, theirs) = (&mut self.facts, other.facts);
        if theirs.user_id < facts.user_id {
            facts.user_id = theirs.user_id;
        }
        facts.views += theirs.views;
        facts.cart_adds += theirs.cart_adds;
        facts.purchases += theirs.purchases;
        facts.first = facts.first.min(theirs.first);
        facts.last = facts.last.max(theirs.last);
        facts.cart_value_cents += theirs.cart_value_cents;
        for (partition, since) in theirs.partitions {
            match facts
                .partitions
                .binary_search_by_key(&partition, |&(p, _)| p)
            {
                Ok(at) => facts.partitions[at].1 = facts.partitions[at].1.min(since),
                Err(at) => facts.partitions.insert(at, (partition, since)),
            }
        }
        for product in other.products {
            if let Err(at) = self.products.binary_search(&product) {
                self.products.insert(at, product);
            }
        }
        facts.num_products = self.products.len() as i64;
    }

    /// The row of this span as the session `session_id`.
    pub(crate) fn row(&self, session_id: &CompactString, closed: bool) -> SessionRow {
        self.facts.row(session_id, closed)
    }
}

/// The sessions of one id, sorted by start. Almost every id has one at a time, kept inline:
/// a heap allocation per id was a tenth of the stage's memory in a backfill.
type Spans = SmallVec<[Span; 1]>;

/// Adds `new` to the sessions of one id (sorted by start, each more than the gap from the
/// next), merging every session it joins: those form one run of neighbours.
fn absorb(spans: &mut Spans, mut new: Span, rule: &SessionRule) {
    let from =
        spans.partition_point(|s| s.facts.last.saturating_add(rule.gap_ms) < new.facts.first);
    let mut to = from;
    while to < spans.len() && rule.joins(&spans[to], &new) {
        to += 1;
    }
    for mut joined in spans.drain(from..to) {
        // Merging is symmetric: fold the smaller span into the larger, so that an event
        // joining a long session adds its product to the session's set rather than the
        // session's whole set being inserted into the event's (the hottest spot of a profile
        // of 40-event visits).
        if joined.products.len() > new.products.len() {
            std::mem::swap(&mut joined, &mut new);
        }
        new.merge(joined);
    }
    spans.insert(from, new);
}

/// Computes `session_features` from accepted events.
pub trait Sessions<'scope> {
    /// One row per session under `rule`, as row changes per epoch; a final session's row
    /// gets `closed = true` and it leaves the state. Also reports the earliest event time
    /// any open session depends on, which bounds a restart's replay.
    fn session_features(
        self,
        rule: SessionRule,
        reports: StreamVec<'scope, Epoch, PartitionReport>,
        seed: ProgressSeed,
    ) -> (
        VecCollection<'scope, Epoch, SessionRow>,
        StreamVec<'scope, Epoch, Retention>,
    );
}

type Output = Result<(SessionRow, Epoch, isize), Retention>;

impl<'scope> Sessions<'scope> for StreamVec<'scope, Epoch, Accepted> {
    fn session_features(
        self,
        rule: SessionRule,
        reports: StreamVec<'scope, Epoch, PartitionReport>,
        seed: ProgressSeed,
    ) -> (
        VecCollection<'scope, Epoch, SessionRow>,
        StreamVec<'scope, Epoch, Retention>,
    ) {
        const NAME: &str = "Sessions: per session";
        let worker = self.scope().index();
        let mut state = SessionState::default();
        let mut reported_since: Option<Vec<(u32, EventTime)>> = None;
        let pact = Exchange::new(|event: &Accepted| event.session_id.route());
        let outputs = by_epoch(
            self,
            pact,
            reports,
            seed,
            NAME,
            move |epoch, events, watermarks, out: &mut dyn FnMut(Output)| {
                let committed = seed.committed_watermark;
                let mut emit = |row: SessionRow, diff: isize| out(Ok((row, epoch, diff)));
                state.apply(events, &rule, committed, &mut emit);
                state.evict(watermarks.after, &rule, committed, &mut emit);
                let since = state.earliest_by_partition();
                if reported_since.as_ref() != Some(&since)
                    && !(since.is_empty() && reported_since.is_none())
                {
                    out(Err(Retention {
                        stage: NAME.to_string(),
                        worker,
                        since: since.clone(),
                    }));
                    reported_since = Some(since);
                }
            },
        );
        let (rows, retention) = outputs.ok_err(|output| output);
        (rows.as_collection(), retention)
    }
}

/// One worker's open sessions, with the indexes that find what closes and what is oldest.
#[derive(Default)]
struct SessionState {
    spans: HashMap<CompactString, Spans>,
    /// `(final_at, session_id, session_start)` of every open session.
    closing: BTreeSet<(EventTime, CompactString, EventTime)>,
    /// `(partition, earliest event time, session_id)` of every partition of every open
    /// session (see [`Span::partitions`]).
    depending: BTreeSet<(u32, EventTime, CompactString)>,
}

impl SessionState {
    /// Adds an epoch's events and emits the changes of the rows they touched. Sessions final
    /// before a restart (at or before `committed`) had their rows committed then: replay
    /// rebuilds them, but never emits them again.
    fn apply(
        &mut self,
        events: Vec<Accepted>,
        rule: &SessionRule,
        committed: EventTime,
        emit: &mut dyn FnMut(SessionRow, isize),
    ) {
        let mut before: HashMap<CompactString, SmallVec<[SpanFacts; 1]>> = HashMap::default();
        for event in events {
            let spans = self.spans.entry(event.session_id.clone()).or_default();
            if !before.contains_key(&event.session_id) {
                let facts = spans.iter().map(|span| span.facts.clone()).collect();
                before.insert(event.session_id.clone(), facts);
            }
            absorb(spans, Span::of(event), rule);
        }
        for (id, old) in before {
            let new = &self.spans[&id];
            for gone in old.iter().filter(|&f| !new.iter().any(|s| s.facts == *f)) {
                if rule.final_at(gone.last) > committed {
                    emit(gone.row(&id, false), -1);
                }
            }
            for came in new.iter().filter(|s| !old.contains(&s.facts)) {
                if rule.final_at(came.facts.last) > committed {
                    emit(came.row(&id, false), 1);
                }
            }
            self.reindex(&id, &old, rule);
        }
    }

    /// Moves `id`'s index entries from its spans `old` to its current ones. Most events
    /// change a session's counts and last event but neither the window its end falls in nor
    /// its partitions' earliest events: those touch neither index (string-keyed B-tree
    /// updates dominated a profile when every change rewrote both).
    fn reindex(&mut self, id: &CompactString, old: &[SpanFacts], rule: &SessionRule) {
        let new = self.spans.get(id).map_or(&[][..], |spans| spans.as_slice());
        let new_holds =
            |entry: &(u32, EventTime)| new.iter().any(|s| s.facts.partitions.contains(entry));
        let old_holds = |entry: &(u32, EventTime)| old.iter().any(|s| s.partitions.contains(entry));
        for gone in old {
            let closing = gone.closing(rule);
            if !new.iter().any(|s| s.facts.closing(rule) == closing) {
                self.closing.remove(&(closing.0, id.clone(), closing.1));
            }
            for &(partition, since) in gone.partitions.iter().filter(|e| !new_holds(e)) {
                self.depending.remove(&(partition, since, id.clone()));
            }
        }
        for came in new.iter().map(|s| &s.facts) {
            let closing = came.closing(rule);
            if !old.iter().any(|s| s.closing(rule) == closing) {
                self.closing.insert((closing.0, id.clone(), closing.1));
            }
            for &(partition, since) in came.partitions.iter().filter(|e| !old_holds(e)) {
                self.depending.insert((partition, since, id.clone()));
            }
        }
    }

    /// `(partition, earliest event time)` over the open sessions, for every partition one
    /// of them holds an event of: one index lookup per partition.
    fn earliest_by_partition(&self) -> Vec<(u32, EventTime)> {
        let mut earliest = Vec::new();
        let mut from = (0, EventTime::MIN, CompactString::default());
        while let Some((partition, since, _)) = self.depending.range(&from..).next() {
            earliest.push((*partition, *since));
            let Some(next) = partition.checked_add(1) else {
                break;
            };
            from = (next, EventTime::MIN, CompactString::default());
        }
        earliest
    }

    /// Closes and forgets every session final at `watermark`.
    fn evict(
        &mut self,
        watermark: EventTime,
        rule: &SessionRule,
        committed: EventTime,
        emit: &mut dyn FnMut(SessionRow, isize),
    ) {
        while let Some((final_at, _, _)) = self.closing.first() {
            if *final_at > watermark {
                break;
            }
            let (final_at, id, first) = self.closing.pop_first().expect("first exists");
            let Some(spans) = self.spans.get_mut(&id) else {
                continue;
            };
            let Some(at) = spans.iter().position(|s| s.facts.first == first) else {
                continue;
            };
            let span = spans.remove(at);
            for &(partition, since) in &span.facts.partitions {
                self.depending.remove(&(partition, since, id.clone()));
            }
            if spans.is_empty() {
                self.spans.remove(&id);
            }
            debug_assert_eq!(rule.final_at(span.facts.last), final_at);
            if final_at > committed {
                emit(span.row(&id, false), -1);
                emit(span.row(&id, true), 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: EventTime) -> Span {
        Span::of(Accepted {
            partition: 0,
            user_id: "u".into(),
            session_id: "s".into(),
            event_type: EventType::Click,
            ts,
            price_cents: None,
            product_id: Some(compact_str::format_compact!("p{}", ts % 3)),
        })
    }

    fn sessions_of(times: &[EventTime], gap_ms: i64) -> Vec<(EventTime, EventTime, i64)> {
        let rule = SessionRule {
            gap_ms,
            window: WindowSize::from_millis(60_000),
        };
        let mut spans = Spans::new();
        for &ts in times {
            absorb(&mut spans, event(ts), &rule);
        }
        spans
            .iter()
            .map(|s| (s.facts.first, s.facts.last, s.facts.views))
            .collect()
    }

    #[test]
    fn events_more_than_the_gap_apart_are_separate_sessions_in_any_order() {
        let times = [0, 70_000, 71_000, 190_000];
        let expected = vec![(0, 0, 1), (70_000, 71_000, 2), (190_000, 190_000, 1)];
        assert_eq!(sessions_of(&times, 60_000), expected);
        assert_eq!(sessions_of(&[190_000, 71_000, 0, 70_000], 60_000), expected);
        // Exactly the gap apart is still one session.
        assert_eq!(sessions_of(&[0, 60_000], 60_000), vec![(0, 60_000, 2)]);
    }

    #[test]
    fn an_event_between_two_sessions_joins_them() {
        assert_eq!(
            sessions_of(&[0, 100_000, 50_000], 60_000),
            vec![(0, 100_000, 3)]
        );
        assert_eq!(
            sessions_of(
                &[0, 100_000, 200_000, 300_000, 150_000, 250_000, 50_000],
                60_000
            ),
            vec![(0, 300_000, 7)]
        );
    }

    #[test]
    fn products_are_counted_once_and_cart_value_summed() {
        let click = |product| {
            Span::of(Accepted {
                partition: 0,
                user_id: "u".into(),
                session_id: "s".into(),
                event_type: EventType::Click,
                ts: 0,
                price_cents: None,
                product_id: Some(compact_str::format_compact!("p{product}")),
            })
        };
        let mut span = click(7);
        span.merge(click(3));
        span.merge(click(7));
        span.merge(Span::of(Accepted {
            event_type: EventType::AddToCart,
            price_cents: Some(1999),
            product_id: Some("p9".into()),
            ..Accepted::new(
                0,
                clickflow_sources::Event {
                    event_id: clickflow_sources::EventId::Number(1),
                    user_id: "u".into(),
                    session_id: "s".into(),
                    product_id: None,
                    event_type: EventType::Click,
                    ts: 5,
                    price_cents: None,
                },
            )
        }));
        let row = span.row(&"s".into(), false);
        assert_eq!((row.num_views, row.num_products), (3, 2));
        assert_eq!((row.num_cart_adds, row.cart_value_cents), (1, 1999));
    }

    #[test]
    fn a_session_is_final_once_the_window_of_its_end_closed() {
        let rule = SessionRule {
            gap_ms: 60_000,
            window: WindowSize::from_millis(60_000),
        };
        // Last event at 100 s: it could be joined until 160 s, whose window ends at 180 s.
        assert_eq!(rule.final_at(100_000), 180_000);
    }

    #[test]
    fn each_partition_is_told_its_own_earliest_event_in_open_sessions() {
        let rule = SessionRule {
            gap_ms: 200_000,
            window: WindowSize::from_millis(60_000),
        };
        let at = |partition, session: &str, ts| Accepted {
            partition,
            user_id: "u".into(),
            session_id: session.into(),
            event_type: EventType::Click,
            ts,
            price_cents: None,
            product_id: None,
        };
        let mut state = SessionState::default();
        let mut ignore = |_: SessionRow, _: isize| {};
        // "a" lives on partition 0 from 10 s; "b" on partition 1 from 100 s, and later gets
        // an event on partition 0 too; "c" on partition 2 from 400 s.
        let events = vec![at(0, "a", 10_000), at(1, "b", 100_000), at(0, "a", 200_000)];
        state.apply(events, &rule, i64::MIN, &mut ignore);
        assert_eq!(
            state.earliest_by_partition(),
            vec![(0, 10_000), (1, 100_000)]
        );
        let events = vec![at(0, "b", 130_000), at(2, "c", 400_000), at(1, "b", 90_000)];
        state.apply(events, &rule, i64::MIN, &mut ignore);
        assert_eq!(
            state.earliest_by_partition(),
            vec![(0, 10_000), (1, 90_000), (2, 400_000)]
        );
        // "b" (last event 130 s) is final at 360 s: partition 1 holds nothing open any more,
        // partition 0 still holds "a" from 10 s.
        state.evict(360_000, &rule, i64::MIN, &mut ignore);
        assert_eq!(
            state.earliest_by_partition(),
            vec![(0, 10_000), (2, 400_000)]
        );
        // "a" (last event 200 s) is final at 420 s, "c" at 660 s.
        state.evict(420_000, &rule, i64::MIN, &mut ignore);
        assert_eq!(state.earliest_by_partition(), vec![(2, 400_000)]);
        state.evict(660_000, &rule, i64::MIN, &mut ignore);
        assert!(state.earliest_by_partition().is_empty());
        assert!(state.depending.is_empty() && state.closing.is_empty());
    }
}
