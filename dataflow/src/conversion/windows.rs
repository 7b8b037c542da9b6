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
pub fn conversion_by_window<'scope>(
    paths: VecCollection<'scope, Epoch, (Window, Path)>,
) -> VecCollection<'scope, Epoch, ConversionRow> {
    paths
        .reduce_named("Funnel (ordered): per window", |window, paths, out| {
            let sessions: isize = paths.iter().map(|(_, count)| *count).sum();
            if sessions <= 0 {
                return;
            }
            let steps: [fn(&Path) -> Option<i64>; 3] = [|p| p.click, |p| p.cart, |p| p.purchase];
            let mut previous = sessions as i64;
            for (step, took) in EventType::ALL.into_iter().zip(steps) {
                let mut times: Vec<i64> = Vec::new();
                for (path, count) in paths {
                    if let Some(ms) = took(path) {
                        times.extend(std::iter::repeat_n(ms, (*count).max(0) as usize));
                    }
                }
                let reached = times.len() as i64;
                out.push((
                    ConversionRow {
                        window: *window,
                        step,
                        sessions: reached,
                        conversion_from_previous: (previous > 0)
                            .then(|| Measure(reached as f64 / previous as f64)),
                        median_ms_from_previous: lower_median(&mut times),
                    },
                    1,
                ));
                previous = reached;
            }
        })
        .map(|(_, row)| row)
}

/// The lower median (an even count's smaller middle value).
pub fn lower_median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let middle = (values.len() - 1) / 2;
    Some(*values.select_nth_unstable(middle).1)
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
