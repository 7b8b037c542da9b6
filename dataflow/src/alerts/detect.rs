//! The detectors: a robust baseline per series, static rules, and each alert's lifecycle.
//!
//! A plain state machine over the windows in order, so that the dataflow's stage
//! ([`crate::alerts::alerting`]), a restart rebuilding that stage from `window_series`, and
//! the oracle all run the same judgement on the same points.
//!
//! **Baseline.** Each judged series keeps its last [`DetectorConfig::history`] values. Its
//! expected value is their median and its spread their median absolute deviation (MAD), as
//! Grafana's MAD outlier detection and PostHog's MAD alerts do; once the same slot of the
//! season (by default the same minute of the day) has [`Season::min_periods`] earlier values,
//! the expected value is their median instead (Datadog's `basic` seasonality), with the
//! larger of the two spreads. No judgement before [`DetectorConfig::min_history`] values.
//!
//! **Verdict.** A value is anomalous when it departs from the expected value by more than the
//! band: the largest of `threshold_mads` MADs, the series' minimum change (so that a tiny
//! series does not flap on a difference of one), and `min_relative_change` of the expected
//! value; in the direction the series is watched in ([`Watch`]). More than twice the band is
//! `critical`, otherwise `warning`.
//!
//! **Lifecycle.** An alert opens once `open_after` consecutive windows are anomalous in the
//! same direction (it opens at the first of them), is updated by every further anomalous
//! window (latest observed and expected value, worst severity), and resolves at the first of
//! `resolve_after` consecutive windows back in the band. Static rules ([`Rule`]) have the
//! same lifecycle.
//!
//! **What the history learns.** Values in the band join the rolling history at once.
//! Anomalous values wait in quarantine: an anomaly would otherwise widen the MAD it is judged
//! by (an outage's zeros made the band wide enough to hold zero after four windows, and
//! resolved the alert while purchases were still failing), and a spike would blind the series
//! to a drop for the next hour. Once a series is back in the band its quarantined values are
//! dropped; if it stays out of the band for more than half the history, they join it, and
//! the new level becomes the normal one (the alert then resolves). The season's slots learn
//! every value: a burst that recurs at the same minute every day is what they are for, and
//! one bad day moves the median of several little.

use std::collections::{BTreeMap, VecDeque};

use compact_str::{format_compact, CompactString};
use serde::{Deserialize, Serialize};

use crate::alerts::series::{Series, WindowPoint};
use crate::rows::{AlertKind, AlertRow, Measure, Severity};
use crate::window::Window;

/// In which direction a series' departures are alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Watch {
    /// Rises and falls.
    Both,
    /// Rises only (rejections: more is bad, fewer is good news).
    Spikes,
    /// Falls only (purchases, conversion, revenue: a rise is good news).
    Drops,
    /// Not judged.
    Off,
}

/// How one series is judged.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesSettings {
    /// The direction that alerts.
    pub watch: Watch,
    /// The smallest departure that can alert, in the series' unit.
    pub min_change: f64,
}

impl SeriesSettings {
    /// The defaults: traffic both ways; the funnel, conversion and revenue on drops;
    /// rejections on spikes. Minimum changes: 10 events or users, 1 point of conversion (the
    /// shop's view-to-cart conversion is about 5%), 100 currency units.
    pub fn default_for(series: Series) -> SeriesSettings {
        let (watch, min_change) = match series {
            Series::Clicks | Series::ClickUsers => (Watch::Both, 10.0),
            Series::CartAdds | Series::Purchases | Series::CartUsers | Series::PurchaseUsers => {
                (Watch::Drops, 10.0)
            }
            Series::ViewToCart | Series::CartToPurchase => (Watch::Drops, 0.01),
            Series::Revenue => (Watch::Drops, 100.0),
            Series::Malformed | Series::Late => (Watch::Spikes, 10.0),
        };
        SeriesSettings { watch, min_change }
    }
}

/// Seasonality: the same slot of a repeating period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Season {
    /// The period, in windows (1,440: a day of minutes).
    pub period: usize,
    /// How many periods of each slot are kept.
    pub keep: usize,
    /// How many earlier periods a slot needs before it sets the expected value.
    pub min_periods: usize,
}

/// A static rule: a bound on a series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Its name, unique among the rules.
    pub name: CompactString,
    /// The series it bounds.
    pub series: Series,
    /// Breached when the value is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// Breached when the value is above this.
    #[serde(default)]
    pub above: Option<f64>,
    /// Consecutive breached windows before it opens (default 1).
    #[serde(default = "one")]
    pub windows: usize,
    /// The severity of its alerts (default `critical`).
    #[serde(default = "critical")]
    pub severity: Severity,
}

