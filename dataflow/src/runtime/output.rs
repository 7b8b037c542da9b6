//! Gathering each closed epoch's changes into one [`EpochOutput`] for the sink.
//!
//! ```text
//!  trends ─┐
//!  funnel ─┤
//!  sessions┤
//!  scores ─┼─► Change ──exchange to worker 0──► Output: gather ──► deliver(EpochOutput)
//!  dead letters ─┤                               (once the frontier passes the epoch)
//!  partition reports ┘
//! ```
//!
//! Worker 0 of process 0 receives everything. When the frontier passes an epoch, the
//! epoch's changes are complete: they are consolidated (an insertion and a retraction of the
//! same row cancel), put in a deterministic order, and handed over together with the offsets
//! the epoch reached, so the sink can commit changes and offsets in one transaction.
//!
//! With a sink that writes from every worker, the table rows stay on the worker that made
//! them ([`crate::runtime::worker_rows`]) and only dead letters, progress and retention
//! travel here; the gathered epochs then also announce how far the epochs are closed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use clickflow_sources::{DeadLetter, EventTime, PartitionId};
use differential_dataflow::consolidation::consolidate;
use serde::{Deserialize, Serialize};
use timely::communication::Pull;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::channels::Message;
use timely::dataflow::operators::generic::{InputHandleCore, Operator};
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::alerts::series::WindowPoint;
use crate::rows::{
    AlertRow, ConversionRow, FunnelRow, PopularRow, ProductName, RecommendationRow, ScoreRow,
    SessionItem, SessionRow, TrendRow,
};
use crate::runtime::handoff::Offering;
use crate::runtime::replay::Retention;
use crate::runtime::watermark::{
    PartitionReport, ProgressSeed, WatermarkTracker, END_OF_INPUT, NO_WATERMARK,
};
use crate::window::WindowSize;
use crate::Epoch;

/// One change travelling to the gathering worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A change of `event_trends`.
    Trend(TrendRow, isize),
    /// A change of `funnel_summary`.
    Funnel(FunnelRow, isize),
    /// A change of `session_features`, shared with the churn stage
    /// ([`crate::kpi::sessions::SessionStreams::rows`]).
    Session(Arc<SessionRow>, isize),
    /// A change of `churn_scores`.
    Score(ScoreRow, isize),
    /// A closed window's final counts (`window_series`, insert only).
    Series(WindowPoint),
    /// A change of `alerts`.
    Alert(AlertRow, isize),
    /// A change of `product_recommendations`.
    Recommendation(RecommendationRow, isize),
    /// A change of the recommender's session items (live views only).
    SessionItem(SessionItem, isize),
    /// A change of the ids of the products the session items hold (live views only).
    ProductName(ProductName, isize),
    /// A change of the popular products (live views only).
    Popular(PopularRow, isize),
    /// A change of `funnel_conversion`.
    Conversion(ConversionRow, isize),
    /// A rejected payload.
    DeadLetter(DeadLetter),
    /// A partition's progress.
    Progress(PartitionReport),
    /// How far back a stage's state depends on events.
    Retention(Retention),
}

/// Where a partition stands after an epoch: what the sink stores to resume from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartitionState {
    /// The partition.
    pub partition: PartitionId,
    /// The next offset to read.
    pub next_offset: i64,
    /// The highest event time it has delivered (its clock).
    pub highest: Option<EventTime>,
}

