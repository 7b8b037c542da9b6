//! Moving a differential collection's updates onto their own epochs.
//!
//! A differential operator may send an update for epoch `t` under a capability for an
//! earlier epoch: the record's own time field is what counts there. The stages that work
//! one whole epoch at a time ([`crate::operators::by_epoch`]) and the gathering of outputs
//! go by the capability, so a collection leaving differential's operators passes through
//! here first, and each epoch's changes arrive (and are committed) with that epoch.

use std::collections::BTreeMap;

use differential_dataflow::{AsCollection, Data, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::Epoch;

/// `collection`, each update sent under a capability for its own epoch.
pub fn at_own_epochs<'scope, D: Data>(
    collection: VecCollection<'scope, Epoch, D>,
    name: &str,
) -> VecCollection<'scope, Epoch, D> {
    collection
        .inner
        .unary(Pipeline, name, move |_capability, _info| {
            move |input, output| {
                input.for_each_stamp(|stamp, batches| {
                    let mut by_epoch: BTreeMap<Epoch, Vec<(D, Epoch, isize)>> = BTreeMap::new();
                    for update in batches.flat_map(|batch| batch.drain(..)) {
                        by_epoch.entry(update.1).or_default().push(update);
                    }
                    for (epoch, updates) in by_epoch {
                        let capability = stamp.delayed(&epoch, output.output_index());
                        output
                            .session(&capability)
                            .give_iterator(updates.into_iter());
                    }
                });
            }
        })
        .as_collection()
}
