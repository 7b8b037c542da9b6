//! Keeping one merged value per key and emitting the changes of its row, epoch by epoch.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use clickflow_sources::EventTime;
use differential_dataflow::{AsCollection, VecCollection};
use foldhash::HashMap;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use super::{by_epoch_streaming, probe_ahead, RouteKey};
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::Epoch;

/// A value that absorbs another of its kind (associative and commutative).
pub trait Merge {
    /// Folds `other` into `self`.
    fn merge(&mut self, other: Self);
}

impl Merge for () {
    fn merge(&mut self, _other: ()) {}
}

impl Merge for i64 {
    fn merge(&mut self, other: i64) {
        *self += other;
    }
}

/// What a keyed stage keeps and shows: the key, the merged value, the output row, and when a
/// key becomes final.
pub trait KeyedStage: 'static {
    /// The key the state is partitioned and merged by.
    type Key: ExchangeData + Clone + Hash + Eq + Ord + RouteKey;
    /// The merged value per key.
    type Value: ExchangeData + Clone + Merge;
    /// The output row of one key.
    type Row: ExchangeData + Clone + Ord;

    /// The row showing `value` under `key`.
    fn row(key: &Self::Key, value: &Self::Value) -> Self::Row;

    /// The event time from which the key is final: once the pipeline watermark reaches it,
    /// the key leaves the state and its last row stays as it is downstream. It depends on
    /// the key alone (a window's end): the state is kept by close time.
    fn closes_at(&self, key: &Self::Key) -> EventTime;

    /// True when merging never changes a key's row once the key exists (a set of keys,
    /// whose value is `()`): each new key's row is then emitted as its update arrives, and
    /// the epoch's changed keys are not remembered until it completes. Nothing reads a
    /// key's value after its row is made, so an update of a key already held is dropped.
    ///
    /// Measured on 4 December 2026 (sixth sitting; side-by-side file, 2 workers): for the
    /// funnel's distinct users, the list of an epoch's changed keys (each with a copy of
    /// the key and of its row) was among the largest allocations of a run (heaptrack),
    /// since a backlog epoch opens half an hour of windows at once. Emitting first
    /// sightings as they arrive took the run's peak RSS from 309–310 MB to 266 MB and its
    /// wall time from 3.82 s to 3.62–3.63 s (alternating runs); the stage's busy time went
    /// from 0.64–0.66 s to 0.50 s (`run --profile-operators`).
    const ROW_FIXED_AT_INSERT: bool = false;
}

/// A key the open epoch changed: its close time, the key, and its row as it stood before
/// the epoch (`None`: the epoch created it).
type Changed<K, R> = (EventTime, K, Option<R>);

/// One key's state: its merged value, and whether the current epoch has changed it already.
/// The flag lives beside the value so that an update costs one lookup (a separate map of
/// changed keys cost two more, and hashing and comparing `(window, type, user)` keys was the
/// top of a profile); how a changed key stood before the epoch is kept in a list for the
/// epoch only.
struct Slot<V> {
    value: V,
    changed: bool,
}

/// One worker's keys, and the epoch's changes so far.
struct KeyedState<S: KeyedStage> {
    stage: S,
    /// The keys, in one map per close time (a window's end), so that eviction drops whole
    /// maps and an update probes the small map of its own window, which the current
    /// minute's traffic keeps in cache. (Before, one map held every open window's keys and
    /// a sorted set of `(close time, key)` beside it indexed them for eviction: each update
    /// probed the large map, and each new key went into a B-tree as well. On the
    /// side-by-side file, 4 December 2026, 2 workers, `run --profile-operators`, the
    /// funnel's distinct-user stage went from 1.13 s of busy time to 0.77 s, and the run's
    /// peak RSS from 411 to 362 MB.)
    by_close: BTreeMap<EventTime, HashMap<S::Key, Slot<S::Value>>>,
    /// Each key the open epoch changed, once, with how it stood before.
    changed: Vec<Changed<S::Key, S::Row>>,
}

impl<S: KeyedStage> KeyedState<S> {
    /// Merges a batch of the open epoch's updates; with [`KeyedStage::ROW_FIXED_AT_INSERT`],
    /// emits the rows of the new keys that close after `committed`.
    fn absorb(
        &mut self,
        updates: Vec<(S::Key, S::Value)>,
        committed: EventTime,
        out: &mut dyn FnMut(S::Row, isize),
    ) {
        if !S::ROW_FIXED_AT_INSERT {
            // Pre-aggregated counts into a few small maps: they stay in cache.
            for (key, value) in updates {
                self.absorb_one(key, value, false, committed, out);
            }
            return;
        }
        probe_ahead(
            self,
            updates,
            |state, (key, _)| {
                let keys = state.by_close.get(&state.stage.closes_at(key));
                keys.is_some_and(|keys| keys.contains_key(key))
            },
            |state, (key, value), held| state.absorb_one(key, value, held, committed, out),
        );
    }

