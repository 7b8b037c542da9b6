//! Writing one epoch as one transaction.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::{Duration, SystemTime};

use clickflow_dataflow::EpochOutput;
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

use super::batch::{stage_epoch, Fresh, Staged, Statement};
use super::SinkError;

/// The most rows one statement takes through `unnest`; a larger batch runs the statement
/// once per slice of this many rows, in the same transaction. Array parameters are encoded
/// whole into one message before it is sent, and the connection's write buffer holds a
/// second copy of it: a parallel sink's writer (which cannot COPY into temporary staging
/// tables, which a prepared transaction refuses) sent a backfill epoch's sessions as one 61 MB
/// message, held twice at the run's peak. Slices of 16,384 rows keep each message to a few
/// MB; the statement is prepared once for all of them. A slice's columns are made as it is
/// sent ([`Staged::columns`]), for COPY too.
const ROWS_PER_STATEMENT: usize = 16_384;

/// A connection with what it has prepared.
pub(super) struct Writer {
    client: Client,
    /// Prepared `unnest` statements, by staging table name.
    statements: HashMap<&'static str, tokio_postgres::Statement>,
    /// Staging tables created on this connection.
    staging_tables: HashSet<&'static str>,
    copy_threshold: usize,
    /// The most rows one statement reads through `unnest` ([`ROWS_PER_STATEMENT`]), and
    /// the most whose columns are made at once ([`Staged::columns`]).
    rows_per_statement: usize,
    /// How long logged predictions are kept (`None`: none are logged).
    prediction_log: Option<Duration>,
}

/// What an epoch's transaction wrote.
#[derive(Clone, Debug, Default)]
pub(super) struct Written {
    pub(super) rows: usize,
    /// Dead letters inserted, by kind (`dead_letters.reason` up to its colon).
    pub(super) dead_letters: Vec<(String, i64)>,
}

impl Writer {
    pub(super) fn new(
        client: Client,
        copy_threshold: usize,
        prediction_log: Option<Duration>,
    ) -> Writer {
        Writer {
            client,
            statements: HashMap::new(),
            staging_tables: HashSet::new(),
            copy_threshold,
            rows_per_statement: ROWS_PER_STATEMENT,
            prediction_log,
        }
    }

    /// Writes `output` in one transaction; with `checkpoint`, also records a resume
    /// checkpoint of every partition, forgets checkpoints no restart can need any more, and
    /// prunes logged predictions older than their retention.
    pub(super) async fn write_epoch(
        &mut self,
        output: &EpochOutput,
        checkpoint: bool,
    ) -> Result<Written, SinkError> {
        self.begin().await?;
        let written = self.apply(output).await?;
        self.record_progress(output, checkpoint).await?;
        self.finish("COMMIT").await?;
        Ok(written)
    }

    /// The connection, for statements of the caller's own.
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// Opens a transaction.
    pub(super) async fn begin(&self) -> Result<(), SinkError> {
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(SinkError::statement("BEGIN"))
    }

    /// Ends the open transaction with `statement` (`COMMIT`, or `PREPARE TRANSACTION '...'`).
    pub(super) async fn finish(&self, statement: &str) -> Result<(), SinkError> {
        self.client
            .batch_execute(statement)
            .await
            .map_err(SinkError::statement("ending a transaction"))
    }

    /// Applies the epoch's row changes and dead letters in the open transaction.
    pub(super) async fn apply(&mut self, output: &EpochOutput) -> Result<Written, SinkError> {
        let staged = stage_epoch(output, self.prediction_log.is_some());
        let mut rows = 0;
        let mut dead_letters = Vec::new();
        let mut now = None;
        for batch in &staged {
            rows += batch.len();
            match batch.statement.fresh {
                None => {
                    let source = self.source(batch).await?;
                    // Statements answer rows only to say what they inserted (dead letters
                    // by kind).
                    let answered = self
                        .run(batch, batch.statement, source)
                        .await
                        .map_err(SinkError::statement("an upsert"))?;
                    dead_letters.extend(answered.iter().map(|row| (row.get(0), row.get(1))));
                }
                Some(fresh) => {
                    let now = match now {
                        Some(now) => now,
                        None => *now.insert(self.transaction_time().await?),
                    };
                    self.insert_new(batch, fresh, now).await?;
                }
            }
        }
        Ok(Written { rows, dead_letters })
    }

