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
    scored: Option<Scored>,
    /// Index of the recency checkpoint reached.
    step: u8,
    /// It has an entry in the recency index, at the checkpoint after `step`.
    indexed: bool,
    /// To be rescored in this epoch.
    dirty: bool,
}

impl Open {
    /// Its entry in the recency index, if it has one.
    fn due(&self, scorer: &Scorer, user: &CompactString) -> Option<Due> {
        let due = scorer
            .next_due(&self.row, self.step)
            .filter(|_| self.indexed)?;
        Some((
            due,
            user.clone(),
            self.row.session_id.clone(),
            self.row.session_start,
        ))
    }
}

#[derive(Default)]
struct User {
    history: History,
    open: SmallVec<[Open; 1]>,
    /// Some open session of the user is to be rescored in this epoch: the user is listed.
    dirty: bool,
    /// The user's history changed in this epoch: the user is listed.
    touched: bool,
}

impl User {
    /// Marks the open session at `index` to be rescored, listing the user (`name`) in
    /// `dirty` the first time one of theirs is marked.
    fn mark(&mut self, index: usize, name: &CompactString, dirty: &mut Vec<CompactString>) {
        self.open[index].dirty = true;
        if !self.dirty {
            self.dirty = true;
            dirty.push(name.clone());
        }
    }

    fn position(&self, id: &str, start: EventTime) -> Option<usize> {
        self.open
            .iter()
            .position(|o| o.row.session_start == start && o.row.session_id == id)
    }
}

/// `(due, user, session id, session start)`: when an open session reaches its next recency
/// checkpoint.
type Due = (EventTime, CompactString, CompactString, EventTime);

/// The model and the recency checkpoints it scores at.
struct Scorer {
    checkpoints: Vec<EventTime>,
    model: Arc<ChurnModel>,
    version: Arc<str>,
}

impl Scorer {
    /// When `row` reaches the checkpoint after `step`, if there is one.
    fn next_due(&self, row: &SessionRow, step: u8) -> Option<EventTime> {
        self.checkpoints
            .get(usize::from(step) + 1)
            .map(|r| row.last_event.saturating_add(*r))
    }

    /// The last recency checkpoint a session whose last event is at `last` has reached when
    /// the watermark is `watermark` (the first, recency 0, at least).
    fn step_at(&self, last: EventTime, watermark: EventTime) -> u8 {
        let step = self
            .checkpoints
            .iter()
            .rposition(|r| last.saturating_add(*r) <= watermark)
            .unwrap_or(0);
        step as u8
    }

    /// The score of `row` at recency checkpoint `step`, for a user whose history is
    /// `history` (none known: `None`).
    fn score(&self, row: &SessionRow, history: Option<&History>, step: u8) -> Scored {
        let as_of = row
            .last_event
            .saturating_add(self.checkpoints[usize::from(step)]);
        let history = history.map(|h| h.at(row.session_start)).unwrap_or_default();
        let features = Features::of(&row.facts(), as_of, history);
        Scored {
            probability: Probability(self.model.predict(&features)),
            version: self.version.clone(),
            features: FeatureValues::of(&features),
            as_of,
        }
    }
}

