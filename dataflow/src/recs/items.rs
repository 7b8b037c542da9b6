//! The items of each session of the horizon, and the bounded sample of them that is counted.

use clickflow_sources::{EventTime, EventType};
use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::StreamVec;

use crate::input::Accepted;
use crate::operators::{hold_until, EpochWatermarks, Hold, KeyedId, RouteKey};
use crate::runtime::replay::Retention;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::Epoch;

/// A session, by the 64-bit hash of its id ([`RouteKey::route`]), and a product it viewed or
/// carted, hashed and with its text ([`KeyedId`]): the holding, the sample and the counts
/// compare integers, and the product's text is carried to the rows that name it. The
/// session's text is named by no row of the recommender (the live views find a session's
/// items by the same hash), so it is not carried: every held item repeated it, and with it
/// the holding's records were 64 bytes rather than 40.
///
/// Measured on 4 December 2026 (side-by-side file, 2 workers, `run --profile-operators`,
/// workers' busy time): with both ids as text, the sample took 1.34 s and holding the items
/// 1.31 s; with both keyed, the sample 0.83–1.10 s and the holding 1.57–1.70 s (its
/// records were larger by the two hashes, and the ids are hashed as they enter).
pub type Item = (SessionKey, KeyedId);

/// A session id hashed to an integer inside the recommender ([`RouteKey::route`]).
pub type SessionKey = u64;

/// Every `(session, product)` viewed or carted within `horizon_ms` of the horizon clock
/// (see [`crate::recs`]), and how far back they reach into each partition.
pub fn held_items<'scope>(
    accepted: StreamVec<'scope, Epoch, Accepted>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    horizon_ms: i64,
) -> (
    VecCollection<'scope, Epoch, Item>,
    StreamVec<'scope, Epoch, Retention>,
) {
    let updates = accepted
        .filter(|event| event.event_type != EventType::Purchase && event.product_id.is_some())
        .map(move |event| Hold {
            origin: Some((event.partition, event.ts)),
            until: event.ts.saturating_add(horizon_ms),
            diff: 1,
            record: (
                event.session_id.route(),
                KeyedId::new(event.product_id.expect("filtered")),
            ),
        });
    // A finished partition holds the horizon clock at its own last watermark.
    let unfinished = reports.map(|report| PartitionReport {
        finished: false,
        ..report
    });
    hold_until(
        updates,
        unfinished,
        seed,
        "Recs: items of the horizon",
        |&(session, _)| session,
        horizon_clock,
    )
}

/// The horizon's clock: the watermark once the epoch's reports are in.
fn horizon_clock(watermarks: EpochWatermarks, _: &ProgressSeed) -> EventTime {
    watermarks.after
}

/// Where an item stands in its session's sample: XXH3-64 of the two ids' hashes
/// (little-endian), so the sample is drawn without hashing text again.
pub fn sample_rank(session: SessionKey, product: &KeyedId) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&session.to_le_bytes());
    bytes[8..].copy_from_slice(&product.key.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// At most `max` products per session: those with the smallest [`sample_rank`], a sample
/// that is uniform, the same on every worker and every run, and stable as items come and
/// go (an item's membership depends only on the items beside it).
pub fn sample_per_session<'scope>(
    items: VecCollection<'scope, Epoch, Item>,
    max: usize,
) -> VecCollection<'scope, Epoch, Item> {
    items.reduce_named("Recs: sample per session", move |session, products, out| {
        let mut ranked: Vec<(u64, &KeyedId)> = products
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(product, _)| (sample_rank(*session, product), *product))
            .collect();
        if ranked.len() > max {
            ranked.select_nth_unstable(max);
            ranked.truncate(max);
        }
        out.extend(ranked.into_iter().map(|(_, product)| (product.clone(), 1)));
    })
}
