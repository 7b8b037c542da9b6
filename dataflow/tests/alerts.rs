//! Anomaly alerts computed by the dataflow: equal to a sequential judgement of the same
//! windows on any number of workers, and catching each kind of staged incident in time
//! without raising anything on clean traffic.

mod common;

use std::collections::BTreeMap;

use clickflow_dataflow::alerts::detect::DetectorConfig;
use clickflow_dataflow::alerts::quality::judge_quality;
use clickflow_dataflow::alerts::series::Series;
use clickflow_dataflow::oracle::recompute_file;
use clickflow_dataflow::rows::AlertKind;
use clickflow_dataflow::runtime::run::RunConfig;
use clickflow_dataflow::{DataflowConfig, EpochConfig, Tables};
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Incident, IncidentKind, Shop, ShopConfig, ShopRecord};
use common::{assert_matches_oracle, run_file_with, write_lines};

const MINUTE: i64 = 60_000;

/// The records of `minutes` of event time of a flat-rate shop with `incidents`.
fn shop_minutes(
    rate: f64,
    minutes: i64,
    seed: u64,
    incidents: Vec<Incident>,
) -> (ShopConfig, Vec<ShopRecord>) {
    let config = ShopConfig {
        seed,
        users: 200_000,
        events_per_second: rate,
        daily_rhythm: 0.0,
        late_fraction: 0.02,
        // Beyond the 30 s allowed lateness: some events are dead-lettered as late.
        max_lateness_ms: 45_000,
        malformed_fraction: 0.002,
        incidents,
        ..ShopConfig::default()
    };
    let until = config.start_ms + minutes * MINUTE;
    let records = Shop::new(config.clone())
        .take_while(|r| !matches!(r, ShopRecord::Event(e) if e.ts >= until))
        .collect();
    (config, records)
}

fn incident(kind: IncidentKind, after_min: i64, lasting_min: i64) -> Incident {
    Incident {
        kind,
        after_ms: after_min * MINUTE,
        lasting_ms: lasting_min * MINUTE,
    }
}

/// The final tables of a run over `splits` on `workers` threads with `detectors`.
fn run_with(
    splits: &FileSplits,
    workers: usize,
    epochs: EpochConfig,
    detectors: DetectorConfig,
) -> Tables {
    let config = RunConfig {
        epochs,
        alerts: detectors,
        ..RunConfig::default()
    };
    run_file_with(splits, workers, config)
}

