//! The recommender's final rows, recounted: every session's items within the horizon of the
//! final clock whose window had closed, sampled, paired and ranked with plain maps.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use clickflow_sources::{Event, EventTime, EventType};
use compact_str::CompactString;

use crate::config::RecsConfig;
use crate::operators::RouteKey;
use crate::recs::items::sample_rank;
use crate::recs::pairs::MIN_CO_SESSIONS;
use crate::recs::similar::{affinity, similarity};
use crate::rows::{Measure, RecommendationRow};
use crate::window::WindowSize;

/// `product_recommendations` as it stands when the horizon clock is at `clock` (the minimum
/// over partitions of their last watermark) and the pipeline watermark at `closed` (windows
/// of `window` ending at or before it are closed: `+infinity` once the input ended), from
/// the accepted events of every session id.
///
/// An item counts while its latest sighting is within the horizon, once the window of its
/// earliest has closed. (The pipeline takes the earliest sighting since the item last left
/// the horizon; every test file's sessions are shorter than its horizon, so no item leaves
/// and comes back.)
pub fn recount(
    sessions: &HashMap<CompactString, Vec<&Event>>,
    clock: EventTime,
    closed: EventTime,
    window: WindowSize,
    config: &RecsConfig,
) -> BTreeMap<(CompactString, i64), RecommendationRow> {
    let mut held: BTreeMap<&CompactString, BTreeSet<&CompactString>> = BTreeMap::new();
    for (session, events) in sessions {
        let mut seen: BTreeMap<&CompactString, (EventTime, EventTime)> = BTreeMap::new();
        for event in events
            .iter()
            .filter(|e| e.event_type != EventType::Purchase)
        {
            if let Some(product) = &event.product_id {
                let (earliest, latest) = seen.entry(product).or_insert((event.ts, event.ts));
                *earliest = (*earliest).min(event.ts);
                *latest = (*latest).max(event.ts);
            }
        }
        let within = seen
            .into_iter()
            .filter(|&(_, (earliest, latest))| {
                latest.saturating_add(config.horizon_ms) > clock
                    && window.window_of(earliest).end <= closed
            })
            .map(|(product, (_, latest))| (product, latest));
        let session_key = session.route();
        let mut items: Vec<(u64, &CompactString)> = within
            .map(|(product, _)| {
                let rank = sample_rank(session_key, product.route());
                (rank, product)
            })
            .collect();
        items.sort();
        items.truncate(config.max_items_per_session);
        if !items.is_empty() {
            held.insert(session, items.into_iter().map(|(_, p)| p).collect());
        }
    }
    let mut sessions_with: HashMap<&CompactString, i64> = HashMap::new();
    let mut together: HashMap<(&CompactString, &CompactString), i64> = HashMap::new();
    for items in held.values() {
        for a in items {
            *sessions_with.entry(a).or_default() += 1;
            for b in items.iter().filter(|b| *b != a) {
                *together.entry((a, b)).or_default() += 1;
            }
        }
    }
    let mut by_product: BTreeMap<&CompactString, Vec<(f64, &CompactString, i64)>> = BTreeMap::new();
    for (&(a, b), &both) in together
        .iter()
        .filter(|(_, &both)| both >= MIN_CO_SESSIONS as i64)
    {
        let rank_key = affinity(both as isize, sessions_with[b] as isize);
        by_product.entry(a).or_default().push((rank_key, b, both));
    }
    let mut rows = BTreeMap::new();
    for (product, mut neighbours) in by_product {
        neighbours.sort_by(|x, y| y.0.total_cmp(&x.0).then_with(|| x.1.cmp(y.1)));
        for (rank, (_, neighbour, both)) in
            neighbours.into_iter().take(config.neighbours).enumerate()
        {
            let score = similarity(
                both as isize,
                sessions_with[product] as isize,
                sessions_with[neighbour] as isize,
            );
            let row = RecommendationRow {
                product_id: product.clone(),
                rank: rank as i64 + 1,
                recommended_id: neighbour.clone(),
                score: Measure(score),
                co_sessions: both,
            };
            rows.insert(row.key(), row);
        }
    }
    rows
}
