//! Knowing, on every worker, when the replay after a restart is over.
//!
//! After a restart each partition first replays committed input, from a checkpoint before
//! the oldest event its open windows and sessions depend on up to the committed offset, to
//! rebuild that state; the output of those epochs is already in the tables and is not
//! applied. No partition may read past its committed offset before every partition has
//! finished replaying, or new input would land in an epoch whose output is discarded. Each
//! worker therefore watches the broadcast partition reports and raises a flag, read by its
//! driver, once every partition has reported that it is done.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use crate::runtime::watermark::{PartitionReport, WatermarkTracker};
use crate::Epoch;

/// Returns a flag that turns true, on this worker, once every one of `partitions` partitions
/// has reported that it is no longer replaying.
pub fn replay_monitor(
    reports: StreamVec<'_, Epoch, PartitionReport>,
    partitions: usize,
) -> Rc<Cell<bool>> {
    let done = Rc::new(Cell::new(false));
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
            for report in entry.remove() {
                tracker.update(report);
            }
            if tracker.all_replayed() {
                flag.set(true);
            }
        }
    });
    done
}
