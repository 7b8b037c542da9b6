//! `churn_scores`: the churn model applied to every open session that has not bought, as
//! known now.
//!
//! ```text
//!  session_features ─exchange by user─┐
//!  sessions' retention ─broadcast─────┼─► per user: history + open sessions ─► (score, ±1)
//!  models (worker 0) ─broadcast───────┤     rescore on: a change of the session, of the
//!  partition reports ─broadcast───────┘     user's history, a recency checkpoint, a new model
//! ```
//!
//! **What is scored.** Every open session without a purchase, with the features of
//! [`clickflow_model::Features::of`]: its counts as they stand, the recency of its last event
//! (scored again when the watermark passes 1, 5 and 15 minutes of silence: the
//! [`RECENCY_CHECKPOINTS_MS`](clickflow_model::RECENCY_CHECKPOINTS_MS) within the gap) and the
//! user's history known when it started ([`crate::kpi::history`]). A session that bought is
//! converted: its score is retracted and it is never scored again, so it never shows as at
//! risk. A session that closes keeps the score it had last while open, taken at the last
//! recency checkpoint (the watermark has passed it by then), so a closed session's score is
//! the same whatever the epochs or workers.
//!
//! **Models.** The stage starts with one model; a model sent on the `models` stream (worker
//! 0 sends what a retrainer promotes or an operator loads) reaches every worker at the same
//! epoch, and that epoch rescores every open session with it: no pause, no score lost or
//! doubled, and every score names the version that computed it.
//!
//! **After a restart** the stage rebuilds its open sessions from the replayed input, scoring
//! them as it goes; those scores are not applied (the replay's output is discarded), and
//! the tables may hold scores of another model or another recency. So the first epoch after
//! the replay scores every open session again and inserts each score anew (the sink upserts
//! by key): the tables then hold what this run computes.
//!
//! **State.** Per user: their history and their open unconverted sessions with the last
//! score; an index of the next recency checkpoint of each open session. Closed sessions
//! leave the state (their final score stays downstream).

use std::collections::BTreeSet;
use std::sync::Arc;

use clickflow_model::{recency_checkpoints, ChurnModel, Features};
use clickflow_sources::EventTime;
use compact_str::CompactString;
use differential_dataflow::{AsCollection, VecCollection};
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Concat, Exchange};
use timely::dataflow::StreamVec;

use crate::kpi::history::History;
use crate::kpi::sessions::SessionRule;
use crate::operators::{by_epoch, EpochWatermarks, RouteKey};
use crate::rows::{FeatureValues, Probability, ScoreRow, SessionKey, SessionRow};
use crate::runtime::output::consolidate_shared;
use crate::runtime::replay::Retention;
use crate::runtime::watermark::{PartitionReport, ProgressSeed};
use crate::Epoch;

/// Users' histories committed before a restart: the state a replay cannot rebuild (it only
/// reads back as far as the open sessions need).
pub type HistorySeed = Vec<(CompactString, History)>;

/// What the scoring stage starts with.
#[derive(Clone, Debug)]
pub struct ScoringSetup {
    /// The model scoring until another arrives.
    pub model: Arc<ChurnModel>,
    /// The session rule (gap and windows): final times and recency checkpoints.
    pub rule: SessionRule,
    /// Users' histories committed before a restart (empty on a fresh start).
    pub history: Arc<HistorySeed>,
}

/// What reaches the scoring stage.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum ScoringInput {
    Session(Arc<SessionRow>, isize),
    /// Boxed: a retention is 56 bytes, and every session row waiting for its epoch to
    /// complete took an input that large.
    Retention(Box<Retention>),
    Model(Arc<ChurnModel>),
}

