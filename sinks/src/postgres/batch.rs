//! Rows of an epoch turned into columns, and the statements that apply them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::Hash;
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clickflow_dataflow::rows::{FunnelRow, ScoreRow, SessionRow, TrendRow};
use clickflow_dataflow::EpochOutput;
use clickflow_model::FEATURE_COUNT;
use clickflow_sources::dead_letter::storable_text;
use clickflow_sources::{EventTime, PartitionId};
use tokio_postgres::types::{ToSql, Type};

use super::alert_rows::stage_alerts;
use super::copy_values::{Cents, FeatureArray};
use super::insight_rows::stage_insights;

/// One column of values, borrowing the epoch's text where it can: a merged backfill epoch
/// holds a million rows, and owned copies of their ids doubled the sink's memory.
pub(super) enum Column<'a> {
    Int8(Vec<i64>),
    /// Instants, sent as `timestamptz` in PostgreSQL's binary form: converting milliseconds
    /// in SQL (`timestamptz 'epoch' + ms * interval '1 ms'`) cost about a microsecond per
    /// value on the server, a third of the time of a session upsert.
    Timestamp(Vec<SystemTime>),
    OptionalInt8(Vec<Option<i64>>),
    Text(Vec<Cow<'a, str>>),
    Float8(Vec<f64>),
    OptionalFloat8(Vec<Option<f64>>),
    /// Amounts in cents, as `numeric` (what COPY into a table's `numeric(18,2)` column
    /// takes; statements read cents as `bigint` and divide).
    Cents(Vec<Cents>),
    /// A score's features as one `double precision[]` (what COPY into a table takes;
    /// statements read them as a column each).
    Features(Vec<FeatureArray>),
    Bool(Vec<bool>),
}

impl Column<'_> {
    pub(super) fn pg_type(&self) -> Type {
        match self {
            Column::Int8(_) | Column::OptionalInt8(_) => Type::INT8,
            Column::Timestamp(_) => Type::TIMESTAMPTZ,
            Column::Text(_) => Type::TEXT,
            Column::Float8(_) | Column::OptionalFloat8(_) => Type::FLOAT8,
            Column::Bool(_) => Type::BOOL,
            Column::Cents(_) => Type::NUMERIC,
            Column::Features(_) => Type::FLOAT8_ARRAY,
        }
    }

    pub(super) fn sql_type(&self) -> &'static str {
        match self {
            Column::Int8(_) | Column::OptionalInt8(_) => "bigint",
            Column::Timestamp(_) => "timestamptz",
            Column::Text(_) => "text",
            Column::Float8(_) | Column::OptionalFloat8(_) => "double precision",
            Column::Bool(_) => "boolean",
            Column::Cents(_) => "numeric",
            Column::Features(_) => "double precision[]",
        }
    }

    /// Rows `rows` of the column, as an array parameter.
    pub(super) fn slice(&self, rows: Range<usize>) -> Box<dyn ToSql + Sync + '_> {
        match self {
            Column::Int8(v) => Box::new(&v[rows]),
            Column::Timestamp(v) => Box::new(&v[rows]),
            Column::OptionalInt8(v) => Box::new(&v[rows]),
            Column::Text(v) => Box::new(&v[rows]),
            Column::Float8(v) => Box::new(&v[rows]),
            Column::OptionalFloat8(v) => Box::new(&v[rows]),
            Column::Bool(v) => Box::new(&v[rows]),
            Column::Cents(v) => Box::new(&v[rows]),
            Column::Features(v) => Box::new(&v[rows]),
        }
    }

    /// How many values it holds.
    pub(super) fn len(&self) -> usize {
        match self {
            Column::Int8(v) => v.len(),
            Column::Timestamp(v) => v.len(),
            Column::OptionalInt8(v) => v.len(),
            Column::Text(v) => v.len(),
            Column::Float8(v) => v.len(),
            Column::OptionalFloat8(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Cents(v) => v.len(),
            Column::Features(v) => v.len(),
        }
    }

    /// The value of row `i`.
    pub(super) fn value(&self, i: usize) -> &(dyn ToSql + Sync) {
        match self {
            Column::Int8(v) => &v[i],
            Column::Timestamp(v) => &v[i],
            Column::OptionalInt8(v) => &v[i],
            Column::Text(v) => &v[i],
            Column::Float8(v) => &v[i],
            Column::OptionalFloat8(v) => &v[i],
            Column::Bool(v) => &v[i],
            Column::Cents(v) => &v[i],
            Column::Features(v) => &v[i],
        }
    }
}

