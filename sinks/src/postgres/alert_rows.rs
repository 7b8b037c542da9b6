//! The statements that write `window_series` and `alerts`, and their columns.
//!
//! `window_series` rows are final when written (a window is emitted once, when it closes).
//! `alerts` rows are upserted by `alert_id`; the upsert keeps the first `raised_at` and
//! `resolved_at` (the transactions' wall-clock times) and never touches the webhook's
//! `notified_*` columns, so the outbox survives every update of an alert.

use clickflow_dataflow::alerts::series::{Series, WindowCounts, WindowPoint};
use clickflow_dataflow::rows::{AlertKind, AlertRow, Measure, Severity};
use clickflow_dataflow::window::Window;
use clickflow_dataflow::EpochOutput;
use tokio_postgres::Client;

use super::batch::{instant, split, text, Column, Staged, Statement};
use super::read_back::ms;
use super::schema::connect;
use super::{DatabaseUrl, SinkError};

const SERIES_UPSERT: Statement = Statement {
    staging: "clickflow_stage_series",
    columns: &[
        "window_start",
        "window_end",
        "clicks",
        "cart_adds",
        "purchases",
        "click_users",
        "cart_users",
        "purchase_users",
        "revenue_cents",
        "malformed",
        "late",
    ],
    sql: "INSERT INTO window_series (window_start, window_end, clicks, cart_adds, purchases,
              click_users, cart_users, purchase_users, revenue, malformed, late, batch_time)
          SELECT s.window_start, s.window_end, s.clicks, s.cart_adds, s.purchases,
                 s.click_users, s.cart_users, s.purchase_users, s.revenue_cents::numeric / 100,
                 s.malformed, s.late, now()
          FROM {src}
          ON CONFLICT (window_start) DO UPDATE SET
              window_end = EXCLUDED.window_end, clicks = EXCLUDED.clicks,
              cart_adds = EXCLUDED.cart_adds, purchases = EXCLUDED.purchases,
              click_users = EXCLUDED.click_users, cart_users = EXCLUDED.cart_users,
              purchase_users = EXCLUDED.purchase_users, revenue = EXCLUDED.revenue,
              malformed = EXCLUDED.malformed, late = EXCLUDED.late,
              batch_time = EXCLUDED.batch_time",
    fresh: None,
};

const ALERTS_UPSERT: Statement = Statement {
    staging: "clickflow_stage_alerts",
    columns: &[
        "alert_id",
        "kind",
        "rule",
        "series",
        "severity",
        "observed",
        "expected",
        "opened_window",
        "latest_window",
        "resolved_ms",
    ],
    sql: "INSERT INTO alerts (alert_id, kind, rule, series, severity, observed, expected,
              opened_window, latest_window, resolved_window, status, raised_at, resolved_at,
              batch_time)
          SELECT s.alert_id, s.kind, NULLIF(s.rule, ''), s.series, s.severity, s.observed,
                 s.expected, s.opened_window, s.latest_window,
                 to_timestamp(s.resolved_ms::double precision / 1000),
                 CASE WHEN s.resolved_ms IS NULL THEN 'open' ELSE 'resolved' END,
                 now(), CASE WHEN s.resolved_ms IS NULL THEN NULL ELSE now() END, now()
          FROM {src}
          ON CONFLICT (alert_id) DO UPDATE SET
              kind = EXCLUDED.kind, rule = EXCLUDED.rule, series = EXCLUDED.series,
              severity = EXCLUDED.severity, observed = EXCLUDED.observed,
              expected = EXCLUDED.expected, opened_window = EXCLUDED.opened_window,
              latest_window = EXCLUDED.latest_window,
              resolved_window = EXCLUDED.resolved_window, status = EXCLUDED.status,
              resolved_at = CASE WHEN EXCLUDED.resolved_window IS NULL THEN NULL
                                 ELSE coalesce(alerts.resolved_at, EXCLUDED.resolved_at) END,
              batch_time = EXCLUDED.batch_time",
    fresh: None,
};

const ALERTS_DELETE: Statement = Statement {
    staging: "clickflow_stage_alerts_gone",
    columns: &["alert_id"],
    sql: "DELETE FROM alerts t USING {src} WHERE t.alert_id = s.alert_id",
    fresh: None,
};

/// The epoch's `alerts` changes (deletes first) and `window_series` rows.
pub(super) fn stage_alerts(output: &EpochOutput) -> [Staged<'_>; 3] {
    let (upserts, deletes) = split(&output.alerts, |r| r.alert_id.clone());
    [
        Staged::new(&ALERTS_DELETE, deletes, |rows| {
            vec![text(rows, |r| &r.alert_id)]
        }),
        Staged::new(&ALERTS_UPSERT, upserts, alert_columns),
        Staged::new(&SERIES_UPSERT, output.series.iter().collect(), |rows| {
            series_columns(rows)
        }),
    ]
}