fn one() -> usize {
    1
}

fn critical() -> Severity {
    Severity::Critical
}

/// Everything the detectors are told.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// Windows of history per series (the rolling median's span).
    pub history: usize,
    /// Windows of history before a series is judged.
    pub min_history: usize,
    /// The band's width in MADs.
    pub threshold_mads: f64,
    /// The band's width as a share of the expected value, at least.
    pub min_relative_change: f64,
    /// Consecutive anomalous windows before an alert opens.
    pub open_after: usize,
    /// Consecutive windows back in the band before it resolves.
    pub resolve_after: usize,
    /// The seasonal baseline (`None`: rolling only).
    pub season: Option<Season>,
    /// How each series is judged.
    pub series: BTreeMap<Series, SeriesSettings>,
    /// Static rules.
    pub rules: Vec<Rule>,
}

impl Default for DetectorConfig {
    /// An hour of history, judged after 20 minutes; 5 MADs and 20% at least; two windows to
    /// open and two to resolve; daily seasonality from three days of history, a week kept.
    /// Tuned on the quality bench (`cargo run --release -p clickflow-benches --bin
    /// alert_quality`): see the README.
    fn default() -> DetectorConfig {
        DetectorConfig {
            history: 60,
            min_history: 20,
            threshold_mads: 5.0,
            min_relative_change: 0.2,
            open_after: 2,
            resolve_after: 2,
            season: Some(Season {
                period: 1_440,
                keep: 7,
                min_periods: 3,
            }),
            series: Series::ALL
                .into_iter()
                .map(|s| (s, SeriesSettings::default_for(s)))
                .collect(),
            rules: Vec::new(),
        }
    }
}

/// What one window showed of one series or rule.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Finding {
    kind: AlertKind,
    severity: Severity,
    observed: f64,
    expected: f64,
}

/// Anomalous windows so far, before an alert opens.
#[derive(Clone, Copy, Debug)]
struct Streak {
    first: Window,
    windows: usize,
    kind: AlertKind,
}

/// Where one series' (or rule's) alerting stands.
#[derive(Clone, Debug)]
enum Status {
    Calm(Option<Streak>),
    Open { row: AlertRow, calm: Option<Streak> },
}

/// One series' (or rule's) alert lifecycle.
#[derive(Clone, Debug)]
struct Lifecycle {
    /// What its alerts are named after: the series' name, or `rule:` and the rule's.
    source: CompactString,
    series: Series,
    rule: Option<CompactString>,
    status: Status,
}

impl Lifecycle {
    fn new(series: Series, rule: Option<CompactString>) -> Lifecycle {
        let source = match &rule {
            Some(name) => format_compact!("rule:{name}"),
            None => series.name().into(),
        };
        Lifecycle {
            source,
            series,
            rule,
            status: Status::Calm(None),
        }
    }

    /// Moves on by one window: `finding` is what it showed (`None`: in the band).
    fn step(
        &mut self,
        window: Window,
        finding: Option<Finding>,
        config: &DetectorConfig,
        open_after: usize,
        out: &mut Vec<(AlertRow, isize)>,
    ) {
        let status = std::mem::replace(&mut self.status, Status::Calm(None));
        self.status = match (status, finding) {
            (Status::Calm(_), None) => Status::Calm(None),
            (Status::Calm(streak), Some(finding)) => {
                let streak = match streak {
                    Some(s) if s.kind == finding.kind => Streak {
                        windows: s.windows + 1,
                        ..s
                    },
                    _ => Streak {
                        first: window,
                        windows: 1,
                        kind: finding.kind,
                    },
                };
                if streak.windows < open_after {
                    Status::Calm(Some(streak))
                } else {
                    let row = AlertRow {
                        alert_id: format_compact!("{}:{}", self.source, streak.first.start),
                        kind: finding.kind,
                        rule: self.rule.clone(),
                        series: self.series,
                        severity: finding.severity,
                        observed: Measure(finding.observed),
                        expected: Measure(finding.expected),
                        opened: streak.first.start,
                        latest: window.start,
                        resolved: None,
                    };
                    out.push((row.clone(), 1));
                    Status::Open { row, calm: None }
                }
            }
            (Status::Open { row, .. }, Some(finding)) => {
                let updated = AlertRow {
                    severity: row.severity.max(finding.severity),
                    observed: Measure(finding.observed),
                    expected: Measure(finding.expected),
                    latest: window.start,
                    ..row.clone()
                };
                out.push((row, -1));
                out.push((updated.clone(), 1));
                Status::Open {
                    row: updated,
                    calm: None,
                }
            }
            (Status::Open { row, calm }, None) => {
                let calm = match calm {
                    Some(s) => Streak {
                        windows: s.windows + 1,
                        ..s
                    },
                    None => Streak {
                        first: window,
                        windows: 1,
                        kind: row.kind,
                    },
                };
                if calm.windows < config.resolve_after {
                    Status::Open {
                        row,
                        calm: Some(calm),
                    }
                } else {
                    let resolved = AlertRow {
                        resolved: Some(calm.first.start),
                        ..row.clone()
                    };
                    out.push((row, -1));
                    out.push((resolved, 1));
                    Status::Calm(None)
                }
            }
        };
    }

