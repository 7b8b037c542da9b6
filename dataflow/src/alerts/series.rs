//! `window_series`: the final values of every closed window, in window order, on worker 0.
//!
//! The detectors judge a window once, on its final values: the `event_trends` and
//! `funnel_summary` rows it ended with, and the payloads rejected while it was the newest
//! window of their partition. A window's values are final when the pipeline watermark passes
//! its end, exactly when the keyed stages evict it; the stage emits it then, with every empty
//! window before it (a minute without purchases is a point of the purchase series, worth 0).
//!
//! Rejected payloads have no trustworthy event time (a malformed one has none at all), so each
//! is charged to the window holding its partition's clock when it was read (the highest event
//! time the partition had delivered before it, see [`crate::runtime::lateness`]): a function
//! of the partition's order alone, so replays and any number of workers charge it to the same
//! window. A payload rejected before its partition's first event has no window and counts in
//! no series (it is in `dead_letters` all the same), and so does an event rejected by
//! [`crate::kpi::gate`] (a partition that had been idle: the gate does not know its clock).
//!
//! After a restart the windows closed before it come from the `window_series` table (see
//! [`crate::alerts`]); replay never emits them again, as the keyed stages never emit their
//! rows again.

use std::collections::BTreeMap;

use clickflow_sources::{EventTime, EventType};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::StreamVec;

use crate::operators::by_epoch;
use crate::rows::{FunnelRow, TrendRow};
use crate::runtime::watermark::{PartitionReport, ProgressSeed, END_OF_INPUT, NO_WATERMARK};
use crate::window::{Window, WindowSize};
use crate::Epoch;

/// A measured quantity of a window, judged by the detectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Series {
    /// `click` events.
    Clicks,
    /// `add_to_cart` events.
    CartAdds,
    /// `purchase` events.
    Purchases,
    /// Distinct users who clicked.
    ClickUsers,
    /// Distinct users who added to a cart.
    CartUsers,
    /// Distinct users who bought.
    PurchaseUsers,
    /// Distinct users who added to a cart over those who clicked.
    ViewToCart,
    /// Distinct users who bought over those who added to a cart.
    CartToPurchase,
    /// Revenue of the purchases, in currency units.
    Revenue,
    /// Payloads rejected as malformed (every rejection but `late`).
    Malformed,
    /// Events rejected as late.
    Late,
}

impl Series {
    /// Every series, in the order of [`Series::name`]s in the README.
    pub const ALL: [Series; 11] = [
        Series::Clicks,
        Series::CartAdds,
        Series::Purchases,
        Series::ClickUsers,
        Series::CartUsers,
        Series::PurchaseUsers,
        Series::ViewToCart,
        Series::CartToPurchase,
        Series::Revenue,
        Series::Malformed,
        Series::Late,
    ];

