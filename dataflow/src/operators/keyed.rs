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

use super::{by_epoch_streaming, RouteKey};
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
    /// the key alone (a window's end), so a key is indexed for eviction once.
    fn closes_at(&self, key: &Self::Key) -> EventTime;
}

/// A changed key as it stood before the epoch: its row (`None`: the epoch created it).
type Changed<K, R> = (K, Option<R>);

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
    values: HashMap<S::Key, Slot<S::Value>>,
    /// The keys by the event time at which they close, for eviction without a scan. A key's
    /// close time never moves, so each key is pushed once, when it is created: a sorted set
    /// of `(close time, key)` cost a B-tree insert of a `(window, type, user)` key per new
    /// key (funnel: 0.92 s of the workers' busy time on the side-by-side file, 4 December
    /// 2026, `run --profile-operators`).
    closing: BTreeMap<EventTime, Vec<S::Key>>,
    /// Each key the open epoch changed, once, with how it stood before.
    changed: Vec<Changed<S::Key, S::Row>>,
}

impl<S: KeyedStage> KeyedState<S> {
    /// Merges a batch of the open epoch's updates.
    fn absorb(&mut self, updates: Vec<(S::Key, S::Value)>) {
        for (key, value) in updates {
            match self.values.entry(key) {
                Entry::Occupied(mut entry) => {
                    if !entry.get().changed {
                        let before = S::row(entry.key(), &entry.get().value);
                        self.changed.push((entry.key().clone(), Some(before)));
                    }
                    let slot = entry.get_mut();
                    slot.changed = true;
                    slot.value.merge(value);
                }
                Entry::Vacant(entry) => {
                    let closes_at = self.stage.closes_at(entry.key());
                    let bucket = match self.closing.last_entry() {
                        Some(last) if *last.key() == closes_at => last.into_mut(),
                        _ => self.closing.entry(closes_at).or_default(),
                    };
                    bucket.push(entry.key().clone());
                    self.changed.push((entry.key().clone(), None));
                    entry.insert(Slot {
                        value,
                        changed: true,
                    });
                }
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
        for (key, before) in self.changed.drain(..) {
            let slot = self
                .values
                .get_mut(&key)
                .expect("a changed key is in the state");
            slot.changed = false;
            if self.stage.closes_at(&key) <= committed {
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
        while let Some(entry) = self.closing.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            for key in entry.remove() {
                self.values.remove(&key);
            }
        }
    }
}

/// Merges `(key, value)` updates into per-key state and emits, per epoch, the retraction of
/// each changed key's old row and the insertion of its new row. Keys whose
/// [`KeyedStage::closes_at`] the pipeline watermark has reached are evicted after the epoch,
/// with no retraction: their last row stays final downstream. Updates are merged batch by
/// batch as their epoch arrives; the rows are emitted once the epoch is complete.
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
        values: HashMap::default(),
        closing: BTreeMap::new(),
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
        move |_epoch, updates, _opening, _out: &mut dyn FnMut((S::Row, Epoch, isize))| {
            absorbing.borrow_mut().absorb(updates);
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
