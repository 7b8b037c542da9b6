//! Knowing, on every worker, when the replay after a restart is over.
//!
//! After a restart each partition first replays committed input, from a checkpoint before
//! the oldest event its open windows and sessions depend on up to the committed offset, to
//! rebuild that state; the output of those epochs is already in the tables and is not
//! applied. No partition may read past its committed offset before every partition has
//! finished replaying, or new input would land in an epoch whose output is discarded. Each
//! worker therefore watches the broadcast partition reports and raises a flag, read by its
//! driver, once every partition has reported that it is done.
//!
//! How far back a restart replays each partition comes from the stages themselves: each
//! stage that holds records across epochs reports its [`Retention`] after every epoch.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use clickflow_sources::EventTime;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use crate::runtime::watermark::{PartitionReport, WatermarkTracker};
use crate::Epoch;

/// How far back what a worker holds reaches into each partition, after an epoch: a
/// restart must replay each partition from before its own earliest event held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// The stage (its operator name).
    pub stage: String,
    /// The worker.
    pub worker: usize,
    /// `(partition, earliest event time)` for every partition some held record (an open
    /// session, say) came from, by partition; empty when the worker holds none.
    pub since: Vec<(u32, EventTime)>,
}

impl Retention {
    /// The earliest event time of anything the worker holds (of the session stage: the
    /// earliest start of its open sessions and of its closed ones not yet forgotten).
    pub fn earliest(&self) -> Option<EventTime> {
        self.since.iter().map(|&(_, since)| since).min()
    }
}

/// The precision of a reported [`Retention`]: origins are counted per second.
const ORIGIN_GRAIN_MS: EventTime = 1_000;

/// How many of what a stage holds (records, sessions) came from each partition in each
/// second: the [`Retention`] it reports is the earliest second of each partition.
///
/// Counted per second rather than per millisecond, or per held thing, the count stays small
/// enough to stay in cache: on 4 December 2026 the ordered funnel's holding (every event;
/// the funnel no longer has one) and the recommender's took 1.31 s and 1.43 s of the
/// workers' time on the side-by-side file with millisecond origins, 1.02–1.04 s and
/// 0.97–1.01 s with whole seconds (`run --profile-operators`). A replay may start up to a
/// second earlier than it must: the events it reads again are older than anything the
/// stage holds, final and sealed, and what a replay rebuilds of them is never written.
///
/// The things added to the latest `(partition, second)` are counted beside the tree until
/// another one comes: what a stage holds arrives partition by partition in event-time order
/// (a worker reads a split a stint at a time), so most additions fall in the same second as
/// the one before them, and each took a walk down the tree. Measured on 7 December 2026
/// (twenty-fourth sitting, side-by-side file, every table): with `run --profile-operators`,
/// 3 alternating pairs, the recommender's held items took 0.51–0.57 s of busy time against
/// 0.72–0.75 s and the session stage 0.70–0.88 s against 0.96–1.00 s; callgrind on the
/// file's first 200,000 lines, one worker, 3.070G instructions against 3.125G.
#[derive(Debug, Default)]
pub struct Origins {
    /// The counts, but for [`Origins::latest`]'s.
    counts: BTreeMap<(u32, EventTime), usize>,
    /// The `(partition, second)` most recently added to, counted apart.
    latest: Latest,
}

/// The `(partition, second)` most recently added to, and how many of its things are not in
/// the tree yet.
#[derive(Debug, Default)]
struct Latest {
    origin: (u32, EventTime),
    uncounted: usize,
}

impl Origins {
    /// Counts one more thing held from `partition` at `ts`.
    pub fn add(&mut self, partition: u32, ts: EventTime) {
        let key = (partition, second_of(ts));
        if self.latest.origin != key {
            self.settle();
            self.latest.origin = key;
        }
        self.latest.uncounted += 1;
    }

    /// Counts one fewer thing held from `partition` at `ts`.
    pub fn remove(&mut self, partition: u32, ts: EventTime) {
        let key = (partition, second_of(ts));
        if self.latest.origin == key && self.latest.uncounted > 0 {
            self.latest.uncounted -= 1;
            return;
        }
        if let Some(count) = self.counts.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&key);
            }
        }
    }

    /// Moves one thing's origin from `from` to `to`, each `(partition, event time)`; nothing
    /// to do when both fall in the same partition and second.
    pub fn moved(&mut self, from: (u32, EventTime), to: (u32, EventTime)) {
        if (from.0, second_of(from.1)) != (to.0, second_of(to.1)) {
            self.remove(from.0, from.1);
            self.add(to.0, to.1);
        }
    }

    /// Moves the latest second's uncounted things into the tree.
    fn settle(&mut self) {
        let Latest { origin, uncounted } = std::mem::take(&mut self.latest);
        if uncounted > 0 {
            *self.counts.entry(origin).or_default() += uncounted;
        }
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.latest.uncounted == 0
    }

    /// `(partition, earliest second)` of every partition counted, by partition: one seek
    /// per partition, not a walk over every origin (a day's horizon holds millions, and
    /// the walk ran every epoch: 2.2% of a profile of `clickflow run`).
    pub fn since(&self) -> Vec<(u32, EventTime)> {
        let mut since: Vec<(u32, EventTime)> = Vec::new();
        let mut next = self.counts.keys().next().copied();
        while let Some((partition, ts)) = next {
            since.push((partition, ts));
            next = partition.checked_add(1).and_then(|following| {
                let rest = (following, EventTime::MIN)..;
                self.counts.range(rest).next().map(|(key, _)| *key)
            });
        }
        let Latest {
            origin: (partition, second),
            uncounted,
        } = self.latest;
        if uncounted > 0 {
            match since.binary_search_by_key(&partition, |&(p, _)| p) {
                Ok(at) => since[at].1 = since[at].1.min(second),
                Err(at) => since.insert(at, (partition, second)),
            }
        }
        since
    }
}

