//! The coordinator: commits each epoch's offsets, watermark and dead letters together with
//! every writer's prepared part of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clickflow_dataflow::{Epoch, EpochOutput};
use tokio::sync::{mpsc, Notify};

use super::super::link::Link;
use super::super::sink::{SinkHandle, SinkMetrics};
use super::super::write::{Writer, Written};
use super::super::{SinkConfig, SinkError};
use super::writer::SharedObserver;
use super::{PartNames, DONE, RECHECK};

/// Starts the coordinator on its own thread. It receives worker 0's gathered part of each
/// epoch (progress, dead letters) and the announcements of how far the epochs are closed;
/// `observe` sees each part, on that thread.
/// Setting `abandon` (when the pipeline failed) stops it, once its input is closed, without
/// waiting for the writers to finish.
pub fn spawn_coordinator(
    config: SinkConfig,
    observe: Option<SharedObserver>,
    abandon: Arc<AtomicBool>,
) -> SinkHandle {
    SinkHandle::spawn(
        config,
        "postgres-coordinator",
        move |config, epochs, metrics| {
            let coordinator = Coordinator {
                config,
                metrics,
                observe,
                own: VecDeque::new(),
                own_through: None,
                input_ended: false,
                open: true,
                abandon,
            };
            coordinator.run(epochs)
        },
    )
}

struct Coordinator {
    config: SinkConfig,
    metrics: Arc<SinkMetrics>,
    observe: Option<SharedObserver>,
    /// Gathered parts not committed yet, in epoch order.
    own: VecDeque<EpochOutput>,
    /// Every gathered part up to this epoch has arrived.
    own_through: Option<Epoch>,
    /// A gathered part has said the input is over ([`EpochOutput::input_ended`]): no cut is
    /// set past the rounds under way until the pipeline has sent everything, so that the
    /// last round holds every epoch from there to the end.
    input_ended: bool,
    /// False once the pipeline has stopped sending.
    open: bool,
    /// Set when the pipeline failed: stop once closed, without waiting for the writers.
    abandon: Arc<AtomicBool>,
}

/// What one look at the database found.
struct Standing {
    /// Every writer is through this epoch (`None`: not every writer has registered).
    writers_through: Option<i64>,
    /// The cut of the round under way (`None`: none set yet).
    cut: Option<i64>,
    /// The prepared parts, with their epochs.
    prepared: Vec<(String, u64)>,
}

impl Coordinator {
    async fn run(mut self, mut epochs: mpsc::Receiver<EpochOutput>) -> Result<(), SinkError> {
        let config = self.config.clone();
        let metrics = self.metrics.clone();
        let woken = Arc::new(Notify::new());
        let mut link = Link::new(
            &config,
            &metrics,
            "coordinator".into(),
            config.copy_threshold,
        )
        .listening(woken.clone());
        let mut last_checkpoint: Option<Instant> = None;
        loop {
            loop {
                match epochs.try_recv() {
                    Ok(part) => self.take(part),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        self.closed();
                        break;
                    }
                }
            }
            if !self.open && self.abandon.load(Ordering::Relaxed) {
                // The pipeline failed: what is prepared is rolled back at the next start.
                return Ok(());
            }
            // Every gathered part up to here has arrived (`Epoch::MAX` once all have).
            let Some(own_through) = self.own_through.map(|e| i64::try_from(e).unwrap_or(DONE))
            else {
                self.wait(&mut epochs, &woken).await;
                continue;
            };
            let standing = link
                .run(
                    "looking at the writers",
                    finish_decided,
                    async |writer, names| standing(writer, names).await,
                )
                .await?;
            let round_done = match (standing.cut, standing.writers_through) {
                (Some(cut), Some(through)) => through >= cut,
                _ => false,
            };
            // Past the end of the input, only the last round is still to come.
            let hold = self.input_ended && self.open;
            let Some(cut) = standing.cut.filter(|_| round_done) else {
                if standing.cut.is_none() && !hold {
                    link.run(
                        "setting the first cut",
                        finish_decided,
                        async |writer, names| set_cut(writer, names, own_through).await,
                    )
                    .await?;
                } else {
                    self.wait(&mut epochs, &woken).await;
                }
                continue;
            };
            // Every writer has prepared its part of the round: commit it.
            let parts: Vec<String> = standing
                .prepared
                .iter()
                .filter(|(_, epoch)| (*epoch as i128) <= cut as i128)
                .map(|(gid, _)| gid.clone())
                .collect();
            let fold = self.fold_through(cut);
            let next = (own_through > cut && !hold).then_some(own_through);
            if fold.is_none() && parts.is_empty() {
                match next {
                    Some(next) => {
                        link.run("setting the cut", finish_decided, async |writer, names| {
                            set_cut(writer, names, next).await
                        })
                        .await?
                    }
                    None if !self.open && cut == DONE => return Ok(()),
                    None => self.wait(&mut epochs, &woken).await,
                }
                continue;
            }
            let checkpoint =
                last_checkpoint.is_none_or(|at| at.elapsed() >= config.checkpoint_interval);
            let started = Instant::now();
            let round = Round {
                fold: fold.as_ref(),
                parts: &parts,
                checkpoint,
                next_cut: next,
            };
            let written = link
                .run(
                    "committing a round",
                    finish_decided,
                    async |writer, names| round.commit(writer, names).await,
                )
                .await?;
            if checkpoint && fold.is_some() {
                last_checkpoint = Some(Instant::now());
            }
            metrics.record_commit(written, started.elapsed(), fold.as_ref());
        }
    }

    /// Takes a part from the gathering worker: an announcement (empty) or a replayed epoch
    /// only moves how far the parts have arrived.
    fn take(&mut self, part: EpochOutput) {
        self.own_through = self.own_through.max(Some(part.epoch));
        self.input_ended |= part.input_ended && !part.replay;
        if part.is_empty() {
            return;
        }
        if part.replay {
            self.metrics.replayed_epochs.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some(observe) = &self.observe {
            if let Ok(mut observe) = observe.lock() {
                observe(&part);
            }
        }
        self.own.push_back(part);
    }

    /// The pipeline has stopped sending: if it did not fail, everything has arrived (the
    /// handle is finished only after the dataflow, and abandoned before that on failure).
    fn closed(&mut self) {
        self.open = false;
        if !self.abandon.load(Ordering::Relaxed) {
            self.own_through = Some(Epoch::MAX);
        }
    }

    /// Waits for the next part from the gathering worker, for the writers to announce
    /// progress (`woken`), or [`RECHECK`].
    async fn wait(&mut self, epochs: &mut mpsc::Receiver<EpochOutput>, woken: &Notify) {
        tokio::select! {
            part = epochs.recv(), if self.open => match part {
                Some(part) => self.take(part),
                None => self.closed(),
            },
            () = woken.notified() => {}
            () = tokio::time::sleep(RECHECK) => {}
        }
    }

    /// The gathered parts up to epoch `target`, folded into one (`None`: there are none).
    fn fold_through(&mut self, target: i64) -> Option<EpochOutput> {
        super::fold_through(&mut self.own, target, |_| {})
    }
}

