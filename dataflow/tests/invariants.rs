//! Conservation and determinism over adversarial inputs, as properties.
//!
//! Inputs are generated to hit what breaks session and window logic: a few session ids
//! reused again and again, steps of exactly, just under and just over the session gap,
//! events late within and beyond the allowed lateness, and malformed lines (not JSON, NUL
//! and control characters in ids, oversized ids, unknown types, absurd times). Every input
//! runs on 1, 2 and 4 workers with 1 ms and 400 ms epochs, and must give:
//! - the oracle's tables (which implement the session rule on their own), `churn_scores`
//!   included: every session's features, its user's history among them, as the oracle
//!   computes them, and the model's probability of them;
//! - every record accounted for once: Σ `event_trends.count` + dead letters = records;
//! - the session counters account for every counted event;
//! - the same tables in all six runs.
//!
//! `CLICKFLOW_PROPTEST_CASES` sets the number of inputs (default 10, a few seconds); e.g.
//! `CLICKFLOW_PROPTEST_CASES=500 cargo test -p clickflow-dataflow --test invariants` for a
//! longer search.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clickflow_dataflow::window::WindowSize;
use clickflow_dataflow::{DataflowConfig, EpochConfig, Tables};
use clickflow_model::{ChurnModel, TrainParams, FEATURE_COUNT};
use clickflow_sources::file::FileSplits;
use clickflow_testkit::model_of;
use common::*;
use proptest::prelude::*;

const T0: i64 = 1_751_952_000_000;
const GAP_MS: i64 = 60_000;

fn dataflow() -> DataflowConfig {
    DataflowConfig {
        window: WindowSize::from_millis(60_000),
        allowed_lateness_ms: 30_000,
        session_gap_ms: GAP_MS,
        ..DataflowConfig::default()
    }
}

/// How the clock moves before an event, or how far back a late event lies.
#[derive(Clone, Debug)]
enum Step {
    Forward(i64),
    Back(i64),
}

#[derive(Clone, Debug)]
enum Line {
    Event {
        session: u8,
        user: u8,
        kind: u8,
        step: Step,
    },
    Malformed(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0i64..10_000).prop_map(Step::Forward),
        1 => Just(Step::Forward(GAP_MS - 1_000)),
        1 => Just(Step::Forward(GAP_MS)),
        1 => Just(Step::Forward(GAP_MS + 1)),
        1 => Just(Step::Forward(GAP_MS + 1_000)),
        1 => Just(Step::Forward(3 * GAP_MS)),
        1 => (1_000i64..25_000).prop_map(Step::Back),
        1 => (40_000i64..200_000).prop_map(Step::Back),
    ]
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        9 => (0u8..6, 0u8..4, 0u8..3, step()).prop_map(|(session, user, kind, step)| Line::Event {
            session,
            user,
            kind,
            step
        }),
        1 => (0u8..7).prop_map(Line::Malformed),
    ]
}

/// The input as JSON lines.
fn render(lines: &[Line]) -> String {
    let mut clock = T0;
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let text = match line {
            Line::Event {
                session,
                user,
                kind,
                step,
            } => {
                let ts = match step {
                    Step::Forward(by) => {
                        clock += by;
                        clock
                    }
                    Step::Back(by) => clock - by,
                };
                let kind = ["click", "add_to_cart", "purchase"][*kind as usize];
                let price = if kind == "purchase" {
                    ",\"price\":12.5"
                } else {
                    ""
                };
                format!(
                    r#"{{"event_id":"e{i}","user_id":"u{user}","session_id":"s{session}","event_type":"{kind}","ts":{ts}{price}}}"#
                )
            }
            Line::Malformed(kind) => match kind {
                0 => "not json".to_string(),
                1 => format!(
                    r#"{{"event_id":"e{i}","user_id":"u\u0000x","session_id":"s1","event_type":"click","ts":{clock}}}"#
                ),
                2 => format!(
                    r#"{{"event_id":"e{i}","user_id":"u1","session_id":"s\u0007","event_type":"click","ts":{clock}}}"#
                ),
                3 => format!(
                    r#"{{"event_id":"e{i}","user_id":"{}","session_id":"s1","event_type":"click","ts":{clock}}}"#,
                    "u".repeat(300)
                ),
                4 => format!(
                    r#"{{"event_id":"e{i}","user_id":"u1","session_id":"s1","event_type":"hover","ts":{clock}}}"#
                ),
                5 => format!(
                    r#"{{"event_id":"e{i}","user_id":"u1","session_id":"s1","event_type":"click","ts":-5}}"#
                ),
                _ => "{\"event_id\":\"e\u{0}\",".to_string(),
            },
        };
        out.push_str(&text);
        out.push('\n');
    }
    out
}

fn epochs(ms: u64) -> EpochConfig {
    EpochConfig {
        epoch: Duration::from_millis(ms),
        catch_up_epoch: Duration::from_millis(ms),
        poll_batch: 7,
        ..EpochConfig::default()
    }
}

/// What must be equal across runs: every row, and which records were dead-lettered why.
type Comparable = (Tables, BTreeSet<(i32, i64, String)>);

fn comparable(tables: &Tables) -> Comparable {
    let letters = tables
        .dead_letters
        .iter()
        .map(|d| {
            (
                d.partition.partition,
                d.offset,
                d.rejection.kind.as_str().to_string(),
            )
        })
        .collect();
    let rows = Tables {
        dead_letters: Vec::new(),
        ..tables.clone()
    };
    (rows, letters)
}

