//! Each worker's own table changes, for a sink that writes from every worker.
//!
//! ```text
//!  trends/funnel/sessions/scores (this worker's keys) ─┐
//!  partition reports (broadcast) ──────────────────────┴─► Output: worker rows ─► deliver
//! ```
//!
//! A stage emits every change of a key (the retraction of its old row and the insertion of
//! its new one) on the worker that owns the key, so the rows stay where they are made
//! (`Pipeline`) and no worker's writer ever touches another's rows. When the frontier passes
//! an epoch, its rows are consolidated and offered to this worker's writer, marked `replay`
//! exactly as the gathering worker marks the epoch (from the same reports), and the writer
//! hears how far the epochs are closed even where this worker changed nothing.

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::progress::Antichain;

use std::collections::BTreeMap;

use crate::runtime::handoff::Offering;
use crate::runtime::output::{arriving_at, Arriving, Change, Deliver};
use crate::runtime::watermark::{PartitionReport, ProgressSeed, WatermarkTracker};
use crate::Epoch;

/// Offers `deliver` this worker's row changes of every closed epoch (and announcements of
/// the closed epochs), from `rows` (the KPI stages' changes, as made) and `reports` (every
/// partition's reports, broadcast).
pub fn worker_rows<'scope>(
    rows: StreamVec<'scope, Epoch, Change>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    deliver: Deliver,
) -> StreamVec<'scope, Epoch, ()> {
    let scope = rows.scope();
    rows.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
        reports,
        Pipeline,
        Pipeline,
        "Output: worker rows",
        move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let mut offering = Offering::new(deliver, activator, true);
            let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Arriving)> = BTreeMap::new();
            let mut tracker = WatermarkTracker::new(seed.partitions);
            move |(rows, rows_frontier), (reports, reports_frontier), output| {
                rows.for_each_stamp(|stamp, batches| {
                    if let Some(capability) = stamp.retain_least(output.output_index()) {
                        let arriving = arriving_at(&mut pending, capability);
                        batches
                            .flat_map(|b| b.drain(..))
                            .for_each(|c| arriving.add(c));
                    }
                });
                reports.for_each_stamp(|stamp, batches| {
                    if let Some(capability) = stamp.retain_least(output.output_index()) {
                        let arriving = arriving_at(&mut pending, capability);
                        let reports = batches.flat_map(|b| b.drain(..));
                        reports.for_each(|r| arriving.add(Change::Progress(r)));
                    }
                });
                let mut frontier = Antichain::new();
                for epoch in rows_frontier
                    .frontier()
                    .iter()
                    .chain(reports_frontier.frontier().iter())
                {
                    frontier.insert(*epoch);
                }
                while let Some(entry) = pending.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (epoch, (capability, arriving)) = entry.remove_entry();
                    offering.push(capability, arriving.into_rows(epoch, &mut tracker));
                }
                offering.announce_closed_before(frontier.borrow());
                offering.offer();
            }
        },
    )
}