/// `ts` rounded down to its second.
fn second_of(ts: EventTime) -> EventTime {
    ts.saturating_sub(ts.rem_euclid(ORIGIN_GRAIN_MS))
}

/// Returns a cell that, on this worker, is set to the first epoch by whose end every one of
/// `partitions` partitions has reported that it is no longer replaying, once that epoch is
/// complete: the same epoch on every worker, from the same reports, though each learns it
/// at its own moment.
pub fn replay_monitor(
    reports: StreamVec<'_, Epoch, PartitionReport>,
    partitions: usize,
) -> Rc<Cell<Option<Epoch>>> {
    let done = Rc::new(Cell::new(None));
    let flag = done.clone();
    let mut pending: BTreeMap<Epoch, Vec<PartitionReport>> = BTreeMap::new();
    let mut tracker = WatermarkTracker::new(partitions);
    reports.sink(Pipeline, "Replay: monitor", move |(input, frontier)| {
        input.for_each_stamp(|stamp, batches| {
            if let Some(&epoch) = stamp.least() {
                pending
                    .entry(epoch)
                    .or_default()
                    .extend(batches.flat_map(|b| b.drain(..)));
            }
        });
        while let Some(entry) = pending.first_entry() {
            if frontier.frontier().less_equal(entry.key()) {
                break;
            }
            let (epoch, reports) = entry.remove_entry();
            for report in reports {
                tracker.update(report);
            }
            if tracker.all_replayed() && flag.get().is_none() {
                flag.set(Some(epoch));
            }
        }
    });
    done
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn origins_are_counted_per_partition_and_second() {
        let mut origins = Origins::default();
        origins.add(3, 40_999);
        origins.add(3, 40_001);
        origins.add(0, 7_500);
        origins.add(u32::MAX, EventTime::MIN);
        assert_eq!(
            origins.since(),
            [(0, 7_000), (3, 40_000), (u32::MAX, EventTime::MIN)]
        );
        // Two things of one second: the second stays until both leave.
        origins.remove(3, 40_999);
        assert_eq!(origins.since()[1], (3, 40_000));
        // A move within its second changes nothing; one to another second does.
        origins.moved((3, 40_001), (3, 40_900));
        assert_eq!(origins.since()[1], (3, 40_000));
        origins.moved((3, 40_001), (3, 52_000));
        assert_eq!(origins.since()[1], (3, 52_000));
        origins.remove(3, 52_000);
        origins.remove(0, 7_999);
        origins.remove(u32::MAX, EventTime::MIN);
        assert!(origins.is_empty() && origins.since().is_empty());
    }

    /// One change to what a stage holds: which held thing (by its index among those held,
    /// modulo their number) leaves or moves, or where a new one comes from.
    #[derive(Clone, Debug)]
    enum Change {
        Add(u32, EventTime),
        Remove(usize),
        Move(usize, u32, EventTime),
    }

    fn change() -> impl Strategy<Value = Change> {
        // Few partitions and seconds, so that additions often repeat the latest second.
        let origin = (0u32..3, 0i64..4_000);
        prop_oneof![
            3 => origin.clone().prop_map(|(p, ts)| Change::Add(p, ts)),
            1 => any::<usize>().prop_map(Change::Remove),
            2 => (any::<usize>(), origin).prop_map(|(i, (p, ts))| Change::Move(i, p, ts)),
        ]
    }

    proptest! {
        /// The counts, with the latest second's kept apart, report what a plain list of
        /// every held thing's origin says, after every change.
        #[test]
        fn origins_report_the_earliest_second_of_each_partition(
            changes in proptest::collection::vec(change(), 1..200)
        ) {
            let mut origins = Origins::default();
            let mut held: Vec<(u32, EventTime)> = Vec::new();
            for change in changes {
                match change {
                    Change::Add(partition, ts) => {
                        origins.add(partition, ts);
                        held.push((partition, ts));
                    }
                    Change::Remove(i) if !held.is_empty() => {
                        let (partition, ts) = held.swap_remove(i % held.len());
                        origins.remove(partition, ts);
                    }
                    Change::Move(i, partition, ts) if !held.is_empty() => {
                        let at = i % held.len();
                        origins.moved(held[at], (partition, ts));
                        held[at] = (partition, ts);
                    }
                    _ => {}
                }
                let mut expected: BTreeMap<u32, EventTime> = BTreeMap::new();
                for &(partition, ts) in &held {
                    let earliest = expected.entry(partition).or_insert(EventTime::MAX);
                    *earliest = (*earliest).min(second_of(ts));
                }
                prop_assert_eq!(origins.since(), expected.into_iter().collect::<Vec<_>>());
                prop_assert_eq!(origins.is_empty(), held.is_empty());
            }
        }
    }
}