/// A small model whose probability moves with every feature, the user's history included.
fn model() -> Arc<ChurnModel> {
    static MODEL: OnceLock<Arc<ChurnModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let params = TrainParams {
                trees: 5,
                min_samples_leaf: 2.0,
                ..TrainParams::default()
            };
            Arc::new(model_of(2_000, params, |i| {
                let mut x = [0.0; FEATURE_COUNT];
                for (j, v) in x.iter_mut().enumerate() {
                    *v = ((i * 7 + j as u64 * 13) % (3 + j as u64)) as f64;
                }
                (x, (x[0] + x[1] + x[3] + x[6] + x[7]) as u64 % 3 != 0)
            }))
        })
        .clone()
}

fn cases() -> u32 {
    std::env::var("CLICKFLOW_PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_record_is_counted_or_dead_lettered_once_and_runs_agree(
        lines in proptest::collection::vec(line(), 20..300),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adversarial.jsonl");
        std::fs::write(&path, render(&lines)).unwrap();
        let splits = FileSplits::plan(&path, 3).unwrap();
        let mut oracle = oracle_for(&splits, &dataflow());
        oracle.score_with(&model(), &dataflow());
        let mut first: Option<Comparable> = None;
        for workers in [1, 2, 4] {
            for epoch_ms in [1, 400] {
                let context = format!("{workers} workers, {epoch_ms} ms epochs");
                let tables =
                    run_file_scored(&splits, workers, dataflow(), epochs(epoch_ms), Some(model()));
                let differences = oracle.differences(&tables);
                prop_assert!(differences.is_empty(), "{}: {}", context, differences.join("\n"));
                let counted: i64 = tables.trends.values().map(|r| r.count).sum();
                prop_assert_eq!(
                    counted as usize + tables.dead_letters.len(),
                    lines.len(),
                    "{}: counted + dead letters = records", context
                );
                let in_sessions: i64 = tables
                    .sessions
                    .values()
                    .map(|s| s.num_views + s.num_cart_adds + s.num_purchases)
                    .sum();
                prop_assert_eq!(in_sessions, counted, "{}: sessions hold every counted event", context);
                prop_assert!(tables.sessions.values().all(|s| s.closed), "{}: a finished input closes every session", context);
                let seen = comparable(&tables);
                match &first {
                    None => first = Some(seen),
                    Some(first) => prop_assert!(first == &seen, "{}: tables differ from the first run", context),
                }
            }
        }
    }
}

/// Regression: with a 60 s gap, `s1` at 0 s, 70 s, 71 s and 190 s came out of a file run as
/// one session (the file was read in one epoch), and of a live stream as a session whose row
/// the 190-s event replaced. It is three sessions, whatever the epochs.
#[test]
fn one_id_split_by_gaps_is_several_sessions_whatever_the_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gaps.jsonl");
    let line = |i: usize, at_s: i64| {
        format!(
            r#"{{"event_id":"e{i}","user_id":"u1","session_id":"s1","event_type":"click","ts":{}}}"#,
            T0 + at_s * 1000
        )
    };
    let text: Vec<String> = [0, 70, 71, 190]
        .iter()
        .enumerate()
        .map(|(i, &s)| line(i, s))
        .collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    let splits = FileSplits::plan(&path, 1).unwrap();
    for epoch_ms in [1, 400] {
        let tables = run_file(&splits, 2, dataflow(), epochs(epoch_ms));
        let sessions: Vec<(i64, i64, i64)> = tables
            .sessions
            .values()
            .map(|s| {
                (
                    (s.session_start - T0) / 1000,
                    (s.last_event - T0) / 1000,
                    s.num_views,
                )
            })
            .collect();
        assert_eq!(
            sessions,
            vec![(0, 0, 1), (70, 71, 2), (190, 190, 1)],
            "{epoch_ms} ms epochs"
        );
    }
}

/// An event for a session whose close is final is dead-lettered as late, naming its
/// session, and never merged into or replacing the final row.
#[test]
fn an_event_after_its_session_is_final_is_late_and_names_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.jsonl");
    let event = |i: usize, session: &str, at_s: i64| {
        format!(
            r#"{{"event_id":"e{i}","user_id":"u1","session_id":"{session}","event_type":"click","ts":{}}}"#,
            T0 + at_s * 1000
        )
    };
    // s1 ends at 10 s; s2 moves the clock to 400 s; then s1 at 50 s (within the gap of its
    // last event, but in a window closed long ago).
    let text = [event(0, "s1", 10), event(1, "s2", 400), event(2, "s1", 50)].join("\n") + "\n";
    std::fs::write(&path, text).unwrap();
    let splits = FileSplits::plan(&path, 1).unwrap();
    let tables = run_file(&splits, 1, dataflow(), epochs(1));
    let s1: Vec<_> = tables
        .sessions
        .values()
        .filter(|s| s.session_id == "s1")
        .collect();
    assert_eq!(s1.len(), 1);
    assert_eq!((s1[0].num_views, s1[0].last_event), (1, T0 + 10_000));
    assert_eq!(tables.dead_letters.len(), 1);
    let reason = tables.dead_letters[0].rejection.reason();
    assert!(
        reason.starts_with("late:") && reason.contains("session \"s1\""),
        "{reason}"
    );
}
