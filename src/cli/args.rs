//! Flag groups shared by several subcommands.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use clickflow_dataflow::alerts::detect::DetectorConfig;
use clickflow_dataflow::alerts::rules::load_rules;
use clickflow_dataflow::config::RecsConfig;
use clickflow_dataflow::window::WindowSize;
use clickflow_dataflow::{DataflowConfig, EpochConfig};

/// Parses a duration such as `100ms`, `30s`, `1m`, `30min`.
pub(super) fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

fn millis(duration: Duration) -> i64 {
    duration.as_millis().min(i64::MAX as u128) as i64
}

/// Windows, lateness and sessions.
#[derive(Debug, Args)]
pub struct DataflowArgs {
    /// Length of the tumbling event-time windows (aligned to the Unix epoch).
    #[arg(long, default_value = "1m", value_parser = duration)]
    window: Duration,
    /// How far behind its partition's newest event an event may be and still count; later
    /// events go to dead_letters as `late`.
    #[arg(long, default_value = "30s", value_parser = duration)]
    allowed_lateness: Duration,
    /// Inactivity (event time) after which a session is closed and its row final.
    #[arg(long, default_value = "30m", value_parser = duration)]
    session_gap: Duration,
    /// The ordered funnel's conversion window: a session's click, cart add and purchase
    /// count (in that order) when they happen within this long of its first event
    /// (`funnel_conversion`).
    #[arg(long, default_value = "30m", value_parser = duration)]
    funnel_window: Duration,
    /// How long (event time) a session's viewed and carted products count for the
    /// recommender after its latest event with them. A restart replays up to this much
    /// input to rebuild the counts.
    #[arg(long, default_value = "24h", value_parser = duration)]
    recs_horizon: Duration,
    /// Most products one session contributes to the co-occurrence counts (a longer
    /// session contributes a fixed sample of them).
    #[arg(long, default_value_t = clickflow_dataflow::config::RecsConfig::default().max_items_per_session)]
    recs_items_per_session: usize,
    /// Do not run the recommender (`product_recommendations` stays empty and the
    /// recommendation routes answer 503).
    #[arg(long)]
    no_recommendations: bool,
    /// Length of a processing-time epoch: each one is committed as one transaction.
    #[arg(long, default_value_t = 50)]
    epoch_ms: u64,
    /// Length of an epoch while a worker reads a backlog (a file, a Kafka partition far
    /// behind): longer epochs reduce and write each changed key fewer times.
    #[arg(long, default_value_t = EpochConfig::default().catch_up_epoch.as_millis() as u64)]
    catch_up_epoch_ms: u64,
    /// An epoch also closes once a worker has read this many events in it. Small values
    /// make a file replay score sessions as a live stream would (for backtests of a model
    /// with --log-predictions); the default only bounds what one epoch holds.
    #[arg(long, default_value_t = EpochConfig::default().max_epoch_messages)]
    max_epoch_events: usize,
    /// A caught-up Kafka partition silent this long stops holding back the watermark.
    #[arg(long, default_value = "5s", value_parser = duration)]
    idle_timeout: Duration,
}

impl DataflowArgs {
    /// The dataflow's configuration.
    pub fn dataflow(&self) -> DataflowConfig {
        DataflowConfig {
            window: WindowSize::from_millis(millis(self.window)),
            allowed_lateness_ms: millis(self.allowed_lateness),
            session_gap_ms: millis(self.session_gap),
            funnel_window_ms: millis(self.funnel_window).max(1),
            recommendations: (!self.no_recommendations).then(|| RecsConfig {
                horizon_ms: millis(self.recs_horizon).max(1),
                max_items_per_session: self.recs_items_per_session.max(2),
                ..RecsConfig::default()
            }),
        }
    }

    /// The workers' pacing.
    pub fn epochs(&self) -> EpochConfig {
        EpochConfig {
            epoch: Duration::from_millis(self.epoch_ms.max(1)),
            catch_up_epoch: Duration::from_millis(self.catch_up_epoch_ms.max(1)),
            idle_timeout: self.idle_timeout,
            max_epoch_messages: self.max_epoch_events.max(1),
            poll_batch: EpochConfig::default()
                .poll_batch
                .min(self.max_epoch_events.max(1)),
            ..EpochConfig::default()
        }
    }
}

