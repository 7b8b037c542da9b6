//! Golden test: a small hand-written event file and the exact rows expected from it.

mod common;

use std::path::Path;

use clickflow_dataflow::{DataflowConfig, Tables};
use clickflow_sources::encode::format_rfc3339_millis;
use clickflow_sources::file::FileSplits;
use common::{run_file, stress_epochs};

fn time(ms: i64) -> String {
    format_rfc3339_millis(ms, &mut [0; 24]).to_string()
}

/// Renders the tables in the format of `golden/expected.txt`.
fn render(tables: &Tables, file: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    for row in tables.trends.values() {
        lines.push(format!(
            "event_trends {} {} count={} revenue_cents={}",
            time(row.window.start),
            row.event_type.as_str(),
            row.count,
            row.revenue_cents
        ));
    }
    for row in tables.funnel.values() {
        lines.push(format!(
            "funnel_summary {} {} unique_users={}",
            time(row.window.start),
            row.event_type.as_str(),
            row.unique_users
        ));
    }
    for row in tables.sessions.values() {
        lines.push(format!(
            "session_features {} {} views={} cart_adds={} purchases={} start={} last={} duration_s={} closed={}",
            row.session_id,
            row.user_id,
            row.num_views,
            row.num_cart_adds,
            row.num_purchases,
            time(row.session_start),
            time(row.last_event),
            row.duration_s(),
            row.closed
        ));
    }
    let mut letters: Vec<_> = tables.dead_letters.iter().collect();
    letters.sort_by_key(|d| d.offset);
    for letter in letters {
        let line = 1 + file[..letter.offset as usize]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        lines.push(format!(
            "dead_letters line={line} {}",
            letter.rejection.kind.as_str()
        ));
    }
    lines
}

#[test]
fn hand_written_events_give_the_hand_computed_rows() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let events = dir.join("events.jsonl");
    let expected: Vec<String> = std::fs::read_to_string(dir.join("expected.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let file = std::fs::read(&events).unwrap();
    let plan = FileSplits::plan(&events, 1).unwrap();
    for workers in [1, 3] {
        let tables = run_file(&plan, workers, DataflowConfig::default(), stress_epochs());
        assert_eq!(render(&tables, &file), expected, "{workers} workers");
    }
}