/// Everything one closed epoch changed, ready to be committed as one transaction.
///
/// A writer's part of an epoch (with a sink that writes from every worker) holds rows only:
/// its watermark is [`NO_WATERMARK`] and it has no partitions, as in
/// [`EpochOutput::default`].
#[derive(Clone, Debug, PartialEq)]
pub struct EpochOutput {
    /// The epoch.
    pub epoch: Epoch,
    /// The pipeline watermark after the epoch.
    pub watermark: EventTime,
    /// True while the pipeline replays input whose output was committed before a restart:
    /// the sink must not apply such an epoch (its effects are already in the tables).
    pub replay: bool,
    /// The earliest event time the open windows and sessions depend on, over every
    /// partition (`None`: nothing is open). A restart counts users' histories up to it.
    pub retain_from: Option<EventTime>,
    /// The same for each partition of the input, of its own events: the start of the open
    /// windows, or the earliest event of it an open session holds when that is earlier. A
    /// restart replays each partition from a point before its own, so a partition whose
    /// sessions are all recent replays minutes, not the longest session's half hour.
    pub partition_retain_from: Vec<(PartitionId, Option<EventTime>)>,
    /// Consolidated changes of `event_trends`, retractions (`-1`) and insertions (`+1`).
    pub trends: Vec<(TrendRow, isize)>,
    /// Consolidated changes of `funnel_summary`.
    pub funnel: Vec<(FunnelRow, isize)>,
    /// Consolidated changes of `session_features`.
    pub sessions: Vec<(SessionRow, isize)>,
    /// Consolidated changes of `churn_scores` (empty when the pipeline runs without a model).
    pub scores: Vec<(ScoreRow, isize)>,
    /// Windows closed in this epoch, with their final counts, in window order.
    pub series: Vec<WindowPoint>,
    /// Consolidated changes of `alerts`.
    pub alerts: Vec<(AlertRow, isize)>,
    /// Consolidated changes of `product_recommendations`.
    pub recommendations: Vec<(RecommendationRow, isize)>,
    /// Consolidated changes of the recommender's session items: for the live views, not
    /// written to PostgreSQL.
    pub session_items: Vec<(SessionItem, isize)>,
    /// Consolidated changes of the ids of the products the session items hold: for the
    /// live views, not written.
    pub product_names: Vec<(ProductName, isize)>,
    /// Consolidated changes of the popular products: for the live views, not written.
    pub popular: Vec<(PopularRow, isize)>,
    /// Consolidated changes of `funnel_conversion`.
    pub conversion: Vec<(ConversionRow, isize)>,
    /// Payloads rejected in this epoch, ordered by partition and offset.
    pub dead_letters: Vec<DeadLetter>,
    /// Every partition that moved in this epoch.
    pub partitions: Vec<PartitionState>,
    /// Events accepted in this epoch, over all partitions.
    pub arrived: u64,
    /// When the earliest worker opened the epoch (Unix ms): an upper bound on how long its
    /// events have waited is the commit time minus this.
    pub opened_at_ms: Option<i64>,
    /// Every partition of the input has finished (the end of a file) by the end of this
    /// epoch: the epochs that follow carry no new input, only what the stages close and
    /// forget at the end, and a sink commits them together with this one: a backfill's
    /// last transaction would otherwise write every session still open and then, in the
    /// next, write each of them again, closed.
    pub input_ended: bool,
}

impl Default for EpochOutput {
    /// An epoch that changed nothing and says nothing of progress.
    fn default() -> EpochOutput {
        EpochOutput {
            epoch: 0,
            watermark: NO_WATERMARK,
            replay: false,
            retain_from: None,
            partition_retain_from: Vec::new(),
            trends: Vec::new(),
            funnel: Vec::new(),
            sessions: Vec::new(),
            scores: Vec::new(),
            series: Vec::new(),
            alerts: Vec::new(),
            recommendations: Vec::new(),
            session_items: Vec::new(),
            product_names: Vec::new(),
            popular: Vec::new(),
            conversion: Vec::new(),
            dead_letters: Vec::new(),
            partitions: Vec::new(),
            arrived: 0,
            opened_at_ms: None,
            input_ended: false,
        }
    }
}

impl EpochOutput {
    /// True when the epoch changed nothing at all.
    pub fn is_empty(&self) -> bool {
        self.trends.is_empty()
            && self.funnel.is_empty()
            && self.sessions.is_empty()
            && self.scores.is_empty()
            && self.series.is_empty()
            && self.alerts.is_empty()
            && self.recommendations.is_empty()
            && self.session_items.is_empty()
            && self.product_names.is_empty()
            && self.popular.is_empty()
            && self.conversion.is_empty()
            && self.dead_letters.is_empty()
            && self.partitions.is_empty()
    }

