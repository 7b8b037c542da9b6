//! Retraining on recent sessions, and promoting a challenger only when it is better.
//!
//! Every `--retrain-every`, on a thread of its own, the retrainer takes the labelled
//! predictions the [`ModelMonitor`] holds (sessions that ended recently, as known when they
//! were scored), splits them by time exactly as `clickflow train` does, trains a challenger
//! on the earlier sessions, and compares it with the live model on the newest ones, which
//! neither learnt from. The challenger is promoted when its ROC AUC beats the live model's
//! by at least the margin (0.005 by default: below that the difference is noise on a few
//! thousand sessions, and every promotion rescores every open session). Each decision is
//! logged and handed to the caller (who records models in `churn_models`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clickflow_model::{ChurnModel, Example, SplitRule, TimeSplit, TrainError, TrainOptions};

use super::{LiveModel, ModelMonitor};

/// When and how to retrain.
#[derive(Clone, Debug)]
pub struct RetrainPolicy {
    /// How often to train a challenger.
    pub every: Duration,
    /// How much higher the challenger's ROC AUC must be.
    pub margin: f64,
    /// The fewest ended sessions to train on.
    pub min_sessions: usize,
    /// The forest's parameters and the share of the newest sessions held out.
    pub options: TrainOptions,
}

impl RetrainPolicy {
    /// Every `every`, margin 0.005, at least 500 sessions, the default forest with 31 trees,
    /// the newest 25% of sessions held out and every session that started before them
    /// learnt from (the monitor keeps too short a window of ended sessions for the stricter
    /// rule of `clickflow train`: see [`SplitRule::Started`]).
    pub fn every(every: Duration) -> RetrainPolicy {
        RetrainPolicy {
            every,
            margin: 0.005,
            min_sessions: 500,
            options: TrainOptions {
                holdout: 0.25,
                split: SplitRule::Started,
                ..TrainOptions::default()
            },
        }
    }
}

/// What one round decided.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The challenger.
    pub challenger: Arc<ChurnModel>,
    /// Its ROC AUC on the newest sessions.
    pub challenger_auc: f64,
    /// The live model's ROC AUC on the same sessions.
    pub live_auc: f64,
    /// The live model's version.
    pub live_version: String,
    /// Whether the challenger replaced it.
    pub promoted: bool,
}

/// Why a round trained nothing.
#[derive(Debug, thiserror::Error)]
pub enum RetrainError {
    /// Not enough ended sessions yet.
    #[error("{sessions} ended sessions are too few to retrain on (at least {minimum})")]
    TooFewSessions {
        /// Sessions with an outcome.
        sessions: usize,
        /// The policy's minimum.
        minimum: usize,
    },
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// One round: trains a challenger on `examples` and compares it with `live` on the newest
/// sessions.
pub fn retrain_once(
    policy: &RetrainPolicy,
    examples: &[Example],
    live: &ChurnModel,
) -> Result<Decision, RetrainError> {
    let sessions = examples
        .iter()
        .map(|e| e.session)
        .collect::<std::collections::HashSet<_>>()
        .len();
    if sessions < policy.min_sessions {
        return Err(RetrainError::TooFewSessions {
            sessions,
            minimum: policy.min_sessions,
        });
    }
    let options = TrainOptions {
        trained_at: time::OffsetDateTime::now_utc(),
        ..policy.options.clone()
    };
    let challenger = ChurnModel::train(examples, &options)?;
    // The same split `train` made: the challenger's report is on exactly these examples.
    let newest = TimeSplit::by(examples, options.holdout, options.split).test;
    let live_auc = live.evaluate(&newest).roc_auc;
    let challenger_auc = challenger.header().report.forest.roc_auc;
    let promoted = challenger_auc >= live_auc + policy.margin;
    Ok(Decision {
        challenger: Arc::new(challenger),
        challenger_auc,
        live_auc,
        live_version: live.version().to_string(),
        promoted,
    })
}

/// Starts the retrainer: every `policy.every` until `stop`, one round on what `monitor`
/// holds; a promoted challenger replaces `live`. `decided` sees every decision.
pub fn spawn_retrainer(
    policy: RetrainPolicy,
    monitor: Arc<ModelMonitor>,
    live: LiveModel,
    mut decided: Box<dyn FnMut(&Decision) + Send>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("clickflow-retrain".into())
        .spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() < policy.every {
                    continue;
                }
                last = Instant::now();
                let current = live.current();
                match retrain_once(&policy, &monitor.examples(), &current) {
                    Ok(decision) => {
                        tracing::info!(
                            challenger = decision.challenger.version(),
                            challenger_auc = decision.challenger_auc,
                            live = %decision.live_version,
                            live_auc = decision.live_auc,
                            promoted = decision.promoted,
                            "retrained a challenger on recent sessions"
                        );
                        if decision.promoted {
                            live.replace(decision.challenger.clone());
                        }
                        decided(&decision);
                    }
                    Err(RetrainError::TooFewSessions { sessions, minimum }) => {
                        tracing::info!(sessions, minimum, "too few ended sessions to retrain yet")
                    }
                    Err(error) => tracing::warn!(%error, "retraining failed; the live model stays"),
                }
            }
        })
}