struct ScoringState {
    rule: SessionRule,
    scorer: Scorer,
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
            scorer: Scorer {
                checkpoints: recency_checkpoints(setup.rule.gap_ms).collect(),
                version: setup.model.version().into(),
                model: setup.model,
            },
            rule: setup.rule,
            users,
            due: BTreeSet::new(),
            earliest_open: HashMap::default(),
            replayed: false,
        }
    }

    /// One epoch: apply its inputs, rescore what changed, emit the score changes.
    ///
    /// What is to be rescored is marked on the sessions themselves, and their users are
    /// listed once, so rescoring visits each user once and sorts nothing; a session's
    /// entry in the recency index is rewritten only when its checkpoint moves. Until the
    /// twenty-ninth sitting the epoch collected `(user, session)` pairs in a B-tree set of
    /// text keys, deduplicated the users whose history changed in another, and sorted its
    /// input by a cloned text key. callgrind, the epoch alone (a 400,000-event file of the
    /// default shop, `--traffic 30`, read in one epoch by 2 workers with a 31-tree model):
    /// 223.6M instructions against 347.6M, of which the forest's predictions are now half
    /// (110M). `run --profile-operators` on 2M events of that shop, 3 alternating pairs:
    /// the stage busy 0.46–0.52 s against 0.63–0.67 s; the wall time moved within the
    /// machine's spread.
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
                    self.scorer.version = model.version().into();
                    self.scorer.model = model;
                    swapped = true;
                }
            }
        }
        // The order does not matter here: a cheap key, compared as integers.
        consolidate_shared(&mut changes, |row| {
            (row.session_start, row.session_id.route())
        });

        // Sessions that leave the open set, with the score they had.
        let mut leaving: HashMap<SessionKey, (CompactString, Scored)> = HashMap::default();
        for (row, _) in changes.iter().filter(|(row, d)| *d < 0 && !row.closed) {
            if let Some(open) = self.remove_open(&row.user_id, &row.session_id, row.session_start) {
                if let Some(scored) = open.scored {
                    leaving.insert(row.key(), (row.user_id.clone(), scored));
                }
            }
        }
        let mut dirty: Vec<CompactString> = Vec::new();
        let mut touched: Vec<CompactString> = Vec::new();
        let mut finals = Vec::new();
        for (row, _) in changes.into_iter().filter(|(_, d)| *d > 0) {
            let user = self.users.entry(row.user_id.clone()).or_default();
            if row.closed {
                user.history
                    .add(self.rule.final_at(row.last_event), row.num_purchases);
                if !user.touched {
                    user.touched = true;
                    touched.push(row.user_id.clone());
                }
                if row.num_purchases == 0 {
                    finals.push(row);
                }
            } else if row.num_purchases == 0 {
                user.open.push(Open {
                    row: Arc::unwrap_or_clone(row),
                    scored: None,
                    step: 0,
                    indexed: false,
                    dirty: false,
                });
                let index = user.open.len() - 1;
                let name = user.open[index].row.user_id.clone();
                user.mark(index, &name, &mut dirty);
            }
        }
        // A user's history changed: their open sessions may know more.
        for name in &touched {
            if let Some(user) = self.users.get_mut(name) {
                for index in 0..user.open.len() {
                    user.mark(index, name, &mut dirty);
                }
            }
        }
        if swapped {
            for (name, user) in self.users.iter_mut() {
                for index in 0..user.open.len() {
                    user.mark(index, name, &mut dirty);
                }
            }
        }
        while let Some((due, _, _, _)) = self.due.first() {
            if *due > watermark {
                break;
            }
            let (_, name, id, start) = self.due.pop_first().expect("first exists");
            let user = self.users.get_mut(&name);
            if let Some((user, index)) = user.and_then(|u| u.position(&id, start).map(|i| (u, i))) {
                user.open[index].indexed = false;
                user.mark(index, &name, &mut dirty);
            }
        }

        let mut rescoring = Rescoring {
            scorer: &self.scorer,
            due: &mut self.due,
            leaving: &mut leaving,
            watermark,
            reassert,
        };
        for name in dirty {
            let Some(user) = self.users.get_mut(&name) else {
                continue;
            };
            user.dirty = false;
            let User { history, open, .. } = user;
            for open in open.iter_mut().filter(|o| o.dirty) {
                open.dirty = false;
                rescoring.rescore(&name, open, history, emit);
            }
        }
        let last_step = (self.scorer.checkpoints.len() - 1) as u8;
        for row in finals {
            let history = self.users.get(&row.user_id).map(|u| &u.history);
            let key = row.key();
            let old = leaving.remove(&key);
            let new = self.scorer.score(&row, history, last_step);
            replace(&key, old, &row.user_id, &new, reassert, emit);
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
                state.touched = false;
                state.history.fold(safe);
            }
        }
    }

    /// Removes an open session, with its recency index entry.
    fn remove_open(&mut self, user: &CompactString, id: &str, start: EventTime) -> Option<Open> {
        let state = self.users.get_mut(user)?;
        let at = state.position(id, start)?;
        let open = state.open.remove(at);
        if let Some(due) = open.due(&self.scorer, user) {
            self.due.remove(&due);
        }
        Some(open)
    }
}

/// What rescoring the marked sessions of an epoch works with.
struct Rescoring<'a> {
    scorer: &'a Scorer,
    due: &'a mut BTreeSet<Due>,
    /// The scores of the sessions whose rows changed in this epoch.
    leaving: &'a mut HashMap<SessionKey, (CompactString, Scored)>,
    watermark: EventTime,
    reassert: bool,
}

impl Rescoring<'_> {
    /// Rescores `open`, a session of `user`, and emits the change of its score, if any. Its
    /// old score is the one it holds, or the one it had before its row changed in this
    /// epoch.
    fn rescore(
        &mut self,
        user: &CompactString,
        open: &mut Open,
        history: &History,
        emit: &mut dyn FnMut(ScoreRow, isize),
    ) {
        let step = self.scorer.step_at(open.row.last_event, self.watermark);
        if !open.indexed || step != open.step {
            if let Some(due) = open.due(self.scorer, user) {
                self.due.remove(&due);
            }
            open.step = step;
            open.indexed = true;
            if let Some(due) = open.due(self.scorer, user) {
                self.due.insert(due);
            }
        }
        let new = self.scorer.score(&open.row, Some(history), step);
        let key = open.row.key();
        let old = match open.scored.take() {
            Some(scored) => Some((user.clone(), scored)),
            None => self.leaving.remove(&key),
        };
        replace(&key, old, user, &new, self.reassert, emit);
        open.scored = Some(new);
    }
}

/// Emits the change from the score `old` (with the user it was emitted under) to `new` of
/// `user`, if they differ; with `reassert`, inserts `new` even when it equals `old` (the
/// tables may not hold `old`: see the module docs).
fn replace(
    key: &SessionKey,
    old: Option<(CompactString, Scored)>,
    user: &CompactString,
    new: &Scored,
    reassert: bool,
    emit: &mut dyn FnMut(ScoreRow, isize),
) {
    let unchanged = old
        .as_ref()
        .is_some_and(|(was, scored)| was == user && scored == new);
    if unchanged && !reassert {
        return;
    }
    if let Some((was, scored)) = old.as_ref().filter(|_| !unchanged) {
        emit(score_row(&key.0, key.1, was, scored), -1);
    }
    emit(score_row(&key.0, key.1, user, new), 1);
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
