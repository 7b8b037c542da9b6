//! The closed-window gate: the last line of defence of final rows.
//!
//! The per-partition rule of [`crate::lateness`] already rejects every event whose window its
//! own partition has closed. What can still arrive is an event of a partition that had been
//! idle, and so left out of the pipeline watermark, for a window the pipeline has since
//! closed and evicted. Counting it would start that window again from zero and overwrite its
//! final row with a wrong one, so it is dead-lettered as `late` instead.

use std::sync::Arc;

use clickflow_sources::encode::encode;
use clickflow_sources::{DeadLetter, PartitionId, RejectKind, Rejection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::StreamVec;

use crate::input::InputEvent;
use crate::stage::by_epoch;
use crate::watermark::PartitionReport;
use crate::window::WindowSize;
use crate::Epoch;

/// Splits `events` into those whose window is still open before their epoch and dead letters
/// for the others.
pub fn closed_window_gate<'scope>(
    events: StreamVec<'scope, Epoch, InputEvent>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    partitions: Arc<[PartitionId]>,
    window: WindowSize,
) -> (
    StreamVec<'scope, Epoch, InputEvent>,
    StreamVec<'scope, Epoch, DeadLetter>,
) {
    let count = partitions.len();
    let judged = by_epoch(
        events,
        Pipeline,
        reports,
        count,
        "Gate: closed windows",
        move |_epoch, events, watermarks, out| {
            for input in events {
                let end = window.window_of(input.event.ts).end;
                if end <= watermarks.before {
                    let rejection = Rejection::new(
                    RejectKind::Late,
                    format!("window ending {end} ms was already closed by the pipeline watermark {} ms", watermarks.before),
                );
                    let partition = partitions
                        .get(input.partition as usize)
                        .cloned()
                        .unwrap_or_else(|| PartitionId::new("unknown", input.partition as i32));
                    out.push(Err(DeadLetter::new(
                        partition,
                        input.offset,
                        rejection,
                        &encode(&input.event),
                    )));
                } else {
                    out.push(Ok(input));
                }
            }
        },
    );
    judged.ok_err(|result| result)
}