    /// Folds the next epoch into this one, as if both were one epoch: the later progress
    /// wins, and once [`EpochOutput::consolidate`]d their changes cancel where they undo each
    /// other (a row inserted by the first and retracted by the second). A sink behind its
    /// input commits several epochs as one transaction this way, writing each changed row
    /// once. Consolidating is left to the caller: it sorts everything so far, so a fold of
    /// many epochs does it once in a while rather than after each.
    pub fn append(&mut self, later: EpochOutput) {
        self.epoch = later.epoch;
        self.watermark = later.watermark;
        self.retain_from = later.retain_from;
        self.partition_retain_from = later.partition_retain_from;
        self.replay |= later.replay;
        self.input_ended |= later.input_ended;
        self.trends.extend(later.trends);
        self.funnel.extend(later.funnel);
        self.sessions.extend(later.sessions);
        self.scores.extend(later.scores);
        self.series.extend(later.series);
        self.alerts.extend(later.alerts);
        self.recommendations.extend(later.recommendations);
        self.session_items.extend(later.session_items);
        self.product_names.extend(later.product_names);
        self.popular.extend(later.popular);
        self.conversion.extend(later.conversion);
        self.dead_letters.extend(later.dead_letters);
        for state in later.partitions {
            match self
                .partitions
                .iter_mut()
                .find(|p| p.partition == state.partition)
            {
                Some(existing) => *existing = state,
                None => self.partitions.push(state),
            }
        }
        self.arrived += later.arrived;
        self.opened_at_ms = match (self.opened_at_ms, later.opened_at_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Cancels the row changes that undo each other and puts them in order.
    pub fn consolidate(&mut self) {
        consolidate_in_place(&mut self.trends);
        consolidate_in_place(&mut self.funnel);
        consolidate_in_place(&mut self.sessions);
        consolidate_in_place(&mut self.scores);
        self.series.sort_by_key(|p| p.window);
        consolidate_in_place(&mut self.alerts);
        consolidate_in_place(&mut self.recommendations);
        consolidate_in_place(&mut self.session_items);
        consolidate_in_place(&mut self.product_names);
        consolidate_in_place(&mut self.popular);
        consolidate_in_place(&mut self.conversion);
    }

    /// How many rows the epoch inserts or retracts, over all tables.
    pub fn row_changes(&self) -> usize {
        self.trends.len()
            + self.funnel.len()
            + self.sessions.len()
            + self.scores.len()
            + self.series.len()
            + self.alerts.len()
            + self.recommendations.len()
            + self.conversion.len()
            + self.dead_letters.len()
    }
}

/// What the consumer of closed epochs (the sink) says of one offered to it.
#[derive(Debug)]
pub enum Handoff {
    /// Taken.
    Taken,
    /// Not now (its queue is full): offered again later, and meanwhile the epoch is not
    /// complete for the pipeline, whose sources pause once enough epochs wait.
    Full(Box<EpochOutput>),
}

/// Receives each closed epoch's output, in epoch order; never blocks.
pub type Deliver = Box<dyn FnMut(EpochOutput) -> Handoff>;

/// Gathers `changes` on worker 0 and offers `deliver` each closed epoch that changed
/// something. Workers other than 0 (and processes other than 0) pass `None`. With
/// `announce`, `deliver` also hears how far the epochs are closed, as empty outputs (see
/// [`Offering`]): the coordinator of a sink that writes from every worker needs it.
///
/// The hand-off never blocks the worker: an epoch the consumer cannot take yet waits in the
/// operator, which keeps a capability for it, so the probe (and with it the sources'
/// back-pressure) sees the epoch as unfinished until it is taken.
pub fn gather<'scope>(
    changes: StreamVec<'scope, Epoch, Change>,
    partitions: Arc<[PartitionId]>,
    seed: ProgressSeed,
    window: WindowSize,
    deliver: Option<Deliver>,
    announce: bool,
) -> StreamVec<'scope, Epoch, ()> {
    let scope = changes.scope();
    changes.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        Exchange::new(|_: &Change| 0),
        "Output: gather",
        move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let mut offering = deliver.map(|d| Offering::new(d, activator, announce));
            let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Arriving)> = BTreeMap::new();
            let mut progress = Progress {
                tracker: WatermarkTracker::new(seed.partitions),
                committed: seed.committed_watermark,
                retention: HashMap::new(),
                window,
            };
            move |(input, frontier), output| {
                take_arrivals(input, output.output_index(), &mut pending, |c| c);
                while let Some(entry) = pending.first_entry() {
                    if frontier.frontier().less_equal(entry.key()) {
                        break;
                    }
                    let (epoch, (capability, arriving)) = entry.remove_entry();
                    let closed = arriving.assemble(epoch, &partitions, &mut progress);
                    if let Some(offering) = offering.as_mut().filter(|_| !closed.is_empty()) {
                        offering.push(capability, closed);
                    }
                }
                if let Some(offering) = offering.as_mut() {
                    offering.announce_closed_before(frontier.frontier());
                    offering.offer();
                }
            }
        },
    )
}

