//! Incidents the shop can stage at given event times, so that anomaly alerts can be shown
//! and measured: what a shop's on-call sees go wrong.
//!
//! Written `KIND@AFTER/LASTING` (`checkout-outage@2h/20m`: from two hours after the shop's
//! first event, for twenty minutes), with durations in humantime's notation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::event::EventTime;

/// What goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IncidentKind {
    /// Three times the visits (a campaign, a bot, a link on the front page).
    Spike,
    /// A third of the visits (a broken landing page, a DNS problem).
    Drop,
    /// No purchase goes through while visits and cart adds go on (the payment provider is
    /// down).
    CheckoutOutage,
    /// Nine in ten cart adds fail (a front-end bug on the product page).
    CartBug,
    /// Three in ten payloads are malformed (a client release that sends broken events).
    MalformedStorm,
}

impl IncidentKind {
    /// Every kind, in the order of the README.
    pub const ALL: [IncidentKind; 5] = [
        IncidentKind::Spike,
        IncidentKind::Drop,
        IncidentKind::CheckoutOutage,
        IncidentKind::CartBug,
        IncidentKind::MalformedStorm,
    ];

    /// The name in `KIND@AFTER/LASTING`.
    pub fn name(self) -> &'static str {
        match self {
            IncidentKind::Spike => "spike",
            IncidentKind::Drop => "drop",
            IncidentKind::CheckoutOutage => "checkout-outage",
            IncidentKind::CartBug => "cart-bug",
            IncidentKind::MalformedStorm => "malformed-storm",
        }
    }

    /// How visits arrive during the incident, relative to normal.
    pub(crate) fn traffic_factor(self) -> f64 {
        match self {
            IncidentKind::Spike => 3.0,
            IncidentKind::Drop => 1.0 / 3.0,
            _ => 1.0,
        }
    }
}

/// One staged incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incident {
    /// What goes wrong.
    pub kind: IncidentKind,
    /// When it begins, in milliseconds after the shop's first event.
    pub after_ms: i64,
    /// How long it lasts, in milliseconds.
    pub lasting_ms: i64,
}

impl Incident {
    /// True when event time `ts` of a shop starting at `start_ms` falls inside it.
    pub fn covers(&self, start_ms: EventTime, ts: EventTime) -> bool {
        let from = start_ms + self.after_ms;
        from <= ts && ts < from + self.lasting_ms
    }
}

impl fmt::Display for Incident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |ms: i64| humantime::format_duration(Duration::from_millis(ms.max(0) as u64));
        write!(
            f,
            "{}@{}/{}",
            self.kind.name(),
            at(self.after_ms),
            at(self.lasting_ms)
        )
    }
}

/// Why an incident could not be read.
#[derive(Debug, thiserror::Error)]
#[error("incident {text:?}: {why} (expected KIND@AFTER/LASTING, e.g. checkout-outage@2h/20m; kinds: spike, drop, checkout-outage, cart-bug, malformed-storm)")]
pub struct IncidentError {
    text: String,
    why: String,
}

impl FromStr for Incident {
    type Err = IncidentError;

    fn from_str(text: &str) -> Result<Incident, IncidentError> {
        let fail = |why: &str| IncidentError {
            text: text.to_string(),
            why: why.to_string(),
        };
        let (kind, when) = text.split_once('@').ok_or_else(|| fail("no '@'"))?;
        let (after, lasting) = when.split_once('/').ok_or_else(|| fail("no '/'"))?;
        let kind = IncidentKind::ALL
            .into_iter()
            .find(|k| k.name() == kind.trim())
            .ok_or_else(|| fail("unknown kind"))?;
        let duration = |s: &str| {
            humantime::parse_duration(s.trim())
                .map(|d| d.as_millis() as i64)
                .map_err(|e| fail(&e.to_string()))
        };
        let incident = Incident {
            kind,
            after_ms: duration(after)?,
            lasting_ms: duration(lasting)?,
        };
        if incident.lasting_ms <= 0 {
            return Err(fail("it must last longer than 0"));
        }
        Ok(incident)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_read_and_print_in_one_notation() {
        let incident: Incident = "checkout-outage@2h/20m".parse().unwrap();
        assert_eq!(incident.kind, IncidentKind::CheckoutOutage);
        assert_eq!(incident.after_ms, 7_200_000);
        assert_eq!(incident.lasting_ms, 1_200_000);
        assert_eq!(incident.to_string(), "checkout-outage@2h/20m");
        assert!(incident.covers(0, 7_200_000) && !incident.covers(0, 8_400_000));
        for bad in [
            "spike",
            "spike@1h",
            "flood@1h/5m",
            "drop@1h/0s",
            "drop@soon/5m",
        ] {
            assert!(bad.parse::<Incident>().is_err(), "{bad}");
        }
    }
}
