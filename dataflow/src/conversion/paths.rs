//! Each session's path through the ordered funnel.

use clickflow_sources::{EventTime, EventType};
use compact_str::CompactString;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use crate::conversion::inputs::{FunnelEvent, FunnelSpan};
use crate::conversion::Sealing;
use crate::window::Window;
use crate::Epoch;

/// How far a session got, and how long each step took from the one before (milliseconds;
/// the first click from the session's first event). A later step is `Some` only when the
/// earlier ones are.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Path {
    /// Session start to its first click.
    pub click: Option<i64>,
    /// That click to the first cart add at or after it.
    pub cart: Option<i64>,
    /// That cart add to the first purchase at or after it.
    pub purchase: Option<i64>,
}

impl Path {
    /// The path of a session that started at `start`, through `events` (in time order,
    /// and within the conversion window).
    pub fn through(
        start: EventTime,
        events: impl IntoIterator<Item = (EventTime, EventType)>,
    ) -> Path {
        let mut path = Path::default();
        let mut previous = start;
        for (ts, kind) in events {
            let next = match (path.click, path.cart, path.purchase) {
                (None, _, _) => EventType::Click,
                (Some(_), None, _) => EventType::AddToCart,
                (Some(_), Some(_), None) => EventType::Purchase,
                _ => break,
            };
            if kind != next || ts < previous {
                continue;
            }
            let step = Some(ts - previous);
            match kind {
                EventType::Click => path.click = step,
                EventType::AddToCart => path.cart = step,
                EventType::Purchase => path.purchase = step,
            }
            previous = ts;
        }
        path
    }
}

/// Every session's path, keyed by the window it started in: the events joined with the
/// span of the session that holds them (its start at or before them, its last event at or
/// after them), then reduced per session.
pub fn session_paths<'scope>(
    events: VecCollection<'scope, Epoch, FunnelEvent>,
    spans: VecCollection<'scope, Epoch, FunnelSpan>,
    sealing: Sealing,
) -> VecCollection<'scope, Epoch, (Window, Path)> {
    let events = events.arrange_by_key_named("Funnel (ordered): events by session");
    let spans = spans.arrange_by_key_named("Funnel (ordered): sessions by id");
    spans
        .join_core(events, |id, &(start, last), &(ts, kind)| {
            (start <= ts && ts <= last).then(|| ((id.clone(), start), (ts, kind)))
        })
        .reduce_named(
            "Funnel (ordered): path per session",
            |(_, start), events, out| {
                let present = events.iter().filter(|(_, count)| *count > 0);
                out.push((Path::through(*start, present.map(|(event, _)| **event)), 1));
            },
        )
        .map(
            move |((_id, start), path): ((CompactString, EventTime), Path)| {
                (sealing.window.window_of(start), path)
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use EventType::*;

    #[test]
    fn steps_count_in_order_only() {
        let path = Path::through(
            0,
            [
                (0, AddToCart),
                (5, Click),
                (7, Purchase),
                (9, AddToCart),
                (12, Purchase),
            ],
        );
        assert_eq!(
            path,
            Path {
                click: Some(5),
                cart: Some(4),
                purchase: Some(3)
            }
        );
        // A purchase before any cart add does not count.
        let path = Path::through(10, [(10, Click), (11, Purchase)]);
        assert_eq!(
            (path.click, path.cart, path.purchase),
            (Some(0), None, None)
        );
    }
}