/// The changes of the epoch of `capability` arriving so far (the capability is kept with
/// them, for the output's hand-off).
fn arriving_at(
    pending: &mut BTreeMap<Epoch, (Capability<Epoch>, Arriving)>,
    capability: Capability<Epoch>,
) -> &mut Arriving {
    let (_, arriving) = pending
        .entry(*capability.time())
        .or_insert_with(|| (capability, Arriving::default()));
    arriving
}

/// Takes every batch waiting at `input` into the epoch it belongs to in `pending`, each
/// record made a [`Change`] by `change`, keeping a capability of each such epoch for the
/// operator's output `output`.
pub(crate) fn take_arrivals<D, P>(
    input: &mut InputHandleCore<Epoch, Vec<D>, P>,
    output: usize,
    pending: &mut BTreeMap<Epoch, (Capability<Epoch>, Arriving)>,
    change: impl Fn(D) -> Change,
) where
    P: Pull<Message<Epoch, Vec<D>>>,
{
    input.for_each_stamp(|stamp, batches| {
        if let Some(capability) = stamp.retain_least(output) {
            let arriving = arriving_at(pending, capability);
            for record in batches.flat_map(|b| b.drain(..)) {
                arriving.add(change(record));
            }
        }
    });
}

/// What the gathering worker knows across epochs.
struct Progress {
    tracker: WatermarkTracker,
    committed: EventTime,
    /// The latest retention of each (stage, worker), by partition.
    retention: HashMap<(String, usize), Vec<(u32, EventTime)>>,
    window: WindowSize,
}

impl Progress {
    /// The watermark, never behind the one committed before a restart.
    fn watermark(&self) -> EventTime {
        self.tracker.current().max(self.committed)
    }

    /// Where open windows begin (`None` at the end of the input: nothing is open). Open
    /// windows end after the watermark, so start after it minus a window, and hold events of
    /// every partition.
    fn windows_from(&self) -> Option<EventTime> {
        let watermark = self.watermark();
        (watermark != END_OF_INPUT).then(|| watermark.saturating_sub(self.window.millis()))
    }

    /// The earliest event time open state depends on: the open windows' start, or an open
    /// session's, when earlier.
    fn retain_from(&self) -> Option<EventTime> {
        let windows = self.windows_from()?;
        Some(
            self.retention
                .values()
                .flatten()
                .fold(windows, |a, &(_, since)| a.min(since)),
        )
    }

    /// [`Progress::retain_from`] per partition, of that partition's events only.
    fn partition_retain_from(
        &self,
        partitions: &[PartitionId],
    ) -> Vec<(PartitionId, Option<EventTime>)> {
        let windows = self.windows_from();
        let mut earliest: Vec<Option<EventTime>> = vec![windows; partitions.len()];
        if windows.is_some() {
            for &(partition, since) in self.retention.values().flatten() {
                if let Some(Some(at)) = earliest.get_mut(partition as usize) {
                    *at = (*at).min(since);
                }
            }
        }
        partitions.iter().cloned().zip(earliest).collect()
    }
}

/// One epoch's changes as they reach the gathering worker, already sorted by table, so the
/// epoch is never held twice (as changes and as tables). The row changes are consolidated
/// whenever they have doubled since the last time, which keeps an epoch that retracts and
/// re-inserts many rows near the size of its net effect.
#[derive(Default)]
pub(crate) struct Arriving {
    rows: ArrivingRows,
    dead_letters: Vec<DeadLetter>,
    reports: Vec<PartitionReport>,
    retention: Vec<Retention>,
}

/// The row changes of every table, as they arrive.
#[derive(Default)]
struct ArrivingRows {
    trends: Consolidating<TrendRow>,
    funnel: Consolidating<FunnelRow>,
    /// Not consolidated as they come: the rows are shared with the churn stage until it has
    /// scored the epoch, and sorting them would read two rows from the heap for every
    /// comparison. The session stage emits each row of an epoch once, so nothing would
    /// cancel before the epoch is complete, and by then the churn stage has let go of its
    /// rows (it keeps copies of the open ones).
    sessions: Vec<(Arc<SessionRow>, isize)>,
    scores: Consolidating<ScoreRow>,
    series: Vec<WindowPoint>,
    alerts: Consolidating<AlertRow>,
    recommendations: Consolidating<RecommendationRow>,
    session_items: Consolidating<SessionItem>,
    product_names: Consolidating<ProductName>,
    popular: Consolidating<PopularRow>,
    conversion: Consolidating<ConversionRow>,
}

