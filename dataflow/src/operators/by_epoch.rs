//! Processing a stream one whole epoch at a time, in epoch order, knowing the watermark.

use std::collections::BTreeMap;

use timely::dataflow::channels::pact::{ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::runtime::watermark::{PartitionReport, ProgressSeed, WatermarkTracker};
use crate::Epoch;

/// The pipeline watermark around one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochWatermarks {
    /// `W(epoch - 1)`: windows ending at or before it were closed before this epoch.
    pub before: clickflow_sources::EventTime,
    /// `W(epoch)`: what is final once this epoch is applied.
    pub after: clickflow_sources::EventTime,
    /// True while some partition still replays committed input (see [`crate::runtime::replay`]).
    pub replaying: bool,
}

struct Pending<D> {
    capability: Capability<Epoch>,
    /// The epoch's input as it arrived, batch by batch: gathered into one vector of
    /// exactly its size when the epoch is complete, rather than grown by doubling as it
    /// arrives (a backlog epoch brings a million records a worker, and each doubling copied
    /// and faulted in everything before it).
    batches: Vec<Vec<D>>,
    reports: Vec<PartitionReport>,
}

impl<D> Pending<D> {
    /// The pending epoch of `capability`, held with it from its first record on.
    fn of(
        pending: &mut BTreeMap<Epoch, Pending<D>>,
        capability: Capability<Epoch>,
    ) -> &mut Pending<D> {
        pending
            .entry(*capability.time())
            .or_insert_with(|| Pending {
                capability,
                batches: Vec::new(),
                reports: Vec::new(),
            })
    }

    /// The epoch's input in one vector.
    fn gathered(batches: Vec<Vec<D>>) -> Vec<D> {
        if batches.len() == 1 {
            return batches.into_iter().next().expect("one batch");
        }
        let mut data = Vec::with_capacity(batches.iter().map(Vec::len).sum());
        for batch in batches {
            data.extend(batch);
        }
        data
    }
}

/// Calls `logic(epoch, data, watermarks, emit)` once per epoch, in epoch order, when both
/// `data` (distributed by `pact`) and the broadcast `reports` are complete for that epoch.
/// Every worker sees every epoch that has reports, so state can be evicted in epochs that
/// bring no data. `emit` sends a record on at once, in output-sized batches: an epoch that
/// changes a million rows (the end of a backfill closes every session) never sits in memory
/// as one vector.
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
    data.binary_frontier(reports, pact, Pipeline, name, move |_capability, _info| {
        let mut pending: BTreeMap<Epoch, Pending<D>> = BTreeMap::new();
        let mut tracker = WatermarkTracker::new(seed.partitions);
        move |(data_input, data_frontier), (report_input, report_frontier), output| {
            data_input.for_each_stamp(|stamp, batches| {
                if let Some(capability) = stamp.retain_least(output.output_index()) {
                    let entry = Pending::of(&mut pending, capability);
                    entry
                        .batches
                        .extend(batches.map(std::mem::take).filter(|b| !b.is_empty()));
                }
            });
            report_input.for_each_stamp(|stamp, batches| {
                if let Some(capability) = stamp.retain_least(output.output_index()) {
                    let entry = Pending::of(&mut pending, capability);
                    entry.reports.extend(batches.flat_map(|b| b.drain(..)));
                }
            });
            while let Some(entry) = pending.first_entry() {
                let epoch = *entry.key();
                if data_frontier.frontier().less_equal(&epoch)
                    || report_frontier.frontier().less_equal(&epoch)
                {
                    break;
                }
                let Pending {
                    capability,
                    batches,
                    reports,
                } = entry.remove();
                let data = Pending::<D>::gathered(batches);
                let before = tracker.current();
                // An epoch is part of the replay unless the replay was over before it began:
                // its input then lies entirely below the committed offsets.
                let replaying = !tracker.all_replayed();
                for report in reports {
                    tracker.update(report);
                }
                let after = tracker.advance();
                let watermarks = EpochWatermarks {
                    before,
                    after,
                    replaying,
                };
                let mut session = output.session(&capability);
                logic(epoch, data, watermarks, &mut |record| session.give(record));
            }
        }
    })
}
