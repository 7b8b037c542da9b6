//! The churn model around a running pipeline: its flags, the monitor and retrainer, loading
//! a model by `SIGHUP` or over HTTP, and recording every model in `churn_models`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Args;
use clickflow_dataflow::kpi::sessions::SessionRule;
use clickflow_dataflow::lifecycle::retrain::{spawn_retrainer, RetrainPolicy};
use clickflow_dataflow::lifecycle::{ModelMonitor, MonitorLimits};
use clickflow_dataflow::{DataflowConfig, LiveModel};
use clickflow_model::ChurnModel;
use clickflow_sinks::postgres::{record_model, DatabaseUrl, ModelSource};
use clickflow_web::ModelLoader;

use super::args::duration;
use super::signals::on_hangup;

/// Flags of the churn model of `clickflow run`.
#[derive(Debug, Args)]
pub struct ScoringArgs {
    /// Churn model file (from `clickflow train`) scoring every open session into
    /// `churn_scores`; read again on SIGHUP.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Log every score in `churn_predictions` (for `clickflow evaluate` and retraining from
    /// PostgreSQL).
    #[arg(long)]
    pub log_predictions: bool,
    /// How long logged predictions are kept, in event time behind the watermark.
    #[arg(long, default_value = "7days", value_parser = duration)]
    pub prediction_retention: Duration,
    /// Train a challenger this often on recently ended sessions and promote it when it beats
    /// the live model on the newest ones (e.g. `10m`).
    #[arg(long, value_parser = duration)]
    pub retrain_every: Option<Duration>,
    /// How much higher a challenger's ROC AUC must be to be promoted.
    #[arg(long, default_value_t = 0.005)]
    pub retrain_margin: f64,
}

/// What a pipeline scores with and how its model may change.
pub(super) struct Scoring {
    /// The model scoring now.
    pub live: LiveModel,
    /// The file to read again on SIGHUP.
    pub reload_from: Option<PathBuf>,
    /// Retrain on this policy (`None`: the model changes only when loaded).
    pub retrain: Option<RetrainPolicy>,
}

impl Scoring {
    /// Scoring with `model`, as `args` say.
    pub fn new(model: Arc<ChurnModel>, args: &ScoringArgs) -> Scoring {
        Scoring {
            live: LiveModel::new(model),
            reload_from: args.model.clone(),
            retrain: args.retrain_every.map(|every| RetrainPolicy {
                margin: args.retrain_margin,
                ..RetrainPolicy::every(every)
            }),
        }
    }
}

/// The threads that look after the model while the pipeline runs; stopped by [`stop`].
///
/// [`stop`]: ModelServices::stop
pub(super) struct ModelServices {
    /// Sees every committed epoch (feeds the monitor).
    pub monitor: Arc<ModelMonitor>,
    /// Loads a model into the pipeline over HTTP.
    pub loader: ModelLoader,
    registry: Registry,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ModelServices {
    /// Starts the registry writer, the retrainer (when asked for) and the `SIGHUP` reload.
    pub fn start(
        scoring: &Scoring,
        url: DatabaseUrl,
        dataflow: DataflowConfig,
    ) -> anyhow::Result<ModelServices> {
        let rule = SessionRule {
            gap_ms: dataflow.session_gap_ms,
            window: dataflow.window,
        };
        let monitor = Arc::new(ModelMonitor::new(rule, MonitorLimits::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (registry, writer) = Registry::start(url)?;
        let mut threads = vec![writer];
        if let Some(policy) = scoring.retrain.clone() {
            let recorder = registry.clone();
            threads.push(spawn_retrainer(
                policy,
                monitor.clone(),
                scoring.live.clone(),
                Box::new(move |decision| {
                    recorder.record(
                        decision.challenger.clone(),
                        ModelSource::Retrained,
                        decision.promoted,
                    )
                }),
                stop.clone(),
            )?);
        }
        if let Some(path) = scoring.reload_from.clone() {
            reload_on_hangup(path, scoring.live.clone(), registry.clone());
        }
        let (live, recorder) = (scoring.live.clone(), registry.clone());
        let loader: ModelLoader = Arc::new(move |model: Arc<ChurnModel>| {
            tracing::info!(model = model.version(), "model loaded over HTTP");
            live.replace(model.clone());
            recorder.record(model, ModelSource::Http, true);
        });
        Ok(ModelServices {
            monitor,
            loader,
            registry,
            stop,
            threads,
        })
    }

    /// Records the model a pipeline starts with (once its tables exist).
    pub fn record_start(&self, model: Arc<ChurnModel>, source: ModelSource) {
        self.registry.record(model, source, true);
    }

    /// Stops the threads and waits for them (the registry writes what it was given first).
    pub fn stop(self) {
        on_hangup(|| tracing::warn!("SIGHUP: the pipeline has stopped"));
        self.stop.store(true, Ordering::Relaxed);
        drop(self.registry);
        drop(self.loader);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// A model to record in `churn_models`.
type Entry = (Arc<ChurnModel>, ModelSource, bool);

/// Records models in `churn_models` from a thread of its own, so neither the retrainer nor
/// the web server waits for PostgreSQL. A failure is logged, never fatal: the registry is
/// bookkeeping, the scores carry their model version anyway.
#[derive(Clone)]
struct Registry {
    sender: mpsc::Sender<Entry>,
}

impl Registry {
    fn start(url: DatabaseUrl) -> anyhow::Result<(Registry, JoinHandle<()>)> {
        let (sender, receiver) = mpsc::channel::<Entry>();
        let thread = std::thread::Builder::new()
            .name("clickflow-models".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    tracing::error!("cannot start the model registry's runtime");
                    return;
                };
                for (model, source, promoted) in receiver {
                    let recorded =
                        runtime.block_on(record_model(&url, &model, source, promoted));
                    if let Err(error) = recorded {
                        tracing::warn!(%error, model = model.version(), "cannot record the model in churn_models");
                    }
                }
            })?;
        Ok((Registry { sender }, thread))
    }

    fn record(&self, model: Arc<ChurnModel>, source: ModelSource, promoted: bool) {
        let _ = self.sender.send((model, source, promoted));
    }
}

/// On every `SIGHUP`, reads `path` again and scores with it; a file that does not load is
/// logged and the live model stays.
fn reload_on_hangup(path: PathBuf, live: LiveModel, registry: Registry) {
    on_hangup(move || match ChurnModel::load(&path) {
        Ok(model) => {
            tracing::info!(model = model.version(), path = %path.display(), "SIGHUP: model reloaded");
            let model = Arc::new(model);
            live.replace(model.clone());
            registry.record(model, ModelSource::Reload, true);
        }
        Err(error) => {
            tracing::error!(%error, "SIGHUP: the model file does not load; the live model stays")
        }
    });
}