    /// Where `batch`'s statement reads its rows from: a large batch is copied into its
    /// staging table first (where the connection may have one), a small one is sent as
    /// array parameters.
    async fn source(&mut self, batch: &Staged<'_>) -> Result<Source, SinkError> {
        if batch.len() <= self.copy_threshold {
            return Ok(Source::Parameters);
        }
        copy_in(
            &self.client,
            batch,
            &mut self.staging_tables,
            self.rows_per_statement,
        )
        .await?;
        Ok(Source::Staging(batch.statement.staging))
    }

    /// The open transaction's `now()`: the time its rows were written, as the statements
    /// that run in it say it.
    async fn transaction_time(&self) -> Result<SystemTime, SinkError> {
        self.client
            .query_one("SELECT now()", &[])
            .await
            .map(|row| row.get(0))
            .map_err(SinkError::statement("reading the transaction's time"))
    }

    /// Copies the rows of `batch`, believed new, into their table (`now` is the
    /// transaction's time); should one of them be there already, applies them by
    /// `fresh.if_present` instead: an update of the rows there (the session and score
    /// tables) or an insert that skips them (the prediction log); see
    /// [`super::batch::fresh_and_updated`].
    async fn insert_new(
        &mut self,
        batch: &Staged<'_>,
        fresh: &'static Fresh,
        now: SystemTime,
    ) -> Result<(), SinkError> {
        self.savepoint("SAVEPOINT clickflow_new_rows").await?;
        let table = Some((fresh, now));
        let copied = copy_rows(
            &self.client,
            batch.statement.sql,
            batch,
            self.rows_per_statement,
            table,
        )
        .await;
        match copied {
            Ok(()) => self.savepoint("RELEASE SAVEPOINT clickflow_new_rows").await,
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                // Expected once after a restart (the churn stage scores every open session
                // anew), so not a warning.
                tracing::debug!(
                    rows = batch.len(),
                    statement = fresh.if_present.staging,
                    "rows inserted as new were there already: applying them by the statement for rows present"
                );
                self.savepoint("ROLLBACK TO SAVEPOINT clickflow_new_rows")
                    .await?;
                let source = self.source(batch).await?;
                self.run(batch, fresh.if_present, source)
                    .await
                    .map(drop)
                    .map_err(SinkError::statement("applying rows already present"))
            }
            Err(error) => Err(SinkError::statement("inserting new rows")(error)),
        }
    }

    async fn savepoint(&self, sql: &'static str) -> Result<(), SinkError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(SinkError::statement("a savepoint"))
    }

    /// Runs `statement` over the rows of `batch`, read from `source`.
    async fn run(
        &mut self,
        batch: &Staged<'_>,
        statement: &'static Statement,
        source: Source,
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        match source {
            Source::Staging(table) => {
                let sql = statement.sql.replace("{src}", &format!("{table} AS s"));
                self.client.query(sql.as_str(), &[]).await
            }
            Source::Parameters => {
                let prepared = match self.statements.get(statement.staging) {
                    Some(prepared) => prepared.clone(),
                    None => {
                        let sql = statement.sql.replace("{src}", &unnest_source(batch));
                        let prepared = self.client.prepare(&sql).await?;
                        self.statements.insert(statement.staging, prepared.clone());
                        prepared
                    }
                };
                let mut answered = Vec::new();
                for rows in slices(batch.len(), self.rows_per_statement) {
                    let columns = batch.columns(rows.clone());
                    let arrays: Vec<_> = columns.iter().map(|c| c.slice(0..rows.len())).collect();
                    let params: Vec<&(dyn ToSql + Sync)> = arrays.iter().map(|a| &**a).collect();
                    answered.extend(self.client.query(&prepared, &params).await?);
                }
                Ok(answered)
            }
        }
    }

    /// Records, in the open transaction, where the input stands after `output`: the
    /// watermark, each partition's offsets and retention; with `checkpoint`, a resume
    /// checkpoint, and the pruning of old checkpoints and logged predictions.
    pub(super) async fn record_progress(
        &self,
        output: &EpochOutput,
        checkpoint: bool,
    ) -> Result<(), SinkError> {
        let tx = &self.client;
        let epoch = output.epoch as i64;
        tx.execute(
            "INSERT INTO clickflow_pipeline (id, epoch, watermark, retain_from, updated_at)
             VALUES (1, $1, $2, $3, now())
             ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, watermark = EXCLUDED.watermark,
                 retain_from = EXCLUDED.retain_from, updated_at = EXCLUDED.updated_at",
            &[&epoch, &output.watermark, &output.retain_from],
        )
        .await
        .map_err(SinkError::statement("recording the watermark"))?;
        record_partition_retention(tx, output).await?;
        if checkpoint {
            record_checkpoint(tx, output.retain_from).await?;
            if let Some(retention) = self.prediction_log {
                prune_predictions(tx, output.watermark, retention).await?;
            }
        }
        Ok(())
    }
}

