//! Latency histogram with the buckets of `../shared/bench/wsload`
//! (log2 of microseconds, 8 sub-buckets per power of two; a percentile is
//! reported as its bucket's upper edge), so the two tools' figures for the
//! same run can be compared directly.

/// Number of buckets: up to 2^64 µs, far beyond any run.
const BUCKETS: usize = 64 * 8;

/// Counts of latencies per bucket.
#[derive(Clone)]
pub(crate) struct Hist(Box<[u64; BUCKETS]>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Box::new([0; BUCKETS]))
    }
}

impl Hist {
    /// Records one latency, in microseconds.
    pub(crate) fn record_us(&mut self, us: f64) {
        let b = if us < 1.0 {
            0
        } else {
            ((us.log2() * 8.0) as usize).min(BUCKETS - 1)
        };
        self.0[b] += 1;
    }

    /// Adds another histogram's counts.
    pub(crate) fn merge(&mut self, other: &Hist) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// Latencies recorded.
    pub(crate) fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `p` quantile (0 to 1) in milliseconds: the upper edge of the
    /// bucket holding it; 0 when empty.
    pub(crate) fn pct_ms(&self, p: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let want = ((p * total as f64).ceil() as u64).max(1);
        let mut run = 0;
        for (i, c) in self.0.iter().enumerate() {
            run += c;
            if run >= want {
                return 2f64.powf((i + 1) as f64 / 8.0) / 1000.0;
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_bucket_upper_edges() {
        let mut h = Hist::default();
        for _ in 0..99 {
            h.record_us(1000.0);
        }
        h.record_us(100_000.0);
        let p50 = h.pct_ms(0.5);
        assert!((1.0..1.1).contains(&p50), "{p50}");
        let max = h.pct_ms(1.0);
        assert!((100.0..110.0).contains(&max), "{max}");
        assert_eq!(h.pct_ms(0.99), p50);
        assert_eq!(Hist::default().pct_ms(0.5), 0.0);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        a.record_us(0.5);
        b.record_us(10.0);
        b.record_us(10.0);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert!(a.pct_ms(0.2) < 0.002);
    }
}
