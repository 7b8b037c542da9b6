//! Holding records in a differential collection until an event-time clock passes them.
//!
//! The differential stages of [`crate::recs`] keep their input in arrangements, which hold
//! whatever they were given until it is retracted. This operator is where their input comes
//! from: it turns a stream of updates, each with the event time it came from, into a
//! collection that holds every record until the clock reaches its latest event time plus a
//! lifetime, and then retracts it, so the arrangements downstream stay bounded on an endless
//! stream.
//!
//! It emits presence, not multiplicity: a record enters the collection (`+1`) when its count
//! turns positive and leaves it (`-1`) when its count returns to zero or its time is up. A
//! record seen again later is held for a lifetime past its latest event. Updates whose time
//! was up before their epoch began are dropped.
//!
//! A holding can also wait for a record's window to close before the record enters
//! ([`Entry::OnceClosed`]): then the collection changes only in the epochs whose watermark
//! closes a window, and what it holds after an epoch is a function of the input read and
//! the watermark alone, as every table's rows are (see [`crate::recs`] for why).
//!
//! Every epoch it can also say, per partition, the earliest event time its records came
//! from (a [`Retention`], counted by [`Origins`]): a restart replays each partition from
//! there, so the held collection is rebuilt exactly.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::Hash;
use std::rc::Rc;

use clickflow_sources::EventTime;
use differential_dataflow::{AsCollection, VecCollection};
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::operators::{by_epoch_streaming_with_side, prefetch, probe_ahead, EpochWatermarks};
use crate::runtime::replay::{Origins, Retention};
use crate::runtime::watermark::{PartitionReport, ProgressSeed, NO_WATERMARK};
use crate::window::WindowSize;
use crate::Epoch;

/// One update of a held record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold<R> {
    /// The record.
    pub record: R,
    /// `+1` for each event that brings it, `±1` for a record that is itself a change.
    pub diff: isize,
    /// The event time of the event it came from: the record matters until the holding's
    /// lifetime has passed since the latest one ([`Keeping::lifetime_ms`]).
    pub ts: EventTime,
    /// The partition that event was read from: the retention reported per partition.
    pub partition: u32,
}

/// How long a holding keeps its records, by which clock, and whether a restart replays them.
#[derive(Clone, Copy)]
pub struct Keeping {
    /// A record leaves once the clock reaches its latest event time plus this.
    pub lifetime_ms: EventTime,
    /// The clock, read from an epoch's watermarks once its reports are in.
    pub clock: fn(EpochWatermarks, &ProgressSeed) -> EventTime,
    /// Whether the holding reports how far back its records reach into each partition (a
    /// restart replays from there). One that another holding's replay rebuilds need not
    /// count its origins at all.
    pub reports_retention: bool,
    /// When a held record enters the collection.
    pub entry: Entry,
}

/// When a held record enters the collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// With its first event.
    AtOnce,
    /// Once the pipeline watermark (or the watermark committed before a restart) has closed
    /// the window of one of its events: in the epoch that closes it, or, for an event whose
    /// window was closed already (replayed input), at the end of the epoch it came in.
    OnceClosed {
        /// The windows whose closing lets records in.
        window: WindowSize,
        /// Whether the holding also gives the records as they are seen, each from its
        /// first event until it leaves, for readers that show what is happening now.
        shows_seen: bool,
    },
}

/// What a holding gives beside its collection: the records as they are seen (with
/// [`Entry::OnceClosed`]'s `shows_seen`), or a report of how far back it reaches.
type Side<R> = Result<(R, Epoch, isize), Retention>;

/// [`Held::enters_at`] of a record in the collection.
const IN_COLLECTION: EventTime = EventTime::MIN;

/// What the operator knows of one held record: 24 bytes.
struct Held {
    /// The latest event time the record came from: it leaves at this plus the lifetime.
    latest: EventTime,
    /// The end of the earliest window of its events, at which it enters the collection
    /// ([`Entry::OnceClosed`]); [`IN_COLLECTION`] once it has.
    enters_at: EventTime,
    /// The partition of the first event with that time.
    partition: u32,
    /// Its updates summed: always positive (a record whose sum is not is no longer held).
    count: i32,
}

impl Held {
    /// `(partition, latest event time)`: where a replay must start to rebuild it.
    fn origin(&self) -> (u32, EventTime) {
        (self.partition, self.latest)
    }
}