#[test]
fn alerts_equal_a_sequential_judgement_of_the_same_windows_on_any_number_of_workers() {
    // Sensitive detectors on a small shop, so that there is plenty to compare: alerts open,
    // update and resolve, series judged with gaps (ratios without a denominator) and rules.
    let detectors = DetectorConfig {
        min_history: 10,
        threshold_mads: 3.0,
        min_relative_change: 0.15,
        rules: clickflow_dataflow::alerts::rules::parse_rules(
            "[[rule]]\nname = \"few purchases\"\nseries = \"purchases\"\nbelow = 3\nwindows = 2",
        )
        .unwrap()
        .rules,
        ..DetectorConfig::default()
    };
    let (_, records) = shop_minutes(
        25.0,
        100,
        5,
        vec![
            incident(IncidentKind::CheckoutOutage, 30, 10),
            incident(IncidentKind::Spike, 55, 8),
            incident(IncidentKind::MalformedStorm, 75, 6),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.jsonl");
    write_lines(&path, &records);
    let splits = FileSplits::plan(&path, 6).unwrap();
    let dataflow = DataflowConfig::default();
    let mut oracle = recompute_file(&splits, &dataflow).unwrap();
    oracle.judge_windows(&dataflow, &detectors);
    assert!(
        oracle.tables.series.len() >= 99,
        "{}",
        oracle.tables.series.len()
    );
    assert!(
        oracle.tables.alerts.len() >= 3
            && oracle
                .tables
                .alerts
                .values()
                .any(|a| a.kind == AlertKind::Rule)
            && oracle
                .tables
                .series
                .values()
                .any(|p| p.counts.malformed > 0)
            && oracle.tables.series.values().any(|p| p.counts.late > 0),
        "the comparison must hold alerts, a rule's among them, and rejections: {:?}",
        oracle.tables.alerts.keys().collect::<Vec<_>>()
    );
    for (workers, max_epoch_messages) in [(1, 100_000), (2, 3_000), (4, 700)] {
        let epochs = EpochConfig {
            max_epoch_messages,
            poll_batch: 500,
            ..EpochConfig::default()
        };
        let tables = run_with(&splits, workers, epochs, detectors.clone());
        assert_matches_oracle(
            &tables,
            &oracle,
            &format!("{workers} workers, epochs of at most {max_epoch_messages} messages"),
        );
    }
}

#[test]
fn each_incident_kind_opens_its_alert_within_three_windows_and_resolves_after() {
    // Five incidents of ten minutes, half an hour apart, on 100 events/s with the default
    // detectors: what `clickflow demo --incident ...` shows.
    let incidents = vec![
        incident(IncidentKind::Spike, 30, 10),
        incident(IncidentKind::Drop, 60, 10),
        incident(IncidentKind::CheckoutOutage, 90, 10),
        incident(IncidentKind::CartBug, 120, 10),
        incident(IncidentKind::MalformedStorm, 150, 10),
    ];
    let (shop, records) = shop_minutes(100.0, 180, 9, incidents.clone());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.jsonl");
    write_lines(&path, &records);
    let splits = FileSplits::plan(&path, 8).unwrap();
    let detectors = DetectorConfig::default();
    let tables = run_with(&splits, 2, EpochConfig::default(), detectors.clone());
    let first = *tables.series.keys().next().unwrap();
    let judged = (
        first + detectors.min_history as i64 * MINUTE,
        *tables.series.keys().next_back().unwrap() + MINUTE,
    );
    let quality = judge_quality(
        shop.start_ms,
        &incidents,
        &tables.alerts,
        DataflowConfig::default().window,
        detectors.open_after,
        judged,
    );
    for outcome in &quality.outcomes {
        let (id, delay) = outcome
            .detected
            .as_ref()
            .unwrap_or_else(|| panic!("{} was missed: {:#?}", outcome.incident, tables.alerts));
        assert!(
            *delay <= 3,
            "{}: {id} after {delay} windows",
            outcome.incident
        );
        let resolved = outcome
            .resolved_after
            .unwrap_or_else(|| panic!("{}: {id} never resolved", outcome.incident));
        assert!(
            (0..=20).contains(&resolved),
            "{}: {id} resolved {resolved} windows after the incident's end",
            outcome.incident
        );
    }
    assert!(
        quality.false_alarms.is_empty(),
        "alerts outside the incidents: {:#?}",
        quality.false_alarms
    );
    // The malformed storm's alert is about rejections, the checkout outage's about money:
    // each incident is named by the series it moves.
    let series_of = |kind| {
        let outcome = quality
            .outcomes
            .iter()
            .find(|o| o.incident.kind == kind)
            .unwrap();
        tables.alerts[&outcome.detected.as_ref().unwrap().0].series
    };
    assert_eq!(series_of(IncidentKind::MalformedStorm), Series::Malformed);
    assert!(matches!(
        series_of(IncidentKind::CheckoutOutage),
        Series::Purchases | Series::PurchaseUsers | Series::CartToPurchase | Series::Revenue
    ));
}

#[test]
fn clean_traffic_raises_no_alert() {
    let (_, records) = shop_minutes(100.0, 150, 21, Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.jsonl");
    write_lines(&path, &records);
    let splits = FileSplits::plan(&path, 8).unwrap();
    let tables = run_with(
        &splits,
        2,
        EpochConfig::default(),
        DetectorConfig::default(),
    );
    assert!(tables.series.len() >= 149, "{}", tables.series.len());
    let alerts: BTreeMap<_, _> = tables.alerts.iter().collect();
    assert!(alerts.is_empty(), "{alerts:#?}");
}
