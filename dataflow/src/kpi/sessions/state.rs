//! One worker's sessions across epochs: what an epoch changed, what closes, what leaves.

use std::collections::{BTreeMap, BTreeSet};

use clickflow_sources::EventTime;
use compact_str::CompactString;
use foldhash::fast::RandomState;
use indexmap::IndexMap;
use smallvec::SmallVec;

use crate::conversion::paths::Path;
use crate::conversion::Sealing;
use crate::input::Accepted;
use crate::kpi::sessions::span::{absorb, Span, SpanFacts, Spans};
use crate::kpi::sessions::{Change, SessionRule};
use crate::operators::{prefetch, probe_ahead};
use crate::runtime::replay::Origins;
use crate::window::Window;

/// When what the stage holds is final: the session rule, the funnel's sealing, and the
/// watermark committed before a restart (what was final then was written then: a replay
/// rebuilds it but never emits it again).
#[derive(Clone, Copy)]
pub(super) struct Clocks {
    pub(super) rule: SessionRule,
    pub(super) sealing: Sealing,
    pub(super) committed: EventTime,
}

impl Clocks {
    /// Whether `span`'s row changes are still to be written.
    fn row_open(&self, span: &SpanFacts) -> bool {
        self.rule.final_at(span.last) > self.committed
    }

    /// Whether the path of a session that starts at `start` is still to be counted.
    fn path_open(&self, start: EventTime) -> bool {
        self.sealing.sealed_at(start) > self.committed
    }
}

/// A session as it stood before an epoch: its facts and its funnel path.
type StoodBefore = (SpanFacts, (Window, Path));

/// The sessions of one id, and whether the open epoch has touched them.
#[derive(Default)]
struct IdSessions {
    /// Its sessions, sorted by start.
    spans: Spans,
    /// Whether it is in [`SessionState::touched`].
    touched: bool,
}

impl IdSessions {
    /// Brings the entry and its sessions' product sets into the cache ahead of an update.
    /// The probe that finds an entry loads only its key's line; the update then waited on
    /// the entry's other lines (its `touched` flag, a span's partitions and funnel steps)
    /// and on the product set's heap block, one miss after another: `perf` on the
    /// side-by-side file put those stalls in `absorb_one` and `Span::count`. Prefetched
    /// with the probe, the stage took 1.18–1.23 s against 1.32–1.49 s of busy time without
    /// the recommender, 1.28–1.35 s against 1.56–1.68 s with every table (3 and 2
    /// alternating pairs, 7 December 2026, on a 2-core AMD EPYC with 1 MiB of L2 a core).
    fn prefetch(&self) {
        prefetch(self);
        for span in &self.spans {
            span.prefetch_products();
        }
    }
}

/// One worker's sessions, with the indexes that find what closes, what leaves and what is
/// oldest. A session is open until final, then closed until its funnel window is sealed
/// (with the default gap and conversion window, at most an epoch longer), then forgotten.
#[derive(Default)]
pub(super) struct SessionState {
    /// Every held id's sessions. An index map (a table of indexes into one vector of
    /// entries) rather than a hash map of 248-byte buckets: a hash map doubles by copying
    /// every bucket into a new table while the old one is still allocated, and at the end
    /// of a backlog the two workers' tables did so at about the same moment; the vector
    /// grows in place (`mremap`). `clickflow bench` (6 December 2026, with the same change
    /// in [`crate::operators::holding`], since undone there): peak RSS 620–621 MB before, 536–537 MB after,
    /// for 0.06–0.11 s more of this stage's busy time on the side-by-side file (0.95–0.98 s
    /// before): the index is one more load per event.
    spans: IndexMap<CompactString, IdSessions, RandomState>,
    /// The ids the open epoch touched so far that held sessions before it, in the order it
    /// first touched them, each with its sessions as they stood before the epoch. (A map
    /// beside `spans` cost every event a second cache-missing probe: 62% of the stage's
    /// absorbing in a profile of the side-by-side file, 4 December 2026; the flag in
    /// `spans` makes it one.)
    ///
    /// Ids are named here, and in `opened`, by their index in `spans`: nothing removes an
    /// id between the absorbing of an epoch's events and [`SessionState::emit_touched`]
    /// (only [`SessionState::forget`] removes, after it), and an index takes 8 bytes where
    /// an id takes 24. At the end of a backlog every session is in one of the two.
    touched: Vec<(usize, SmallVec<[StoodBefore; 1]>)>,
    /// The ids the open epoch touched so far that held no session before it: only their
    /// indexes. An entry of `touched` takes 200 bytes whether or not it holds a session, and a
    /// backlog's epoch opens every one of its sessions: on `clickflow bench`'s file that
    /// vector reached 105 MB of the run's peak heap of 570 MB (heaptrack, 6 December 2026).
    opened: Vec<usize>,
    /// `(final_at, session_id, session_start)` of every open session.
    closing: BTreeSet<(EventTime, CompactString, EventTime)>,
    /// `(session_id, session_start)` of every closed session, by the time its funnel window
    /// is sealed (the end of a window: a few distinct times). Only ever added to and taken
    /// whole, so a vector per time rather than a B-tree set ordered by the id's text: at the
    /// end of a backlog every session closes in the one epoch. `clickflow bench` (6 December
    /// 2026): peak RSS 413–418 MB against 419–421 MB; no change in speed measured.
    leaving: BTreeMap<EventTime, Vec<(CompactString, EventTime)>>,
    /// How many held sessions, open or closed, have their earliest event of a partition in
    /// each partition and second (see [`Span::partitions`]). Counted, not indexed by session:
    /// an index of `(partition, earliest event time, session id)` took a string-keyed entry
    /// per session (272,447 of them at the end of `clickflow bench`'s file).
    depending: Origins,
}

