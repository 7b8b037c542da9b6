//! Holding records in a differential collection until an event-time clock passes them.
//!
//! The differential stages of [`crate::recs`] keep their input in arrangements, which hold whatever they were given until it is retracted. This operator
//! is where their input comes from: it turns a stream of updates, each with the clock value
//! from which it no longer matters (`until`), into a collection that holds every record
//! while it matters and retracts it once the clock passes, so the arrangements downstream
//! stay bounded on an endless stream.
//!
//! It emits presence, not multiplicity: a record enters the collection (`+1`) when its count
//! turns positive and leaves it (`-1`) when its count returns to zero or its time is up. A
//! record seen again later is held until the latest `until` it was given. Updates whose time
//! was up before their epoch began are dropped.
//!
//! Every epoch it also says, per partition, the earliest event time its records came from
//! (a [`Retention`]), rounded down to the second: a restart replays each partition from
//! there, so the held collection is rebuilt exactly. Counting origins per second rather than
//! per millisecond keeps that count small enough to stay in cache: on 4 December 2026 the
//! ordered funnel's holding (every event; the funnel no longer has one) and the
//! recommender's took 1.31 s and 1.43 s of
//! the workers' time on the side-by-side file with millisecond origins, 1.02–1.04 s and
//! 0.97–1.01 s with whole seconds (`run --profile-operators`). A replay may start up to a
//! second earlier than it must.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::Hash;
use std::rc::Rc;

use clickflow_sources::EventTime;
use differential_dataflow::{AsCollection, VecCollection};
use foldhash::fast::RandomState;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::operators::{by_epoch_streaming_with_side, EpochWatermarks};
use crate::runtime::replay::Retention;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::Epoch;

/// The precision of the retention reported: origins are counted per second.
const ORIGIN_GRAIN_MS: EventTime = 1_000;

/// One update of a held record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold<R> {
    /// The record.
    pub record: R,
    /// `+1` for each event that brings it, `±1` for a record that is itself a change.
    pub diff: isize,
    /// The clock value from which the record no longer matters.
    pub until: EventTime,
    /// The event it came from, `(partition, event time)`, when it came from one: the
    /// retention reported per partition.
    pub origin: Option<(u32, EventTime)>,
}

/// What the operator knows of one held record.
struct Held {
    count: isize,
    until: EventTime,
    origin: Option<(u32, EventTime)>,
}

/// Every record held on one worker, with what leaves when.
struct Holding<R> {
    /// Every held record. An index map, not a hash map, for the reason given at the session
    /// stage's (`SessionState::spans`): a hash map's doubling holds the old and the new
    /// table at once, and the recommender's items are the largest map of a run (about 800k
    /// a worker on `clickflow bench`'s file). It costs this stage 0.10 s more busy time on
    /// the side-by-side file (0.47–0.48 s before; 6 December 2026).
    held: IndexMap<R, Held, RandomState>,
    /// `(until, record)` for every record, with the `until` it had when it entered: an
    /// entry that comes up for a record held longer since is pushed again with its
    /// current `until`, one that comes up for a record that left is dropped. One entry per
    /// entry of `held`, not one per update: the recommender's items are seen again and
    /// again, and an entry per sighting made this heap the largest allocation of a run
    /// (151 MB of 889 MB of heap on the side-by-side file, 4 December 2026, heaptrack).
    leaving: BinaryHeap<Reverse<(EventTime, R)>>,
    /// How many held records came from each `(partition, event time)`.
    origins: BTreeMap<(u32, EventTime), usize>,
}

impl<R: Ord + Hash + Clone> Holding<R> {
    fn new() -> Holding<R> {
        Holding {
            held: IndexMap::default(),
            leaving: BinaryHeap::new(),
            origins: BTreeMap::new(),
        }
    }

