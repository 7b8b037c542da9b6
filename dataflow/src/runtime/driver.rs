//! The loop each worker runs: read the source, judge lateness, feed the graph, cut epochs.
//!
//! ```text
//!  loop {
//!      poll the source (never waits) ─► partition clock ─► events / dead letters
//!      every epoch (wall clock): report changed partitions, advance the inputs,
//!                                pause while the sink is more than N epochs behind
//!  }
//!  end of input or stop request: report, close the inputs, run the graph dry
//! ```
//!
//! Until every partition of every worker has replayed its committed input (see
//! [`crate::runtime::replay`]), each partition is held at its committed offset.
//!
//! **Failures.** A retriable source error (a broker unreachable, a partition leader moving)
//! is logged, counted in [`PipelineMetrics::source_retries`] and retried with a doubling
//! backoff (100 ms up to 5 s) while the graph keeps running. A fatal one sets the shared stop
//! flag, so that every worker of the process closes its epoch and stops (what was committed
//! stays consistent with its offsets), and this worker returns the error: the run fails with
//! it. No worker ever leaves the others running without it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickflow_sources::encode::encode;
use clickflow_sources::{
    DeadLetter, PartitionId, RejectKind, Rejection, Source, SourceBatch, SourceError,
};
use timely::worker::Worker;

use crate::alerts::series::Rejected;
use crate::config::{DataflowConfig, EpochConfig};
use crate::graph::GraphInputs;
use crate::input::InputEvent;
use crate::lifecycle::LiveModel;
use crate::metrics::PipelineMetrics;
use crate::runtime::lateness::PartitionClock;
use crate::runtime::resume::PartitionResume;
use crate::runtime::watermark::PartitionReport;
use crate::Epoch;

/// What one worker did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriveStats {
    /// Events accepted into the graph.
    pub events: u64,
    /// Payloads rejected at the source (decode failures and late events).
    pub dead_letters: u64,
    /// Of those, events late for their partition.
    pub late: u64,
    /// Epochs closed.
    pub epochs: u64,
}

/// The state of one partition this worker reads.
struct LocalPartition {
    global: u32,
    clock: PartitionClock,
    next_offset: i64,
    committed: Option<i64>,
    finished: bool,
    caught_up_since: Option<Instant>,
    changed: bool,
    reported_idle: bool,
    /// Events accepted since the last report.
    arrived: u64,
}

impl LocalPartition {
    fn replaying(&self) -> bool {
        let behind = self
            .committed
            .is_some_and(|committed| self.next_offset < committed);
        // A partition caught up below its committed offset lost data to retention: there is
        // nothing more to replay.
        behind && !self.finished && self.caught_up_since.is_none()
    }
}

/// What every worker's loop shares.
#[derive(Clone, Debug)]
pub struct DriveSettings {
    /// Windows, lateness, sessions.
    pub dataflow: DataflowConfig,
    /// Epochs and pacing.
    pub epochs: EpochConfig,
    /// Set to stop after the current epoch.
    pub stop: Arc<AtomicBool>,
    /// Counters to add to.
    pub metrics: Arc<PipelineMetrics>,
    /// On worker 0 with a model: replacement models to send into the dataflow.
    pub models: Option<LiveModel>,
}

