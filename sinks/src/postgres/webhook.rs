//! Alert webhooks (`--alert-webhook URL`): a JSON POST per alert opened and per alert
//! resolved, delivered from the `alerts` table as an outbox.
//!
//! The notifier runs on its own thread with its own connection, apart from the pipeline: it
//! reads the events not yet acknowledged (`open_notified_at` / `resolve_notified_at` NULL),
//! POSTs them oldest first, and marks each once the receiver answered 2xx. A receiver that
//! fails or does not answer within [`ATTEMPT_TIMEOUT`] is retried with exponential backoff
//! (1 s doubling to [`MAX_BACKOFF`]); meanwhile events wait in the table, never in memory,
//! and the pipeline never waits for them. Delivery is at least once: a crash between the
//! receiver's 2xx and the mark sends that event again, with the same `Idempotency-Key`
//! header (also in the body as `idempotency_key`: `<alert_id>:open` or
//! `<alert_id>:resolve`), so a receiver that drops repeated keys sees every event once.
//!
//! ```json
//! {"event": "open", "idempotency_key": "purchases:1751965200000:open",
//!  "alert": {"alert_id": "purchases:1751965200000", "kind": "drop", "rule": null,
//!            "series": "purchases", "severity": "critical", "status": "open",
//!            "observed": 0.0, "expected": 41.0,
//!            "opened_window": "2025-07-08T09:00:00+00:00", "latest_window": "...",
//!            "resolved_window": null, "raised_at": "...", "resolved_at": null}}
//! ```
//!
//! `https://` receivers are checked against the machine's trust store (and
//! `SSL_CERT_FILE`/`SSL_CERT_DIR`), plus `--alert-webhook-ca FILE` for a private CA; rustls
//! with the ring provider. `http://` works too, for a receiver on a private network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::http::{Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

use super::schema::connect;
use super::{DatabaseUrl, SinkError};
use crate::outbox::{spawn_drainer, Drainer, Outbox, Pacing};

/// How long one POST may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the outbox is read when nothing failed.
const POLL: Duration = Duration::from_millis(500);
/// The most alerts one round reads.
const PAGE: i64 = 100;

/// A webhook receiver's address, and the extra root certificate its TLS certificate may
/// chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl {
    uri: Uri,
    ca: Option<std::path::PathBuf>,
}

impl WebhookUrl {
    /// Also trust the root certificate(s) of this PEM file (a private CA).
    pub fn trusting(mut self, ca: std::path::PathBuf) -> WebhookUrl {
        self.ca = Some(ca);
        self
    }

    /// Fails when the client cannot be built (an unreadable CA file): checked at start.
    pub fn check(&self) -> Result<(), String> {
        self.client().map(drop)
    }

    /// The HTTP(S) client for this receiver: the machine's roots and the extra CA. Fails when
    /// the CA file cannot be read.
    fn client(&self) -> Result<HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>, String> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(ca) = &self.ca {
            super::tls::add_pem_file(&mut roots, ca)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HttpClient::builder(TokioExecutor::new()).build(connector))
    }
}

impl std::str::FromStr for WebhookUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<WebhookUrl, String> {
        let uri: Uri = text
            .parse()
            .map_err(|e| format!("invalid webhook URL {text:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.host().is_some() => Ok(WebhookUrl { uri, ca: None }),
            _ => Err(format!(
                "webhook URL {text:?}: expected http(s)://host[:port]/path"
            )),
        }
    }
}

/// What the notifier has done, for logs and tests.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events the receiver acknowledged.
    pub delivered: AtomicU64,
    /// Attempts that failed (an error status, no answer, a timeout).
    pub failed: AtomicU64,
}

/// The running notifier.
pub struct Notifier {
    drainer: Drainer,
    /// Its counts.
    pub stats: Arc<WebhookStats>,
}

impl Notifier {
    /// Stops it: events still waiting are delivered for up to a few seconds while the
    /// receiver answers; the rest wait in the table for the next start.
    pub fn stop(self) {
        self.drainer.stop();
    }
}

/// Starts delivering the alerts of the pipeline at `database` to `webhook`.
pub fn spawn_notifier(database: DatabaseUrl, webhook: WebhookUrl) -> std::io::Result<Notifier> {
    let http = webhook.client().map_err(std::io::Error::other)?;
    let stats = Arc::new(WebhookStats::default());
    let outbox = AlertOutbox {
        database,
        webhook,
        http,
        client: None,
        stats: stats.clone(),
    };
    let pacing = Pacing {
        poll: POLL,
        max_backoff: MAX_BACKOFF,
        drain_for: Duration::from_secs(5),
    };
    let drainer = spawn_drainer("clickflow-webhook", outbox, pacing)?;
    Ok(Notifier { drainer, stats })
}