/// Every record held on one worker, with what leaves when.
struct Holding<R> {
    keeping: Keeping,
    /// Every held record, in a hash map whose buckets hold the record and its [`Held`]
    /// together (32 bytes for the recommender's items), so that a lookup waits on one
    /// cache miss.
    ///
    /// It was an index map from 6 December 2026 (a table of indexes into one vector of
    /// entries, which grows in place where a hash map's doubling holds the old and the new
    /// table at once): that cost this stage 0.10 s of busy time then, for memory the
    /// session stage's change beside it (`SessionState::spans`, 248-byte entries) bought
    /// most of. Back to a hash map (twenty-eighth sitting, 7 December 2026, side-by-side
    /// file, 2 workers, alternating runs): the recommender's items took 0.17 s of busy time
    /// against 0.20–0.22 s (3 pairs), and `versus_duckdb --rounds 5` gave medians of 0.84x
    /// and 0.85x DuckDB's speed against 0.80x and 0.81x, at 164–166 MB of peak RSS against
    /// 167–169 MB; `clickflow bench` peaked at 353–354 MB against 343–349 MB (3 pairs), 46
    /// MB under its bar, at the same speed within the machine's spread.
    ///
    /// A record's time is its latest event's and its lifetime the holding's, so an entry is
    /// 16 bytes beside its key; it used to keep the time it leaves and the event it came
    /// from apart (32 bytes). `run --input` on `clickflow bench`'s file: peak RSS 419–420 MB
    /// against 442 MB, this stage's busy time unchanged (0.96 s against 0.98–0.99 s);
    /// `clickflow bench`: 512 MB against 534–535 MB (6 December 2026).
    ///
    /// Holding the records by group instead (the recommender's items by session, one entry
    /// per session with its products in it) took 20 MB less again (399–402 MB) but made
    /// this stage 0.2–0.45 s slower (1.17–1.35 s): a new record is appended to the map's
    /// entries, beside the last one written, where a new member of a group is written into
    /// its group's entry wherever that lies, and most records are new. Tried again once the
    /// file source read its splits in stints (so a worker's open sessions stay few), with
    /// one entry in `leaving` per group rather than per record (twenty-first sitting, 6
    /// December 2026, alternating runs): this stage 0.67–0.70 s against 0.60–0.68 s, the
    /// side-by-side run's peak RSS 160–166 MB against 188–189 MB, but `clickflow bench`'s
    /// 402–413 MB against 391 MB (each session's vector of products grows by doubling).
    held: HashMap<R, Held>,
    /// `(until, record)` for every record, with the time it would leave at when it entered: an
    /// entry that comes up for a record held longer since is pushed again with its
    /// current time, one that comes up for a record that left is dropped. One entry per
    /// entry of `held`, not one per update: the recommender's items are seen again and
    /// again, and an entry per sighting made this heap the largest allocation of a run
    /// (151 MB of 889 MB of heap on the side-by-side file, 4 December 2026, heaptrack).
    leaving: BinaryHeap<Reverse<(EventTime, R)>>,
    /// How many held records came from each partition and second, when counted.
    origins: Origins,
    /// The records waiting to enter the collection, by the window end they enter at. A
    /// record is here at least once, at or after its [`Held::enters_at`]; an entry that
    /// comes up for one that entered or left since is dropped.
    entering: BTreeMap<EventTime, Vec<R>>,
    /// The records' seen presence changed since the epoch's last report (when shown).
    seen: Vec<(R, isize)>,
    /// The clock as of the last completed epoch: an update whose time was up by then is
    /// dropped.
    clock: EventTime,
}

impl<R: Ord + Hash + Clone> Holding<R> {
    fn new(keeping: Keeping) -> Holding<R> {
        Holding {
            keeping,
            held: HashMap::default(),
            leaving: BinaryHeap::new(),
            origins: Origins::default(),
            entering: BTreeMap::new(),
            seen: Vec::new(),
            clock: NO_WATERMARK,
        }
    }

    /// Where a record first seen at `ts` enters the collection.
    fn enters_at(&self, ts: EventTime) -> EventTime {
        match self.keeping.entry {
            Entry::AtOnce => IN_COLLECTION,
            Entry::OnceClosed { window, .. } => window.window_of(ts).end,
        }
    }

    /// Whether the records are also given as they are seen.
    fn shows_seen(&self) -> bool {
        matches!(
            self.keeping.entry,
            Entry::OnceClosed {
                shows_seen: true,
                ..
            }
        )
    }