/// Runs `source` through the graph behind `inputs` until the source is finished or the stop
/// flag is set; then closes the inputs and steps the worker until every epoch is delivered.
/// `owned[i]` is the global index and start of the source's `i`-th partition.
pub fn drive(
    worker: &mut Worker,
    mut inputs: GraphInputs,
    source: &mut dyn Source,
    owned: &[(u32, PartitionResume)],
    settings: &DriveSettings,
) -> Result<DriveStats, SourceError> {
    let DriveSettings {
        dataflow,
        epochs,
        stop,
        metrics,
        models,
    } = settings;
    let mut partitions: Vec<LocalPartition> = owned
        .iter()
        .map(|&(global, start)| LocalPartition {
            global,
            clock: PartitionClock::seeded(start.highest),
            next_offset: start.start.unwrap_or(0),
            committed: start.committed,
            finished: false,
            caught_up_since: None,
            changed: true,
            reported_idle: false,
            arrived: 0,
        })
        .collect();
    // Hold every partition at its committed offset until the replay is over everywhere.
    for (i, partition) in partitions.iter().enumerate() {
        if let Err(error) = source.set_limit(i, Some(partition.committed.unwrap_or(-1))) {
            return abandon(worker, inputs, stop, error);
        }
    }
    let mut holding = true;
    let mut retry = Retry::default();
    let mut failure = None;
    let mut stats = DriveStats::default();
    let mut batch = SourceBatch::default();
    let mut epoch_started = Instant::now();
    let mut epoch_messages = 0;
    let mut epoch_opened_ms = unix_millis();
    loop {
        if holding && lifts_hold(inputs.replayed.get(), inputs.epoch(), epochs) {
            holding = false;
            for i in 0..partitions.len() {
                if let Err(error) = source.set_limit(i, None) {
                    return abandon(worker, inputs, stop, error);
                }
            }
        }
        batch.clear();
        let polled = if retry.due() {
            source.poll(&mut batch, epochs.poll_batch)
        } else {
            Ok(())
        };
        let idle_poll = batch.is_empty();
        let batch_messages = batch.events.len() + batch.dead_letters.len();
        // A full poll means input is waiting; a backlogged source says so itself (a fast
        // broker often hands over less than a full poll while far behind). An epoch that
        // has read nothing while the replay hold is on only carries the reports that end
        // the hold: stretched to a backlog's length, it stalled every start by that much.
        let waiting_for_replay = holding && epoch_messages + batch_messages == 0;
        let catching_up =
            !waiting_for_replay && (batch_messages >= epochs.poll_batch || source.backlogged());
        let before = stats;
        feed(
            &mut batch,
            source.partitions(),
            &mut partitions,
            &mut inputs,
            dataflow,
            &mut stats,
        );

        let retried_by_client = source.take_retried_errors();
        if retried_by_client > 0 {
            metrics
                .source_retries
                .fetch_add(retried_by_client, Ordering::Relaxed);
        }
        match polled {
            Ok(()) => retry.succeeded(!idle_poll),
            Err(error) if error.is_retriable() => {
                metrics.source_retries.fetch_add(1, Ordering::Relaxed);
                let pause = retry.failed();
                tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "source error; retrying");
            }
            Err(error) => {
                tracing::error!(%error, "source failed; stopping every worker");
                stop.store(true, Ordering::Relaxed);
                failure = Some(error);
            }
        }
        metrics
            .events
            .fetch_add(stats.events - before.events, Ordering::Relaxed);
        metrics
            .dead_letters
            .fetch_add(stats.dead_letters - before.dead_letters, Ordering::Relaxed);
        metrics
            .late
            .fetch_add(stats.late - before.late, Ordering::Relaxed);
        epoch_messages += batch_messages;
        let finished = source.is_finished() && !holding;
        let stopping = stop.load(Ordering::Relaxed);
        let due = if waiting_for_replay {
            HELD_EPOCH.min(epochs.epoch)
        } else if catching_up {
            epochs.catch_up_epoch.max(epochs.epoch)
        } else {
            epochs.epoch
        };
        let open = OpenEpoch {
            elapsed: epoch_started.elapsed(),
            messages: epoch_messages,
            catching_up,
        };
        let over = open.is_over(due, epochs.max_epoch_messages, || {
            source.remaining_messages()
        });
        if over || finished || stopping {
            tracing::debug!(
                epoch = inputs.epoch(),
                messages = epoch_messages,
                elapsed_ms = open.elapsed.as_millis() as u64,
                catching_up,
                finished,
                "closing an epoch"
            );
            epoch_messages = 0;
            // A replaced model scores from this epoch on, on every worker.
            if let Some(live) = models {
                for model in live.take_pending() {
                    inputs.models.send(model);
                }
            }
            report(
                &mut partitions,
                &mut inputs,
                dataflow,
                epochs.idle_timeout,
                epoch_opened_ms,
            );
            let next = inputs.epoch() + 1;
            inputs.advance_to(next);
            stats.epochs += 1;
            epoch_started = Instant::now();
            epoch_opened_ms = unix_millis();
            // Back-pressure: let the sink catch up rather than buffer without bound.
            let oldest_allowed = next.saturating_sub(epochs.max_epochs_in_flight);
            while inputs.probe.less_than(&oldest_allowed) {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
            if finished || stopping {
                break;
            }
        }
        if idle_poll {
            worker.step_or_park(Some(Duration::from_millis(1)));
        } else {
            worker.step();
        }
    }
    let probe = inputs.probe.clone();
    drop(inputs);
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
    failure.map_or(Ok(stats), Err)
}

