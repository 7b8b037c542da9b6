//! Processing a stream epoch by epoch, in epoch order, knowing the watermark: batch by batch
//! as an epoch's data arrives ([`by_epoch_streaming`]), or one whole epoch at a time
//! ([`by_epoch`]).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use timely::dataflow::channels::pact::{ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::runtime::watermark::{PartitionReport, ProgressSeed, WatermarkTracker};
use crate::Epoch;

/// What is known when an epoch opens: everything before it is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochOpening {
    /// `W(epoch - 1)`: windows ending at or before it were closed before this epoch.
    pub before: clickflow_sources::EventTime,
    /// True while some partition still replays committed input (see [`crate::runtime::replay`]).
    pub replaying: bool,
}

/// The pipeline watermark around one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochWatermarks {
    /// `W(epoch - 1)`: windows ending at or before it were closed before this epoch.
    pub before: clickflow_sources::EventTime,
    /// `W(epoch)`: what is final once this epoch is applied.
    pub after: clickflow_sources::EventTime,
    /// `W(epoch)` with each finished partition at its own last watermark rather than
    /// `+infinity` ([`WatermarkTracker::held_at_end`]): the end of a finite input closes
    /// every window, but leaves this clock at the input's newest events.
    pub held_at_end: clickflow_sources::EventTime,
    /// True while some partition still replays committed input (see [`crate::runtime::replay`]).
    pub replaying: bool,
}

/// An epoch's capabilities on the two outputs of [`by_epoch_streaming_with_side`].
struct Capabilities {
    records: Capability<Epoch>,
    side: Capability<Epoch>,
}

impl Capabilities {
    /// The capabilities of a message's `stamp`, if it has a time.
    fn retain(stamp: &InputCapability<Epoch>) -> Option<Capabilities> {
        Some(Capabilities {
            records: stamp.retain_least(0)?,
            side: stamp.retain_least(1)?,
        })
    }
}

struct Pending<D> {
    capabilities: Capabilities,
    /// The epoch's input as it arrived, batch by batch, until the epoch opens.
    batches: Vec<Vec<D>>,
    reports: Vec<PartitionReport>,
}

impl<D> Pending<D> {
    /// The pending epoch of `capabilities`, held with them from its first record on.
    fn of(
        pending: &mut BTreeMap<Epoch, Pending<D>>,
        capabilities: Capabilities,
    ) -> &mut Pending<D> {
        pending
            .entry(*capabilities.records.time())
            .or_insert_with(|| Pending {
                capabilities,
                batches: Vec::new(),
                reports: Vec::new(),
            })
    }
}

/// Batches in one vector of exactly their size, rather than one grown by doubling as they
/// arrive (a backlog epoch brings a million records a worker, and each doubling copied and
/// faulted in everything before it).
fn gathered<D>(batches: Vec<Vec<D>>) -> Vec<D> {
    if batches.len() == 1 {
        return batches.into_iter().next().expect("one batch");
    }
    let mut data = Vec::with_capacity(batches.iter().map(Vec::len).sum());
    for batch in batches {
        data.extend(batch);
    }
    data
}

/// Calls `logic(epoch, data, watermarks, emit)` once per epoch, in epoch order, when both
/// `data` (distributed by `pact`) and the broadcast `reports` are complete for that epoch.
/// Every worker sees every epoch that has reports, so state can be evicted in epochs that
/// bring no data. `emit` sends a record on at once, in output-sized batches: an epoch that
/// changes a million rows (the end of a backfill closes every session) never sits in memory
/// as one vector.
///
/// The epoch's data waits in memory until then: a stage that can take it batch by batch
/// uses [`by_epoch_streaming`].
pub fn by_epoch<'scope, D, O, P, L>(
    data: StreamVec<'scope, Epoch, D>,
    pact: P,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    name: &str,
    mut logic: L,
) -> StreamVec<'scope, Epoch, O>
where
    D: ExchangeData + Clone,
    O: ExchangeData + Clone,
    P: ParallelizationContract<Epoch, Vec<D>>,
    L: FnMut(Epoch, Vec<D>, EpochWatermarks, &mut dyn FnMut(O)) + 'static,
{
    let arrived: Rc<RefCell<Vec<Vec<D>>>> = Rc::default();
    let kept = arrived.clone();
    by_epoch_streaming(
        data,
        pact,
        reports,
        seed,
        name,
        move |_epoch, batch, _opening, _emit| kept.borrow_mut().push(batch),
        move |epoch, watermarks, emit| {
            let data = gathered(std::mem::take(&mut *arrived.borrow_mut()));
            logic(epoch, data, watermarks, emit)
        },
    )
}