/// A statement that applies staged rows, reading them from `{src}` (an `unnest` of array
/// parameters, or a staging table filled by COPY); or, for rows believed new, a COPY
/// straight into their table ([`Fresh`]).
pub(super) struct Statement {
    /// The staging table's name, for the COPY path (and the statement's name in logs).
    pub(super) staging: &'static str,
    /// The columns, as `{src}` exposes them and as the batch's rows are staged.
    pub(super) columns: &'static [&'static str],
    /// The SQL, with `{src}` standing for the rows; for a [`Fresh`] statement, the COPY
    /// into its table.
    pub(super) sql: &'static str,
    /// For rows the epoch believes new: how they go into their table.
    pub(super) fresh: Option<&'static Fresh>,
}

/// Rows believed new (see [`fresh_and_updated`]) are copied straight into their table,
/// and applied by `if_present` should one of them be there already.
///
/// Binary COPY into the table, against `INSERT ... SELECT` from the `unnest` of array
/// parameters: 272,447 session rows took 0.97–1.00 s against 1.74 s (PostgreSQL 15, this
/// 2-core machine, 6 December 2026); a plain `INSERT ... SELECT` from a table took 0.96–1.23
/// s, the server's own cost of the rows and their index. A prepared transaction refuses the
/// temporary staging tables, never a COPY into a table. `clickflow bench` (2M events, whose
/// last transaction inserts 272,447 sessions and 260,500 scores; alternating runs, same
/// sitting): 6.62–8.15 s against 7.40–9.26 s through `unnest`, tables equal to the oracle.
pub(super) struct Fresh {
    /// The batch's columns as the table takes them (in the order of the statement's COPY),
    /// given the transaction's `now()` for the time the rows were written.
    pub(super) table_columns: for<'a> fn(Vec<Column<'a>>, SystemTime) -> Vec<Column<'a>>,
    /// The statement that applies the same rows instead: an update of the rows there (the
    /// session and score tables) or an insert that skips them (the prediction log).
    pub(super) if_present: &'static Statement,
}

/// The rows of one statement, turned into columns a slice at a time as they are written.
///
/// An epoch's rows stay in the epoch's output until its transaction is done; their columns
/// are made for one slice of a statement's rows at a time (see [`super::write`]), not for
/// the whole epoch ahead of writing it. Staged whole, the columns of `clickflow bench`'s
/// last transaction (272,447 session rows and 260,500 scores, 129 and 176 bytes a row as
/// columns) stood beside the rows for the 2.5 s the writers took: `run --input` on that
/// file with a model held 371–374 MB while writing, 326–330 MB staged by slice (6 December
/// 2026, one RSS trace each). The run's peak is now set earlier, when an epoch closes.
pub(super) struct Staged<'a> {
    pub(super) statement: &'static Statement,
    len: usize,
    columns: Box<dyn Fn(Range<usize>) -> Vec<Column<'a>> + Send + Sync + 'a>,
}

impl<'a> Staged<'a> {
    /// `rows` for `statement`, whose columns `columns` makes from a slice of them.
    pub(super) fn new<R: Sync + 'a>(
        statement: &'static Statement,
        rows: Vec<&'a R>,
        columns: impl Fn(&[&'a R]) -> Vec<Column<'a>> + Send + Sync + 'a,
    ) -> Staged<'a> {
        Staged {
            statement,
            len: rows.len(),
            columns: Box::new(move |range| columns(&rows[range])),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The columns of the rows in `range`.
    pub(super) fn columns(&self, range: Range<usize>) -> Vec<Column<'a>> {
        (self.columns)(range)
    }

    /// The columns' types, as SQL names them.
    pub(super) fn sql_types(&self) -> Vec<&'static str> {
        self.columns(0..0).iter().map(Column::sql_type).collect()
    }
}

