//! A connection that comes back: how every writer of the sink (the single writer, each
//! worker's writer, the coordinator) runs a step against PostgreSQL until it succeeds,
//! through outages.

use std::ops::AsyncFnMut;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::schema::connect;
use super::sink::SinkMetrics;
use super::two_phase::PartNames;
use super::write::Writer;
use super::{SinkConfig, SinkError};

/// A connection (with its prepared statements) that is opened on first use and again after
/// it is lost.
pub(crate) struct Link<'a> {
    config: &'a SinkConfig,
    metrics: &'a SinkMetrics,
    /// Who is writing, for the logs.
    role: String,
    connection: Option<(Writer, PartNames)>,
    /// Large batches go through COPY above this many rows, into temporary tables, which a
    /// prepared transaction may not touch: writers pass `usize::MAX`.
    copy_threshold: usize,
}

impl<'a> Link<'a> {
    pub(crate) fn new(
        config: &'a SinkConfig,
        metrics: &'a SinkMetrics,
        role: String,
        copy_threshold: usize,
    ) -> Link<'a> {
        Link {
            config,
            metrics,
            role,
            connection: None,
            copy_threshold,
        }
    }

    /// Runs `step` on the connection until it succeeds: a retriable failure (a lost
    /// connection, a server restarting) drops the connection, waits (100 ms, doubling up to
    /// the configured backoff) and runs it again on a new one; `reconnected` runs first on
    /// every new connection. Any other failure is returned.
    pub(crate) async fn run<T>(
        &mut self,
        what: &str,
        mut reconnected: impl AsyncFnMut(&mut Writer, &PartNames) -> Result<(), SinkError>,
        mut step: impl AsyncFnMut(&mut Writer, &PartNames) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = match self.connection.as_mut() {
                Some((writer, names)) => step(writer, names).await,
                None => match self.connect().await {
                    Ok((writer, names)) => match reconnected(writer, names).await {
                        Ok(()) => step(writer, names).await,
                        Err(error) => Err(error),
                    },
                    Err(error) => Err(error),
                },
            };
            match result {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retriable() => {
                    self.connection = None;
                    self.metrics.connected.store(false, Ordering::Relaxed);
                    self.metrics.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        %error,
                        role = %self.role,
                        what,
                        retry_in_ms = backoff.as_millis() as u64,
                        "PostgreSQL unavailable; the pipeline holds until it is back"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
                Err(error) => {
                    self.metrics.connected.store(false, Ordering::Relaxed);
                    tracing::error!(%error, role = %self.role, what, "the PostgreSQL sink failed");
                    return Err(error);
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<&mut (Writer, PartNames), SinkError> {
        let client = connect(&self.config.url).await?;
        let names = PartNames::load(&client, self.config.url.schema()).await?;
        if self.metrics.retries.load(Ordering::Relaxed) > 0 {
            tracing::info!(url = %self.config.url, role = %self.role, "reconnected to PostgreSQL");
        }
        self.metrics.connected.store(true, Ordering::Relaxed);
        let writer = Writer::new(client, self.copy_threshold, self.config.prediction_log);
        Ok(self.connection.insert((writer, names)))
    }
}

/// For [`Link::run`]: nothing to do on a new connection.
pub(crate) async fn no_setup(_: &mut Writer, _: &PartNames) -> Result<(), SinkError> {
    Ok(())
}
