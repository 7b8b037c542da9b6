//! Every route, with access control and JSON errors.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the dashboard (one HTML page, no external assets) |
//! | `GET /charts/{funnel,conversion,trends,churn}.svg` | the charts |
//! | `GET /api/v1/funnel?last=N`, `/api/v1/funnel/conversion?last=N`, `/api/v1/trends?last=N` | the newest N windows (JSON) |
//! | `GET /api/v1/recommendations?session_id=S&k=N` | what a session should see next |
//! | `GET /api/v1/products/{id}/similar?k=N` | a product's nearest neighbours |
//! | `GET /api/v1/sessions/at-risk?limit=N` | open sessions most likely to churn |
//! | `GET /api/v1/alerts?limit=N` | open alerts, then the newest resolved ones |
//! | `GET /api/v1/status` | pipeline health, as the dashboard shows it |
//! | `GET /api/v1/stream` | the views' changes as Server-Sent Events (see [`crate::stream`]) |
//! | `POST /api/v1/churn/predict` | churn probability of given features |
//! | `GET /api/v1/model` | the model scoring now: offline and live quality |
//! | `POST /api/v1/models` | load a model file into the running pipeline (needs a token) |
//! | `GET /metrics` | Prometheus metrics |
//! | `GET /healthz` | 200 when healthy, 503 with the reasons (never needs the token) |
//! | `GET /api/v1/openapi.json` | the OpenAPI 3.1 document of all of these (never needs the token) |

use std::sync::Arc;

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::{Filter, Reply};

use crate::auth::authorized;
use crate::context::WebContext;
use crate::errors::recover;

/// The dashboard page.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Every route; with a `token`, all but `/healthz` need it.
pub fn routes(
    context: WebContext,
    token: Option<Arc<str>>,
) -> BoxedFilter<(warp::reply::Response,)> {
    let health_context = context.clone();
    let healthz = warp::path!("healthz").and(warp::get()).map(move || {
        let problems = health_context.status.problems();
        let (status, body) = if problems.is_empty() {
            (StatusCode::OK, json!({ "status": "ok" }))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "status": "unhealthy", "reasons": problems }),
            )
        };
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    });
    let page = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::html(DASHBOARD).into_response());
    let metrics_context = context.clone();
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            crate::metrics::render(&metrics_context),
            "content-type",
            "text/plain; version=0.0.4",
        )
        .into_response()
    });
    let models = crate::models::routes(context.clone(), token.is_some());
    let protected = authorized(token).and(
        page.or(crate::api::charts(context.clone()))
            .unify()
            .or(crate::api::routes(context.clone()))
            .unify()
            .or(crate::recs::routes(context.clone()))
            .unify()
            .or(crate::stream::route(context.clone()))
            .unify()
            .or(crate::predict::route(context.model.clone()))
            .unify()
            .or(models)
            .unify()
            .or(metrics)
            .unify(),
    );
    healthz
        .or(crate::contract::route())
        .unify()
        .or(protected)
        .unify()
        .recover(recover)
        .unify()
        .boxed()
}