const TRENDS_UPSERT: Statement = Statement {
    staging: "clickflow_stage_trends",
    columns: &[
        "window_start",
        "window_end",
        "event_type",
        "count",
        "revenue_cents",
    ],
    sql:
        "INSERT INTO event_trends (window_start, window_end, event_type, count, revenue, batch_time)
          SELECT s.window_start, s.window_end, s.event_type, s.count,
                 s.revenue_cents::numeric / 100, now()
          FROM {src}
          ON CONFLICT (window_start, event_type) DO UPDATE SET
              window_end = EXCLUDED.window_end, count = EXCLUDED.count,
              revenue = EXCLUDED.revenue, batch_time = EXCLUDED.batch_time",
    fresh: None,
};

const TRENDS_DELETE: Statement = Statement {
    staging: "clickflow_stage_trends_gone",
    columns: &["window_start", "event_type"],
    sql: "DELETE FROM event_trends t USING {src}
          WHERE t.window_start = s.window_start AND t.event_type = s.event_type",
    fresh: None,
};

const FUNNEL_UPSERT: Statement = Statement {
    staging: "clickflow_stage_funnel",
    columns: &["window_start", "window_end", "event_type", "unique_users"],
    sql:
        "INSERT INTO funnel_summary (window_start, window_end, event_type, unique_users, batch_time)
          SELECT s.window_start, s.window_end, s.event_type,
                 s.unique_users, now()
          FROM {src}
          ON CONFLICT (window_start, event_type) DO UPDATE SET
              window_end = EXCLUDED.window_end, unique_users = EXCLUDED.unique_users,
              batch_time = EXCLUDED.batch_time",
    fresh: None,
};

const FUNNEL_DELETE: Statement = Statement {
    staging: "clickflow_stage_funnel_gone",
    columns: &["window_start", "event_type"],
    sql: "DELETE FROM funnel_summary t USING {src}
          WHERE t.window_start = s.window_start AND t.event_type = s.event_type",
    fresh: None,
};

/// The columns of a session row.
const SESSION_COLUMNS: &[&str] = &[
    "session_id",
    "user_id",
    "num_views",
    "num_cart_adds",
    "num_purchases",
    "session_start",
    "last_event",
    "duration_s",
    "num_products",
    "cart_value_cents",
    "closed",
];

/// Inserting session rows, without saying what happens to a row already there.
macro_rules! sessions_insert {
    () => {
        "INSERT INTO session_features (session_id, user_id, num_views, num_cart_adds,
              num_purchases, session_start, last_event, duration_s, num_products, cart_value,
              closed, batch_time)
          SELECT s.session_id, s.user_id, s.num_views, s.num_cart_adds, s.num_purchases,
                 s.session_start, s.last_event, s.duration_s, s.num_products,
                 s.cart_value_cents::numeric / 100, s.closed, now()
          FROM {src}"
    };
}

const SESSIONS_UPSERT: Statement = Statement {
    staging: "clickflow_stage_sessions",
    columns: SESSION_COLUMNS,
    sql: concat!(
        sessions_insert!(),
        "
          ON CONFLICT (session_id, session_start) DO UPDATE SET
              user_id = EXCLUDED.user_id, num_views = EXCLUDED.num_views,
              num_cart_adds = EXCLUDED.num_cart_adds, num_purchases = EXCLUDED.num_purchases,
              last_event = EXCLUDED.last_event, duration_s = EXCLUDED.duration_s,
              num_products = EXCLUDED.num_products, cart_value = EXCLUDED.cart_value,
              closed = EXCLUDED.closed, batch_time = EXCLUDED.batch_time"
    ),
    fresh: None,
};