/// Whether the replay hold lifts in epoch `now`, the replay being over by the end of epoch
/// `replayed` (once this worker knows it). Every worker lifts it in the same epoch, a few
/// past `replayed`: a worker that lifted it as soon as it learned read its first backlog
/// into the epoch it happened to be in, often one past another worker's, and two epochs
/// of half the input each wrote every session twice, open and then closed (`bench
/// --source kafka`: 904k rows in 2 transactions for 632k in one, in about half the runs).
/// A worker learns of `replayed` at the latest when back-pressure lets it open an epoch
/// [`EpochConfig::max_epochs_in_flight`] past it, so the epoch after that is one no worker
/// has passed yet; should one have, it lifts the hold at once. A start waits that many
/// more epochs before reading, each [`HELD_EPOCH`] long.
fn lifts_hold(replayed: Option<Epoch>, now: Epoch, epochs: &EpochConfig) -> bool {
    replayed.is_some_and(|over| now >= over + epochs.max_epochs_in_flight + 2)
}

/// The length of an epoch that has read nothing while the replay hold is on (1 ms, or
/// `epoch` when that is shorter). Such an epoch carries only the partition reports that end
/// the hold and the epochs [`lifts_hold`] waits out, so its length is pure delay: at 50 ms
/// every start (a fresh one included, with nothing to replay) waited 0.3 s before reading
/// its first event (six epochs), a twelfth of the side-by-side run. An epoch that reads
/// something (a replay) keeps the usual length, and back-pressure still bounds how far
/// ahead of the slowest worker the empty ones run. A short hold is safe for a topic filled
/// before the start only because the source counts what it held at the start as a backlog
/// ([`Source::backlogged`]): the hold then lifts before the consumers' first fetches have
/// come, and an epoch judged by those alone was cut after 50 ms with a few dozen messages,
/// leaving the backlog to two epochs (every session and score written twice).
const HELD_EPOCH: Duration = Duration::from_millis(1);

/// How much of a full epoch's length the rest of a source may be and still be read into it
/// (a quarter). An epoch cut by [`EpochConfig::max_epoch_messages`] a few lines before the
/// end of a file left those lines for an epoch of their own, the one that reaches the end of
/// the input and closes every open session: the sink then wrote each open session and its
/// score twice, open and then closed (`clickflow bench`: 2M events, a million a worker and
/// an epoch, a thousand lines left each; 1.1M rows written for 535k). Reading on to the end
/// lets the epoch that holds the data reach the end too, and its rows are written once. The
/// same holds for a topic filled before the pipeline starts (`bench --source kafka`: one
/// worker's partitions held 1,000,685 of its messages), and for a backlog epoch cut by its
/// length ([`EpochConfig::catch_up_epoch`]) near the end (a slower machine's bench).
const TAIL_OF_A_FULL_EPOCH: usize = 4;

/// What the open epoch has done so far.
struct OpenEpoch {
    elapsed: Duration,
    messages: usize,
    /// Whether the source is working through a backlog.
    catching_up: bool,
}

impl OpenEpoch {
    /// Whether the epoch is over, for a length of `due` and a limit of `max` messages, from
    /// a source with about `remaining()` messages left: at either, unless the source is
    /// within a [`TAIL_OF_A_FULL_EPOCH`] of `max` of its end (for the length: while it reads
    /// a backlog, whose end then ends the epoch); at twice either in any case, since the
    /// rest is an estimate (a file's later lines may be shorter, a topic grows while it is
    /// read) and the two bound an epoch's memory and its wait.
    fn is_over(&self, due: Duration, max: usize, remaining: impl Fn() -> Option<usize>) -> bool {
        let near_end = || remaining().is_some_and(|left| left <= max / TAIL_OF_A_FULL_EPOCH);
        let full = self.messages >= max.saturating_mul(2) || (self.messages >= max && !near_end());
        let late = self.elapsed >= due.saturating_mul(2)
            || (self.elapsed >= due && !(self.catching_up && near_end()));
        full || late
    }
}