    /// The name used in alerts, rules files and the API.
    pub fn name(self) -> &'static str {
        match self {
            Series::Clicks => "clicks",
            Series::CartAdds => "cart_adds",
            Series::Purchases => "purchases",
            Series::ClickUsers => "click_users",
            Series::CartUsers => "cart_users",
            Series::PurchaseUsers => "purchase_users",
            Series::ViewToCart => "view_to_cart",
            Series::CartToPurchase => "cart_to_purchase",
            Series::Revenue => "revenue",
            Series::Malformed => "malformed",
            Series::Late => "late",
        }
    }

    /// The series named `name`.
    pub fn from_name(name: &str) -> Option<Series> {
        Series::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The counts of one window, from which every [`Series`] is computed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WindowCounts {
    /// Events per type, indexed as [`EventType::ALL`].
    pub events: [i64; 3],
    /// Distinct users per type, indexed as [`EventType::ALL`].
    pub users: [i64; 3],
    /// Revenue of the purchases, in cents.
    pub revenue_cents: i64,
    /// Payloads rejected as malformed.
    pub malformed: i64,
    /// Events rejected as late.
    pub late: i64,
}

/// The index of `event_type` in [`WindowCounts`]' arrays.
fn type_index(event_type: EventType) -> usize {
    match event_type {
        EventType::Click => 0,
        EventType::AddToCart => 1,
        EventType::Purchase => 2,
    }
}

impl WindowCounts {
    /// The value of `series`; `None` for a ratio whose denominator is 0.
    pub fn value(&self, series: Series) -> Option<f64> {
        let ratio = |num: i64, den: i64| (den > 0).then(|| num as f64 / den as f64);
        let [clicks, carts, purchases] = self.events;
        let [click_users, cart_users, purchase_users] = self.users;
        Some(match series {
            Series::Clicks => clicks as f64,
            Series::CartAdds => carts as f64,
            Series::Purchases => purchases as f64,
            Series::ClickUsers => click_users as f64,
            Series::CartUsers => cart_users as f64,
            Series::PurchaseUsers => purchase_users as f64,
            Series::ViewToCart => return ratio(cart_users, click_users),
            Series::CartToPurchase => return ratio(purchase_users, cart_users),
            Series::Revenue => self.revenue_cents as f64 / 100.0,
            Series::Malformed => self.malformed as f64,
            Series::Late => self.late as f64,
        })
    }

    /// Events of `event_type`.
    pub fn events_of(&self, event_type: EventType) -> i64 {
        self.events[type_index(event_type)]
    }

    /// Adds the change of a trend row (`diff` is -1 for the old row, +1 for the new).
    pub fn add_trend(&mut self, row: &TrendRow, diff: isize) {
        let diff = diff as i64;
        self.events[type_index(row.event_type)] += diff * row.count;
        self.revenue_cents += diff * row.revenue_cents;
    }

    /// Adds the change of a funnel row.
    pub fn add_funnel(&mut self, row: &FunnelRow, diff: isize) {
        self.users[type_index(row.event_type)] += diff as i64 * row.unique_users;
    }

    /// Counts one rejected payload.
    pub fn add_rejection(&mut self, late: bool) {
        if late {
            self.late += 1;
        } else {
            self.malformed += 1;
        }
    }
}

/// One closed window with its final counts: a row of `window_series`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowPoint {
    /// The window.
    pub window: Window,
    /// Its final counts.
    pub counts: WindowCounts,
}

/// A payload rejected at the source, charged to its partition's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// The partition's clock when it was read (see the module docs).
    pub at: EventTime,
    /// Rejected as late (otherwise malformed).
    pub late: bool,
}

/// What the series stage reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeriesInput {
    /// A change of `event_trends`.
    Trend(TrendRow, isize),
    /// A change of `funnel_summary`.
    Funnel(FunnelRow, isize),
    /// A rejected payload.
    Rejected(Rejected),
}

/// The series stage's memory: the counts of the windows still open, and the next window to
/// emit. Bounded by the open windows (the allowed lateness over the window size, plus one).
struct OpenWindows {
    size: WindowSize,
    open: BTreeMap<EventTime, WindowCounts>,
    /// The start of the next window to emit (`None` before the first window is known).
    next: Option<EventTime>,
}

impl OpenWindows {
    fn add(&mut self, input: SeriesInput) {
        let start = match &input {
            SeriesInput::Trend(row, _) => row.window.start,
            SeriesInput::Funnel(row, _) => row.window.start,
            SeriesInput::Rejected(rejected) => self.size.window_of(rejected.at).start,
        };
        if self.next.is_some_and(|next| start < next) {
            return; // a window emitted (or committed) already: only rejections can aim here
        }
        let counts = self.open.entry(start).or_default();
        match input {
            SeriesInput::Trend(row, diff) => counts.add_trend(&row, diff),
            SeriesInput::Funnel(row, diff) => counts.add_funnel(&row, diff),
            SeriesInput::Rejected(rejected) => counts.add_rejection(rejected.late),
        }
    }

    /// Emits every window final at `watermark`, in order, empty ones included; at the end of
    /// the input, up to the last window that saw anything.
    fn close(&mut self, watermark: EventTime, emit: &mut dyn FnMut(WindowPoint)) {
        let size = self.size.millis();
        let last = if watermark == END_OF_INPUT {
            match self.open.last_key_value() {
                Some((&start, _)) => start,
                None => return,
            }
        } else if watermark == NO_WATERMARK {
            return;
        } else {
            watermark.div_euclid(size) * size - size
        };
        let Some(mut start) = self.next.or_else(|| self.open.keys().next().copied()) else {
            return;
        };
        if start > last {
            return; // nothing final yet: an earlier window may still receive its first event
        }
        while start <= last {
            let counts = self.open.remove(&start).unwrap_or_default();
            emit(WindowPoint {
                window: self.size.window_of(start),
                counts,
            });
            start += size;
        }
        self.next = Some(start);
    }
}