/// One event waiting in the outbox.
struct Pending {
    alert_id: String,
    event: &'static str,
    alert_json: String,
}

/// The `alerts` table as the webhook's outbox.
struct AlertOutbox {
    database: DatabaseUrl,
    webhook: WebhookUrl,
    http: HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    client: Option<tokio_postgres::Client>,
    stats: Arc<WebhookStats>,
}

impl Outbox for AlertOutbox {
    async fn round(&mut self) -> Result<bool, String> {
        let delivered = deliver_waiting(
            &self.database,
            &mut self.client,
            &self.http,
            &self.webhook,
            &self.stats,
        )
        .await;
        if delivered.is_err() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        delivered
    }
}

/// Delivers every event waiting now, oldest first; stops at the first failure. `Ok(true)`
/// when a full page was delivered (more may wait).
async fn deliver_waiting(
    database: &DatabaseUrl,
    client: &mut Option<tokio_postgres::Client>,
    http: &HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    webhook: &WebhookUrl,
    stats: &WebhookStats,
) -> Result<bool, String> {
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        *client = Some(connect(database).await.map_err(|e| e.to_string())?);
    }
    let db = client.as_ref().expect("connected above");
    let waiting = waiting(db).await.map_err(|e| e.to_string())?;
    let full_page = waiting.len() >= PAGE as usize;
    for pending in waiting {
        let key = format!("{}:{}", pending.alert_id, pending.event);
        let body = format!(
            "{{\"event\":{},\"idempotency_key\":{},\"alert\":{}}}",
            serde_json::Value::from(pending.event),
            serde_json::Value::from(key.as_str()),
            pending.alert_json
        );
        let request = Request::post(webhook.uri.clone())
            .header("content-type", "application/json")
            .header("idempotency-key", key.as_str())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let status = tokio::time::timeout(ATTEMPT_TIMEOUT, http.request(request))
            .await
            .map_err(|_| format!("{key}: no answer within {ATTEMPT_TIMEOUT:?}"))?
            .map_err(|e| format!("{key}: {e}"))?
            .status();
        if !status.is_success() {
            return Err(format!("{key}: the receiver answered {status}"));
        }
        let column = match pending.event {
            "open" => "open_notified_at",
            _ => "resolve_notified_at",
        };
        db.execute(
            &format!("UPDATE alerts SET {column} = now() WHERE alert_id = $1"),
            &[&pending.alert_id],
        )
        .await
        .map_err(|e| format!("{key}: delivered, but not marked: {e}"))?;
        stats.delivered.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%key, "alert webhook delivered");
    }
    Ok(full_page)
}

/// The events not acknowledged yet: every opening, then every resolution, oldest first.
async fn waiting(db: &tokio_postgres::Client) -> Result<Vec<Pending>, SinkError> {
    let rows = db
        .query(
            "SELECT alert_id, open_notified_at IS NULL,
                    status = 'resolved' AND resolve_notified_at IS NULL,
                    json_build_object(
                        'alert_id', alert_id, 'kind', kind, 'rule', rule, 'series', series,
                        'severity', severity, 'status', status, 'observed', observed,
                        'expected', expected, 'opened_window', opened_window,
                        'latest_window', latest_window, 'resolved_window', resolved_window,
                        'raised_at', raised_at, 'resolved_at', resolved_at)::text
             FROM alerts
             WHERE open_notified_at IS NULL
                OR (status = 'resolved' AND resolve_notified_at IS NULL)
             ORDER BY raised_at, alert_id
             LIMIT $1",
            &[&PAGE],
        )
        .await
        .map_err(SinkError::statement("reading the alerts to notify"))?;
    let mut pending = Vec::new();
    for row in rows {
        let (alert_id, open, resolve, alert_json): (String, bool, bool, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        for (due, event) in [(open, "open"), (resolve, "resolve")] {
            if due {
                pending.push(Pending {
                    alert_id: alert_id.clone(),
                    event,
                    alert_json: alert_json.clone(),
                });
            }
        }
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_receivers_are_taken_with_a_reason_for_the_rest() {
        assert!("http://127.0.0.1:9000/hooks/clickflow"
            .parse::<WebhookUrl>()
            .is_ok());
        assert!("https://example.com/hook".parse::<WebhookUrl>().is_ok());
        let ftp = "ftp://example.com/hook".parse::<WebhookUrl>().unwrap_err();
        assert!(ftp.contains("expected http(s)://"), "{ftp}");
        assert!("example.com/hook".parse::<WebhookUrl>().is_err());
        assert!("http://".parse::<WebhookUrl>().is_err());
    }
}