/// Gives up on a worker's input after a fatal `error`: stops every worker (the shared stop
/// flag), closes this worker's inputs and runs the graph dry, so the other workers finish
/// their epochs instead of waiting for this one. Returns the error.
pub fn abandon(
    worker: &mut Worker,
    inputs: GraphInputs,
    stop: &AtomicBool,
    error: SourceError,
) -> Result<DriveStats, SourceError> {
    tracing::error!(%error, "source failed; stopping every worker");
    stop.store(true, Ordering::Relaxed);
    let probe = inputs.probe.clone();
    drop(inputs);
    while !probe.done() {
        worker.step_or_park(Some(Duration::from_millis(1)));
    }
    Err(error)
}

/// When to poll a source again after a retriable error.
#[derive(Debug, Default)]
struct Retry {
    /// The pause after the last failure (`None`: no failure since the last success).
    backoff: Option<Duration>,
    /// No poll before this.
    next: Option<Instant>,
}

impl Retry {
    const FIRST: Duration = Duration::from_millis(100);
    const LONGEST: Duration = Duration::from_secs(5);

    fn due(&self) -> bool {
        self.next.is_none_or(|next| Instant::now() >= next)
    }

    /// Records a failure; returns how long to wait before the next poll.
    fn failed(&mut self) -> Duration {
        let pause = self
            .backoff
            .map_or(Self::FIRST, |b| (b * 2).min(Self::LONGEST));
        self.backoff = Some(pause);
        self.next = Some(Instant::now() + pause);
        pause
    }

    /// Records a poll that worked; one that delivered something ends the backoff.
    fn succeeded(&mut self, delivered: bool) {
        self.next = None;
        if delivered {
            self.backoff = None;
        }
    }
}

/// Sends a payload the source rejected, charged to `clock` (its partition's, when it was
/// read; nothing is charged before the partition's first event).
fn send_rejected(
    letter: DeadLetter,
    clock: &PartitionClock,
    inputs: &mut GraphInputs,
    stats: &mut DriveStats,
) {
    stats.dead_letters += 1;
    if let Some(at) = clock.highest() {
        inputs.rejections.send(Rejected { at, late: false });
    }
    inputs.dead_letters.send(letter);
}

/// Judges and sends one polled batch.
///
/// Every rejected payload is also charged to its partition's clock as it stood when the
/// payload was read, for the alert series (see [`crate::alerts::series`]): the source's
/// rejections are put back between the partition's events by offset, so the charge depends
/// on the partition's order alone, never on where a poll ended.
fn feed(
    batch: &mut SourceBatch,
    names: &[PartitionId],
    partitions: &mut [LocalPartition],
    inputs: &mut GraphInputs,
    config: &DataflowConfig,
    stats: &mut DriveStats,
) {
    // The source's rejections per local partition, the latest offset first.
    let mut rejected: Vec<Vec<DeadLetter>> = vec![Vec::new(); partitions.len()];
    for letter in batch.dead_letters.drain(..) {
        match names.iter().position(|name| *name == letter.partition) {
            Some(local) => rejected[local].push(letter),
            None => {
                stats.dead_letters += 1;
                inputs.dead_letters.send(letter);
            }
        }
    }
    for letters in &mut rejected {
        letters.sort_by_key(|letter| std::cmp::Reverse(letter.offset));
    }
    for sourced in batch.events.drain(..) {
        let partition = &mut partitions[sourced.partition];
        let before = &mut rejected[sourced.partition];
        while before.last().is_some_and(|l| l.offset < sourced.offset) {
            let letter = before.pop().expect("checked");
            send_rejected(letter, &partition.clock, inputs, stats);
        }
        match partition.clock.observe(sourced.event.ts, config) {
            None => {
                stats.events += 1;
                partition.arrived += 1;
                inputs.events.send(InputEvent {
                    partition: partition.global,
                    offset: sourced.offset,
                    event: sourced.event,
                });
            }
            Some(watermark) => {
                stats.late += 1;
                stats.dead_letters += 1;
                if let Some(at) = partition.clock.highest() {
                    inputs.rejections.send(Rejected { at, late: true });
                }
                let end = config.window.window_of(sourced.event.ts).end;
                let rejection = Rejection::new(
                    RejectKind::Late,
                    format!(
                        "window ending {end} ms closed: partition watermark is {watermark} ms; \
                         session {:?} is final there",
                        sourced.event.session_id
                    ),
                );
                let name = names[sourced.partition].clone();
                inputs.dead_letters.send(DeadLetter::new(
                    name,
                    sourced.offset,
                    rejection,
                    &encode(&sourced.event),
                ));
            }
        }
    }
    for (local, letters) in rejected.into_iter().enumerate() {
        for letter in letters.into_iter().rev() {
            send_rejected(letter, &partitions[local].clock, inputs, stats);
        }
    }
    for progress in batch.progress.drain(..) {
        let partition = &mut partitions[progress.partition];
        partition.next_offset = progress.next_offset;
        partition.finished |= progress.finished;
        partition.caught_up_since = match (progress.caught_up, partition.caught_up_since) {
            (true, Some(since)) => Some(since),
            (true, None) => Some(Instant::now()),
            (false, _) => None,
        };
        partition.changed = true;
    }
}