impl ArrivingRows {
    /// An output holding these rows (and nothing of progress).
    fn finish(self) -> EpochOutput {
        let mut series = self.series;
        series.sort_by_key(|p| p.window);
        EpochOutput {
            trends: self.trends.finish(),
            funnel: self.funnel.finish(),
            sessions: {
                let mut sessions: Vec<(SessionRow, isize)> = self
                    .sessions
                    .into_iter()
                    .map(|(row, diff)| (Arc::unwrap_or_clone(row), diff))
                    .collect();
                consolidate_in_place(&mut sessions);
                sessions
            },
            scores: self.scores.finish(),
            series,
            alerts: self.alerts.finish(),
            recommendations: self.recommendations.finish(),
            session_items: self.session_items.finish(),
            product_names: self.product_names.finish(),
            popular: self.popular.finish(),
            conversion: self.conversion.finish(),
            ..EpochOutput::default()
        }
    }
}

/// Cancels the changes of `changes` that undo each other and sorts the rest, like
/// differential's `consolidate`, which it calls after sorting in place: `consolidate` sorts
/// stably, with a scratch buffer half the vector's size that an already sorted vector leaves
/// untouched, so it never becomes resident. `clickflow bench` (6 December 2026; the session
/// rows and scores of its one epoch need 16 and 21 MB of scratch): peak RSS 403–404 MB
/// against 414–416 MB, no slower.
pub fn consolidate_in_place<R: Ord>(changes: &mut Vec<(R, isize)>) {
    changes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    consolidate(changes);
}

/// [`consolidate_in_place`] for rows shared through an [`Arc`], which sorting would read
/// from wherever they lie on the heap, twice for every comparison (an epoch's 136,000
/// session rows on a worker take about 17 comparisons each). They are sorted by `key`,
/// computed once for each row and kept beside it; only the few rows of one key, next to
/// each other then, are compared whole. The result is consolidated but ordered by key
/// first. Until the twenty-ninth sitting the key was computed again for every pair of
/// neighbours, and the churn stage's key cloned the session's id each time.
pub fn consolidate_shared<R: Ord, K: Ord>(
    changes: &mut Vec<(Arc<R>, isize)>,
    key: impl Fn(&R) -> K,
) {
    let mut keyed: Vec<(K, Arc<R>, isize)> = changes
        .drain(..)
        .map(|(row, diff)| (key(&row), row, diff))
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for run in keyed.chunk_by_mut(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            run.sort_unstable_by(|a, b| a.1.cmp(&b.1));
        }
    }
    keyed.dedup_by(|later, earlier| {
        // Rows of different keys differ: only neighbours of one key are read whole.
        let same = later.0 == earlier.0 && later.1 == earlier.1;
        if same {
            earlier.2 += later.2;
        }
        same
    });
    changes.extend(
        keyed
            .into_iter()
            .filter(|(_, _, diff)| *diff != 0)
            .map(|(_, row, diff)| (row, diff)),
    );
}

/// Row changes that consolidate themselves as they grow.
struct Consolidating<R> {
    changes: Vec<(R, isize)>,
    /// The length after the last consolidation.
    settled: usize,
}

impl<R> Default for Consolidating<R> {
    fn default() -> Self {
        Consolidating {
            changes: Vec::new(),
            settled: 0,
        }
    }
}

impl<R: Ord> Consolidating<R> {
    /// Consolidates once this many changes have come since the last time, at least.
    const MIN_GROWTH: usize = 64 * 1024;

    fn push(&mut self, row: R, diff: isize) {
        self.changes.push((row, diff));
        if self.changes.len() >= (2 * self.settled).max(Self::MIN_GROWTH) {
            self.consolidate();
            self.settled = self.changes.len();
        }
    }

    fn finish(mut self) -> Vec<(R, isize)> {
        self.consolidate();
        self.changes
    }

    fn consolidate(&mut self) {
        consolidate_in_place(&mut self.changes);
    }
}

