//! Co-occurrence: how many sessions hold each pair of products, and each product alone.
//!
//! Pairs are counted on ids hashed to integers ([`ProductKey`]): the self-join and its
//! count compare and sort hundreds of pairs per session, and two 64-bit integers compare
//! in one instruction where text compares bytes. Measured on 3 December 2026 (side-by-side
//! file, 2 workers, with the retention fix of `operators::holding`): the
//! recommender's share of the run fell from ~33 s (46.7 s with it, 13.7 s without) to ~25
//! s (35.9 s against 10.7 s). Text comes back where a row is built, from the popularity
//! named with each product's id ([`crate::recs::names`]).

use std::hash::Hash;

use differential_dataflow::operators::join::join_traces;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::{AsCollection, ExchangeData, Hashable, VecCollection};
use timely::container::{CapacityContainerBuilder, PushInto};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::StreamVec;

use crate::operators::pre_aggregate;
use crate::recs::items::{Item, ProductKey};
use crate::Epoch;

/// Fewest sessions a pair must share to be ranked at all.
///
/// A pair seen in one session is mostly chance, and most pairs are such: dropping them
/// before the ranking joins keeps the neighbour lists' input to the pairs with evidence.
/// Measured on 3 December 2026: `clickflow bench` (2M events, 2 workers) 115 s without the
/// threshold, 72.6 s with 2 (3 did no better); `clickflow evaluate-recs` (1M events, seed 7)
/// HR@10 0.4667 without, 0.4665 with it.
pub const MIN_CO_SESSIONS: isize = 2;

/// `((a, b), sessions holding both)` for every pair of different products that at least
/// [`MIN_CO_SESSIONS`] sessions hold, each pair once, with `a < b` (by key): the ranking
/// turns it both ways. Counting each pair once halves the self-join's output and the
/// count's sorting against counting both orders (each session's 15 sampled items make 105
/// pairs, not 210). The sessions' arrangement is built once and read by both sides of the
/// join.
///
/// It is an arrangement of its own, not the output arrangement of the sample's `reduce`,
/// though that holds the same updates. Read directly (`reduce_abelian` into a `ValSpine`),
/// it saved this arrangement's 0.06–0.07 s of busy time on the side-by-side file, but
/// `clickflow bench` peaked at 383–402 MB in 11 runs against 383–399 MB in 15 of this
/// build, 4 MB higher on average, next to the 400 MB bar (6 December 2026, twenty-first
/// sitting, alternating runs; an earlier sitting had seen no gain in time either).
///
/// The join's output is merged per pair on its own worker ([`pre_aggregate`]) before the
/// count exchanges and sorts it: sessions repeat the same pairs of popular products, and
/// the count's batcher held every one of them until its epoch completed. Measured on 4
/// December 2026 (side-by-side file, 2 workers, `run --profile-operators`, heaptrack): the
/// count's arranging went from 0.55 s to 0.19 s of busy time for 0.17 s of merging, and the
/// pairs waiting in its batcher at the heap's peak from 52 MB to 3 MB, for a merge table
/// of 17 MB that stays allocated between batches.
///
/// The self-join is differential's cursor join ([`join_traces`]) writing into plain
/// containers, not `join_core`: that convenience builds its output with a consolidating
/// container builder, which sorts every container of pairs before the merge above merges
/// them again by hash. callgrind on the side-by-side file's first 200,000 lines, one
/// worker, every table (7 December 2026, twenty-seventh sitting): 2.835G instructions
/// against 3.055G (7.2% fewer), the sorting having been 8.0% of the run's; with
/// `--profile-operators` on the whole file, 2 workers, the self-join took 0.13–0.22 s of
/// busy time and the recommender's other joins 0.03–0.05 s, where all of them had taken
/// 0.36–0.51 s (3 alternating pairs); the merge 0.11–0.18 s against 0.10–0.15 s. The
/// same change to the ranking's join ([`crate::recs::similar::nearest`]) saved 0.4% more
/// and was not kept.
pub fn co_occurrence<'scope>(
    items: VecCollection<'scope, Epoch, Item>,
) -> VecCollection<'scope, Epoch, ((ProductKey, ProductKey), isize)> {
    let by_session = items.arrange_by_key_named("Recs: items by session");
    let pairs = join_traces::<_, _, _, _, CapacityContainerBuilder<Vec<_>>>(
        by_session.clone(),
        by_session,
        "Recs: pairs per session",
        |_session, a: &ProductKey, b: &ProductKey, time, diff_a, diff_b, out| {
            if a < b {
                out.push_into(((*a, *b), time, diff_a * diff_b));
            }
        },
    );
    count_merged(pairs, "Recs: pairs merged").filter(|(_, both)| *both >= MIN_CO_SESSIONS)
}

/// `(product, sessions holding it)`, from each session's sample: the updates are merged
/// per product before they are counted, as the pairs are ([`count_merged`]): a backlog's
/// epoch brings 15 sampled items for each of its sessions, and a shop has far fewer
/// products than sessions. callgrind on the side-by-side file's first 200,000 lines, one worker, every
/// table (7 December 2026): 2.805G instructions against 2.835G (1.1% fewer); on the whole
/// file, 2 workers, the counts' arranging took 0.09 s of busy time against 0.12–0.13 s
/// (2 alternating pairs), the merge under 0.01 s.
pub fn popularity<'scope>(
    items: VecCollection<'scope, Epoch, Item>,
) -> VecCollection<'scope, Epoch, (ProductKey, isize)> {
    let products = items
        .inner
        .map(|((_, product), time, diff)| (product, time, diff));
    count_merged(products, "Recs: products merged")
}

/// How many of each key the `updates` hold (differential's `count_total`), their diffs
/// first summed per key on their own worker ([`pre_aggregate`], named `name`), so that
/// the count's batcher sorts one update per key and batch rather than one per session.
fn count_merged<'scope, K>(
    updates: StreamVec<'scope, Epoch, (K, Epoch, isize)>,
    name: &str,
) -> VecCollection<'scope, Epoch, (K, isize)>
where
    K: ExchangeData + Hashable + Hash + Copy,
{
    let merged = pre_aggregate(updates, name, |(key, time, diff), merge| {
        merge((*key, *time), *diff as i64)
    });
    merged
        .flat_map(|((key, time), diff)| (diff != 0).then_some((key, time, diff as isize)))
        .as_collection()
        .count_total()
}