/// Calls `absorb(epoch, batch, opening, emit)` with each batch of `data` (distributed by
/// `pact`) of the earliest epoch not yet complete, as soon as every earlier epoch is
/// complete (so its `before` watermark is known), and `complete(epoch, watermarks, emit)`
/// once that epoch's data and the broadcast `reports` are complete: in epoch order, and
/// never a batch of a later epoch before an earlier one is complete. Data that arrives for
/// a later epoch waits until its epoch opens. Every worker sees every epoch that has
/// reports, so state can be evicted in epochs that bring no data.
///
/// A stage that can take an epoch batch by batch holds what it made of the batches instead
/// of the epoch's records: a backlog epoch brings a million records a worker.
pub fn by_epoch_streaming<'scope, D, O, P, A, C>(
    data: StreamVec<'scope, Epoch, D>,
    pact: P,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    name: &str,
    absorb: A,
    mut complete: C,
) -> StreamVec<'scope, Epoch, O>
where
    D: ExchangeData + Clone,
    O: ExchangeData + Clone,
    P: ParallelizationContract<Epoch, Vec<D>>,
    A: FnMut(Epoch, Vec<D>, EpochOpening, &mut dyn FnMut(O)) + 'static,
    C: FnMut(Epoch, EpochWatermarks, &mut dyn FnMut(O)) + 'static,
{
    let (records, _nothing) = by_epoch_streaming_with_side::<_, _, (), _, _, _>(
        data,
        pact,
        reports,
        seed,
        name,
        absorb,
        move |epoch, watermarks, emit, _side| complete(epoch, watermarks, emit),
    );
    records
}

