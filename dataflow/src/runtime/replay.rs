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
