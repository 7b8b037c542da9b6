//! Bearer-token access: with `--api-token`, every route but `/healthz` needs
//! `Authorization: Bearer <token>`.

use std::sync::Arc;

use warp::http::StatusCode;
use warp::{Filter, Rejection};

use crate::errors::refuse;

/// Passes requests that carry the token (all requests when there is none).
pub fn authorized(token: Option<Arc<str>>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |header: Option<String>| {
            let token = token.clone();
            async move {
                let Some(token) = token else {
                    return Ok(());
                };
                match header.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
                    Some(given) if same_secret(given.trim().as_bytes(), token.as_bytes()) => Ok(()),
                    Some(_) => Err(refuse(StatusCode::UNAUTHORIZED, "invalid API token")),
                    None => Err(refuse(
                        StatusCode::UNAUTHORIZED,
                        "this server needs an `Authorization: Bearer <token>` header",
                    )),
                }
            }
        })
        .untuple_one()
}

/// Compares without stopping at the first differing byte, so response times do not reveal
/// how much of a guess was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cres", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