/// Anomaly alerts: tuning, rules and delivery.
#[derive(Debug, Args)]
pub struct AlertArgs {
    /// TOML file tuning the anomaly detectors and adding static rules (see the README);
    /// without one, the defaults judge every series.
    #[arg(long, env = "CLICKFLOW_ALERT_RULES")]
    alert_rules: Option<PathBuf>,
    /// POST each alert opened or resolved, as JSON, to this http:// or https:// URL
    /// (retried with backoff; an Idempotency-Key header lets the receiver drop repeats).
    #[arg(long, env = "CLICKFLOW_ALERT_WEBHOOK")]
    alert_webhook: Option<clickflow_sinks::postgres::WebhookUrl>,
    /// PEM root certificate(s) an https webhook's certificate may also chain to (a private
    /// CA), beside the machine's trust store.
    #[arg(long, value_name = "FILE")]
    alert_webhook_ca: Option<PathBuf>,
}

impl AlertArgs {
    /// The webhook receiver, with its extra CA, checked (a CA file that cannot be read stops
    /// the start).
    pub fn webhook(&self) -> anyhow::Result<Option<clickflow_sinks::postgres::WebhookUrl>> {
        let Some(url) = self.alert_webhook.clone() else {
            anyhow::ensure!(
                self.alert_webhook_ca.is_none(),
                "--alert-webhook-ca needs --alert-webhook"
            );
            return Ok(None);
        };
        let url = match &self.alert_webhook_ca {
            Some(ca) => url.trusting(ca.clone()),
            None => url,
        };
        url.check().map_err(anyhow::Error::msg)?;
        Ok(Some(url))
    }

    /// The detectors' configuration: the rules file's, or the defaults.
    pub fn detectors(&self) -> anyhow::Result<DetectorConfig> {
        Ok(match &self.alert_rules {
            Some(path) => load_rules(path)?,
            None => DetectorConfig::default(),
        })
    }
}

/// Threads and processes (timely's cluster mode).
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Worker threads in this process.
    #[arg(long, short = 'w', default_value_t = 2)]
    workers: usize,
    /// Processes in the cluster (each started with the same flags and its own --process).
    #[arg(long, short = 'n', default_value_t = 1)]
    processes: usize,
    /// This process's index in the cluster, from 0. Process 0 writes to PostgreSQL.
    #[arg(long, short = 'p', default_value_t = 0)]
    process: usize,
    /// File with one `host:port` per process; default: 127.0.0.1:2101, :2102, ...
    #[arg(long, short = 'H')]
    hostfile: Option<PathBuf>,
    /// The `host:port` this process listens on for its peers (instead of its line of
    /// --hostfile). Like every cluster address it must be on a private network (loopback,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10, link-local, fc00::/7).
    #[arg(long)]
    cluster_bind: Option<String>,
    /// Allow cluster addresses outside private networks: timely's links between processes
    /// are neither authenticated nor encrypted, so only do this on a network that is private
    /// all the same (a VPN, a cloud VPC with public-looking ranges).
    #[arg(long)]
    cluster_allow_public: bool,
}

impl ClusterArgs {
    /// The timely configuration, and whether this process writes the output.
    pub fn timely(&self) -> anyhow::Result<(timely::Config, bool)> {
        let threads = self.workers.max(1);
        if self.processes <= 1 {
            return Ok((timely::Config::process(threads), true));
        }
        anyhow::ensure!(
            self.process < self.processes,
            "--process must be below --processes"
        );
        let addresses = match &self.hostfile {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read hostfile {}: {e}", path.display()))?;
                let hosts: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
                anyhow::ensure!(
                    hosts.len() >= self.processes,
                    "hostfile {} lists {} hosts for {} processes",
                    path.display(),
                    hosts.len(),
                    self.processes
                );
                hosts
            }
            None => (0..self.processes)
                .map(|i| format!("127.0.0.1:{}", 2101 + i))
                .collect(),
        };
        let mut addresses = addresses;
        if let Some(bind) = &self.cluster_bind {
            addresses[self.process] = bind.clone();
        }
        if !self.cluster_allow_public {
            for address in &addresses {
                check_private(address)?;
            }
        }
        let communication = timely::CommunicationConfig::Cluster {
            threads,
            process: self.process,
            addresses,
            report: false,
            zerocopy: false,
        };
        let config = timely::Config {
            communication,
            worker: timely::WorkerConfig::default(),
        };
        Ok((config, self.process == 0))
    }
}

