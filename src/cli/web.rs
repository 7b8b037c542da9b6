//! The web server's flags, and what the binary hands it: the live views, the model, the
//! dataflow's state and the sink's counters.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use clap::Args;
use clickflow_sinks::changes::FeedStats;
use clickflow_sinks::postgres::SinkMetrics;
use clickflow_web::{FeedSnapshot, SinkProbe, SinkSnapshot};

/// Flags of the web server (dashboard, API, metrics).
#[derive(Debug, Args)]
pub struct WebArgs {
    /// Address of the dashboard, API and metrics. A non-loopback address should come with
    /// --api-token.
    #[arg(
        long = "http",
        env = "CLICKFLOW_HTTP",
        default_value = "127.0.0.1:8080"
    )]
    pub addr: SocketAddr,
    /// Bearer token every route but /healthz then requires (at least 16 bytes). Prefer
    /// CLICKFLOW_API_TOKEN or --api-token-file: a flag shows in `ps`.
    #[arg(long, env = "CLICKFLOW_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Read the API token from this file (its first line).
    #[arg(long, conflicts_with = "api_token")]
    pub api_token_file: Option<std::path::PathBuf>,
    /// Another host name a server on a loopback address answers to (repeatable); it answers
    /// to localhost, 127.0.0.1 and [::1] only, against DNS rebinding.
    #[arg(long = "allowed-host")]
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); or keep plain HTTP
    /// behind a TLS-terminating reverse proxy (see the README).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
    /// An origin (`https://admin.shop.example`) whose pages may call the API from a browser
    /// (repeatable); none by default.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    /// How long a pushed-changes connection (`/api/v1/stream`) lasts; the browser then
    /// reconnects and resumes where it was.
    #[arg(long, default_value = "5m", value_parser = super::args::duration)]
    pub stream_reconnect_after: std::time::Duration,
    /// Do not start the web server (wins over --http and CLICKFLOW_HTTP, so an environment
    /// that sets the address can still turn the server off).
    #[arg(long)]
    pub no_http: bool,
}

impl WebArgs {
    /// The certificate and key to serve HTTPS with, when given (both or neither: checked
    /// here rather than by clap, so that one may come from the config file).
    pub fn tls(&self) -> anyhow::Result<Option<clickflow_web::https::TlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(clickflow_web::https::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            _ => anyhow::bail!("give both --tls-cert and --tls-key to serve HTTPS"),
        }
    }

    /// The token: the flag's or the environment's, or the first line of --api-token-file.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        match &self.api_token_file {
            None => Ok(self.api_token.clone()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --api-token-file {}: {e}", path.display())
                })?;
                let token = text.lines().next().unwrap_or("").trim().to_string();
                anyhow::ensure!(
                    !token.is_empty(),
                    "--api-token-file {} is empty",
                    path.display()
                );
                Ok(Some(token))
            }
        }
    }
}

/// Bounds of the freshness histogram in `/metrics`, in milliseconds.
const FRESHNESS_BOUNDS_MS: [i64; 10] = [25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000];

/// Where the running sink's counters will be, once it starts.
pub(super) type SinkSlot = Arc<Mutex<Option<Arc<SinkMetrics>>>>;

/// Where the change feed's counters will be, once it starts (`--emit-kafka`).
pub(super) type FeedSlot = Arc<Mutex<Option<Arc<FeedStats>>>>;

/// A probe reading the sink's counters from `slot`, and the change feed's from `feed`.
pub(super) fn sink_probe(slot: SinkSlot, feed: FeedSlot) -> SinkProbe {
    Arc::new(move || {
        let changes = feed
            .lock()
            .ok()
            .and_then(|feed| feed.clone())
            .map(|stats| feed_snapshot(&stats));
        let metrics = slot.lock().ok()?.clone()?;
        let transactions = metrics.epochs.load(Ordering::Relaxed);
        let freshness = metrics.freshness.lock().ok()?;
        let buckets = freshness.cumulative(&FRESHNESS_BOUNDS_MS);
        Some(SinkSnapshot {
            connected: metrics.connected.load(Ordering::Relaxed),
            transactions,
            rows: metrics.rows.load(Ordering::Relaxed),
            retries: metrics.retries.load(Ordering::Relaxed),
            commit_seconds_total: metrics.commit_micros_total.load(Ordering::Relaxed) as f64 / 1e6,
            last_commit_seconds: metrics.last_commit_micros.load(Ordering::Relaxed) as f64 / 1e6,
            freshness_buckets: FRESHNESS_BOUNDS_MS
                .iter()
                .map(|ms| *ms as f64 / 1000.0)
                .zip(buckets)
                .collect(),
            freshness_events: freshness.total(),
            freshness_p50_ms: freshness.quantile(0.5),
            freshness_p99_ms: freshness.quantile(0.99),
            changes,
        })
    })
}

/// The change feed's counters, its lag histogram on the freshness histogram's bounds.
fn feed_snapshot(stats: &FeedStats) -> FeedSnapshot {
    let lag = stats.lag.lock().unwrap_or_else(|e| e.into_inner());
    FeedSnapshot {
        published: stats.published.load(Ordering::Relaxed),
        republished: stats.republished.load(Ordering::Relaxed),
        failed: stats.failed.load(Ordering::Relaxed),
        lag_buckets: FRESHNESS_BOUNDS_MS
            .iter()
            .map(|ms| *ms as f64 / 1000.0)
            .zip(lag.cumulative(&FRESHNESS_BOUNDS_MS))
            .collect(),
        lag_changes: lag.total(),
    }
}
