//! The whole pipeline into PostgreSQL: prepare, resume, run, commit.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickflow_dataflow::runtime::run::{
    run, Delivery, EpochSink, InputSpec, RunConfig, RunError, RunStats, WriterFactory,
};
use clickflow_dataflow::{EpochOutput, PipelineMetrics};
use timely::CommunicationConfig;
use tokio_postgres::Client;

use clickflow_dataflow::kpi::sessions::SessionRule;
use clickflow_dataflow::runtime::watermark::NO_WATERMARK;

use super::two_phase::{self, spawn_coordinator, spawn_writer, WriterHandle};
use super::{
    claim_input, load_resume_plan, load_user_history, prepare, spawn_sink, SinkConfig, SinkError,
    SinkHandle, SinkWriters,
};
use crate::changes::capture_changes;

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// PostgreSQL refused at start or failed for good.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The dataflow failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// What to run: the cluster, the input, the dataflow's settings and where to write.
pub struct PipelineSpec {
    /// Threads and processes.
    pub timely: timely::Config,
    /// Where events come from.
    pub input: InputSpec,
    /// The dataflow's settings (its resume plan is loaded from the database).
    pub config: RunConfig,
    /// The sink's settings.
    pub sink: SinkConfig,
    /// Whether this process writes: only the one that gathers the output (process 0).
    pub writes: bool,
    /// Sees every closed epoch as the sink receives it, on the sink's thread (the web
    /// server's live views, the model monitor).
    pub observe: Option<Observer>,
}

/// A callback that sees each closed epoch.
pub type Observer = Box<dyn FnMut(&EpochOutput) + Send>;

/// Prepares the database, loads where the pipeline stood, and runs the input into
/// PostgreSQL until it ends or `stop` is set. `metrics` are the dataflow's counters;
/// `on_sink` sees the running sink (for its metrics) before the dataflow starts.
pub fn run_into_postgres(
    spec: PipelineSpec,
    stop: Arc<AtomicBool>,
    metrics: Arc<PipelineMetrics>,
    on_sink: impl FnOnce(&SinkHandle),
) -> Result<RunStats, PipelineError> {
    let PipelineSpec {
        timely: timely_config,
        input,
        mut config,
        sink,
        writes,
        mut observe,
    } = spec;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|_| SinkError::Closed)?;
    let scoring = config.model.is_some();
    let rule = SessionRule {
        gap_ms: config.dataflow.session_gap_ms,
        window: config.dataflow.window,
    };
    let workers = workers_of(&timely_config);
    let (input, resume, per_worker) = runtime.block_on(retrying_at_start(&START_RETRY, || {
        let (url, input, choice) = (&sink.url, input.clone(), sink.writers);
        let capture = sink.capture.clone();
        async move {
            // One connection for every query of the start.
            let mut client = prepare(url).await?;
            if writes {
                // After the recovery: a part a crashed run left prepared holds its tables.
                two_phase::recover(&client, url.schema()).await?;
                capture_changes(&mut client, &capture).await?;
            } else {
                two_phase::await_recovery(&client).await?;
            }
            let per_worker = writers_per_worker(&client, choice, workers).await?;
            let input = claim_input(&client, url.schema(), input).await?;
            let mut plan = load_resume_plan(&client, &input.partitions()).await?;
            if scoring && plan.committed_watermark != NO_WATERMARK {
                plan.reopen_after_end(rule.window);
                let folds_before = plan.history_folds_before(rule.window);
                plan.history = Arc::new(load_user_history(&client, rule, folds_before).await?);
            }
            Ok((input, plan, per_worker))
        }
    }))?;
    config.resume = resume;
    config.resume.reopen_after_end(config.dataflow.window);
    if !config.resume.partitions.is_empty() {
        let replaying = config
            .resume
            .partitions
            .values()
            .filter(|p| p.start != p.committed)
            .count();
        tracing::info!(
            partitions = config.resume.partitions.len(),
            replaying,
            "resuming from committed offsets"
        );
    }
    if per_worker {
        let observe = observe.take().map(|o| Arc::new(Mutex::new(o)));
        let abandon = Arc::new(AtomicBool::new(false));
        let coordinator =
            writes.then(|| spawn_coordinator(sink.clone(), observe.clone(), abandon.clone()));
        if let Some(coordinator) = &coordinator {
            on_sink(coordinator);
        }
        let writer_metrics = coordinator
            .as_ref()
            .map_or_else(Default::default, |c| c.metrics.clone());
        let handles: Arc<Mutex<Vec<WriterHandle>>> = Arc::default();
        let spawned = handles.clone();
        let (stopped, failed) = (stop.clone(), abandon.clone());
        let writers: WriterFactory = Arc::new(move |worker, workers| {
            let (deliver, handle) = spawn_writer(
                sink.clone(),
                worker,
                workers,
                writer_metrics.clone(),
                observe.clone(),
                stopped.clone(),
                failed.clone(),
            );
            if let Ok(mut handles) = spawned.lock() {
                handles.push(handle);
            }
            deliver
        });
        let delivery = Delivery::PerWorker {
            coordinator: coordinator
                .as_ref()
                .map(|c| Box::new(c.deliver(stop.clone())) as EpochSink),
            writers,
        };
        let stats = run(timely_config, input, config, delivery, stop, metrics);
        if stats.is_err() {
            abandon.store(true, Ordering::Relaxed);
        }
        // The coordinator first: the writers' last round waits for its last cut, which it
        // sets once its input is closed.
        let coordinated = coordinator.map_or(Ok(()), SinkHandle::finish);
        if coordinated.is_err() {
            abandon.store(true, Ordering::Relaxed);
        }
        let handles = std::mem::take(&mut *handles.lock().unwrap_or_else(|e| e.into_inner()));
        // Every writer is waited for; the first failure is the one reported.
        let mut written: Result<(), SinkError> = coordinated;
        for handle in handles {
            let finished = handle.finish();
            if written.is_ok() {
                written = finished;
            }
        }
        written?;
        return Ok(stats?);
    }
    if !writes {
        return Ok(run(timely_config, input, config, None, stop, metrics)?);
    }
    let handle = spawn_sink(sink, observe.take());
    on_sink(&handle);
    let deliver = Box::new(handle.deliver(stop.clone()));
    let stats = run(
        timely_config,
        input,
        config,
        Delivery::Gathered(deliver),
        stop,
        metrics,
    );
    handle.finish()?;
    Ok(stats?)
}

