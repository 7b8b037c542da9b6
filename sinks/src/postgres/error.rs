//! The sink's errors, each knowing whether trying again can help.

/// What went wrong with PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The URL could not be parsed.
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    /// The TLS settings cannot be used (an unreadable root certificate, say).
    #[error("database TLS: {0}")]
    Tls(String),
    /// `--schema` is not a plain lowercase identifier.
    #[error(
        "invalid --schema {0:?}: use a lowercase name of letters, digits and _ (at most 63 bytes)"
    )]
    BadSchema(String),
    /// The schema belongs to a pipeline that reads another input.
    #[error(
        "schema {schema:?} holds the pipeline of {recorded}, not of {given}: \
         give this input its own --schema (or drop that schema to start it over)"
    )]
    ForeignInput {
        /// The schema.
        schema: String,
        /// The input recorded there.
        recorded: String,
        /// The input of this run.
        given: String,
    },
    /// The input file is not the one read before in this schema.
    #[error("schema {schema:?}: {source}")]
    ChangedFile {
        /// The schema.
        schema: String,
        /// What differs.
        #[source]
        source: clickflow_sources::file::FileSourceError,
    },
    /// Nothing answered, or the connection broke.
    #[error("cannot reach PostgreSQL at {url}: {}", describe(source))]
    Connect {
        /// The URL, without password.
        url: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement failed.
    #[error("PostgreSQL {what} failed: {}", describe(source))]
    Statement {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The tables exist but do not look as this version expects.
    #[error("the database schema does not match this clickflow: {0}")]
    SchemaMismatch(String),
    /// The user may not write the tables.
    #[error("missing privileges: {0}")]
    Privileges(String),
    /// A sink writing from every worker was asked for, and the server does not allow enough
    /// prepared transactions.
    #[error(
        "--sink-writers per-worker needs max_prepared_transactions >= {needed} on the server \
         (it is {allowed}): set it in postgresql.conf (or ALTER SYSTEM) and restart PostgreSQL, \
         or use --sink-writers one"
    )]
    PreparedTransactionsOff {
        /// The server's `max_prepared_transactions`.
        allowed: i64,
        /// What this cluster of workers needs.
        needed: i64,
    },
    /// A prepared part is held by a connection that was cut and whose server process has
    /// not finished exiting: it is free again in a moment.
    #[error("prepared part {0} is busy: the connection that held it is still closing")]
    PartBusy(String),
    /// The pipeline stopped sending (the channel closed) while an epoch was pending.
    #[error("the sink's input closed")]
    Closed,
}

impl SinkError {
    /// Whether trying again later may succeed: a lost or refused connection, or a server
    /// shutting down. Bad SQL, a schema mismatch or missing privileges will not fix
    /// themselves.
    pub fn is_retriable(&self) -> bool {
        let source = match self {
            SinkError::Connect { .. } | SinkError::PartBusy(_) => return true,
            SinkError::Statement { source, .. } => source,
            _ => return false,
        };
        if source.is_closed() {
            return true;
        }
        match source.code() {
            // Class 08 (connection exception), 57P (operator intervention: admin shutdown,
            // crash shutdown, cannot connect now), 53 (insufficient resources), 40001/40P01
            // (serialization failure, deadlock).
            Some(code) => {
                let code = code.code();
                code.starts_with("08")
                    || code.starts_with("57P")
                    || code.starts_with("53")
                    || code == "40001"
                    || code == "40P01"
            }
            // No SQLSTATE: an I/O error on the socket.
            None => true,
        }
    }

    pub(crate) fn statement(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SinkError {
        move |source| SinkError::Statement { what, source }
    }
}

/// The server's own message and SQLSTATE when there is one (the driver's `Display` says only
/// "db error"), else the driver's error and its cause.
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    }
}