/// Refuses a cluster address that resolves outside private networks: timely's links carry
/// every exchanged record without authentication or encryption.
fn check_private(address: &str) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let resolved: Vec<std::net::SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve cluster address {address:?}: {e}"))?
        .collect();
    if let Some(public) = resolved.iter().find(|a| !is_private(a.ip())) {
        anyhow::bail!(
            "cluster address {address} resolves to {}, which is not on a private network: \
             timely's links between processes are neither authenticated nor encrypted, so \
             run the processes on a private network (or pass --cluster-allow-public if this \
             one is private all the same)",
            public.ip()
        );
    }
    Ok(())
}

/// True for loopback, private (RFC 1918, shared 100.64/10, unique local) and link-local
/// addresses.
fn is_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unique_local() || v6.is_unicast_link_local()
        }
    }
}

/// Where PostgreSQL is.
#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Read the PostgreSQL connection URL from this file (its first line) instead: a URL
    /// with a password given as a flag shows in `ps`. Wins over --database-url and
    /// DATABASE_URL.
    #[arg(long, env = "CLICKFLOW_DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,
    /// TLS to PostgreSQL, as libpq's sslmode: disable, prefer (TLS when offered, unchecked),
    /// require (always TLS), verify-ca (the certificate chains to --database-sslrootcert),
    /// verify-full (and names the host). Wins over the URL's `sslmode`.
    #[arg(long, env = "CLICKFLOW_DATABASE_SSLMODE")]
    pub database_sslmode: Option<clickflow_sinks::postgres::tls::SslMode>,
    /// PEM file of the root certificate(s) the server's certificate must chain to, or
    /// `system` for the machine's trust store. Wins over the URL's `sslrootcert`.
    #[arg(long, env = "CLICKFLOW_DATABASE_SSLROOTCERT")]
    pub database_sslrootcert: Option<String>,
    /// PostgreSQL schema holding this pipeline's tables (created if missing). It records the
    /// input it belongs to: a run with another input is refused. Give each pipeline its own.
    #[arg(long, env = "CLICKFLOW_SCHEMA", default_value = "public")]
    pub schema: String,
    /// Who writes the tables: `per-worker` (every worker writes its own rows over its own
    /// connection, committed together by two-phase commit; needs max_prepared_transactions
    /// of at least 2 per worker on the server), `one` (one writer on process 0), or `auto`
    /// (per-worker when the server allows it).
    #[arg(long, env = "CLICKFLOW_SINK_WRITERS", default_value = "auto")]
    pub sink_writers: clickflow_sinks::postgres::SinkWriters,
}

impl DatabaseArgs {
    /// The database URL with the pipeline's schema: from --database-url-file when given,
    /// else --database-url (or DATABASE_URL).
    pub fn url(&self) -> anyhow::Result<clickflow_sinks::postgres::DatabaseUrl> {
        let text = match &self.database_url_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --database-url-file {}: {e}", path.display())
                })?;
                let line = text.lines().next().unwrap_or("").trim().to_string();
                anyhow::ensure!(
                    !line.is_empty(),
                    "--database-url-file {} is empty",
                    path.display()
                );
                line
            }
            None => self.database_url.clone(),
        };
        let url = clickflow_sinks::postgres::DatabaseUrl::parse(&text)?
            .with_tls(self.database_sslmode, self.database_sslrootcert.clone())?;
        Ok(url.with_schema(&self.schema)?)
    }

    /// The sink's settings for `url`, with the writers asked for.
    pub fn sink(
        &self,
        url: clickflow_sinks::postgres::DatabaseUrl,
    ) -> clickflow_sinks::postgres::SinkConfig {
        let mut sink = clickflow_sinks::postgres::SinkConfig::new(url);
        sink.writers = self.sink_writers;
        sink
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_addresses_must_be_private_unless_told() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.9",
            "192.168.1.1",
            "100.100.0.1",
            "169.254.3.4",
            "::1",
            "fd00::5",
            "fe80::1",
        ] {
            assert!(is_private(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "1.1.1.1",
        ] {
            assert!(!is_private(public.parse().unwrap()), "{public}");
        }
        assert!(check_private("127.0.0.1:2101").is_ok());
        let error = check_private("8.8.8.8:2101").unwrap_err().to_string();
        assert!(error.contains("--cluster-allow-public"), "{error}");
    }
}
