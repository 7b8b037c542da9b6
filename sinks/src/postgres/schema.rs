//! Versioned, idempotent schema migrations, and the checks that make a bad database a clear
//! error at start rather than a crash later.

use std::collections::HashMap;

use tokio_postgres::Client;

use super::{DatabaseUrl, SinkError};

/// The migrations, in order. Each runs once, in a transaction, and is recorded in
/// `clickflow_schema_migrations`.
///
/// Types: times are `timestamptz`; counts `bigint`; money `numeric(18,2)` (exact, as revenue
/// is summed in integer cents); probabilities and durations `double precision`.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "tables of the reference design, offsets and checkpoints",
        r#"
-- Event times travel as Unix milliseconds; this turns them into timestamptz exactly.
CREATE FUNCTION clickflow_ms(bigint) RETURNS timestamptz
    IMMUTABLE STRICT LANGUAGE sql AS $$ SELECT timestamptz 'epoch' + $1 * interval '1 millisecond' $$;
CREATE TABLE event_trends (
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    event_type   text        NOT NULL,
    count        bigint      NOT NULL,
    revenue      numeric(18,2) NOT NULL DEFAULT 0,
    batch_time   timestamptz NOT NULL,
    PRIMARY KEY (window_start, event_type)
);
CREATE TABLE funnel_summary (
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    event_type   text        NOT NULL,
    unique_users bigint      NOT NULL,
    batch_time   timestamptz NOT NULL,
    PRIMARY KEY (window_start, event_type)
);
CREATE TABLE session_features (
    session_id    text PRIMARY KEY,
    user_id       text        NOT NULL,
    num_views     bigint      NOT NULL,
    num_cart_adds bigint      NOT NULL,
    num_purchases bigint      NOT NULL,
    session_start timestamptz NOT NULL,
    last_event    timestamptz NOT NULL,
    duration_s    double precision NOT NULL,
    closed        boolean     NOT NULL,
    batch_time    timestamptz NOT NULL
);
-- No secondary index: every session row is rewritten as its session goes on, and each index
-- would be rewritten with it. Dashboards read the dataflow's live views, not this table.
CREATE TABLE churn_scores (
    session_id        text PRIMARY KEY,
    user_id           text             NOT NULL,
    churn_probability double precision NOT NULL,
    model_version     text             NOT NULL,
    scored_at         timestamptz      NOT NULL
);
CREATE INDEX churn_scores_risk ON churn_scores (churn_probability DESC);
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    reason      text        NOT NULL,
    payload     text        NOT NULL,
    -- One dead letter per input message, however often it is replayed.
    UNIQUE (topic, partition, "offset")
);
CREATE INDEX dead_letters_received ON dead_letters (received_at DESC);
CREATE TABLE clickflow_offsets (
    topic              text    NOT NULL,
    partition          integer NOT NULL,
    next_offset        bigint  NOT NULL,
    highest_event_time bigint,
    updated_at         timestamptz NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE clickflow_checkpoints (
    topic              text    NOT NULL,
    partition          integer NOT NULL,
    next_offset        bigint  NOT NULL,
    highest_event_time bigint,
    created_at         timestamptz NOT NULL,
    PRIMARY KEY (topic, partition, next_offset)
);
CREATE TABLE clickflow_pipeline (
    id          integer PRIMARY KEY CHECK (id = 1),
    epoch       bigint  NOT NULL,
    watermark   bigint  NOT NULL,
    retain_from bigint,
    updated_at  timestamptz NOT NULL
);
"#,
    ),
    (
        2,
        "rows rewritten every epoch: in-page (HOT) updates, no index on the score",
        r#"
-- Session rows and their scores are rewritten many times while a session lasts. Free space
-- in each page lets PostgreSQL update them in place without touching the primary key index
-- (heap-only tuples), and an index on the probability would be rewritten with every score:
-- the dashboard reads the dataflow's live views, and "riskiest sessions" queries over
-- churn_scores scan it (or create their own index).
DROP INDEX IF EXISTS churn_scores_risk;
ALTER TABLE session_features SET (fillfactor = 80);
ALTER TABLE churn_scores SET (fillfactor = 80);
"#,
    ),
    (
        3,
        "a session is an id and its start: one id split by event-time gaps is several rows",
        r#"
-- Until now one id was one row, and a session that reused its id replaced the earlier row.
-- Existing rows keep their values; scores move to the key of the session they score.
ALTER TABLE session_features DROP CONSTRAINT session_features_pkey,
    ADD PRIMARY KEY (session_id, session_start);
ALTER TABLE churn_scores ADD COLUMN session_start timestamptz;
UPDATE churn_scores c SET session_start = s.session_start
    FROM session_features s WHERE s.session_id = c.session_id;
DELETE FROM churn_scores WHERE session_start IS NULL;
ALTER TABLE churn_scores ALTER COLUMN session_start SET NOT NULL,
    DROP CONSTRAINT churn_scores_pkey, ADD PRIMARY KEY (session_id, session_start);
"#,
    ),
    (
        4,
        "the input this pipeline belongs to",
        r#"
-- One pipeline per schema: the input it reads is recorded on its first start, and a run
-- with another input is refused (its offsets, watermark and rows would mix with these).
CREATE TABLE clickflow_input (
    id          integer PRIMARY KEY CHECK (id = 1),
    input       text        NOT NULL,
    fingerprint text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
"#,
    ),
    (
        5,
        "the prefix churn model: its features, the prediction log and the model registry",
        r#"
-- Two more session features, known while the session runs.
ALTER TABLE session_features
    ADD COLUMN num_products bigint NOT NULL DEFAULT 0,
    ADD COLUMN cart_value   numeric(18,2) NOT NULL DEFAULT 0;
-- Scores of the first model format came from a model that learnt from finished sessions
-- (the purchase among its features); no clickflow loads such a model any more. They go, and
-- every open session is scored afresh after the restart that applies this.
DELETE FROM churn_scores;
ALTER TABLE churn_scores
    ADD COLUMN as_of    timestamptz        NOT NULL,
    ADD COLUMN features double precision[] NOT NULL;
-- What each model said, when, about what (features in the order of the model file's
-- feature names); append-only, pruned by age (--prediction-retention).
CREATE TABLE churn_predictions (
    prediction_key    bigint PRIMARY KEY,
    session_id        text               NOT NULL,
    session_start     timestamptz        NOT NULL,
    user_id           text               NOT NULL,
    as_of             timestamptz        NOT NULL,
    features          double precision[] NOT NULL,
    churn_probability double precision   NOT NULL,
    model_version     text               NOT NULL,
    logged_at         timestamptz        NOT NULL
);
CREATE INDEX churn_predictions_as_of ON churn_predictions (as_of);
-- Every model the pipeline scored with or considered.
CREATE TABLE churn_models (
    model_version text PRIMARY KEY,
    trained_at    timestamptz NOT NULL,
    source        text        NOT NULL,
    sessions      bigint      NOT NULL,
    examples      bigint      NOT NULL,
    report        jsonb       NOT NULL,
    promoted_at   timestamptz,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
"#,
    ),
    (
        6,
        "retention per partition: a restart replays each partition from before its own oldest needed event",
        r#"
-- The earliest event time of this partition that open windows and sessions hold (NULL: as
-- clickflow_pipeline.retain_from, which a database migrated from version 5 has alone).
ALTER TABLE clickflow_offsets ADD COLUMN retain_from bigint;
"#,
    ),
    (
        7,
        "a sink that writes from every worker: writers' progress and the coordinator's decisions",
        r#"
-- The sink commits in rounds: the coordinator sets the cut (an epoch), every writer folds its
-- rows of the epochs up to it into one part, prepares it and records that it is through the
-- cut; then the coordinator commits the round and sets the next cut.
CREATE TABLE IF NOT EXISTS clickflow_cut (
    id  integer PRIMARY KEY CHECK (id = 1),
    cut bigint  NOT NULL
);
-- Each writer (one per timely worker, by its global index) records here, with each part it
-- prepares, that every epoch up to prepared_through is prepared or changed nothing of its
-- keys.
CREATE TABLE IF NOT EXISTS clickflow_writers (
    writer           integer     PRIMARY KEY,
    writers          integer     NOT NULL,
    prepared_through bigint      NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The prepared parts the coordinator has decided to commit, written in the transaction that
-- commits the epoch's offsets: after a crash, a prepared part listed here is committed and
-- any other is rolled back.
CREATE TABLE IF NOT EXISTS clickflow_commit_log (
    gid text PRIMARY KEY
);
"#,
    ),
    (
        8,
        "anomaly alerts: every closed window's final counts, and the alerts judged on them",
        r#"
-- One row per closed event-time window, written once when the watermark passes its end: what
-- the anomaly detectors judged. A restart rebuilds the detectors from it.
CREATE TABLE IF NOT EXISTS window_series (
    window_start   timestamptz PRIMARY KEY,
    window_end     timestamptz NOT NULL,
    clicks         bigint      NOT NULL,
    cart_adds      bigint      NOT NULL,
    purchases      bigint      NOT NULL,
    click_users    bigint      NOT NULL,
    cart_users     bigint      NOT NULL,
    purchase_users bigint      NOT NULL,
    revenue        numeric     NOT NULL,
    malformed      bigint      NOT NULL,
    late           bigint      NOT NULL,
    batch_time     timestamptz NOT NULL
);
-- One row per alert, from its opening to its resolution. raised_at and resolved_at are the
-- wall-clock times of the transactions that opened and resolved it; the notified_* columns
-- are the webhook's outbox (NULL until the receiver acknowledged the event).
CREATE TABLE IF NOT EXISTS alerts (
    alert_id             text        PRIMARY KEY,
    kind                 text        NOT NULL,
    rule                 text,
    series               text        NOT NULL,
    severity             text        NOT NULL,
    observed             double precision NOT NULL,
    expected             double precision NOT NULL,
    opened_window        timestamptz NOT NULL,
    latest_window        timestamptz NOT NULL,
    resolved_window      timestamptz,
    status               text        NOT NULL,
    raised_at            timestamptz NOT NULL,
    resolved_at          timestamptz,
    batch_time           timestamptz NOT NULL,
    open_notified_at     timestamptz,
    resolve_notified_at  timestamptz
);
CREATE INDEX IF NOT EXISTS alerts_by_status ON alerts (status, opened_window);
"#,
    ),
    (
        9,
        "change capture for the Kafka change topics: the outbox and its trigger function",
        r#"
-- Every committed change of a captured table (see --emit-kafka), written by a trigger in the
-- transaction that makes it, until the publisher has had it acknowledged by Kafka. seq orders
-- a key's changes and is never reused; epoch is the writing transaction's id, which grows
-- with every commit, across restarts.
CREATE TABLE IF NOT EXISTS clickflow_changes (
    seq          bigserial   PRIMARY KEY,
    source_table text        NOT NULL,
    key          jsonb       NOT NULL,
    op           text        NOT NULL CHECK (op IN ('c', 'u', 'd')),
    before       json,
    after        json,
    epoch        bigint      NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
-- Where the publisher stands: the last change Kafka acknowledged.
CREATE TABLE IF NOT EXISTS clickflow_publisher (
    id           integer     PRIMARY KEY CHECK (id = 1),
    last_seq     bigint      NOT NULL,
    last_epoch   bigint      NOT NULL,
    published    bigint      NOT NULL,
    updated_at   timestamptz NOT NULL
);
-- The trigger function, run once per statement over the rows it changed (the statement's
-- transition tables new_rows and old_rows). Its first argument names the table's
-- bookkeeping columns, comma-separated ('' for none): alerts' webhook delivery marks
-- (notified_*), which are not the alert's; they are left out, and an update that changes
-- nothing else captures nothing. The other arguments are the key columns. A row becomes
-- JSON once (row_to_json: every column, in table order), about 4 µs, the bulk of the cost.
CREATE OR REPLACE FUNCTION clickflow_capture_changes() RETURNS trigger
LANGUAGE plpgsql AS $capture$
DECLARE
    bookkeeping text := '';
    key_of      text;
    same_key    text;
    as_json     text := 'row_to_json(%s)';
    changed     text := 'o IS DISTINCT FROM n';
    epoch       bigint := pg_current_xact_id()::text::bigint;
    source      text := CASE TG_OP WHEN 'DELETE' THEN 'o' ELSE 'n' END;
BEGIN
    SELECT string_agg(format(' - %L', c), '') INTO bookkeeping
      FROM unnest(string_to_array(TG_ARGV[0], ',')) AS c;
    IF bookkeeping <> '' THEN
        as_json := '(to_jsonb(%s)' || bookkeeping || ')::json';
        changed := format('(to_jsonb(o)%s) IS DISTINCT FROM (to_jsonb(n)%s)',
                          bookkeeping, bookkeeping);
    END IF;
    SELECT string_agg(format('%L, %s.%I', k, source, k), ', '),
           string_agg(format('o.%I = n.%I', k, k), ' AND ')
      INTO key_of, same_key
      FROM unnest(TG_ARGV[1:]) AS k;
    IF TG_OP = 'INSERT' THEN
        EXECUTE format(
            $$INSERT INTO clickflow_changes (source_table, key, op, before, after, epoch)
              SELECT %L, jsonb_build_object(%s), 'c', NULL, %s, %s FROM new_rows n$$,
            TG_TABLE_NAME, key_of, format(as_json, 'n'), epoch);
    ELSIF TG_OP = 'UPDATE' THEN
        EXECUTE format(
            $$INSERT INTO clickflow_changes (source_table, key, op, before, after, epoch)
              SELECT %L, jsonb_build_object(%s), 'u', %s, %s, %s
              FROM old_rows o JOIN new_rows n ON %s WHERE %s$$,
            TG_TABLE_NAME, key_of, format(as_json, 'o'), format(as_json, 'n'), epoch,
            same_key, changed);
    ELSE
        EXECUTE format(
            $$INSERT INTO clickflow_changes (source_table, key, op, before, after, epoch)
              SELECT %L, jsonb_build_object(%s), 'd', %s, NULL, %s FROM old_rows o$$,
            TG_TABLE_NAME, key_of, format(as_json, 'o'), epoch);
    END IF;
    RETURN NULL;
END
$capture$;
"#,
    ),
    (
        10,
        "product_recommendations and funnel_conversion",
        r#"
-- A product's nearest neighbours by co-occurrence in the sessions of the recommender's
-- horizon, best first (rank 1): score is the sessions with both over
-- sessions(product)^0.9 * sessions(recommended)^0.1, co_sessions the sessions with both.
CREATE TABLE IF NOT EXISTS product_recommendations (
    product_id      text             NOT NULL,
    rank            integer          NOT NULL,
    recommended_id  text             NOT NULL,
    score           double precision NOT NULL,
    co_sessions     bigint           NOT NULL,
    batch_time      timestamptz      NOT NULL,
    PRIMARY KEY (product_id, rank)
);
-- The ordered funnel: per window of session start and step (click, add_to_cart, purchase),
-- the sessions that reached the step in order within the conversion window.
CREATE TABLE IF NOT EXISTS funnel_conversion (
    window_start                 timestamptz      NOT NULL,
    window_end                   timestamptz      NOT NULL,
    step                         text             NOT NULL,
    sessions                     bigint           NOT NULL,
    conversion_from_previous     double precision,
    median_time_from_previous_s  double precision,
    batch_time                   timestamptz      NOT NULL,
    PRIMARY KEY (window_start, step)
);
"#,
    ),
    (
        11,
        "the prediction log keyed by the time a prediction describes, then its hash",
        r#"
-- A key led by a hash put every logged prediction on a random page of its index; led by
-- as_of, new predictions go near the index's end, and the one index also serves the pruning
-- by age and the backtest's order (as_of, prediction_key).
ALTER TABLE churn_predictions DROP CONSTRAINT churn_predictions_pkey;
ALTER TABLE churn_predictions ADD PRIMARY KEY (as_of, prediction_key);
DROP INDEX churn_predictions_as_of;
"#,
    ),
];

/// The columns the sink writes, per table, with their types: checked at start.
const EXPECTED_COLUMNS: &[(&str, &[(&str, &str)])] = &[
    (
        "product_recommendations",
        &[
            ("product_id", "text"),
            ("rank", "integer"),
            ("recommended_id", "text"),
            ("score", "double precision"),
            ("co_sessions", "bigint"),
            ("batch_time", "timestamp with time zone"),
        ],
    ),
    (
        "funnel_conversion",
        &[
            ("window_start", "timestamp with time zone"),
            ("window_end", "timestamp with time zone"),
            ("step", "text"),
            ("sessions", "bigint"),
            ("conversion_from_previous", "double precision"),
            ("median_time_from_previous_s", "double precision"),
            ("batch_time", "timestamp with time zone"),
        ],
    ),
    (
        "window_series",
        &[
            ("window_start", "timestamp with time zone"),
            ("window_end", "timestamp with time zone"),
            ("clicks", "bigint"),
            ("cart_adds", "bigint"),
            ("purchases", "bigint"),
            ("click_users", "bigint"),
            ("cart_users", "bigint"),
            ("purchase_users", "bigint"),
            ("revenue", "numeric"),
            ("malformed", "bigint"),
            ("late", "bigint"),
            ("batch_time", "timestamp with time zone"),
        ],
    ),
    (
        "alerts",
        &[
            ("alert_id", "text"),
            ("kind", "text"),
            ("rule", "text"),
            ("series", "text"),
            ("severity", "text"),
            ("observed", "double precision"),
            ("expected", "double precision"),
            ("opened_window", "timestamp with time zone"),
            ("latest_window", "timestamp with time zone"),
            ("resolved_window", "timestamp with time zone"),
            ("status", "text"),
            ("raised_at", "timestamp with time zone"),
            ("resolved_at", "timestamp with time zone"),
            ("open_notified_at", "timestamp with time zone"),
            ("resolve_notified_at", "timestamp with time zone"),
        ],
    ),
    (
        "event_trends",
        &[
            ("window_start", "timestamp with time zone"),
            ("window_end", "timestamp with time zone"),
            ("event_type", "text"),
            ("count", "bigint"),
            ("revenue", "numeric"),
            ("batch_time", "timestamp with time zone"),
        ],
    ),
    (
        "funnel_summary",
        &[
            ("window_start", "timestamp with time zone"),
            ("window_end", "timestamp with time zone"),
            ("event_type", "text"),
            ("unique_users", "bigint"),
            ("batch_time", "timestamp with time zone"),
        ],
    ),
    (
        "session_features",
        &[
            ("session_id", "text"),
            ("user_id", "text"),
            ("num_views", "bigint"),
            ("num_cart_adds", "bigint"),
            ("num_purchases", "bigint"),
            ("session_start", "timestamp with time zone"),
            ("last_event", "timestamp with time zone"),
            ("duration_s", "double precision"),
            ("num_products", "bigint"),
            ("cart_value", "numeric"),
            ("closed", "boolean"),
            ("batch_time", "timestamp with time zone"),
        ],
    ),
    (
        "churn_scores",
        &[
            ("session_id", "text"),
            ("session_start", "timestamp with time zone"),
            ("user_id", "text"),
            ("churn_probability", "double precision"),
            ("model_version", "text"),
            ("as_of", "timestamp with time zone"),
            ("features", "ARRAY"),
            ("scored_at", "timestamp with time zone"),
        ],
    ),
    (
        "churn_predictions",
        &[
            ("prediction_key", "bigint"),
            ("session_id", "text"),
            ("session_start", "timestamp with time zone"),
            ("user_id", "text"),
            ("as_of", "timestamp with time zone"),
            ("features", "ARRAY"),
            ("churn_probability", "double precision"),
            ("model_version", "text"),
            ("logged_at", "timestamp with time zone"),
        ],
    ),
    (
        "churn_models",
        &[
            ("model_version", "text"),
            ("trained_at", "timestamp with time zone"),
            ("source", "text"),
            ("sessions", "bigint"),
            ("examples", "bigint"),
            ("report", "jsonb"),
            ("promoted_at", "timestamp with time zone"),
        ],
    ),
    (
        "dead_letters",
        &[
            ("received_at", "timestamp with time zone"),
            ("topic", "text"),
            ("partition", "integer"),
            ("offset", "bigint"),
            ("reason", "text"),
            ("payload", "text"),
        ],
    ),
    (
        "clickflow_offsets",
        &[
            ("topic", "text"),
            ("partition", "integer"),
            ("next_offset", "bigint"),
            ("highest_event_time", "bigint"),
            ("updated_at", "timestamp with time zone"),
            ("retain_from", "bigint"),
        ],
    ),
    (
        "clickflow_checkpoints",
        &[
            ("topic", "text"),
            ("partition", "integer"),
            ("next_offset", "bigint"),
            ("highest_event_time", "bigint"),
        ],
    ),
    (
        "clickflow_pipeline",
        &[
            ("id", "integer"),
            ("epoch", "bigint"),
            ("watermark", "bigint"),
            ("retain_from", "bigint"),
        ],
    ),
    (
        "clickflow_input",
        &[
            ("id", "integer"),
            ("input", "text"),
            ("fingerprint", "text"),
        ],
    ),
];

/// Opens a connection, driving it on the current tokio runtime.
pub(super) async fn connect(url: &DatabaseUrl) -> Result<Client, SinkError> {
    url.connect().await
}

/// Connects, applies pending migrations and checks that every table has the expected columns
/// and that this user may write them. Run once at start: every problem here is fatal.
///
/// Returns the connection, for the rest of the start's queries: opening one costs 4–6 ms
/// with TLS on this machine, and the start used to open five more one after another.
pub async fn prepare(url: &DatabaseUrl) -> Result<Client, SinkError> {
    let mut client = connect(url).await?;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_namespace WHERE nspname = $1",
            &[&url.schema()],
        )
        .await
        .map_err(SinkError::statement("looking for the schema"))?;
    if exists.is_none() {
        // Created only when missing: a user who may write an existing schema need not be
        // allowed to create one. The name is a plain identifier (`DatabaseUrl::with_schema`).
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", url.schema()))
            .await
            .map_err(SinkError::statement("creating the schema"))?;
    }
    migrate(&mut client).await?;
    check_columns(&client).await?;
    check_privileges(&client).await?;
    Ok(client)
}

async fn migrate(client: &mut Client) -> Result<(), SinkError> {
    // Serialise concurrent starts (the processes of one cluster) on one session lock.
    client
        .execute("SELECT pg_advisory_lock(724001)", &[])
        .await
        .map_err(SinkError::statement("locking for migrations"))?;
    let result = apply_migrations(client, MIGRATIONS).await;
    client
        .execute("SELECT pg_advisory_unlock(724001)", &[])
        .await
        .map_err(SinkError::statement("unlocking after migrations"))?;
    result
}

async fn apply_migrations(
    client: &mut Client,
    migrations: &[(i32, &str, &str)],
) -> Result<(), SinkError> {
    // Only create what is missing: a user who may write the tables need not own the schema.
    let exists = client
        .query_one(
            "SELECT to_regclass('clickflow_schema_migrations') IS NOT NULL",
            &[],
        )
        .await
        .map_err(SinkError::statement("looking for the migrations table"))?;
    if !exists.get::<_, bool>(0) {
        client
            .batch_execute(
                "CREATE TABLE clickflow_schema_migrations (
                     version integer PRIMARY KEY,
                     description text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(SinkError::statement("creating the migrations table"))?;
    }
    for &(version, description, sql) in migrations {
        let applied = client
            .query_opt(
                "SELECT 1 FROM clickflow_schema_migrations WHERE version = $1",
                &[&version],
            )
            .await
            .map_err(SinkError::statement("reading applied migrations"))?;
        if applied.is_some() {
            continue;
        }
        tracing::info!(version, description, "applying schema migration");
        let tx = client
            .transaction()
            .await
            .map_err(SinkError::statement("starting a migration"))?;
        tx.batch_execute(sql)
            .await
            .map_err(SinkError::statement("applying a migration"))?;
        tx.execute(
            "INSERT INTO clickflow_schema_migrations (version, description) VALUES ($1, $2)",
            &[&version, &description],
        )
        .await
        .map_err(SinkError::statement("recording a migration"))?;
        tx.commit()
            .await
            .map_err(SinkError::statement("committing a migration"))?;
    }
    Ok(())
}

/// The names of the tables the pipeline reads and writes.
fn expected_tables() -> Vec<&'static str> {
    EXPECTED_COLUMNS.iter().map(|(table, _)| *table).collect()
}

/// Checks every expected column in one query: one query per table (15) took 24 ms of each
/// start on a new database (the server's statement log, 6 December 2026).
async fn check_columns(client: &Client) -> Result<(), SinkError> {
    let rows = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ANY($1)",
            &[&expected_tables()],
        )
        .await
        .map_err(SinkError::statement("reading the schema"))?;
    let found: HashMap<(String, String), String> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let mut problems = Vec::new();
    for (table, columns) in EXPECTED_COLUMNS {
        for (column, data_type) in *columns {
            match found.get(&(table.to_string(), column.to_string())) {
                None => problems.push(format!("{table}.{column} is missing")),
                Some(actual) if actual != data_type => problems.push(format!(
                    "{table}.{column} is {actual}, expected {data_type}"
                )),
                Some(_) => {}
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SinkError::SchemaMismatch(problems.join("; ")))
    }
}

/// Checks every privilege the pipeline needs on every table in one query: four queries per
/// table (60) took 15 ms of each start, measured as above.
async fn check_privileges(client: &Client) -> Result<(), SinkError> {
    let rows = client
        .query(
            "SELECT privilege || ' on ' || table_name
             FROM unnest($1::text[]) WITH ORDINALITY AS t(table_name, t_order)
             CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'])
                  WITH ORDINALITY AS p(privilege, p_order)
             WHERE NOT has_table_privilege(current_user, table_name, privilege)
             ORDER BY t_order, p_order",
            &[&expected_tables()],
        )
        .await
        .map_err(SinkError::statement("checking privileges"))?;
    let missing: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SinkError::Privileges(missing.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::testing::{block_on, scratch_database};

    /// Migration 11 re-keys the prediction log by `(as_of, prediction_key)`: what was
    /// logged stays, and the index on `as_of` alone goes, the key serving in its place.
    #[test]
    fn the_prediction_log_keeps_its_rows_under_its_new_key() {
        let (db, url) = scratch_database("migration11");
        block_on(async {
            let mut client = connect(&url).await.unwrap();
            apply_migrations(&mut client, &MIGRATIONS[..10])
                .await
                .unwrap();
        });
        db.query(
            "INSERT INTO churn_predictions VALUES
                 (7, 's1', '2025-07-08 05:00:00+00', 'u1', '2025-07-08 05:10:00+00',
                  '{1,0,0,0,0,0,0,0}', 0.25, 'v1', now()),
                 (-3, 's2', '2025-07-08 06:00:00+00', 'u2', '2025-07-08 06:01:00+00',
                  '{2,0,0,0,0,0,0,0}', 0.5, 'v1', now())",
        );
        block_on(prepare(&url)).unwrap();
        assert_eq!(
            db.query(
                "SELECT string_agg(indexdef, '; ' ORDER BY indexname) FROM pg_indexes
                 WHERE tablename = 'churn_predictions'"
            ),
            "CREATE UNIQUE INDEX churn_predictions_pkey ON public.churn_predictions \
             USING btree (as_of, prediction_key)"
        );
        assert_eq!(
            db.query(
                "SELECT string_agg(session_id || ' ' || prediction_key, ',' ORDER BY as_of)
                 FROM churn_predictions"
            ),
            "s1 7,s2 -3"
        );
    }

    /// Migration 3 re-keys sessions by `(session_id, session_start)`: rows written under the
    /// old key keep their values, and scores move to the key of the session they score.
    /// Migration 5 then drops the scores of the first model format and adds the new session
    /// features with their defaults.
    #[test]
    fn sessions_written_under_the_old_key_are_moved_to_the_new_one() {
        let (db, url) = scratch_database("migration3");
        block_on(async {
            let mut client = connect(&url).await.unwrap();
            apply_migrations(&mut client, &MIGRATIONS[..2])
                .await
                .unwrap();
        });
        db.query(
            "INSERT INTO session_features VALUES
                 ('s1', 'u1', 3, 1, 0, '2025-07-08 05:00:00+00', '2025-07-08 05:10:00+00', 600, true, now()),
                 ('s2', 'u2', 1, 0, 0, '2025-07-08 06:00:00+00', '2025-07-08 06:00:00+00', 0, false, now());
             INSERT INTO churn_scores VALUES ('s1', 'u1', 0.25, 'rf-old', now()),
                                             ('gone', 'u3', 0.5, 'rf-old', now())",
        );
        block_on(async {
            let mut client = connect(&url).await.unwrap();
            apply_migrations(&mut client, &MIGRATIONS[..4])
                .await
                .unwrap();
        });
        assert_eq!(
            db.query(
                "SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                 WHERE i.indrelid = 'session_features'::regclass AND i.indisprimary"
            ),
            "session_id,session_start"
        );
        assert_eq!(
            db.query("SELECT string_agg(session_id || ' ' || num_views, ',' ORDER BY session_id) FROM session_features"),
            "s1 3,s2 1"
        );
        assert_eq!(
            db.query(
                "SELECT string_agg(c.session_id || ' ' || c.churn_probability, ',')
                 FROM churn_scores c JOIN session_features s USING (session_id, session_start)"
            ),
            "s1 0.25",
            "the score of s1 follows its session; the score of no session is dropped"
        );
        assert_eq!(db.query("SELECT count(*) FROM churn_scores"), "1");
        block_on(prepare(&url)).unwrap();
        assert_eq!(
            db.query("SELECT count(*) FROM churn_scores"),
            "0",
            "scores of the first model format are dropped"
        );
        assert_eq!(
            db.query(
                "SELECT string_agg(num_products || ' ' || cart_value, ',') FROM session_features"
            ),
            "0 0.00,0 0.00"
        );
        // A second session of s1, after a gap, can now be stored beside the first.
        db.query(
            "INSERT INTO session_features VALUES
                 ('s1', 'u1', 1, 0, 0, '2025-07-08 07:00:00+00', '2025-07-08 07:00:00+00', 0, false, now())",
        );
        assert_eq!(
            db.query("SELECT count(*) FROM session_features WHERE session_id = 's1'"),
            "2"
        );
    }
}
