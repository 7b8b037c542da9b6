//! Keeping one merged value per key and emitting the changes of its row, epoch by epoch.

use std::collections::BTreeSet;
use std::hash::Hash;

use clickflow_sources::EventTime;
use differential_dataflow::{AsCollection, VecCollection};
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use super::by_epoch;
use crate::watermark::{PartitionReport, ProgressSeed};
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

    /// The earliest event time the key's value depends on, for stages whose keys can depend
    /// on events older than the watermark says (sessions); `None` for stages where the
    /// watermark alone bounds it (windows). A restart must replay from before it.
    fn depends_since(&self, _key: &Self::Key, _value: &Self::Value) -> Option<EventTime> {
        None
    }

    /// Whether closing a key changes its row (sessions get `closed = true`); if not, the
    /// last row simply stays as it is downstream.
    const EMITS_CLOSED_ROW: bool;
}

/// The earliest event time a worker's part of a stage still depends on, after an epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// The stage (its operator name).
    pub stage: String,
    /// The worker.
    pub worker: usize,
    /// The earliest event time, or `None` when the worker holds no key of the stage.
    pub since: Option<EventTime>,
}

type Output<R> = Result<(R, Epoch, isize), Retention>;

/// A changed key as it stood before the epoch: its row, close time and dependency time.
type Before<R> = (R, EventTime, Option<EventTime>);

/// Merges `(key, value)` updates into per-key state and emits, per epoch, the retraction of
/// each changed key's old row and the insertion of its new row. Keys whose
/// [`KeyedStage::closes_at`] the pipeline watermark has reached are evicted after the epoch,
/// with no retraction: their last row stays final downstream. Stages that track
/// [`KeyedStage::depends_since`] also report it whenever it changes.
///
/// Keys that close at or before the seed's committed watermark had their final rows committed
/// before a restart; replay may rebuild them in part, and their rows are never emitted again.
pub fn aggregate_by_key<'scope, S: KeyedStage>(
    stage: S,
    updates: StreamVec<'scope, Epoch, (S::Key, S::Value)>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    name: &str,
) -> (
    VecCollection<'scope, Epoch, S::Row>,
    StreamVec<'scope, Epoch, Retention>,
) {
    let worker = updates.scope().index();
    let stage_name = name.to_string();
    let mut state: HashMap<S::Key, S::Value> = HashMap::default();
    // Keys by the event time at which they close, for eviction without a scan.
    let mut closing: BTreeSet<(EventTime, S::Key)> = BTreeSet::new();
    // Keys by the earliest event time they depend on (stages that track it).
    let mut depending: BTreeSet<(EventTime, S::Key)> = BTreeSet::new();
    let mut reported_since: Option<Option<EventTime>> = None;
    // Per epoch: each changed key with its row and close time before the epoch.
    let mut changed: HashMap<S::Key, Option<Before<S::Row>>> = HashMap::default();
    let pact = Exchange::new(|(key, _): &(S::Key, S::Value)| hash_of(key));
    let outputs = by_epoch(
        updates,
        pact,
        reports,
        seed,
        name,
        move |epoch, updates, watermarks, out: &mut dyn FnMut(Output<S::Row>)| {
            for (key, value) in updates {
                match state.get_mut(&key) {
                    Some(existing) => {
                        if !changed.contains_key(&key) {
                            let before = (
                                S::row(&key, existing, false),
                                stage.closes_at(&key, existing),
                                stage.depends_since(&key, existing),
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
            let committed = seed.committed_watermark;
            for (key, before) in changed.drain() {
                let value = &state[&key];
                let row = S::row(&key, value, false);
                let closes_at = stage.closes_at(&key, value);
                let emit = closes_at > committed;
                let since = stage.depends_since(&key, value);
                // The eviction indexes are touched only where a time moved: most changes
                // move a session's close time, few its start, none a window's end.
                let (mut index_close, mut index_since) = (true, since.is_some());
                if let Some((old_row, old_closes_at, old_since)) = before {
                    if old_row == row {
                        continue;
                    }
                    if emit && old_closes_at > committed {
                        out(Ok((old_row, epoch, -1)));
                    }
                    if old_closes_at == closes_at {
                        index_close = false;
                    } else {
                        closing.remove(&(old_closes_at, key.clone()));
                    }
                    if old_since == since {
                        index_since = false;
                    } else if let Some(old_since) = old_since {
                        depending.remove(&(old_since, key.clone()));
                    }
                }
                if emit {
                    out(Ok((row, epoch, 1)));
                }
                if let (true, Some(since)) = (index_since, since) {
                    depending.insert((since, key.clone()));
                }
                if index_close {
                    closing.insert((closes_at, key));
                }
            }
            while let Some((closes_at, _)) = closing.first() {
                if *closes_at > watermarks.after {
                    break;
                }
                let (closes_at, key) = closing.pop_first().expect("first exists");
                if let Some(value) = state.remove(&key) {
                    if let Some(since) = stage.depends_since(&key, &value) {
                        depending.remove(&(since, key.clone()));
                    }
                    if S::EMITS_CLOSED_ROW && closes_at > committed {
                        out(Ok((S::row(&key, &value, false), epoch, -1)));
                        out(Ok((S::row(&key, &value, true), epoch, 1)));
                    }
                }
            }
            let since = depending.first().map(|(since, _)| *since);
            if reported_since != Some(since)
                && stage_tracks_dependencies(&depending, reported_since)
            {
                out(Err(Retention {
                    stage: stage_name.clone(),
                    worker,
                    since,
                }));
                reported_since = Some(since);
            }
        },
    );
    let (rows, retention) = outputs.ok_err(|output| output);
    (rows.as_collection(), retention)
}

/// A stage reports its dependencies once it has had any, and on every change after that.
fn stage_tracks_dependencies<K>(
    depending: &BTreeSet<(EventTime, K)>,
    reported: Option<Option<EventTime>>,
) -> bool {
    !depending.is_empty() || reported.is_some()
}

/// A stable hash for routing keys to workers: fixed-seed foldhash, the same on every process
/// of one build (and several times cheaper than SipHash on these short keys).
fn hash_of<K: Hash>(key: &K) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x636c_6963_6b66_6c77).hash_one(key)
}
