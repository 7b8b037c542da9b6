//! `POST /api/v1/churn/predict`: the churn model over REST.
//!
//! The body is one JSON object `{"num_views": .., "num_cart_adds": .., "duration_s": ..}` or
//! an array of them; the answer is `{"churn_probability": .., "model_version": ..}` or an
//! array of those, in order. Every refusal names the problem: a body that is not JSON, a
//! missing or unknown field, a wrong type, a negative or non-finite number (with the item's
//! index in an array), a body over [`MAX_BODY_BYTES`] (413), or a content type other than
//! JSON (415).

use std::sync::Arc;

use bytes::Bytes;
use clickflow_model::{ChurnModel, Features};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::errors::refuse;

/// The largest body accepted: some thousands of sessions per request.
pub const MAX_BODY_BYTES: u64 = 1 << 20;

/// A session's features as a client sends them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeaturesIn {
    num_views: f64,
    num_cart_adds: f64,
    duration_s: f64,
}

#[derive(Serialize)]
struct Prediction<'a> {
    churn_probability: f64,
    model_version: &'a str,
}

/// The route.
pub fn route(
    model: Option<Arc<ChurnModel>>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "churn" / "predict")
        .and(warp::post())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and_then(move |content_type: Option<String>, body: Bytes| {
            let model = model.clone();
            async move { predict(model.as_deref(), content_type.as_deref(), &body) }
        })
}

fn predict(
    model: Option<&ChurnModel>,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<warp::reply::Response, Rejection> {
    let is_json = content_type
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the body must be application/json, got {}",
                content_type.unwrap_or("no Content-Type")
            ),
        ));
    }
    let Some(model) = model else {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no churn model is loaded: start clickflow with --model FILE",
        ));
    };
    let bad = |message: String| refuse(StatusCode::BAD_REQUEST, message);
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    let reply = match value {
        Value::Object(_) => {
            let features = features_from_json(value).map_err(bad)?;
            warp::reply::json(&Prediction {
                churn_probability: model.predict(&features),
                model_version: model.version(),
            })
        }
        Value::Array(items) => {
            let features = items
                .into_iter()
                .enumerate()
                .map(|(index, item)| {
                    features_from_json(item).map_err(|e| bad(format!("item {index}: {e}")))
                })
                .collect::<Result<Vec<Features>, Rejection>>()?;
            let predictions: Vec<Prediction<'_>> = model
                .predict_batch(&features)
                .into_iter()
                .map(|p| Prediction {
                    churn_probability: p,
                    model_version: model.version(),
                })
                .collect();
            warp::reply::json(&predictions)
        }
        _ => {
            return Err(bad(
                "expected an object {\"num_views\", \"num_cart_adds\", \"duration_s\"} or an array of them"
                    .to_string(),
            ))
        }
    };
    Ok(reply.into_response())
}

/// A session's features from a JSON object `{"num_views", "num_cart_adds", "duration_s"}`,
/// checked: the one parser of REST predictions and `clickflow predict`. The error names the
/// missing or unknown field, the wrong type, or the out-of-range number.
pub fn features_from_json(value: Value) -> Result<Features, String> {
    let given: FeaturesIn = serde_json::from_value(value).map_err(|e| e.to_string())?;
    Features {
        num_views: given.num_views,
        num_cart_adds: given.num_cart_adds,
        duration_s: given.duration_s,
    }
    .validate()
    .map_err(|e| e.to_string())
}