    /// Merges one update; `held`: its key was there when its chunk was probed (nothing
    /// leaves while updates are absorbed, so it still is).
    fn absorb_one(
        &mut self,
        key: S::Key,
        value: S::Value,
        held: bool,
        committed: EventTime,
        out: &mut dyn FnMut(S::Row, isize),
    ) {
        // The probe's answer picks the lookup. A key held then, whose row is fixed, takes
        // nothing from the update: no second lookup. (A probe whose answer went unused
        // would be a pure lookup the compiler may drop.) For the funnel's distinct users,
        // which merged `()` into the held key's slot before, the stage went from 0.55–0.59 s
        // to 0.51–0.54 s of busy time on the side-by-side file (3 alternating pairs, 7
        // December 2026).
        if held && S::ROW_FIXED_AT_INSERT {
            return;
        }
        let closes_at = self.stage.closes_at(&key);
        let keys = self.by_close.entry(closes_at).or_default();
        match keys.entry(key) {
            // Added by an earlier update of the chunk: its row is made already.
            Entry::Occupied(_) if S::ROW_FIXED_AT_INSERT => {}
            Entry::Vacant(entry) if S::ROW_FIXED_AT_INSERT => {
                if closes_at > committed {
                    out(S::row(entry.key(), &value), 1);
                }
                entry.insert(Slot {
                    value,
                    changed: false,
                });
            }
            Entry::Occupied(mut entry) => {
                if !entry.get().changed {
                    let before = S::row(entry.key(), &entry.get().value);
                    self.changed
                        .push((closes_at, entry.key().clone(), Some(before)));
                }
                let slot = entry.get_mut();
                slot.changed = true;
                slot.value.merge(value);
            }
            Entry::Vacant(entry) => {
                self.changed.push((closes_at, entry.key().clone(), None));
                entry.insert(Slot {
                    value,
                    changed: true,
                });
            }
        }
    }

    /// Emits each changed key's row change (rows of keys closed before `committed` were
    /// written before a restart and are not emitted again), then evicts every key closed at
    /// `watermark`.
    fn complete(
        &mut self,
        committed: EventTime,
        watermark: EventTime,
        out: &mut dyn FnMut(S::Row, isize),
    ) {
        for (closes_at, key, before) in self.changed.drain(..) {
            let slot = self
                .by_close
                .get_mut(&closes_at)
                .and_then(|keys| keys.get_mut(&key))
                .expect("a changed key is in the state");
            slot.changed = false;
            if closes_at <= committed {
                continue;
            }
            let row = S::row(&key, &slot.value);
            match before {
                Some(old) if old == row => {}
                Some(old) => {
                    out(old, -1);
                    out(row, 1);
                }
                None => out(row, 1),
            }
        }
        while let Some(entry) = self.by_close.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            entry.remove();
        }
    }
}

/// Merges `(key, value)` updates into per-key state and emits, per epoch, the retraction of
/// each changed key's old row and the insertion of its new row. Keys whose
/// [`KeyedStage::closes_at`] the pipeline watermark has reached are evicted after the epoch,
/// with no retraction: their last row stays final downstream. Updates are merged batch by
/// batch as their epoch arrives; the rows are emitted once the epoch is complete, or, for a
/// stage whose rows are fixed when a key enters ([`KeyedStage::ROW_FIXED_AT_INSERT`]), as
/// the new keys arrive.
///
/// Keys that close at or before the seed's committed watermark had their final rows committed
/// before a restart; replay may rebuild them in part, and their rows are never emitted again.
pub fn aggregate_by_key<'scope, S: KeyedStage>(
    stage: S,
    updates: StreamVec<'scope, Epoch, (S::Key, S::Value)>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    name: &str,
) -> VecCollection<'scope, Epoch, S::Row> {
    let state = Rc::new(RefCell::new(KeyedState {
        stage,
        by_close: BTreeMap::new(),
        changed: Vec::new(),
    }));
    let absorbing = state.clone();
    let pact = Exchange::new(|(key, _): &(S::Key, S::Value)| key.route());
    by_epoch_streaming(
        updates,
        pact,
        reports,
        seed,
        name,
        move |epoch, updates, _opening, out: &mut dyn FnMut((S::Row, Epoch, isize))| {
            let mut emit = |row: S::Row, diff: isize| out((row, epoch, diff));
            absorbing
                .borrow_mut()
                .absorb(updates, seed.committed_watermark, &mut emit);
        },
        move |epoch, watermarks, out: &mut dyn FnMut((S::Row, Epoch, isize))| {
            let mut emit = |row: S::Row, diff: isize| out((row, epoch, diff));
            state
                .borrow_mut()
                .complete(seed.committed_watermark, watermarks.after, &mut emit);
        },
    )
    .as_collection()
}

#[cfg(test)]
mod tests {
    use clickflow_sources::EventType;

    use super::*;
    use crate::window::{Window, WindowSize};

    /// Events per window and type, as `(window end, type, count)` rows.
    struct Counts;

    impl KeyedStage for Counts {
        type Key = (Window, EventType);
        type Value = i64;
        type Row = (EventTime, EventType, i64);

