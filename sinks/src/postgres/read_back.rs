//! Reading the tables back into memory: for verification against the oracle (tests and the
//! end-to-end benchmark) and for tools.

use clickflow_dataflow::rows::{
    FeatureValues, FunnelRow, Probability, ScoreRow, SessionRow, TrendRow,
};
use clickflow_dataflow::window::Window;
use clickflow_dataflow::Tables;
use clickflow_model::FEATURE_COUNT;
use clickflow_sources::{DeadLetter, EventType, PartitionId, RejectKind, Rejection};

use super::alert_rows::{read_alerts, read_window_series};
use super::insight_rows::{read_conversion, read_recommendations};
use super::schema::connect;
use super::{DatabaseUrl, SinkError};

/// Unix milliseconds of a timestamptz column.
pub(super) fn ms(column: &str) -> String {
    format!("(extract(epoch FROM {column}) * 1000)::bigint")
}

/// Every row of `event_trends`, `funnel_summary`, `session_features`, `churn_scores`,
/// `dead_letters` (in insertion order) and `clickflow_offsets`.
pub async fn read_tables(url: &DatabaseUrl) -> Result<Tables, SinkError> {
    let client = connect(url).await?;
    let read = SinkError::statement("reading the tables back");
    let mut tables = Tables::default();
    let sql = format!(
        "SELECT {}, {}, event_type, count, (revenue * 100)::bigint FROM event_trends",
        ms("window_start"),
        ms("window_end")
    );
    for row in client.query(&sql, &[]).await.map_err(read)? {
        let window = Window {
            start: row.get(0),
            end: row.get(1),
        };
        let Some(event_type) = EventType::from_wire(row.get(2)) else {
            continue;
        };
        let trend = TrendRow {
            window,
            event_type,
            count: row.get(3),
            revenue_cents: row.get(4),
        };
        tables.trends.insert((window, event_type), trend);
    }
    let read = SinkError::statement("reading the tables back");
    let sql = format!(
        "SELECT {}, {}, event_type, unique_users FROM funnel_summary",
        ms("window_start"),
        ms("window_end")
    );
    for row in client.query(&sql, &[]).await.map_err(read)? {
        let window = Window {
            start: row.get(0),
            end: row.get(1),
        };
        let Some(event_type) = EventType::from_wire(row.get(2)) else {
            continue;
        };
        tables.funnel.insert(
            (window, event_type),
            FunnelRow {
                window,
                event_type,
                unique_users: row.get(3),
            },
        );
    }
    for session in query_sessions(&client, "").await? {
        tables.sessions.insert(session.key(), session);
    }
    let read = SinkError::statement("reading the tables back");
    let sql = format!(
        "SELECT session_id, user_id, churn_probability, model_version, {}, {}, features
         FROM churn_scores",
        ms("session_start"),
        ms("as_of")
    );
    for row in client.query(&sql, &[]).await.map_err(read)? {
        let score = ScoreRow {
            session_id: row.get::<_, &str>(0).into(),
            user_id: row.get::<_, &str>(1).into(),
            churn_probability: Probability(row.get(2)),
            model_version: row.get::<_, &str>(3).into(),
            session_start: row.get(4),
            as_of: row.get(5),
            features: feature_values(row.get(6)),
        };
        tables.scores.insert(score.key(), score);
    }
    tables.series = read_window_series(&client)
        .await?
        .into_iter()
        .map(|p| (p.window.start, p))
        .collect();
    tables.alerts = read_alerts(&client)
        .await?
        .into_iter()
        .map(|a| (a.alert_id.clone(), a))
        .collect();
    tables.recommendations = read_recommendations(&client)
        .await?
        .into_iter()
        .map(|r| (r.key(), r))
        .collect();
    tables.conversion = read_conversion(&client)
        .await?
        .into_iter()
        .map(|r| ((r.window, r.step), r))
        .collect();
    let read = SinkError::statement("reading the tables back");
    let sql = "SELECT topic, partition, \"offset\", reason, payload FROM dead_letters ORDER BY id";
    for row in client.query(sql, &[]).await.map_err(read)? {
        let reason: String = row.get(3);
        let kind = RejectKind::ALL
            .into_iter()
            .find(|k| reason.starts_with(k.as_str()))
            .unwrap_or(RejectKind::NotJson);
        let partition = PartitionId::new(row.get::<_, &str>(0), row.get(1));
        let payload: String = row.get(4);
        tables.dead_letters.push(DeadLetter::new(
            partition,
            row.get(2),
            Rejection::new(kind, reason),
            payload.as_bytes(),
        ));
    }
    let read = SinkError::statement("reading the tables back");
    for row in client
        .query(
            "SELECT topic, partition, next_offset FROM clickflow_offsets",
            &[],
        )
        .await
        .map_err(read)?
    {
        tables.offsets.insert(
            PartitionId::new(row.get::<_, &str>(0), row.get(1)),
            row.get(2),
        );
    }
    Ok(tables)
}

/// Feature values stored as an array (missing ones read as 0).
pub(super) fn feature_values(stored: Vec<f64>) -> FeatureValues {
    let mut values = [0.0; FEATURE_COUNT];
    for (value, stored) in values.iter_mut().zip(stored) {
        *value = stored;
    }
    FeatureValues(values)
}

async fn query_sessions(
    client: &tokio_postgres::Client,
    filter: &str,
) -> Result<Vec<SessionRow>, SinkError> {
    let sql = format!(
        "SELECT session_id, user_id, num_views, num_cart_adds, num_purchases, {}, {}, closed,
                num_products, (cart_value * 100)::bigint
         FROM session_features {filter}",
        ms("session_start"),
        ms("last_event")
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(SinkError::statement("reading session_features"))?;
    Ok(rows
        .iter()
        .map(|row| SessionRow {
            session_id: row.get::<_, &str>(0).into(),
            user_id: row.get::<_, &str>(1).into(),
            num_views: row.get(2),
            num_cart_adds: row.get(3),
            num_purchases: row.get(4),
            session_start: row.get(5),
            last_event: row.get(6),
            closed: row.get(7),
            num_products: row.get(8),
            cart_value_cents: row.get(9),
        })
        .collect())
}
