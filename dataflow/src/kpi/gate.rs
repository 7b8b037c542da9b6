//! The closed-window gate: the last line of defence of final rows.
//!
//! The per-partition rule of [`crate::runtime::lateness`] already rejects every event whose window its
//! own partition has closed. What can still arrive is an event of a partition that had been
//! idle, and so left out of the pipeline watermark, for a window the pipeline has since
//! closed and evicted. Counting it would start that window again from zero and overwrite its
//! final row with a wrong one, so it is dead-lettered as `late` instead. The same holds for
//! windows closed before a restart ([`ProgressSeed::committed_watermark`]). While the
//! pipeline replays committed input the gate lets everything through: replay rebuilds state
//! as the first run did, and its output is not applied.

use std::sync::Arc;

use clickflow_sources::encode::encode;
use clickflow_sources::{DeadLetter, PartitionId, RejectKind, Rejection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::StreamVec;

use crate::input::{Accepted, InputEvent};
use crate::operators::by_epoch_streaming;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::window::WindowSize;
use crate::Epoch;

/// An event the gate judged: accepted, or a dead letter.
pub type Judged = Result<Accepted, DeadLetter>;

/// Judges `events`: accepted if their window is still open before their epoch, a dead
/// letter otherwise, batch by batch as they arrive (the closing watermark is known once the
/// epoch before is complete): the gate never holds an epoch of events. The split
/// ([`crate::kpi::split`]) parts the two, in the same pass that gives each stage its input.
pub fn closed_window_gate<'scope>(
    events: StreamVec<'scope, Epoch, InputEvent>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    partitions: Arc<[PartitionId]>,
    seed: ProgressSeed,
    window: WindowSize,
) -> StreamVec<'scope, Epoch, Judged> {
    by_epoch_streaming(
        events,
        Pipeline,
        reports,
        seed,
        "Gate: closed windows",
        move |_epoch, events, opening, out| {
            let closed_before = opening.before.max(seed.committed_watermark);
            for input in events {
                let end = window.window_of(input.event.ts).end;
                if opening.replaying || end > closed_before {
                    out(Ok(Accepted::new(input.partition, input.event)));
                    continue;
                }
                let rejection = Rejection::new(
                    RejectKind::Late,
                    format!(
                        "window ending {end} ms was already closed by the pipeline watermark \
                         {closed_before} ms; session {:?} is final there",
                        input.event.session_id
                    ),
                );
                let partition = partitions
                    .get(input.partition as usize)
                    .cloned()
                    .unwrap_or_else(|| PartitionId::new("unknown", input.partition as i32));
                out(Err(DeadLetter::new(
                    partition,
                    input.offset,
                    rejection,
                    &encode(&input.event),
                )));
            }
        },
        |_epoch, _watermarks, _out| {},
    )
}
