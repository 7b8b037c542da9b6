//! clickflow against DuckDB on the same file, in the same sitting.
//!
//! Generates the side-by-side file (`ShopConfig::side_by_side`: 2M events by default, 10k
//! users, about 50k visits, 60 minutes of event time, 70/20/10 % clicks, cart adds and
//! purchases, 5 % of events out of order by up to 30 s), then:
//! - runs `clickflow run --input FILE` (the release binary beside this one) into a fresh
//!   PostgreSQL database `clickflow_versus`, with an allowed lateness of 2 minutes so that
//!   no event is late and both sides count the same events;
//! - runs `benches/duckdb/kpis.py` (DuckDB from PyPI, `SET threads = 2`) on the same file;
//! - compares `event_trends`, `funnel_summary` and `session_features` row by row, and prints
//!   one line per system: wall time, events/s, peak RSS, exact or not, and the ratio.
//!
//! `cargo build --release && cargo run --release -p clickflow-benches --bin versus_duckdb
//! [EVENTS] [WORKERS] [CLICKFLOW RUN FLAGS...]` (`DATABASE_URL` names the server, default
//! the local one). clickflow runs with its defaults, so it also keeps the tables DuckDB is
//! not asked for (the ordered funnel, the recommender); `--no-recommendations` after the
//! worker count leaves the recommender out.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clickflow_benches::write_shop_file;
use clickflow_sources::shop::{Shop, ShopConfig};

const DATABASE: &str = "clickflow_versus";

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

/// What one system did.
struct Measured {
    seconds: f64,
    peak_rss_mb: f64,
}

fn main() -> Fallible<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(Ok(2_000_000), |a| a.parse())?;
    let workers: usize = args.next().map_or(Ok(2), |a| a.parse())?;
    let run_flags: Vec<String> = args.collect();
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let clickflow = sibling("clickflow")?;
    let kpis = Path::new(env!("CARGO_MANIFEST_DIR")).join("duckdb/kpis.py");

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("events.jsonl");
    let generated = Instant::now();
    write_shop_file(&file, Shop::new(ShopConfig::side_by_side(7)), events)?;
    let bytes = std::fs::metadata(&file)?.len();
    eprintln!(
        "{events} events, {:.0} MB ({:.0} bytes a line), generated in {:.1} s",
        bytes as f64 / 1e6,
        bytes as f64 / events as f64,
        generated.elapsed().as_secs_f64()
    );

    psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
    )?;
    psql(&server, &format!("CREATE DATABASE {DATABASE}"))?;
    let url = with_database(&server, DATABASE);
    let ours = measure(
        Command::new(&clickflow)
            .args(["run", "--input"])
            .arg(&file)
            .args([
                "--database-url",
                &url,
                "--allowed-lateness",
                "2m",
                "--no-http",
            ])
            .args(["--workers", &workers.to_string()])
            .args(&run_flags),
    )?;

    let out = dir.path().join("duckdb");
    let output = Command::new("python3")
        .arg(&kpis)
        .arg(&file)
        .arg(&out)
        .args(["--threads", &workers.to_string()])
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "DuckDB failed (pip install duckdb): {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let reported: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let theirs = Measured {
        seconds: reported["seconds"].as_f64().unwrap_or(f64::NAN),
        peak_rss_mb: reported["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
    };

    let mut differences = Vec::new();
    for (table, query) in [
        (
            "trends",
            "SELECT ms(window_start), event_type, count, (revenue * 100)::bigint FROM event_trends",
        ),
        (
            "funnel",
            "SELECT ms(window_start), event_type, unique_users FROM funnel_summary",
        ),
        (
            "sessions",
            "SELECT session_id, ms(session_start), user_id, num_views, num_cart_adds,
                    num_purchases, ms(last_event), num_products, (cart_value * 100)::bigint
             FROM session_features",
        ),
    ] {
        let query = query.replace("ms(", "clickflow_ms_of(");
        let mut pg = lines(&psql_csv(&url, &query)?);
        let mut duck = lines(&std::fs::read_to_string(out.join(format!("{table}.csv")))?);
        pg.sort();
        duck.sort();
        if pg != duck {
            let first = pg.iter().zip(&duck).find(|(a, b)| a != b);
            differences.push(format!(
                "{table}: {} rows in PostgreSQL, {} from DuckDB; first difference {first:?}",
                pg.len(),
                duck.len()
            ));
        }
    }
    let exact = differences.is_empty();
    let flags: String = run_flags.iter().map(|flag| format!(" {flag}")).collect();
    println!("| system | wall | events/s | peak RSS | exact |");
    println!("|---|---|---|---|---|");
    for (name, m) in [
        (
            format!("clickflow run --input{flags}, {workers} workers, into PostgreSQL"),
            &ours,
        ),
        (
            format!("DuckDB {} batch SQL, {workers} threads", duckdb_version()),
            &theirs,
        ),
    ] {
        println!(
            "| {name} | {:.2} s | {:.2}M | {:.0} MB | {} |",
            m.seconds,
            events as f64 / m.seconds / 1e6,
            m.peak_rss_mb,
            if exact { "yes" } else { "no" }
        );
    }
    println!(
        "clickflow's speed is {:.2}x DuckDB's",
        theirs.seconds / ours.seconds
    );
    if !exact {
        return Err(format!("the results differ:\n{}", differences.join("\n")).into());
    }
    Ok(())
}

/// The binary `name` beside this one (built by `cargo build --release`).
fn sibling(name: &str) -> Fallible<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        return Err(format!(
            "{} is missing: run `cargo build --release` first",
            path.display()
        )
        .into());
    }
    Ok(path)
}

/// Runs `command` to its end, sampling its peak resident memory.
fn measure(command: &mut Command) -> Fallible<Measured> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0.0f64;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
        }
        return Err(format!("clickflow failed: {stderr}").into());
    }
    Ok(Measured {
        seconds,
        peak_rss_mb: peak_kb / 1024.0,
    })
}

fn psql(url: &str, sql: &str) -> Fallible<String> {
    let output = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()?;
    if !output.status.success() {
        return Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// The rows of `query` as CSV, with a helper turning times into Unix milliseconds.
fn psql_csv(url: &str, query: &str) -> Fallible<String> {
    psql(
        url,
        "CREATE OR REPLACE FUNCTION clickflow_ms_of(timestamptz) RETURNS bigint
         IMMUTABLE LANGUAGE sql AS $$ SELECT (extract(epoch FROM $1) * 1000)::bigint $$",
    )?;
    psql(url, &format!("COPY ({query}) TO STDOUT (FORMAT csv)"))
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

/// `server` (a `postgres://user@host:port/db` URL) with another database.
fn with_database(server: &str, database: &str) -> String {
    let path_start = server.find("://").map_or(0, |i| i + 3);
    match server[path_start..].find('/') {
        Some(slash) => format!("{}/{database}", &server[..path_start + slash]),
        None => format!("{server}/{database}"),
    }
}

fn duckdb_version() -> String {
    Command::new("python3")
        .args(["-c", "import duckdb; print(duckdb.__version__)"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