fn alert_columns<'a>(rows: &[&'a AlertRow]) -> Vec<Column<'a>> {
    vec![
        text(rows, |r| &r.alert_id),
        text(rows, |r| r.kind.as_str()),
        text(rows, |r| r.rule.as_deref().unwrap_or("")),
        text(rows, |r| r.series.name()),
        text(rows, |r| r.severity.as_str()),
        Column::Float8(rows.iter().map(|r| r.observed.0).collect()),
        Column::Float8(rows.iter().map(|r| r.expected.0).collect()),
        Column::Timestamp(rows.iter().map(|r| instant(r.opened)).collect()),
        Column::Timestamp(rows.iter().map(|r| instant(r.latest)).collect()),
        Column::OptionalInt8(rows.iter().map(|r| r.resolved).collect()),
    ]
}

fn series_columns(points: &[&WindowPoint]) -> Vec<Column<'static>> {
    let int = |f: fn(&WindowPoint) -> i64| Column::Int8(points.iter().map(|p| f(p)).collect());
    vec![
        Column::Timestamp(points.iter().map(|p| instant(p.window.start)).collect()),
        Column::Timestamp(points.iter().map(|p| instant(p.window.end)).collect()),
        int(|p| p.counts.events[0]),
        int(|p| p.counts.events[1]),
        int(|p| p.counts.events[2]),
        int(|p| p.counts.users[0]),
        int(|p| p.counts.users[1]),
        int(|p| p.counts.users[2]),
        int(|p| p.counts.revenue_cents),
        int(|p| p.counts.malformed),
        int(|p| p.counts.late),
    ]
}

/// Every `window_series` row, in window order: the history that rebuilds the detectors after
/// a restart, and what tests compare with the oracle.
pub(super) async fn read_window_series(client: &Client) -> Result<Vec<WindowPoint>, SinkError> {
    let sql = format!(
        "SELECT {}, {}, clicks, cart_adds, purchases, click_users, cart_users, purchase_users,
                (revenue * 100)::bigint, malformed, late
         FROM window_series ORDER BY window_start",
        ms("window_start"),
        ms("window_end")
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(SinkError::statement("reading window_series"))?;
    Ok(rows
        .iter()
        .map(|row| WindowPoint {
            window: Window {
                start: row.get(0),
                end: row.get(1),
            },
            counts: WindowCounts {
                events: [row.get(2), row.get(3), row.get(4)],
                users: [row.get(5), row.get(6), row.get(7)],
                revenue_cents: row.get(8),
                malformed: row.get(9),
                late: row.get(10),
            },
        })
        .collect())
}

/// Every `alerts` row, as the dataflow knows it (without the sink's wall-clock times).
pub(super) async fn read_alerts(client: &Client) -> Result<Vec<AlertRow>, SinkError> {
    let sql = format!(
        "SELECT alert_id, kind, rule, series, severity, observed, expected, {}, {}, {}
         FROM alerts ORDER BY alert_id",
        ms("opened_window"),
        ms("latest_window"),
        ms("resolved_window")
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(SinkError::statement("reading alerts"))?;
    let mut alerts = Vec::with_capacity(rows.len());
    for row in rows {
        let unknown = |what: &str, value: &str| {
            SinkError::SchemaMismatch(format!(
                "alerts holds a {what} clickflow does not know: {value:?}"
            ))
        };
        let (kind, series, severity): (&str, &str, &str) = (row.get(1), row.get(3), row.get(4));
        alerts.push(AlertRow {
            alert_id: row.get::<_, &str>(0).into(),
            kind: [AlertKind::Spike, AlertKind::Drop, AlertKind::Rule]
                .into_iter()
                .find(|k| k.as_str() == kind)
                .ok_or_else(|| unknown("kind", kind))?,
            rule: row.get::<_, Option<&str>>(2).map(Into::into),
            series: Series::from_name(series).ok_or_else(|| unknown("series", series))?,
            severity: [Severity::Warning, Severity::Critical]
                .into_iter()
                .find(|s| s.as_str() == severity)
                .ok_or_else(|| unknown("severity", severity))?,
            observed: Measure(row.get(5)),
            expected: Measure(row.get(6)),
            opened: row.get(7),
            latest: row.get(8),
            resolved: row.get(9),
        });
    }
    Ok(alerts)
}

/// Every alert the pipeline at `url` has raised (what the dashboard shows at start).
pub async fn load_alerts(url: &DatabaseUrl) -> Result<Vec<AlertRow>, SinkError> {
    read_alerts(&connect(url).await?).await
}
