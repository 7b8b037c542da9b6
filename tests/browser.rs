//! The dashboard of a running `clickflow demo`, loaded in headless Chromium: the page fetches
//! its charts, and the funnel, ordered funnel, trend and churn charts show data; with the
//! pushed stream, in real time (driven over the DevTools protocol), the charts update on
//! pushes alone. A screenshot is kept under `target/tmp/` for a human to look at.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clickflow_testkit::free_port;
use common::*;

/// Debian's Chromium, as `.ci/run` installs it.
fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Chromium is not installed: `bash .ci/run` installs Debian's chromium package")
}

/// Runs headless Chromium on `url` with the flags of the acceptance list, plus `extra`.
fn headless(url: &str, profile: &Path, extra: &[&str]) -> String {
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1440,1500",
            "--virtual-time-budget=6000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("Chromium runs");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The inner HTML of the element with `id` in a dumped DOM (up to its closing `</div>`).
fn chart<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &dom[start..];
    &rest[..rest.find("</svg>").map_or(rest.len(), |end| end + 6)]
}

#[test]
fn the_demo_dashboard_shows_live_charts_in_a_real_browser() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // Short windows and lateness, so that complete windows come within seconds.
    let mut demo = spawn(&[
        "demo",
        "--http",
        &addr,
        "--rate",
        "1500",
        "--window",
        "5s",
        "--allowed-lateness",
        "1s",
        "--funnel-window",
        "10s",
    ]);
    wait_until(
        Duration::from_secs(120),
        "the demo has a complete window",
        || {
            http_get(port, "/api/v1/funnel?last=5")
                .is_some_and(|body| body.contains("\"complete\":true"))
        },
    );
    wait_until(
        Duration::from_secs(60),
        "the ordered funnel has a complete window",
        || {
            http_get(port, "/api/v1/funnel/conversion?last=5")
                .is_some_and(|body| body.contains("\"complete\":true"))
        },
    );
    wait_until(Duration::from_secs(30), "open sessions are scored", || {
        http_get(port, "/api/v1/sessions/at-risk?limit=1")
            .is_some_and(|body| body.contains("churn_probability"))
    });

    let profile = tempfile::tempdir().unwrap();
    // Polling, not the pushed stream: headless Chromium's virtual time waits for every request
    // to finish, and hung (in CI, not here) with the stream's reconnections. The stream is
    // checked in real time at the end, over the DevTools protocol.
    let url = format!("http://{addr}/?stream=off");
    let dom = headless(&url, profile.path(), &["--dump-dom"]);
    assert!(
        dom.contains("data-charts=\"churn,conversion,funnel,trends\""),
        "the page did not load all four charts:\n{}",
        &dom[..dom.len().min(3000)]
    );
    for (id, data) in [
        ("funnel", "<rect"),
        ("conversion", "<rect"),
        ("trends", "<polyline"),
        ("churn", "<rect"),
    ] {
        let svg = chart(&dom, id);
        assert!(svg.contains("<svg"), "#{id} holds no chart");
        assert!(!svg.contains("waiting for"), "#{id} is still empty: {svg}");
        assert!(svg.matches(data).count() >= 3, "#{id} draws no data");
    }
    assert!(dom.contains("churn probability"));
    assert!(
        chart(&dom, "conversion").contains("then bought"),
        "the ordered funnel's steps are labelled"
    );
    assert!(
        dom.contains("data-stream=\"polling\""),
        "the page did not poll"
    );
    // The live model and its quality are shown beside the churn chart.
    let model = &dom[dom.find("id=\"m-version\"").expect("a model tile")..];
    assert!(
        model[..model.find("</div>").unwrap()].contains("rf-"),
        "the live model's version is shown"
    );

    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&artifacts).unwrap();
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    headless(
        &url,
        profile.path(),
        &[&format!("--screenshot={}", screenshot.display())],
    );
    let png = std::fs::read(&screenshot).expect("Chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "a real screenshot"
    );
    eprintln!("screenshot: {}", screenshot.display());

    charts_update_on_pushes_alone(&format!("http://{addr}/"), profile.path());
    terminate(&mut demo);
}

/// The targets Chromium's DevTools endpoint on `port` lists (it answers HTTP/1.1 only, and
/// keeps the connection open: the body is read to its Content-Length).
fn devtools_targets(port: u16) -> Option<serde_json::Value> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The page with the stream on, in real time: it goes `live`, and its trend chart changes
/// through refreshes that pushed epochs caused, with no other refresh than the first load
/// (no poll). The page counts its refreshes in `data-*` attributes of its body.
fn charts_update_on_pushes_alone(url: &str, profile: &Path) {
    let port = free_port();
    let mut browser = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .arg(format!("--remote-debugging-port={port}"))
        .arg(format!(
            "--user-data-dir={}",
            profile.join("devtools").display()
        ))
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("Chromium runs");
    let mut page = None;
    wait_until(Duration::from_secs(30), "Chromium shows the page", || {
        page = devtools_targets(port).and_then(|targets| {
            targets
                .as_array()?
                .iter()
                .find(|t| t["type"] == "page" && t["url"] == url)
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
        });
        page.is_some()
    });
    let (mut socket, _) = tungstenite::connect(page.unwrap()).expect("the DevTools socket");
    let mut request = 0;
    let mut dataset = |expression: &str| -> serde_json::Value {
        request += 1;
        let call = serde_json::json!({"id": request, "method": "Runtime.evaluate",
            "params": {"expression": expression, "returnByValue": true}});
        socket.send(call.to_string().into()).unwrap();
        loop {
            let answer: serde_json::Value =
                serde_json::from_str(socket.read().unwrap().to_text().unwrap()).unwrap();
            if answer["id"] == request {
                return answer["result"]["result"]["value"].clone();
            }
        }
    };
    let state = "({...document.body.dataset, trends: document.getElementById('trends').innerHTML})";
    let count = |state: &serde_json::Value, key: &str| -> u64 {
        state[key]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut first: Option<serde_json::Value> = None;
    let mut updated = None;
    wait_until(Duration::from_secs(60), "a pushed chart update", || {
        let now = dataset(state);
        assert!(
            count(&now, "refreshes") <= count(&now, "pushedRefreshes") + 1,
            "the page refreshed other than on a push (a poll): {}",
            serde_json::json!({"stream": now["stream"], "refreshes": now["refreshes"],
                "pushedRefreshes": now["pushedRefreshes"]})
        );
        if count(&now, "pushedRefreshes") == 0 || count(&now, "refreshes") < 2 {
            return false;
        }
        let Some(first) = &first else {
            first = Some(now);
            return false;
        };
        if now["trends"] != first["trends"] {
            updated = Some(now);
        }
        updated.is_some()
    });
    let updated = updated.unwrap();
    assert_eq!(updated["stream"], "live");
    assert!(count(&updated, "pushes") >= 1);
    let _ = browser.kill();
    let _ = browser.wait();
}