    /// When a record held since `latest` leaves.
    fn until(&self, latest: EventTime) -> EventTime {
        latest.saturating_add(self.keeping.lifetime_ms)
    }

    /// Applies one update (its record looked up once already, when its chunk was probed:
    /// [`probe_ahead`]); calls `out` with the record's change in the collection, if any.
    fn update(&mut self, hold: Hold<R>, out: &mut impl FnMut(R, isize)) {
        let Hold {
            record,
            diff,
            ts,
            partition,
        } = hold;
        let counted = self.keeping.reports_retention;
        let until = self.until(ts);
        let enters_at = self.enters_at(ts);
        // A lookup (in cache after the probe), then an insert for a new record: the entry
        // API, one probe, measured slower (0.91–0.92 s of this stage's busy time on the
        // side-by-side file against 0.85 s, 6 December 2026, before the probing ahead).
        match self.held.get_mut(&record) {
            Some(held) => {
                if ts > held.latest {
                    let before = held.origin();
                    held.latest = ts;
                    held.partition = partition;
                    if counted {
                        self.origins.moved(before, held.origin());
                    }
                }
                // An event out of order, of a window earlier than the record waits for.
                if enters_at < held.enters_at {
                    held.enters_at = enters_at;
                    self.entering
                        .entry(enters_at)
                        .or_default()
                        .push(record.clone());
                }
                let count = held.count as isize + diff;
                if count > 0 {
                    held.count = i32::try_from(count).unwrap_or(i32::MAX);
                } else {
                    self.leave(record, out);
                }
            }
            None if diff > 0 => {
                let held = Held {
                    latest: ts,
                    enters_at,
                    partition,
                    count: i32::try_from(diff).unwrap_or(i32::MAX),
                };
                if counted {
                    self.origins.add(partition, ts);
                }
                self.held.insert(record.clone(), held);
                self.leaving.push(Reverse((until, record.clone())));
                if self.shows_seen() {
                    self.seen.push((record.clone(), 1));
                }
                if enters_at == IN_COLLECTION {
                    out(record, 1);
                } else {
                    self.entering.entry(enters_at).or_default().push(record);
                }
            }
            None => {}
        }
    }

    /// Lets in every record whose window is closed at `closed`.
    fn enter(&mut self, closed: EventTime, out: &mut impl FnMut(R, isize)) {
        while let Some(waiting) = self.entering.first_entry() {
            if *waiting.key() > closed {
                break;
            }
            for record in waiting.remove() {
                if let Some(held) = self.held.get_mut(&record) {
                    if held.enters_at != IN_COLLECTION && held.enters_at <= closed {
                        held.enters_at = IN_COLLECTION;
                        out(record, 1);
                    }
                }
            }
        }
    }

    /// Retracts every record whose time is up at `clock`.
    fn expire(&mut self, clock: EventTime, out: &mut impl FnMut(R, isize)) {
        while let Some(Reverse((until, _))) = self.leaving.peek() {
            if *until > clock {
                break;
            }
            let Reverse((_, record)) = self.leaving.pop().expect("peeked");
            match self.held.get(&record).map(|held| self.until(held.latest)) {
                Some(until) if until > clock => {
                    self.leaving.push(Reverse((until, record)));
                }
                Some(_) => self.leave(record, out),
                None => {}
            }
        }
    }

    /// Stops holding `record`: it leaves the collection, if it had entered, and the seen
    /// records.
    fn leave(&mut self, record: R, out: &mut impl FnMut(R, isize)) {
        let Some(held) = self.held.remove(&record) else {
            return;
        };
        if self.keeping.reports_retention {
            self.origins.remove(held.partition, held.latest);
        }
        if self.shows_seen() {
            self.seen.push((record.clone(), -1));
        }
        if held.enters_at == IN_COLLECTION {
            out(record, -1);
        }
    }

    /// `(partition, earliest second)` over the held records, by partition.
    fn since(&self) -> Vec<(u32, EventTime)> {
        self.origins.since()
    }
}

/// What [`hold_until`] gives.
pub struct HeldRecords<'scope, R: 'static> {
    /// The records in the collection ([`Keeping::entry`]).
    pub collection: VecCollection<'scope, Epoch, R>,
    /// Every record held, from its first event ([`Entry::OnceClosed`]'s `shows_seen`;
    /// empty otherwise).
    pub seen: VecCollection<'scope, Epoch, R>,
    /// How far back the held records reach into each partition, if `keeping` says so.
    pub retention: StreamVec<'scope, Epoch, Retention>,
}

