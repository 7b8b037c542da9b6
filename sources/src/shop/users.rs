//! The shop's shoppers and its traffic: who comes, how often, and at what hour.
//!
//! Shoppers are numbered `0..users`. Nothing is stored per shopper: a shopper's buying
//! propensity is a hash of the seed and the number, so a pool of millions costs nothing.
//! Visits pick shoppers unevenly (shopper `⌊users · u²⌋` for a uniform `u`): a few regulars
//! come back often, most shoppers rarely. With the default pool, a shopper returns after days
//! on average, and only a small share of the pool is active in any minute.
//!
//! Traffic follows the hour of day (UTC): `1 + rhythm · cos(2π (hour − 20) / 24)` times the
//! mean rate, busiest at 20:00 and quietest at 08:00 (with `rhythm = 0.5`, three times as
//! many visits at the peak as in the trough).

use std::f64::consts::TAU;

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::event::EventTime;

const DAY_MS: f64 = 86_400_000.0;

/// The busiest hour of the day (UTC).
const PEAK_HOUR: f64 = 20.0;

/// The pool of shoppers.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shoppers {
    seed: u64,
    users: u32,
}

impl Shoppers {
    pub(super) fn new(seed: u64, users: u32) -> Shoppers {
        Shoppers {
            seed,
            users: users.max(1),
        }
    }

    /// The shopper of a new visit, from a uniform draw in [0, 1).
    pub(super) fn pick(&self, roll: f64) -> u32 {
        ((f64::from(self.users) * roll * roll) as u32).min(self.users - 1)
    }

    /// A shopper's buying propensity in [0, 1): most shoppers rarely buy, a few often.
    pub(super) fn propensity(&self, user: u32) -> f64 {
        let hash = xxh3_64_with_seed(&user.to_le_bytes(), self.seed);
        let uniform = (hash >> 11) as f64 / (1u64 << 53) as f64;
        uniform * uniform
    }
}

/// The traffic multiplier at event time `ts` (mean 1 over a day).
pub(super) fn rhythm(ts: EventTime, amplitude: f64) -> f64 {
    if amplitude <= 0.0 {
        return 1.0;
    }
    let hour = ts.rem_euclid(DAY_MS as i64) as f64 / DAY_MS * 24.0;
    1.0 + amplitude.min(0.95) * (TAU * (hour - PEAK_HOUR) / 24.0).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rhythm_peaks_in_the_evening_and_averages_one() {
        let hour = |h: i64| h * 3_600_000;
        assert!((rhythm(hour(20), 0.5) - 1.5).abs() < 1e-9);
        assert!((rhythm(hour(8), 0.5) - 0.5).abs() < 1e-9);
        let mean: f64 = (0..24 * 60).map(|m| rhythm(m * 60_000, 0.5)).sum::<f64>() / (24.0 * 60.0);
        assert!((mean - 1.0).abs() < 1e-9);
        assert_eq!(rhythm(hour(3), 0.0), 1.0);
    }

    #[test]
    fn regulars_are_picked_more_often_and_propensity_is_fixed_per_shopper() {
        let shoppers = Shoppers::new(7, 1_000_000);
        assert_eq!(shoppers.pick(0.0), 0);
        assert_eq!(shoppers.pick(0.999_999_999), 999_999);
        // A tenth of the visits go to the first 1% of shoppers.
        assert_eq!(shoppers.pick(0.1), 10_000);
        assert_eq!(shoppers.propensity(5), shoppers.propensity(5));
        let mean: f64 = (0..10_000).map(|u| shoppers.propensity(u)).sum::<f64>() / 10_000.0;
        assert!((mean - 1.0 / 3.0).abs() < 0.02, "{mean}");
    }
}
