//! The anomaly detectors' quality on a day of shop traffic with staged incidents.
//!
//! `alert_quality [HOURS (24)] [EVENTS_PER_SECOND (100)] [SEED (11)]`
//!
//! Generates HOURS of event time of the default shop (daily rhythm 0.5: three times the
//! visits at 20:00 as at 08:00; 1% of events late, 0.2% malformed) with two incidents of each
//! kind at different hours, runs the real pipeline over it (file input, 2 workers, the
//! default detectors), and reports per incident whether and how fast an alert caught it, and
//! the false alarms per day on the normal stretches. It then folds the same closed windows
//! through other detector settings, for tuning (each row is what that setting would have
//! raised on the same windows).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clickflow_dataflow::alerts::detect::{Detector, DetectorConfig};
use clickflow_dataflow::alerts::quality::{judge_quality, Quality};
use clickflow_dataflow::alerts::series::{Series, WindowPoint};
use clickflow_dataflow::rows::AlertRow;
use clickflow_dataflow::runtime::run::{run, taking, InputSpec, RunConfig};
use clickflow_dataflow::{DataflowConfig, EpochConfig};
use clickflow_sources::file::FileSplits;
use clickflow_sources::shop::{Incident, Shop, ShopConfig, ShopRecord};
use compact_str::CompactString;

const HOUR_MS: i64 = 3_600_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let hours: i64 = args.next().map_or(Ok(24), |a| a.parse())?;
    let rate: f64 = args.next().map_or(Ok(100.0), |a| a.parse())?;
    let seed: u64 = args.next().map_or(Ok(11), |a| a.parse())?;
    let incidents = schedule(hours);
    let shop = ShopConfig {
        seed,
        users: 500_000,
        events_per_second: rate,
        daily_rhythm: 0.5,
        late_fraction: 0.01,
        max_lateness_ms: 20_000,
        malformed_fraction: 0.002,
        incidents: incidents.clone(),
        ..ShopConfig::default()
    };
    let start_ms = shop.start_ms;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.jsonl");
    let generating = Instant::now();
    let records = write_until(&path, Shop::new(shop), start_ms + hours * HOUR_MS)?;
    eprintln!(
        "{records} records over {hours} h of event time written in {:.1} s",
        generating.elapsed().as_secs_f64()
    );

    let detectors = DetectorConfig::default();
    let dataflow = DataflowConfig::default();
    let collected = Arc::new(Mutex::new((Vec::<WindowPoint>::new(), BTreeMap::new())));
    let sink = collected.clone();
    let running = Instant::now();
    let stats = run(
        timely::Config::process(2),
        InputSpec::File(FileSplits::plan(&path, 8)?),
        RunConfig {
            dataflow,
            epochs: EpochConfig::default(),
            alerts: detectors.clone(),
            ..RunConfig::default()
        },
        Some(taking(move |output| {
            let mut guard = sink.lock().expect("not poisoned");
            let (series, alerts) = &mut *guard;
            series.extend(output.series.iter().copied());
            apply(alerts, &output.alerts);
        })),
        Arc::new(AtomicBool::new(false)),
        Default::default(),
    )?;
    let seconds = running.elapsed().as_secs_f64();
    eprintln!(
        "pipeline: {} events in {seconds:.1} s ({:.0} events/s, 2 workers)",
        stats.events,
        stats.events as f64 / seconds
    );
    let (mut series, alerts) = collected.lock().expect("not poisoned").clone();
    series.sort_by_key(|p| p.window);
    let refolded = fold(&detectors, &series);
    assert_eq!(
        refolded, alerts,
        "the pipeline's alerts differ from a fold of its own windows"
    );

    if let Some(path) = std::env::var_os("ALERT_QUALITY_SERIES") {
        let mut csv = String::from("minute");
        for s in Series::ALL {
            csv.push(',');
            csv.push_str(s.name());
        }
        for point in &series {
            csv.push_str(&format!("\n{}", (point.window.start - start_ms) / 60_000));
            for s in Series::ALL {
                csv.push_str(&format!(",{}", point.counts.value(s).unwrap_or(f64::NAN)));
            }
        }
        std::fs::write(&path, csv)?;
    }
    let judged = judged_span(&series, &detectors);
    let quality = judge_quality(
        start_ms,
        &incidents,
        &alerts,
        dataflow.window,
        detectors.open_after,
        judged,
    );
    println!("## Incidents (default detectors, from the pipeline's own alerts table)\n");
    println!("| incident | detected by | delay (windows) | resolved (windows after its end) |");
    println!("|---|---|---|---|");
    for outcome in &quality.outcomes {
        let (by, delay) = match &outcome.detected {
            Some((id, delay)) => (id.to_string(), delay.to_string()),
            None => ("**missed**".into(), "-".into()),
        };
        let resolved = outcome
            .resolved_after
            .map_or("still open".into(), |w| w.to_string());
        println!("| {} | {by} | {delay} | {resolved} |", outcome.incident);
    }
    println!("\nEvery alert raised:\n");
    for alert in alerts.values() {
        println!(
            "- {} {:?} {:?}: observed {:.3}, expected {:.3}, windows {}..{:?}",
            alert.alert_id,
            alert.kind,
            alert.severity,
            alert.observed.0,
            alert.expected.0,
            (alert.opened - start_ms) / 60_000,
            alert.resolved.map(|r| (r - start_ms) / 60_000)
        );
    }
    println!();
    for alarm in &quality.false_alarms {
        println!(
            "false alarm: {} ({:?}, observed {:.3}, expected {:.3})",
            alarm.alert_id, alarm.severity, alarm.observed.0, alarm.expected.0
        );
    }
    println!("\n## Settings on the same {} windows\n", series.len());
    println!(
        "| threshold (MADs) | min relative change | detected | mean delay | false alarms / day |"
    );
    println!("|---|---|---|---|---|");
    for threshold_mads in [3.0, 4.0, 5.0, 6.0, 8.0] {
        for min_relative_change in [0.1, 0.15, 0.2, 0.3] {
            let config = DetectorConfig {
                threshold_mads,
                min_relative_change,
                ..detectors.clone()
            };
            let quality = judge_quality(
                start_ms,
                &incidents,
                &fold(&config, &series),
                dataflow.window,
                config.open_after,
                judged,
            );
            println!(
                "| {threshold_mads} | {min_relative_change} | {}/{} | {} | {:.2} |",
                quality.detected(),
                quality.outcomes.len(),
                mean_delay(&quality),
                quality.false_alarms_per_day()
            );
        }
    }
    Ok(())
}

