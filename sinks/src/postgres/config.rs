//! How to reach PostgreSQL and how the sink writes.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, Connection};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls::{connector, split_tls_settings, SslMode, TlsSettings};
use super::SinkError;

/// A PostgreSQL connection URL, its TLS settings and the schema the pipeline's tables live
/// in; its `Display` never shows the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: String,
    config: tokio_postgres::Config,
    schema: String,
    tls: TlsSettings,
    connector: Option<MakeRustlsConnect>,
}

/// The schema a pipeline uses when none is given.
pub const DEFAULT_SCHEMA: &str = "public";

impl DatabaseUrl {
    /// Parses `url` (`postgres://user:password@host:port/database` or key=value form), with
    /// libpq's `sslmode` and `sslrootcert` (see [`super::tls`]); a root certificate it names
    /// is read now, so a wrong path is an error at start.
    pub fn parse(url: &str) -> Result<DatabaseUrl, SinkError> {
        let (rest, tls) = split_tls_settings(url).map_err(SinkError::BadUrl)?;
        let config = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| SinkError::BadUrl(e.to_string()))?;
        let mut url = DatabaseUrl {
            url: url.to_string(),
            config,
            schema: String::new(),
            tls: TlsSettings::default(),
            connector: None,
        };
        url.set_tls(tls)?;
        url.set_schema(DEFAULT_SCHEMA);
        Ok(url)
    }

    /// The same URL with `sslmode` and/or `sslrootcert` replaced (the `--database-sslmode`
    /// and `--database-sslrootcert` flags win over the URL's own).
    pub fn with_tls(
        &self,
        mode: Option<SslMode>,
        root_cert: Option<String>,
    ) -> Result<DatabaseUrl, SinkError> {
        let mut url = self.clone();
        let mut tls = url.tls.clone();
        if let Some(mode) = mode {
            tls.mode = mode;
        }
        if let Some(root_cert) = root_cert {
            tls.root_cert = Some(root_cert);
        }
        url.set_tls(tls)?;
        Ok(url)
    }

    fn set_tls(&mut self, tls: TlsSettings) -> Result<(), SinkError> {
        self.connector = connector(&tls).map_err(SinkError::Tls)?;
        self.config.ssl_mode(tls.mode.driver_mode());
        self.tls = tls;
        Ok(())
    }

    /// The TLS settings connections use.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    /// Opens a connection (TLS as the settings say), driving it on the current tokio runtime.
    pub async fn connect(&self) -> Result<Client, SinkError> {
        self.connect_driven(None).await
    }

    /// Opens a connection like [`DatabaseUrl::connect`] whose notifications on
    /// [`WAKEUP_CHANNEL`] naming this URL's schema wake `woken` (the caller still has to
    /// `LISTEN`): the parallel sink's writers and coordinator wait on each other this way
    /// rather than by asking the server again and again.
    pub(crate) async fn connect_listening(&self, woken: Arc<Notify>) -> Result<Client, SinkError> {
        self.connect_driven(Some(woken)).await
    }

    async fn connect_driven(&self, woken: Option<Arc<Notify>>) -> Result<Client, SinkError> {
        let failed = |source| SinkError::Connect {
            url: self.to_string(),
            source,
        };
        let wakeup = woken.map(|woken| Wakeup {
            woken,
            schema: self.schema.clone(),
        });
        let client = match &self.connector {
            None => {
                let (client, connection) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(failed)?;
                tokio::spawn(drive(connection, wakeup));
                client
            }
            Some(connector) => {
                let (client, connection) = self
                    .config
                    .connect(connector.clone())
                    .await
                    .map_err(failed)?;
                tokio::spawn(drive(connection, wakeup));
                client
            }
        };
        Ok(client)
    }

    /// The same server and database, with the pipeline's tables in `schema`: a lowercase
    /// SQL identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes), so that it needs no quoting
    /// anywhere and cannot be mistaken for another. Every connection then resolves table
    /// names in that schema only (`search_path`).
    pub fn with_schema(&self, schema: &str) -> Result<DatabaseUrl, SinkError> {
        let valid = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(SinkError::BadSchema(schema.to_string()));
        }
        let mut url = self.clone();
        url.set_schema(schema);
        Ok(url)
    }

    fn set_schema(&mut self, schema: &str) {
        self.schema = schema.to_string();
        self.config.options(format!("-c search_path={schema}"));
    }

    /// The schema holding the pipeline's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The parsed connection configuration.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The URL with another database name (tests create one database each).
    pub fn with_database(&self, database: &str) -> DatabaseUrl {
        let mut config = self.config.clone();
        config.dbname(database);
        DatabaseUrl {
            url: self.url.clone(),
            config,
            schema: self.schema.clone(),
            tls: self.tls.clone(),
            connector: self.connector.clone(),
        }
    }

    /// The database name.
    pub fn database(&self) -> String {
        self.config.get_dbname().unwrap_or("postgres").to_string()
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = self.config.get_user().unwrap_or("postgres");
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        write!(f, "postgres://{user}@{host}:{port}/{}", self.database())?;
        if self.tls.mode != SslMode::default() {
            write!(f, "?sslmode={}", self.tls.mode.as_str())?;
        }
        Ok(())
    }
}

