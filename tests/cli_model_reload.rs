//! Replacing the model of a running `clickflow run`: `SIGHUP` reads the model file again,
//! `POST /api/v1/models` loads one over HTTP (only with a token), every change is recorded
//! in `churn_models`, and the scores written afterwards carry the new version.

mod common;

use std::time::Duration;

use clickflow_sources::kafka::EventProducer;
use clickflow_sources::shop::{Shop, ShopConfig};
use clickflow_testkit::{free_port, Tansu, TestDatabase};
use common::*;

const TOKEN: &str = "a-token-for-the-reload-test";

/// Sends `count` shop records from `skip` on.
fn produce(brokers: &str, skip: usize, count: usize) {
    let shop = Shop::new(ShopConfig {
        seed: 5,
        users: 2_000,
        events_per_second: 200.0,
        ..ShopConfig::default()
    });
    let mut producer = EventProducer::new(brokers, "user-events").unwrap();
    let mut payload = Vec::new();
    for record in shop.bounded(skip + count).skip(skip) {
        payload.clear();
        record.write_payload(&mut payload);
        producer.send(record.key().as_bytes(), &payload).unwrap();
        producer.poll();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn live_version(port: u16) -> Option<String> {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http(
        port,
        "GET",
        "/api/v1/model",
        &[("authorization", &auth)],
        b"",
    )?;
    let body: serde_json::Value = serde_json::from_str(&body).ok()?;
    (status == 200).then(|| body["model_version"].as_str().map(String::from))?
}

#[test]
fn a_running_pipeline_takes_a_model_on_sighup_and_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (first, first_path) = small_model(dir.path(), 1);
    let (second, second_path) = small_model(dir.path(), 2);
    let (third, _) = small_model(dir.path(), 3);
    let model_path = dir.path().join("live.model");
    std::fs::copy(&first_path, &model_path).unwrap();

    let tansu = Tansu::start();
    tansu.create_topic("user-events", 2);
    produce(&tansu.bootstrap, 0, 2_000);
    let db = TestDatabase::create("model_reload");
    let port = free_port();
    let mut run = spawn(&[
        "run",
        "--brokers",
        &tansu.bootstrap,
        "--topic",
        "user-events",
        "--model",
        model_path.to_str().unwrap(),
        "--database-url",
        &db.url,
        "--http",
        &format!("127.0.0.1:{port}"),
        "--api-token",
        TOKEN,
    ]);
    wait_until(
        Duration::from_secs(60),
        "the pipeline serves its model",
        || live_version(port).as_deref() == Some(first.version()),
    );
    wait_until(Duration::from_secs(60), "sessions are scored", || {
        db.try_query("SELECT count(*) FROM churn_scores")
            .is_ok_and(|n| n != "0")
    });

    // SIGHUP: the file is read again.
    std::fs::copy(&second_path, &model_path).unwrap();
    let hangup = std::process::Command::new("kill")
        .args(["-HUP", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(hangup.success());
    wait_until(Duration::from_secs(30), "SIGHUP loads the new file", || {
        live_version(port).as_deref() == Some(second.version())
    });

    // Over HTTP, with the token.
    let auth = format!("Bearer {TOKEN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/octet-stream"),
    ];
    let (status, body) = http(port, "POST", "/api/v1/models", &headers, &third.to_bytes()).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(live_version(port).as_deref(), Some(third.version()));

    // New events are scored by the model loaded last.
    produce(&tansu.bootstrap, 2_000, 2_000);
    let version = third.version().to_string();
    wait_until(
        Duration::from_secs(60),
        "scores carry the new version",
        || {
            db.try_query(&format!(
                "SELECT count(*) FROM churn_scores WHERE model_version = '{version}'"
            ))
            .is_ok_and(|n| n != "0")
        },
    );
    terminate(&mut run);

    let recorded = db.query(
        "SELECT string_agg(model_version || ' ' || source || ' ' || (promoted_at IS NOT NULL), ','
                           ORDER BY recorded_at)
         FROM churn_models",
    );
    assert_eq!(
        recorded,
        format!(
            "{} file true,{} reload true,{} http true",
            first.version(),
            second.version(),
            third.version()
        )
    );
}
