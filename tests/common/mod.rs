//! Helpers for the tests that drive the `clickflow` binary.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use clickflow_dataflow::oracle::{recompute_streaming, OracleTables};
use clickflow_dataflow::{DataflowConfig, Tables};
use clickflow_model::ChurnModel;
use clickflow_sinks::postgres::DatabaseUrl;
use clickflow_sources::kafka::TopicContents;
use clickflow_sources::Event;

/// A `clickflow` command.
pub fn clickflow() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clickflow"));
    command.env("CLICKFLOW_LOG", "warn");
    // Tests run many pipelines at once: each web server takes a free port.
    command.env("CLICKFLOW_HTTP", "127.0.0.1:0");
    command
}

/// Runs `clickflow` with `args` and asserts it succeeded.
pub fn run_ok(args: &[&str]) -> Output {
    let output = clickflow().args(args).output().expect("clickflow runs");
    assert!(
        output.status.success(),
        "clickflow {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Starts `clickflow` with `args` in the background. Its log goes to the test's stderr: a
/// pipe that nobody reads would fill up and block the child.
pub fn spawn(args: &[&str]) -> Spawned {
    spawn_logging_to(args, Stdio::inherit())
}

/// Starts `clickflow` with `args` in the background, its log going to `log` (a file, for a
/// test that reads what the command said).
pub fn spawn_logging_to(args: &[&str], log: impl Into<Stdio>) -> Spawned {
    Spawned(
        clickflow()
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("clickflow starts"),
    )
}

/// A `clickflow` started by a test, killed when dropped if it still runs: a test that fails
/// half-way must not leave a pipeline (and the CPU it burns) behind.
pub struct Spawned(Child);

impl std::ops::Deref for Spawned {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends SIGTERM (a graceful stop) and waits.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "clickflow run did not stop cleanly: {status}"
    );
}

/// The tables in the database at `url`.
pub fn read_tables(url: &str) -> Tables {
    try_read_tables(url).unwrap()
}

/// The tables in the database at `url`, or why they cannot be read (yet).
pub fn try_read_tables(url: &str) -> anyhow::Result<Tables> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(
        runtime.block_on(clickflow_sinks::postgres::read_tables(&DatabaseUrl::parse(
            url,
        )?))?,
    )
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `produce` flags of the shop the tests use: `count` records from `seed`, a fixed start,
/// some late and malformed records.
pub fn shop_flags(count: usize, seed: u64) -> Vec<String> {
    let flags = [
        "--count",
        &count.to_string(),
        "--rate",
        "0",
        "--seed",
        &seed.to_string(),
        "--start",
        "2025-07-08T00:00:00Z",
        "--late-fraction",
        "0.02",
        "--max-lateness",
        "90s",
        "--malformed-fraction",
        "0.002",
        "--traffic",
        "200",
    ]
    .map(String::from);
    flags.to_vec()
}

/// Runs `clickflow produce` with `destination` flags followed by [`shop_flags`].
pub fn produce(destination: &[&str], count: usize, seed: u64) {
    let flags = shop_flags(count, seed);
    let mut args = vec!["produce"];
    args.extend_from_slice(destination);
    args.extend(flags.iter().map(String::as_str));
    run_ok(&args);
}

/// Generates a shop file with the CLI.
pub fn produce_file(path: &Path, count: usize, seed: u64) {
    produce(&["--output", path.to_str().unwrap()], count, seed);
}

/// Reads every partition of a topic from the start until `count` messages arrived: per
/// partition, by offset, each decoded event or dead letter.
pub fn read_topic(brokers: &str, topic: &str, partitions: i32, count: usize) -> TopicContents {
    clickflow_sources::kafka::read_topic(
        brokers,
        topic,
        partitions,
        count,
        Duration::from_secs(120),
    )
    .unwrap()
}

/// The oracle over a topic (`count` messages), partition by partition in offset order, read
/// up to the pipeline watermark `watermark` (a Kafka run never ends).
pub fn oracle_for_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    count: usize,
    config: &DataflowConfig,
    watermark: i64,
) -> OracleTables {
    let mut malformed = std::collections::BTreeSet::new();
    let mut events: Vec<Vec<(i64, Event)>> = Vec::new();
    for (partition, messages) in read_topic(brokers, topic, partitions, count)
        .into_iter()
        .enumerate()
    {
        let mut decoded = Vec::new();
        for (offset, message) in messages {
            match message {
                Ok(event) => decoded.push((offset, event)),
                Err(_) => {
                    malformed.insert((partition as u32, offset));
                }
            }
        }
        events.push(decoded);
    }
    let mut oracle = recompute_streaming(&events, config, watermark);
    oracle.malformed = Some(malformed);
    oracle
}

/// The oracle with every session still open: a Kafka run never reaches the end of its input.
pub fn with_open_sessions(mut oracle: OracleTables) -> OracleTables {
    for session in oracle.tables.sessions.values_mut() {
        session.closed = false;
    }
    oracle
}

/// Asserts the tables equal the oracle.
pub fn assert_matches(tables: &Tables, oracle: &OracleTables, context: &str) {
    let differences = oracle.differences(tables);
    assert!(
        differences.is_empty(),
        "{context}: tables differ from the oracle:\n{}",
        differences.join("\n")
    );
    assert!(
        !tables.trends.is_empty(),
        "{context}: the tables are not empty"
    );
}

/// A small model file in `dir` (its name tells the seed; see
/// [`clickflow_testkit::small_model`]).
pub fn small_model(dir: &Path, seed: u64) -> (ChurnModel, PathBuf) {
    let model = clickflow_testkit::small_model(seed, 7);
    let path = dir.join(format!("churn-{seed}.model"));
    model.save(&path).unwrap();
    (model, path)
}

/// One HTTP/1.0 request on loopback: the status and the body, or `None` if nothing answered.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// A plain GET on loopback: the body, if the server answered 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    match http(port, "GET", path, &[], b"")? {
        (200, body) => Some(body),
        _ => None,
    }
}
