//! The recommender's live state and its routes.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/recommendations?session_id=S&k=N` | what session `S` should see next |
//! | `GET /api/v1/products/{id}/similar?k=N` | a product's nearest neighbours |
//!
//! Both read the dataflow's rows kept in memory ([`RecsBoard`]): the neighbours of every
//! product (`product_recommendations`, changed once per closed window), the items of every
//! open session (as they are seen), and the most popular products of the horizon. A
//! session the views do not know (new, closed, or with no product yet) gets the popular
//! products: that is what "a new session" is to a recommender, so it is an answer, not an
//! error. An unknown product is a 404.

use std::collections::HashMap;

use clickflow_dataflow::config::RecsConfig;
use clickflow_dataflow::recs::serve::{recommend, Suggestion};
use clickflow_dataflow::rows::{PopularRow, ProductName, RecommendationRow, SessionItem};
use compact_str::CompactString;
use serde::Serialize;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::context::WebContext;
use crate::errors::refuse;

/// Most products one answer holds.
pub const MAX_K: usize = 50;
/// Longest id a route accepts (session or product), in characters.
const MAX_ID_CHARS: usize = 256;

/// A product's neighbours by rank (index 0 is rank 1): `(neighbour, score, sessions with
/// both)`; a slot is empty between a rank's retraction and its replacement.
type RankedNeighbours = Vec<Option<(CompactString, f64, i64)>>;

/// What the recommender has said, as the routes read it.
#[derive(Debug)]
pub struct RecsBoard {
    /// False when the pipeline runs without the recommender.
    pub enabled: bool,
    /// Each product's neighbours by rank.
    neighbours: HashMap<CompactString, RankedNeighbours>,
    /// Each open session's latest [`RecsBoard::items_per_session`] items, by product key in
    /// the order they were first seen, by the session's key ([`SessionItem::key_of`]).
    items: HashMap<u64, Vec<u64>>,
    /// How many of a session's latest items its recommendations are drawn from: the
    /// recommender's `--recs-items-per-session`, as `clickflow evaluate-recs` judges them.
    pub items_per_session: usize,
    /// The id of every product key the items hold. An item is shown by its id, so one whose
    /// name has not arrived yet is left out until it does: with a sink that writes from
    /// every worker, the views take each worker's part of an epoch as it is written, and a
    /// product's name may come from another worker than the session's item.
    names: HashMap<u64, CompactString>,
    /// The popular products by rank.
    popular: Vec<Option<CompactString>>,
}

impl Default for RecsBoard {
    fn default() -> Self {
        RecsBoard {
            enabled: true,
            neighbours: HashMap::new(),
            items: HashMap::new(),
            items_per_session: RecsConfig::default().max_items_per_session,
            names: HashMap::new(),
            popular: Vec::new(),
        }
    }
}

/// Puts `value` at `rank` (1-based) of `ranks`, or clears it.
fn set_rank<T>(ranks: &mut Vec<Option<T>>, rank: i64, value: Option<T>) {
    let index = (rank.max(1) - 1) as usize;
    if ranks.len() <= index {
        ranks.resize_with(index + 1, || None);
    }
    ranks[index] = value;
    while ranks.last().is_some_and(Option::is_none) {
        ranks.pop();
    }
}

