//! The text of the product keys: each product's id, held while an item of the horizon holds
//! the product, and the popularity named with it.
//!
//! The items are counted by key ([`crate::recs::items::Item`]); a product's text is needed
//! only where a row names it (`product_recommendations`, the popular products, the live
//! views' session items). Holding it once per product rather than once per item is what
//! lets the items be two integers: a shop has a thousand products and a million items.
//!
//! Each worker holds the names of the products its own events sighted, with no exchange,
//! and the collection is the `distinct` of what the workers hold: a name is present while
//! the latest sighting of its product on any worker is within the horizon, which is while
//! some item holds the product (the item of that sighting's session is held as long). A
//! restart needs no retention of its own for the names: the sighting that holds a name is
//! also the latest of its item, which the items' retention replays.

use compact_str::CompactString;
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use crate::operators::{hold_until, Hold, Keeping, KeyedId};
use crate::recs::items::{horizon_clock, horizon_reports, ProductKey, Sighting};
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::Epoch;

/// `(product key, product id)` for every product some session of the horizon holds.
///
/// Holding the products as [`KeyedId`]s instead, hashed and compared by the key alone,
/// halved this holding's busy time on the side-by-side file (0.08–0.09 s against
/// 0.16–0.17 s), but `clickflow bench` peaked at 390–398 MB in 5 runs against 383–399 MB in
/// 15 of this build, and at 383–412 MB in 13 runs (3 over the 400 MB bar) together with
/// the change told at [`crate::recs::pairs::co_occurrence`] (6 December 2026, alternating
/// runs). Neither change alters what a record holds; a faster recommender may do its end of
/// the epoch's work while the session stage emits every session's row, where the bench's
/// peak is. Both were left out.
pub fn held_names<'scope>(
    sightings: StreamVec<'scope, Epoch, Sighting>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    horizon_ms: i64,
) -> VecCollection<'scope, Epoch, (ProductKey, CompactString)> {
    let updates = sightings.map(|seen| Hold {
        record: (seen.product.key, seen.product.id),
        diff: 1,
        ts: seen.ts,
        partition: seen.partition,
    });
    let (per_worker, _no_retention) = hold_until(
        updates,
        Pipeline,
        horizon_reports(reports),
        seed,
        "Recs: product names",
        Keeping {
            lifetime_ms: horizon_ms,
            clock: horizon_clock,
            reports_retention: false,
        },
    );
    per_worker.distinct()
}

/// `popularity` (sessions holding each product) with each product's id.
pub fn named<'scope>(
    popularity: VecCollection<'scope, Epoch, (ProductKey, isize)>,
    names: VecCollection<'scope, Epoch, (ProductKey, CompactString)>,
) -> VecCollection<'scope, Epoch, (KeyedId, isize)> {
    let names = names.arrange_by_key_named("Recs: product names by key");
    popularity
        .arrange_by_key_named("Recs: popularity by key")
        .join_core(names, |&key, &sessions, id| {
            Some((
                KeyedId {
                    key,
                    id: id.clone(),
                },
                sessions,
            ))
        })
}
