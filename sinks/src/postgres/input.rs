//! One pipeline per schema: the input it reads is recorded on its first start, and a run
//! with any other input is refused before it reads or writes anything.
//!
//! Offsets, the committed watermark and every row in a schema describe one input. A second
//! input in the same schema would be judged against the first one's watermark (a finished
//! file leaves it at `+infinity`, which makes every later event late) and resume from the
//! first one's offsets. So the input is part of the schema's state: a Kafka topic by name,
//! a file by its path and [`FileIdentity`]. A file that only grew is the same input (its
//! splits keep their recorded bounds); an edited one, or another split count, is not.

use tokio_postgres::Client;

use super::SinkError;
use clickflow_dataflow::runtime::run::InputSpec;
use clickflow_sources::file::{FileIdentity, FileSplits};

/// Records the input of a fresh schema, or checks it against the recorded one. Returns the
/// input to run: for a file that grew since it was recorded, its plan with the recorded
/// split bounds. `client` is connected to the pipeline's database; `schema` names it in
/// errors.
pub async fn claim_input(
    client: &Client,
    schema: &str,
    input: InputSpec,
) -> Result<InputSpec, SinkError> {
    let (name, identity) = describe(&input);
    let recorded = client
        .query_opt(
            "SELECT input, fingerprint FROM clickflow_input WHERE id = 1",
            &[],
        )
        .await
        .map_err(SinkError::statement("reading the recorded input"))?;
    let Some(recorded) = recorded else {
        client
            .execute(
                "INSERT INTO clickflow_input (id, input, fingerprint) VALUES (1, $1, $2)
                 ON CONFLICT (id) DO NOTHING",
                &[&name, &identity.map(|i| i.to_string())],
            )
            .await
            .map_err(SinkError::statement("recording the input"))?;
        return Ok(input);
    };
    let (recorded_name, fingerprint): (String, Option<String>) = (recorded.get(0), recorded.get(1));
    if recorded_name != name {
        return Err(SinkError::ForeignInput {
            schema: schema.to_string(),
            recorded: recorded_name,
            given: name,
        });
    }
    let InputSpec::File(splits) = input else {
        return Ok(input);
    };
    let changed = |source| SinkError::ChangedFile {
        schema: schema.to_string(),
        source,
    };
    let recorded: FileIdentity =
        fingerprint
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|why: String| {
                changed(splits.changed(format!("its record is unreadable: {why}")))
            })?;
    let resumed = FileSplits::resume(splits.path(), splits.len(), &recorded).map_err(changed)?;
    Ok(InputSpec::File(resumed))
}

/// The input's recorded name (`kafka topic T`, `file /path`) and, for a file, its identity.
fn describe(input: &InputSpec) -> (String, Option<FileIdentity>) {
    match input {
        InputSpec::Kafka { topic, .. } => (format!("kafka topic {topic}"), None),
        InputSpec::File(splits) => (
            format!("file {}", splits.path().display()),
            Some(splits.identity()),
        ),
    }
}
