//! A product's nearest neighbours, and the most popular products.

use std::cmp::Reverse;

use compact_str::CompactString;
use differential_dataflow::VecCollection;

use crate::rows::{Measure, PopularRow, RecommendationRow};
use crate::Epoch;

/// The similarity of two products held by `pa` and `pb` sessions, `both` of them together:
/// the cosine of their session sets. Dividing by the geometric mean of the popularities
/// damps the products every session holds, which raw co-counts would rank first for
/// everything.
pub fn similarity(both: isize, pa: isize, pb: isize) -> f64 {
    both as f64 / ((pa as f64) * (pb as f64)).sqrt()
}

/// The `k` nearest neighbours of every product (ties: the smaller id first), from the pair
/// counts and each product's popularity. The popularity arrangement is built once and read
/// by both joins (one per side of the pair).
pub fn nearest<'scope>(
    pairs: VecCollection<'scope, Epoch, ((CompactString, CompactString), isize)>,
    popularity: VecCollection<'scope, Epoch, (CompactString, isize)>,
    k: usize,
) -> VecCollection<'scope, Epoch, RecommendationRow> {
    let popularity = popularity.arrange_by_key_named("Recs: popularity");
    let by_first = pairs
        .map(|((a, b), both)| (a, (b, both)))
        .arrange_by_key_named("Recs: pairs by first");
    let with_first = by_first
        .join_core(popularity.clone(), |a, (b, both), pa| {
            Some((b.clone(), (a.clone(), *both, *pa)))
        })
        .arrange_by_key_named("Recs: pairs by second");
    let scored = with_first.join_core(popularity, |b, (a, both, pa), pb| {
        let score = similarity(*both, *pa, *pb);
        Some((a.clone(), (Measure(-score), b.clone(), *both)))
    });
    scored
        .reduce_named("Recs: nearest per product", move |a, neighbours, out| {
            let best = neighbours.iter().filter(|(_, count)| *count > 0).take(k);
            out.extend(best.enumerate().map(|(rank, ((score, b, both), _))| {
                let row = RecommendationRow {
                    product_id: a.clone(),
                    rank: rank as i64 + 1,
                    recommended_id: b.clone(),
                    score: Measure(-score.0),
                    co_sessions: *both as i64,
                };
                (row, 1)
            }));
        })
        .map(|(_, row)| row)
}

/// The `n` products held by the most sessions (ties: the smaller id first).
pub fn most_popular<'scope>(
    popularity: VecCollection<'scope, Epoch, (CompactString, isize)>,
    n: usize,
) -> VecCollection<'scope, Epoch, PopularRow> {
    popularity
        .map(|(product, sessions)| ((), (Reverse(sessions), product)))
        .reduce_named("Recs: most popular", move |_, products, out| {
            let best = products.iter().filter(|(_, count)| *count > 0).take(n);
            out.extend(best.enumerate().map(|(rank, ((sessions, product), _))| {
                let row = PopularRow {
                    rank: rank as i64 + 1,
                    product_id: product.clone(),
                    sessions: sessions.0 as i64,
                };
                (row, 1)
            }));
        })
        .map(|(_, row)| row)
}
