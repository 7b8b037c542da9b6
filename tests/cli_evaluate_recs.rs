//! `clickflow evaluate-recs`: the recommender, trained by the real dataflow on the earlier
//! part of a shop file, predicts the later sessions' next items better than the most popular
//! products do; bad flags are refused with the reason.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn the_recommender_beats_the_most_popular_products_on_later_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    produce_file(&events, 150_000, 21);
    let output = run_ok(&[
        "evaluate-recs",
        "--events",
        events.to_str().unwrap(),
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let predictions = report["predictions"].as_u64().unwrap();
    assert!(
        predictions > 2_000,
        "too few predictions to judge: {report}"
    );
    assert_eq!(report["k"], 10);
    assert_eq!(report["training_lines"], 120_000);
    let (ours, popular) = (&report["recommender"], &report["popular"]);
    for quality in [ours, popular] {
        assert!(quality["hits"].as_u64().unwrap() <= predictions);
        let (hr, mrr) = (
            quality["hit_rate"].as_f64().unwrap(),
            quality["mrr"].as_f64().unwrap(),
        );
        assert!(0.0 < mrr && mrr <= hr && hr <= 1.0, "{report}");
    }
    let ratio = ours["hit_rate"].as_f64().unwrap() / popular["hit_rate"].as_f64().unwrap();
    // Measured on larger files: 1.9×; a recommender that learnt nothing would sit near 1.
    assert!(
        ratio > 1.4,
        "HR@10 only {ratio:.2}× the baseline's: {report}"
    );
    assert!(ours["mrr"].as_f64().unwrap() > popular["mrr"].as_f64().unwrap());
}

#[test]
fn bad_flags_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    produce_file(&events, 2_000, 3);
    let events = events.to_str().unwrap();
    for (flags, reason) in [
        (vec!["--train-fraction", "1.5"], "strictly between 0 and 1"),
        (vec!["--k", "0"], "at least 1"),
        (vec!["--no-recommendations"], "nothing to evaluate"),
    ] {
        let mut args = vec!["evaluate-recs", "--events", events];
        args.extend(flags);
        let output = clickflow().args(&args).output().unwrap();
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    let missing = clickflow()
        .args(["evaluate-recs", "--events", "/no/such/file"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/no/such/file"));
}
