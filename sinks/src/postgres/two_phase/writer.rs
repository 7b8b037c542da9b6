//! One worker's writer: prepares the worker's rows of each epoch as a part of the epoch's
//! transaction, and says how far it is through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use clickflow_dataflow::runtime::output::Handoff;
use clickflow_dataflow::runtime::run::EpochSink;
use clickflow_dataflow::{Epoch, EpochOutput};
use tokio::sync::mpsc;

use super::super::sink::SinkMetrics;
use super::super::write::Writer;
use super::super::{Observer, SinkConfig, SinkError};
use super::link::Link;
use super::{PartNames, DONE, MAX_OUTSTANDING};

/// An observer shared by the threads that see parts of the epochs (the writers of this
/// process and the coordinator): each calls it with its own part.
pub type SharedObserver = Arc<Mutex<Observer>>;

/// How long a writer waits before looking again whether its oldest part was committed.
const POLL: Duration = Duration::from_millis(2);

/// A running writer, to wait for.
pub struct WriterHandle {
    thread: JoinHandle<Result<(), SinkError>>,
}

impl WriterHandle {
    /// Waits until the writer has prepared everything it was given (its sender, held by the
    /// worker, must be gone).
    pub fn finish(self) -> Result<(), SinkError> {
        self.thread.join().unwrap_or(Err(SinkError::Closed))
    }
}

/// Starts the writer of worker `writer` (of `writers` in the whole cluster) on its own thread
/// with its own connection. Returns what the worker offers its closed epochs to (it never
/// blocks: a full queue is [`Handoff::Full`]; once the writer has failed, `stopped` is set,
/// which stops the pipeline) and the handle to wait for it.
pub fn spawn_writer(
    config: SinkConfig,
    writer: usize,
    writers: usize,
    metrics: Arc<SinkMetrics>,
    observe: Option<SharedObserver>,
    stopped: Arc<AtomicBool>,
) -> (EpochSink, WriterHandle) {
    let (sender, parts) = mpsc::channel(config.queue_epochs.max(1));
    let thread = std::thread::Builder::new()
        .name(format!("postgres-writer-{writer}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|_| SinkError::Closed)?;
            let part_writer = PartWriter {
                writer,
                writers,
                metrics: &metrics,
                observe,
            };
            let result = runtime.block_on(part_writer.write_all(&config, parts));
            if result.is_err() {
                stopped.store(true, Ordering::Relaxed);
            }
            result
        })
        .expect("spawning a thread succeeds");
    let deliver = move |output| match sender.try_send(output) {
        Ok(()) => Handoff::Taken,
        Err(mpsc::error::TrySendError::Full(output)) => Handoff::Full(Box::new(output)),
        // The writer failed for good (and has stopped the pipeline).
        Err(mpsc::error::TrySendError::Closed(_)) => Handoff::Taken,
    };
    (Box::new(deliver), WriterHandle { thread })
}

struct PartWriter<'a> {
    writer: usize,
    writers: usize,
    metrics: &'a SinkMetrics,
    observe: Option<SharedObserver>,
}

