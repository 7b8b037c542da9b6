//! `POST /api/v1/churn/predict`: the churn model over REST.
//!
//! The body is one JSON object of a session's features as known now, or an array of them;
//! the answer is `{"churn_probability": .., "model_version": ..}` or an array of those, in
//! order. The features are the model's (see [`clickflow_model::features`]):
//! `num_views`, `num_cart_adds` and `duration_s` are required (the seed's request keeps
//! working); the others may be left out and then take documented defaults:
//!
//! | feature | when left out |
//! |---|---|
//! | `recency_s` | 0: the session is scored right after its latest event |
//! | `distinct_products` | `num_views`: every view a different product |
//! | `cart_value` | `num_cart_adds` times the mean price of a cart add in the model's training data |
//! | `user_sessions_before`, `user_purchases_before` | 0: a user with no history |
//!
//! Every refusal names the problem: a body that is not JSON, a missing or unknown field, a
//! wrong type, a negative, non-finite or absurd (over [`MAX_FEATURE`]) number (with the
//! item's index in an array), a body over [`MAX_BODY_BYTES`] (413), or a content type
//! other than JSON (415).

use bytes::Bytes;
use clickflow_dataflow::LiveModel;
use clickflow_model::{ChurnModel, FeatureDefaults, Features};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::errors::refuse;

/// The largest value a feature may be given (the OpenAPI document's `maximum`): larger
/// numbers are mistakes, not sessions.
pub const MAX_FEATURE: f64 = 1e12;

/// The largest body accepted: some thousands of sessions per request.
pub const MAX_BODY_BYTES: u64 = 1 << 20;

/// A session's features as a client sends them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeaturesIn {
    num_views: f64,
    num_cart_adds: f64,
    duration_s: f64,
    recency_s: Option<f64>,
    distinct_products: Option<f64>,
    cart_value: Option<f64>,
    user_sessions_before: Option<f64>,
    user_purchases_before: Option<f64>,
}

#[derive(Serialize)]
struct Prediction<'a> {
    churn_probability: f64,
    model_version: &'a str,
}

/// The route.
pub fn route(
    model: Option<LiveModel>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "churn" / "predict")
        .and(warp::post())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and_then(move |content_type: Option<String>, body: Bytes| {
            let model = model.as_ref().map(LiveModel::current);
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
    let defaults = &model.header().defaults;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body is not valid JSON: {e}")))?;
    let reply = match value {
        Value::Object(_) => {
            let features = features_from_json(value, defaults).map_err(bad)?;
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
                    features_from_json(item, defaults)
                        .map_err(|e| bad(format!("item {index}: {e}")))
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
                "expected an object of features (at least num_views, num_cart_adds, duration_s) or an array of them"
                    .to_string(),
            ))
        }
    };
    Ok(reply.into_response())
}

/// A session's features from a JSON object, the optional ones filled in from `defaults`
/// as the module docs say, checked: the one parser of REST predictions and `clickflow
/// predict`. The error names the missing or unknown field, the wrong type, or the
/// out-of-range number.
pub fn features_from_json(value: Value, defaults: &FeatureDefaults) -> Result<Features, String> {
    let given: FeaturesIn = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let named = [
        ("num_views", Some(given.num_views)),
        ("num_cart_adds", Some(given.num_cart_adds)),
        ("duration_s", Some(given.duration_s)),
        ("recency_s", given.recency_s),
        ("distinct_products", given.distinct_products),
        ("cart_value", given.cart_value),
        ("user_sessions_before", given.user_sessions_before),
        ("user_purchases_before", given.user_purchases_before),
    ];
    if let Some((name, value)) = named
        .into_iter()
        .find_map(|(name, value)| Some((name, value?)).filter(|(_, v)| *v > MAX_FEATURE))
    {
        return Err(format!(
            "{name} is {value}: at most {MAX_FEATURE:e} (no session is that large)"
        ));
    }
    Features {
        num_views: given.num_views,
        num_cart_adds: given.num_cart_adds,
        duration_s: given.duration_s,
        recency_s: given.recency_s.unwrap_or(0.0),
        distinct_products: given.distinct_products.unwrap_or(given.num_views),
        cart_value: given
            .cart_value
            .unwrap_or(given.num_cart_adds * defaults.cart_add_price),
        user_sessions_before: given.user_sessions_before.unwrap_or(0.0),
        user_purchases_before: given.user_purchases_before.unwrap_or(0.0),
    }
    .validate()
    .map_err(|e| e.to_string())
}