    /// Applies one update; calls `out` with the record's presence change, if any.
    fn update(&mut self, hold: Hold<R>, out: &mut impl FnMut(R, isize)) {
        let Hold {
            record,
            diff,
            until,
            origin,
        } = hold;
        let origin = origin
            .map(|(partition, ts)| (partition, ts.saturating_sub(ts.rem_euclid(ORIGIN_GRAIN_MS))));
        let entry = self.held.entry(record.clone()).or_insert(Held {
            count: 0,
            until,
            origin: None,
        });
        let was_present = entry.count > 0;
        entry.count += diff;
        entry.until = entry.until.max(until);
        if entry.count > 0 && !was_present {
            self.leaving.push(Reverse((entry.until, record.clone())));
        }
        if origin.is_some_and(|(_, ts)| entry.origin.is_none_or(|(_, held)| ts > held)) {
            if let Some(old) = entry.origin.replace(origin.expect("checked")) {
                forget(&mut self.origins, old);
            }
            *self.origins.entry(origin.expect("checked")).or_default() += 1;
        }
        let present = entry.count > 0;
        if !present {
            self.remove(&record);
        }
        if present != was_present {
            out(record, if present { 1 } else { -1 });
        }
    }

    /// Retracts every record whose time is up at `clock`.
    fn expire(&mut self, clock: EventTime, out: &mut impl FnMut(R, isize)) {
        while let Some(Reverse((until, _))) = self.leaving.peek() {
            if *until > clock {
                break;
            }
            let Reverse((_, record)) = self.leaving.pop().expect("peeked");
            match self.held.get(&record) {
                Some(held) if held.until > clock => {
                    self.leaving.push(Reverse((held.until, record)));
                }
                Some(_) => {
                    self.remove(&record);
                    out(record, -1);
                }
                None => {}
            }
        }
    }

    fn remove(&mut self, record: &R) {
        if let Some(Held {
            origin: Some(origin),
            ..
        }) = self.held.swap_remove(record)
        {
            forget(&mut self.origins, origin);
        }
    }

    /// `(partition, earliest event time)` over the held records, by partition: one seek
    /// per partition, not a walk over every origin (a day's horizon holds millions, and
    /// the walk ran every epoch: 2.2% of a profile of `clickflow run`).
    fn since(&self) -> Vec<(u32, EventTime)> {
        let mut since: Vec<(u32, EventTime)> = Vec::new();
        let mut next = self.origins.keys().next().copied();
        while let Some((partition, ts)) = next {
            since.push((partition, ts));
            next = partition.checked_add(1).and_then(|following| {
                let rest = (following, EventTime::MIN)..;
                self.origins.range(rest).next().map(|(key, _)| *key)
            });
        }
        since
    }
}

fn forget(origins: &mut BTreeMap<(u32, EventTime), usize>, origin: (u32, EventTime)) {
    if let Some(count) = origins.get_mut(&origin) {
        *count -= 1;
        if *count == 0 {
            origins.remove(&origin);
        }
    }
}

