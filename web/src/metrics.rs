//! `GET /metrics`: Prometheus text exposition format (version 0.0.4).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::context::WebContext;
use crate::models::ModelStatus;
use crate::status::FeedSnapshot;

/// Renders every metric.
pub fn render(context: &WebContext) -> String {
    let mut out = Metrics::default();
    let pipeline = &context.status.metrics;
    let events = pipeline.events.load(Ordering::Relaxed);
    let dead_letters = pipeline.dead_letters.load(Ordering::Relaxed);
    let late = pipeline.late.load(Ordering::Relaxed);
    out.counter(
        "clickflow_events_total",
        "Events accepted into the dataflow.",
        events as f64,
    );
    out.family(
        "clickflow_dead_letters_total",
        "counter",
        "Payloads rejected, by reason class.",
    );
    out.sample(
        "clickflow_dead_letters_total",
        "reason=\"malformed\"",
        dead_letters.saturating_sub(late) as f64,
    );
    out.sample(
        "clickflow_dead_letters_total",
        "reason=\"late\"",
        late as f64,
    );
    out.gauge(
        "clickflow_alerts_open",
        "Anomaly alerts open now.",
        context.views.open_alerts() as f64,
    );
    out.counter(
        "clickflow_source_retries_total",
        "Source errors that were retried with backoff (broker unreachable, leader moving).",
        pipeline.source_retries.load(Ordering::Relaxed) as f64,
    );
    out.counter(
        "clickflow_epochs_total",
        "Epochs closed by the dataflow.",
        pipeline.epochs.load(Ordering::Relaxed) as f64,
    );

    let flow = context.views.flow();
    out.gauge(
        "clickflow_events_per_second",
        "Events accepted per second over the last seconds.",
        flow.events_per_second,
    );
    if let Some(watermark) = flow.watermark {
        out.gauge(
            "clickflow_watermark_seconds",
            "The pipeline watermark (event time, Unix seconds).",
            watermark as f64 / 1000.0,
        );
        let lag = crate::api::now_ms() - watermark;
        out.gauge(
            "clickflow_watermark_lag_seconds",
            "Wall-clock time minus the watermark.",
            lag as f64 / 1000.0,
        );
    }
    out.family(
        "clickflow_partition_next_offset",
        "gauge",
        "Next offset to read, per partition.",
    );
    for (partition, next_offset) in context.views.offsets() {
        out.sample(
            "clickflow_partition_next_offset",
            &format!(
                "topic=\"{}\",partition=\"{}\"",
                escape(&partition.topic),
                partition.partition
            ),
            next_offset as f64,
        );
    }

    let churn = context.views.churn(1);
    out.gauge(
        "clickflow_open_sessions",
        "Open sessions.",
        churn.open_sessions as f64,
    );
    out.gauge(
        "clickflow_scored_sessions",
        "Open sessions with a churn score.",
        churn.scored as f64,
    );
    out.counter(
        "clickflow_scores_total",
        "Churn scores produced (changed scores).",
        context.views.scores_produced() as f64,
    );
    if let Some(status) = ModelStatus::of(context) {
        out.family("clickflow_model_info", "gauge", "The churn model in use.");
        out.sample(
            "clickflow_model_info",
            &format!("version=\"{}\"", escape(&status.model_version)),
            1.0,
        );
        out.family(
            "clickflow_model_live_roc_auc",
            "gauge",
            "ROC AUC of each model version's predictions on sessions that have ended.",
        );
        for live in status.live.iter() {
            if let Some(auc) = live.roc_auc {
                let label = format!("version=\"{}\"", escape(&live.model_version));
                out.sample("clickflow_model_live_roc_auc", &label, auc);
            }
        }
    }

    if let Some(sink) = context.status.sink() {
        out.gauge(
            "clickflow_sink_connected",
            "1 while PostgreSQL answers.",
            f64::from(u8::from(sink.connected)),
        );
        out.counter(
            "clickflow_sink_transactions_total",
            "Transactions committed.",
            sink.transactions as f64,
        );
        out.counter(
            "clickflow_sink_rows_total",
            "Rows inserted, updated or deleted.",
            sink.rows as f64,
        );
        out.counter(
            "clickflow_sink_retries_total",
            "Lost connections retried.",
            sink.retries as f64,
        );
        out.family(
            "clickflow_sink_commit_seconds",
            "summary",
            "Time spent committing transactions.",
        );
        out.sample(
            "clickflow_sink_commit_seconds_sum",
            "",
            sink.commit_seconds_total,
        );
        out.sample(
            "clickflow_sink_commit_seconds_count",
            "",
            sink.transactions as f64,
        );
        out.histogram(
            "clickflow_freshness_seconds",
            "How long events waited from arrival to commit (epoch latency), per event.",
            &sink.freshness_buckets,
            sink.freshness_events,
        );
        if let Some(feed) = &sink.changes {
            change_feed(&mut out, feed);
        }
    }
    out.text
}

/// The Kafka change feed's counters and its publish lag histogram.
fn change_feed(out: &mut Metrics, feed: &FeedSnapshot) {
    out.counter(
        "clickflow_changes_published_total",
        "Committed changes published to the change topics and acknowledged by Kafka.",
        feed.published as f64,
    );
    out.counter(
        "clickflow_changes_republished_total",
        "Changes an earlier run committed but had not seen acknowledged, published again.",
        feed.republished as f64,
    );
    out.counter(
        "clickflow_changes_failed_rounds_total",
        "Publishing rounds that failed (Kafka or PostgreSQL unreachable) and were retried.",
        feed.failed as f64,
    );
    out.histogram(
        "clickflow_changes_publish_lag_seconds",
        "From a change's commit to Kafka's acknowledgement, per change.",
        &feed.lag_buckets,
        feed.lag_changes,
    );
}

#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    /// A histogram from cumulative `(upper bound, count)` buckets and the total count; its
    /// sum takes each observation at the middle of its bucket.
    fn histogram(&mut self, name: &str, help: &str, buckets: &[(f64, u64)], count: u64) {
        self.family(name, "histogram", help);
        let mut sum = 0.0;
        let mut previous = (0.0, 0);
        for &(bound, at_most) in buckets {
            self.sample(
                &format!("{name}_bucket"),
                &format!("le=\"{bound}\""),
                at_most as f64,
            );
            sum += (at_most - previous.1) as f64 * (bound + previous.0) / 2.0;
            previous = (bound, at_most);
        }
        self.sample(&format!("{name}_bucket"), "le=\"+Inf\"", count as f64);
        self.sample(&format!("{name}_sum"), "", sum);
        self.sample(&format!("{name}_count"), "", count as f64);
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{labels}}} {value}");
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, "", value);
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "counter", help);
        self.sample(name, "", value);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
