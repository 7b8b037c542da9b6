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
//! [EVENTS] [WORKERS] [--rounds N] [CLICKFLOW RUN FLAGS...]` (`DATABASE_URL` names the
//! server, default the local one). clickflow runs with its defaults, so it also keeps the
//! tables DuckDB is not asked for (the ordered funnel, the recommender);
//! `--no-recommendations` after the worker count leaves the recommender out.
//!
//! **Rounds.** On a 2-core virtual machine both systems' times drift by up to 20% from one
//! minute to the next, more than most changes being measured, so a single pair of runs can
//! put the ratio anywhere in that band. `--rounds N` (default 1) runs the pair N times on
//! the same file, alternating which system goes first so that neither always inherits a
//! warmer page cache or a quieter machine, checks the tables of every round, and prints
//! each round's ratio, then the median of the rounds' ratios: the figure to hold against
//! a bar, with its range beside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// One round: both systems on the same file, and whether their tables were equal.
struct Round {
    ours: Measured,
    theirs: Measured,
    differences: Vec<String>,
}

impl Round {
    /// clickflow's speed against DuckDB's: above 1 when clickflow is faster.
    fn ratio(&self) -> f64 {
        self.theirs.seconds / self.ours.seconds
    }
}

/// Where both systems run, and on what.
struct Setup {
    clickflow: PathBuf,
    kpis: PathBuf,
    file: PathBuf,
    out: PathBuf,
    server: String,
    workers: usize,
    run_flags: Vec<String>,
}

fn main() -> Fallible<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(Ok(2_000_000), |a| a.parse())?;
    let workers: usize = args.next().map_or(Ok(2), |a| a.parse())?;
    let (rounds, run_flags) = take_rounds(args.collect())?;
    let dir = tempfile::tempdir()?;
    let setup = Setup {
        clickflow: sibling("clickflow")?,
        kpis: Path::new(env!("CARGO_MANIFEST_DIR")).join("duckdb/kpis.py"),
        file: dir.path().join("events.jsonl"),
        out: dir.path().join("duckdb"),
        server: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        workers,
        run_flags,
    };

    let generated = Instant::now();
    write_shop_file(&setup.file, Shop::new(ShopConfig::side_by_side(7)), events)?;
    let bytes = std::fs::metadata(&setup.file)?.len();
    eprintln!(
        "{events} events, {:.0} MB ({:.0} bytes a line), generated in {:.1} s",
        bytes as f64 / 1e6,
        bytes as f64 / events as f64,
        generated.elapsed().as_secs_f64()
    );

    let mut done = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let ours_first = round % 2 == 0;
        let (ours, theirs) = if ours_first {
            let ours = run_clickflow(&setup)?;
            (ours, run_duckdb(&setup)?)
        } else {
            let theirs = run_duckdb(&setup)?;
            (run_clickflow(&setup)?, theirs)
        };
        let differences = compare(&setup)?;
        let round = Round {
            ours,
            theirs,
            differences,
        };
        if rounds > 1 {
            eprintln!(
                "round {} of {rounds} ({} first): clickflow {:.2} s, DuckDB {:.2} s, {:.2}x{}",
                done.len() + 1,
                if ours_first { "clickflow" } else { "DuckDB" },
                round.ours.seconds,
                round.theirs.seconds,
                round.ratio(),
                if round.differences.is_empty() {
                    ""
                } else {
                    ", tables differ"
                }
            );
        }
        done.push(round);
    }
    report(&setup, events, &done)
}

/// Takes `--rounds N` out of the flags meant for `clickflow run`.
fn take_rounds(mut flags: Vec<String>) -> Fallible<(usize, Vec<String>)> {
    let Some(at) = flags.iter().position(|flag| flag == "--rounds") else {
        return Ok((1, flags));
    };
    let rounds: usize = flags
        .get(at + 1)
        .ok_or("--rounds needs a number")?
        .parse()
        .map_err(|_| "--rounds needs a number")?;
    if rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    flags.drain(at..at + 2);
    Ok((rounds, flags))
}

