//! `funnel_conversion` rows per window of session start, and the sealing of final windows.

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::StreamVec;

use crate::conversion::paths::Path;
use crate::conversion::Sealing;
use crate::operators::{at_own_epochs, by_epoch};
use crate::rows::{ConversionRow, Measure};
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::window::Window;
use crate::Epoch;
use clickflow_sources::EventType;

/// The three rows (click, add_to_cart, purchase) of every window some session started in.
///
/// In two reductions: per window and step, over the times of the sessions that reached it
/// (`None` stands for the sessions' start, at time 0, whose count is the click's
/// denominator), its count and lower median; then per window, over those four summaries,
/// the rows. A session whose path reaches a new step changes one step's times, so only
/// that step's reduction runs again, over the distinct times of that step: sessions that
/// share a time are one value with a count (every session is one start at 0, and most
/// click at their first event). Until the thirtieth sitting one reduction per window
/// walked every path of the window three times, gathering each step's times into a vector
/// to select its median, whenever any of its sessions moved: at a steady rate the windows
/// of the last half hour are touched every epoch and hold ever more sessions (about 120k a
/// window at 14k events/s).
///
/// Measured on 8 December 2026 (`demo --rate 20000 --partitions 16 --profile-operators`,
/// 150 s, 14.3k events/s, alternating runs): the ordered funnel's operators busy 4.8 s
/// against 14.3 s. On a backlog, where each window is reduced once, they take a little
/// more (the side-by-side file: 0.04 s against 0.01 s), and `clickflow bench` peaked at
/// 361 MB in one run against 345–356 MB for the build before (the steps' updates wait in
/// the batcher before they consolidate).
pub fn conversion_by_window<'scope>(
    paths: VecCollection<'scope, Epoch, (Window, Path)>,
) -> VecCollection<'scope, Epoch, ConversionRow> {
    paths
        .flat_map(|(window, path)| {
            let steps = [
                (None, Some(0)),
                (Some(EventType::Click), path.click),
                (Some(EventType::AddToCart), path.cart),
                (Some(EventType::Purchase), path.purchase),
            ];
            steps
                .into_iter()
                .filter_map(move |(step, ms)| ms.map(|ms| ((window, step), ms)))
        })
        .reduce_named("Funnel (ordered): per window and step", |_, times, out| {
            let reached: isize = times.iter().map(|(_, count)| (*count).max(0)).sum();
            if reached > 0 {
                out.push(((reached as i64, lower_median(times, reached)), 1));
            }
        })
        .map(|((window, step), (reached, median))| (window, (step, reached, median)))
        .reduce_named("Funnel (ordered): per window", |window, steps, out| {
            let summary = |step: Option<EventType>| {
                steps
                    .iter()
                    .find(|((s, _, _), count)| *s == step && *count > 0)
                    .map_or((0, None), |((_, reached, median), _)| (*reached, *median))
            };
            let (sessions, _) = summary(None);
            if sessions <= 0 {
                return;
            }
            let mut previous = sessions;
            for step in EventType::ALL {
                let (reached, median) = summary(Some(step));
                out.push((
                    ConversionRow {
                        window: *window,
                        step,
                        sessions: reached,
                        conversion_from_previous: (previous > 0)
                            .then(|| Measure(reached as f64 / previous as f64)),
                        median_ms_from_previous: median,
                    },
                    1,
                ));
                previous = reached;
            }
        })
        .map(|(_, row)| row)
}

/// The lower median (an even count's smaller middle value) of `reached` times, given sorted
/// ascending, each with how many sessions took it (a count of zero or less counts none).
fn lower_median(times: &[(&i64, isize)], reached: isize) -> Option<i64> {
    let middle = (reached - 1) / 2;
    let mut seen = 0;
    times.iter().find_map(|(ms, count)| {
        seen += (*count).max(0);
        (seen > middle).then_some(**ms)
    })
}

/// `rows` without the changes to sealed windows: those rows are final in PostgreSQL, and
/// the changes that reach them are the retraction of their sessions' inputs.
pub fn unsealed<'scope>(
    rows: VecCollection<'scope, Epoch, ConversionRow>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    sealing: Sealing,
) -> VecCollection<'scope, Epoch, ConversionRow> {
    by_epoch(
        at_own_epochs(rows, "Funnel (ordered): at own epochs").inner,
        Pipeline,
        reports,
        seed,
        "Funnel (ordered): sealed windows",
        move |_epoch, changes, watermarks, out| {
            let closed_before = watermarks.before.max(seed.committed_watermark);
            for change in changes {
                if sealing.sealed_at(change.0.window.start) > closed_before {
                    out(change);
                }
            }
        },
    )
    .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_median_counts_each_time_as_often_as_sessions_took_it() {
        let median = |times: &[(i64, isize)]| {
            let borrowed: Vec<(&i64, isize)> = times.iter().map(|(t, c)| (t, *c)).collect();
            let reached = times.iter().map(|(_, c)| (*c).max(0)).sum();
            lower_median(&borrowed, reached)
        };
        assert_eq!(median(&[(5, 1)]), Some(5));
        // 0, 0, 0, 7: the lower of the two middle values.
        assert_eq!(median(&[(0, 3), (7, 1)]), Some(0));
        // 1, 2, 2, 9, 9, 9: the third of six.
        assert_eq!(median(&[(1, 1), (2, 2), (9, 3)]), Some(2));
        // 1, 2, 2, 9, 9, 9, 9: the fourth of seven.
        assert_eq!(median(&[(1, 1), (2, 2), (9, 4)]), Some(9));
        // A time no session took any more does not count.
        assert_eq!(median(&[(1, 0), (4, 1), (6, 1)]), Some(4));
        assert_eq!(median(&[]), None);
    }
}
