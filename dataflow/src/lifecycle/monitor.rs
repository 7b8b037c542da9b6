//! How well the served predictions turn out: every score is kept until its session ends,
//! then labelled with how it ended (bought or not). From those labelled predictions come
//! each model version's live ROC AUC and Brier score (the dashboard's), and the recent
//! examples a challenger is trained on (the retrainer's).
//!
//! Fed with every committed epoch on the sink's thread, never on a timely worker; replayed
//! epochs are skipped (they were seen before a restart).
//!
//! **A sample that weighs like the log.** `clickflow evaluate` judges a model on every
//! prediction it logged, so a session scored 40 times weighs 40 times one scored once. The
//! monitor keeps one prediction in [`MonitorLimits::sample_one_in`] (chosen by a hash, so
//! deterministically), which weighs sessions the same way. Two earlier samplings did not:
//! a session's first and latest predictions (the latest of a churned session is its last
//! silence, which no model gets wrong: a challenger trained and judged on that ranked the
//! states the dataflow scores no better than chance), then a fixed number per session (short
//! sessions weighed as much as long ones, and a challenger that looked better on them was
//! worse on the log).
//!
//! Bounded: at most [`MonitorLimits::open_sessions`] sessions are followed, each with at
//! most [`MonitorLimits::per_session`] predictions, and the newest
//! [`MonitorLimits::labelled`] labelled predictions are kept.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use clickflow_model::evaluate::{by_version, Served as Judged, VersionEvaluation};
use clickflow_model::{Example, Features};
use smallvec::SmallVec;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::kpi::sessions::SessionRule;
use crate::rows::SessionKey;
use crate::runtime::output::EpochOutput;
use crate::training::session_key;

/// How much the monitor keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorLimits {
    /// Open sessions followed at most (a backfill can hold hundreds of thousands).
    pub open_sessions: usize,
    /// One prediction in this many is kept.
    pub sample_one_in: u64,
    /// Predictions kept per session at most.
    pub per_session: usize,
    /// Labelled predictions kept, the newest.
    pub labelled: usize,
}

impl Default for MonitorLimits {
    /// One prediction in 4, 100k sessions of at most 16, 200k labelled: about 150 MB at
    /// most, a few MB at the demo's rate.
    fn default() -> Self {
        MonitorLimits {
            open_sessions: 100_000,
            sample_one_in: 4,
            per_session: 16,
            labelled: 200_000,
        }
    }
}

/// One served prediction.
#[derive(Clone, Debug)]
struct Served {
    features: Features,
    probability: f64,
    version: Arc<str>,
}

/// A served prediction with how its session ended.
#[derive(Clone, Debug)]
struct Labelled {
    /// The session as known then, labelled.
    example: Example,
    /// What the model said.
    probability: f64,
    /// Which model said it.
    version: Arc<str>,
}

/// Follows served predictions to their outcomes.
pub struct ModelMonitor {
    rule: SessionRule,
    limits: MonitorLimits,
    state: Mutex<State>,
}

/// What is followed of one open session: the sample of its predictions, and how many it was
/// given.
#[derive(Default)]
struct Followed {
    sample: SmallVec<[Served; 2]>,
    seen: u64,
}

#[derive(Default)]
struct State {
    pending: HashMap<SessionKey, Followed>,
    labelled: VecDeque<Labelled>,
}

impl ModelMonitor {
    /// A monitor for sessions cut by `rule`.
    pub fn new(rule: SessionRule, limits: MonitorLimits) -> ModelMonitor {
        ModelMonitor {
            rule,
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes in one committed epoch.
    pub fn observe(&self, output: &EpochOutput) {
        if output.replay {
            return;
        }
        let mut state = self.lock();
        let state = &mut *state;
        for (score, _) in output.scores.iter().filter(|(_, d)| *d > 0) {
            let key = score.key();
            let full = state.pending.len() >= self.limits.open_sessions;
            let session = session_key(&key.0, key.1);
            let followed = match state.pending.get_mut(&key) {
                Some(followed) => followed,
                None if full => continue,
                None => state.pending.entry(key).or_default(),
            };
            let prediction = Served {
                features: score.features.features(),
                probability: score.churn_probability.0,
                version: score.model_version.clone(),
            };
            followed.seen += 1;
            let drawn = xxh3_64_with_seed(&followed.seen.to_le_bytes(), session);
            if drawn % self.limits.sample_one_in.max(1) == 0
                && followed.sample.len() < self.limits.per_session
            {
                followed.sample.push(prediction);
            }
        }
        let inserted: HashSet<SessionKey> = output
            .sessions
            .iter()
            .filter(|(_, d)| *d > 0)
            .map(|(row, _)| row.key())
            .collect();
        for (row, diff) in &output.sessions {
            let key = row.key();
            if *diff < 0 && !inserted.contains(&key) {
                // The session moved to another key (an earlier event moved its start, or it
                // merged with another): what was served about the old key has no outcome.
                state.pending.remove(&key);
            }
            if *diff > 0 && row.closed {
                let Some(followed) = state.pending.remove(&key) else {
                    continue;
                };
                let churned = row.num_purchases == 0;
                let known_at = self.rule.final_at(row.last_event);
                let session = session_key(&key.0, key.1);
                for prediction in followed.sample {
                    let f = prediction.features;
                    state.labelled.push_back(Labelled {
                        example: Example {
                            features: f,
                            churned,
                            session_start: key.1,
                            known_at,
                            prefix_events: (f.num_views + f.num_cart_adds) as u32,
                            session,
                        },
                        probability: prediction.probability,
                        version: prediction.version,
                    });
                }
            }
        }
        while state.labelled.len() > self.limits.labelled {
            state.labelled.pop_front();
        }
    }

    /// Each model version's record on the labelled predictions kept, by version.
    pub fn live_metrics(&self) -> Vec<VersionEvaluation> {
        let state = self.lock();
        let served = state.labelled.iter().map(|l| Judged {
            version: &l.version,
            probability: l.probability,
            churned: l.example.churned,
            prefix_events: l.example.prefix_events,
            session: l.example.session,
        });
        by_version(served)
    }

    /// The examples of the labelled predictions kept: what a challenger learns from.
    pub fn examples(&self) -> Vec<Example> {
        self.lock().labelled.iter().map(|l| l.example).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Holds no invariant a panic elsewhere could break half-way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
