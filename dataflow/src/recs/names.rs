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

use crate::operators::{hold_until, Entry, Hold, Keeping, KeyedId};
use crate::recs::items::{horizon_clock, ProductKey, Sighting};
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::Epoch;

/// `(product key, product id)` for every product some session of the horizon holds.
///
/// The products are held as [`KeyedId`]s, hashed and compared by their key alone, not as
/// `(key, id)` pairs whose text is hashed and compared too. Tried on 6 December 2026, that
/// halved this holding's busy time but `clickflow bench` peaked at 383–412 MB (3 of 13 runs
/// over the 400 MB bar, alternating runs), so it was left out. Once the session rows were
/// shared by their readers the bench had room: on 7 December (twenty-seventh sitting) this
/// holding took 0.08–0.09 s of busy time on the side-by-side file against 0.13–0.14 s (2
/// alternating pairs), callgrind counted 2.769G instructions against 2.805G on the file's
/// first 200,000 lines (one worker, every table), and the bench peaked at 343–348 MB
/// against 345–347 MB (3 alternating pairs).
pub fn held_names<'scope>(
    sightings: StreamVec<'scope, Epoch, Sighting>,
    reports: StreamVec<'scope, Epoch, PartitionReport>,
    seed: ProgressSeed,
    horizon_ms: i64,
) -> VecCollection<'scope, Epoch, (ProductKey, CompactString)> {
    let updates = sightings.map(|seen| Hold {
        record: seen.product,
        diff: 1,
        ts: seen.ts,
        partition: seen.partition,
    });
    let per_worker = hold_until(
        updates,
        Pipeline,
        reports,
        seed,
        "Recs: product names",
        Keeping {
            lifetime_ms: horizon_ms,
            clock: horizon_clock,
            reports_retention: false,
            entry: Entry::AtOnce,
        },
    )
    .collection;
    per_worker
        .distinct()
        .map(|product| (product.key, product.id))
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