    /// The open alert, if any.
    fn open(&self) -> Option<&AlertRow> {
        match &self.status {
            Status::Open { row, .. } => Some(row),
            Status::Calm(_) => None,
        }
    }
}

/// One series' history and lifecycle.
#[derive(Clone, Debug)]
struct Tracked {
    settings: SeriesSettings,
    recent: VecDeque<f64>,
    /// Earlier values per slot of the season, oldest first.
    seasonal: BTreeMap<i64, VecDeque<f64>>,
    /// Anomalous values the rolling history has not learnt yet.
    quarantine: Vec<f64>,
    lifecycle: Lifecycle,
}

/// The detectors of every series and rule, fed the closed windows in order.
#[derive(Clone, Debug)]
pub struct Detector {
    config: DetectorConfig,
    tracked: Vec<Tracked>,
    rules: Vec<(Rule, Lifecycle)>,
}

impl Detector {
    /// Detectors with nothing seen.
    pub fn new(config: DetectorConfig) -> Detector {
        let tracked = config
            .series
            .iter()
            .filter(|(_, s)| s.watch != Watch::Off)
            .map(|(&series, &settings)| Tracked {
                settings,
                recent: VecDeque::new(),
                seasonal: BTreeMap::new(),
                quarantine: Vec::new(),
                lifecycle: Lifecycle::new(series, None),
            })
            .collect();
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                (
                    rule.clone(),
                    Lifecycle::new(rule.series, Some(rule.name.clone())),
                )
            })
            .collect();
        Detector {
            config,
            tracked,
            rules,
        }
    }

    /// Judges the next closed window and appends the alert rows it changes (the old row
    /// retracted, the new one inserted).
    pub fn observe(&mut self, point: &WindowPoint, out: &mut Vec<(AlertRow, isize)>) {
        let config = &self.config;
        let window_index = point
            .window
            .start
            .div_euclid(point.window.end - point.window.start);
        for tracked in &mut self.tracked {
            let series = tracked.lifecycle.series;
            let value = point.counts.value(series);
            let slot = config
                .season
                .map(|season| window_index.rem_euclid(season.period.max(1) as i64));
            let finding = value.and_then(|value| judge(tracked, slot, value, config));
            tracked
                .lifecycle
                .step(point.window, finding, config, config.open_after, out);
            if let Some(value) = value {
                remember_in_season(tracked, slot, value, config);
                if finding.is_some() {
                    tracked.quarantine.push(value);
                    if tracked.quarantine.len() > config.history / 2 {
                        for value in std::mem::take(&mut tracked.quarantine) {
                            remember_recent(tracked, value, config);
                        }
                    }
                } else {
                    tracked.quarantine.clear();
                    remember_recent(tracked, value, config);
                }
            }
        }
        for (rule, lifecycle) in &mut self.rules {
            let finding = point.counts.value(rule.series).and_then(|value| {
                let bound = match (rule.below, rule.above) {
                    (Some(below), _) if value < below => below,
                    (_, Some(above)) if value > above => above,
                    _ => return None,
                };
                Some(Finding {
                    kind: AlertKind::Rule,
                    severity: rule.severity,
                    observed: value,
                    expected: bound,
                })
            });
            lifecycle.step(point.window, finding, config, rule.windows.max(1), out);
        }
    }

    /// The alerts open now.
    pub fn open_alerts(&self) -> impl Iterator<Item = &AlertRow> {
        self.tracked
            .iter()
            .map(|t| &t.lifecycle)
            .chain(self.rules.iter().map(|(_, l)| l))
            .filter_map(Lifecycle::open)
    }

    /// How many values the detectors hold: bounded by the series times (history + season
    /// slots times kept periods), whatever the length of the stream.
    pub fn values_held(&self) -> usize {
        self.tracked
            .iter()
            .map(|t| {
                t.recent.len()
                    + t.quarantine.len()
                    + t.seasonal.values().map(VecDeque::len).sum::<usize>()
            })
            .sum()
    }
}

