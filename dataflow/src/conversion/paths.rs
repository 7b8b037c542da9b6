//! Each session's path through the ordered funnel, from a summary of its events that the
//! session stage keeps beside its counts ([`FunnelSteps`]).

use clickflow_sources::{EventTime, EventType};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

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

/// What a session's events tell of its path, in whatever order they arrive: its earliest
/// click, and the cart adds and purchases that can still be a step.
///
/// The path walks the session's events in time order: the first click, the first cart add
/// at or after it, the first purchase at or after that. As events arrive (or sessions
/// merge), the earliest click can only move earlier, so the first cart add at or after it
/// can only move earlier too, and a cart add later than the current one can never be the
/// step again: only the cart adds before the earliest click and the first one at or after
/// it are kept. Purchases likewise, against the cart step. A session of the shop keeps a
/// few times rather than every event: the ordered funnel used to hold every event and
/// reduce over all of a session id's events whenever one arrived (see [`crate::conversion`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunnelSteps {
    /// The earliest click.
    click: Option<EventTime>,
    /// Sorted: every cart add before `click` (all of them without a click), and the first
    /// at or after it.
    carts: SmallVec<[EventTime; 2]>,
    /// Sorted: every purchase before the cart step (all of them without one), and the
    /// first at or after it.
    purchases: SmallVec<[EventTime; 2]>,
}

/// The first of `sorted` at or after `from`.
fn first_from(sorted: &[EventTime], from: Option<EventTime>) -> Option<(usize, EventTime)> {
    let from = from?;
    let at = sorted.partition_point(|&ts| ts < from);
    sorted.get(at).map(|&ts| (at, ts))
}

/// Inserts `ts` into the sorted `times`, after any equal ones.
fn insert_sorted(times: &mut SmallVec<[EventTime; 2]>, ts: EventTime) {
    let at = times.partition_point(|&held| held <= ts);
    times.insert(at, ts);
}

impl FunnelSteps {
    /// Adds one event: what merging in the steps of that event alone would do, without
    /// building them. The session stage folds every event in here, and building a
    /// `FunnelSteps` of two small vectors per event to merge and drop it took 2.8% of a
    /// `perf` profile of the side-by-side file without the recommender (7 December 2026).
    pub fn note(&mut self, kind: EventType, ts: EventTime) {
        match kind {
            EventType::Click if self.click.is_some_and(|held| held <= ts) => return,
            EventType::Click => self.click = Some(ts),
            EventType::AddToCart => insert_sorted(&mut self.carts, ts),
            EventType::Purchase => insert_sorted(&mut self.purchases, ts),
        }
        self.settle();
    }

    /// Adds the events summed up in `other`.
    pub fn merge(&mut self, other: &FunnelSteps) {
        self.click = match (self.click, other.click) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for &ts in &other.carts {
            insert_sorted(&mut self.carts, ts);
        }
        for &ts in &other.purchases {
            insert_sorted(&mut self.purchases, ts);
        }
        self.settle();
    }

    /// Drops the cart adds and purchases that can no longer be a step.
    fn settle(&mut self) {
        if let Some((at, _)) = first_from(&self.carts, self.click) {
            self.carts.truncate(at + 1);
        }
        if let Some((at, _)) = first_from(&self.purchases, self.cart()) {
            self.purchases.truncate(at + 1);
        }
    }

    /// The cart step: the first cart add at or after the earliest click.
    fn cart(&self) -> Option<EventTime> {
        first_from(&self.carts, self.click).map(|(_, ts)| ts)
    }

    /// The path of the session that starts at `start`, counting the steps before `start +
    /// funnel_window_ms`.
    pub fn path(&self, start: EventTime, funnel_window_ms: i64) -> Path {
        let counted = |ts: &EventTime| *ts < start.saturating_add(funnel_window_ms);
        let click = self.click.filter(counted);
        let cart = click.and(self.cart()).filter(counted);
        let purchase = cart
            .and(first_from(&self.purchases, cart).map(|(_, ts)| ts))
            .filter(counted);
        Path {
            click: click.map(|ts| ts - start),
            cart: cart.zip(click).map(|(ts, from)| ts - from),
            purchase: purchase.zip(cart).map(|(ts, from)| ts - from),
        }
    }

