//! Writing one epoch as one transaction.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use clickflow_dataflow::EpochOutput;
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::batch::{stage_epoch, Staged};
use super::SinkError;

/// A connection with what it has prepared.
pub(super) struct Writer {
    client: Client,
    /// Prepared `unnest` statements, by staging table name.
    statements: HashMap<&'static str, tokio_postgres::Statement>,
    /// Staging tables created on this connection.
    staging_tables: HashSet<&'static str>,
    copy_threshold: usize,
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
        for batch in &staged {
            rows += batch.len();
            // Statements answer rows only to say what they inserted (dead letters by kind).
            let answered = if batch.len() > self.copy_threshold {
                copy_and_apply(&self.client, batch, &mut self.staging_tables).await?
            } else {
                let statement = match self.statements.get(batch.statement.staging) {
                    Some(statement) => statement.clone(),
                    None => {
                        let sql = batch.statement.sql.replace("{src}", &unnest_source(batch));
                        let statement = self
                            .client
                            .prepare(&sql)
                            .await
                            .map_err(SinkError::statement("preparing an upsert"))?;
                        self.statements
                            .insert(batch.statement.staging, statement.clone());
                        statement
                    }
                };
                let params: Vec<&(dyn ToSql + Sync)> =
                    batch.values.iter().map(|c| c.as_array()).collect();
                self.client
                    .query(&statement, &params)
                    .await
                    .map_err(SinkError::statement("an upsert"))?
            };
            dead_letters.extend(answered.iter().map(|row| (row.get(0), row.get(1))));
        }
        Ok(Written { rows, dead_letters })
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
        .values
        .iter()
        .enumerate()
        .map(|(i, column)| format!("${}::{}[]", i + 1, column.sql_type()))
        .collect();
    format!(
        "unnest({}) AS s({})",
        arrays.join(", "),
        batch.statement.columns.join(", ")
    )
}

/// The large-batch path: binary COPY into a temporary staging table (emptied at commit),
/// then the statement reads from it.
async fn copy_and_apply(
    tx: &Client,
    batch: &Staged<'_>,
    created: &mut HashSet<&'static str>,
) -> Result<Vec<tokio_postgres::Row>, SinkError> {
    let statement = batch.statement;
    if !created.contains(statement.staging) {
        let columns: Vec<String> = statement
            .columns
            .iter()
            .zip(&batch.values)
            .map(|(name, c)| format!("{name} {}", c.sql_type()))
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
    let sink = tx
        .copy_in(&copy)
        .await
        .map_err(SinkError::statement("starting COPY"))?;
    let types: Vec<_> = batch.values.iter().map(|c| c.pg_type()).collect();
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    let mut row: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(batch.values.len());
    for i in 0..batch.len() {
        row.clear();
        row.extend(batch.values.iter().map(|c| c.value(i)));
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(SinkError::statement("COPY"))?;
    }
    writer
        .finish()
        .await
        .map_err(SinkError::statement("finishing COPY"))?;
    let sql = statement
        .sql
        .replace("{src}", &format!("{} AS s", statement.staging));
    tx.query(sql.as_str(), &[])
        .await
        .map_err(SinkError::statement("applying a staged batch"))
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