/// Where the writers stand, the cut, and what is prepared, in one round trip.
async fn standing(writer: &mut Writer, names: &PartNames) -> Result<Standing, SinkError> {
    let row = writer
        .client()
        .query_one(
            "SELECT (SELECT CASE WHEN count(*) > 0 AND count(*) = max(writers)
                            THEN min(prepared_through) END
                     FROM clickflow_writers),
                    (SELECT cut FROM clickflow_cut)",
            &[],
        )
        .await
        .map_err(SinkError::statement("reading the writers' progress"))?;
    Ok(Standing {
        writers_through: row.get(0),
        cut: row.get(1),
        prepared: names.prepared(writer.client()).await?,
    })
}

/// Sets the cut the writers fold their next parts up to, and wakes them.
async fn set_cut(writer: &mut Writer, names: &PartNames, cut: i64) -> Result<(), SinkError> {
    store_cut(writer, cut).await?;
    names.announce(writer.client()).await
}

/// Stores the cut (inside a round's transaction, or on its own).
async fn store_cut(writer: &mut Writer, cut: i64) -> Result<(), SinkError> {
    writer
        .client()
        .execute(
            "INSERT INTO clickflow_cut (id, cut) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET cut = greatest(clickflow_cut.cut, EXCLUDED.cut)",
            &[&cut],
        )
        .await
        .map_err(SinkError::statement("setting the cut"))?;
    Ok(())
}

/// One round's commit.
struct Round<'a> {
    /// The gathered parts of the round's epochs, folded.
    fold: Option<&'a EpochOutput>,
    /// The writers' prepared parts of the round.
    parts: &'a [String],
    checkpoint: bool,
    /// The cut of the next round, if there is news.
    next_cut: Option<i64>,
}

impl Round<'_> {
    /// The decision and its execution: the gathered part, the list of the writers' parts and
    /// the next cut in one transaction, then every listed part committed.
    async fn commit(&self, writer: &mut Writer, names: &PartNames) -> Result<Written, SinkError> {
        writer.begin().await?;
        let written = match self.fold {
            Some(fold) => {
                let written = writer.apply(fold).await?;
                writer.record_progress(fold, self.checkpoint).await?;
                written
            }
            None => Written::default(),
        };
        writer
            .client()
            .execute(
                "INSERT INTO clickflow_commit_log (gid) SELECT unnest($1::text[])
                 ON CONFLICT (gid) DO NOTHING",
                &[&self.parts],
            )
            .await
            .map_err(SinkError::statement("recording the decision"))?;
        if let Some(next) = self.next_cut {
            store_cut(writer, next).await?;
        }
        writer.finish("COMMIT").await?;
        names.finish_decided(writer.client()).await?;
        // The writers wait for their parts to be committed and for a new cut: wake them
        // once both are done (a notification sent with the commit would come too early).
        if !self.parts.is_empty() || self.next_cut.is_some() {
            names.announce(writer.client()).await?;
        }
        Ok(written)
    }
}

/// On a new connection: finish what a lost one had decided.
async fn finish_decided(writer: &mut Writer, names: &PartNames) -> Result<(), SinkError> {
    names.finish_decided(writer.client()).await.map(drop)
}