/// [`by_epoch_streaming`] with a second output, which only `complete` writes to (a stage's
/// reports of what it holds, beside its records).
///
/// Each record goes straight to its own output. A stage with one output of both kinds
/// (`Result<record, report>`) that a timely `ok_err` then split held every record twice
/// while its epoch completed, each in a container sized for the larger kind: at the end
/// of a backlog the session stage emits all its rows at once, and on `clickflow bench`'s
/// file the split's copies were 81 MB of the run's peak heap (heaptrack, 6 December 2026).
pub fn by_epoch_streaming_with_side<'scope, D, O, S, P, A, C>(
    data: StreamVec<'scope, Epoch, D>,
    pact: P,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    name: &str,
    mut absorb: A,
    mut complete: C,
) -> (StreamVec<'scope, Epoch, O>, StreamVec<'scope, Epoch, S>)
where
    D: ExchangeData + Clone,
    O: ExchangeData + Clone,
    S: ExchangeData + Clone,
    P: ParallelizationContract<Epoch, Vec<D>>,
    A: FnMut(Epoch, Vec<D>, EpochOpening, &mut dyn FnMut(O)) + 'static,
    C: FnMut(Epoch, EpochWatermarks, &mut dyn FnMut(O), &mut dyn FnMut(S)) + 'static,
{
    let mut builder = OperatorBuilder::new(name.to_owned(), data.scope());
    let mut data_input = builder.new_input(data, pact);
    let mut report_input = builder.new_input(reports, Pipeline);
    let (records_out, records) = builder.new_output();
    let (side_out, side) = builder.new_output();
    let mut records_out = OutputBuilder::from(records_out);
    let mut side_out = OutputBuilder::from(side_out);
    builder.build(move |_initial_capabilities| {
        let mut pending: BTreeMap<Epoch, Pending<D>> = BTreeMap::new();
        let mut tracker = WatermarkTracker::new(seed.partitions);
        move |frontiers| {
            let mut records_out = records_out.activate();
            let mut side_out = side_out.activate();
            data_input.for_each_stamp(|stamp, batches| {
                if let Some(capabilities) = Capabilities::retain(&stamp) {
                    let entry = Pending::of(&mut pending, capabilities);
                    entry
                        .batches
                        .extend(batches.map(std::mem::take).filter(|b| !b.is_empty()));
                }
            });
            report_input.for_each_stamp(|stamp, batches| {
                if let Some(capabilities) = Capabilities::retain(&stamp) {
                    let entry = Pending::of(&mut pending, capabilities);
                    entry.reports.extend(batches.flat_map(|b| b.drain(..)));
                }
            });
            let (data_at, reports_at) = (&frontiers[0], &frontiers[1]);
            while let Some(mut entry) = pending.first_entry() {
                let epoch = *entry.key();
                // Open: nothing earlier can still arrive (and every earlier epoch with
                // data or reports is done, being earlier in `pending`).
                if data_at.less_than(&epoch) || reports_at.less_than(&epoch) {
                    break;
                }
                let opening = EpochOpening {
                    before: tracker.current(),
                    // An epoch is part of the replay unless the replay was over before it
                    // began: its input then lies entirely below the committed offsets.
                    replaying: !tracker.all_replayed(),
                };
                let batches = std::mem::take(&mut entry.get_mut().batches);
                if !batches.is_empty() {
                    let mut session = records_out.session(&entry.get().capabilities.records);
                    for batch in batches {
                        absorb(epoch, batch, opening, &mut |record| session.give(record));
                    }
                }
                if data_at.less_equal(&epoch) || reports_at.less_equal(&epoch) {
                    break;
                }
                let Pending {
                    capabilities,
                    reports,
                    ..
                } = entry.remove();
                for report in reports {
                    tracker.update(report);
                }
                let watermarks = EpochWatermarks {
                    before: opening.before,
                    after: tracker.advance(),
                    held_at_end: tracker.held_at_end(),
                    replaying: opening.replaying,
                };
                let mut records = records_out.session(&capabilities.records);
                let mut side = side_out.session(&capabilities.side);
                complete(
                    epoch,
                    watermarks,
                    &mut |record| records.give(record),
                    &mut |record| side.give(record),
                );
            }
        }
    });
    (records, side)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::watermark::NO_WATERMARK;
    use timely::dataflow::operators::vec::Input;
    use timely::dataflow::operators::Probe;
    use timely::dataflow::InputHandleVec;

    /// What the stage saw, in order: `(epoch, Some(batch))` for a batch absorbed,
    /// `(epoch, None)` for an epoch completed.
    type Seen = Rc<RefCell<Vec<(Epoch, Option<Vec<u64>>)>>>;

    #[test]
    fn batches_of_the_open_epoch_are_taken_at_once_and_later_epochs_wait() {
        timely::execute_directly(|worker| {
            let seen: Seen = Rc::default();
            let (absorbed, completed) = (seen.clone(), seen.clone());
            let mut data = InputHandleVec::new();
            let mut reports = InputHandleVec::new();
            let probe = worker.dataflow::<Epoch, _, _>(|scope| {
                let seed = ProgressSeed {
                    partitions: 1,
                    committed_watermark: NO_WATERMARK,
                };
                by_epoch_streaming(
                    scope.input_from(&mut data),
                    Pipeline,
                    scope.input_from(&mut reports),
                    seed,
                    "test",
                    move |epoch, batch: Vec<u64>, _, _: &mut dyn FnMut(u64)| {
                        absorbed.borrow_mut().push((epoch, Some(batch)));
                    },
                    move |epoch, _, _| completed.borrow_mut().push((epoch, None)),
                )
                .probe()
                .0
            });
            // Epoch 0 is open from the start: its batch is taken before it is complete.
            data.send(1);
            data.flush();
            for _ in 0..10 {
                worker.step();
            }
            assert_eq!(*seen.borrow(), [(0, Some(vec![1]))]);
            // Epoch 1's data arrives while epoch 0's reports are still open: it waits.
            data.advance_to(1);
            data.send(2);
            data.flush();
            for _ in 0..10 {
                worker.step();
            }
            assert_eq!(seen.borrow().len(), 1);
            // Epoch 0 completes, then epoch 1 opens and completes, in that order.
            data.advance_to(2);
            reports.advance_to(2);
            while probe.less_than(&2) {
                worker.step();
            }
            assert_eq!(
                *seen.borrow(),
                [(0, Some(vec![1])), (0, None), (1, Some(vec![2])), (1, None)]
            );
            // Epoch 2 brings nothing, but until its reports are complete, epoch 3 is not open.
            data.advance_to(3);
            data.send(3);
            data.flush();
            for _ in 0..10 {
                worker.step();
            }
            assert_eq!(seen.borrow().len(), 4);
            data.advance_to(4);
            reports.advance_to(4);
            while probe.less_than(&4) {
                worker.step();
            }
            assert_eq!(seen.borrow()[4..], [(3, Some(vec![3])), (3, None)]);
        });
    }

    /// Records and side records each reach their own output, at the epoch that made them:
    /// absorbed batches and completions on the first, what `complete` reports on the second.
    #[test]
    fn records_and_side_records_reach_their_own_outputs_at_their_epoch() {
        timely::execute_directly(|worker| {
            use timely::dataflow::operators::capture::{Capture, Extract};
            let mut data = InputHandleVec::new();
            let mut reports = InputHandleVec::new();
            let (records, side) = worker.dataflow::<Epoch, _, _>(|scope| {
                let seed = ProgressSeed {
                    partitions: 1,
                    committed_watermark: NO_WATERMARK,
                };
                let (records, side) = by_epoch_streaming_with_side(
                    scope.input_from(&mut data),
                    Pipeline,
                    scope.input_from(&mut reports),
                    seed,
                    "test",
                    |_, batch: Vec<u64>, _, emit: &mut dyn FnMut(u64)| {
                        batch.into_iter().for_each(|n| emit(n * 10));
                    },
                    |epoch, _, emit, report: &mut dyn FnMut(String)| {
                        emit(1000 + epoch);
                        report(format!("epoch {epoch} complete"));
                    },
                );
                (records.capture(), side.capture())
            });
            data.send(1);
            data.send(2);
            data.advance_to(1);
            data.send(3);
            drop(data);
            drop(reports);
            while worker.step() {}
            assert_eq!(
                records.extract(),
                [(0, vec![10, 20, 1000]), (1, vec![30, 1001])]
            );
            assert_eq!(
                side.extract(),
                [
                    (0, vec!["epoch 0 complete".to_string()]),
                    (1, vec!["epoch 1 complete".to_string()])
                ]
            );
        });
    }
}