impl RecsBoard {
    /// Applies the epoch's changes (retractions first, then insertions).
    pub fn apply(
        &mut self,
        neighbours: &[(RecommendationRow, isize)],
        items: &[(SessionItem, isize)],
        names: &[(ProductName, isize)],
        popular: &[(PopularRow, isize)],
    ) {
        for (row, _) in neighbours.iter().filter(|(_, d)| *d < 0) {
            if let Some(ranks) = self.neighbours.get_mut(&row.product_id) {
                set_rank(ranks, row.rank, None);
                if ranks.is_empty() {
                    self.neighbours.remove(&row.product_id);
                }
            }
        }
        for (row, _) in neighbours.iter().filter(|(_, d)| *d > 0) {
            let ranks = self.neighbours.entry(row.product_id.clone()).or_default();
            let neighbour = (row.recommended_id.clone(), row.score.0, row.co_sessions);
            set_rank(ranks, row.rank, Some(neighbour));
        }
        for (item, diff) in items {
            if *diff < 0 {
                if let Some(held) = self.items.get_mut(&item.session_key) {
                    held.retain(|p| *p != item.product_key);
                    if held.is_empty() {
                        self.items.remove(&item.session_key);
                    }
                }
            }
        }
        for (item, _) in items.iter().filter(|(_, d)| *d > 0) {
            let held = self.items.entry(item.session_key).or_default();
            if !held.contains(&item.product_key) {
                held.push(item.product_key);
                if held.len() > self.items_per_session {
                    held.remove(0);
                }
            }
        }
        for (name, _) in names.iter().filter(|(_, d)| *d < 0) {
            self.names.remove(&name.product_key);
        }
        for (name, _) in names.iter().filter(|(_, d)| *d > 0) {
            self.names.insert(name.product_key, name.product_id.clone());
        }
        for (row, _) in popular.iter().filter(|(_, d)| *d < 0) {
            set_rank(&mut self.popular, row.rank, None);
        }
        for (row, _) in popular.iter().filter(|(_, d)| *d > 0) {
            set_rank(&mut self.popular, row.rank, Some(row.product_id.clone()));
        }
    }

    /// Forgets a session that has closed: it is no longer shown anything.
    pub fn forget_session(&mut self, session_id: &str) {
        self.items.remove(&SessionItem::key_of(session_id));
    }

    /// Products whose neighbours are known.
    pub fn products(&self) -> usize {
        self.neighbours.len()
    }

    fn neighbour_scores(&self, product: &str) -> Option<Vec<(CompactString, f64)>> {
        let ranks = self.neighbours.get(product)?;
        Some(
            ranks
                .iter()
                .flatten()
                .map(|(id, score, _)| (id.clone(), *score))
                .collect(),
        )
    }
}

/// One product of an answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommended {
    /// The product.
    pub product_id: String,
    /// Its score: summed similarity to the session's items (recommendations) or the
    /// similarity to the product (similar products); 0 for a popular product filling the
    /// list.
    pub score: f64,
    /// `similar` (from the session's items) or `popular`.
    pub reason: &'static str,
}

/// `GET /api/v1/recommendations`.
#[derive(Serialize)]
struct SessionAnswer {
    session_id: String,
    /// True when the views hold items of the session.
    known_session: bool,
    /// The session's latest items (up to `--recs-items-per-session`), oldest first (never
    /// recommended back).
    items: Vec<String>,
    recommendations: Vec<Recommended>,
}

/// A neighbour, with how many sessions held both.
#[derive(Serialize)]
struct Similar {
    product_id: String,
    rank: usize,
    score: f64,
    co_sessions: i64,
}

/// `GET /api/v1/products/{id}/similar`.
#[derive(Serialize)]
struct SimilarAnswer {
    product_id: String,
    similar: Vec<Similar>,
}

/// Checks an id taken from a request.
fn valid_id(what: &str, id: &str) -> Result<(), Rejection> {
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS || id.chars().any(char::is_control) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("`{what}` must be 1 to {MAX_ID_CHARS} characters, none of them control"),
        ));
    }
    Ok(())
}

/// Reads `k` (1 to [`MAX_K`], default 10) and, when `required` names one, that parameter;
/// any other parameter is refused by name.
fn params(
    query: &HashMap<String, String>,
    required: Option<&str>,
) -> Result<(usize, Option<String>), Rejection> {
    let takes = |name: &str| name == "k" || Some(name) == required;
    if let Some(unknown) = query.keys().find(|k| !takes(k)) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter `{unknown}`"),
        ));
    }
    let k = match query.get("k") {
        None => 10,
        Some(raw) => match raw.parse::<usize>() {
            Ok(k) if (1..=MAX_K).contains(&k) => k,
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("`k` must be an integer from 1 to {MAX_K}, got `{raw}`"),
                ))
            }
        },
    };
    let value = match required {
        None => None,
        Some(name) => {
            let value = query
                .get(name)
                .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, format!("`{name}` is required")))?;
            valid_id(name, value)?;
            Some(value.clone())
        }
    };
    Ok((k, value))
}

fn enabled(context: &WebContext) -> Result<(), Rejection> {
    if context.views.recs(|board| board.enabled) {
        return Ok(());
    }
    Err(refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "the pipeline runs without the recommender (--no-recommendations)",
    ))
}

