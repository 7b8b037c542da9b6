//! One worker's writer: prepares the worker's rows of each epoch as a part of the epoch's
//! transaction, and says how far it is through.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::Notify;

use clickflow_dataflow::runtime::output::Handoff;
use clickflow_dataflow::runtime::run::EpochSink;
use clickflow_dataflow::{Epoch, EpochOutput};
use tokio::sync::mpsc;

use super::super::link::{no_setup, Link};
use super::super::sink::SinkMetrics;
use super::super::write::Writer;
use super::super::{Observer, SinkConfig, SinkError};
use super::{PartNames, DONE, RECHECK};

/// An observer shared by the threads that see parts of the epochs (the writers of this
/// process and the coordinator): each calls it with its own part.
pub type SharedObserver = Arc<Mutex<Observer>>;

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
/// which stops the pipeline, and `abandon`, which tells the coordinator) and the handle to
/// wait for it. Once its worker is gone and `abandon` is set, it stops waiting for the
/// coordinator.
pub fn spawn_writer(
    config: SinkConfig,
    writer: usize,
    writers: usize,
    metrics: Arc<SinkMetrics>,
    observe: Option<SharedObserver>,
    stopped: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
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
                abandon: abandon.clone(),
            };
            let result = runtime.block_on(part_writer.write_all(&config, parts));
            if result.is_err() {
                abandon.store(true, Ordering::Relaxed);
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
    abandon: Arc<AtomicBool>,
}

impl PartWriter<'_> {
    async fn write_all(
        &self,
        config: &SinkConfig,
        parts: mpsc::Receiver<EpochOutput>,
    ) -> Result<(), SinkError> {
        let woken = Arc::new(Notify::new());
        let mut link = Link::new(
            config,
            self.metrics,
            format!("writer {}", self.writer),
            usize::MAX,
        )
        .listening(woken.clone());
        link.run("registering", no_setup, async |writer, names| {
            self.register(writer, names).await
        })
        .await?;
        let mut inbox = Inbox::new(parts, self.observe.clone());
        // The epoch this writer last said it is through, and the part it last prepared.
        let mut through: i64 = -1;
        let mut last_part: Option<String> = None;
        loop {
            let Some(cut) = self
                .next_cut(&mut link, &woken, &mut inbox, through, last_part.as_deref())
                .await?
            else {
                // The pipeline failed and the coordinator gave up: leave what is prepared
                // to the next start.
                return Ok(());
            };
            inbox.receive_through(cut).await;
            let fold = inbox.fold_through(cut);
            let mut attempts = 0;
            last_part = link
                .run("preparing a part", no_setup, async |writer, names| {
                    attempts += 1;
                    self.prepare(writer, names, fold.as_ref(), cut, attempts > 1)
                        .await
                })
                .await?;

            through = cut;
            if cut == DONE {
                return Ok(());
            }
        }
    }

    /// Waits until the coordinator has committed this writer's last part and set a cut
    /// beyond `through`, taking in parts meanwhile (up to a bound: beyond it the worker's
    /// queue fills and the pipeline waits). It looks when the coordinator announces
    /// progress (`woken`), when a part arrives, and every [`RECHECK`]. `None`: the pipeline
    /// failed.
    async fn next_cut(
        &self,
        link: &mut Link<'_>,
        woken: &Notify,
        inbox: &mut Inbox,
        through: i64,
        last_part: Option<&str>,
    ) -> Result<Option<i64>, SinkError> {
        loop {
            let (cut, pending) = link
                .run("waiting for the cut", no_setup, async |writer, _| {
                    let row = writer
                        .client()
                        .query_one(
                            "SELECT (SELECT cut FROM clickflow_cut),
                                    EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = $1)",
                            &[&last_part.unwrap_or("")],
                        )
                        .await
                        .map_err(SinkError::statement("reading the cut"))?;
                    Ok((row.get::<_, Option<i64>>(0), row.get::<_, bool>(1)))
                })
                .await?;
            match cut {
                Some(cut) if cut > through && !pending => return Ok(Some(cut)),
                _ if inbox.closed && self.abandon.load(Ordering::Relaxed) => return Ok(None),
                _ => inbox.take_until(woken).await,
            }
        }
    }

    async fn register(&self, writer: &mut Writer, names: &PartNames) -> Result<(), SinkError> {
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
        names.announce(writer.client()).await
    }

    /// Prepares `fold` (this writer's rows of the epochs up to `cut`) as its part of the
    /// round and says it is through the cut (and announces it), in one round trip after the
    /// rows; with nothing to write, only says so. Returns the part's name. `retry`: an earlier attempt lost its
    /// connection, perhaps after the part was prepared, so look first.
    async fn prepare(
        &self,
        writer: &mut Writer,
        names: &PartNames,
        fold: Option<&EpochOutput>,
        cut: i64,
        retry: bool,
    ) -> Result<Option<String>, SinkError> {
        let through = format!(
            "UPDATE clickflow_writers SET prepared_through = greatest(prepared_through, {cut}),
                 updated_at = now()
             WHERE writer = {}; {}",
            self.writer,
            names.announcement()
        );
        let Some(fold) = fold else {
            writer.finish(&through).await?;
            return Ok(None);
        };
        let gid = names.part(self.writer, cut as u64);
        if retry
            && names
                .prepared(writer.client())
                .await?
                .iter()
                .any(|(name, _)| *name == gid)
        {
            writer.finish(&through).await?;
            return Ok(Some(gid));
        }
        let started = std::time::Instant::now();
        writer.begin().await?;
        let written = writer.apply(fold).await?;
        // PREPARE ends the transaction block; the UPDATE then commits on its own.
        writer
            .finish(&format!("PREPARE TRANSACTION '{gid}'; {through}"))
            .await?;
        tracing::debug!(
            writer = self.writer,
            cut,
            rows = written.rows,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "prepared a part"
        );
        self.metrics
            .rows
            .fetch_add(written.rows as u64, Ordering::Relaxed);
        Ok(Some(gid))
    }
}