/// Session rows no earlier epoch wrote (see [`fresh_and_updated`]).
const SESSIONS_INSERT: Statement = Statement {
    staging: "clickflow_stage_sessions_new",
    columns: SESSION_COLUMNS,
    sql: "COPY session_features (session_id, user_id, num_views, num_cart_adds, num_purchases,
              session_start, last_event, duration_s, num_products, cart_value, closed, batch_time)
          FROM STDIN BINARY",
    fresh: Some(&Fresh {
        table_columns: session_table_columns,
        if_present: &SESSIONS_UPSERT,
    }),
};

const SESSIONS_DELETE: Statement = Statement {
    staging: "clickflow_stage_sessions_gone",
    columns: &["session_id", "session_start"],
    sql: "DELETE FROM session_features t USING {src}
          WHERE t.session_id = s.session_id AND t.session_start = s.session_start",
    fresh: None,
};

/// The columns of a score, after `$extra` ones: its session, the model's answer and what it
/// was asked. The features travel as one column each (an `unnest` of a two-dimensional array
/// would flatten it) and are put back together as an array.
macro_rules! score_columns {
    ($($extra:literal),*) => {
        &[
            $($extra,)*
            "session_id", "session_start", "user_id", "churn_probability", "model_version",
            "as_of", "f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7",
        ]
    };
}

/// Inserting scores, without saying what happens to a row already there.
macro_rules! scores_insert {
    () => {
        "INSERT INTO churn_scores (session_id, session_start, user_id, churn_probability,
              model_version, as_of, features, scored_at)
          SELECT s.session_id, s.session_start, s.user_id, s.churn_probability,
                 s.model_version, s.as_of,
                 ARRAY[s.f0, s.f1, s.f2, s.f3, s.f4, s.f5, s.f6, s.f7], now()
          FROM {src}"
    };
}

const SCORES_UPSERT: Statement = Statement {
    staging: "clickflow_stage_scores",
    columns: score_columns!(),
    sql: concat!(
        scores_insert!(),
        "
          ON CONFLICT (session_id, session_start) DO UPDATE SET
              user_id = EXCLUDED.user_id, churn_probability = EXCLUDED.churn_probability,
              model_version = EXCLUDED.model_version, as_of = EXCLUDED.as_of,
              features = EXCLUDED.features, scored_at = EXCLUDED.scored_at"
    ),
    fresh: None,
};

/// Scores of sessions no earlier epoch scored (see [`fresh_and_updated`]).
const SCORES_INSERT: Statement = Statement {
    staging: "clickflow_stage_scores_new",
    columns: score_columns!(),
    sql: "COPY churn_scores (session_id, session_start, user_id, churn_probability,
              model_version, as_of, features, scored_at)
          FROM STDIN BINARY",
    fresh: Some(&Fresh {
        table_columns: score_table_columns,
        if_present: &SCORES_UPSERT,
    }),
};

/// Appending predictions to the log, without saying what happens to one there already.
macro_rules! predictions_insert {
    () => {
        "INSERT INTO churn_predictions (prediction_key, session_id, session_start, user_id,
              churn_probability, model_version, as_of, features, logged_at)
          SELECT s.prediction_key, s.session_id, s.session_start, s.user_id,
                 s.churn_probability, s.model_version, s.as_of,
                 ARRAY[s.f0, s.f1, s.f2, s.f3, s.f4, s.f5, s.f6, s.f7], now()
          FROM {src}"
    };
}

/// Predictions logged unless the log holds them already. A prediction is keyed by a hash of
/// what was asked and who answered (session, model version, the time and values of the
/// features): a transaction sent again after a lost acknowledgement, or a restart that
/// gives the same prediction again (the churn stage scores every open session anew after
/// its replay), logs it once.
const PREDICTIONS_IF_ABSENT: Statement = Statement {
    staging: "clickflow_stage_predictions_again",
    columns: score_columns!("prediction_key"),
    sql: concat!(
        predictions_insert!(),
        "
          ON CONFLICT (as_of, prediction_key) DO NOTHING"
    ),
    fresh: None,
};

