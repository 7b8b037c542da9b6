//! Co-occurrence: how many sessions hold each pair of products, and each product alone.

use compact_str::CompactString;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;

use crate::recs::items::Item;
use crate::Epoch;

/// `((a, b), sessions holding both)` for every ordered pair of different products that some
/// session holds: both orders, so that either product finds the other. The sessions'
/// arrangement is built once and read by both sides of the join.
pub fn co_occurrence<'scope>(
    items: VecCollection<'scope, Epoch, Item>,
) -> VecCollection<'scope, Epoch, ((CompactString, CompactString), isize)> {
    let by_session = items.arrange_by_key_named("Recs: items by session");
    by_session
        .clone()
        .join_core(by_session, |_session, a, b| {
            (a != b).then(|| (a.clone(), b.clone()))
        })
        .count_total()
}

/// `(product, sessions holding it)`.
pub fn popularity<'scope>(
    items: VecCollection<'scope, Epoch, Item>,
) -> VecCollection<'scope, Epoch, (CompactString, isize)> {
    items.map(|(_, product)| product).count_total()
}
