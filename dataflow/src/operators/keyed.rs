//! Keeping one merged value per key and emitting the changes of its row, epoch by epoch.

use std::collections::hash_map::Entry;
use std::collections::BTreeSet;
use std::hash::Hash;

use clickflow_sources::EventTime;
use differential_dataflow::{AsCollection, VecCollection};
use foldhash::HashMap;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use super::{by_epoch, RouteKey};
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
    /// the key leaves the state and its last row stays as it is downstream.
    fn closes_at(&self, key: &Self::Key, value: &Self::Value) -> EventTime;
}

/// A changed key as it stood before the epoch: its row and close time.
type Before<R> = (R, EventTime);

/// A key an epoch changed, with how it stood before (`None`: the epoch created it).
type Changed<K, R> = (K, Option<Before<R>>);

/// One key's state: its merged value, and whether the current epoch has changed it already.
/// The flag lives beside the value so that an update costs one lookup (a separate map of
/// changed keys cost two more, and hashing and comparing `(window, type, user)` keys was the
/// top of a profile); how a changed key stood before the epoch is kept in a list for the
/// epoch only.
struct Slot<V> {
    value: V,
    changed: bool,
}

/// Merges `(key, value)` updates into per-key state and emits, per epoch, the retraction of
/// each changed key's old row and the insertion of its new row. Keys whose
/// [`KeyedStage::closes_at`] the pipeline watermark has reached are evicted after the epoch,
/// with no retraction: their last row stays final downstream.
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
    let mut state: HashMap<S::Key, Slot<S::Value>> = HashMap::default();
    // Keys by the event time at which they close, for eviction without a scan.
    let mut closing: BTreeSet<(EventTime, S::Key)> = BTreeSet::new();
    // Per epoch: each key it changed, once, with how it stood before (`None`: created).
    let mut changed: Vec<Changed<S::Key, S::Row>> = Vec::new();
    let pact = Exchange::new(|(key, _): &(S::Key, S::Value)| key.route());
    by_epoch(
        updates,
        pact,
        reports,
        seed,
        name,
        move |epoch, updates, watermarks, out: &mut dyn FnMut((S::Row, Epoch, isize))| {
            for (key, value) in updates {
                match state.entry(key) {
                    Entry::Occupied(mut entry) => {
                        if !entry.get().changed {
                            let (key, slot) = (entry.key(), entry.get());
                            let before =
                                (S::row(key, &slot.value), stage.closes_at(key, &slot.value));
                            changed.push((key.clone(), Some(before)));
                        }
                        let slot = entry.get_mut();
                        slot.changed = true;
                        slot.value.merge(value);
                    }
                    Entry::Vacant(entry) => {
                        changed.push((entry.key().clone(), None));
                        entry.insert(Slot {
                            value,
                            changed: true,
                        });
                    }
                }
            }
            let committed = seed.committed_watermark;
            for (key, before) in changed.drain(..) {
                let slot = state.get_mut(&key).expect("a changed key is in the state");
                slot.changed = false;
                let row = S::row(&key, &slot.value);
                let closes_at = stage.closes_at(&key, &slot.value);
                let emit = closes_at > committed;
                // The eviction index is touched only where a time moved (never, for windows).
                let mut index_close = true;
                if let Some((old_row, old_closes_at)) = before {
                    if old_row == row {
                        continue;
                    }
                    if emit && old_closes_at > committed {
                        out((old_row, epoch, -1));
                    }
                    if old_closes_at == closes_at {
                        index_close = false;
                    } else {
                        closing.remove(&(old_closes_at, key.clone()));
                    }
                }
                if emit {
                    out((row, epoch, 1));
                }
                if index_close {
                    closing.insert((closes_at, key));
                }
            }
            while let Some((closes_at, _)) = closing.first() {
                if *closes_at > watermarks.after {
                    break;
                }
                let (_, key) = closing.pop_first().expect("first exists");
                state.remove(&key);
            }
        },
    )
    .as_collection()
}