/// Every score the epoch inserts, appended to the prediction log by a plain `INSERT`, and
/// by [`PREDICTIONS_IF_ABSENT`] in the rare transaction that repeats one (see
/// [`Fresh::if_present`]).
///
/// The log takes a row for every score, so wherever predictions are logged it is the sink's
/// largest statement: in a `demo --rate 100000` (6 December 2026, two runs) it took
/// 16.4–17.3 s of the server's 54.8–55.7 s of statements, more than `churn_scores`
/// (12.7–13.6 s) or `session_features` (11.7–12.9 s). Two things made a row dear, measured
/// on PostgreSQL 15 on this 2-core machine (200,000 predictions of one minute of event time
/// into a log of 2.2 million, twice each):
/// - the key: led by the hash, every row went to a random page of its index, besides the
///   index on `as_of`: 1.72–1.96 s. Keyed `(as_of, prediction_key)` (schema version 11),
///   new rows go near the end of the one index: 0.83–0.93 s. Without any index the same
///   rows took 0.25 s;
/// - `ON CONFLICT`, which makes every row a speculative insertion checked against the key
///   first: 1.72–1.73 s against 1.13–1.42 s plain, on the old key.
const PREDICTIONS_APPEND: Statement = Statement {
    staging: "clickflow_stage_predictions",
    columns: score_columns!("prediction_key"),
    sql: "COPY churn_predictions (prediction_key, session_id, session_start, user_id,
              churn_probability, model_version, as_of, features, logged_at)
          FROM STDIN BINARY",
    fresh: Some(&Fresh {
        table_columns: score_table_columns,
        if_present: &PREDICTIONS_IF_ABSENT,
    }),
};

const SCORES_DELETE: Statement = Statement {
    staging: "clickflow_stage_scores_gone",
    columns: &["session_id", "session_start"],
    sql: "DELETE FROM churn_scores t USING {src}
          WHERE t.session_id = s.session_id AND t.session_start = s.session_start",
    fresh: None,
};

