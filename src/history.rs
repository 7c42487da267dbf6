//! The last hour of one target in 10 s buckets, for the status page's chart.
//!
//! Fixed size: one bucket per 10 s, at most an hour of them; a bucket keeps the maximum of each
//! signal (a spike between two ticks still shows) and whether the target was active at all.

use std::collections::VecDeque;

/// Seconds one bucket covers.
pub const BUCKET_SECS: f64 = 10.0;
/// Buckets kept: one hour.
pub const BUCKETS: usize = 360;

/// One bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Start of the bucket, Unix seconds.
    pub at_secs: f64,
    pub rps: f64,
    pub lag: f64,
    pub forecast: f64,
    pub active: bool,
}

/// A target's recent history.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Folds one evaluation at `wall_secs` into its bucket.
    pub fn observe(&mut self, wall_secs: f64, rps: f64, lag: f64, forecast: f64, active: bool) {
        let at_secs = (wall_secs / BUCKET_SECS).floor() * BUCKET_SECS;
        match self.samples.back_mut() {
            Some(last) if last.at_secs == at_secs => {
                last.rps = last.rps.max(rps);
                last.lag = last.lag.max(lag);
                last.forecast = last.forecast.max(forecast);
                last.active |= active;
            }
            _ => {
                if self.samples.len() == BUCKETS {
                    self.samples.pop_front();
                } else if self.samples.capacity() < BUCKETS {
                    self.samples.reserve_exact(BUCKETS - self.samples.len());
                }
                self.samples.push_back(Sample { at_secs, rps, lag, forecast, active });
            }
        }
    }

    /// Oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_keeps_the_peak_and_any_activity() {
        let mut h = History::default();
        h.observe(1000.0, 5.0, 0.0, 1.0, false);
        h.observe(1004.0, 2.0, 7.0, 3.0, true);
        h.observe(1009.9, 1.0, 1.0, 0.0, false);
        h.observe(1010.0, 0.0, 0.0, 0.0, false);
        let samples = h.samples();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0], Sample { at_secs: 1000.0, rps: 5.0, lag: 7.0, forecast: 3.0, active: true });
        assert_eq!(samples[1], Sample { at_secs: 1010.0, rps: 0.0, lag: 0.0, forecast: 0.0, active: false });
    }

    #[test]
    fn an_hour_is_kept_and_no_more() {
        let mut h = History::default();
        for i in 0..(BUCKETS + 50) {
            h.observe(i as f64 * BUCKET_SECS, i as f64, 0.0, 0.0, false);
        }
        let samples = h.samples();
        assert_eq!(samples.len(), BUCKETS);
        assert_eq!(samples[0].rps, 50.0, "the oldest buckets went first");
        assert!(h.samples.capacity() < 2 * BUCKETS, "allocated once, never grown past an hour");
    }
}