/// The parts a worker has handed over and the writer has not written yet.
struct Inbox {
    parts: mpsc::Receiver<EpochOutput>,
    observe: Option<SharedObserver>,
    waiting: VecDeque<EpochOutput>,
    /// Row changes waiting.
    rows: usize,
    /// Every epoch up to this one has been received.
    received: Option<Epoch>,
    /// A part has said the input is over: the parts still to come only close what is
    /// open, and the coordinator sets no cut until they have all come, so they are taken
    /// in whatever their size (bounding them would stop the pipeline short of its end).
    input_ended: bool,
    closed: bool,
}

impl Inbox {
    /// Parts held beyond the cut stop being taken in at this many row changes.
    const MAX_ROWS: usize = 1_000_000;

    fn new(parts: mpsc::Receiver<EpochOutput>, observe: Option<SharedObserver>) -> Inbox {
        Inbox {
            parts,
            observe,
            waiting: VecDeque::new(),
            rows: 0,
            received: None,
            input_ended: false,
            closed: false,
        }
    }

    fn take(&mut self, part: Option<EpochOutput>) {
        let Some(part) = part else {
            self.closed = true;
            return;
        };
        self.received = self.received.max(Some(part.epoch));
        self.input_ended |= part.input_ended && !part.replay;
        // A replayed epoch was committed before the restart; an empty one only says how far
        // the epochs are closed.
        if !part.replay && part.row_changes() > 0 {
            tracing::debug!(
                epoch = part.epoch,
                rows = part.row_changes(),
                "a part arrived"
            );
            if let Some(Ok(mut observe)) = self.observe.as_ref().map(|o| o.lock()) {
                observe(&part);
            }
            self.rows += part.row_changes();
            self.waiting.push_back(part);
        }
    }

    /// Takes in the next part (unless the bound is reached), or returns when `woken` is
    /// notified or [`RECHECK`] has passed.
    async fn take_until(&mut self, woken: &Notify) {
        let open = !self.closed && (self.rows < Self::MAX_ROWS || self.input_ended);
        tokio::select! {
            part = self.parts.recv(), if open => self.take(part),
            () = woken.notified() => {}
            () = tokio::time::sleep(RECHECK) => {}
        }
    }

    /// Waits until every part up to `cut` has arrived (or the worker is gone).
    async fn receive_through(&mut self, cut: i64) {
        while !self.closed && self.received.is_none_or(|r| (r as i128) < cut as i128) {
            let part = self.parts.recv().await;
            self.take(part);
        }
    }

    /// The waiting parts up to `cut`, folded into one (`None`: none changed anything).
    fn fold_through(&mut self, cut: i64) -> Option<EpochOutput> {
        let rows = &mut self.rows;
        super::fold_through(&mut self.waiting, cut, |part| *rows -= part.row_changes())
    }
}
