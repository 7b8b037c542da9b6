//! Merging values of equal keys within a batch, before they cross the network.

use std::hash::Hash;

use foldhash::HashMap;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use super::Merge;
use crate::Epoch;

/// Maps each record to zero or more `(key, value)` pairs with `extract` and merges the values
/// of equal keys within each batch, so that a hot key (the current minute) crosses the
/// exchange once per batch instead of once per event. Exact, because merging is associative
/// and commutative.
pub fn pre_aggregate<'scope, D, K, V, F>(
    records: StreamVec<'scope, Epoch, D>,
    name: &str,
    mut extract: F,
) -> StreamVec<'scope, Epoch, (K, V)>
where
    D: ExchangeData + Clone,
    K: ExchangeData + Clone + Hash + Eq,
    V: ExchangeData + Clone + Merge,
    F: FnMut(&D, &mut dyn FnMut(K, V)) + 'static,
{
    records.unary(Pipeline, name, move |_capability, _info| {
        let mut merged: HashMap<K, V> = HashMap::default();
        move |input, output| {
            input.for_each_stamp(|stamp, batches| {
                for batch in batches {
                    for record in batch.iter() {
                        extract(record, &mut |key, value| match merged.get_mut(&key) {
                            Some(existing) => existing.merge(value),
                            None => {
                                merged.insert(key, value);
                            }
                        });
                    }
                }
                output.session(&stamp).give_iterator(merged.drain());
            });
        }
    })
}
