//! A user's history as the churn model sees it: their sessions that were final before a
//! given session started.
//!
//! `history(S)` counts the user's sessions whose final time (the watermark at which they
//! closed: the end of the window holding `last_event + gap`, see [`crate::kpi::sessions`]) is at
//! or before `S`, and their purchases. It depends on event times only, so the same input
//! gives the same history whatever the epochs, the workers or the arrival order.
//!
//! Kept per user as a folded total plus the few recent sessions that some open session may
//! still have to leave out. A session closed at `f` can be folded once no session that
//! could still be scored starts before `f`: every open session starts at or after the
//! earliest start the session stage holds, and every event still to come is later than
//! `W - window` (an earlier one would be in a closed window, hence late). So entries with
//! `f <= min(earliest open start, W - window)` fold, and a user's state stays a few words.

use clickflow_model::UserHistory;
use clickflow_sources::EventTime;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// One user's closed sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Sessions folded in: they count for every session still to be scored.
    pub folded: UserHistory,
    /// Sessions not folded yet: `(final time, purchases)`.
    pub recent: SmallVec<[(EventTime, i64); 2]>,
}

impl History {
    /// Records a session final at `final_at` with `purchases` purchases.
    pub fn add(&mut self, final_at: EventTime, purchases: i64) {
        self.recent.push((final_at, purchases));
    }

    /// The history known when a session starting at `start` began.
    pub fn at(&self, start: EventTime) -> UserHistory {
        let mut known = self.folded;
        for &(final_at, purchases) in &self.recent {
            if final_at <= start {
                known.sessions += 1;
                known.purchases += purchases;
            }
        }
        known
    }

    /// Folds every recent session final at or before `safe` (see the module docs).
    pub fn fold(&mut self, safe: EventTime) {
        let folded = &mut self.folded;
        self.recent.retain(|&mut (final_at, purchases)| {
            let old = final_at <= safe;
            if old {
                folded.sessions += 1;
                folded.purchases += purchases;
            }
            !old
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sessions_final_before_the_start_count_and_folding_keeps_the_answers() {
        let mut history = History::default();
        history.add(100, 1);
        history.add(200, 0);
        history.add(300, 2);
        let ask = |h: &History| [99, 100, 250, 300, 1000].map(|s| h.at(s));
        let before = ask(&history);
        assert_eq!(before[0], UserHistory::default());
        assert_eq!(
            before[1],
            UserHistory {
                sessions: 1,
                purchases: 1
            }
        );
        assert_eq!(
            before[2],
            UserHistory {
                sessions: 2,
                purchases: 1
            }
        );
        assert_eq!(
            before[4],
            UserHistory {
                sessions: 3,
                purchases: 3
            }
        );
        // Folding up to 200 changes no answer for starts at or after 200.
        history.fold(200);
        assert_eq!(history.recent.len(), 1);
        assert_eq!(&ask(&history)[2..], &before[2..]);
    }
}
