//! Folding the epochs that arrive while a transaction is being written into the next one.
//!
//! ```text
//!  gather ─epochs─► merge_waiting ─(one merged output per request)─► writer ─► PostgreSQL
//! ```
//!
//! A sink that is behind its input commits everything that arrived meanwhile as one
//! transaction, so a row changed in many epochs is written once. Folding happens while the
//! writer waits on PostgreSQL, not between transactions, and the fold is consolidated as it
//! grows: memory holds the distinct rows changed since the last commit (at most
//! [`MAX_MERGED_ROWS`]), not every epoch's changes, and the pipeline keeps running while a
//! transaction is in flight instead of stalling once a few epochs wait.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use clickflow_dataflow::EpochOutput;
use tokio::sync::{mpsc, oneshot};

use super::sink::SinkMetrics;
use super::Observer;

/// The most row changes one transaction takes: beyond it the fold stops taking epochs and
/// the pipeline waits (back-pressure). Measured on a 2M-event backfill with scoring: a
/// million rows per transaction keep the rewrites of sessions that span several
/// transactions low (see the Performance section of the README).
pub(super) const MAX_MERGED_ROWS: usize = 1_000_000;

/// The writer asks for its next transaction's content through this.
pub(super) type Request = oneshot::Sender<EpochOutput>;

/// Epochs folded together, consolidated whenever they have doubled since the last time.
struct Fold {
    output: EpochOutput,
    settled: usize,
}

impl Fold {
    fn new(output: EpochOutput) -> Fold {
        let settled = output.row_changes();
        Fold { output, settled }
    }

    fn append(&mut self, later: EpochOutput) {
        self.output.append(later);
        if self.output.row_changes() >= 2 * self.settled.max(16 * 1024) {
            self.output.consolidate();
            self.settled = self.output.row_changes();
        }
    }

    fn finish(mut self) -> EpochOutput {
        self.output.consolidate();
        self.output
    }
}

/// Receives `epochs` and answers each writer request with everything that arrived since the
/// previous answer, folded into one output (waiting for the first epoch if none has). Epochs
/// that replay committed input are skipped. Returns when `epochs` is closed and everything
/// has been handed over, or when the writer is gone.
/// `observe`, when given, sees every epoch as it arrives (the live views and the model
/// monitor: here, on the sink's thread, rather than on the timely worker that gathers).
pub(super) async fn merge_waiting(
    mut epochs: mpsc::Receiver<EpochOutput>,
    mut requests: mpsc::Receiver<Request>,
    metrics: Arc<SinkMetrics>,
    mut observe: Option<Observer>,
) {
    let mut fold: Option<Fold> = None;
    let mut waiting: Option<Request> = None;
    let mut open = true;
    loop {
        // Past the end of the input the epochs to come only close what is open: they are
        // all folded into the last transaction, whatever their size, rather than
        // rewriting every open row once more (see `EpochOutput::input_ended`).
        let ended = fold.as_ref().is_some_and(|f| f.output.input_ended);
        if fold.is_some() && waiting.is_some() && !(ended && open) {
            let (fold, request) = (fold.take(), waiting.take());
            if let (Some(fold), Some(request)) = (fold, request) {
                if request.send(fold.finish()).is_err() {
                    return;
                }
            }
        }
        if !open && fold.is_none() {
            return;
        }
        let full = fold
            .as_ref()
            .is_some_and(|f| f.output.row_changes() >= MAX_MERGED_ROWS && !ended);
        tokio::select! {
            request = requests.recv(), if waiting.is_none() => match request {
                Some(request) => waiting = Some(request),
                None => return,
            },
            epoch = epochs.recv(), if open && !full => {
                if let (Some(observe), Some(epoch)) = (observe.as_mut(), epoch.as_ref()) {
                    observe(epoch);
                }
                match epoch {
                Some(epoch) if epoch.replay => {
                    metrics.replayed_epochs.fetch_add(1, Ordering::Relaxed);
                }
                Some(epoch) => match fold.as_mut() {
                    Some(fold) => fold.append(epoch),
                    None => fold = Some(Fold::new(epoch)),
                },
                None => open = false,
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use clickflow_dataflow::rows::TrendRow;
    use clickflow_dataflow::window::Window;
    use clickflow_sources::EventType;

    use super::*;

    fn trend(count: i64) -> TrendRow {
        TrendRow {
            window: Window {
                start: 0,
                end: 60_000,
            },
            event_type: EventType::Click,
            count,
            revenue_cents: 0,
        }
    }

    fn epoch(epoch: u64, trends: Vec<(TrendRow, isize)>, replay: bool) -> EpochOutput {
        EpochOutput {
            epoch,
            watermark: epoch as i64,
            replay,
            trends,
            arrived: 1,
            ..EpochOutput::default()
        }
    }

    /// Epochs that arrive before the writer asks are handed over as one consolidated output
    /// with the latest progress; replayed epochs are skipped; the merger ends when its input
    /// does, after handing over what it holds.
    #[tokio::test]
    async fn epochs_waiting_for_the_writer_become_one_consolidated_transaction() {
        let (send, epochs) = mpsc::channel(8);
        let (ask, requests) = mpsc::channel(1);
        let metrics = Arc::new(SinkMetrics::default());
        let merger = tokio::spawn(merge_waiting(epochs, requests, metrics.clone(), None));
        send.send(epoch(1, vec![(trend(1), 1)], false))
            .await
            .unwrap();
        send.send(epoch(2, vec![(trend(1), -1), (trend(2), 1)], false))
            .await
            .unwrap();
        send.send(epoch(3, vec![(trend(7), 1)], true))
            .await
            .unwrap();
        send.send(epoch(4, vec![(trend(2), -1), (trend(3), 1)], false))
            .await
            .unwrap();
        // Let the merger take in everything before asking (one thread: once a message has
        // left the channel, the merger has folded it).
        while send.capacity() < send.max_capacity() {
            tokio::task::yield_now().await;
        }
        drop(send);
        let (reply, answer) = oneshot::channel();
        ask.send(reply).await.unwrap();
        let merged = answer.await.unwrap();
        assert_eq!(merged.trends, vec![(trend(3), 1)]);
        assert_eq!((merged.epoch, merged.watermark, merged.arrived), (4, 4, 3));
        assert!(!merged.replay);
        assert_eq!(metrics.replayed_epochs.load(Ordering::Relaxed), 1);
        let (reply, answer) = oneshot::channel();
        let _ = ask.send(reply).await;
        assert!(
            answer.await.is_err(),
            "nothing more once the input is closed"
        );
        merger.await.unwrap();
    }
}
