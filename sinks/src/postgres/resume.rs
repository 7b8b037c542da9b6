//! Reading back where the pipeline stood: the resume plan.

use std::collections::HashMap;

use clickflow_dataflow::kpi::churn::HistorySeed;
use clickflow_dataflow::kpi::history::History;
use clickflow_dataflow::kpi::sessions::SessionRule;
use clickflow_dataflow::runtime::resume::{PartitionResume, ResumePlan};
use clickflow_dataflow::runtime::watermark::NO_WATERMARK;
use clickflow_model::UserHistory;
use clickflow_sources::{EventTime, PartitionId};
use compact_str::CompactString;

use super::alert_rows::read_window_series;
use tokio_postgres::Client;

use super::SinkError;

/// The resume plan for `partitions` from what the sink committed: each partition restarts
/// from its newest checkpoint whose clock is before its own `retain_from` (the pipeline's
/// where a database from before migration 6 recorded none; its committed offset when
/// nothing open depends on its past), and replays up to its committed offset.
pub async fn load_resume_plan(
    client: &Client,
    partitions: &[PartitionId],
) -> Result<ResumePlan, SinkError> {
    let pipeline = client
        .query_opt(
            "SELECT watermark, retain_from FROM clickflow_pipeline WHERE id = 1",
            &[],
        )
        .await
        .map_err(SinkError::statement("reading the pipeline state"))?;
    let Some(pipeline) = pipeline else {
        return Ok(ResumePlan::default());
    };
    let committed_watermark: i64 = pipeline.get(0);
    let pipeline_retain_from: Option<i64> = pipeline.get(1);
    let mut plan = ResumePlan {
        partitions: HashMap::new(),
        committed_watermark,
        retain_from: pipeline_retain_from,
        history: Default::default(),
        window_history: read_window_series(client).await?.into(),
    };
    for partition in partitions {
        let topic = partition.topic.to_string();
        let committed = client
            .query_opt(
                "SELECT next_offset, highest_event_time, coalesce(retain_from, $3)
                 FROM clickflow_offsets WHERE topic = $1 AND partition = $2",
                &[&topic, &partition.partition, &pipeline_retain_from],
            )
            .await
            .map_err(SinkError::statement("reading offsets"))?;
        let Some(committed) = committed else { continue };
        let (next_offset, highest): (i64, Option<i64>) = (committed.get(0), committed.get(1));
        let retain_from: Option<i64> = committed.get(2);
        let needs_replay = match (retain_from, highest) {
            (None, _) | (_, None) => false,
            (Some(retain_from), Some(highest)) => highest >= retain_from,
        };
        let resume = if !needs_replay {
            PartitionResume {
                start: Some(next_offset),
                highest,
                committed: Some(next_offset),
            }
        } else {
            let checkpoint = client
                .query_opt(
                    "SELECT next_offset, highest_event_time FROM clickflow_checkpoints
                     WHERE topic = $1 AND partition = $2
                       AND (highest_event_time IS NULL OR highest_event_time < $3)
                     ORDER BY next_offset DESC LIMIT 1",
                    &[&topic, &partition.partition, &retain_from],
                )
                .await
                .map_err(SinkError::statement("reading checkpoints"))?;
            match checkpoint {
                Some(row) => PartitionResume {
                    start: Some(row.get(0)),
                    highest: row.get(1),
                    committed: Some(next_offset),
                },
                None => PartitionResume {
                    start: None,
                    highest: None,
                    committed: Some(next_offset),
                },
            }
        };
        plan.partitions.insert(partition.clone(), resume);
    }
    if plan.committed_watermark == NO_WATERMARK {
        tracing::debug!("no watermark committed yet");
    }
    Ok(plan)
}

/// Every user's history from the sessions committed as final, for the scoring stage (see
/// `clickflow_dataflow::kpi::history`): sessions final at or before `fold_before` folded into
/// totals, later ones listed with their final time. A session's final time is computed as
/// the dataflow does: the end of the window holding `last_event + gap`.
pub async fn load_user_history(
    client: &Client,
    rule: SessionRule,
    fold_before: EventTime,
) -> Result<HistorySeed, SinkError> {
    let rows = client
        .query(
            "WITH closed AS (
                 SELECT user_id, num_purchases,
                        (floor(((extract(epoch FROM last_event) * 1000)::bigint + $1::bigint)
                               / $2::bigint) * $2::bigint + $2::bigint)::bigint AS final_at
                 FROM session_features WHERE closed)
             SELECT user_id,
                    count(*) FILTER (WHERE final_at <= $3),
                    coalesce(sum(num_purchases) FILTER (WHERE final_at <= $3), 0)::bigint,
                    coalesce(array_agg(final_at) FILTER (WHERE final_at > $3), '{}'),
                    coalesce(array_agg(num_purchases) FILTER (WHERE final_at > $3), '{}')
             FROM closed GROUP BY user_id",
            &[&rule.gap_ms, &rule.window.millis(), &fold_before],
        )
        .await
        .map_err(SinkError::statement("reading users' history"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let finals: Vec<i64> = row.get(3);
            let purchases: Vec<i64> = row.get(4);
            let history = History {
                folded: UserHistory {
                    sessions: row.get(1),
                    purchases: row.get(2),
                },
                recent: finals.into_iter().zip(purchases).collect(),
            };
            (CompactString::from(row.get::<_, &str>(0)), history)
        })
        .collect())
}
