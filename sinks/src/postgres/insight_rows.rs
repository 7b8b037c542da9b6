//! The statements that write `product_recommendations` and `funnel_conversion`, their
//! columns, and reading them back.
//!
//! Both are written like every table: a retracted row whose key is not inserted again is
//! deleted, an inserted row is upserted by its key.

use clickflow_dataflow::rows::{ConversionRow, Measure, RecommendationRow};
use clickflow_dataflow::window::Window;
use clickflow_dataflow::EpochOutput;
use clickflow_sources::EventType;
use tokio_postgres::Client;

use super::batch::{instant, split, text, Column, Staged, Statement};
use super::read_back::ms;
use super::SinkError;

const RECOMMENDATIONS_UPSERT: Statement = Statement {
    staging: "clickflow_stage_recommendations",
    columns: &[
        "product_id",
        "rank",
        "recommended_id",
        "score",
        "co_sessions",
    ],
    sql: "INSERT INTO product_recommendations
              (product_id, rank, recommended_id, score, co_sessions, batch_time)
          SELECT s.product_id, s.rank::integer, s.recommended_id, s.score, s.co_sessions, now()
          FROM {src}
          ON CONFLICT (product_id, rank) DO UPDATE SET
              recommended_id = EXCLUDED.recommended_id, score = EXCLUDED.score,
              co_sessions = EXCLUDED.co_sessions, batch_time = EXCLUDED.batch_time",
    fresh: None,
};

const RECOMMENDATIONS_DELETE: Statement = Statement {
    staging: "clickflow_stage_recommendations_gone",
    columns: &["product_id", "rank"],
    sql: "DELETE FROM product_recommendations t USING {src}
          WHERE t.product_id = s.product_id AND t.rank = s.rank::integer",
    fresh: None,
};

const CONVERSION_UPSERT: Statement = Statement {
    staging: "clickflow_stage_conversion",
    columns: &[
        "window_start",
        "window_end",
        "step",
        "sessions",
        "conversion_from_previous",
        "median_ms_from_previous",
    ],
    sql: "INSERT INTO funnel_conversion (window_start, window_end, step, sessions,
              conversion_from_previous, median_time_from_previous_s, batch_time)
          SELECT s.window_start, s.window_end, s.step, s.sessions, s.conversion_from_previous,
                 s.median_ms_from_previous::double precision / 1000, now()
          FROM {src}
          ON CONFLICT (window_start, step) DO UPDATE SET
              window_end = EXCLUDED.window_end, sessions = EXCLUDED.sessions,
              conversion_from_previous = EXCLUDED.conversion_from_previous,
              median_time_from_previous_s = EXCLUDED.median_time_from_previous_s,
              batch_time = EXCLUDED.batch_time",
    fresh: None,
};

const CONVERSION_DELETE: Statement = Statement {
    staging: "clickflow_stage_conversion_gone",
    columns: &["window_start", "step"],
    sql: "DELETE FROM funnel_conversion t USING {src}
          WHERE t.window_start = s.window_start AND t.step = s.step",
    fresh: None,
};

/// The epoch's `product_recommendations` and `funnel_conversion` changes, deletes first.
pub(super) fn stage_insights(output: &EpochOutput) -> [Staged<'_>; 4] {
    let (recs, recs_gone) = split(&output.recommendations, RecommendationRow::key);
    let (steps, steps_gone) = split(&output.conversion, |r| (r.window, r.step));
    [
        Staged::new(&RECOMMENDATIONS_DELETE, recs_gone, |rows| {
            vec![
                text(rows, |r| &r.product_id),
                Column::Int8(rows.iter().map(|r| r.rank).collect()),
            ]
        }),
        Staged::new(&CONVERSION_DELETE, steps_gone, |rows| {
            vec![
                Column::Timestamp(rows.iter().map(|r| instant(r.window.start)).collect()),
                text(rows, |r| r.step.as_str()),
            ]
        }),
        Staged::new(&RECOMMENDATIONS_UPSERT, recs, |rows| {
            vec![
                text(rows, |r| &r.product_id),
                Column::Int8(rows.iter().map(|r| r.rank).collect()),
                text(rows, |r| &r.recommended_id),
                Column::Float8(rows.iter().map(|r| r.score.0).collect()),
                Column::Int8(rows.iter().map(|r| r.co_sessions).collect()),
            ]
        }),
        Staged::new(&CONVERSION_UPSERT, steps, |rows| {
            vec![
                Column::Timestamp(rows.iter().map(|r| instant(r.window.start)).collect()),
                Column::Timestamp(rows.iter().map(|r| instant(r.window.end)).collect()),
                text(rows, |r| r.step.as_str()),
                Column::Int8(rows.iter().map(|r| r.sessions).collect()),
                Column::OptionalFloat8(
                    rows.iter()
                        .map(|r| r.conversion_from_previous.map(|c| c.0))
                        .collect(),
                ),
                Column::OptionalInt8(rows.iter().map(|r| r.median_ms_from_previous).collect()),
            ]
        }),
    ]
}

/// Every `product_recommendations` row.
pub(super) async fn read_recommendations(
    client: &Client,
) -> Result<Vec<RecommendationRow>, SinkError> {
    let rows = client
        .query(
            "SELECT product_id, rank::bigint, recommended_id, score, co_sessions
             FROM product_recommendations",
            &[],
        )
        .await
        .map_err(SinkError::statement("reading product_recommendations"))?;
    Ok(rows
        .iter()
        .map(|row| RecommendationRow {
            product_id: row.get::<_, &str>(0).into(),
            rank: row.get(1),
            recommended_id: row.get::<_, &str>(2).into(),
            score: Measure(row.get(3)),
            co_sessions: row.get(4),
        })
        .collect())
}

/// Every `funnel_conversion` row (a step name clickflow does not know is skipped).
pub(super) async fn read_conversion(client: &Client) -> Result<Vec<ConversionRow>, SinkError> {
    let sql = format!(
        "SELECT {}, {}, step, sessions, conversion_from_previous,
                round(median_time_from_previous_s * 1000)::bigint
         FROM funnel_conversion",
        ms("window_start"),
        ms("window_end")
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(SinkError::statement("reading funnel_conversion"))?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            Some(ConversionRow {
                window: Window {
                    start: row.get(0),
                    end: row.get(1),
                },
                step: EventType::from_wire(row.get(2))?,
                sessions: row.get(3),
                conversion_from_previous: row.get::<_, Option<f64>>(4).map(Measure),
                median_ms_from_previous: row.get(5),
            })
        })
        .collect())
}