/// `clickflow run --input` into a fresh database.
fn run_clickflow(setup: &Setup) -> Fallible<Measured> {
    psql(
        &setup.server,
        &format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
    )?;
    psql(&setup.server, &format!("CREATE DATABASE {DATABASE}"))?;
    let url = with_database(&setup.server, DATABASE);
    measure(
        Command::new(&setup.clickflow)
            .args(["run", "--input"])
            .arg(&setup.file)
            .args([
                "--database-url",
                &url,
                "--allowed-lateness",
                "2m",
                "--no-http",
            ])
            .args(["--workers", &setup.workers.to_string()])
            .args(&setup.run_flags),
    )
}

/// `kpis.py` on the same file: DuckDB's own timing, from reading the file to its tables.
fn run_duckdb(setup: &Setup) -> Fallible<Measured> {
    let output = Command::new("python3")
        .arg(&setup.kpis)
        .arg(&setup.file)
        .arg(&setup.out)
        .args(["--threads", &setup.workers.to_string()])
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "DuckDB failed (pip install duckdb): {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let reported: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(Measured {
        seconds: reported["seconds"].as_f64().unwrap_or(f64::NAN),
        peak_rss_mb: reported["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
    })
}

/// The three tables of the last clickflow run against DuckDB's, row by row: one line per
/// table that differs.
fn compare(setup: &Setup) -> Fallible<Vec<String>> {
    let url = with_database(&setup.server, DATABASE);
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
        let mut duck = lines(&std::fs::read_to_string(
            setup.out.join(format!("{table}.csv")),
        )?);
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
    Ok(differences)
}

/// Prints the table of both systems over every round (a range when there are several)
/// and the median ratio; fails if any round's tables differed.
fn report(setup: &Setup, events: usize, rounds: &[Round]) -> Fallible<()> {
    let exact = rounds.iter().all(|round| round.differences.is_empty());
    let flags: String = setup
        .run_flags
        .iter()
        .map(|flag| format!(" {flag}"))
        .collect();
    let workers = setup.workers;
    let ours: Vec<&Measured> = rounds.iter().map(|round| &round.ours).collect();
    let theirs: Vec<&Measured> = rounds.iter().map(|round| &round.theirs).collect();
    println!("| system | wall | events/s | peak RSS | exact |");
    println!("|---|---|---|---|---|");
    for (name, measured) in [
        (
            format!("clickflow run --input{flags}, {workers} workers, into PostgreSQL"),
            &ours,
        ),
        (
            format!("DuckDB {} batch SQL, {workers} threads", duckdb_version()),
            &theirs,
        ),
    ] {
        let seconds = Spread::of(measured.iter().map(|m| m.seconds));
        let rate = Spread::of(measured.iter().map(|m| events as f64 / m.seconds / 1e6));
        let rss = Spread::of(measured.iter().map(|m| m.peak_rss_mb));
        println!(
            "| {name} | {} s | {}M | {} MB | {} |",
            seconds.shown(2),
            rate.shown(2),
            rss.shown(0),
            if exact { "yes" } else { "no" }
        );
    }
    let ratios = Spread::of(rounds.iter().map(Round::ratio));
    if rounds.len() == 1 {
        println!("clickflow's speed is {:.2}x DuckDB's", ratios.median);
    } else {
        println!(
            "clickflow's speed is {:.2}x DuckDB's (the median of {} rounds' ratios; {:.2}-{:.2}x)",
            ratios.median,
            rounds.len(),
            ratios.min,
            ratios.max
        );
    }
    if !exact {
        let differences: Vec<String> = rounds
            .iter()
            .enumerate()
            .flat_map(|(i, round)| {
                round
                    .differences
                    .iter()
                    .map(move |difference| format!("round {}: {difference}", i + 1))
            })
            .collect();
        return Err(format!("the results differ:\n{}", differences.join("\n")).into());
    }
    Ok(())
}