impl Arriving {
    pub(crate) fn add(&mut self, change: Change) {
        match change {
            Change::Trend(row, diff) => self.rows.trends.push(row, diff),
            Change::Funnel(row, diff) => self.rows.funnel.push(row, diff),
            Change::Session(row, diff) => self.rows.sessions.push((row, diff)),
            Change::Score(row, diff) => self.rows.scores.push(row, diff),
            Change::Series(point) => self.rows.series.push(point),
            Change::Alert(row, diff) => self.rows.alerts.push(row, diff),
            Change::Recommendation(row, diff) => self.rows.recommendations.push(row, diff),
            Change::SessionItem(item, diff) => self.rows.session_items.push(item, diff),
            Change::ProductName(name, diff) => self.rows.product_names.push(name, diff),
            Change::Popular(row, diff) => self.rows.popular.push(row, diff),
            Change::Conversion(row, diff) => self.rows.conversion.push(row, diff),
            Change::DeadLetter(letter) => self.dead_letters.push(letter),
            Change::Progress(report) => self.reports.push(report),
            Change::Retention(retention) => self.retention.push(retention),
        }
    }

    /// The epoch's row changes alone, for a writer of this worker's keys: `replay` as the
    /// gathering worker decides it ([`WatermarkTracker::all_replayed`] before the epoch's
    /// reports), which `tracker` follows from the same reports.
    pub(crate) fn into_rows(self, epoch: Epoch, tracker: &mut WatermarkTracker) -> EpochOutput {
        let mut output = self.rows.finish();
        output.epoch = epoch;
        output.replay = !tracker.all_replayed();
        for report in self.reports {
            tracker.update(report);
        }
        output.input_ended = tracker.advance() == END_OF_INPUT;
        output
    }

    fn assemble(
        self,
        epoch: Epoch,
        partitions: &[PartitionId],
        progress: &mut Progress,
    ) -> EpochOutput {
        let mut output = EpochOutput {
            epoch,
            dead_letters: self.dead_letters,
            ..self.rows.finish()
        };
        // As in the stages: an epoch belongs to the replay unless the replay was over
        // before it.
        output.replay = !progress.tracker.all_replayed();
        let mut moved: HashMap<u32, (i64, Option<EventTime>)> = HashMap::new();
        for report in self.reports {
            output.arrived += report.arrived;
            output.opened_at_ms = Some(
                output
                    .opened_at_ms
                    .map_or(report.opened_at_ms, |t| t.min(report.opened_at_ms)),
            );
            let state = moved
                .entry(report.partition)
                .or_insert((report.next_offset, report.highest));
            *state = (state.0.max(report.next_offset), state.1.max(report.highest));
            progress.tracker.update(report);
        }
        for retention in self.retention {
            progress
                .retention
                .insert((retention.stage, retention.worker), retention.since);
        }
        progress.tracker.advance();
        output.watermark = progress.watermark();
        // From the reports alone, as each worker's own rows decide it (`into_rows`): a
        // restart after the end was committed replays, and replayed epochs are not written.
        output.input_ended = progress.tracker.current() == END_OF_INPUT;
        output.retain_from = progress.retain_from();
        output.partition_retain_from = progress.partition_retain_from(partitions);
        output
            .dead_letters
            .sort_by(|a, b| (&a.partition, a.offset).cmp(&(&b.partition, b.offset)));
        output.partitions = moved
            .into_iter()
            .filter_map(|(index, (next_offset, highest))| {
                let partition = partitions.get(index as usize)?.clone();
                Some(PartitionState {
                    partition,
                    next_offset,
                    highest,
                })
            })
            .collect();
        output.partitions.sort();
        output
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::{consolidate_in_place, consolidate_shared};

    proptest! {
        /// Consolidating shared rows by key first leaves the same changes as consolidating
        /// the rows themselves: every row's diffs summed, the rows that sum to zero gone.
        #[test]
        fn shared_rows_consolidate_as_owned_ones(
            changes in proptest::collection::vec(((0u8..4, 0u8..4), -2isize..3), 0..40)
        ) {
            let mut owned = changes.clone();
            consolidate_in_place(&mut owned);
            let mut shared: Vec<((u8, u8), isize)> = {
                let mut shared: Vec<(Arc<(u8, u8)>, isize)> = changes
                    .into_iter()
                    .map(|(row, diff)| (Arc::new(row), diff))
                    .collect();
                consolidate_shared(&mut shared, |&(key, _)| key);
                shared.into_iter().map(|(row, diff)| (*row, diff)).collect()
            };
            shared.sort();
            prop_assert_eq!(shared, owned);
        }
    }
}