impl SessionState {
    /// Adds a batch of the open epoch's events, noting how each id they touch stood
    /// before the epoch.
    pub(super) fn absorb(&mut self, events: Vec<Accepted>, clocks: &Clocks) {
        probe_ahead(
            self,
            events,
            |state, event| {
                let at = state.spans.get_index_of(&event.session_id)?;
                if let Some((_, held)) = state.spans.get_index(at) {
                    held.prefetch();
                }
                Some(at)
            },
            |state, event, at| state.absorb_one(event, at, clocks),
        );
    }

    /// Adds one event, whose id was held at `at` when its chunk was probed (`None`: it was
    /// not, though an earlier event of the chunk may have added it since). Nothing removes
    /// an id while events are absorbed, so an index found then still holds that id.
    fn absorb_one(&mut self, event: Accepted, at: Option<usize>, clocks: &Clocks) {
        let (at, held) = match at {
            Some(at) => {
                let (id, held) = self.spans.get_index_mut(at).expect("probed ids stay held");
                debug_assert_eq!(*id, event.session_id);
                (at, held)
            }
            None => {
                let entry = self.spans.entry(event.session_id.clone());
                (entry.index(), entry.or_default())
            }
        };
        if !held.touched {
            held.touched = true;
            if held.spans.is_empty() {
                self.opened.push(at);
            } else {
                let before = held
                    .spans
                    .iter()
                    .map(|span| (span.facts.clone(), span.path(&clocks.sealing)))
                    .collect();
                self.touched.push((at, before));
            }
        }
        absorb(&mut held.spans, event, &clocks.rule);
    }

    /// Emits the changes of the rows and paths the epoch's events touched, once per epoch.
    /// A session the epoch changed that is final at `after` (the watermark the epoch closes
    /// with) gets its closed row at once, not an open row that [`SessionState::close`] would
    /// retract in the same epoch: at the end of a file every session is touched and closes
    /// in its one epoch, and each used to leave three row changes (open, retracted, closed)
    /// that every reader of the rows carried (the churn stage held them all until the epoch
    /// was complete) for one.
    pub(super) fn emit_touched(
        &mut self,
        clocks: &Clocks,
        after: EventTime,
        emit: &mut dyn FnMut(Change, isize),
    ) {
        let opened = std::mem::take(&mut self.opened)
            .into_iter()
            .map(|at| (at, SmallVec::new()));
        for (at, old) in std::mem::take(&mut self.touched).into_iter().chain(opened) {
            let (id, held) = self.spans.get_index_mut(at).expect("a touched id is held");
            let id = id.clone();
            debug_assert!(held.touched, "the index of a touched id still names it");
            held.touched = false;
            let new = &held.spans;
            for (gone, _) in old
                .iter()
                .filter(|(f, _)| !new.iter().any(|s| s.facts == *f))
            {
                if clocks.row_open(gone) {
                    emit(Change::Row(gone.row(&id, false)), -1);
                }
            }
            for came in new
                .iter()
                .filter(|s| !old.iter().any(|(f, _)| *f == s.facts))
            {
                if clocks.row_open(&came.facts) {
                    let closed = clocks.rule.final_at(came.facts.last) <= after;
                    emit(Change::Row(came.row(&id, closed)), 1);
                }
            }
            // Most events leave their session's path as it was: only paths that changed
            // reach the funnel.
            let mut gone: SmallVec<[(Window, Path); 1]> = old
                .iter()
                .filter(|(facts, _)| clocks.path_open(facts.first))
                .map(|(_, path)| *path)
                .collect();
            for span in new.iter().filter(|s| clocks.path_open(s.facts.first)) {
                let path = span.path(&clocks.sealing);
                match gone.iter().position(|was| *was == path) {
                    Some(at) => {
                        gone.swap_remove(at);
                    }
                    None => emit(Change::Path(path), 1),
                }
            }
            for path in gone {
                emit(Change::Path(path), -1);
            }
            let old: SmallVec<[SpanFacts; 1]> = old.into_iter().map(|(facts, _)| facts).collect();
            self.reindex(at, &id, &old, clocks, after);
        }
    }

