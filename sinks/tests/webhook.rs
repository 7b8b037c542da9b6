//! Alert webhooks from the `alerts` table: every opening and resolution reaches a receiver
//! that fails its first attempts, each once after dropping repeated idempotency keys, and a
//! restarted notifier sends nothing already acknowledged.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clickflow_sinks::postgres::{prepare, spawn_notifier, DatabaseUrl, WebhookUrl};
use clickflow_testkit::TestDatabase;

/// One request the receiver answered with 2xx: its idempotency key and body.
type Received = (String, serde_json::Value);

/// A webhook receiver that answers 503 to its first `failures` requests and 200 after.
struct Receiver {
    url: WebhookUrl,
    accepted: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<usize>>,
}

/// A receiver's TLS server configuration, from a PEM certificate and key.
fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

impl Receiver {
    fn start(failures: usize) -> Receiver {
        Receiver::serve(failures, None)
    }

    /// Over TLS with `tls` (`https://localhost:PORT/...`).
    fn serve(failures: usize, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}/hooks/clickflow"),
            None => format!("http://127.0.0.1:{port}/hooks/clickflow"),
        };
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (took, turned_away) = (accepted.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut stream: Box<dyn ReadWrite> = match &tls {
                    Some(config) => Box::new(rustls::StreamOwned::new(
                        rustls::ServerConnection::new(config.clone()).unwrap(),
                        stream,
                    )),
                    None => Box::new(stream),
                };
                let Some((key, body)) = read_request(&mut stream) else {
                    continue;
                };
                let mut refused = turned_away.lock().unwrap();
                let status = if *refused < failures {
                    *refused += 1;
                    "503 Service Unavailable"
                } else {
                    took.lock().unwrap().push((key, body));
                    "200 OK"
                };
                drop(refused);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.flush();
            }
        });
        Receiver {
            url: url.parse().unwrap(),
            accepted,
            refused,
        }
    }

    fn accepted(&self) -> Vec<Received> {
        self.accepted.lock().unwrap().clone()
    }

    /// The distinct idempotency keys accepted: what a receiver that drops repeats keeps.
    fn deduplicated(&self) -> BTreeSet<String> {
        self.accepted().into_iter().map(|(key, _)| key).collect()
    }
}