/// The channel the parallel sink's parts announce progress on; the payload is the schema
/// of the pipeline whose progress it is, so that pipelines sharing a database do not wake
/// each other. Anyone may `LISTEN` to it: an announcement says that a writer registered or
/// prepared a part, or that the coordinator stored a cut or finished a round.
pub const WAKEUP_CHANNEL: &str = "clickflow_sink";

/// Whom a connection's notifications wake.
struct Wakeup {
    woken: Arc<Notify>,
    schema: String,
}

/// Drives a connection until it ends, waking `wakeup`'s waiter on each of its notifications.
async fn drive<S, T>(mut connection: Connection<S, T>, wakeup: Option<Wakeup>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                let ours = notification.channel() == WAKEUP_CHANNEL;
                if let Some(wakeup) = wakeup
                    .as_ref()
                    .filter(|w| ours && notification.payload() == w.schema)
                {
                    wakeup.woken.notify_one();
                }
            }
            Some(Ok(AsyncMessage::Notice(notice))) => {
                tracing::debug!(
                    severity = notice.severity(),
                    message = notice.message(),
                    "PostgreSQL notice"
                );
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::debug!(%error, "PostgreSQL connection ended");
                return;
            }
            None => return,
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// How the sink writes.
#[derive(Clone, Debug)]
pub struct SinkConfig {
    /// Where.
    pub url: DatabaseUrl,
    /// Batches with more rows than this go through binary COPY instead of `unnest`.
    pub copy_threshold: usize,
    /// How often a transaction also records a resume checkpoint.
    pub checkpoint_interval: Duration,
    /// Epochs handed over to the sink that it has not yet folded into its next transaction
    /// (4). The sink folds arriving epochs while it writes (see `merge.rs`), so this only
    /// fills once the fold holds a million row changes; the pipeline then pauses.
    pub queue_epochs: usize,
    /// The longest pause between two reconnection attempts.
    pub max_backoff: Duration,
    /// Log every score in `churn_predictions`, keeping each this long (event time behind
    /// the watermark); `None`: no log.
    pub prediction_log: Option<Duration>,
    /// Who writes the tables: one writer for the whole pipeline, or one per worker.
    pub writers: SinkWriters,
    /// The tables whose committed changes are captured for the change topics (`--emit-kafka`;
    /// empty: none). Set up at start, before anything is written (see `changes`).
    pub capture: Vec<crate::changes::ChangeTable>,
}

/// Who writes the tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SinkWriters {
    /// One per worker when the server allows enough prepared transactions
    /// (`max_prepared_transactions`), one otherwise (said in the log).
    #[default]
    Auto,
    /// One writer, on process 0: every epoch is one plain transaction.
    One,
    /// One writer per worker, in every process, committed together by two-phase commit
    /// (see `two_phase`); refused at start if the server does not allow it.
    PerWorker,
}

impl FromStr for SinkWriters {
    type Err = String;

    fn from_str(s: &str) -> Result<SinkWriters, String> {
        match s {
            "auto" => Ok(SinkWriters::Auto),
            "one" => Ok(SinkWriters::One),
            "per-worker" => Ok(SinkWriters::PerWorker),
            other => Err(format!(
                "unknown sink writers {other:?}: use auto, one or per-worker"
            )),
        }
    }
}

impl SinkConfig {
    /// The defaults for `url`: COPY above 2,000 rows, a checkpoint every 5 s, 4 queued
    /// epochs, backoff up to 5 s.
    pub fn new(url: DatabaseUrl) -> SinkConfig {
        SinkConfig {
            url,
            copy_threshold: 2_000,
            checkpoint_interval: Duration::from_secs(5),
            queue_epochs: 4,
            max_backoff: Duration::from_secs(5),
            prediction_log: None,
            capture: Vec::new(),
            writers: SinkWriters::Auto,
        }
    }
}