/// Two incidents of each kind, 15 minutes each, spread over the run (at different hours of
/// the daily rhythm), the first after two hours.
fn schedule(hours: i64) -> Vec<Incident> {
    let kinds = clickflow_sources::shop::IncidentKind::ALL;
    let count = (2 * kinds.len()) as i64;
    let spacing = ((hours - 2) * HOUR_MS / count).max(HOUR_MS / 2);
    (0..count)
        .map(|i| Incident {
            kind: kinds[i as usize % kinds.len()],
            after_ms: 2 * HOUR_MS + i * spacing,
            lasting_ms: 15 * 60_000,
        })
        .filter(|i| i.after_ms + i.lasting_ms < hours * HOUR_MS)
        .collect()
}

/// Writes the shop's records until event time reaches `until_ms`; returns how many.
fn write_until(path: &std::path::Path, shop: Shop, until_ms: i64) -> std::io::Result<usize> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut payload = Vec::with_capacity(256);
    let mut written = 0;
    for record in shop {
        if let ShopRecord::Event(event) = &record {
            if event.ts >= until_ms {
                break;
            }
        }
        payload.clear();
        record.write_payload(&mut payload);
        payload.push(b'\n');
        out.write_all(&payload)?;
        written += 1;
    }
    out.flush()?;
    Ok(written)
}

fn apply(alerts: &mut BTreeMap<CompactString, AlertRow>, changes: &[(AlertRow, isize)]) {
    for (row, _) in changes.iter().filter(|(_, d)| *d < 0) {
        if alerts.get(&row.alert_id) == Some(row) {
            alerts.remove(&row.alert_id);
        }
    }
    for (row, _) in changes.iter().filter(|(_, d)| *d > 0) {
        alerts.insert(row.alert_id.clone(), row.clone());
    }
}

/// The alerts `config` raises on `series`, in the table's form.
fn fold(config: &DetectorConfig, series: &[WindowPoint]) -> BTreeMap<CompactString, AlertRow> {
    let mut detector = Detector::new(config.clone());
    let mut changes = Vec::new();
    for point in series {
        detector.observe(point, &mut changes);
    }
    let mut alerts = BTreeMap::new();
    apply(&mut alerts, &changes);
    alerts
}

/// From the first judged window (after the minimum history) to the end of the last.
fn judged_span(series: &[WindowPoint], config: &DetectorConfig) -> (i64, i64) {
    let from = series
        .get(config.min_history)
        .or(series.last())
        .map_or(0, |p| p.window.start);
    let until = series.last().map_or(0, |p| p.window.end);
    (from, until)
}

fn mean_delay(quality: &Quality) -> String {
    let delays: Vec<i64> = quality
        .outcomes
        .iter()
        .filter_map(|o| o.detected.as_ref().map(|(_, d)| *d))
        .collect();
    if delays.is_empty() {
        return "-".into();
    }
    format!(
        "{:.1}",
        delays.iter().sum::<i64>() as f64 / delays.len() as f64
    )
}