    /// Moves `id`'s index entries (it is held at `at` in `spans`) from its spans `old` to
    /// its current ones; a span the epoch changed that is final at `after` goes straight
    /// to the leaving index, its closed row given ([`SessionState::emit_touched`]). Most
    /// events change a session's counts and last event but neither the window its end
    /// falls in nor its partitions' earliest events: those touch neither index
    /// (string-keyed B-tree updates dominated a profile when every change rewrote both).
    fn reindex(
        &mut self,
        at: usize,
        id: &CompactString,
        old: &[SpanFacts],
        clocks: &Clocks,
        after: EventTime,
    ) {
        let rule = &clocks.rule;
        let new = self
            .spans
            .get_index(at)
            .map_or(&[][..], |(_, held)| held.spans.as_slice());
        let closed_now =
            |span: &SpanFacts| rule.final_at(span.last) <= after && !old.iter().any(|o| o == span);
        let new_holds =
            |entry: &(u32, EventTime)| new.iter().any(|s| s.facts.partitions.contains(entry));
        let old_holds = |entry: &(u32, EventTime)| old.iter().any(|s| s.partitions.contains(entry));
        for gone in old {
            let closing = gone.closing(rule);
            if !new
                .iter()
                .any(|s| s.facts.closing(rule) == closing && !closed_now(&s.facts))
            {
                self.closing.remove(&(closing.0, id.clone(), closing.1));
            }
            for &(partition, since) in gone.partitions.iter().filter(|e| !new_holds(e)) {
                self.depending.remove(partition, since);
            }
        }
        for came in new.iter().map(|s| &s.facts) {
            let closing = came.closing(rule);
            if closed_now(came) {
                let sealed_at = clocks.sealing.sealed_at(came.first);
                let leaving = self.leaving.entry(sealed_at).or_default();
                leaving.push((id.clone(), came.first));
            } else if !old.iter().any(|s| s.closing(rule) == closing) {
                self.closing.insert((closing.0, id.clone(), closing.1));
            }
            for &(partition, since) in came.partitions.iter().filter(|e| !old_holds(e)) {
                self.depending.add(partition, since);
            }
        }
    }

    /// `(partition, earliest second)` over the held sessions, for every partition one of
    /// them holds an event of.
    pub(super) fn earliest_by_partition(&self) -> Vec<(u32, EventTime)> {
        self.depending.since()
    }

    /// Closes every open session final at `watermark`: its row turns `closed`, and it
    /// waits for its funnel window to be sealed.
    pub(super) fn close(
        &mut self,
        watermark: EventTime,
        clocks: &Clocks,
        emit: &mut dyn FnMut(Change, isize),
    ) {
        while let Some((final_at, _, _)) = self.closing.first() {
            if *final_at > watermark {
                break;
            }
            let (final_at, id, first) = self.closing.pop_first().expect("first exists");
            let Some(span) = self.find(&id, first) else {
                continue;
            };
            debug_assert_eq!(clocks.rule.final_at(span.facts.last), final_at);
            if clocks.row_open(&span.facts) {
                emit(Change::Row(span.row(&id, false)), -1);
                emit(Change::Row(span.row(&id, true)), 1);
            }
            let leaving = self.leaving.entry(clocks.sealing.sealed_at(first));
            leaving.or_default().push((id, first));
        }
    }

