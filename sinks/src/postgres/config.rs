//! How to reach PostgreSQL and how the sink writes.

use std::str::FromStr;
use std::time::Duration;

use super::SinkError;

/// A PostgreSQL connection URL; its `Display` never shows the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: String,
    config: tokio_postgres::Config,
}

impl DatabaseUrl {
    /// Parses `url` (`postgres://user:password@host:port/database` or key=value form).
    pub fn parse(url: &str) -> Result<DatabaseUrl, SinkError> {
        let config =
            tokio_postgres::Config::from_str(url).map_err(|e| SinkError::BadUrl(e.to_string()))?;
        Ok(DatabaseUrl {
            url: url.to_string(),
            config,
        })
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
        write!(f, "postgres://{user}@{host}:{port}/{}", self.database())
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
        }
    }
}