/// How many workers the whole cluster has.
fn workers_of(config: &timely::Config) -> usize {
    match &config.communication {
        CommunicationConfig::Thread => 1,
        CommunicationConfig::Process(threads) | CommunicationConfig::ProcessBinary(threads) => {
            *threads
        }
        CommunicationConfig::Cluster {
            threads, addresses, ..
        } => threads * addresses.len(),
    }
}

/// Whether every worker writes its own rows: as asked, or (`auto`) when the server allows
/// the prepared transactions it takes. Every process decides the same from the same server.
async fn writers_per_worker(
    client: &Client,
    choice: SinkWriters,
    workers: usize,
) -> Result<bool, SinkError> {
    if choice == SinkWriters::One {
        return Ok(false);
    }
    let allowed = two_phase::prepared_transactions_allowed(client).await?;
    let per_worker = choose_writers(choice, allowed, workers)?;
    if per_worker {
        tracing::info!(
            workers,
            "every worker writes its own rows (two-phase commit)"
        );
    } else {
        tracing::info!(
            max_prepared_transactions = allowed,
            needed = two_phase::MAX_OUTSTANDING * workers as i64,
            "one writer for the whole pipeline: the server allows too few prepared \
             transactions for one writer per worker"
        );
    }
    Ok(per_worker)
}

/// The choice of [`writers_per_worker`] for a server that allows `allowed` prepared
/// transactions: a writer per worker needs [`two_phase::MAX_OUTSTANDING`] of them each.
fn choose_writers(choice: SinkWriters, allowed: i64, workers: usize) -> Result<bool, SinkError> {
    let needed = two_phase::MAX_OUTSTANDING * workers as i64;
    match choice {
        SinkWriters::One => Ok(false),
        SinkWriters::Auto => Ok(allowed >= needed),
        SinkWriters::PerWorker if allowed >= needed => Ok(true),
        SinkWriters::PerWorker => Err(SinkError::PreparedTransactionsOff { allowed, needed }),
    }
}

/// How starting tries again after a failure that may pass.
struct StartRetry {
    /// A server that does not answer is reported after this many attempts.
    unanswered: u32,
    /// A server that answers and then cuts the connection is tried for this long.
    cuts_for: Duration,
    /// The first pause; it doubles up to `max_backoff`.
    backoff: Duration,
    max_backoff: Duration,
}

