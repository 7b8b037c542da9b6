//! The sink thread: commits what the fold of closed epochs hands over, one transaction at a
//! time, retrying through outages.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clickflow_dataflow::runtime::output::Handoff;
use clickflow_dataflow::EpochOutput;
use tokio::sync::{mpsc, oneshot};

use super::link::{no_setup, Link};
use super::merge::{merge_waiting, Request};
use super::write::Written;
use super::{Freshness, Observer, SinkConfig, SinkError};

/// Counters the web server and the logs read.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Epochs committed.
    pub epochs: AtomicU64,
    /// Rows inserted, updated or deleted.
    pub rows: AtomicU64,
    /// Dead letters inserted into `dead_letters`, by kind: what a run really wrote (a
    /// replayed one is not counted again).
    pub dead_letters: Mutex<BTreeMap<String, u64>>,
    /// Epochs skipped because they replayed committed input.
    pub replayed_epochs: AtomicU64,
    /// Duration of the last commit, in microseconds.
    pub last_commit_micros: AtomicU64,
    /// Times the connection was lost and retried.
    pub retries: AtomicU64,
    /// True while PostgreSQL answers.
    pub connected: AtomicBool,
    /// Sum of commit durations, in microseconds (for the mean).
    pub commit_micros_total: AtomicU64,
    /// How long committed events waited since their epoch opened (an upper bound per event).
    pub freshness: Mutex<Freshness>,
}

impl SinkMetrics {
    /// Counts a committed transaction: what it `wrote`, how long it `took`, and (for the
    /// freshness histogram) the epochs it committed, `committed`.
    pub(super) fn record_commit(
        &self,
        wrote: Written,
        took: Duration,
        committed: Option<&EpochOutput>,
    ) {
        let micros = took.as_micros() as u64;
        self.epochs.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(wrote.rows as u64, Ordering::Relaxed);
        self.last_commit_micros.store(micros, Ordering::Relaxed);
        self.commit_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        if let Ok(mut by_kind) = self.dead_letters.lock() {
            for (kind, count) in wrote.dead_letters {
                *by_kind.entry(kind).or_default() += count as u64;
            }
        }
        if let Some(output) = committed {
            if let (Some(opened), Ok(mut freshness)) = (output.opened_at_ms, self.freshness.lock())
            {
                freshness.record(unix_millis() - opened, output.arrived);
            }
        }
    }
}

/// The running sink: where to send epochs, and how to wait for it.
pub struct SinkHandle {
    sender: mpsc::Sender<EpochOutput>,
    thread: JoinHandle<Result<(), SinkError>>,
    /// Live counters.
    pub metrics: Arc<SinkMetrics>,
}

impl SinkHandle {
    /// A callback for the dataflow's gathering worker: offers each epoch without waiting. A
    /// full queue answers [`Handoff::Full`] (the dataflow offers it again later, and its
    /// sources pause meanwhile: back-pressure without a blocked worker). Once the sink has
    /// stopped, epochs are dropped and `stopped` is set, which stops the pipeline.
    pub fn deliver(&self, stopped: Arc<AtomicBool>) -> impl FnMut(EpochOutput) -> Handoff + Send {
        let sender = self.sender.clone();
        move |output| match sender.try_send(output) {
            Ok(()) => Handoff::Taken,
            Err(mpsc::error::TrySendError::Full(output)) => Handoff::Full(Box::new(output)),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The sink failed for good: nothing past its last commit counts.
                stopped.store(true, Ordering::Relaxed);
                Handoff::Taken
            }
        }
    }

    /// Sends `output` and waits while the queue is full (for callers outside the dataflow,
    /// such as benchmarks). Returns false once the sink has stopped.
    pub fn send_blocking(&self, output: EpochOutput) -> bool {
        self.sender.blocking_send(output).is_ok()
    }

    /// Waits until every epoch sent has been committed (all senders must be gone).
    pub fn finish(self) -> Result<(), SinkError> {
        drop(self.sender);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(SinkError::Closed))
    }
}

/// Starts the sink on its own thread with its own runtime; `observe` sees every epoch the
/// sink receives, on that thread.
pub fn spawn_sink(config: SinkConfig, observe: Option<Observer>) -> SinkHandle {
    SinkHandle::spawn(config, "postgres-sink", move |config, epochs, metrics| {
        run(config, epochs, metrics, observe)
    })
}

impl SinkHandle {
    /// Runs `body` on a thread of its own (named `name`) with its own runtime, fed by a
    /// queue of `config.queue_epochs` epochs.
    pub(super) fn spawn<F, Fut>(config: SinkConfig, name: &str, body: F) -> SinkHandle
    where
        F: FnOnce(SinkConfig, mpsc::Receiver<EpochOutput>, Arc<SinkMetrics>) -> Fut
            + Send
            + 'static,
        Fut: std::future::Future<Output = Result<(), SinkError>>,
    {
        let (sender, receiver) = mpsc::channel(config.queue_epochs.max(1));
        let metrics = Arc::new(SinkMetrics::default());
        let shared = metrics.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|_| SinkError::Closed)?;
                runtime.block_on(body(config, receiver, shared))
            })
            .expect("spawning a thread succeeds");
        SinkHandle {
            sender,
            thread,
            metrics,
        }
    }
}

async fn run(
    config: SinkConfig,
    epochs: mpsc::Receiver<EpochOutput>,
    metrics: Arc<SinkMetrics>,
    observe: Option<Observer>,
) -> Result<(), SinkError> {
    let (requests, merger_requests) = mpsc::channel(1);
    let merger = tokio::spawn(merge_waiting(
        epochs,
        merger_requests,
        metrics.clone(),
        observe,
    ));
    let result = write_all(&config, &requests, &metrics).await;
    drop(requests);
    // The merger stops once its requests are gone; its panics are ours.
    if let Err(panic) = merger.await {
        std::panic::resume_unwind(panic.into_panic());
    }
    result
}

/// Writes what the merger hands over, one transaction at a time, until it has no more;
/// a lost connection is retried without limit (see [`Link`]).
async fn write_all(
    config: &SinkConfig,
    requests: &mpsc::Sender<Request>,
    metrics: &SinkMetrics,
) -> Result<(), SinkError> {
    let mut link = Link::new(config, metrics, "sink".into(), config.copy_threshold);
    let mut last_checkpoint: Option<Instant> = None;
    loop {
        let (reply, next) = oneshot::channel();
        if requests.send(reply).await.is_err() {
            return Ok(());
        }
        let Ok(output) = next.await else {
            return Ok(());
        };
        let checkpoint =
            last_checkpoint.is_none_or(|at| at.elapsed() >= config.checkpoint_interval);
        let mut started = Instant::now();
        let written = link
            .run("committing an epoch", no_setup, async |writer, _| {
                started = Instant::now();
                writer.write_epoch(&output, checkpoint).await
            })
            .await?;
        metrics.record_commit(written, started.elapsed(), Some(&output));
        if checkpoint {
            last_checkpoint = Some(Instant::now());
        }
    }
}

/// Now, in milliseconds since the Unix epoch.
pub(super) fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
