//! Keeping one merged value per key and emitting the changes of its row, epoch by epoch.

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
    let mut state: HashMap<S::Key, S::Value> = HashMap::default();
    // Keys by the event time at which they close, for eviction without a scan.
    let mut closing: BTreeSet<(EventTime, S::Key)> = BTreeSet::new();
    // Per epoch: each changed key with its row and close time before the epoch.
    let mut changed: HashMap<S::Key, Option<Before<S::Row>>> = HashMap::default();
    let pact = Exchange::new(|(key, _): &(S::Key, S::Value)| key.route());
    by_epoch(
        updates,
        pact,
        reports,
        seed,
        name,
        move |epoch, updates, watermarks, out: &mut dyn FnMut((S::Row, Epoch, isize))| {
            for (key, value) in updates {
                match state.get_mut(&key) {
                    Some(existing) => {
                        if !changed.contains_key(&key) {
                            let before = (S::row(&key, existing), stage.closes_at(&key, existing));
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
            let committed = seed.committed_watermark;
            for (key, before) in changed.drain() {
                let value = &state[&key];
                let row = S::row(&key, value);
                let closes_at = stage.closes_at(&key, value);
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
