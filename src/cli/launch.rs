//! Running a pipeline into PostgreSQL with its web server and progress log: what `run` and
//! `demo` share.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clickflow_dataflow::rows::AlertRow;
use clickflow_dataflow::runtime::run::RunStats;
use clickflow_dataflow::PipelineMetrics;
use clickflow_sinks::changes::{spawn_publisher, FeedConfig, FeedStats};
use clickflow_sinks::postgres::{
    load_alerts, run_into_postgres, spawn_notifier, DatabaseUrl, ModelSource, PipelineSpec,
    SinkMetrics, WebhookUrl,
};
use clickflow_web::{DataflowState, LiveViews, PipelineStatus, WebConfig, WebContext, WebServer};

use super::run::ProgressLog;
use super::scoring::{ModelServices, Scoring};
use super::web::{sink_probe, FeedSlot, SinkSlot, WebArgs};

/// What a finished pipeline leaves: its counts, the sink's counters and the change feed's.
pub(super) struct Finished {
    pub stats: RunStats,
    pub sink: Option<Arc<SinkMetrics>>,
    pub feed: Option<Arc<FeedStats>>,
}

/// Where the committed results go besides the tables, from the process that writes them.
#[derive(Default)]
pub(super) struct Outlets {
    /// The alert webhook (`--alert-webhook`).
    pub webhook: Option<WebhookUrl>,
    /// The Kafka change topics (`--emit-kafka`).
    pub feed: Option<FeedConfig>,
}

/// Starts the web server (on the process that gathers the output, unless `--no-http`),
/// the `outlets` (on that process: the alert webhook's notifier, the change feed's
/// publisher) and, with `scoring`, the model's services (monitor, retrainer, reloads,
/// registry), runs `spec` until its input ends or `stop` is set, then stops them.
pub(super) fn launch(
    mut spec: PipelineSpec,
    web: &WebArgs,
    outlets: Outlets,
    scoring: Option<(Scoring, ModelSource)>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Finished> {
    let metrics = Arc::new(PipelineMetrics::default());
    let slot: SinkSlot = Arc::new(Mutex::new(None));
    let feed_slot: FeedSlot = Arc::new(Mutex::new(None));
    let status = Arc::new(PipelineStatus::new(
        metrics.clone(),
        sink_probe(slot.clone(), feed_slot.clone()),
    ));
    let Outlets { webhook, feed } = outlets;
    // Changes are captured from before the first write (none without a feed).
    spec.sink.capture = feed.as_ref().map(|f| f.tables.clone()).unwrap_or_default();
    let views = Arc::new(LiveViews::default());
    let dataflow = &spec.config.dataflow;
    views.configure(
        dataflow.recommendations.map(|r| r.max_items_per_session),
        dataflow.funnel_window_ms,
    );
    if let Some((scoring, _)) = &scoring {
        spec.config.model = Some(scoring.live.clone());
    }
    let services = match &scoring {
        Some((scoring, _)) if spec.writes => Some(ModelServices::start(
            scoring,
            spec.sink.url.clone(),
            spec.config.dataflow,
        )?),
        _ => None,
    };
    let server = if spec.writes && !web.no_http {
        let context = WebContext {
            views: views.clone(),
            model: spec.config.model.clone(),
            monitor: services.as_ref().map(|s| s.monitor.clone()),
            loader: services.as_ref().map(|s| s.loader.clone()),
            status: status.clone(),
        };
        let config = WebConfig {
            addr: web.addr,
            token: web.token()?,
            allowed_hosts: web.allowed_hosts.clone(),
            tls: web.tls()?,
            cors_origins: web.cors_origins.clone(),
            stream_connection: web.stream_reconnect_after,
        };
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let server = WebServer::start(config, context)?;
        eprintln!("  dashboard: {scheme}://{}/", server.addr());
        Some(server)
    } else {
        None
    };
    // The live views only matter to a server that shows them; without one the dataflow
    // does not build their feeds. Every process of a cluster must build the same graph,
    // and only process 0 runs the server: the flag, not this process's server, decides.
    let shown = server.as_ref().map(|_| views.clone());
    spec.config.live_views = !web.no_http;
    let monitor = services.as_ref().map(|s| s.monitor.clone());
    if shown.is_some() || monitor.is_some() {
        spec.observe = Some(Box::new(move |output| {
            if let Some(views) = &shown {
                views.apply(output);
            }
            if let Some(monitor) = &monitor {
                monitor.observe(output);
            }
        }));
    }
    let start_model = scoring.map(|(s, source)| (s.live.current(), source));

    let progress = ProgressLog::spawn(metrics.clone());
    let running = status.clone();
    let (database, writes) = (spec.sink.url.clone(), spec.writes);
    let seeded = views.clone();
    let mut notifier = None;
    let mut publisher = None;
    let result = run_into_postgres(spec, stop, metrics, |sink| {
        // The tables exist now: show the alerts raised before this start, and deliver the
        // webhook events still waiting.
        if writes {
            match load_committed_alerts(&database) {
                Ok(alerts) => seeded.seed_alerts(&alerts),
                Err(error) => tracing::warn!(%error, "cannot show the alerts raised before"),
            }
            if let Some(webhook) = webhook {
                match spawn_notifier(database.clone(), webhook) {
                    Ok(started) => notifier = Some(started),
                    Err(error) => tracing::error!(%error, "cannot start the alert webhook"),
                }
            }
            // Publishes what earlier runs committed and did not see acknowledged, then
            // follows the pipeline's commits.
            if let Some(feed) = feed {
                match spawn_publisher(database.clone(), feed) {
                    Ok(started) => {
                        if let Ok(mut slot) = feed_slot.lock() {
                            *slot = Some(started.stats.clone());
                        }
                        publisher = Some(started);
                    }
                    Err(error) => tracing::error!(%error, "cannot start the change feed"),
                }
            }
        }
        if let Ok(mut slot) = slot.lock() {
            *slot = Some(sink.metrics.clone());
        }
        // The tables exist now: the model the pipeline starts with goes into churn_models.
        if let (Some(services), Some((model, source))) = (&services, start_model) {
            services.record_start(model, source);
        }
        running.set_state(DataflowState::Running);
    });
    status.set_state(match &result {
        Ok(_) => DataflowState::Stopped,
        Err(error) => DataflowState::Failed(error.to_string()),
    });
    progress.stop();
    if let Some(notifier) = notifier {
        notifier.stop();
    }
    // After the pipeline's last commit: the publisher drains the outbox before it stops.
    let feed = publisher.as_ref().map(|p| p.stats.clone());
    if let Some(publisher) = publisher {
        publisher.stop();
    }
    if let Some(server) = server {
        server.stop();
    }
    if let Some(services) = services {
        services.stop();
    }
    let sink = slot.lock().ok().and_then(|slot| slot.clone());
    Ok(Finished {
        stats: result.context("the pipeline failed")?,
        sink,
        feed,
    })
}

/// The alerts in the `alerts` table (read before the dataflow starts).
fn load_committed_alerts(url: &DatabaseUrl) -> anyhow::Result<Vec<AlertRow>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(load_alerts(url))?)
}
