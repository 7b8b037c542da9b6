//! `alerts`: the detectors run over the closed windows, on worker 0.
//!
//! The judgement is a fold over the windows in order ([`Detector`]), which none of
//! differential's operators expresses: each window's verdict depends on the values before it
//! and on the lifecycle of the alert it may extend. So it is one timely operator holding one
//! [`Detector`], fed the points of [`crate::alerts::series`] epoch by epoch; its state is
//! bounded by the series times their history and season (see [`Detector::values_held`]).
//!
//! After a restart the detector first folds the `window_series` rows committed before it
//! (`history`, in window order), discarding what they say: its state is then what it was when
//! those windows were judged the first time, so open alerts go on (updated, resolved) under
//! the same ids, and nothing is raised twice.

use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::StreamVec;

use crate::alerts::detect::{Detector, DetectorConfig};
use crate::alerts::series::WindowPoint;
use crate::operators::by_epoch;
use crate::rows::AlertRow;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::Epoch;

/// The changes of `alerts` the closed windows `points` make, after folding `history` (the
/// windows closed before a restart) without output.
pub fn alerting<'scope>(
    points: StreamVec<'scope, Epoch, WindowPoint>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    config: DetectorConfig,
    history: Arc<[WindowPoint]>,
) -> StreamVec<'scope, Epoch, (AlertRow, Epoch, isize)> {
    let mut detector: Option<Detector> = None;
    let mut changes = Vec::new();
    by_epoch(
        points,
        Exchange::new(|_: &WindowPoint| 0),
        reports,
        seed,
        "Alerts: detectors",
        move |epoch, mut points, _watermarks, out| {
            if points.is_empty() {
                return;
            }
            let detector = detector.get_or_insert_with(|| rebuilt(&config, &history));
            points.sort_by_key(|p| p.window);
            for point in &points {
                detector.observe(point, &mut changes);
            }
            for (row, diff) in changes.drain(..) {
                out((row, epoch, diff));
            }
        },
    )
}

/// A detector that has judged `history` (its output was committed before).
pub fn rebuilt(config: &DetectorConfig, history: &[WindowPoint]) -> Detector {
    let mut detector = Detector::new(config.clone());
    let mut discarded = Vec::new();
    for point in history {
        detector.observe(point, &mut discarded);
        discarded.clear();
    }
    detector
}