/// Scores sessions with a churn model.
pub trait ChurnScores<'scope> {
    /// The `churn_scores` row of every open session in the collection that has not bought,
    /// kept up to date (see the module docs). `retention` is the session stage's earliest
    /// open start per worker; `models` brings replacement models.
    fn churn_scores(
        self,
        setup: ScoringSetup,
        retention: StreamVec<'scope, Epoch, Retention>,
        models: StreamVec<'scope, Epoch, Arc<ChurnModel>>,
        reports: StreamVec<'scope, Epoch, PartitionReport>,
        seed: ProgressSeed,
    ) -> VecCollection<'scope, Epoch, ScoreRow>;
}

impl<'scope> ChurnScores<'scope> for VecCollection<'scope, Epoch, Arc<SessionRow>> {
    fn churn_scores(
        self,
        setup: ScoringSetup,
        retention: StreamVec<'scope, Epoch, Retention>,
        models: StreamVec<'scope, Epoch, Arc<ChurnModel>>,
        reports: StreamVec<'scope, Epoch, PartitionReport>,
        seed: ProgressSeed,
    ) -> VecCollection<'scope, Epoch, ScoreRow> {
        let (worker, peers) = (self.inner.scope().index(), self.inner.scope().peers());
        let sessions = self
            .inner
            .map(|(row, _, diff)| ScoringInput::Session(row, diff))
            .exchange(|input: &ScoringInput| match input {
                ScoringInput::Session(row, _) => row.user_id.route(),
                _ => 0,
            });
        let everywhere = retention
            .map(|retention| ScoringInput::Retention(Box::new(retention)))
            .concat(models.map(ScoringInput::Model))
            .broadcast();
        let mut state = ScoringState::new(setup, worker, peers);
        by_epoch(
            sessions.concat(everywhere),
            Pipeline,
            reports,
            seed,
            "Churn: score per user",
            move |epoch, inputs, watermarks, out| {
                state.epoch(inputs, watermarks, &mut |row, diff| out((row, epoch, diff)))
            },
        )
        .as_collection()
    }
}

/// A score as it was emitted, to retract it exactly.
#[derive(Clone, Debug, PartialEq)]
struct Scored {
    probability: Probability,
    version: Arc<str>,
    features: FeatureValues,
    as_of: EventTime,
}

/// An open session that has not bought.
struct Open {
    row: SessionRow,
    /// Index of the recency checkpoint reached.
    step: usize,
    scored: Option<Scored>,
}

#[derive(Default)]
struct User {
    history: History,
    open: SmallVec<[Open; 1]>,
}

/// `(due, user, session id, session start)`: when an open session reaches its next recency
/// checkpoint.
type Due = (EventTime, CompactString, CompactString, EventTime);

struct ScoringState {
    rule: SessionRule,
    checkpoints: Vec<EventTime>,
    model: Arc<ChurnModel>,
    version: Arc<str>,
    users: HashMap<CompactString, User>,
    due: BTreeSet<Due>,
    /// The session stage's earliest open start, per worker (missing: none open).
    earliest_open: HashMap<usize, Option<EventTime>>,
    /// An epoch of the replay after a restart has been seen, and the scores it computed
    /// were not applied.
    replayed: bool,
}

impl ScoringState {
    fn new(setup: ScoringSetup, worker: usize, peers: usize) -> ScoringState {
        let mut users: HashMap<CompactString, User> = HashMap::default();
        for (user, history) in setup.history.iter() {
            if user.route() % peers as u64 == worker as u64 {
                users.entry(user.clone()).or_default().history = history.clone();
            }
        }
        ScoringState {
            checkpoints: recency_checkpoints(setup.rule.gap_ms).collect(),
            rule: setup.rule,
            version: setup.model.version().into(),
            model: setup.model,
            users,
            due: BTreeSet::new(),
            earliest_open: HashMap::default(),
            replayed: false,
        }
    }