/// A server that does not answer is reported after 8 attempts (about 9 s of pauses): long
/// enough for a restart under way, short enough that a server that is not there is reported
/// within seconds. A server that answers and then cuts the connection (an operator ending
/// sessions, a restart beginning) is there: it is tried for a minute. Counting every failure
/// alike, as this did before, failed the start of a loaded machine whose connections were
/// cut every 100 ms: each attempt opens several connections and took long enough to be cut
/// every time.
const START_RETRY: StartRetry = StartRetry {
    unanswered: 8,
    cuts_for: Duration::from_secs(60),
    backoff: Duration::from_millis(200),
    max_backoff: Duration::from_secs(2),
};

/// Runs `step` (preparing the schema and reading where the pipeline stood), trying again as
/// `policy` says when it fails in a way that may pass (a connection cut, a server
/// restarting). Once running, the sink retries without limit; at start, a server that stays
/// away is an error.
async fn retrying_at_start<T, F, Fut>(policy: &StartRetry, mut step: F) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SinkError>>,
{
    let started = Instant::now();
    let mut backoff = policy.backoff;
    let (mut attempt, mut unanswered) = (1, 0);
    loop {
        let error = match step().await {
            Err(error) if error.is_retriable() => error,
            result => return result,
        };
        if matches!(error, SinkError::Connect { .. }) {
            unanswered += 1;
        }
        if unanswered >= policy.unanswered || started.elapsed() >= policy.cuts_for {
            return Err(error);
        }
        tracing::warn!(
            %error,
            attempt,
            retry_in_ms = backoff.as_millis() as u64,
            "PostgreSQL unavailable at start; trying again"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(policy.max_backoff);
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::testing::block_on;

    /// `auto` takes a writer per worker exactly when the server allows one prepared
    /// transaction per worker, and falls back to one writer otherwise; `per-worker` on such
    /// a server is refused with the setting to change; `one` never asks.
    #[test]
    fn the_writers_follow_what_the_server_allows() {
        assert!(choose_writers(SinkWriters::Auto, 64, 4).unwrap());
        assert!(choose_writers(SinkWriters::Auto, 4, 4).unwrap());
        assert!(!choose_writers(SinkWriters::Auto, 3, 4).unwrap());
        assert!(!choose_writers(SinkWriters::Auto, 0, 1).unwrap());
        assert!(choose_writers(SinkWriters::PerWorker, 2, 2).unwrap());
        let refused = choose_writers(SinkWriters::PerWorker, 0, 2).unwrap_err();
        assert!(matches!(
            refused,
            SinkError::PreparedTransactionsOff {
                allowed: 0,
                needed: 2
            }
        ));
        assert!(refused
            .to_string()
            .contains("max_prepared_transactions >= 2"));
        assert!(!choose_writers(SinkWriters::One, 64, 4).unwrap());
    }

    /// The start tries a server that cuts its connections again and again (it is there),
    /// gives up on one that does not answer after the set number of attempts, and gives up
    /// on cuts too once their time is up.
    #[test]
    fn the_start_outlasts_cuts_and_reports_a_silent_server() {
        let policy = StartRetry {
            unanswered: 3,
            cuts_for: Duration::from_secs(60),
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
        let cut = || SinkError::PartBusy("a part".into());
        let mut attempts = 0;
        let started = block_on(retrying_at_start(&policy, || {
            attempts += 1;
            let attempt = attempts;
            async move {
                if attempt <= 20 {
                    Err(cut())
                } else {
                    Ok(attempt)
                }
            }
        }));
        assert_eq!(started.unwrap(), 21, "twenty cuts, then a start");

        // Nothing listens on port 1.
        let silent =
            crate::postgres::DatabaseUrl::parse("postgres://clickflow@127.0.0.1:1/shop").unwrap();
        let mut attempts = 0;
        let refused = block_on(retrying_at_start(&policy, || {
            attempts += 1;
            async { silent.connect().await.map(drop) }
        }));
        assert!(
            matches!(refused, Err(SinkError::Connect { .. })),
            "{refused:?}"
        );
        assert_eq!(attempts, 3);

        let impatient = StartRetry {
            cuts_for: Duration::ZERO,
            ..policy
        };
        let mut attempts = 0;
        let gave_up = block_on(retrying_at_start(&impatient, || {
            attempts += 1;
            async { Err::<(), _>(cut()) }
        }));
        assert!(matches!(gave_up, Err(SinkError::PartBusy(_))));
        assert_eq!(attempts, 1);
    }
}
