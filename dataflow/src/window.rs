//! Tumbling event-time windows, aligned to the Unix epoch.

use clickflow_sources::EventTime;
use serde::{Deserialize, Serialize};

/// One tumbling window `[start, end)` of event time, in Unix milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First millisecond inside the window.
    pub start: EventTime,
    /// First millisecond after the window.
    pub end: EventTime,
}

/// A window named by its start alone, for keys kept where the window's length is known
/// beside them ([`WindowSize::window_at`]): 8 bytes where a [`Window`] takes 16. It routes
/// as its window does ([`crate::operators::RouteKey`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowStart(pub EventTime);

/// The length of the tumbling windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSize {
    millis: i64,
}

impl WindowSize {
    /// Windows of `millis` milliseconds (at least one).
    pub fn from_millis(millis: i64) -> WindowSize {
        WindowSize {
            millis: millis.max(1),
        }
    }

    /// The length in milliseconds.
    pub fn millis(self) -> i64 {
        self.millis
    }

    /// The window that starts at `start`.
    pub fn window_at(self, WindowStart(start): WindowStart) -> Window {
        Window {
            start,
            end: start + self.millis,
        }
    }

    /// The window that contains `ts`.
    pub fn window_of(self, ts: EventTime) -> Window {
        let start = ts.div_euclid(self.millis) * self.millis;
        Window {
            start,
            end: start + self.millis,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_time_lies_in_its_window(ts in -4_000_000_000_000i64..4_000_000_000_000, size in 1i64..86_400_000) {
            let window = WindowSize::from_millis(size).window_of(ts);
            prop_assert!(window.start <= ts && ts < window.end);
            prop_assert_eq!(window.end - window.start, size);
            prop_assert_eq!(window.start.rem_euclid(size), 0);
            prop_assert_eq!(WindowSize::from_millis(size).window_at(WindowStart(window.start)), window);
        }
    }
}