/// A plain or TLS connection.
trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// Reads one HTTP request: its `idempotency-key` header and JSON body.
fn read_request(stream: &mut Box<dyn ReadWrite>) -> Option<(String, serde_json::Value)> {
    let mut reader = BufReader::new(stream);
    let (mut key, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "idempotency-key" => key = value.trim().to_string(),
            "content-length" => length = value.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((key, serde_json::from_slice(&body).ok()?))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A database of its own with clickflow's tables.
fn prepared_database(label: &str) -> (TestDatabase, DatabaseUrl) {
    let db = TestDatabase::create(label);
    let url = DatabaseUrl::parse(&db.url).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(prepare(&url)).unwrap();
    (db, url)
}

fn insert_alert(db: &TestDatabase, id: &str, resolved: bool) {
    db.query(&format!(
        "INSERT INTO alerts (alert_id, kind, series, severity, observed, expected, opened_window,
                             latest_window, resolved_window, status, raised_at, resolved_at,
                             batch_time)
         VALUES ('{id}', 'drop', 'purchases', 'critical', 0, 41, '2025-07-08T09:00:00Z',
                 '2025-07-08T09:05:00Z', {resolved_window}, '{status}', now(), {resolved_at},
                 now())",
        resolved_window = if resolved {
            "'2025-07-08T09:10:00Z'"
        } else {
            "NULL"
        },
        status = if resolved { "resolved" } else { "open" },
        resolved_at = if resolved { "now()" } else { "NULL" },
    ));
}

#[test]
fn every_alert_event_reaches_a_failing_receiver_once_after_dedupe() {
    let (db, url) = prepared_database("webhook");
    insert_alert(&db, "purchases:1751965200000", false);
    insert_alert(&db, "clicks:1751961600000", true);

    let receiver = Receiver::start(2);
    let notifier = spawn_notifier(url.clone(), receiver.url.clone()).unwrap();
    let expected: BTreeSet<String> = [
        "purchases:1751965200000:open",
        "clicks:1751961600000:open",
        "clicks:1751961600000:resolve",
    ]
    .map(String::from)
    .into();
    wait_until("three events delivered", || {
        receiver.deduplicated() == expected
    });
    assert_eq!(
        *receiver.refused.lock().unwrap(),
        2,
        "the first two attempts failed"
    );
    // The body names the event and carries the same key as the header.
    for (key, body) in receiver.accepted() {
        assert_eq!(body["idempotency_key"], key.as_str());
        let alert = &body["alert"];
        assert_eq!(
            format!(
                "{}:{}",
                alert["alert_id"].as_str().unwrap(),
                body["event"].as_str().unwrap()
            ),
            key
        );
        assert_eq!(alert["kind"], "drop");
        assert_eq!(alert["severity"], "critical");
    }

    // The alert resolves later: its resolution follows, once.
    db.query(
        "UPDATE alerts SET status = 'resolved', resolved_window = '2025-07-08T09:20:00Z',
                           resolved_at = now()
         WHERE alert_id = 'purchases:1751965200000'",
    );
    wait_until("the resolution delivered", || {
        receiver
            .deduplicated()
            .contains("purchases:1751965200000:resolve")
    });
    wait_until("every event marked", || {
        db.query(
            "SELECT count(*) FROM alerts
             WHERE open_notified_at IS NOT NULL AND resolve_notified_at IS NOT NULL",
        ) == "2"
    });
    notifier.stop();
    assert_eq!(receiver.accepted().len(), 4, "each event accepted once");

    // A crash between the receiver's 2xx and the mark: the next notifier sends that event
    // again with the same key (the receiver drops it), and nothing else.
    db.query("UPDATE alerts SET open_notified_at = NULL WHERE alert_id = 'clicks:1751961600000'");
    let notifier = spawn_notifier(url, receiver.url.clone()).unwrap();
    wait_until("the unmarked event sent again", || {
        receiver.accepted().len() == 5
    });
    std::thread::sleep(Duration::from_millis(1_500));
    notifier.stop();
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 5, "nothing else sent: {accepted:?}");
    assert_eq!(accepted[4].0, "clicks:1751961600000:open");
    let mut all = expected;
    all.insert("purchases:1751965200000:resolve".into());
    assert_eq!(receiver.deduplicated(), all);
}

#[test]
fn an_https_receiver_is_reached_when_its_ca_is_trusted() {
    let certs = clickflow_testkit::TestCerts::new();
    let ca = certs.ca("ca");
    let (cert, key) = certs.server("receiver", "ca", "DNS:localhost");
    let (db, url) = prepared_database("webhook_tls");
    insert_alert(&db, "purchases:1751965200000", false);
    let receiver = Receiver::serve(0, Some(tls_config(&cert, &key)));

    // Without the CA the receiver's certificate is not trusted: nothing is delivered.
    let untrusting = spawn_notifier(url.clone(), receiver.url.clone()).unwrap();
    wait_until("a failed attempt", || {
        untrusting
            .stats
            .failed
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    });
    untrusting.stop();
    assert!(receiver.accepted().is_empty());
    assert_eq!(
        db.query("SELECT count(*) FROM alerts WHERE open_notified_at IS NOT NULL"),
        "0"
    );

    // With it, the event arrives over TLS and is marked.
    let notifier = spawn_notifier(url, receiver.url.clone().trusting(ca)).unwrap();
    wait_until("the event delivered and marked", || {
        db.query("SELECT count(*) FROM alerts WHERE open_notified_at IS NOT NULL") == "1"
    });
    notifier.stop();
    assert_eq!(
        receiver.deduplicated(),
        BTreeSet::from(["purchases:1751965200000:open".to_string()])
    );

    // An unreadable CA file is refused before anything starts.
    let missing = receiver
        .url
        .clone()
        .trusting("/nonexistent/ca.pem".into())
        .check()
        .unwrap_err();
    assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
}