impl PartWriter<'_> {
    async fn write_all(
        &self,
        config: &SinkConfig,
        mut parts: mpsc::Receiver<EpochOutput>,
    ) -> Result<(), SinkError> {
        let mut link = Link::new(
            config,
            self.metrics,
            format!("writer {}", self.writer),
            usize::MAX,
        );
        link.run("registering", nothing, async |writer, _| {
            self.register(writer).await
        })
        .await?;
        // Every epoch up to `through` is prepared or changed nothing here; `posted` is what
        // the coordinator has been told.
        let (mut through, mut posted): (Option<Epoch>, Option<Epoch>) = (None, None);
        loop {
            let part = match parts.try_recv() {
                Ok(part) => Some(part),
                Err(mpsc::error::TryRecvError::Empty) => {
                    self.post(&mut link, through, &mut posted).await?;
                    parts.recv().await
                }
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
            let Some(part) = part else {
                link.run("finishing", nothing, async |writer, _| {
                    self.record_through(writer, DONE).await
                })
                .await?;
                return Ok(());
            };
            if let (Some(observe), false) = (&self.observe, part.replay) {
                if let Ok(mut observe) = observe.lock() {
                    observe(&part);
                }
            }
            if part.replay || part.row_changes() == 0 {
                through = through.max(Some(part.epoch));
                continue;
            }
            // The coordinator must hear of the epochs before this part first: it commits
            // the previous part only once every writer is through them.
            self.post(&mut link, through, &mut posted).await?;
            self.wait_for_room(&mut link).await?;
            let mut attempts = 0;
            let rows = link
                .run("preparing a part", nothing, async |writer, names| {
                    attempts += 1;
                    self.prepare(writer, names, &part, attempts > 1).await
                })
                .await?;
            self.metrics.rows.fetch_add(rows as u64, Ordering::Relaxed);
            through = Some(part.epoch);
            posted = through;
        }
    }

    async fn register(&self, writer: &mut Writer) -> Result<(), SinkError> {
        writer
            .client()
            .execute(
                "INSERT INTO clickflow_writers (writer, writers, prepared_through)
                 VALUES ($1, $2, -1)
                 ON CONFLICT (writer) DO UPDATE SET writers = EXCLUDED.writers,
                     prepared_through = -1, updated_at = now()",
                &[&(self.writer as i32), &(self.writers as i32)],
            )
            .await
            .map_err(SinkError::statement("registering a writer"))?;
        Ok(())
    }

    /// Tells the coordinator that everything up to `through` is prepared, if it is news.
    async fn post(
        &self,
        link: &mut Link<'_>,
        through: Option<Epoch>,
        posted: &mut Option<Epoch>,
    ) -> Result<(), SinkError> {
        let Some(epoch) = through.filter(|_| through > *posted) else {
            return Ok(());
        };
        let epoch = i64::try_from(epoch).unwrap_or(DONE - 1);
        link.run("recording progress", nothing, async |writer, _| {
            self.record_through(writer, epoch).await
        })
        .await?;
        *posted = through;
        Ok(())
    }

    async fn record_through(&self, writer: &mut Writer, epoch: i64) -> Result<(), SinkError> {
        writer
            .client()
            .execute(
                "UPDATE clickflow_writers SET prepared_through = greatest(prepared_through, $2),
                     updated_at = now()
                 WHERE writer = $1",
                &[&(self.writer as i32), &epoch],
            )
            .await
            .map_err(SinkError::statement("recording a writer's progress"))?;
        Ok(())
    }

    /// Waits while this writer has [`MAX_OUTSTANDING`] parts prepared and not committed.
    async fn wait_for_room(&self, link: &mut Link<'_>) -> Result<(), SinkError> {
        let mine = format!("{}:", self.writer);
        loop {
            let outstanding = link
                .run("counting prepared parts", nothing, async |writer, names| {
                    let prepared = names.prepared(writer.client()).await?;
                    let prefix = format!("{}{mine}", names.prefix);
                    Ok(prepared
                        .iter()
                        .filter(|(gid, _)| gid.starts_with(&prefix))
                        .count() as i64)
                })
                .await?;
            if outstanding < MAX_OUTSTANDING {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Writes `part`, prepares it and says the writer is through its epoch, in one round
    /// trip after the rows. `retry`: an earlier attempt lost its connection, perhaps after
    /// the part was prepared, so look first.
    async fn prepare(
        &self,
        writer: &mut Writer,
        names: &PartNames,
        part: &EpochOutput,
        retry: bool,
    ) -> Result<usize, SinkError> {
        let gid = names.part(self.writer, part.epoch);
        let epoch = i64::try_from(part.epoch).unwrap_or(DONE - 1);
        if retry {
            let prepared = names.prepared(writer.client()).await?;
            if prepared.iter().any(|(name, _)| *name == gid) {
                self.record_through(writer, epoch).await?;
                return Ok(part.row_changes());
            }
        }
        writer.begin().await?;
        let written = writer.apply(part).await?;
        // PREPARE ends the transaction block; the UPDATE then commits on its own.
        writer
            .finish(&format!(
                "PREPARE TRANSACTION '{gid}';
                 UPDATE clickflow_writers SET prepared_through = greatest(prepared_through, {epoch}),
                     updated_at = now()
                 WHERE writer = {}",
                self.writer
            ))
            .await?;
        Ok(written.rows)
    }
}

/// Nothing to do on a new connection.
async fn nothing(_: &mut Writer, _: &PartNames) -> Result<(), SinkError> {
    Ok(())
}
