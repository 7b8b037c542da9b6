//! `clickflow demo` as a user stops it: the last line accounts for every event the shop sent,
//! and agrees with what the demo's database holds.
//!
//! The demo makes its database (`clickflow_demo`) afresh on the server it is given, and the
//! browser test runs a demo on the local server at the same time: this one gets a private
//! cluster of its own.

mod common;

use std::time::Duration;

use clickflow_sinks::postgres::local_server::LocalServer;
use clickflow_testkit::{free_port, shared_tempdir};
use common::*;

/// The counts of the demo's stop line: sent, counted, dead-lettered, left unread.
fn stop_counts(log: &str) -> [u64; 4] {
    let line = log
        .lines()
        .find(|line| line.starts_with("demo stopped:"))
        .unwrap_or_else(|| panic!("no stop line in the demo's log:\n{log}"));
    // The number right after the last `marker` of the line.
    let number_after = |marker: &str| -> u64 {
        let at = line
            .rfind(marker)
            .unwrap_or_else(|| panic!("{marker:?} not in {line:?}"));
        line[at + marker.len()..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("no number after {marker:?} in {line:?}"))
    };
    [
        number_after("the shop sent "),
        number_after("the pipeline counted "),
        number_after(" and dead-lettered "),
        number_after("; "),
    ]
}

#[test]
fn the_stop_line_accounts_for_every_event_the_shop_sent() {
    let dir = shared_tempdir();
    let port = free_port();
    let server = LocalServer::new(&dir.path().join("data"), port)
        .expect("PostgreSQL server binaries under /usr/lib/postgresql");
    server.init(None).unwrap();
    server.start(&[]).unwrap();
    let _stop = server.stop_on_drop();
    let server_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let demo_url = format!("postgres://postgres@127.0.0.1:{port}/clickflow_demo");

    let (_, model) = small_model(dir.path(), 3);
    let log_path = dir.path().join("demo.log");
    let mut demo = spawn_logging_to(
        &[
            "demo",
            "--rate",
            "3000",
            "--retrain-every",
            "0s",
            "--malformed-fraction",
            "0.01",
            "--late-fraction",
            "0.02",
            "--model",
            model.to_str().unwrap(),
            "--database-url",
            &server_url,
            "--profile-operators",
        ],
        std::fs::File::create(&log_path).unwrap(),
    );
    // The demo creates its database as it starts: until then there is nothing to read.
    let committed = || {
        try_read_tables(&demo_url)
            .map(|tables| tables.trends.values().map(|row| row.count).sum::<i64>())
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(120),
        "the demo has committed 10,000 events",
        || committed() >= 10_000,
    );
    terminate(&mut demo);

    let log = std::fs::read_to_string(&log_path).unwrap();
    let [sent, counted, dead_lettered, unread] = stop_counts(&log);
    let tables = read_tables(&demo_url);
    let stored_counted: i64 = tables.trends.values().map(|row| row.count).sum();
    assert_eq!(
        counted as i64, stored_counted,
        "what the line says was counted is what event_trends holds:\n{log}"
    );
    assert_eq!(
        dead_lettered as usize,
        tables.dead_letters.len(),
        "what the line says was dead-lettered is what dead_letters holds:\n{log}"
    );
    assert!(dead_lettered > 0, "1% of the shop's payloads are malformed");
    // Nothing counted twice: the pipeline never accounts for more than the shop sent, so the
    // unread count is a true difference, not one clamped at zero.
    assert!(
        counted + dead_lettered <= sent,
        "more accounted for than sent:\n{log}"
    );
    assert_eq!(unread, sent - counted - dead_lettered, "{log}");
    // What is left unread is what the shop sent while the last epoch was read, committed
    // and the pipeline stopped: 22 of 10,222 when this test was written. One of the topic's
    // 8 partitions left unread would be an eighth of what was sent.
    assert!(
        unread * 20 < sent,
        "{unread} of {sent} left unread, over 5%:\n{log}"
    );
    // `--profile-operators`: on stopping, each operator's busy time, the stages' among them.
    assert!(
        log.contains("operator busy time, all workers")
            && log.contains("Sessions: per session")
            && log.contains("Funnel (ordered): per window and step"),
        "no operator profile:\n{log}"
    );
}