    /// One epoch: apply its inputs, rescore what changed, emit the score changes.
    fn epoch(
        &mut self,
        inputs: Vec<ScoringInput>,
        watermarks: EpochWatermarks,
        emit: &mut dyn FnMut(ScoreRow, isize),
    ) {
        let watermark = watermarks.after;
        let mut changes = Vec::new();
        // The first epoch after a replay inserts every open session's score anew.
        let mut reassert = false;
        if watermarks.replaying {
            self.replayed = true;
        } else if self.replayed {
            self.replayed = false;
            reassert = true;
        }
        let mut swapped = reassert;
        for input in inputs {
            match input {
                ScoringInput::Session(row, diff) => changes.push((row, diff)),
                ScoringInput::Retention(retention) => {
                    self.earliest_open
                        .insert(retention.worker, retention.earliest());
                }
                ScoringInput::Model(model) => {
                    self.version = model.version().into();
                    self.model = model;
                    swapped = true;
                }
            }
        }
        consolidate_shared(&mut changes, SessionRow::key);

        // Sessions that leave the open set, with the score they had.
        let mut leaving: HashMap<SessionKey, (CompactString, Scored)> = HashMap::default();
        for (row, _) in changes.iter().filter(|(row, d)| *d < 0 && !row.closed) {
            if let Some(open) = self.remove_open(&row.user_id, &row.key()) {
                if let Some(scored) = open.scored {
                    leaving.insert(row.key(), (row.user_id.clone(), scored));
                }
            }
        }
        let mut dirty: BTreeSet<(CompactString, SessionKey)> = BTreeSet::new();
        let mut touched: BTreeSet<CompactString> = BTreeSet::new();
        let mut finals = Vec::new();
        for (row, _) in changes.into_iter().filter(|(_, d)| *d > 0) {
            let user = self.users.entry(row.user_id.clone()).or_default();
            if row.closed {
                user.history
                    .add(self.rule.final_at(row.last_event), row.num_purchases);
                touched.insert(row.user_id.clone());
                if row.num_purchases == 0 {
                    finals.push(row);
                }
            } else if row.num_purchases == 0 {
                dirty.insert((row.user_id.clone(), row.key()));
                user.open.push(Open {
                    row: Arc::unwrap_or_clone(row),
                    step: 0,
                    scored: None,
                });
            }
        }
        // A user's history changed: their open sessions may know more.
        for user in &touched {
            for open in &self.users[user].open {
                dirty.insert((user.clone(), open.row.key()));
            }
        }
        if swapped {
            for (user, state) in &self.users {
                for open in &state.open {
                    dirty.insert((user.clone(), open.row.key()));
                }
            }
        }
        while let Some((due, _, _, _)) = self.due.first() {
            if *due > watermark {
                break;
            }
            let (_, user, id, start) = self.due.pop_first().expect("first exists");
            dirty.insert((user, (id, start)));
        }

        for (user, key) in dirty {
            self.rescore(&user, &key, watermark, &mut leaving, reassert, emit);
        }
        let last_step = self.checkpoints.len() - 1;
        for row in finals {
            let old = leaving.remove(&row.key());
            let new = (row.user_id.clone(), self.score(&row, last_step));
            replace(&row.key(), old, &new, reassert, emit);
        }
        for ((id, start), (user, old)) in leaving {
            emit(score_row(&id, start, &user, &old), -1);
        }

        let earliest = self.earliest_open.values().flatten().min().copied();
        let safe = watermark
            .saturating_sub(self.rule.window.millis())
            .min(earliest.unwrap_or(EventTime::MAX));
        for user in touched {
            if let Some(state) = self.users.get_mut(&user) {
                state.history.fold(safe);
            }
        }
    }

    /// Removes an open session, with its recency index entry.
    fn remove_open(&mut self, user: &CompactString, key: &SessionKey) -> Option<Open> {
        let state = self.users.get_mut(user)?;
        let at = state.open.iter().position(|o| o.row.key() == *key)?;
        let open = state.open.remove(at);
        if let Some(due) = self.next_due(&open.row, open.step) {
            self.due.remove(&(due, user.clone(), key.0.clone(), key.1));
        }
        Some(open)
    }