const DEAD_LETTERS: Statement = Statement {
    staging: "clickflow_stage_dead_letters",
    columns: &["topic", "partition", "message_offset", "reason", "payload"],
    // Answers how many dead letters of each kind were actually inserted (a replayed one is
    // already there), for the run's summary.
    sql: "WITH inserted AS (
              INSERT INTO dead_letters (received_at, topic, partition, \"offset\", reason, payload)
              SELECT now(), s.topic, s.partition::integer, s.message_offset, s.reason, s.payload
              FROM {src}
              ON CONFLICT (topic, partition, \"offset\") DO NOTHING
              RETURNING split_part(reason, ':', 1) AS kind)
          SELECT kind, count(*) FROM inserted GROUP BY kind",
    fresh: None,
};

const OFFSETS: Statement = Statement {
    staging: "clickflow_stage_offsets",
    columns: &["topic", "partition", "next_offset", "highest_event_time"],
    sql: "INSERT INTO clickflow_offsets (topic, partition, next_offset, highest_event_time, updated_at)
          SELECT s.topic, s.partition::integer, s.next_offset, s.highest_event_time, now() FROM {src}
          ON CONFLICT (topic, partition) DO UPDATE SET
              next_offset = EXCLUDED.next_offset,
              highest_event_time = EXCLUDED.highest_event_time, updated_at = EXCLUDED.updated_at",
    fresh: None,
};

/// Everything an epoch writes, in the order it must be applied: deletes (retractions) before
/// upserts (insertions), then the prediction log (with `log_predictions`), dead letters and
/// offsets.
pub(super) fn stage_epoch(output: &EpochOutput, log_predictions: bool) -> Vec<Staged<'_>> {
    let (trend_upserts, trend_deletes) = split(&output.trends, |r| (r.window.start, r.event_type));
    let (funnel_upserts, funnel_deletes) =
        split(&output.funnel, |r| (r.window.start, r.event_type));
    let (session_upserts, session_deletes) = split(&output.sessions, SessionRow::key);
    let (score_upserts, score_deletes) = split(&output.scores, ScoreRow::key);
    let (new_sessions, changed_sessions) =
        fresh_and_updated(&session_upserts, &output.sessions, SessionRow::key);
    let (new_scores, changed_scores) =
        fresh_and_updated(&score_upserts, &output.scores, ScoreRow::key);
    let mut staged = vec![
        Staged::new(&TRENDS_DELETE, trend_deletes, |rows| {
            window_keys(rows.iter().map(|r| (r.window.start, r.event_type.as_str())))
        }),
        Staged::new(&FUNNEL_DELETE, funnel_deletes, |rows| {
            window_keys(rows.iter().map(|r| (r.window.start, r.event_type.as_str())))
        }),
        Staged::new(&SESSIONS_DELETE, session_deletes, |rows| {
            session_keys(
                rows.iter()
                    .map(|r| (r.session_id.as_str(), r.session_start)),
            )
        }),
        Staged::new(&SCORES_DELETE, score_deletes, |rows| {
            session_keys(
                rows.iter()
                    .map(|r| (r.session_id.as_str(), r.session_start)),
            )
        }),
        Staged::new(&TRENDS_UPSERT, trend_upserts, trend_columns),
        Staged::new(&FUNNEL_UPSERT, funnel_upserts, funnel_columns),
        Staged::new(&SESSIONS_UPSERT, changed_sessions, session_columns),
        Staged::new(&SESSIONS_INSERT, new_sessions, session_columns),
        Staged::new(&SCORES_UPSERT, changed_scores, score_columns),
        Staged::new(&SCORES_INSERT, new_scores, score_columns),
    ];
    staged.extend(stage_alerts(output));
    staged.extend(stage_insights(output));
    let logged = if log_predictions {
        score_upserts
    } else {
        Vec::new()
    };
    staged.extend([
        Staged::new(&PREDICTIONS_APPEND, logged, prediction_columns),
        Staged::new(
            &DEAD_LETTERS,
            output.dead_letters.iter().collect(),
            |rows| {
                let [topic, partition] = partition_columns(rows, |d| &d.partition);
                vec![
                    topic,
                    partition,
                    Column::Int8(rows.iter().map(|d| d.offset).collect()),
                    Column::Text(
                        rows.iter()
                            .map(|d| Cow::Owned(storable_text(&d.rejection.reason()).into_owned()))
                            .collect(),
                    ),
                    Column::Text(rows.iter().map(|d| storable_text(&d.payload)).collect()),
                ]
            },
        ),
        Staged::new(&OFFSETS, output.partitions.iter().collect(), |rows| {
            let [topic, partition] = partition_columns(rows, |p| &p.partition);
            vec![
                topic,
                partition,
                Column::Int8(rows.iter().map(|p| p.next_offset).collect()),
                Column::OptionalInt8(rows.iter().map(|p| p.highest).collect()),
            ]
        }),
    ]);
    staged.into_iter().filter(|s| s.len() > 0).collect()
}

