//! How long events wait between arriving at a source and being committed.

/// A histogram of waits, in milliseconds (up to a minute; longer waits count as a minute),
/// weighted by the number of events that waited so long.
#[derive(Debug)]
pub struct Freshness {
    counts: Vec<u64>,
    total: u64,
}

const LIMIT_MS: usize = 60_000;

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            counts: vec![0; LIMIT_MS + 1],
            total: 0,
        }
    }
}

impl Freshness {
    /// Records that `events` waited `millis`.
    pub fn record(&mut self, millis: i64, events: u64) {
        let bucket = (millis.max(0) as usize).min(LIMIT_MS);
        self.counts[bucket] += events;
        self.total += events;
    }

    /// Events recorded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// For each bound (milliseconds, ascending), the events that waited at most that long.
    pub fn cumulative(&self, bounds_ms: &[i64]) -> Vec<u64> {
        let mut seen = 0;
        let mut next = 0;
        let mut counts = Vec::with_capacity(bounds_ms.len());
        for &bound in bounds_ms {
            let last = (bound.max(0) as usize).min(LIMIT_MS);
            while next <= last {
                seen += self.counts[next];
                next += 1;
            }
            counts.push(seen);
        }
        counts
    }

    /// The wait that `quantile` (0..=1) of the events did not exceed; `None` before any.
    pub fn quantile(&self, quantile: f64) -> Option<i64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total as f64) * quantile.clamp(0.0, 1.0))
            .ceil()
            .max(1.0) as u64;
        let mut seen = 0;
        for (millis, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(millis as i64);
            }
        }
        Some(LIMIT_MS as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_weighted_by_events() {
        let mut freshness = Freshness::default();
        assert_eq!(freshness.quantile(0.5), None);
        freshness.record(10, 98);
        freshness.record(250, 1);
        freshness.record(90_000, 1);
        assert_eq!(freshness.quantile(0.5), Some(10));
        assert_eq!(freshness.quantile(0.99), Some(250));
        assert_eq!(freshness.quantile(1.0), Some(60_000));
        assert_eq!(
            freshness.cumulative(&[5, 10, 300, 70_000]),
            vec![0, 98, 99, 100]
        );
        assert_eq!(freshness.total(), 100);
    }
}