/// Sends a report for every partition that changed (or became idle) during the epoch.
fn report(
    partitions: &mut [LocalPartition],
    inputs: &mut GraphInputs,
    config: &DataflowConfig,
    idle_timeout: Duration,
    opened_at_ms: i64,
) {
    for partition in partitions.iter_mut() {
        let idle = !partition.finished
            && partition
                .caught_up_since
                .is_some_and(|since| since.elapsed() >= idle_timeout);
        if !partition.changed && idle == partition.reported_idle {
            continue;
        }
        inputs.reports.send(PartitionReport {
            partition: partition.global,
            watermark: partition.clock.watermark(config),
            highest: partition.clock.highest(),
            next_offset: partition.next_offset,
            finished: partition.finished,
            idle,
            replaying: partition.replaying(),
            arrived: partition.arrived,
            opened_at_ms,
        });
        partition.arrived = 0;
        partition.changed = false;
        partition.reported_idle = idle;
    }
}

/// Wall-clock time in Unix milliseconds.
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{lifts_hold, OpenEpoch};
    use crate::config::EpochConfig;

    const DUE: Duration = Duration::from_secs(6);
    const MAX: usize = 1_000;

    fn over(elapsed_s: u64, messages: usize, catching_up: bool, left: Option<usize>) -> bool {
        let open = OpenEpoch {
            elapsed: Duration::from_secs(elapsed_s),
            messages,
            catching_up,
        };
        open.is_over(DUE, MAX, || left)
    }

    /// An epoch is full at its limit unless about a quarter of it or less is left; never
    /// past twice the limit, whatever the source estimates (a topic that keeps growing).
    #[test]
    fn an_epoch_reads_on_to_a_near_end_but_never_past_twice_its_limit() {
        assert!(!over(0, 999, true, None));
        assert!(over(0, 1_000, true, None), "no estimate: full at the limit");
        assert!(over(0, 1_000, true, Some(251)), "more than a quarter left");
        assert!(!over(0, 1_000, true, Some(250)), "a quarter left: read on");
        assert!(!over(0, 1_999, true, Some(0)));
        assert!(over(0, 2_000, true, Some(0)), "twice the limit: full");
    }

    /// A backlog epoch that has lasted its length reads on when its source is near its
    /// end, for at most twice the length; one that is not catching up never does (a live
    /// source is always near its end).
    #[test]
    fn a_backlog_epoch_waits_for_a_near_end_but_never_past_twice_its_length() {
        assert!(!over(5, 10, true, None));
        assert!(over(6, 10, true, None), "no estimate: over at its length");
        assert!(over(6, 10, true, Some(251)), "more than a quarter left");
        assert!(!over(6, 10, true, Some(250)), "a quarter left: read on");
        assert!(!over(11, 10, true, Some(0)));
        assert!(over(12, 10, true, Some(0)), "twice the length: over");
        assert!(over(6, 10, false, Some(0)), "live: over at its length");
    }

    /// Every worker lifts the replay hold in the same epoch, past any a worker can have
    /// opened before it learns the replay is over.
    #[test]
    fn the_replay_hold_lifts_in_one_epoch_past_what_back_pressure_allows() {
        let epochs = EpochConfig {
            max_epochs_in_flight: 4,
            ..EpochConfig::default()
        };
        assert!(!lifts_hold(None, 100, &epochs), "not over yet");
        assert!(!lifts_hold(Some(10), 15, &epochs));
        assert!(lifts_hold(Some(10), 16, &epochs));
        assert!(
            lifts_hold(Some(10), 17, &epochs),
            "a worker past it lifts at once"
        );
    }
}
