//! `churn_scores`: the churn model applied to every changed session, one batch per epoch.
//!
//! The stage follows `session_features`: each epoch's session row changes are held until the
//! epoch is complete, then scored in one call to the model (tree by tree over the whole
//! batch). A changed session arrives as the retraction of its old row and the insertion of the
//! new one; both are scored, so the old score is retracted exactly as it was inserted (the
//! model is deterministic) and a change that leaves the probability as it was — a longer
//! duration within the same tree leaves, or the session closing — cancels out and writes
//! nothing. Closed sessions keep the score of their final features: the table then holds, for
//! every session, what the model said of it, which is what a later check of the model
//! against real outcomes needs.

use std::collections::BTreeMap;
use std::sync::Arc;

use clickflow_model::{ChurnModel, Features};
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::rows::{Probability, ScoreRow, SessionRow};
use crate::Epoch;

/// One epoch's session row changes, held until the epoch is complete.
type EpochRows = (Capability<Epoch>, Vec<(SessionRow, isize)>);

/// Scores sessions with a churn model.
pub trait ChurnScores<'scope> {
    /// The `churn_scores` row of every session in the collection, kept up to date as its
    /// features change.
    fn churn_scores(self, model: Arc<ChurnModel>) -> VecCollection<'scope, Epoch, ScoreRow>;
}

impl<'scope> ChurnScores<'scope> for VecCollection<'scope, Epoch, SessionRow> {
    fn churn_scores(self, model: Arc<ChurnModel>) -> VecCollection<'scope, Epoch, ScoreRow> {
        let version: Arc<str> = model.version().into();
        self.inner
            .unary_frontier(Pipeline, "Churn: score", move |_capability, _info| {
                let mut pending: BTreeMap<Epoch, EpochRows> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each_stamp(|stamp, batches| {
                        if let Some(capability) = stamp.retain_least(output.output_index()) {
                            pending
                                .entry(*capability.time())
                                .or_insert_with(|| (capability, Vec::new()))
                                .1
                                .extend(batches.flat_map(|b| b.drain(..).map(|(r, _, d)| (r, d))));
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.frontier().less_equal(entry.key()) {
                            break;
                        }
                        let (epoch, (capability, rows)) = entry.remove_entry();
                        let features: Vec<Features> =
                            rows.iter().map(|(row, _)| row.features()).collect();
                        let probabilities = model.predict_batch(&features);
                        let mut scores: Vec<(ScoreRow, isize)> = rows
                            .into_iter()
                            .zip(probabilities)
                            .map(|((row, diff), p)| {
                                let score = ScoreRow {
                                    session_id: row.session_id,
                                    user_id: row.user_id,
                                    churn_probability: Probability(p),
                                    model_version: version.clone(),
                                };
                                (score, diff)
                            })
                            .collect();
                        // An unchanged score cancels here, before it travels anywhere.
                        consolidate(&mut scores);
                        output
                            .session(&capability)
                            .give_iterator(scores.into_iter().map(|(s, d)| (s, epoch, d)));
                    }
                }
            })
            .as_collection()
    }
}