/// Holds the records of `updates` (brought to workers by `pact`) until `clock(watermarks)`
/// passes their `until`, as a collection, and says per epoch how far back the held records
/// reach into each partition (named `name`, from every worker that holds or held some).
///
/// Each worker emits the presence of what it holds: with a `pact` that brings every update
/// of a record to one worker (an exchange by the record's key) the collection holds each
/// record once; with one that keeps updates where they are, a record is there once per
/// worker that holds it, and the caller takes its `distinct`.
///
/// Updates are applied batch by batch as their epoch's data arrives, not once the epoch is
/// complete (a backlog epoch brings a million a worker): one whose time is up by the end of
/// its epoch, but not before it, enters and leaves within the epoch, and the two changes
/// cancel.
pub fn hold_until<'scope, R, P>(
    updates: StreamVec<'scope, Epoch, Hold<R>>,
    pact: P,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    name: &str,
    clock: fn(EpochWatermarks, &ProgressSeed) -> EventTime,
) -> (
    VecCollection<'scope, Epoch, R>,
    StreamVec<'scope, Epoch, Retention>,
)
where
    R: ExchangeData + Ord + Hash + Clone,
    P: ParallelizationContract<Epoch, Vec<Hold<R>>>,
{
    let worker = updates.scope().index();
    let stage = name.to_string();
    let holding = Rc::new(RefCell::new(Holding::new()));
    let absorbing = holding.clone();
    let mut reported: Option<Vec<(u32, EventTime)>> = None;
    let (changes, retention) = by_epoch_streaming_with_side(
        updates,
        pact,
        reports,
        seed,
        name,
        move |epoch: Epoch, updates: Vec<Hold<R>>, opening, out| {
            // No clock of this epoch is earlier than the one it opened with.
            let opened = clock(
                EpochWatermarks {
                    before: opening.before,
                    after: opening.before,
                    replaying: opening.replaying,
                },
                &seed,
            );
            let mut holding = absorbing.borrow_mut();
            let mut emit = |record: R, diff: isize| out((record, epoch, diff));
            for hold in updates {
                if hold.until > opened {
                    holding.update(hold, &mut emit);
                }
            }
        },
        move |epoch: Epoch, watermarks, out, report| {
            let mut holding = holding.borrow_mut();
            let now = clock(watermarks, &seed);
            holding.expire(now, &mut |record: R, diff: isize| {
                out((record, epoch, diff))
            });
            let since = holding.since();
            if reported.as_ref() != Some(&since) {
                report(Retention {
                    stage: stage.clone(),
                    worker,
                    since: since.clone(),
                });
                reported = Some(since);
            }
        },
    );
    (changes.as_collection(), retention)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(
        record: &'static str,
        diff: isize,
        until: EventTime,
        ts: EventTime,
    ) -> Hold<&'static str> {
        Hold {
            record,
            diff,
            until,
            origin: Some((0, ts)),
        }
    }

    fn changes(
        holding: &mut Holding<&'static str>,
        updates: Vec<Hold<&'static str>>,
        clock: EventTime,
    ) -> Vec<(&'static str, isize)> {
        let mut out = Vec::new();
        for update in updates {
            holding.update(update, &mut |r, d| out.push((r, d)));
        }
        holding.expire(clock, &mut |r, d| out.push((r, d)));
        out
    }

    #[test]
    fn a_record_is_held_until_its_latest_time_and_reported_from_its_latest_event() {
        let mut holding = Holding::new();
        assert_eq!(
            changes(&mut holding, vec![hold("a", 1, 100, 10_000)], 0),
            [("a", 1)]
        );
        // Seen again: no new insertion, held longer, retained from the later event.
        assert_eq!(
            changes(&mut holding, vec![hold("a", 1, 200, 20_500)], 150),
            []
        );
        // Retention is counted in whole seconds, rounded down.
        assert_eq!(holding.since(), [(0, 20_000)]);
        assert_eq!(changes(&mut holding, vec![], 200), [("a", -1)]);
        assert!(holding.since().is_empty() && holding.held.is_empty());
    }

    #[test]
    fn a_retracted_record_leaves_at_once_and_counts_add_up() {
        let mut holding = Holding::new();
        let updates = vec![
            hold("a", 1, 100, 1_001),
            hold("a", 1, 100, 1_001),
            hold("a", -1, 100, 1_001),
        ];
        assert_eq!(changes(&mut holding, updates, 0), [("a", 1)]);
        assert_eq!(
            changes(&mut holding, vec![hold("a", -1, 100, 1_001)], 0),
            [("a", -1)]
        );
        // Back again after leaving: held anew.
        assert_eq!(
            changes(&mut holding, vec![hold("a", 1, 100, 1_001)], 0),
            [("a", 1)]
        );
        assert_eq!(holding.since(), [(0, 1_000)]);
    }

    #[test]
    fn retention_is_the_earliest_held_event_of_each_partition() {
        let mut holding = Holding::new();
        let from = |partition: u32, record, ts| Hold {
            origin: Some((partition, ts)),
            ..hold(record, 1, 1_000, ts)
        };
        let updates = vec![
            from(3, "a", 40_999),
            from(0, "b", 7_000),
            from(3, "c", 30_400),
            from(u32::MAX, "d", 5_123),
            from(0, "e", 9_000),
        ];
        changes(&mut holding, updates, 0);
        assert_eq!(
            holding.since(),
            [(0, 7_000), (3, 30_000), (u32::MAX, 5_000)]
        );
        changes(&mut holding, vec![hold("c", -1, 1_000, 30_400)], 0);
        assert_eq!(
            holding.since(),
            [(0, 7_000), (3, 40_000), (u32::MAX, 5_000)]
        );
        // The earliest representable time rounds without overflowing.
        changes(&mut holding, vec![from(1, "f", EventTime::MIN)], 0);
        assert_eq!(holding.since()[1], (1, EventTime::MIN));
    }
}
