//! Live counters of the running pipeline, shared with the progress log and the web server.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use clickflow_sources::EventTime;

use crate::runtime::watermark::NO_WATERMARK;

/// Counters every worker adds to; read at any time from any thread.
#[derive(Debug)]
pub struct PipelineMetrics {
    /// Events accepted into the graph.
    pub events: AtomicU64,
    /// Payloads rejected at the source: undecodable or late.
    pub dead_letters: AtomicU64,
    /// Of those, events late for their partition.
    pub late: AtomicU64,
    /// Epochs closed by this process's worker 0.
    pub epochs: AtomicU64,
    /// Source errors that were retried (a broker unreachable, a leader moving).
    pub source_retries: AtomicU64,
    /// The pipeline watermark after the last gathered epoch.
    pub watermark: AtomicI64,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        PipelineMetrics {
            events: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            late: AtomicU64::new(0),
            epochs: AtomicU64::new(0),
            source_retries: AtomicU64::new(0),
            watermark: AtomicI64::new(NO_WATERMARK),
        }
    }
}

impl PipelineMetrics {
    /// The watermark, `None` before there is one (or at the end of a finite input: `MAX`).
    pub fn watermark(&self) -> Option<EventTime> {
        Some(self.watermark.load(Ordering::Relaxed)).filter(|w| *w != NO_WATERMARK)
    }
}
