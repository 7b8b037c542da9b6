//! The thread that drains an outbox table: the alert webhook and the Kafka change feed.
//!
//! Both deliver rows the pipeline committed to PostgreSQL to somewhere else, apart from the
//! pipeline (their own thread, runtime and connection), at least once: a round reads what
//! waits, delivers it, and only then marks or deletes it. A round that fails is retried with
//! exponential backoff (1 s doubling to a ceiling); meanwhile the rows wait in the table,
//! never in memory, and the pipeline never waits for them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What a drainer delivers, one round at a time.
pub(crate) trait Outbox: Send + 'static {
    /// Delivers what waits now. `Ok(true)` when more may be waiting already (the next round
    /// starts at once); `Err` says what failed, for the log.
    async fn round(&mut self) -> Result<bool, String>;
}

/// How a drainer paces itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pacing {
    /// The pause after a round that found nothing more.
    pub(crate) poll: Duration,
    /// The longest pause after failed rounds.
    pub(crate) max_backoff: Duration,
    /// After [`Drainer::stop`], how long it goes on while rounds succeed and find more.
    pub(crate) drain_for: Duration,
}

/// A running drainer.
pub(crate) struct Drainer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Drainer {
    /// Asks it to stop, and waits: it goes on delivering while there is more and delivery
    /// succeeds, for at most [`Pacing::drain_for`] (a round under way then is abandoned);
    /// what is left waits for the next start.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Starts draining `outbox` on a thread called `name`.
pub(crate) fn spawn_drainer<O: Outbox>(
    name: &'static str,
    mut outbox: O,
    pacing: Pacing,
) -> std::io::Result<Drainer> {
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, what = name, "cannot start");
                    return;
                }
            };
            runtime.block_on(async {
                // A round stuck on an unreachable broker or server does not hold the stop.
                tokio::select! {
                    () = drain(name, &mut outbox, pacing, &stopping) => {}
                    () = stopped_for(&stopping, pacing.drain_for) => {
                        tracing::warn!(what = name, "stopping with deliveries left");
                    }
                }
            });
        })?;
    Ok(Drainer { stop, thread })
}

/// Resolves `grace` after `stop` is set.
async fn stopped_for(stop: &AtomicBool, grace: Duration) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(grace).await;
}

async fn drain<O: Outbox>(name: &str, outbox: &mut O, pacing: Pacing, stop: &AtomicBool) {
    let mut backoff: Option<Duration> = None;
    loop {
        // The stop comes once everything to deliver has been committed, so only a round
        // that began after it has seen all of it: one under way when it came may have read
        // the outbox before the last commit (the change feed's kill -9 test once ended with
        // 42,119 changes of the last run unpublished that way).
        let began_stopped = stop.load(Ordering::Relaxed);
        let pause = match outbox.round().await {
            Ok(more) => {
                backoff = None;
                if more {
                    continue;
                }
                if began_stopped {
                    return;
                }
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                pacing.poll
            }
            Err(problem) => {
                if stop.load(Ordering::Relaxed) {
                    tracing::warn!(%problem, what = name, "stopping with deliveries left");
                    return;
                }
                let next =
                    backoff.map_or(Duration::from_secs(1), |b| (b * 2).min(pacing.max_backoff));
                tracing::warn!(%problem, retry_in = ?next, what = name, "delivery failed");
                backoff = Some(next);
                next
            }
        };
        let until = tokio::time::Instant::now() + pause;
        while tokio::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(pause.min(Duration::from_millis(50))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// An outbox whose first round reads it empty, and during which the last commit lands
    /// and the stop comes.
    struct LateCommit {
        waiting: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        rounds: usize,
    }

    impl Outbox for LateCommit {
        async fn round(&mut self) -> Result<bool, String> {
            let read = self.waiting.load(Ordering::Relaxed);
            if self.rounds == 0 {
                self.waiting.store(1, Ordering::Relaxed);
                self.stop.store(true, Ordering::Relaxed);
            }
            self.rounds += 1;
            self.waiting.fetch_sub(read, Ordering::Relaxed);
            Ok(false)
        }
    }

    #[test]
    fn a_commit_made_while_a_round_was_under_way_at_the_stop_is_still_delivered() {
        let waiting = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut outbox = LateCommit {
            waiting: waiting.clone(),
            stop: stop.clone(),
            rounds: 0,
        };
        let pacing = Pacing {
            poll: Duration::from_secs(60),
            max_backoff: Duration::from_secs(60),
            drain_for: Duration::from_secs(10),
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(drain("test", &mut outbox, pacing, &stop));
        assert_eq!(
            waiting.load(Ordering::Relaxed),
            0,
            "the late commit was left"
        );
        assert_eq!(outbox.rounds, 2);
    }
}