    /// How many times it keeps.
    #[cfg(test)]
    fn held(&self) -> usize {
        usize::from(self.click.is_some()) + self.carts.len() + self.purchases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use EventType::*;

    /// The path as defined: the session's events in time order (a click before a cart add
    /// before a purchase at the same time), walked step by step.
    fn walked(events: &[(EventTime, EventType)], funnel_window_ms: i64) -> Path {
        let start = events.iter().map(|(ts, _)| *ts).min().unwrap();
        let mut sorted: Vec<(EventTime, EventType)> = events
            .iter()
            .copied()
            .filter(|(ts, _)| *ts < start + funnel_window_ms)
            .collect();
        sorted.sort();
        let mut path = Path::default();
        let mut at = start;
        let mut step = 0;
        for (ts, kind) in sorted {
            if step < 3 && kind == EventType::ALL[step] && ts >= at {
                let took = Some(ts - at);
                match step {
                    0 => path.click = took,
                    1 => path.cart = took,
                    _ => path.purchase = took,
                }
                at = ts;
                step += 1;
            }
        }
        path
    }

    fn folded(events: &[(EventTime, EventType)]) -> FunnelSteps {
        let mut steps = FunnelSteps::default();
        for &(ts, kind) in events {
            steps.note(kind, ts);
        }
        steps
    }

    #[test]
    fn steps_count_in_order_only() {
        let events = [
            (0, AddToCart),
            (5, Click),
            (7, Purchase),
            (9, AddToCart),
            (12, Purchase),
        ];
        let expected = Path {
            click: Some(5),
            cart: Some(4),
            purchase: Some(3),
        };
        assert_eq!(folded(&events).path(0, 100), expected);
        // The conversion window counts steps before start + 12 only.
        let cut = Path {
            purchase: None,
            ..expected
        };
        assert_eq!(folded(&events).path(0, 12), cut);
        // A purchase before any cart add does not count.
        let path = folded(&[(10, Click), (11, Purchase)]).path(10, 100);
        assert_eq!(
            (path.click, path.cart, path.purchase),
            (Some(0), None, None)
        );
    }

    #[test]
    fn an_earlier_click_replaces_the_one_held() {
        // The later click arrives first; the path starts from the earlier one.
        let steps = folded(&[(18, Click), (0, Click), (20, AddToCart)]);
        let path = steps.path(0, 100);
        assert_eq!((path.click, path.cart), (Some(0), Some(20)));
        // A later click once an earlier one is held changes nothing.
        assert_eq!(folded(&[(0, Click), (18, Click), (20, AddToCart)]), steps);
    }

    #[test]
    fn only_what_can_still_be_a_step_is_kept() {
        // Clicked at 5: of the carts at and after it, only the first can be the step.
        let steps = folded(&[
            (5, Click),
            (6, AddToCart),
            (9, AddToCart),
            (12, AddToCart),
            (8, Purchase),
            (10, Purchase),
            (11, Purchase),
        ]);
        assert_eq!(steps.carts.as_slice(), [6]);
        assert_eq!(steps.purchases.as_slice(), [8]);
        assert_eq!(steps.held(), 3);
    }

    fn event() -> impl Strategy<Value = (EventTime, EventType)> {
        (0i64..60, prop::sample::select(EventType::ALL.to_vec()))
    }

    proptest! {
        /// Any arrival order, cut anywhere into two sessions' worth merged in either
        /// direction, gives the path of the events walked in time order.
        #[test]
        fn any_order_and_any_merge_give_the_walked_path(
            events in prop::collection::vec(event(), 1..40),
            split in any::<prop::sample::Index>(),
            funnel_window_ms in 1i64..70,
        ) {
            let start = events.iter().map(|(ts, _)| *ts).min().unwrap();
            let expected = walked(&events, funnel_window_ms);
            prop_assert_eq!(folded(&events).path(start, funnel_window_ms), expected);
            let (a, b) = events.split_at(split.index(events.len() + 1));
            let mut merged = folded(b);
            merged.merge(&folded(a));
            prop_assert_eq!(merged.path(start, funnel_window_ms), expected);
            let mut reversed = folded(a);
            reversed.merge(&folded(b));
            prop_assert_eq!(&reversed, &merged);
        }
    }
}