/// The verdict on `value`, or `None` when it is in the band (or cannot be judged yet).
fn judge(
    tracked: &Tracked,
    slot: Option<i64>,
    value: f64,
    config: &DetectorConfig,
) -> Option<Finding> {
    if tracked.recent.len() < config.min_history.max(1) {
        return None;
    }
    let recent: Vec<f64> = tracked.recent.iter().copied().collect();
    let (mut expected, mut spread) = median_and_mad(&recent);
    let season = config.season.zip(slot);
    if let Some((season, slot)) = season {
        if let Some(earlier) = tracked.seasonal.get(&slot) {
            if earlier.len() >= season.min_periods.max(1) {
                let earlier: Vec<f64> = earlier.iter().copied().collect();
                let (seasonal, seasonal_spread) = median_and_mad(&earlier);
                expected = seasonal;
                spread = spread.max(seasonal_spread);
            }
        }
    }
    let band = (config.threshold_mads * spread)
        .max(tracked.settings.min_change)
        .max(config.min_relative_change * expected.abs());
    let departure = value - expected;
    let kind = match tracked.settings.watch {
        Watch::Both | Watch::Spikes if departure > band => AlertKind::Spike,
        Watch::Both | Watch::Drops if -departure > band => AlertKind::Drop,
        _ => return None,
    };
    let severity = if departure.abs() > 2.0 * band {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Some(Finding {
        kind,
        severity,
        observed: value,
        expected,
    })
}

/// Adds `value` to the rolling history, dropping the oldest beyond its bound.
fn remember_recent(tracked: &mut Tracked, value: f64, config: &DetectorConfig) {
    tracked.recent.push_back(value);
    while tracked.recent.len() > config.history.max(1) {
        tracked.recent.pop_front();
    }
}

/// Adds `value` to its season slot, dropping the oldest period beyond the bound.
fn remember_in_season(
    tracked: &mut Tracked,
    slot: Option<i64>,
    value: f64,
    config: &DetectorConfig,
) {
    if let (Some(season), Some(slot)) = (config.season, slot) {
        let earlier = tracked.seasonal.entry(slot).or_default();
        earlier.push_back(value);
        while earlier.len() > season.keep.max(1) {
            earlier.pop_front();
        }
    }
}

/// The median of `values` and their median absolute deviation (`values` is not empty).
fn median_and_mad(values: &[f64]) -> (f64, f64) {
    let median = median_of(&mut values.to_vec());
    let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
    (median, median_of(&mut deviations))
}

/// The median (the mean of the two middle values for an even count).
fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::series::WindowCounts;
    use crate::window::WindowSize;

    fn point(minute: i64, clicks: i64) -> WindowPoint {
        WindowPoint {
            window: WindowSize::from_millis(60_000).window_of(minute * 60_000),
            counts: WindowCounts {
                events: [clicks, 0, 0],
                ..WindowCounts::default()
            },
        }
    }

    fn clicks_only() -> DetectorConfig {
        let mut config = DetectorConfig {
            season: None,
            ..DetectorConfig::default()
        };
        for (series, settings) in config.series.iter_mut() {
            if *series != Series::Clicks {
                settings.watch = Watch::Off;
            }
        }
        config
    }

    /// The alert rows after feeding `values`, one per minute, as the table would hold them.
    fn run(config: DetectorConfig, values: &[i64]) -> BTreeMap<CompactString, AlertRow> {
        let mut detector = Detector::new(config);
        let mut table = BTreeMap::new();
        for (minute, &clicks) in values.iter().enumerate() {
            let mut out = Vec::new();
            detector.observe(&point(minute as i64, clicks), &mut out);
            for (row, diff) in out {
                if diff < 0 {
                    assert_eq!(table.remove(&row.alert_id), Some(row));
                } else {
                    assert!(table.insert(row.alert_id.clone(), row).is_none());
                }
            }
        }
        table
    }

    /// Steady noise around 1,000 (a deterministic wobble of ±30).
    fn steady(minutes: usize) -> Vec<i64> {
        (0..minutes)
            .map(|m| 1_000 + ((m * 37) % 61) as i64 - 30)
            .collect()
    }

    #[test]
    fn a_drop_opens_at_its_first_window_after_two_and_resolves_when_it_ends() {
        let mut values = steady(40);
        values.extend([150, 120, 140, 130]);
        values.extend(steady(5));
        let alerts = run(clicks_only(), &values);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let alert = alerts.values().next().unwrap();
        assert_eq!(alert.kind, AlertKind::Drop);
        assert_eq!(alert.series, Series::Clicks);
        assert_eq!(alert.opened, 40 * 60_000);
        assert_eq!(alert.latest, 43 * 60_000);
        assert_eq!(alert.resolved, Some(44 * 60_000));
        assert_eq!(alert.observed.0, 130.0);
        assert_eq!(alert.severity, Severity::Critical);
        assert_eq!(alert.alert_id, format!("clicks:{}", 40 * 60_000));
    }

    #[test]
    fn an_outage_stays_open_while_it_lasts_and_a_new_level_becomes_normal() {
        // Zeros for 15 windows: quarantined, they cannot widen the band that judges them.
        let mut values = steady(40);
        values.extend([0; 15]);
        values.extend(steady(5));
        let alerts = run(clicks_only(), &values);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let alert = alerts.values().next().unwrap();
        assert_eq!((alert.opened, alert.latest), (40 * 60_000, 54 * 60_000));
        assert_eq!(alert.resolved, Some(55 * 60_000));
        // A level that halves for good: after half the history it is the new normal.
        let mut values = steady(40);
        values.extend(steady(80).iter().map(|v| v / 2));
        let alerts = run(clicks_only(), &values);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let resolved = alerts.values().next().unwrap().resolved.unwrap() / 60_000;
        assert!(
            (70..=75).contains(&resolved),
            "resolved at minute {resolved}"
        );
    }

    #[test]
    fn one_odd_window_and_steady_noise_alert_nothing() {
        let mut values = steady(40);
        values.push(3_000);
        values.extend(steady(100));
        assert!(run(clicks_only(), &values).is_empty());
    }

    #[test]
    fn nothing_is_judged_before_the_minimum_history() {
        let mut values = steady(10);
        values.extend([0, 0, 0, 0]);
        assert!(run(clicks_only(), &values).is_empty());
    }

    #[test]
    fn a_static_rule_opens_on_its_own_count_of_windows() {
        let mut config = clickflow_config_with_rule();
        config.min_history = 1_000; // the baseline never judges: only the rule can alert
        let mut values = steady(5);
        values.extend([50, 40, 30]);
        values.extend(steady(3));
        let alerts = run(config, &values);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let alert = alerts.values().next().unwrap();
        assert_eq!(alert.kind, AlertKind::Rule);
        assert_eq!(alert.rule.as_deref(), Some("traffic floor"));
        assert_eq!(alert.opened, 5 * 60_000);
        assert_eq!(alert.expected.0, 100.0);
        assert_eq!(alert.resolved, Some(8 * 60_000));
    }

    fn clickflow_config_with_rule() -> DetectorConfig {
        DetectorConfig {
            rules: vec![Rule {
                name: "traffic floor".into(),
                series: Series::Clicks,
                below: Some(100.0),
                above: None,
                windows: 3,
                severity: Severity::Critical,
            }],
            ..clicks_only()
        }
    }

    #[test]
    fn the_seasonal_baseline_expects_the_same_minute_of_earlier_periods() {
        // A period of 10 windows where minute 5 is always a burst: once three periods are
        // known, the burst is expected; before, the rolling baseline would flag it.
        let mut config = clicks_only();
        config.min_history = 5;
        config.season = Some(Season {
            period: 10,
            keep: 5,
            min_periods: 3,
        });
        config.open_after = 1;
        let values: Vec<i64> = (0..80)
            .map(|m| if m % 10 == 5 { 5_000 } else { 1_000 })
            .collect();
        let alerts = run(config, &values);
        let opened: Vec<i64> = alerts.values().map(|a| a.opened / 60_000).collect();
        assert!(
            !opened.is_empty() && opened.iter().all(|&m| m < 30),
            "{opened:?}"
        );
    }

    #[test]
    fn the_detectors_hold_a_bounded_number_of_values_on_an_endless_stream() {
        let config = DetectorConfig::default();
        let bound = Series::ALL.len() * (config.history + 1_440 * 7);
        let mut detector = Detector::new(config);
        let mut out = Vec::new();
        for minute in 0..1_440 * 10 {
            detector.observe(&point(minute, 1_000 + minute % 7), &mut out);
            out.clear();
        }
        assert!(
            detector.values_held() <= bound,
            "{}",
            detector.values_held()
        );
        assert!(detector.values_held() >= Series::ALL.len() * 1_440 * 7 / 2);
    }
}