/// The least, the median and the greatest of some measurements.
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Spread {
        let mut values: Vec<f64> = values.collect();
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        };
        Spread {
            min: values[0],
            median,
            max: values[values.len() - 1],
        }
    }

    /// `min-max` with `decimals` decimals, or one value when both show the same.
    fn shown(&self, decimals: usize) -> String {
        let (min, max) = (
            format!("{:.*}", decimals, self.min),
            format!("{:.*}", decimals, self.max),
        );
        if min == max {
            min
        } else {
            format!("{min}-{max}")
        }
    }
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

/// Runs `command` to its end: its wall time from spawn to exit as `wait` returns it (a
/// loop that polled for the exit every 10 ms added 5 ms on average to clickflow's time),
/// and its peak resident memory, sampled every 5 ms by another thread.
fn measure(command: &mut Command) -> Fallible<Measured> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let running = running.clone();
        let status_path = format!("/proc/{}/status", child.id());
        std::thread::spawn(move || {
            let mut peak_kb = 0.0f64;
            while running.load(Ordering::Relaxed) {
                if let Some(kb) = high_water_kb(&status_path) {
                    peak_kb = peak_kb.max(kb);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak_kb
        })
    };
    // Read while it runs, so that a chatty log never fills the pipe and stalls it.
    let mut pipe = child.stderr.take().ok_or("stderr is piped")?;
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        text
    });
    let status = child.wait()?;
    let seconds = started.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    let peak_kb = sampler.join().map_err(|_| "the memory sampler panicked")?;
    let stderr = stderr.join().map_err(|_| "the stderr reader panicked")?;
    if !status.success() {
        return Err(format!("clickflow failed: {stderr}").into());
    }
    Ok(Measured {
        seconds,
        peak_rss_mb: peak_kb / 1024.0,
    })
}

/// `VmHWM` (peak resident memory, kB) from a process's `/proc/PID/status`, while it lives.
fn high_water_kb(status_path: &str) -> Option<f64> {
    std::fs::read_to_string(status_path)
        .ok()?
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(flags: &[&str]) -> Vec<String> {
        flags.iter().map(|flag| flag.to_string()).collect()
    }

    #[test]
    fn rounds_are_taken_out_of_the_run_flags() {
        let (rounds, flags) = take_rounds(strings(&[
            "--no-recommendations",
            "--rounds",
            "5",
            "--epoch-ms",
            "9",
        ]))
        .unwrap();
        assert_eq!(rounds, 5);
        assert_eq!(flags, strings(&["--no-recommendations", "--epoch-ms", "9"]));
        let (rounds, flags) = take_rounds(strings(&["--no-recommendations"])).unwrap();
        assert_eq!((rounds, flags), (1, strings(&["--no-recommendations"])));
        assert!(take_rounds(strings(&["--rounds"])).is_err());
        assert!(take_rounds(strings(&["--rounds", "0"])).is_err());
        assert!(take_rounds(strings(&["--rounds", "many"])).is_err());
    }

    #[test]
    fn a_spread_has_the_middle_value_or_the_mean_of_the_middle_two() {
        let odd = Spread::of([1.3, 0.9, 1.1].into_iter());
        assert_eq!((odd.min, odd.median, odd.max), (0.9, 1.1, 1.3));
        assert_eq!(odd.shown(1), "0.9-1.3");
        let even = Spread::of([2.0, 1.0, 4.0, 3.0].into_iter());
        assert_eq!((even.min, even.median, even.max), (1.0, 2.5, 4.0));
        assert_eq!(Spread::of([1.234].into_iter()).shown(2), "1.23");
        assert_eq!(Spread::of([105.9, 106.2].into_iter()).shown(0), "106");
    }
}
