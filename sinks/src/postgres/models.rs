//! The model side of the database: the prediction log read back with what happened, and the
//! registry of models (`churn_models`).

use clickflow_model::{ChurnModel, Features};

use super::read_back::feature_values;
use super::schema::connect;
use super::{DatabaseUrl, SinkError};

/// A logged prediction about a session that has ended, with how it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledPrediction {
    /// The session's id.
    pub session_id: String,
    /// The session's start (Unix ms).
    pub session_start: i64,
    /// The event time the features describe (Unix ms).
    pub as_of: i64,
    /// The features the model was given.
    pub features: Features,
    /// What it answered.
    pub churn_probability: f64,
    /// Which model answered.
    pub model_version: String,
    /// The session ended without a purchase.
    pub churned: bool,
    /// The session's last event (Unix ms): with the gap, when its outcome was known.
    pub last_event: i64,
}

/// Every logged prediction about a session that is closed now, in the order of the times
/// they describe: the backtest's data.
pub async fn read_labelled_predictions(
    url: &DatabaseUrl,
) -> Result<Vec<LabelledPrediction>, SinkError> {
    let client = connect(url).await?;
    let ms = |c: &str| format!("(extract(epoch FROM {c}) * 1000)::bigint");
    let sql = format!(
        "SELECT p.session_id, {}, {}, p.features, p.churn_probability, p.model_version,
                s.num_purchases = 0, {}
         FROM churn_predictions p JOIN session_features s USING (session_id, session_start)
         WHERE s.closed
         ORDER BY p.as_of, p.prediction_key",
        ms("p.session_start"),
        ms("p.as_of"),
        ms("s.last_event")
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(SinkError::statement("reading the prediction log"))?;
    Ok(rows
        .iter()
        .map(|row| LabelledPrediction {
            session_id: row.get(0),
            session_start: row.get(1),
            as_of: row.get(2),
            features: feature_values(row.get(3)).features(),
            churn_probability: row.get(4),
            model_version: row.get(5),
            churned: row.get(6),
            last_event: row.get(7),
        })
        .collect())
}

/// Where a model came from, as `churn_models.source` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// The `--model` file a pipeline started with.
    File,
    /// Trained at start on a synthetic history (the demo).
    History,
    /// Trained by the pipeline's retrainer on recent sessions.
    Retrained,
    /// Loaded into a running pipeline over HTTP (`POST /api/v1/models`).
    Http,
    /// Loaded into a running pipeline from its `--model` file again (`SIGHUP`).
    Reload,
}

impl ModelSource {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelSource::File => "file",
            ModelSource::History => "history",
            ModelSource::Retrained => "retrained",
            ModelSource::Http => "http",
            ModelSource::Reload => "reload",
        }
    }
}

/// Records `model` in `churn_models` (its training report as JSON); with `promoted`, marks
/// it promoted now (a model recorded again keeps its first promotion time).
pub async fn record_model(
    url: &DatabaseUrl,
    model: &ChurnModel,
    source: ModelSource,
    promoted: bool,
) -> Result<(), SinkError> {
    let client = connect(url).await?;
    let header = model.header();
    // Plain numbers and strings (a non-finite number is written as null).
    let report =
        serde_json::to_string(&header.report).expect("a training report serialises to JSON");
    client
        .execute(
            "INSERT INTO churn_models (model_version, trained_at, source, sessions, examples,
                 report, promoted_at)
             VALUES ($1, $2::text::timestamptz, $3, $4, $5, $6::text::jsonb,
                     CASE WHEN $7 THEN now() END)
             ON CONFLICT (model_version) DO UPDATE SET
                 promoted_at = coalesce(churn_models.promoted_at, EXCLUDED.promoted_at)",
            &[
                &header.model_version,
                &header.trained_at,
                &source.as_str(),
                &(header.report.train_sessions as i64),
                &(header.report.train_examples as i64),
                &report,
                &promoted,
            ],
        )
        .await
        .map_err(SinkError::statement("recording a model"))?;
    Ok(())
}
