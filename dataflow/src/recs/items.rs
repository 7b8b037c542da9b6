//! The items of each session of the horizon, and the bounded sample of them that is counted.

use clickflow_sources::{EventTime, EventType};
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use crate::input::Accepted;
use crate::operators::{
    hold_until, BySession, Entry, EpochWatermarks, HeldRecords, Hold, Keeping, KeyedId, RouteKey,
};
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::window::WindowSize;
use crate::Epoch;

/// A session and a product it viewed or carted, both by the 64-bit hash of their ids
/// ([`RouteKey::route`]): the holding, the sample and the counts compare integers, and no
/// row of the recommender needs a session's text. A product's text is held apart, once per
/// product ([`crate::recs::names`]), and joined back where a row names the product.
///
/// Measured on 4 December 2026 (side-by-side file, 2 workers, `run --profile-operators`,
/// workers' busy time): with both ids as text, the sample took 1.34 s and holding the items
/// 1.31 s; with both keyed, the sample 0.83–1.10 s and the holding 1.57–1.70 s (its
/// records were larger by the two hashes, and the ids are hashed as they enter). Later
/// the same day the product's text left the items as well: the holding's records went
/// from 40 to 16 bytes and the sample's arranged values from 32 to 8, and on the same file
/// the holding took 0.57 s against 0.95 s (the names' own holding 0.09 s), the run's peak
/// RSS 311 MB against 364 MB, its wall time 3.82 s against 4.02–4.03 s (alternating runs).
pub type Item = (SessionKey, ProductKey);

/// A session id hashed to an integer inside the recommender ([`RouteKey::route`]).
pub type SessionKey = u64;

/// A product id hashed to an integer inside the recommender ([`RouteKey::route`]). Two ids
/// with the same 64-bit hash (XXH3) would be counted as one; among a million ids the chance
/// of any such pair is about 3 in 10^8.
pub type ProductKey = u64;

/// A product that an accepted event viewed or carted, as both of the recommender's
/// holdings take it.
#[derive(Clone, Debug)]
pub struct Sighting {
    /// The partition the event was read from.
    pub partition: u32,
    /// Its event time.
    pub ts: EventTime,
    /// Its session.
    pub session: SessionKey,
    /// The product, with its text.
    pub product: KeyedId,
}

/// The product an accepted event viewed or carted, if any (purchases name what was carted
/// already).
pub fn product_sighting(event: &Accepted) -> Option<Sighting> {
    let product = event
        .product_id
        .as_ref()
        .filter(|_| event.event_type != EventType::Purchase)?;
    Some(Sighting {
        partition: event.partition,
        ts: event.ts,
        session: event.session_id.route(),
        product: KeyedId::new(product.clone()),
    })
}

/// Every `(session, product)` viewed or carted within `horizon_ms` of the horizon clock
/// (see [`crate::recs`]): in the collection once the window of one of its sightings has
/// closed, and, with `shows_seen`, as seen from its first sighting; and how far back they
/// reach into each partition. Each item is held on the worker that owns its session, where
/// its sightings are.
pub fn held_items<'scope>(
    sightings: BySession<'scope, Sighting>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    horizon_ms: i64,
    window: WindowSize,
    shows_seen: bool,
) -> HeldRecords<'scope, Item> {
    let updates = sightings.into_stream().map(|seen| Hold {
        record: (seen.session, seen.product.key),
        diff: 1,
        ts: seen.ts,
        partition: seen.partition,
    });
    hold_until(
        updates,
        Pipeline,
        reports,
        seed,
        "Recs: items of the horizon",
        Keeping {
            lifetime_ms: horizon_ms,
            clock: horizon_clock,
            reports_retention: true,
            entry: Entry::OnceClosed { window, shows_seen },
        },
    )
}

/// The horizon's clock: the watermark once the epoch's reports are in, with a finished
/// partition at its own last watermark (at the end of a file the items stand as of its
/// newest events rather than all leaving).
pub(super) fn horizon_clock(watermarks: EpochWatermarks, _: &ProgressSeed) -> EventTime {
    watermarks.held_at_end
}

/// Where an item stands in its session's sample: XXH3-64 of the two ids' hashes
/// (little-endian), so the sample is drawn without hashing text again.
pub fn sample_rank(session: SessionKey, product: ProductKey) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&session.to_le_bytes());
    bytes[8..].copy_from_slice(&product.to_le_bytes());
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
        let mut ranked: Vec<(u64, ProductKey)> = products
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(product, _)| (sample_rank(*session, **product), **product))
            .collect();
        if ranked.len() > max {
            ranked.select_nth_unstable(max);
            ranked.truncate(max);
        }
        out.extend(ranked.into_iter().map(|(_, product)| (product, 1)));
    })
}