/// The topic and partition number of the partition each row names.
fn partition_columns<'a, R>(
    rows: &[&'a R],
    partition: impl Fn(&'a R) -> &'a PartitionId,
) -> [Column<'a>; 2] {
    [
        text(rows, |r| &partition(r).topic),
        Column::Int8(
            rows.iter()
                .map(|r| i64::from(partition(r).partition))
                .collect(),
        ),
    ]
}

/// Rows inserted (the new value of their key) and rows only retracted (their key is gone).
pub(super) fn split<'a, R, K: Hash + Eq>(
    changes: &'a [(R, isize)],
    key: impl Fn(&'a R) -> K,
) -> (Vec<&'a R>, Vec<&'a R>) {
    let inserted: Vec<&R> = changes
        .iter()
        .filter(|(_, d)| *d > 0)
        .map(|(r, _)| r)
        .collect();
    let kept: HashSet<K> = inserted.iter().map(|r| key(r)).collect();
    let gone = changes
        .iter()
        .filter(|(r, d)| *d < 0 && !kept.contains(&key(r)))
        .map(|(r, _)| r)
        .collect();
    (inserted, gone)
}

/// `inserted` (from [`split`] of `changes`) parted into rows whose key `changes` does not
/// retract, and the rest.
///
/// A key the epoch inserts without retracting is, almost always, one no committed epoch
/// holds: the stages retract a row's committed value before they change it, a merged
/// transaction only folds epochs not yet committed, and replayed epochs are never written.
/// The exception is the first epoch after a restart's replay, in which the churn stage
/// inserts every open session's score anew (`clickflow_dataflow::kpi::churn`). Such rows
/// skip the check for a row already there that `ON CONFLICT` makes for every row (a plain
/// `INSERT` took 775–810 ms against 1,080–1,141 ms for 136,000 session rows through
/// `unnest`, the share a writer of a backfill epoch inserts; PostgreSQL 15, this 2-core
/// machine, 4 December 2026), and since 6 December go in by COPY ([`Fresh`]). Should a row
/// be there after all, the writer applies the batch as an upsert instead
/// ([`Fresh::if_present`]), so a wrong guess costs time (the batch written twice), never
/// correctness.
pub(super) fn fresh_and_updated<'a, R, K: Hash + Eq>(
    inserted: &[&'a R],
    changes: &'a [(R, isize)],
    key: impl Fn(&'a R) -> K,
) -> (Vec<&'a R>, Vec<&'a R>) {
    let retracted: HashSet<K> = changes
        .iter()
        .filter(|(_, d)| *d < 0)
        .map(|(r, _)| key(r))
        .collect();
    inserted.iter().partition(|r| !retracted.contains(&key(r)))
}

/// The instant `ms` milliseconds after the Unix epoch.
pub(super) fn instant(ms: EventTime) -> SystemTime {
    let offset = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + offset
    } else {
        UNIX_EPOCH - offset
    }
}

fn window_keys(keys: impl Iterator<Item = (i64, &'static str)>) -> Vec<Column<'static>> {
    let (starts, types): (Vec<SystemTime>, Vec<Cow<'static, str>>) =
        keys.map(|(s, t)| (instant(s), Cow::Borrowed(t))).unzip();
    vec![Column::Timestamp(starts), Column::Text(types)]
}

fn session_keys<'a>(keys: impl Iterator<Item = (&'a str, i64)>) -> Vec<Column<'a>> {
    let (ids, starts): (Vec<Cow<'a, str>>, Vec<SystemTime>) = keys
        .map(|(id, start)| (Cow::Borrowed(id), instant(start)))
        .unzip();
    vec![Column::Text(ids), Column::Timestamp(starts)]
}

fn trend_columns<'a>(rows: &[&'a TrendRow]) -> Vec<Column<'a>> {
    vec![
        Column::Timestamp(rows.iter().map(|r| instant(r.window.start)).collect()),
        Column::Timestamp(rows.iter().map(|r| instant(r.window.end)).collect()),
        text(rows, |r| r.event_type.as_str()),
        Column::Int8(rows.iter().map(|r| r.count).collect()),
        Column::Int8(rows.iter().map(|r| r.revenue_cents).collect()),
    ]
}

fn funnel_columns<'a>(rows: &[&'a FunnelRow]) -> Vec<Column<'a>> {
    vec![
        Column::Timestamp(rows.iter().map(|r| instant(r.window.start)).collect()),
        Column::Timestamp(rows.iter().map(|r| instant(r.window.end)).collect()),
        text(rows, |r| r.event_type.as_str()),
        Column::Int8(rows.iter().map(|r| r.unique_users).collect()),
    ]
}

/// A text column borrowing `field` of every row.
pub(super) fn text<'a, R>(rows: &[&'a R], field: impl Fn(&'a R) -> &'a str) -> Column<'a> {
    Column::Text(rows.iter().map(|r| Cow::Borrowed(field(r))).collect())
}

