//! One configuration: a flag wins over its `CLICKFLOW_*` variable, which wins over the
//! `--config` file (a command's own table over the file's top level), which wins over the
//! default; `config check` says where each value came from and prints no secret.

mod common;

use std::collections::HashMap;

use common::*;

/// `clickflow --config FILE config check ARGS` with `env`: each setting's (value, source).
fn check(
    file: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> Result<HashMap<String, (String, String)>, String> {
    let output = clickflow()
        .env_remove("CLICKFLOW_HTTP")
        .envs(env.iter().copied())
        .args(["--config", file.to_str().unwrap(), "config", "check"])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(stdout
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, rest) = line.split_once(" = ")?;
            let (value, source) = rest.split_once("   # ").unwrap_or((rest, ""));
            Some((name.to_string(), (value.to_string(), source.to_string())))
        })
        .collect())
}

fn setting<'a>(settings: &'a HashMap<String, (String, String)>, name: &str) -> (&'a str, &'a str) {
    let (value, source) = &settings[name];
    (value, source)
}

#[test]
fn flags_beat_variables_beat_the_file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clickflow.toml");
    std::fs::write(
        &file,
        r#"
workers = 3
topic = "shop-events"
schema = "from_top"
kafka-option = ["security.protocol=SASL_SSL", "sasl.password=hunter2"]

[run]
brokers = "kafka:9092"
schema = "from_run_table"
database-url = "postgres://app:s3cret@db.internal:5432/shop"
"#,
    )
    .unwrap();

    let settings = check(
        &file,
        &[("CLICKFLOW_WORKERS", "4"), ("CLICKFLOW_EPOCH_MS", "75")],
        &["run", "--workers", "5"],
    )
    .unwrap();
    assert_eq!(setting(&settings, "workers"), ("5", "flag"));
    assert_eq!(
        setting(&settings, "epoch-ms"),
        ("75", "env CLICKFLOW_EPOCH_MS")
    );
    assert_eq!(setting(&settings, "topic"), ("shop-events", "config file"));
    assert_eq!(
        setting(&settings, "schema"),
        ("from_run_table", "config file")
    );
    assert_eq!(setting(&settings, "brokers"), ("kafka:9092", "config file"));
    assert_eq!(setting(&settings, "session-gap"), ("30m", "default"));
    // Secrets: a URL's password and secret librdkafka properties never printed.
    assert_eq!(
        setting(&settings, "database-url"),
        (
            "postgres://app:<redacted>@db.internal:5432/shop",
            "config file"
        )
    );
    assert_eq!(
        setting(&settings, "kafka-option").0,
        "security.protocol=SASL_SSL, sasl.password=<redacted>"
    );

    // The variable beats the file.
    let settings = check(&file, &[("CLICKFLOW_WORKERS", "4")], &["run"]).unwrap();
    assert_eq!(
        setting(&settings, "workers"),
        ("4", "env CLICKFLOW_WORKERS")
    );
    // Conventional names stay: DATABASE_URL.
    let settings = check(
        &file,
        &[("DATABASE_URL", "postgres://u:pw@other:5432/x")],
        &["run"],
    )
    .unwrap();
    assert_eq!(
        setting(&settings, "database-url"),
        ("postgres://u:<redacted>@other:5432/x", "env DATABASE_URL")
    );
    // A top-level key applies to every command that has the flag: produce's topic.
    let settings = check(&file, &[], &["produce"]).unwrap();
    assert_eq!(setting(&settings, "topic"), ("shop-events", "config file"));
}

#[test]
fn mistakes_in_the_file_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clickflow.toml");
    for (text, named) in [
        ("wokers = 3\n", "wokers"),
        ("[run]\nrate = 10\n", "rate"),
        ("[runn]\nworkers = 2\n", "runn"),
        ("workers = \n", "clickflow.toml"),
        ("workers = \"many\"\n", "many"),
    ] {
        std::fs::write(&file, text).unwrap();
        let error = check(&file, &[], &["run"]).unwrap_err();
        assert!(error.contains(named), "{text:?}: {error}");
    }
    let error = check(&dir.path().join("missing.toml"), &[], &["run"]).unwrap_err();
    assert!(error.contains("missing.toml"), "{error}");
}

#[test]
fn help_names_the_variables_but_never_shows_their_values() {
    let output = clickflow()
        .env("CLICKFLOW_KAFKA_OPTION", "sasl.password=topsecret")
        .env("DATABASE_URL", "postgres://app:topsecret@db/shop")
        .env("CLICKFLOW_ALERT_WEBHOOK", "https://hooks.example/topsecret")
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert!(help.contains("CLICKFLOW_KAFKA_OPTION"), "{help}");
    assert!(help.contains("CLICKFLOW_SINK_WRITERS"), "{help}");
    assert!(!help.contains("topsecret"), "{help}");
}
