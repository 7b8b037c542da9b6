//! The API as a contract: the OpenAPI 3.1 document (`openapi.json`, kept by hand beside the
//! routes), served at `GET /api/v1/openapi.json`.
//!
//! A test (`tests/openapi.rs`) fails when a route and the document disagree: every path of
//! the router's source is in the document and every operation of the document is answered,
//! not 404 or 405; `.ci/run` runs schemathesis with all its checks against a running server.
//! The document also tells a 405 answer which methods its path takes (`Allow`).

use std::sync::OnceLock;

use serde_json::Value;
use warp::http::header::{HeaderValue, ALLOW};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// The document.
pub const OPENAPI: &str = include_str!("openapi.json");

fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| serde_json::from_str(OPENAPI).expect("openapi.json is JSON"))
}

/// `GET /api/v1/openapi.json`.
pub fn route() -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(|| {
            warp::reply::with_header(OPENAPI, "content-type", "application/json").into_response()
        })
}

/// Every (path template, method) the document describes, methods in capitals.
pub fn operations() -> Vec<(String, String)> {
    let mut operations = Vec::new();
    for (path, item) in document()["paths"].as_object().into_iter().flatten() {
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
            operations.push((path.clone(), method.to_ascii_uppercase()));
        }
    }
    operations
}

/// Whether the concrete `path` matches the `template` (`/charts/{chart}`).
pub fn matches(template: &str, path: &str) -> bool {
    let template: Vec<&str> = template.split('/').collect();
    let path: Vec<&str> = path.split('/').collect();
    template.len() == path.len()
        && template
            .iter()
            .zip(&path)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

/// Adds `Allow` (the methods the document gives the path) to a 405 answer.
pub fn with_allow(path: &str, mut response: warp::reply::Response) -> warp::reply::Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allowed: Vec<String> = operations()
        .into_iter()
        .filter(|(template, _)| matches(template, path))
        .map(|(_, method)| method)
        .collect();
    if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(ALLOW, value);
    }
    response
}