fn session_columns<'a>(rows: &[&'a SessionRow]) -> Vec<Column<'a>> {
    vec![
        text(rows, |r| &r.session_id),
        text(rows, |r| &r.user_id),
        Column::Int8(rows.iter().map(|r| r.num_views).collect()),
        Column::Int8(rows.iter().map(|r| r.num_cart_adds).collect()),
        Column::Int8(rows.iter().map(|r| r.num_purchases).collect()),
        Column::Timestamp(rows.iter().map(|r| instant(r.session_start)).collect()),
        Column::Timestamp(rows.iter().map(|r| instant(r.last_event)).collect()),
        Column::Float8(rows.iter().map(|r| r.duration_s()).collect()),
        Column::Int8(rows.iter().map(|r| r.num_products).collect()),
        Column::Int8(rows.iter().map(|r| r.cart_value_cents).collect()),
        Column::Bool(rows.iter().map(|r| r.closed).collect()),
    ]
}

fn score_columns<'a>(rows: &[&'a ScoreRow]) -> Vec<Column<'a>> {
    let mut columns = vec![
        text(rows, |r| &r.session_id),
        Column::Timestamp(rows.iter().map(|r| instant(r.session_start)).collect()),
        text(rows, |r| &r.user_id),
        Column::Float8(rows.iter().map(|r| r.churn_probability.0).collect()),
        text(rows, |r| &r.model_version),
        Column::Timestamp(rows.iter().map(|r| instant(r.as_of)).collect()),
    ];
    for feature in 0..FEATURE_COUNT {
        columns.push(Column::Float8(
            rows.iter().map(|r| r.features.0[feature]).collect(),
        ));
    }
    columns
}

fn prediction_columns<'a>(rows: &[&'a ScoreRow]) -> Vec<Column<'a>> {
    let mut columns = vec![Column::Int8(
        rows.iter().map(|r| prediction_key(r)).collect(),
    )];
    columns.extend(score_columns(rows));
    columns
}

/// Session columns ([`SESSION_COLUMNS`]) as `session_features` takes them: the cart's value
/// in currency units, and the time the rows were written.
fn session_table_columns(mut columns: Vec<Column<'_>>, now: SystemTime) -> Vec<Column<'_>> {
    let cents = SESSION_COLUMNS
        .iter()
        .position(|c| *c == "cart_value_cents")
        .expect("a session has a cart value");
    if let Column::Int8(values) = &mut columns[cents] {
        let values = std::mem::take(values);
        columns[cents] = Column::Cents(values.into_iter().map(Cents).collect());
    }
    let rows = columns.first().map_or(0, Column::len);
    columns.push(Column::Timestamp(vec![now; rows]));
    columns
}

/// Score columns (those of `score_columns!`, after any others) as `churn_scores` and
/// `churn_predictions` take them: the features as one array, and the time the rows were
/// written.
fn score_table_columns(mut columns: Vec<Column<'_>>, now: SystemTime) -> Vec<Column<'_>> {
    let features = columns.split_off(columns.len() - FEATURE_COUNT);
    let rows = columns.first().map_or(0, Column::len);
    let mut arrays = vec![FeatureArray([0.0; FEATURE_COUNT]); rows];
    for (feature, column) in features.into_iter().enumerate() {
        if let Column::Float8(values) = column {
            for (array, value) in arrays.iter_mut().zip(values) {
                array.0[feature] = value;
            }
        }
    }
    columns.push(Column::Features(arrays));
    columns.push(Column::Timestamp(vec![now; rows]));
    columns
}

/// The key of a logged prediction: XXH3-64 of the session, the model version, the time the
/// features describe and their bits.
pub(super) fn prediction_key(row: &ScoreRow) -> i64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    for text in [row.session_id.as_str(), &row.model_version] {
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.update(&row.session_start.to_le_bytes());
    hasher.update(&row.as_of.to_le_bytes());
    for value in row.features.0 {
        hasher.update(&value.to_bits().to_le_bytes());
    }
    hasher.digest() as i64
}