        fn row(&(window, event_type): &Self::Key, count: &i64) -> Self::Row {
            (window.end, event_type, *count)
        }

        fn closes_at(&self, (window, _): &Self::Key) -> EventTime {
            window.end
        }
    }

    fn state() -> KeyedState<Counts> {
        KeyedState {
            stage: Counts,
            by_close: BTreeMap::new(),
            changed: Vec::new(),
        }
    }

    fn at(ts: EventTime, event_type: EventType) -> ((Window, EventType), i64) {
        (
            (WindowSize::from_millis(60_000).window_of(ts), event_type),
            1,
        )
    }

    /// Merges a batch into a stage that emits nothing before the epoch completes.
    fn absorb(state: &mut KeyedState<Counts>, updates: Vec<((Window, EventType), i64)>) {
        state.absorb(updates, EventTime::MIN, &mut |row, diff| {
            panic!("{row:?} {diff} emitted before the epoch completed")
        });
    }

    /// Completes an epoch: its row changes, sorted.
    fn complete(
        state: &mut KeyedState<Counts>,
        committed: EventTime,
        watermark: EventTime,
    ) -> Vec<((EventTime, EventType, i64), isize)> {
        let mut rows = Vec::new();
        state.complete(committed, watermark, &mut |row, diff| {
            rows.push((row, diff))
        });
        rows.sort();
        rows
    }

    #[test]
    fn each_changed_key_moves_its_row_once_per_epoch_and_closed_windows_leave() {
        use EventType::{AddToCart, Click};
        let mut state = state();
        // Two batches of one epoch: a key changed twice moves once.
        absorb(&mut state, vec![at(1_000, Click), at(61_000, Click)]);
        absorb(&mut state, vec![at(2_000, Click), at(3_000, AddToCart)]);
        assert_eq!(
            complete(&mut state, EventTime::MIN, 0),
            [
                ((60_000, Click, 2), 1),
                ((60_000, AddToCart, 1), 1),
                ((120_000, Click, 1), 1)
            ]
        );
        // The next epoch retracts the old row; the first window closes at its end.
        absorb(&mut state, vec![at(4_000, Click)]);
        assert_eq!(
            complete(&mut state, EventTime::MIN, 60_000),
            [((60_000, Click, 2), -1), ((60_000, Click, 3), 1)]
        );
        assert_eq!(state.by_close.keys().collect::<Vec<_>>(), [&120_000]);
        // A key of a window closed before a restart is rebuilt but never emitted.
        absorb(&mut state, vec![at(70_000, Click), at(130_000, AddToCart)]);
        assert_eq!(
            complete(&mut state, 120_000, 120_000),
            [((180_000, AddToCart, 1), 1)]
        );
        assert!(state.changed.is_empty());
        assert_eq!(state.by_close.keys().collect::<Vec<_>>(), [&180_000]);
    }

    /// The distinct `(window, type)` keys seen: a set, its rows fixed when a key enters.
    struct Seen;

    impl KeyedStage for Seen {
        type Key = (Window, EventType);
        type Value = ();
        type Row = (EventTime, EventType);

        fn row(&(window, event_type): &Self::Key, _: &()) -> Self::Row {
            (window.end, event_type)
        }

        fn closes_at(&self, (window, _): &Self::Key) -> EventTime {
            window.end
        }

        const ROW_FIXED_AT_INSERT: bool = true;
    }

    #[test]
    fn a_set_emits_each_new_key_as_it_arrives_and_nothing_when_the_epoch_completes() {
        use EventType::{AddToCart, Click};
        let mut state = KeyedState {
            stage: Seen,
            by_close: BTreeMap::new(),
            changed: Vec::new(),
        };
        let seen = |ts, event_type| (at(ts, event_type).0, ());
        let absorb = |state: &mut KeyedState<Seen>, updates, committed| {
            let mut rows = Vec::new();
            state.absorb(updates, committed, &mut |row, diff| rows.push((row, diff)));
            rows
        };
        assert_eq!(
            absorb(
                &mut state,
                vec![seen(1_000, Click), seen(2_000, Click), seen(61_000, Click)],
                EventTime::MIN
            ),
            [((60_000, Click), 1), ((120_000, Click), 1)]
        );
        // Seen again in a later batch: nothing; a new type: its row.
        assert_eq!(
            absorb(
                &mut state,
                vec![seen(3_000, Click), seen(4_000, AddToCart)],
                EventTime::MIN
            ),
            [((60_000, AddToCart), 1)]
        );
        let mut completed = Vec::new();
        state.complete(EventTime::MIN, 60_000, &mut |row, diff| {
            completed.push((row, diff))
        });
        assert!(completed.is_empty() && state.changed.is_empty());
        assert_eq!(state.by_close.keys().collect::<Vec<_>>(), [&120_000]);
        // A key of a window closed before a restart is kept but never emitted.
        assert_eq!(
            absorb(
                &mut state,
                vec![seen(62_000, AddToCart), seen(121_000, Click)],
                120_000
            ),
            [((180_000, Click), 1)]
        );
    }
}