/// The final counts of every closed window, gathered on worker 0 and emitted in window order
/// in the epoch that closes them. `resume_at` is where a restarted pipeline's series goes on
/// (the first window the committed watermark had not closed; `None` on a fresh start).
pub fn window_series<'scope>(
    inputs: StreamVec<'scope, Epoch, SeriesInput>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    size: WindowSize,
    resume_at: Option<EventTime>,
) -> StreamVec<'scope, Epoch, WindowPoint> {
    let mut windows = OpenWindows {
        size,
        open: BTreeMap::new(),
        next: resume_at,
    };
    // Every input goes to worker 0; the other workers' instances receive nothing and must
    // emit nothing (after a restart they would otherwise emit every window from `resume_at`
    // as empty).
    let gathering = inputs.scope().index() == 0;
    by_epoch(
        inputs,
        Exchange::new(|_: &SeriesInput| 0),
        reports,
        seed,
        "Alerts: window series",
        move |_epoch, inputs, watermarks, out| {
            if !gathering {
                return;
            }
            for input in inputs {
                windows.add(input);
            }
            windows.close(watermarks.after, out);
        },
    )
}

/// Where the series of a pipeline restarted at `committed_watermark`, with the points
/// `committed` before it, goes on: the first window that watermark had not closed. A
/// pipeline that committed no point yet had closed no window with data, and starts where a
/// fresh one does, at its first window with data: resuming at the watermark's window would
/// emit the empty windows between it and the data, which an uninterrupted run never has
/// (a two-process run killed after its first commit showed one).
pub fn resume_at(
    committed_watermark: EventTime,
    committed: &[WindowPoint],
    size: WindowSize,
) -> Option<EventTime> {
    (!committed.is_empty()
        && committed_watermark != NO_WATERMARK
        && committed_watermark != END_OF_INPUT)
        .then(|| committed_watermark.div_euclid(size.millis()) * size.millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trend(start: i64, event_type: EventType, count: i64) -> SeriesInput {
        let window = WindowSize::from_millis(60_000).window_of(start);
        SeriesInput::Trend(
            TrendRow {
                window,
                event_type,
                count,
                revenue_cents: 0,
            },
            1,
        )
    }

    fn emitted(windows: &mut OpenWindows, watermark: EventTime) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        windows.close(watermark, &mut |p| {
            out.push((p.window.start, p.counts.events_of(EventType::Click)))
        });
        out
    }

    #[test]
    fn closed_windows_are_emitted_once_in_order_with_the_empty_ones_between() {
        let mut windows = OpenWindows {
            size: WindowSize::from_millis(60_000),
            open: BTreeMap::new(),
            next: None,
        };
        windows.add(trend(0, EventType::Click, 3));
        windows.add(trend(180_000, EventType::Click, 5));
        assert_eq!(emitted(&mut windows, 59_999), vec![]);
        assert_eq!(emitted(&mut windows, 150_000), vec![(0, 3), (60_000, 0)]);
        // A rejection aimed at an emitted window is ignored; the open one counts it.
        windows.add(SeriesInput::Rejected(Rejected {
            at: 10,
            late: false,
        }));
        assert_eq!(
            emitted(&mut windows, END_OF_INPUT),
            vec![(120_000, 0), (180_000, 5)]
        );
        assert_eq!(emitted(&mut windows, END_OF_INPUT), vec![]);
    }

    #[test]
    fn a_restart_goes_on_from_the_first_window_not_closed() {
        let size = WindowSize::from_millis(60_000);
        let committed = [WindowPoint {
            window: size.window_of(60_000),
            counts: WindowCounts::default(),
        }];
        assert_eq!(resume_at(NO_WATERMARK, &committed, size), None);
        assert_eq!(resume_at(END_OF_INPUT, &committed, size), None);
        // Watermark 150 s: [60, 120) is closed, [120, 180) is not.
        assert_eq!(resume_at(150_000, &committed, size), Some(120_000));
        assert_eq!(resume_at(120_000, &committed, size), Some(120_000));
        // No point committed yet: no window with data had closed, so the series starts at
        // its first window with data, as a fresh run's does.
        assert_eq!(resume_at(150_000, &[], size), None);
    }
}
