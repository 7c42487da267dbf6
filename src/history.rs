//! The last hour of one target in 30 s buckets, for the status page's chart.
//!
//! Bounded: one bucket per 30 s, at most an hour of them (20 bytes each, grown as the target
//! lives, so tens of thousands of short-lived targets cost little). A bucket keeps the maximum of
//! each signal (a spike between two ticks still shows) and whether the target was active at all.
//!
//! Within the crate it may use no other module (a leaf).

use std::collections::VecDeque;

/// Seconds one bucket covers.
pub const BUCKET_SECS: f64 = 30.0;
/// Buckets kept: one hour.
pub const BUCKETS: usize = 120;

/// One bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Sample {
    /// Start of the bucket, Unix seconds.
    #[serde(rename = "at")]
    pub at_secs: f64,
    /// The highest request rate in the bucket, requests per second.
    pub rps: f64,
    /// The highest Kafka lag in the bucket, messages.
    pub lag: f64,
    /// The highest forecast request rate in the bucket, requests per second.
    pub forecast: f64,
    /// Whether the target was active at any evaluation in the bucket.
    pub active: bool,
}

/// A bucket as stored: single precision is plenty for a 60-pixel-high chart.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    at_secs: u32,
    rps: f32,
    lag: f32,
    forecast: f32,
    active: bool,
}

impl From<Bucket> for Sample {
    fn from(b: Bucket) -> Self {
        Sample {
            at_secs: f64::from(b.at_secs),
            rps: f64::from(b.rps),
            lag: f64::from(b.lag),
            forecast: f64::from(b.forecast),
            active: b.active,
        }
    }
}

/// A target's recent history.
#[derive(Debug, Default)]
pub struct History {
    buckets: VecDeque<Bucket>,
}

impl History {
    /// Folds one evaluation at `wall_secs` into its bucket.
    pub fn observe(&mut self, wall_secs: f64, rps: f64, lag: f64, forecast: f64, active: bool) {
        let at_secs = ((wall_secs / BUCKET_SECS).floor() * BUCKET_SECS).clamp(0.0, f64::from(u32::MAX)) as u32;
        let (rps, lag, forecast) = (rps as f32, lag as f32, forecast as f32);
        match self.buckets.back_mut() {
            Some(last) if last.at_secs == at_secs => {
                last.rps = last.rps.max(rps);
                last.lag = last.lag.max(lag);
                last.forecast = last.forecast.max(forecast);
                last.active |= active;
            }
            _ => {
                if self.buckets.len() == BUCKETS {
                    self.buckets.pop_front();
                }
                self.buckets.push_back(Bucket { at_secs, rps, lag, forecast, active });
            }
        }
    }

    /// Oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.buckets.iter().copied().map(Sample::from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_keeps_the_peak_and_any_activity() {
        let mut h = History::default();
        h.observe(1020.0, 5.0, 0.0, 1.0, false);
        h.observe(1024.0, 2.0, 7.0, 3.0, true);
        h.observe(1049.9, 1.0, 1.0, 0.0, false);
        h.observe(1050.0, 0.0, 0.0, 0.0, false);
        let samples = h.samples();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0], Sample { at_secs: 1020.0, rps: 5.0, lag: 7.0, forecast: 3.0, active: true });
        assert_eq!(samples[1], Sample { at_secs: 1050.0, rps: 0.0, lag: 0.0, forecast: 0.0, active: false });
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
        assert!(h.buckets.capacity() < 2 * BUCKETS, "never grown past an hour");
        assert_eq!(std::mem::size_of::<Bucket>(), 20);
    }
}
