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

use super::merge::{merge_waiting, Request};
use super::schema::connect;
use super::write::Writer;
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

/// Writes what the merger hands over, one transaction at a time, until it has no more.
async fn write_all(
    config: &SinkConfig,
    requests: &mpsc::Sender<Request>,
    metrics: &SinkMetrics,
) -> Result<(), SinkError> {
    let mut writer: Option<Writer> = None;
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
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            let result = match writer.as_mut() {
                Some(writer) => writer.write_epoch(&output, checkpoint).await,
                None => match connect(&config.url).await {
                    Ok(client) => {
                        if metrics.retries.load(Ordering::Relaxed) > 0 {
                            tracing::info!(url = %config.url, "reconnected to PostgreSQL");
                        }
                        metrics.connected.store(true, Ordering::Relaxed);
                        writer
                            .insert(Writer::new(
                                client,
                                config.copy_threshold,
                                config.prediction_log,
                            ))
                            .write_epoch(&output, checkpoint)
                            .await
                    }
                    Err(error) => Err(error),
                },
            };
            match result {
                Ok(written) => {
                    let micros = started.elapsed().as_micros() as u64;
                    metrics.epochs.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .rows
                        .fetch_add(written.rows as u64, Ordering::Relaxed);
                    if let Ok(mut by_kind) = metrics.dead_letters.lock() {
                        for (kind, count) in written.dead_letters {
                            *by_kind.entry(kind).or_default() += count as u64;
                        }
                    }
                    metrics.last_commit_micros.store(micros, Ordering::Relaxed);
                    metrics
                        .commit_micros_total
                        .fetch_add(micros, Ordering::Relaxed);
                    if checkpoint {
                        last_checkpoint = Some(Instant::now());
                    }
                    if let (Some(opened), Ok(mut freshness)) =
                        (output.opened_at_ms, metrics.freshness.lock())
                    {
                        freshness.record(unix_millis() - opened, output.arrived);
                    }
                    break;
                }
                Err(error) if error.is_retriable() => {
                    writer = None;
                    metrics.connected.store(false, Ordering::Relaxed);
                    metrics.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        %error,
                        epoch = output.epoch,
                        retry_in_ms = backoff.as_millis() as u64,
                        "PostgreSQL unavailable; the pipeline holds until the epoch is committed"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(config.max_backoff);
                }
                Err(error) => {
                    metrics.connected.store(false, Ordering::Relaxed);
                    tracing::error!(%error, epoch = output.epoch, "the PostgreSQL sink failed");
                    return Err(error);
                }
            }
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
