//! Per-app request counts: a total, the requests in flight, and a ring of per-second counts
//! for the rate. Recording a request is a few atomic operations and never allocates.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Seconds kept by the ring; a rate window is at most `RING - 1` seconds long.
const RING: usize = 64;
/// The longest window [`Activator::rate`](super::Activator::rate) counts over.
pub const MAX_WINDOW: Duration = Duration::from_secs(RING as u64 - 1);

/// What [`Activator::stats`](super::Activator::stats) reports for an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteStats {
    /// Every request routed to the app since its route was first set (held, refused or forwarded).
    pub requests_total: u64,
    /// Forwarded requests whose response has not finished (an upgraded connection counts until it closes).
    pub in_flight: usize,
    /// Requests waiting for a ready backend.
    pub held: usize,
    /// Whether requests go straight to the backend.
    pub backend_ready: bool,
}

/// One app's counts.
pub(super) struct Stats {
    epoch: Instant,
    total: AtomicU64,
    in_flight: AtomicUsize,
    /// Slot `s % RING` holds `(s << 32) | count` for second `s` since `epoch`.
    seconds: [AtomicU64; RING],
}

impl Stats {
    /// Nothing counted; seconds are numbered from `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            total: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            seconds: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs()
    }

    /// Counts one request arriving at `at`.
    pub fn record(&self, at: Instant) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let second = self.second(at);
        let slot = &self.seconds[second as usize % RING];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let next = if current >> 32 == (second & 0xffff_ffff) { current + 1 } else { (second << 32) | 1 };
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// Requests per second over the last `window` (whole seconds, the current one included,
    /// between 1 and [`MAX_WINDOW`]).
    pub fn rate(&self, now: Instant, window: Duration) -> f64 {
        let seconds = window.as_secs_f64().ceil().clamp(1.0, MAX_WINDOW.as_secs_f64()) as u64;
        let now = self.second(now);
        let first = now.saturating_sub(seconds - 1);
        let count: u64 = (first..=now)
            .map(|s| {
                let packed = self.seconds[s as usize % RING].load(Ordering::Relaxed);
                if packed >> 32 == (s & 0xffff_ffff) { packed & 0xffff_ffff } else { 0 }
            })
            .sum();
        count as f64 / seconds as f64
    }

    /// Every request recorded.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Forwarded requests not finished yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one forwarded request until the returned guard drops.
    pub fn start(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// One forwarded request in flight.
pub(super) struct InFlight(std::sync::Arc<Stats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_counts_whole_seconds_in_the_window() {
        let epoch = Instant::now();
        let stats = Stats::new(epoch);
        for s in 0..10u64 {
            for _ in 0..(s + 1) {
                stats.record(epoch + Duration::from_secs(s) + Duration::from_millis(500));
            }
        }
        let now = epoch + Duration::from_millis(9_900);
        assert_eq!(stats.total(), 55);
        assert_eq!(stats.rate(now, Duration::from_secs(10)), 5.5);
        assert_eq!(stats.rate(now, Duration::from_secs(2)), (10.0 + 9.0) / 2.0);
        // A slot reused a ring later forgets its old second.
        stats.record(epoch + Duration::from_secs(RING as u64 + 3));
        assert_eq!(stats.rate(epoch + Duration::from_secs(RING as u64 + 3), Duration::from_secs(1)), 1.0);
        assert_eq!(stats.rate(epoch + Duration::from_secs(200), Duration::from_secs(30)), 0.0);
    }

    #[test]
    fn in_flight_follows_guards() {
        let stats = std::sync::Arc::new(Stats::new(Instant::now()));
        let a = stats.start();
        let b = stats.start();
        assert_eq!(stats.in_flight(), 2);
        drop(a);
        drop(b);
        assert_eq!(stats.in_flight(), 0);
    }
}
