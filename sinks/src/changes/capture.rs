//! Which tables' changes are captured, and the triggers that capture them.

use std::str::FromStr;

use tokio_postgres::Client;

use crate::postgres::SinkError;

/// A table whose committed changes can be published to Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeTable {
    /// `event_trends`, keyed by `(window_start, event_type)`.
    EventTrends,
    /// `funnel_summary`, keyed by `(window_start, event_type)`.
    FunnelSummary,
    /// `session_features`, keyed by `(session_id, session_start)`.
    SessionFeatures,
    /// `churn_scores`, keyed by `(session_id, session_start)`.
    ChurnScores,
    /// `window_series`, keyed by `window_start`.
    WindowSeries,
    /// `alerts`, keyed by `alert_id`.
    Alerts,
    /// `product_recommendations`, keyed by `(product_id, rank)`.
    ProductRecommendations,
    /// `funnel_conversion`, keyed by `(window_start, step)`.
    FunnelConversion,
}

impl ChangeTable {
    /// Every table that can be captured, the default of `--emit-tables`.
    pub const ALL: [ChangeTable; 8] = [
        ChangeTable::EventTrends,
        ChangeTable::FunnelSummary,
        ChangeTable::SessionFeatures,
        ChangeTable::ChurnScores,
        ChangeTable::WindowSeries,
        ChangeTable::Alerts,
        ChangeTable::ProductRecommendations,
        ChangeTable::FunnelConversion,
    ];

    /// The table's name in PostgreSQL.
    pub fn name(self) -> &'static str {
        match self {
            ChangeTable::EventTrends => "event_trends",
            ChangeTable::FunnelSummary => "funnel_summary",
            ChangeTable::SessionFeatures => "session_features",
            ChangeTable::ChurnScores => "churn_scores",
            ChangeTable::WindowSeries => "window_series",
            ChangeTable::Alerts => "alerts",
            ChangeTable::ProductRecommendations => "product_recommendations",
            ChangeTable::FunnelConversion => "funnel_conversion",
        }
    }

    /// Its primary key's columns: a message's key holds them.
    pub fn key_columns(self) -> &'static [&'static str] {
        match self {
            ChangeTable::EventTrends | ChangeTable::FunnelSummary => {
                &["window_start", "event_type"]
            }
            ChangeTable::SessionFeatures | ChangeTable::ChurnScores => {
                &["session_id", "session_start"]
            }
            ChangeTable::WindowSeries => &["window_start"],
            ChangeTable::Alerts => &["alert_id"],
            ChangeTable::ProductRecommendations => &["product_id", "rank"],
            ChangeTable::FunnelConversion => &["window_start", "step"],
        }
    }
}

impl ChangeTable {
    /// Its columns that are clickflow's bookkeeping rather than the row's content,
    /// comma-separated: left out of the change, and an update of only them is none.
    fn bookkeeping_columns(self) -> &'static str {
        match self {
            ChangeTable::Alerts => "open_notified_at,resolve_notified_at",
            _ => "",
        }
    }
}

impl FromStr for ChangeTable {
    type Err = String;

    fn from_str(name: &str) -> Result<ChangeTable, String> {
        ChangeTable::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = ChangeTable::ALL.iter().map(|t| t.name()).collect();
                format!(
                    "{name:?} is not a table clickflow can emit ({})",
                    names.join(", ")
                )
            })
    }
}

/// The capture triggers of a table: one per operation (a trigger with transition tables
/// takes one event only), each run once per statement over the rows the statement changed.
/// Row-level triggers were measured first: a plpgsql call per row made a backfill's sink
/// four times slower (see the README's Performance section).
const TRIGGERS: [(&str, &str, &str); 3] = [
    (
        "clickflow_capture_insert",
        "INSERT",
        "NEW TABLE AS new_rows",
    ),
    (
        "clickflow_capture_update",
        "UPDATE",
        "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    ),
    (
        "clickflow_capture_delete",
        "DELETE",
        "OLD TABLE AS old_rows",
    ),
];

/// Makes exactly `tables` captured: triggers on each of them, none on the others (a run
/// without `--emit-kafka` passes none, so an earlier run's triggers do not fill the outbox
/// with changes nobody publishes). In one transaction, before the pipeline writes anything,
/// so no committed change of a captured table escapes the outbox. Creating or dropping a
/// trigger takes ownership of the table: a run that changes nothing here needs none.
pub async fn capture_changes(client: &mut Client, tables: &[ChangeTable]) -> Result<(), SinkError> {
    let failed =
        || SinkError::statement("setting up change capture (needs ownership of the tables)");
    let existing: Vec<(String, String)> = client
        .query(
            "SELECT c.relname::text, t.tgname::text FROM pg_trigger t
             JOIN pg_class c ON c.oid = t.tgrelid
             WHERE t.tgname LIKE 'clickflow_capture_%'
               AND c.relnamespace = current_schema()::regnamespace",
            &[],
        )
        .await
        .map_err(failed())?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    // Only what differs is changed: DDL waits for every transaction holding the table,
    // prepared parts of a crashed run included, so a start with the same tables takes no
    // lock at all.
    let mut sql = String::from("SET LOCAL lock_timeout = '30s';\n");
    let before = sql.len();
    for table in ChangeTable::ALL {
        let name = table.name();
        let wanted = tables.contains(&table);
        let arguments: Vec<String> = std::iter::once(table.bookkeeping_columns())
            .chain(table.key_columns().iter().copied())
            .map(|a| format!("'{a}'"))
            .collect();
        for (trigger, event, transition) in TRIGGERS {
            let present = existing.iter().any(|(t, g)| t == name && g == trigger);
            if present && !wanted {
                sql.push_str(&format!("DROP TRIGGER {trigger} ON {name};\n"));
            }
            if wanted && !present {
                sql.push_str(&format!(
                    "CREATE TRIGGER {trigger} AFTER {event} ON {name}
                     REFERENCING {transition} FOR EACH STATEMENT
                     EXECUTE FUNCTION clickflow_capture_changes({});\n",
                    arguments.join(", ")
                ));
            }
        }
    }
    if sql.len() == before {
        return Ok(());
    }
    let transaction = client.transaction().await.map_err(failed())?;
    transaction.batch_execute(&sql).await.map_err(failed())?;
    transaction.commit().await.map_err(failed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_parse_back_and_unknown_ones_list_the_choices() {
        for table in ChangeTable::ALL {
            assert_eq!(table.name().parse::<ChangeTable>(), Ok(table));
        }
        let error = "dead_letters".parse::<ChangeTable>().unwrap_err();
        assert!(
            error.contains("event_trends") && error.contains("alerts"),
            "{error}"
        );
    }
}
