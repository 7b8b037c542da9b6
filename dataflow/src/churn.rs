//! `churn_scores`: the churn model applied to every changed session, batch by batch.
//!
//! The stage follows `session_features` and scores each batch of session row changes as it
//! arrives: it holds nothing back, so its memory does not grow with the size of an epoch (an
//! earlier version held a whole epoch to score it in one call; during a backfill that was
//! the largest buffer of the process, and the model scores one session at a time anyway).
//! A changed session arrives as the retraction of its old row and the insertion of the new
//! one, next to each other in the same batch; both are scored, so the old score is retracted
//! exactly as it was inserted (the model is deterministic), and a change that leaves the
//! probability as it was — a longer duration within the same tree leaves, or the session
//! closing — cancels out within the batch and writes nothing. (Should a pair ever straddle two
//! batches, the gathering worker consolidates the epoch and cancels it there.)
//!
//! Only what can churn is scored: a session that bought is converted, and has no churn
//! probability (its score is retracted when the purchase arrives, so it never shows in the
//! at-risk list or the histogram). A closed session keeps the score it had while open:
//! closing changes no feature.

use std::sync::Arc;

use clickflow_model::ChurnModel;
use differential_dataflow::consolidation::consolidate_updates;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::rows::{Probability, ScoreRow, SessionRow};
use crate::Epoch;

/// Scores sessions with a churn model.
pub trait ChurnScores<'scope> {
    /// The `churn_scores` row of every session in the collection that has not bought, kept
    /// up to date as its features change.
    fn churn_scores(self, model: Arc<ChurnModel>) -> VecCollection<'scope, Epoch, ScoreRow>;
}

impl<'scope> ChurnScores<'scope> for VecCollection<'scope, Epoch, SessionRow> {
    fn churn_scores(self, model: Arc<ChurnModel>) -> VecCollection<'scope, Epoch, ScoreRow> {
        let version: Arc<str> = model.version().into();
        self.inner
            .unary(Pipeline, "Churn: score", move |_capability, _info| {
                let mut scores: Vec<(ScoreRow, Epoch, isize)> = Vec::new();
                move |input, output| {
                    input.for_each_stamp(|stamp, batches| {
                        let mut session = output.session(&stamp);
                        for batch in batches {
                            let unconverted =
                                batch.drain(..).filter(|(row, _, _)| row.num_purchases == 0);
                            scores.extend(unconverted.map(|(row, epoch, diff)| {
                                let probability = model.predict(&row.features());
                                let score = ScoreRow {
                                    session_id: row.session_id,
                                    session_start: row.session_start,
                                    user_id: row.user_id,
                                    churn_probability: Probability(probability),
                                    model_version: version.clone(),
                                };
                                (score, epoch, diff)
                            }));
                            // An unchanged score cancels here, before it travels anywhere.
                            consolidate_updates(&mut scores);
                            session.give_iterator(scores.drain(..));
                        }
                    });
                }
            })
            .as_collection()
    }
}