/// `unnest($1::type[], ...) AS s(columns)`.
fn unnest_source(batch: &Staged<'_>) -> String {
    let arrays: Vec<String> = batch
        .sql_types()
        .iter()
        .enumerate()
        .map(|(i, sql_type)| format!("${}::{sql_type}[]", i + 1))
        .collect();
    format!(
        "unnest({}) AS s({})",
        arrays.join(", "),
        batch.statement.columns.join(", ")
    )
}

/// `0..len` in consecutive slices of at most `size` rows.
fn slices(len: usize, size: usize) -> impl Iterator<Item = Range<usize>> {
    (0..len)
        .step_by(size)
        .map(move |start| start..len.min(start + size))
}

/// Where a batch's statements read its rows from.
#[derive(Clone, Copy)]
enum Source {
    /// Array parameters, one per column, through `unnest`.
    Parameters,
    /// The large-batch path: a temporary staging table (emptied at commit) that COPY filled.
    Staging(&'static str),
}

/// Fills the staging table of `batch` by binary COPY (creating it on first use), making
/// the columns of `slice` rows at a time.
async fn copy_in(
    tx: &Client,
    batch: &Staged<'_>,
    created: &mut HashSet<&'static str>,
    slice: usize,
) -> Result<(), SinkError> {
    let statement = batch.statement;
    if !created.contains(statement.staging) {
        let columns: Vec<String> = statement
            .columns
            .iter()
            .zip(batch.sql_types())
            .map(|(name, sql_type)| format!("{name} {sql_type}"))
            .collect();
        let sql = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS",
            statement.staging,
            columns.join(", ")
        );
        tx.batch_execute(&sql)
            .await
            .map_err(SinkError::statement("creating a staging table"))?;
        created.insert(statement.staging);
    }
    let copy = format!(
        "COPY {} ({}) FROM STDIN BINARY",
        statement.staging,
        statement.columns.join(", ")
    );
    copy_rows(tx, &copy, batch, slice, None)
        .await
        .map_err(SinkError::statement("COPY into a staging table"))
}

/// Sends the rows of `batch` by `copy` (a `COPY ... FROM STDIN BINARY`), making their
/// columns `slice` rows at a time: as staged, or with `table`, as that statement's table
/// takes them at the transaction's time.
async fn copy_rows(
    tx: &Client,
    copy: &str,
    batch: &Staged<'_>,
    slice: usize,
    table: Option<(&Fresh, SystemTime)>,
) -> Result<(), tokio_postgres::Error> {
    let columns_of = |rows: Range<usize>| {
        let columns = batch.columns(rows);
        match table {
            Some((fresh, now)) => (fresh.table_columns)(columns, now),
            None => columns,
        }
    };
    let types: Vec<_> = columns_of(0..0).iter().map(|c| c.pg_type()).collect();
    let sink = tx.copy_in(copy).await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for rows in slices(batch.len(), slice) {
        let columns = columns_of(rows.clone());
        // One buffer for the slice's rows, not an allocation per row.
        let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(columns.len());
        for i in 0..rows.len() {
            row.clear();
            row.extend(columns.iter().map(|c| c.value(i)));
            writer.as_mut().write(&row).await?;
        }
    }
    writer.finish().await?;
    Ok(())
}

/// Deletes logged predictions about event times more than `retention` behind `watermark`.
async fn prune_predictions(
    tx: &Client,
    watermark: i64,
    retention: Duration,
) -> Result<(), SinkError> {
    if watermark == i64::MIN || watermark == i64::MAX {
        return Ok(());
    }
    let before = watermark.saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
    tx.execute(
        "DELETE FROM churn_predictions
         WHERE as_of < timestamptz 'epoch' + $1::bigint * interval '1 millisecond'",
        &[&before],
    )
    .await
    .map_err(SinkError::statement("pruning the prediction log"))?;
    Ok(())
}

