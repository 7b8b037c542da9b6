//! Reading back where the pipeline stood: the resume plan.

use std::collections::HashMap;

use clickflow_dataflow::resume::{PartitionResume, ResumePlan};
use clickflow_dataflow::watermark::NO_WATERMARK;
use clickflow_sources::PartitionId;

use super::schema::connect;
use super::{DatabaseUrl, SinkError};

/// The resume plan for `partitions` from what the sink committed: each partition restarts
/// from its newest checkpoint whose clock is before `retain_from` (or from its committed
/// offset when nothing open depends on its past), and replays up to its committed offset.
pub async fn load_resume_plan(
    url: &DatabaseUrl,
    partitions: &[PartitionId],
) -> Result<ResumePlan, SinkError> {
    let client = connect(url).await?;
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
    let retain_from: Option<i64> = pipeline.get(1);
    let mut plan = ResumePlan {
        partitions: HashMap::new(),
        committed_watermark,
    };
    for partition in partitions {
        let topic = partition.topic.to_string();
        let committed = client
            .query_opt(
                "SELECT next_offset, highest_event_time FROM clickflow_offsets WHERE topic = $1 AND partition = $2",
                &[&topic, &partition.partition],
            )
            .await
            .map_err(SinkError::statement("reading offsets"))?;
        let Some(committed) = committed else { continue };
        let (next_offset, highest): (i64, Option<i64>) = (committed.get(0), committed.get(1));
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
