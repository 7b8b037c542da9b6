//! The churn model over HTTP: what it is and how it does (`GET /api/v1/model`), and loading
//! another into the running pipeline (`POST /api/v1/models`).
//!
//! Loading needs the server to run with a bearer token (`--api-token`): without one the
//! route answers 403, because anyone who can reach the port could otherwise replace the
//! model the shop acts on. The body is a model file as `clickflow train` writes it
//! (`application/octet-stream`, at most [`MAX_MODEL_BYTES`]); it is checked as a file on
//! disk is (a damaged, foreign or old-format file is a 400 naming the reason), then scores
//! from the dataflow's next epoch on and is recorded in `churn_models`.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use clickflow_model::evaluate::VersionEvaluation;
use clickflow_model::{ChurnModel, Evaluation};
use serde::Serialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::context::WebContext;
use crate::errors::refuse;

/// The largest model file accepted: a forest of hundreds of deep trees is a few MB.
pub const MAX_MODEL_BYTES: u64 = 64 << 20;

/// A model's offline evaluation, as its file records it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Offline {
    /// Sessions it learnt from.
    pub train_sessions: usize,
    /// Later sessions it was evaluated on.
    pub test_sessions: usize,
    /// The forest's ROC AUC on them.
    pub roc_auc: f64,
    /// Its Brier score on them.
    pub brier: f64,
    /// The logistic-regression baseline's ROC AUC on them.
    pub logistic_roc_auc: Option<f64>,
}

/// A model version's record on the sessions that ended while it scored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Live {
    /// The version.
    pub model_version: String,
    /// Its predictions whose session has ended (the newest kept).
    pub predictions: usize,
    /// The sessions they were about.
    pub sessions: usize,
    /// Their ROC AUC (`null` while one outcome is missing).
    pub roc_auc: Option<f64>,
    /// Their Brier score.
    pub brier: f64,
}

/// What `GET /api/v1/model` answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelStatus {
    /// The version scoring now.
    pub model_version: String,
    /// When it was trained.
    pub trained_at: String,
    /// How it did on later sessions when it was trained.
    pub offline: Offline,
    /// How each version did on sessions that ended since the pipeline started (empty when
    /// not followed).
    pub live: Vec<Live>,
}

impl ModelStatus {
    /// The status of the model `context` scores with, `None` without one.
    pub fn of(context: &WebContext) -> Option<ModelStatus> {
        let model = context.model.as_ref()?.current();
        let header = model.header();
        let report = &header.report;
        let auc = |e: &Evaluation| e.roc_auc;
        let live = context
            .monitor
            .as_ref()
            .map(|m| m.live_metrics())
            .unwrap_or_default()
            .into_iter()
            .map(|v: VersionEvaluation| Live {
                roc_auc: Some(v.evaluation.roc_auc).filter(|a| a.is_finite()),
                brier: v.evaluation.brier,
                model_version: v.model_version,
                predictions: v.predictions,
                sessions: v.sessions,
            })
            .collect();
        Some(ModelStatus {
            model_version: header.model_version.clone(),
            trained_at: header.trained_at.clone(),
            offline: Offline {
                train_sessions: report.train_sessions,
                test_sessions: report.test_sessions,
                roc_auc: report.forest.roc_auc,
                brier: report.forest.brier,
                logistic_roc_auc: report.logistic.as_ref().map(auc),
            },
            live,
        })
    }

    /// This version's live record, if it has one.
    pub fn live_record(&self) -> Option<&Live> {
        self.live
            .iter()
            .find(|l| l.model_version == self.model_version)
    }
}

#[derive(Serialize)]
struct Loaded<'a> {
    model_version: &'a str,
    trained_at: &'a str,
    status: &'static str,
}

/// `GET /api/v1/model` and `POST /api/v1/models`. `token_required` says whether the server
/// runs with a bearer token (loading is refused without one).
pub fn routes(
    context: WebContext,
    token_required: bool,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let status_context = context.clone();
    let status = warp::path!("api" / "v1" / "model")
        .and(warp::get())
        .and_then(move || {
            let context = status_context.clone();
            async move {
                match ModelStatus::of(&context) {
                    Some(status) => Ok(warp::reply::json(&status).into_response()),
                    None => Err(refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no churn model is loaded: start clickflow with --model FILE",
                    )),
                }
            }
        });
    let load = warp::path!("api" / "v1" / "models")
        .and(warp::post())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::content_length_limit(MAX_MODEL_BYTES))
        .and(warp::body::bytes())
        .and_then(move |content_type: Option<String>, body: Bytes| {
            let context = context.clone();
            async move { load(&context, token_required, content_type.as_deref(), &body) }
        });
    status.or(load).unify()
}

fn load(
    context: &WebContext,
    token_required: bool,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<warp::reply::Response, Rejection> {
    if !token_required {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "loading a model over HTTP needs the server to run with --api-token",
        ));
    }
    let octets = content_type
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/octet-stream"));
    if !octets {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the body must be a model file as application/octet-stream, got {}",
                content_type.unwrap_or("no Content-Type")
            ),
        ));
    }
    let Some(loader) = &context.loader else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "this pipeline does not score: start it with --model FILE to load models later",
        ));
    };
    let model = ChurnModel::from_bytes(body, Path::new("the uploaded model"))
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e.to_string()))?;
    let model = Arc::new(model);
    loader(model.clone());
    let header = model.header();
    Ok(warp::reply::json(&Loaded {
        model_version: &header.model_version,
        trained_at: &header.trained_at,
        status: "scoring from the next epoch",
    })
    .into_response())
}