/// Holds the records of `updates` (brought to workers by `pact`) until the clock passes
/// their latest event time plus the lifetime (`keeping`), as a collection,
/// and, if `keeping` says so, reports per epoch how far back the held records reach into
/// each partition (named `name`, from every worker that holds or held some).
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
    keeping: Keeping,
) -> HeldRecords<'scope, R>
where
    R: ExchangeData + Ord + Hash + Clone,
    P: ParallelizationContract<Epoch, Vec<Hold<R>>>,
{
    let worker = updates.scope().index();
    let stage = name.to_string();
    let holding = Rc::new(RefCell::new(Holding::new(keeping)));
    let absorbing = holding.clone();
    let mut reported: Option<Vec<(u32, EventTime)>> = None;
    let clock = keeping.clock;
    let (changes, side) = by_epoch_streaming_with_side(
        updates,
        pact,
        reports,
        seed,
        name,
        move |epoch: Epoch, updates: Vec<Hold<R>>, _opening, out| {
            let mut emit = |record: R, diff: isize| out((record, epoch, diff));
            probe_ahead(
                &mut *absorbing.borrow_mut(),
                updates,
                // The lookup brings the record's bucket into the cache; prefetching what it
                // found (already there) keeps the compiler from dropping a lookup whose
                // answer nothing else reads.
                |holding, hold| {
                    if let Some(held) = holding.held.get(&hold.record) {
                        prefetch(held);
                    }
                },
                |holding, hold, ()| {
                    // No clock of this epoch is earlier than the one it opened with.
                    if hold.ts.saturating_add(keeping.lifetime_ms) > holding.clock {
                        holding.update(hold, &mut emit);
                    }
                },
            );
        },
        move |epoch: Epoch, watermarks, out, side: &mut dyn FnMut(Side<R>)| {
            let mut holding = holding.borrow_mut();
            let mut emit = |record: R, diff: isize| out((record, epoch, diff));
            holding.enter(watermarks.after.max(seed.committed_watermark), &mut emit);
            let now = clock(watermarks, &seed);
            holding.expire(now, &mut emit);
            holding.clock = now;
            for (record, diff) in holding.seen.drain(..) {
                side(Ok((record, epoch, diff)));
            }
            if !keeping.reports_retention {
                return;
            }
            let since = holding.since();
            if reported.as_ref() != Some(&since) {
                side(Err(Retention {
                    stage: stage.clone(),
                    worker,
                    since: since.clone(),
                }));
                reported = Some(since);
            }
        },
    );
    let (seen, retention) = side.ok_err(|side| side);
    HeldRecords {
        collection: changes.as_collection(),
        seen: seen.as_collection(),
        retention,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    type Record = (&'static str, &'static str);

    const LIFETIME: EventTime = 1_000;

    fn keeping() -> Keeping {
        Keeping {
            lifetime_ms: LIFETIME,
            clock: |watermarks, _| watermarks.after,
            reports_retention: true,
            entry: Entry::AtOnce,
        }
    }

    fn hold(record: Record, diff: isize, ts: EventTime) -> Hold<Record> {
        Hold {
            record,
            diff,
            ts,
            partition: 0,
        }
    }

    /// Applies `updates`, then expires what is up at `clock`; returns the collection's
    /// changes (no window closes: what waits for one stays out).
    fn changes(
        holding: &mut Holding<Record>,
        updates: Vec<Hold<Record>>,
        clock: EventTime,
    ) -> Vec<(Record, isize)> {
        epoch(holding, updates, NO_WATERMARK, clock)
    }

    const WINDOW: EventTime = 60_000;

    /// A holding whose records enter once a window of theirs closes, showing what it sees.
    fn closing(lifetime_ms: EventTime) -> Holding<Record> {
        Holding::new(Keeping {
            lifetime_ms,
            entry: Entry::OnceClosed {
                window: WindowSize::from_millis(WINDOW),
                shows_seen: true,
            },
            ..keeping()
        })
    }

    /// Applies `updates`, then lets in what is closed at `closed` and expires what is up
    /// at `clock`, as an epoch's completion does; returns the collection's changes.
    fn epoch(
        holding: &mut Holding<Record>,
        updates: Vec<Hold<Record>>,
        closed: EventTime,
        clock: EventTime,
    ) -> Vec<(Record, isize)> {
        let mut out = Vec::new();
        for update in updates {
            holding.update(update, &mut |r, d| out.push((r, d)));
        }
        holding.enter(closed, &mut |r, d| out.push((r, d)));
        holding.expire(clock, &mut |r, d| out.push((r, d)));
        out
    }

    #[test]
    fn a_record_enters_once_the_window_of_its_first_event_closes_and_is_seen_at_once() {
        let mut holding = closing(3_600_000);
        let a = ("s", "a");
        assert_eq!(epoch(&mut holding, vec![hold(a, 1, 10_000)], 0, 0), []);
        assert_eq!(std::mem::take(&mut holding.seen), [(a, 1)]);
        // Seen again in later windows: nothing new, neither seen nor in the collection.
        let later = vec![hold(a, 1, 59_999), hold(a, 1, 75_000)];
        assert_eq!(epoch(&mut holding, later, WINDOW - 1, 0), []);
        assert!(holding.seen.is_empty());
        // The first window closes: in, once, whatever windows its later events are in.
        assert_eq!(epoch(&mut holding, vec![], WINDOW, 0), [(a, 1)]);
        assert_eq!(epoch(&mut holding, vec![], 2 * WINDOW, 0), []);
        assert!(holding.entering.is_empty());
        // It leaves a lifetime after its latest event, from both.
        assert_eq!(
            epoch(&mut holding, vec![], 2 * WINDOW, 3_675_000),
            [(a, -1)]
        );
        assert_eq!(holding.seen, [(a, -1)]);
    }

    #[test]
    fn an_event_out_of_order_lets_its_record_in_with_its_earlier_window() {
        let mut holding = closing(3_600_000);
        let a = ("s", "a");
        assert_eq!(epoch(&mut holding, vec![hold(a, 1, 130_000)], 0, 0), []);
        assert_eq!(epoch(&mut holding, vec![hold(a, 1, 50_000)], 0, 0), []);
        assert_eq!(epoch(&mut holding, vec![], WINDOW, 0), [(a, 1)]);
        // Its first event's window, when it closes, finds it in already.
        assert_eq!(epoch(&mut holding, vec![], 3 * WINDOW, 0), []);
        assert!(holding.entering.is_empty());
    }

    #[test]
    fn a_record_that_leaves_before_its_window_closes_never_enters() {
        let mut holding = closing(1_000);
        let a = ("s", "a");
        assert_eq!(epoch(&mut holding, vec![hold(a, 1, 10_000)], 0, 11_000), []);
        assert_eq!(holding.seen, [(a, 1), (a, -1)]);
        assert_eq!(epoch(&mut holding, vec![], WINDOW, 11_000), []);
        // Back again later, in another window: it waits for that one.
        assert_eq!(
            epoch(&mut holding, vec![hold(a, 1, 70_000)], WINDOW, 11_000),
            []
        );
        assert_eq!(epoch(&mut holding, vec![], 2 * WINDOW, 11_000), [(a, 1)]);
    }

    #[test]
    fn a_record_is_held_for_its_lifetime_past_its_latest_event_and_reported_from_it() {
        let mut holding = Holding::new(keeping());
        let a = ("s", "a");
        assert_eq!(changes(&mut holding, vec![hold(a, 1, 10_000)], 0), [(a, 1)]);
        // Seen again: no new insertion, held longer, retained from the later event.
        assert_eq!(changes(&mut holding, vec![hold(a, 1, 20_500)], 11_000), []);
        // Retention is counted in whole seconds, rounded down.
        assert_eq!(holding.since(), [(0, 20_000)]);
        assert_eq!(changes(&mut holding, vec![], 21_499), []);
        assert_eq!(changes(&mut holding, vec![], 21_500), [(a, -1)]);
        assert!(holding.since().is_empty() && holding.held.is_empty());
    }

    #[test]
    fn a_retracted_record_leaves_at_once_and_counts_add_up() {
        let mut holding = Holding::new(keeping());
        let a = ("s", "a");
        let updates = vec![hold(a, 1, 1_001), hold(a, 1, 1_001), hold(a, -1, 1_001)];
        assert_eq!(changes(&mut holding, updates, 0), [(a, 1)]);
        assert_eq!(
            changes(&mut holding, vec![hold(a, -1, 1_001)], 0),
            [(a, -1)]
        );
        // A retraction of what is not held leaves nothing behind.
        assert_eq!(changes(&mut holding, vec![hold(a, -1, 1_001)], 0), []);
        assert!(holding.held.is_empty() && holding.since().is_empty());
        // Back again after leaving: held anew.
        assert_eq!(changes(&mut holding, vec![hold(a, 1, 1_001)], 0), [(a, 1)]);
        assert_eq!(holding.since(), [(0, 1_000)]);
    }

    #[test]
    fn records_leave_each_at_its_own_time_whatever_order_they_came_in() {
        let mut holding = Holding::new(keeping());
        let (a, b, c) = (("s", "a"), ("s", "b"), ("s", "c"));
        let updates = vec![hold(a, 1, 1_000), hold(b, 1, 3_000), hold(c, 1, 2_000)];
        assert_eq!(changes(&mut holding, updates, 0).len(), 3);
        assert_eq!(changes(&mut holding, vec![], 2_000), [(a, -1)]);
        assert_eq!(changes(&mut holding, vec![], 3_000), [(c, -1)]);
        // A record that comes later with an earlier time leaves first.
        let d = ("s", "d");
        assert_eq!(
            changes(&mut holding, vec![hold(d, 1, 2_500)], 3_000),
            [(d, 1)]
        );
        assert_eq!(changes(&mut holding, vec![], 3_500), [(d, -1)]);
        assert_eq!(changes(&mut holding, vec![], 3_999), []);
        assert_eq!(changes(&mut holding, vec![], 4_000), [(b, -1)]);
        assert!(holding.held.is_empty() && holding.since().is_empty());
    }

    #[test]
    fn retention_is_the_earliest_held_event_of_each_partition() {
        let mut holding = Holding::new(keeping());
        let from = |partition: u32, record, ts| Hold {
            partition,
            ..hold(record, 1, ts)
        };
        let updates = vec![
            from(3, ("g", "a"), 40_999),
            from(0, ("g", "b"), 7_000),
            from(3, ("h", "c"), 30_400),
            from(u32::MAX, ("h", "d"), 5_123),
            from(0, ("i", "e"), 9_000),
        ];
        changes(&mut holding, updates, 0);
        assert_eq!(
            holding.since(),
            [(0, 7_000), (3, 30_000), (u32::MAX, 5_000)]
        );
        changes(&mut holding, vec![hold(("h", "c"), -1, 30_400)], 0);
        assert_eq!(
            holding.since(),
            [(0, 7_000), (3, 40_000), (u32::MAX, 5_000)]
        );
        // The earliest representable time rounds without overflowing.
        let earliest = vec![from(1, ("j", "f"), EventTime::MIN)];
        changes(&mut holding, earliest, EventTime::MIN);
        assert_eq!(holding.since()[1], (1, EventTime::MIN));
    }

    #[test]
    fn a_holding_without_retention_counts_no_origins() {
        let mut holding = Holding::new(Keeping {
            reports_retention: false,
            ..keeping()
        });
        let a = ("s", "a");
        assert_eq!(changes(&mut holding, vec![hold(a, 1, 5_000)], 0), [(a, 1)]);
        assert!(holding.since().is_empty() && holding.origins.is_empty());
        assert_eq!(changes(&mut holding, vec![], 6_000), [(a, -1)]);
    }

    /// What a record's presence should be, kept the plain way: each record's count, latest
    /// event and earliest window end, checked one by one.
    #[derive(Default)]
    struct Plain {
        held: BTreeMap<(u8, u8), PlainRecord>,
    }

    #[derive(Clone, Copy)]
    struct PlainRecord {
        count: isize,
        latest: EventTime,
        from: u32,
        first_window_end: EventTime,
    }

    impl Plain {
        fn update(&mut self, record: (u8, u8), diff: isize, ts: EventTime, partition: u32) {
            let window_end = WindowSize::from_millis(PLAIN_WINDOW).window_of(ts).end;
            let mut held = self.held.get(&record).copied().unwrap_or(PlainRecord {
                count: 0,
                latest: ts,
                from: partition,
                first_window_end: window_end,
            });
            if ts > held.latest {
                (held.latest, held.from) = (ts, partition);
            }
            held.first_window_end = held.first_window_end.min(window_end);
            held.count += diff;
            if held.count > 0 {
                self.held.insert(record, held);
            } else {
                self.held.remove(&record);
            }
        }

        fn expire(&mut self, clock: EventTime) {
            self.held.retain(|_, held| held.latest + LIFETIME > clock);
        }

        /// The records in the collection: every one held, or with `closed`, those whose
        /// earliest window had closed by then.
        fn collection(&self, closed: Option<EventTime>) -> Vec<(u8, u8)> {
            let entered = |held: &PlainRecord| closed.is_none_or(|c| held.first_window_end <= c);
            self.held
                .iter()
                .filter(|(_, held)| entered(held))
                .map(|(record, _)| *record)
                .collect()
        }

        fn since(&self) -> Vec<(u32, EventTime)> {
            let mut since = BTreeMap::new();
            for held in self.held.values() {
                let second = held.latest - held.latest.rem_euclid(1_000);
                let earliest = since.entry(held.from).or_insert(second);
                *earliest = second.min(*earliest);
            }
            since.into_iter().collect()
        }
    }

    /// The windows of the property below: shorter than the updates' spread of times, so
    /// records wait for windows, enter, and some leave before theirs closes.
    const PLAIN_WINDOW: EventTime = 700;

    /// The records a stream of presence changes leaves present, asserting each is `+1` from
    /// absence or `-1` from presence.
    fn apply(present: &mut BTreeMap<(u8, u8), isize>, changes: Vec<((u8, u8), isize)>) {
        for (record, diff) in changes {
            let count = present.entry(record).or_default();
            *count += diff;
            assert!(
                *count == 0 || *count == 1,
                "{record:?} present {count} times"
            );
        }
        present.retain(|_, count| *count > 0);
    }

    proptest! {
        /// Any sequence of updates (out of order, repeated, retracted), closing windows and
        /// expiries leaves the same collection, the same records seen, the same held records
        /// and the same retention as the plain per-record model: with records entering at
        /// once, and entering once a window of theirs closes (the entry clock some way
        /// ahead of the expiry clock, as the watermark is of the recommender's horizon).
        #[test]
        fn the_holding_agrees_with_the_plain_model(
            steps in prop::collection::vec(
                (prop::collection::vec((0u8..4, 0u8..5, prop::bool::weighted(0.85), 0i64..6_000, 0u32..3), 0..12), 0i64..1_500, 0i64..2_000),
                1..25,
            ),
            waits_for_windows in any::<bool>(),
        ) {
            let entry = if waits_for_windows {
                Entry::OnceClosed { window: WindowSize::from_millis(PLAIN_WINDOW), shows_seen: true }
            } else {
                Entry::AtOnce
            };
            let mut holding: Holding<(u8, u8)> = Holding::new(Keeping { entry, ..keeping() });
            let mut plain = Plain::default();
            let (mut collection, mut seen) = (BTreeMap::new(), BTreeMap::new());
            let (mut clock, mut closed) = (0, 0);
            for (updates, advance, ahead) in steps {
                let mut changes = Vec::new();
                for (session, product, add, ts, partition) in updates {
                    let ts = clock + ts;
                    let diff = if add { 1 } else { -1 };
                    holding.update(
                        Hold { record: (session, product), diff, ts, partition },
                        &mut |record, diff| changes.push((record, diff)),
                    );
                    plain.update((session, product), diff, ts, partition);
                }
                clock += advance;
                // The watermark never goes back.
                closed = closed.max(clock + ahead);
                holding.enter(closed, &mut |record, diff| changes.push((record, diff)));
                let entered = plain.collection(waits_for_windows.then_some(closed));
                holding.expire(clock, &mut |record, diff| changes.push((record, diff)));
                plain.expire(clock);
                apply(&mut collection, changes);
                apply(&mut seen, std::mem::take(&mut holding.seen));
                let still_held = plain.collection(None);
                let want: Vec<_> =
                    entered.into_iter().filter(|r| still_held.contains(r)).collect();
                prop_assert_eq!(collection.keys().copied().collect::<Vec<_>>(), want);
                if waits_for_windows {
                    prop_assert_eq!(seen.keys().copied().collect::<Vec<_>>(), still_held);
                } else {
                    prop_assert!(seen.is_empty());
                }
                prop_assert_eq!(holding.since(), plain.since());
                prop_assert_eq!(holding.held.len(), plain.held.len());
            }
        }
    }
}