/// The recommendations for `session_id`.
fn for_session(context: &WebContext, session_id: &str, k: usize) -> SessionAnswer {
    context.views.recs(|board| {
        let items: Vec<&str> = board
            .items
            .get(&SessionItem::key_of(session_id))
            .map(|held| {
                held.iter()
                    .filter_map(|key| board.names.get(key))
                    .map(CompactString::as_str)
                    .collect()
            })
            .unwrap_or_default();
        let table: HashMap<&str, Vec<(CompactString, f64)>> = items
            .iter()
            .filter_map(|item| Some((*item, board.neighbour_scores(item)?)))
            .collect();
        let popular: Vec<CompactString> = board.popular.iter().flatten().cloned().collect();
        let suggestions = recommend(&items, |p| table.get(p).map(Vec::as_slice), &popular, k);
        SessionAnswer {
            session_id: session_id.to_string(),
            known_session: !items.is_empty(),
            items: items.iter().map(|s| s.to_string()).collect(),
            recommendations: suggestions.into_iter().map(recommended).collect(),
        }
    })
}

fn recommended(suggestion: Suggestion) -> Recommended {
    Recommended {
        product_id: suggestion.product_id.to_string(),
        score: suggestion.score,
        reason: if suggestion.popular {
            "popular"
        } else {
            "similar"
        },
    }
}

/// The two routes.
pub fn routes(
    context: WebContext,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let with_context = {
        let context = context.clone();
        warp::any().map(move || context.clone())
    };
    let session = warp::path!("api" / "v1" / "recommendations")
        .and(warp::query::<HashMap<String, String>>())
        .and(with_context.clone())
        .and_then(|query, context: WebContext| async move {
            let (k, session_id) = params(&query, Some("session_id"))?;
            enabled(&context)?;
            let answer = for_session(&context, &session_id.expect("required"), k);
            Ok::<_, Rejection>(warp::reply::json(&answer).into_response())
        });
    let similar = warp::path!("api" / "v1" / "products" / String / "similar")
        .and(warp::query::<HashMap<String, String>>())
        .and(with_context)
        .and_then(|raw: String, query, context: WebContext| async move {
            let product = percent_decoded(&raw)?;
            valid_id("product id", &product)?;
            let (k, _) = params(&query, None)?;
            enabled(&context)?;
            let similar = context.views.recs(|board| {
                board.neighbours.get(product.as_str()).map(|ranks| {
                    ranks
                        .iter()
                        .enumerate()
                        .filter_map(|(i, n)| n.as_ref().map(|n| (i + 1, n)))
                        .take(k)
                        .map(|(rank, (id, score, both))| Similar {
                            product_id: id.to_string(),
                            rank,
                            score: *score,
                            co_sessions: *both,
                        })
                        .collect::<Vec<_>>()
                })
            });
            let similar = similar.ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no product `{product}` in the recommender's horizon: it was not \
                         viewed or carted together with another product there"
                    ),
                )
            })?;
            let answer = SimilarAnswer {
                product_id: product,
                similar,
            };
            Ok::<_, Rejection>(warp::reply::json(&answer).into_response())
        });
    warp::get().and(session.or(similar).unify())
}

/// A path segment, percent-decoded (product ids may hold any character).
fn percent_decoded(raw: &str) -> Result<String, Rejection> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|id| id.into_owned())
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "the product id is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(product_key: u64, diff: isize) -> (SessionItem, isize) {
        let session_key = 7;
        (
            SessionItem {
                session_key,
                product_key,
            },
            diff,
        )
    }

    #[test]
    fn a_session_keeps_its_latest_items_in_the_order_first_seen() {
        let mut board = RecsBoard {
            items_per_session: 3,
            ..RecsBoard::default()
        };
        board.apply(
            &[],
            &[item(1, 1), item(2, 1), item(1, 1), item(3, 1)],
            &[],
            &[],
        );
        assert_eq!(board.items[&7], [1, 2, 3]);
        board.apply(&[], &[item(4, 1), item(2, 1)], &[], &[]);
        assert_eq!(board.items[&7], [2, 3, 4]);
        // A retraction of an item it no longer keeps changes nothing; of one it keeps,
        // removes it.
        board.apply(&[], &[item(1, -1), item(3, -1)], &[], &[]);
        assert_eq!(board.items[&7], [2, 4]);
    }
}