/// Records how far back each partition's input is still needed, where that changed.
async fn record_partition_retention(tx: &Client, output: &EpochOutput) -> Result<(), SinkError> {
    let topics: Vec<&str> = output
        .partition_retain_from
        .iter()
        .map(|(p, _)| &*p.topic)
        .collect();
    let partitions: Vec<i32> = output
        .partition_retain_from
        .iter()
        .map(|(p, _)| p.partition)
        .collect();
    let retain_from: Vec<Option<i64>> = output
        .partition_retain_from
        .iter()
        .map(|&(_, r)| r)
        .collect();
    tx.execute(
        "UPDATE clickflow_offsets o SET retain_from = r.retain_from
         FROM unnest($1::text[], $2::integer[], $3::bigint[]) AS r(topic, partition, retain_from)
         WHERE o.topic = r.topic AND o.partition = r.partition
           AND o.retain_from IS DISTINCT FROM r.retain_from",
        &[&topics, &partitions, &retain_from],
    )
    .await
    .map_err(SinkError::statement("recording each partition's retention"))?;
    Ok(())
}

/// Records where every partition stands, and drops the checkpoints older than the newest
/// one a restart of that partition could start from (the newest whose clock is before the
/// partition's `retain_from`; `fallback` where a partition has none recorded).
async fn record_checkpoint(tx: &Client, fallback: Option<i64>) -> Result<(), SinkError> {
    tx.execute(
        "INSERT INTO clickflow_checkpoints (topic, partition, next_offset, highest_event_time, created_at)
         SELECT topic, partition, next_offset, highest_event_time, now() FROM clickflow_offsets
         ON CONFLICT (topic, partition, next_offset) DO NOTHING",
        &[],
    )
    .await
    .map_err(SinkError::statement("recording a checkpoint"))?;
    let fallback = fallback.unwrap_or(i64::MAX);
    tx.execute(
        "DELETE FROM clickflow_checkpoints c USING (
             SELECT c.topic, c.partition, max(c.next_offset) AS oldest_needed
             FROM clickflow_checkpoints c
             JOIN clickflow_offsets o ON o.topic = c.topic AND o.partition = c.partition
             WHERE c.highest_event_time IS NULL
                OR c.highest_event_time < coalesce(o.retain_from, $1)
             GROUP BY c.topic, c.partition) k
         WHERE c.topic = k.topic AND c.partition = k.partition AND c.next_offset < k.oldest_needed",
        &[&fallback],
    )
    .await
    .map_err(SinkError::statement("pruning checkpoints"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clickflow_dataflow::rows::{FeatureValues, Probability, ScoreRow, SessionRow};

    use super::*;
    use crate::postgres::batch::{fresh_and_updated, split};
    use crate::postgres::schema::{connect, prepare};
    use crate::postgres::testing::{block_on, scratch_database};

    fn session(id: &str, views: i64) -> SessionRow {
        SessionRow {
            session_id: id.into(),
            user_id: "u1".into(),
            num_views: views,
            num_cart_adds: 0,
            num_purchases: 0,
            session_start: 1_751_900_000_000,
            last_event: 1_751_900_060_000,
            num_products: 1,
            cart_value_cents: 0,
            closed: false,
        }
    }

    fn score(id: &str, views: f64) -> ScoreRow {
        ScoreRow {
            session_id: id.into(),
            session_start: 1_751_900_000_000,
            user_id: "u1".into(),
            churn_probability: Probability(0.25),
            model_version: "v1".into(),
            features: FeatureValues([views, 0.0, 0.0, 60.0, 1.0, 0.0, 0.0, 0.0]),
            as_of: 1_751_900_060_000,
        }
    }

    /// The `(text, value)` pairs of the rows `sql` answers.
    async fn pairs<T>(writer: &Writer, sql: &str) -> Vec<(String, T)>
    where
        T: for<'a> tokio_postgres::types::FromSql<'a>,
    {
        let rows = writer.client().query(sql, &[]).await.unwrap();
        rows.iter().map(|row| (row.get(0), row.get(1))).collect()
    }

    fn epoch(epoch: u64, sessions: Vec<(SessionRow, isize)>) -> EpochOutput {
        EpochOutput {
            epoch,
            sessions,
            ..EpochOutput::default()
        }
    }

    /// New rows go in by a plain INSERT, changed ones by an upsert; a row inserted as new
    /// that is there already (which the stages never send) is applied as an update, in
    /// the same transaction, through the array parameters and through COPY alike (whole, and
    /// a row at a time).
    #[test]
    fn rows_inserted_as_new_that_are_there_already_are_applied_as_updates() {
        for (name, copy_threshold, rows_per_statement) in [
            ("new_rows_unnest", usize::MAX, ROWS_PER_STATEMENT),
            ("new_rows_sliced", usize::MAX, 1),
            ("new_rows_copy", 0, ROWS_PER_STATEMENT),
            ("new_rows_copy_sliced", 0, 1),
        ] {
            let (_db, url) = scratch_database(name);
            block_on(async {
                prepare(&url).await.unwrap();
                let mut writer = Writer::new(connect(&url).await.unwrap(), copy_threshold, None);
                writer.rows_per_statement = rows_per_statement;
                let first = epoch(1, vec![(session("a", 1), 1), (session("b", 1), 1)]);
                writer.write_epoch(&first, false).await.unwrap();
                // "b" changes the way the stages send it; "a" comes again as if new.
                let second = epoch(
                    2,
                    vec![
                        (session("a", 5), 1),
                        (session("b", 1), -1),
                        (session("b", 7), 1),
                        (session("c", 2), 1),
                    ],
                );
                let (inserted, _) = split(&second.sessions, SessionRow::key);
                let (new, changed) =
                    fresh_and_updated(&inserted, &second.sessions, SessionRow::key);
                let ids = |rows: Vec<&SessionRow>| -> Vec<String> {
                    rows.iter().map(|r| r.session_id.to_string()).collect()
                };
                assert_eq!(ids(new), ["a", "c"]);
                assert_eq!(ids(changed), ["b"]);
                let written = writer.write_epoch(&second, false).await.unwrap();
                assert_eq!(written.rows, 3, "{name}: b's retraction is its update");
                let views: Vec<(String, i64)> = pairs(
                    &writer,
                    "SELECT session_id, num_views FROM session_features ORDER BY 1",
                )
                .await;
                let expected = [("a", 5), ("b", 7), ("c", 2)].map(|(id, v)| (id.to_string(), v));
                assert_eq!(views, expected, "{name}");
            });
        }
    }

    /// The prediction log takes every score by a plain `INSERT`; a transaction that gives a
    /// logged prediction again (as the first after a restart's replay does) logs it once
    /// and the rest of its predictions still, through the array parameters and COPY alike.
    #[test]
    fn a_prediction_given_again_is_logged_once() {
        for (name, copy_threshold) in [("log_unnest", usize::MAX), ("log_copy", 0)] {
            let (_db, url) = scratch_database(name);
            block_on(async {
                prepare(&url).await.unwrap();
                let retention = Some(Duration::from_secs(7 * 24 * 3600));
                let mut writer =
                    Writer::new(connect(&url).await.unwrap(), copy_threshold, retention);
                let first = EpochOutput {
                    epoch: 1,
                    scores: vec![(score("a", 1.0), 1)],
                    ..EpochOutput::default()
                };
                writer.write_epoch(&first, false).await.unwrap();
                // A restart: "a" is scored anew on the same features, "b" for the first time.
                let second = EpochOutput {
                    epoch: 2,
                    scores: vec![(score("a", 1.0), 1), (score("b", 2.0), 1)],
                    ..EpochOutput::default()
                };
                writer.write_epoch(&second, false).await.unwrap();
                // "a" moves on: a new prediction about the same session.
                let third = EpochOutput {
                    epoch: 3,
                    scores: vec![(score("a", 1.0), -1), (score("a", 3.0), 1)],
                    ..EpochOutput::default()
                };
                writer.write_epoch(&third, false).await.unwrap();
                let logged: Vec<(String, f64)> = pairs(
                    &writer,
                    "SELECT session_id, features[1] FROM churn_predictions ORDER BY 1, 2",
                )
                .await;
                let expected =
                    [("a", 1.0), ("a", 3.0), ("b", 2.0)].map(|(id, v)| (id.to_string(), v));
                assert_eq!(logged, expected, "{name}");
            });
        }
    }
}