    /// When `row` reaches the checkpoint after `step`, if there is one.
    fn next_due(&self, row: &SessionRow, step: usize) -> Option<EventTime> {
        self.checkpoints
            .get(step + 1)
            .map(|r| row.last_event.saturating_add(*r))
    }

    /// The last recency checkpoint a session whose last event is at `last` has reached when
    /// the watermark is `watermark` (the first, recency 0, at least).
    fn step_at(&self, last: EventTime, watermark: EventTime) -> usize {
        self.checkpoints
            .iter()
            .rposition(|r| last.saturating_add(*r) <= watermark)
            .unwrap_or(0)
    }

    /// Rescores an open session and emits the change of its score, if any. Its old score is
    /// the one it holds, or the one it had before its row changed in this epoch.
    fn rescore(
        &mut self,
        user: &CompactString,
        key: &SessionKey,
        watermark: EventTime,
        leaving: &mut HashMap<SessionKey, (CompactString, Scored)>,
        reassert: bool,
        emit: &mut dyn FnMut(ScoreRow, isize),
    ) {
        let Some(index) = self
            .users
            .get(user)
            .and_then(|s| s.open.iter().position(|o| o.row.key() == *key))
        else {
            return;
        };
        let (row, old_step) = {
            let open = &self.users[user].open[index];
            (open.row.clone(), open.step)
        };
        let step = self.step_at(row.last_event, watermark);
        if let Some(due) = self.next_due(&row, old_step) {
            self.due.remove(&(due, user.clone(), key.0.clone(), key.1));
        }
        if let Some(due) = self.next_due(&row, step) {
            self.due.insert((due, user.clone(), key.0.clone(), key.1));
        }
        let new = (user.clone(), self.score(&row, step));
        let open = &mut self.users.get_mut(user).expect("exists").open[index];
        open.step = step;
        let old = match open.scored.take() {
            Some(scored) => Some((user.clone(), scored)),
            None => leaving.remove(key),
        };
        replace(key, old, &new, reassert, emit);
        open.scored = Some(new.1);
    }

    /// The score of `row` at recency checkpoint `step`.
    fn score(&self, row: &SessionRow, step: usize) -> Scored {
        let as_of = row.last_event.saturating_add(self.checkpoints[step]);
        let history = self
            .users
            .get(&row.user_id)
            .map(|u| u.history.at(row.session_start))
            .unwrap_or_default();
        let features = Features::of(&row.facts(), as_of, history);
        Scored {
            probability: Probability(self.model.predict(&features)),
            version: self.version.clone(),
            features: FeatureValues::of(&features),
            as_of,
        }
    }
}

/// Emits the change from the score `old` (with the user it was emitted under) to `new`, if
/// they differ; with `reassert`, inserts `new` even when it equals `old` (the tables may
/// not hold `old`: see the module docs).
fn replace(
    key: &SessionKey,
    old: Option<(CompactString, Scored)>,
    new: &(CompactString, Scored),
    reassert: bool,
    emit: &mut dyn FnMut(ScoreRow, isize),
) {
    let unchanged = old.as_ref() == Some(new);
    if unchanged && !reassert {
        return;
    }
    if let Some((user, scored)) = old.as_ref().filter(|_| !unchanged) {
        emit(score_row(&key.0, key.1, user, scored), -1);
    }
    emit(score_row(&key.0, key.1, &new.0, &new.1), 1);
}

fn score_row(id: &CompactString, start: EventTime, user: &CompactString, s: &Scored) -> ScoreRow {
    ScoreRow {
        session_id: id.clone(),
        session_start: start,
        user_id: user.clone(),
        churn_probability: s.probability,
        model_version: s.version.clone(),
        features: s.features,
        as_of: s.as_of,
    }
}
