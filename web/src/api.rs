//! The JSON API over the live views, the charts, and the status the dashboard shows.

use std::collections::HashMap;

use serde::Serialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::alerts::AlertView;
use crate::charts::{churn_chart, conversion_chart, funnel_chart, trends_chart};
use crate::context::WebContext;
use crate::errors::refuse;
use crate::models::ModelStatus;
use crate::status::{DataflowState, SinkSnapshot};
use crate::views::{AtRisk, ConversionWindow, FunnelWindow, TrendWindow, KEEP_WINDOWS};

/// Windows the funnel chart averages: the last 15 minutes.
pub const FUNNEL_MEAN_WINDOWS: usize = 15;
/// Windows the trends chart shows: the last hour.
pub const TREND_WINDOWS: usize = 60;
/// Bins of the churn histogram.
pub const CHURN_BINS: usize = 20;

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Reads the one integer parameter `name` a route takes (default `default`, within
/// `1..=max`); any other parameter is refused by name.
fn count_param(
    query: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, Rejection> {
    if let Some(unknown) = query.keys().find(|k| k.as_str() != name) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter `{unknown}`; this route takes `{name}`"),
        ));
    }
    match query.get(name) {
        None => Ok(default),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(refuse(
                StatusCode::BAD_REQUEST,
                format!("`{name}` must be an integer from 1 to {max}, got `{raw}`"),
            )),
        },
    }
}

#[derive(Serialize)]
struct Windows<T> {
    windows: Vec<T>,
}

#[derive(Serialize)]
struct Sessions {
    model_version: Option<String>,
    sessions: Vec<AtRisk>,
}

/// `GET /api/v1/alerts`: open alerts first, then the newest resolved ones.
#[derive(Serialize)]
struct Alerts {
    open: usize,
    alerts: Vec<AlertView>,
}

/// What the dashboard's health panel shows.
#[derive(Serialize)]
struct Status {
    healthy: bool,
    problems: Vec<String>,
    dataflow: DataflowState,
    events_per_second: f64,
    events_total: u64,
    watermark: Option<i64>,
    watermark_at: Option<String>,
    watermark_lag_s: Option<f64>,
    late_total: u64,
    malformed_total: u64,
    open_sessions: usize,
    model_version: Option<String>,
    model: Option<ModelStatus>,
    sink: Option<SinkSnapshot>,
}

fn with_context(
    context: WebContext,
) -> impl Filter<Extract = (WebContext,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || context.clone())
}

fn query() -> impl Filter<Extract = (HashMap<String, String>,), Error = Rejection> + Clone {
    warp::query::<HashMap<String, String>>()
}

