//! A connection that comes back: how every writer of the sink (the single writer, each
//! worker's writer, the coordinator) runs a step against PostgreSQL until it succeeds,
//! through outages.

use std::ops::AsyncFnMut;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::config::WAKEUP_CHANNEL;
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
    /// The server process of the current or last connection, by pid and start time (a pid
    /// alone may be reused).
    backend: Option<Backend>,
    /// Large batches go through COPY above this many rows, into temporary tables, which a
    /// prepared transaction may not touch: writers pass `usize::MAX`.
    copy_threshold: usize,
    /// Woken by the pipeline's notifications on [`WAKEUP_CHANNEL`], when the link listens.
    woken: Option<Arc<Notify>>,
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
            backend: None,
            copy_threshold,
            woken: None,
        }
    }

    /// The same link, listening: every connection it opens runs `LISTEN` on
    /// [`WAKEUP_CHANNEL`] first, and this pipeline's notifications wake `woken`.
    /// Notifications sent while no connection listens are lost, so a waiter also looks
    /// again now and then.
    pub(crate) fn listening(self, woken: Arc<Notify>) -> Link<'a> {
        Link {
            woken: Some(woken),
            ..self
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

    /// Connects, once the server process of the lost connection has exited: after a cut, the
    /// client sees the error while that process is still exiting, holding its locks and
    /// perhaps finishing a `PREPARE TRANSACTION` or `COMMIT PREPARED`. A step run before it
    /// is gone could miss a part about to appear, or wait forever on the row locks of a part
    /// this writer prepared without knowing it.
    async fn connect(&mut self) -> Result<&mut (Writer, PartNames), SinkError> {
        let client = match &self.woken {
            None => connect(&self.config.url).await?,
            Some(woken) => {
                let client = self.config.url.connect_listening(woken.clone()).await?;
                client
                    .batch_execute(&format!("LISTEN {WAKEUP_CHANNEL}"))
                    .await
                    .map_err(SinkError::statement("listening for the sink's progress"))?;
                client
            }
        };
        if let Some(previous) = &self.backend {
            previous.await_exit(&client, &self.role).await?;
        }
        self.backend = Some(Backend::of(&client).await?);
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

/// A server process, by pid and start time.
struct Backend {
    pid: i32,
    started: std::time::SystemTime,
}

impl Backend {
    /// The server process of `client`'s connection.
    async fn of(client: &tokio_postgres::Client) -> Result<Backend, SinkError> {
        let row = client
            .query_one(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(SinkError::statement(
                "reading the connection's server process",
            ))?;
        Ok(Backend {
            pid: row.get(0),
            started: row.get(1),
        })
    }

    /// Ends this server process if it still runs (a connection lost on the client's side
    /// may live on at the server until its keepalive gives up, holding its locks) and waits
    /// until it has exited, asking over `client` every 10 ms.
    async fn await_exit(
        &self,
        client: &tokio_postgres::Client,
        role: &str,
    ) -> Result<(), SinkError> {
        let mut told = false;
        loop {
            let signalled = client
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE pid = $1 AND backend_start = $2",
                    &[&self.pid, &self.started],
                )
                .await
                .map_err(SinkError::statement(
                    "ending the lost connection's server process",
                ))?;
            if signalled.is_empty() {
                return Ok(());
            }
            if !told {
                tracing::info!(
                    pid = self.pid,
                    role,
                    "waiting for the lost connection's server process to exit"
                );
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::testing::{block_on, scratch_database};

    /// A connection lost on the client's side whose server process lives on (here: one
    /// simply left open) is ended, and the wait returns once it has exited.
    #[test]
    fn a_lost_connections_server_process_is_ended_and_awaited() {
        let (_db, url) = scratch_database("link");
        block_on(async {
            let lost = connect(&url).await.unwrap();
            let backend = Backend::of(&lost).await.unwrap();
            let client = connect(&url).await.unwrap();
            backend.await_exit(&client, "test").await.unwrap();
            let alive: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                    &[&backend.pid],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(alive, 0);
            assert!(lost.simple_query("SELECT 1").await.is_err(), "it was ended");
        });
    }

    /// A listening link is woken by its own pipeline's announcements, and neither by
    /// another schema's pipeline nor by another channel.
    #[test]
    fn a_listening_link_wakes_on_its_own_pipelines_announcements_only() {
        use futures_util::FutureExt;

        let (_db, url) = scratch_database("link_listening");
        let config = SinkConfig::new(url.with_schema("ours").unwrap());
        let metrics = SinkMetrics::default();
        block_on(async {
            let woken = Arc::new(Notify::new());
            let mut link = Link::new(&config, &metrics, "test".into(), 0).listening(woken.clone());
            let mut round_trip = async || {
                link.run("a round trip", no_setup, async |writer, _| {
                    let select = writer.client().batch_execute("SELECT 1").await;
                    select.map_err(SinkError::statement("a round trip"))
                })
                .await
                .unwrap()
            };
            // Connects and listens.
            round_trip().await;
            let other = connect(&url).await.unwrap();
            other
                .batch_execute(&format!(
                    "NOTIFY {WAKEUP_CHANNEL}, 'theirs'; NOTIFY elsewhere, 'ours'"
                ))
                .await
                .unwrap();
            // The server delivers notifications committed before a statement ahead of its
            // result, and the connection's driver handles them in that order.
            round_trip().await;
            assert!(
                woken.notified().now_or_never().is_none(),
                "woken by another pipeline's notification"
            );
            other
                .batch_execute(&format!("NOTIFY {WAKEUP_CHANNEL}, 'ours'"))
                .await
                .unwrap();
            round_trip().await;
            assert!(
                woken.notified().now_or_never().is_some(),
                "not woken by its own pipeline's announcement"
            );
        });
    }
}
