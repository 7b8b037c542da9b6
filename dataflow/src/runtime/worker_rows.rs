//! Each worker's own table changes, for a sink that writes from every worker.
//!
//! ```text
//!  trends/funnel/scores/... (this worker's keys) ─┐
//!  sessions (this worker's keys) ─────────────────┤
//!  partition reports (broadcast) ─────────────────┴─► Output: worker rows ─► deliver
//! ```
//!
//! A stage emits every change of a key (the retraction of its old row and the insertion of
//! its new one) on the worker that owns the key, so the rows stay where they are made
//! (`Pipeline`) and no worker's writer ever touches another's rows. When the frontier passes
//! an epoch, its rows are consolidated and offered to this worker's writer, marked `replay`
//! exactly as the gathering worker marks the epoch (from the same reports), and the writer
//! hears how far the epochs are closed even where this worker changed nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::progress::Antichain;

use crate::rows::SessionRow;
use crate::runtime::handoff::Offering;
use crate::runtime::output::{take_arrivals, Arriving, Change, Deliver};
use crate::runtime::watermark::{PartitionReport, ProgressSeed, WatermarkTracker};
use crate::Epoch;

/// Offers `deliver` this worker's row changes of every closed epoch (and announcements of
/// the closed epochs), from `rows` (the KPI stages' changes, as made), `sessions` (the
/// session stage's row changes) and `reports` (every partition's reports, broadcast).
///
/// Session rows come as the stage emits them rather than wrapped in a [`Change`]: an
/// epoch that closes every session (the end of a backlog) has all of them in flight at
/// once, and a `Change` is 168 bytes where a session row's update is 24 (the row itself
/// is shared with the churn stage: [`crate::kpi::sessions::SessionStreams::rows`]).
/// `clickflow bench` (6 December 2026, nineteenth sitting; heaptrack): the wrapped rows
/// were 46 MB of the run's peak heap.
pub fn worker_rows<'scope>(
    rows: StreamVec<'scope, Epoch, Change>,
    sessions: StreamVec<'scope, Epoch, (Arc<SessionRow>, Epoch, isize)>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    deliver: Deliver,
) -> StreamVec<'scope, Epoch, ()> {
    let scope = rows.scope();
    let mut builder = OperatorBuilder::new("Output: worker rows".to_owned(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut rows_input = builder.new_input(rows, Pipeline);
    let mut sessions_input = builder.new_input(sessions, Pipeline);
    let mut reports_input = builder.new_input(reports, Pipeline);
    // Nothing is sent on the output: it carries the capabilities the probe watches.
    let (_nothing_sent, announced) = builder.new_output::<Vec<()>>();
    builder.build(move |_initial_capabilities| {
        let mut offering = Offering::new(deliver, activator, true);
        let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Arriving)> = BTreeMap::new();
        let mut tracker = WatermarkTracker::new(seed.partitions);
        move |frontiers| {
            take_arrivals(&mut rows_input, 0, &mut pending, |change| change);
            take_arrivals(&mut sessions_input, 0, &mut pending, |(row, _, diff)| {
                Change::Session(row, diff)
            });
            take_arrivals(&mut reports_input, 0, &mut pending, Change::Progress);
            let mut frontier = Antichain::new();
            for input in frontiers {
                for epoch in input.frontier().iter() {
                    frontier.insert(*epoch);
                }
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
    });
    announced
}
