//! Keeping one merged value per key and emitting the changes of its row, epoch by epoch.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use clickflow_sources::EventTime;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use super::by_epoch;
use crate::watermark::PartitionReport;
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
    type Key: ExchangeData + Clone + Hash + Eq + Ord;
    /// The merged value per key.
    type Value: ExchangeData + Clone + Merge;
    /// The output row of one key.
    type Row: ExchangeData + Clone + Ord;

    /// The row showing `value` under `key`; `closed` is true for the final row of a key that
    /// is evicted (see [`KeyedStage::EMITS_CLOSED_ROW`]).
    fn row(key: &Self::Key, value: &Self::Value, closed: bool) -> Self::Row;

    /// The event time from which the key is final: once the pipeline watermark reaches it,
    /// the key leaves the state.
    fn closes_at(&self, key: &Self::Key, value: &Self::Value) -> EventTime;

    /// Whether closing a key changes its row (sessions get `closed = true`); if not, the
    /// last row simply stays as it is downstream.
    const EMITS_CLOSED_ROW: bool;
}

/// Merges `(key, value)` updates into per-key state and emits, per epoch, the retraction of
/// each changed key's old row and the insertion of its new row. Keys whose
/// [`KeyedStage::closes_at`] the pipeline watermark has reached are evicted after the epoch,
/// with no retraction: their last row stays final downstream.
pub fn aggregate_by_key<'scope, S: KeyedStage>(
    stage: S,
    updates: StreamVec<'scope, Epoch, (S::Key, S::Value)>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    partitions: usize,
    name: &str,
) -> VecCollection<'scope, Epoch, S::Row> {
    let mut state: HashMap<S::Key, S::Value> = HashMap::new();
    // Keys by the event time at which they close, for eviction without a scan.
    let mut closing: BTreeSet<(EventTime, S::Key)> = BTreeSet::new();
    // Per epoch: each changed key with its row and close time before the epoch.
    let mut changed: HashMap<S::Key, Option<(S::Row, EventTime)>> = HashMap::new();
    let pact = Exchange::new(|(key, _): &(S::Key, S::Value)| hash_of(key));
    by_epoch(
        updates,
        pact,
        reports,
        partitions,
        name,
        move |epoch, updates, watermarks, out| {
            for (key, value) in updates {
                match state.get_mut(&key) {
                    Some(existing) => {
                        if !changed.contains_key(&key) {
                            let before = (
                                S::row(&key, existing, false),
                                stage.closes_at(&key, existing),
                            );
                            changed.insert(key.clone(), Some(before));
                        }
                        existing.merge(value);
                    }
                    None => {
                        changed.entry(key.clone()).or_insert(None);
                        state.insert(key, value);
                    }
                }
            }
            for (key, before) in changed.drain() {
                let value = &state[&key];
                let row = S::row(&key, value, false);
                let closes_at = stage.closes_at(&key, value);
                if let Some((old_row, old_closes_at)) = before {
                    if old_row == row {
                        continue;
                    }
                    out.push((old_row, epoch, -1));
                    closing.remove(&(old_closes_at, key.clone()));
                }
                out.push((row, epoch, 1));
                closing.insert((closes_at, key));
            }
            while let Some(first) = closing.first() {
                if first.0 > watermarks.after {
                    break;
                }
                let (_, key) = closing.pop_first().expect("first exists");
                if let Some(value) = state.remove(&key) {
                    if S::EMITS_CLOSED_ROW {
                        out.push((S::row(&key, &value, false), epoch, -1));
                        out.push((S::row(&key, &value, true), epoch, 1));
                    }
                }
            }
        },
    )
    .as_collection()
}

/// A stable hash for routing keys to workers (the same on every process).
fn hash_of<K: Hash>(key: &K) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}
