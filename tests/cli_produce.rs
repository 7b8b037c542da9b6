//! `clickflow produce`: deterministic files, and a real broker (tansu) that gives back
//! exactly what was produced.

mod common;

use std::collections::BTreeMap;

use clickflow_testkit::Tansu;
use common::*;

#[test]
fn the_same_seed_writes_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    produce_file(&a, 5000, 3);
    produce_file(&b, 5000, 3);
    produce_file(&c, 5000, 4);
    let (a, b, c) = (
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        std::fs::read(c).unwrap(),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.iter().filter(|&&byte| byte == b'\n').count(), 5000);
}

#[test]
fn produce_into_tansu_reads_back_exactly_what_the_shop_generated() {
    let tansu = Tansu::start();
    tansu.create_topic("user-events", 4);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expected.jsonl");
    produce_file(&file, 20_000, 8);
    produce(
        &["--brokers", &tansu.bootstrap, "--topic", "user-events"],
        20_000,
        8,
    );
    let by_partition: Vec<BTreeMap<i64, String>> =
        read_topic(&tansu.bootstrap, "user-events", 4, 20_000)
            .into_iter()
            .map(|messages| {
                let payload = |m: Result<_, clickflow_sources::DeadLetter>| match m {
                    Ok(event) => {
                        String::from_utf8(clickflow_sources::encode::encode(&event)).unwrap()
                    }
                    Err(letter) => letter.payload,
                };
                messages
                    .into_iter()
                    .map(|(offset, m)| (offset, payload(m)))
                    .collect()
            })
            .collect();
    for (partition, messages) in by_partition.iter().enumerate() {
        let offsets: Vec<i64> = messages.keys().copied().collect();
        assert_eq!(
            offsets,
            (0..messages.len() as i64).collect::<Vec<_>>(),
            "partition {partition}: contiguous offsets"
        );
    }
    let mut expected: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| l.chars().take(4096).collect())
        .collect();
    let mut received: Vec<String> = by_partition
        .into_iter()
        .flat_map(|m| m.into_values())
        .collect();
    expected.sort();
    received.sort();
    assert!(
        expected == received,
        "the multiset read back equals what was produced"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let output = clickflow()
        .env("CLICKFLOW_LOG", "info")
        .args(["produce", "--count", "10", "--rate", "0", "--output", "-"])
        .args(["--log-format", "json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let logs: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["sent"] == 10),
        "{logs:?}"
    );
}
