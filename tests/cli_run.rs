//! `clickflow run` as a user meets it: the summary of what was dead-lettered, and one
//! pipeline per `--schema`.

mod common;

use clickflow_testkit::TestDatabase;
use common::*;

fn run_file(path: &std::path::Path, db: &TestDatabase, schema: &str) -> std::process::Output {
    clickflow()
        .args(["run", "--input", path.to_str().unwrap()])
        .args(["--database-url", &db.url, "--schema", schema])
        .output()
        .expect("clickflow runs")
}

/// Regression: a second file into the same database was dead-lettered whole as `late` while
/// the run reported `0 dead letters (0 late)`.
#[test]
fn the_summary_counts_stored_dead_letters_and_another_input_needs_its_own_schema() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    produce_file(&a, 20_000, 41);
    produce_file(&b, 20_000, 42);
    let db = TestDatabase::create("cli_schema");

    let first = run_file(&a, &db, "public");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{stderr}");
    let stored = db.query("SELECT count(*) FROM public.dead_letters");
    let by_kind = db.query(
        "SELECT string_agg(kind || ' ' || n, ', ' ORDER BY kind) FROM
             (SELECT split_part(reason, ':', 1) AS kind, count(*) AS n
              FROM public.dead_letters GROUP BY 1) k",
    );
    assert_ne!(
        stored, "0",
        "the shop file holds late and malformed records"
    );
    assert!(
        stderr.contains(&format!("dead letters written: {stored} ({by_kind})")),
        "the summary says what PostgreSQL stored ({stored}: {by_kind}):\n{stderr}"
    );

    let refused = run_file(&b, &db, "public");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("a.jsonl") && stderr.contains("b.jsonl") && stderr.contains("--schema"),
        "{stderr}"
    );

    let beside = run_file(&b, &db, "shop_b");
    assert!(
        beside.status.success(),
        "{}",
        String::from_utf8_lossy(&beside.stderr)
    );
    let counted = |schema: &str| {
        db.query(&format!("SELECT sum(count) FROM {schema}.event_trends"))
            .parse::<i64>()
            .unwrap()
    };
    let dead = |schema: &str| {
        db.query(&format!("SELECT count(*) FROM {schema}.dead_letters"))
            .parse::<i64>()
            .unwrap()
    };
    // Every record of each file is counted or dead-lettered in its own schema.
    for (schema, path) in [("public", &a), ("shop_b", &b)] {
        let records = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as i64;
        assert_eq!(counted(schema) + dead(schema), records, "{schema}");
    }
}

/// `--no-http` turns the server off even where the environment sets its address (the test
/// harness sets CLICKFLOW_HTTP for every command, as a deployment may); a short token and a
/// token file are handled at start.
#[test]
fn no_http_wins_over_the_environment_and_short_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    produce_file(&input, 2_000, 5);
    let db = TestDatabase::create("cli_no_http");
    let run = |extra: &[&str]| {
        clickflow()
            .args(["run", "--input", input.to_str().unwrap()])
            .args(["--database-url", &db.url])
            .args(extra)
            .output()
            .expect("clickflow runs")
    };
    let output = run(&["--no-http"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("dashboard:"));

    let output = run(&["--api-token", "short"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "0123456789abcdef0123\n").unwrap();
    let output = run(&["--api-token-file", token_file.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The database URL can come from a file (a password in a flag shows in `ps`), and the file
/// wins over `--database-url`.
#[test]
fn the_database_url_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    produce_file(&input, 2_000, 6);
    let db = TestDatabase::create("cli_url_file");
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, format!("{}\n", db.url)).unwrap();
    let output = clickflow()
        .args(["run", "--input", input.to_str().unwrap(), "--no-http"])
        .args(["--database-url", "postgres://nobody@127.0.0.1:1/nowhere"])
        .args(["--database-url-file", url_file.to_str().unwrap()])
        .output()
        .expect("clickflow runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_ne!(db.query("SELECT count(*) FROM event_trends"), "0");
}
