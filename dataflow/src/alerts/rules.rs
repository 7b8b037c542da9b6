//! The alerting file (`--alert-rules FILE`, TOML): the detectors' tuning, per-series settings
//! and static rules. Everything is optional; what is left out keeps its default
//! ([`DetectorConfig::default`], [`SeriesSettings::default_for`]).
//!
//! ```toml
//! [detector]
//! history = 60              # windows of rolling history
//! min_history = 20          # windows before a series is judged
//! threshold_mads = 5.0      # band width in median absolute deviations
//! min_relative_change = 0.2 # and at least this share of the expected value
//! open_after = 2            # consecutive anomalous windows to open
//! resolve_after = 2         # consecutive windows in the band to resolve
//! season = { period = 1440, keep = 7, min_periods = 3 }  # or: seasonal = false
//!
//! [series.purchases]
//! watch = "drops"           # both | spikes | drops | off
//! min_change = 5
//!
//! [[rule]]
//! name = "checkout floor"
//! series = "purchases"
//! below = 1                 # and/or: above = ...
//! windows = 3               # consecutive windows (default 1)
//! severity = "critical"     # or "warning" (default critical)
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::alerts::detect::{DetectorConfig, Rule, Season, SeriesSettings, Watch};
use crate::alerts::series::Series;

/// Why an alerting file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read the alerting file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML of the expected shape.
    #[error("alerting file: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value that cannot work.
    #[error("alerting file: {0}")]
    Invalid(String),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    detector: Tuning,
    #[serde(default)]
    series: BTreeMap<String, SeriesOverride>,
    #[serde(default)]
    rule: Vec<Rule>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Tuning {
    history: Option<usize>,
    min_history: Option<usize>,
    threshold_mads: Option<f64>,
    min_relative_change: Option<f64>,
    open_after: Option<usize>,
    resolve_after: Option<usize>,
    season: Option<Season>,
    seasonal: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesOverride {
    watch: Option<Watch>,
    min_change: Option<f64>,
}

/// Reads the alerting file at `path`.
pub fn load_rules(path: &Path) -> Result<DetectorConfig, RulesError> {
    let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_rules(&text)
}

/// The detector configuration an alerting file's text describes.
pub fn parse_rules(text: &str) -> Result<DetectorConfig, RulesError> {
    let file: File = toml::from_str(text)?;
    let mut config = DetectorConfig::default();
    let tuning = file.detector;
    config.history = tuning.history.unwrap_or(config.history);
    config.min_history = tuning.min_history.unwrap_or(config.min_history);
    config.threshold_mads = tuning.threshold_mads.unwrap_or(config.threshold_mads);
    config.min_relative_change = tuning
        .min_relative_change
        .unwrap_or(config.min_relative_change);
    config.open_after = tuning.open_after.unwrap_or(config.open_after);
    config.resolve_after = tuning.resolve_after.unwrap_or(config.resolve_after);
    if tuning.season.is_some() {
        config.season = tuning.season;
    }
    if tuning.seasonal == Some(false) {
        config.season = None;
    }
    let invalid = |what: String| Err(RulesError::Invalid(what));
    if config.history == 0 || config.open_after == 0 || config.resolve_after == 0 {
        return invalid("history, open_after and resolve_after must be at least 1".into());
    }
    if config.min_history > config.history {
        return invalid(format!(
            "min_history ({}) cannot exceed history ({})",
            config.min_history, config.history
        ));
    }
    let non_negative = |x: f64| x >= 0.0; // false for NaN too
    if !non_negative(config.threshold_mads) || !non_negative(config.min_relative_change) {
        return invalid("threshold_mads and min_relative_change must be 0 or more".into());
    }
    if let Some(season) = config.season {
        if season.period < 2 || season.keep == 0 || season.min_periods > season.keep {
            return invalid(
                "season: period must be at least 2 windows, keep at least 1, min_periods at most keep"
                    .into(),
            );
        }
    }
    for (name, change) in file.series {
        let Some(series) = Series::from_name(&name) else {
            return invalid(format!(
                "unknown series {name:?}; known: {}",
                known_series()
            ));
        };
        let settings = config
            .series
            .entry(series)
            .or_insert_with(|| SeriesSettings::default_for(series));
        settings.watch = change.watch.unwrap_or(settings.watch);
        settings.min_change = change.min_change.unwrap_or(settings.min_change);
        if !non_negative(settings.min_change) {
            return invalid(format!("series {name}: min_change must be 0 or more"));
        }
    }
    let mut names = BTreeSet::new();
    for rule in &file.rule {
        if !names.insert(rule.name.clone()) {
            return invalid(format!("two rules are named {:?}", rule.name));
        }
        if rule.below.is_none() && rule.above.is_none() {
            return invalid(format!("rule {:?} has neither below nor above", rule.name));
        }
        if rule.windows == 0 {
            return invalid(format!("rule {:?}: windows must be at least 1", rule.name));
        }
    }
    config.rules = file.rule;
    Ok(config)
}

fn known_series() -> String {
    Series::ALL.map(Series::name).join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::Severity;

    #[test]
    fn a_file_tunes_the_detectors_and_adds_rules() {
        let config = parse_rules(
            r#"
            [detector]
            threshold_mads = 6.5
            seasonal = false
            [series.late]
            watch = "off"
            [[rule]]
            name = "checkout floor"
            series = "purchases"
            below = 1
            windows = 3
            "#,
        )
        .unwrap();
        assert_eq!(config.threshold_mads, 6.5);
        assert_eq!(config.season, None);
        assert_eq!(config.history, DetectorConfig::default().history);
        assert_eq!(config.series[&Series::Late].watch, Watch::Off);
        assert_eq!(config.rules.len(), 1);
        assert_eq!(config.rules[0].series, Series::Purchases);
        assert_eq!(config.rules[0].severity, Severity::Critical);
        assert_eq!(parse_rules("").unwrap(), DetectorConfig::default());
    }

    #[test]
    fn mistakes_are_refused_with_what_is_wrong() {
        let error = |text: &str| parse_rules(text).unwrap_err().to_string();
        assert!(error("[series.visits]\nwatch = \"both\"").contains("unknown series \"visits\""));
        assert!(error("[detector]\nhistroy = 3").contains("histroy"));
        assert!(error("[[rule]]\nname = \"a\"\nseries = \"clicks\"").contains("neither below"));
        assert!(error("[detector]\nmin_history = 100").contains("cannot exceed"));
        assert!(error("[[rule]]\nname = \"a\"\nseries = \"hits\"\nbelow = 1").contains("hits"));
    }
}
