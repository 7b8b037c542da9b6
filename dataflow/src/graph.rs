//! The whole KPI graph of one worker, with its inputs and probe.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use clickflow_model::ChurnModel;
use clickflow_sources::{DeadLetter, EventTime, PartitionId};
use timely::dataflow::operators::vec::{Broadcast, Input, Map};
use timely::dataflow::operators::{Concat, Concatenate, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::worker::Worker;

use crate::alerts::alerting::alerting;
use crate::alerts::detect::DetectorConfig;
use crate::alerts::series::{resume_at, window_series, Rejected, SeriesInput, WindowPoint};
use crate::config::DataflowConfig;
use crate::conversion::{ordered_funnel, Sealing};
use crate::input::InputEvent;
use crate::kpi::churn::{ChurnScores, ScoringSetup};
use crate::kpi::funnel::Funnel;
use crate::kpi::gate::closed_window_gate;
use crate::kpi::sessions::{SessionRule, SessionStreams, Sessions};
use crate::kpi::split::{split_by_stage, StageInputs};
use crate::kpi::trends::EventTrends;
use crate::recs::recommendations;
use crate::runtime::output::{gather, Change, Deliver};
use crate::runtime::replay::replay_monitor;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::runtime::worker_rows::worker_rows;
use crate::Epoch;

/// The handles a worker feeds the graph through.
pub struct GraphInputs {
    /// Events accepted by their partition's clock.
    pub events: InputHandleVec<Epoch, InputEvent>,
    /// Payloads rejected at the source (undecodable, or late for their partition).
    pub dead_letters: InputHandleVec<Epoch, DeadLetter>,
    /// The same rejections, charged to their partition's clock (for the alert series).
    pub rejections: InputHandleVec<Epoch, Rejected>,
    /// Partition progress, once per epoch for every partition that changed.
    pub reports: InputHandleVec<Epoch, PartitionReport>,
    /// Models that replace the scoring model from the epoch they are sent in (worker 0
    /// sends them; without scoring nothing reads them).
    pub models: InputHandleVec<Epoch, Arc<ChurnModel>>,
    /// Tells which epochs the output has completely delivered.
    pub probe: ProbeHandle<Epoch>,
    /// The epoch by whose end no partition replays committed input any more, once this
    /// worker knows it (see [`crate::runtime::replay::replay_monitor`]).
    pub replayed: Rc<Cell<Option<Epoch>>>,
}

impl GraphInputs {
    /// Moves every input to `epoch`: everything earlier is now complete on this worker.
    pub fn advance_to(&mut self, epoch: Epoch) {
        self.events.advance_to(epoch);
        self.dead_letters.advance_to(epoch);
        self.rejections.advance_to(epoch);
        self.reports.advance_to(epoch);
        self.models.advance_to(epoch);
    }

    /// The epoch the inputs are at.
    pub fn epoch(&self) -> Epoch {
        *self.events.time()
    }
}

/// Where a worker's closed epochs go.
#[derive(Default)]
pub struct Outputs {
    /// Every closed epoch, gathered on worker 0 of process 0 (`None` elsewhere).
    pub gathered: Option<Deliver>,
    /// With a sink that writes from every worker: this worker's own row changes, offered
    /// here; the gathered epochs then carry only progress, retention and dead letters, and
    /// also announce how far the epochs are closed.
    pub own_rows: Option<Deliver>,
    /// Whether the live views' feeds (the recommender's session items, product names and
    /// popular products) are read: without a reader they are not built (see
    /// [`crate::recs::recommendations`]).
    pub live_views: bool,
}

/// What the alert stages need: the detectors' configuration, and the windows judged before
/// a restart (`window_series`, in window order), which rebuild them.
#[derive(Clone, Debug, Default)]
pub struct AlertSetup {
    /// Tuning and rules.
    pub config: DetectorConfig,
    /// The committed `window_series` rows.
    pub history: Arc<[WindowPoint]>,
}

/// Builds the KPI graph on `worker`. `partitions` lists every partition of the input, indexed
/// by the global partition index that events and reports carry; `committed_watermark` is the
/// watermark committed before a restart; `scoring`, when given, scores every open session;
/// `alerts` sets up the detectors; `outputs` receive the closed epochs.
///
/// ```text
///  events ─► gate ─► split ─┬─► event_trends ────┐
///                           ├─► funnel_summary ──┼─► gather (worker 0) ─► outputs.gathered
///                           ├─► session_features ┤   (or, with own_rows: rows ─► worker rows ─► outputs.own_rows
///                           │       │            │    on every worker; the rest ─► gather on worker 0)
///                           │       ├─► churn_scores (with a model) ◄─ models
///                           │       └─► funnel_conversion (the sessions' paths) ─┤
///                           └─► product_recommendations (+ session items, popular:   ┘
///                                                           outputs.live_views only)
///  trends, funnel, rejections ─► window_series ─► alerts ┘
///  reports ─broadcast─► every stateful stage (watermark), replay monitor
/// ```
pub fn build_graph(
    worker: &mut Worker,
    config: DataflowConfig,
    partitions: Arc<[PartitionId]>,
    committed_watermark: EventTime,
    scoring: Option<ScoringSetup>,
    alerts: AlertSetup,
    outputs: Outputs,
) -> GraphInputs {
    let seed = ProgressSeed {
        partitions: partitions.len(),
        committed_watermark,
    };
    let mut events = InputHandleVec::new();
    let mut dead_letters = InputHandleVec::new();
    let mut rejections = InputHandleVec::new();
    let mut reports = InputHandleVec::new();
    let mut models = InputHandleVec::new();
    let probe = ProbeHandle::new();
    let replayed = worker.dataflow_named::<Epoch, _, _>("clickflow", |scope| {
        let event_stream = scope.input_from(&mut events);
        let source_dead_letters = scope.input_from(&mut dead_letters);
        let rejection_stream = scope.input_from(&mut rejections);
        let local_reports = scope.input_from(&mut reports);
        let model_stream = scope.input_from(&mut models);
        let all_reports = local_reports.clone().broadcast();
        let replayed = replay_monitor(all_reports.clone(), seed.partitions);

        let judged = closed_window_gate(
            event_stream,
            all_reports.clone(),
            partitions.clone(),
            seed,
            config.window,
        );
        let StageInputs {
            dead_letters: gate_dead_letters,
            tallies,
            user_sightings,
            product_sightings,
            events: accepted,
        } = split_by_stage(judged, config.window, config.recommendations.is_some());
        let trends = tallies.event_trends(all_reports.clone(), seed);
        let funnel = user_sightings.funnel(config.window, all_reports.clone(), seed);
        let rule = SessionRule {
            gap_ms: config.session_gap_ms,
            window: config.window,
        };
        let sealing = Sealing {
            window: config.window,
            funnel_window_ms: config.funnel_window_ms,
        };
        let SessionStreams {
            rows: sessions,
            paths,
            retention,
        } = accepted.session_features(rule, sealing, all_reports.clone(), seed);
        let conversion = ordered_funnel(paths, all_reports.clone(), seed, sealing);
        let live_views = outputs.live_views;
        let recs = config
            .recommendations
            .zip(product_sightings)
            .map(|(recs, sightings)| {
                let reports = all_reports.clone();
                recommendations(sightings, reports, seed, recs, config.window, live_views)
            });

        let scores = scoring.map(|setup| {
            sessions
                .clone()
                .churn_scores(
                    setup,
                    retention.clone(),
                    model_stream,
                    all_reports.clone(),
                    seed,
                )
                .inner
                .map(|(row, _, diff)| Change::Score(row, diff))
        });
        let points = window_series(
            scope.concatenate([
                trends
                    .inner
                    .clone()
                    .map(|(row, _, diff)| SeriesInput::Trend(row, diff)),
                funnel
                    .inner
                    .clone()
                    .map(|(row, _, diff)| SeriesInput::Funnel(row, diff)),
                rejection_stream.map(SeriesInput::Rejected),
            ]),
            all_reports.clone(),
            seed,
            config.window,
            resume_at(committed_watermark, &alerts.history, config.window),
        );
        let alert_changes = alerting(
            points.clone(),
            all_reports.clone(),
            seed,
            alerts.config,
            alerts.history,
        );
        let mut retentions = vec![retention.clone()];
        let mut recs_changes = Vec::new();
        if let Some(recs) = recs {
            retentions.push(recs.retention);
            recs_changes.push(
                recs.neighbours
                    .inner
                    .map(|(row, _, diff)| Change::Recommendation(row, diff)),
            );
            if let Some(live) = recs.live {
                recs_changes.extend([
                    live.items
                        .inner
                        .map(|(item, _, diff)| Change::SessionItem(item, diff)),
                    live.names
                        .inner
                        .map(|(name, _, diff)| Change::ProductName(name, diff)),
                    live.popular
                        .inner
                        .map(|(row, _, diff)| Change::Popular(row, diff)),
                ]);
            }
        }
        let rows = scope.concatenate(
            scores.into_iter().chain(recs_changes).chain([
                conversion
                    .inner
                    .map(|(row, _, diff)| Change::Conversion(row, diff)),
                points.map(Change::Series),
                alert_changes.map(|(row, _, diff)| Change::Alert(row, diff)),
                trends.inner.map(|(row, _, diff)| Change::Trend(row, diff)),
                funnel.inner.map(|(row, _, diff)| Change::Funnel(row, diff)),
            ]),
        );
        let control = scope.concatenate([
            source_dead_letters
                .concat(gate_dead_letters)
                .map(Change::DeadLetter),
            local_reports.map(Change::Progress),
            scope.concatenate(retentions).map(Change::Retention),
        ]);
        let Outputs {
            gathered, own_rows, ..
        } = outputs;
        let (window, announce) = (config.window, own_rows.is_some());
        let gathered_changes = match own_rows {
            Some(own_rows) => {
                worker_rows(rows, sessions.inner, all_reports, seed, own_rows).probe_with(&probe);
                control
            }
            None => rows
                .concat(
                    sessions
                        .inner
                        .map(|(row, _, diff)| Change::Session(row, diff)),
                )
                .concat(control),
        };
        gather(
            gathered_changes,
            partitions,
            seed,
            window,
            gathered,
            announce,
        )
        .probe_with(&probe);
        replayed
    });
    GraphInputs {
        events,
        dead_letters,
        rejections,
        reports,
        models,
        probe,
        replayed,
    }
}