    /// Forgets every closed session whose funnel window was sealed before this epoch
    /// (`before`, or the committed watermark): its path is retracted there, where the
    /// funnel drops the changes of sealed windows. (Not at `after`: this epoch's events
    /// may still change the rows of windows it seals.)
    pub(super) fn forget(
        &mut self,
        before: EventTime,
        clocks: &Clocks,
        emit: &mut dyn FnMut(Change, isize),
    ) {
        let sealed_before = before.max(clocks.committed);
        while let Some(entry) = self.leaving.first_entry() {
            if *entry.key() > sealed_before {
                break;
            }
            for (id, first) in entry.remove() {
                let Some(IdSessions { spans, .. }) = self.spans.get_mut(&id) else {
                    continue;
                };
                let Some(at) = spans.iter().position(|s| s.facts.first == first) else {
                    continue;
                };
                let span = spans.remove(at);
                if spans.is_empty() {
                    self.spans.swap_remove(&id);
                }
                for &(partition, since) in &span.facts.partitions {
                    self.depending.remove(partition, since);
                }
                if clocks.path_open(first) {
                    emit(Change::Path(span.path(&clocks.sealing)), -1);
                }
            }
        }
    }

    /// The session of `id` that starts at `first`.
    fn find(&self, id: &CompactString, first: EventTime) -> Option<&Span> {
        let held = self.spans.get(id)?;
        held.spans.iter().find(|s| s.facts.first == first)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use clickflow_sources::EventType;

    use super::*;
    use crate::window::WindowSize;

    /// The clocks of a stage with `gap_ms` and a conversion window of `funnel_window_ms`,
    /// one-minute windows, no restart.
    fn clocks(gap_ms: i64, funnel_window_ms: i64) -> Clocks {
        let window = WindowSize::from_millis(60_000);
        Clocks {
            rule: SessionRule { gap_ms, window },
            sealing: Sealing {
                window,
                funnel_window_ms,
            },
            committed: EventTime::MIN,
        }
    }

    fn at(partition: u32, session: &str, ts: EventTime) -> Accepted {
        Accepted {
            partition,
            user_id: "u".into(),
            session_id: session.into(),
            event_type: EventType::Click,
            ts,
            price_cents: None,
            product_id: None,
        }
    }

    /// One epoch's events, in one batch.
    fn apply(
        state: &mut SessionState,
        events: Vec<Accepted>,
        clocks: &Clocks,
        emit: &mut dyn FnMut(Change, isize),
    ) {
        state.absorb(events, clocks);
        state.emit_touched(clocks, EventTime::MIN, emit);
    }

    /// Closes and forgets what the watermark `at` makes final and sealed, as an epoch that
    /// began there would.
    fn settle(state: &mut SessionState, watermark: EventTime, clocks: &Clocks) {
        let mut ignore = |_: Change, _: isize| {};
        state.close(watermark, clocks, &mut ignore);
        state.forget(watermark, clocks, &mut ignore);
    }

    #[test]
    fn each_partition_is_told_its_own_earliest_event_in_held_sessions() {
        let clocks = clocks(200_000, 100_000);
        let mut state = SessionState::default();
        let mut ignore = |_: Change, _: isize| {};
        // "a" lives on partition 0 from 10 s; "b" on partition 1 from 100 s, and later gets
        // an event on partition 0 too; "c" on partition 2 from 400 s.
        let events = vec![at(0, "a", 10_000), at(1, "b", 100_000), at(0, "a", 200_000)];
        apply(&mut state, events, &clocks, &mut ignore);
        assert_eq!(
            state.earliest_by_partition(),
            vec![(0, 10_000), (1, 100_000)]
        );
        let events = vec![at(0, "b", 130_000), at(2, "c", 400_000), at(1, "b", 90_000)];
        apply(&mut state, events, &clocks, &mut ignore);
        assert_eq!(
            state.earliest_by_partition(),
            vec![(0, 10_000), (1, 90_000), (2, 400_000)]
        );
        // "b" (last event 130 s) is final at 360 s: partition 1 holds nothing open any more,
        // partition 0 still holds "a" from 10 s.
        settle(&mut state, 360_000, &clocks);
        assert_eq!(
            state.earliest_by_partition(),
            vec![(0, 10_000), (2, 400_000)]
        );
        // "a" (last event 200 s) is final at 420 s, "c" at 660 s.
        settle(&mut state, 420_000, &clocks);
        assert_eq!(state.earliest_by_partition(), vec![(2, 400_000)]);
        settle(&mut state, 660_000, &clocks);
        assert!(state.earliest_by_partition().is_empty());
        assert!(state.depending.is_empty() && state.closing.is_empty());
        assert!(state.leaving.is_empty() && state.spans.is_empty());
    }

    /// The row changes an epoch emits, as `(session, closed, diff)`.
    fn row_changes(
        state: &mut SessionState,
        events: Vec<Accepted>,
        after: EventTime,
        clocks: &Clocks,
    ) -> Vec<(String, bool, isize)> {
        let mut rows = Vec::new();
        let mut keep = |change: Change, diff: isize| {
            if let Change::Row(row) = change {
                rows.push((row.session_id.to_string(), row.closed, diff));
            }
        };
        state.absorb(events, clocks);
        state.emit_touched(clocks, after, &mut keep);
        state.close(after, clocks, &mut keep);
        rows.sort();
        rows
    }

    #[test]
    fn a_session_changed_and_final_in_one_epoch_emits_only_its_closed_row() {
        let clocks = clocks(60_000, 60_000);
        let mut state = SessionState::default();
        // "a" opens in the first epoch, which ends before anything is final.
        let rows = row_changes(&mut state, vec![at(0, "a", 0)], 0, &clocks);
        assert_eq!(rows, [("a".into(), false, 1)]);
        // The second epoch changes "a" and opens "b", and its watermark makes both final
        // (each at the end of the window of its last event plus the gap, 180 s): "a", open
        // since an earlier epoch, is retracted and closed; "b" is only closed.
        let events = vec![at(0, "a", 10_000), at(1, "b", 20_000)];
        let rows = row_changes(&mut state, events, 180_000, &clocks);
        assert_eq!(
            rows,
            [
                ("a".into(), false, -1),
                ("a".into(), true, 1),
                ("b".into(), true, 1)
            ]
        );
        // Both wait to leave, and nothing waits to close.
        assert!(state.closing.is_empty());
        assert_eq!(state.leaving.values().map(Vec::len).sum::<usize>(), 2);
        // They leave once an epoch begins after their funnel windows are sealed, with no
        // row change (a closed row is final).
        let mut rows = 0;
        state.forget(180_000, &clocks, &mut |change, _| {
            rows += usize::from(matches!(change, Change::Row(_)));
        });
        assert_eq!(rows, 0);
        assert!(state.leaving.is_empty() && state.spans.is_empty());
        assert!(state.earliest_by_partition().is_empty());
    }

    #[test]
    fn a_closed_session_is_held_until_its_funnel_window_is_sealed() {
        // A 2-minute gap and a 10-minute conversion window: final before sealed.
        let clocks = clocks(120_000, 600_000);
        let mut state = SessionState::default();
        let emitted: RefCell<Vec<((Window, Path), isize)>> = RefCell::default();
        let mut keep = |change: Change, diff: isize| {
            if let Change::Path(path) = change {
                emitted.borrow_mut().push((path, diff));
            }
        };
        let paths = || emitted.borrow().clone();
        let cart = Accepted {
            event_type: EventType::AddToCart,
            ..at(0, "a", 70_000)
        };
        apply(
            &mut state,
            vec![at(0, "a", 61_000), cart],
            &clocks,
            &mut keep,
        );
        let path = Path {
            click: Some(0),
            cart: Some(9_000),
            purchase: None,
        };
        let window = clocks.sealing.window.window_of(61_000);
        assert_eq!(paths(), [((window, path), 1)]);
        // Final at the end of the window of 70 s + 2 min (240 s); sealed at the end of the
        // window of 119.999 s + 10 min (720 s).
        assert_eq!(clocks.sealing.sealed_at(61_000), 720_000);
        settle(&mut state, 240_000, &clocks);
        assert!(state.closing.is_empty());
        assert_eq!(state.earliest_by_partition(), [(0, 61_000)]);
        // Sealed at 720 s: an epoch that ends there may still change the window's rows,
        // so the session leaves only once an epoch begins there.
        state.close(720_000, &clocks, &mut keep);
        state.forget(719_999, &clocks, &mut keep);
        assert_eq!(paths().len(), 1);
        state.forget(720_000, &clocks, &mut keep);
        assert_eq!(paths(), [((window, path), 1), ((window, path), -1)]);
        assert!(state.spans.is_empty() && state.earliest_by_partition().is_empty());
    }
}