/// `GET /api/v1/funnel?last=N`, `/api/v1/funnel/conversion?last=N`, `/api/v1/trends?last=N`, `/api/v1/sessions/at-risk?limit=N`,
/// `/api/v1/alerts?limit=N` and `/api/v1/status`.
pub fn routes(
    context: WebContext,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let funnel = warp::path!("api" / "v1" / "funnel")
        .and(query())
        .and(with_context(context.clone()))
        .and_then(|query, context: WebContext| async move {
            let last = count_param(&query, "last", FUNNEL_MEAN_WINDOWS, KEEP_WINDOWS)?;
            let windows: Vec<FunnelWindow> = context.views.funnel(last);
            Ok::<_, Rejection>(warp::reply::json(&Windows { windows }).into_response())
        });
    let conversion = warp::path!("api" / "v1" / "funnel" / "conversion")
        .and(query())
        .and(with_context(context.clone()))
        .and_then(|query, context: WebContext| async move {
            let last = count_param(&query, "last", FUNNEL_MEAN_WINDOWS, KEEP_WINDOWS)?;
            let windows: Vec<ConversionWindow> = context.views.conversion(last);
            Ok::<_, Rejection>(warp::reply::json(&Windows { windows }).into_response())
        });
    let trends = warp::path!("api" / "v1" / "trends")
        .and(query())
        .and(with_context(context.clone()))
        .and_then(|query, context: WebContext| async move {
            let last = count_param(&query, "last", TREND_WINDOWS, KEEP_WINDOWS)?;
            let windows: Vec<TrendWindow> = context.views.trends(last);
            Ok::<_, Rejection>(warp::reply::json(&Windows { windows }).into_response())
        });
    let at_risk = warp::path!("api" / "v1" / "sessions" / "at-risk")
        .and(query())
        .and(with_context(context.clone()))
        .and_then(|query, context: WebContext| async move {
            let limit = count_param(&query, "limit", 10, 1000)?;
            let sessions = Sessions {
                model_version: context.model.as_ref().map(|m| m.current().version().into()),
                sessions: context.views.at_risk(limit),
            };
            Ok::<_, Rejection>(warp::reply::json(&sessions).into_response())
        });
    let alerts = warp::path!("api" / "v1" / "alerts")
        .and(query())
        .and(with_context(context.clone()))
        .and_then(|query, context: WebContext| async move {
            let limit = count_param(&query, "limit", 100, 1000)?;
            let mut alerts = context.views.alerts();
            alerts.truncate(limit);
            let body = Alerts {
                open: context.views.open_alerts(),
                alerts,
            };
            Ok::<_, Rejection>(warp::reply::json(&body).into_response())
        });
    let status = warp::path!("api" / "v1" / "status")
        .and(with_context(context))
        .map(|context: WebContext| warp::reply::json(&status(&context)).into_response());
    warp::get().and(
        funnel
            .or(conversion)
            .unify()
            .or(trends)
            .unify()
            .or(at_risk)
            .unify()
            .or(alerts)
            .unify()
            .or(status)
            .unify(),
    )
}

fn status(context: &WebContext) -> Status {
    use std::sync::atomic::Ordering;
    let metrics = &context.status.metrics;
    let flow = context.views.flow();
    let problems = context.status.problems();
    let late = metrics.late.load(Ordering::Relaxed);
    Status {
        healthy: problems.is_empty(),
        problems,
        dataflow: context.status.state(),
        events_per_second: flow.events_per_second,
        events_total: metrics.events.load(Ordering::Relaxed),
        watermark: flow.watermark,
        watermark_at: flow.watermark.map(crate::rfc3339),
        watermark_lag_s: flow.watermark.map(|w| (now_ms() - w) as f64 / 1000.0),
        late_total: late,
        malformed_total: metrics
            .dead_letters
            .load(Ordering::Relaxed)
            .saturating_sub(late),
        open_sessions: context.views.open_sessions(),
        model_version: context.model.as_ref().map(|m| m.current().version().into()),
        model: ModelStatus::of(context),
        sink: context.status.sink(),
    }
}

/// `GET /charts/{funnel,conversion,trends,churn}.svg`.
pub fn charts(
    context: WebContext,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::get()
        .and(warp::path!("charts" / String))
        .and(with_context(context))
        .and_then(|name: String, context: WebContext| async move {
            let views = &context.views;
            let rendered = match name.as_str() {
                "funnel.svg" => {
                    let complete: Vec<FunnelWindow> = views
                        .funnel(KEEP_WINDOWS)
                        .into_iter()
                        .filter(|w| w.complete)
                        .collect();
                    funnel_chart(&complete, FUNNEL_MEAN_WINDOWS)
                }
                "trends.svg" => {
                    let opened: Vec<i64> = views
                        .alerts()
                        .iter()
                        .map(|a| a.opened_window_start)
                        .collect();
                    trends_chart(&views.trends(TREND_WINDOWS), &opened)
                }
                "churn.svg" => churn_chart(&views.churn(CHURN_BINS)),
                "conversion.svg" => {
                    let complete: Vec<ConversionWindow> = views
                        .conversion(KEEP_WINDOWS)
                        .into_iter()
                        .filter(|w| w.complete)
                        .collect();
                    conversion_chart(&complete, FUNNEL_MEAN_WINDOWS)
                }
                _ => return Err(warp::reject::not_found()),
            };
            let svg =
                rendered.map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok(svg_reply(svg))
        })
}

fn svg_reply(svg: String) -> warp::reply::Response {
    let reply = warp::reply::with_header(svg, "content-type", "image/svg+xml");
    warp::reply::with_header(reply, "cache-control", "no-store").into_response()
}
