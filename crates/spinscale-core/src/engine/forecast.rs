//! The rate forecast for 1→N: Holt's linear method with a damped trend, plus a daily profile
//! (the mean rate at the same time of day on earlier days) once a full day has been seen.
//!
//! The forecast part of a decision is the maximum over `[now, now + horizon]` (scale up early,
//! down late). Fixed-size state: no allocation after construction.

use std::time::Duration;

/// Slots of the daily profile (15 minutes each).
pub const PROFILE_SLOTS: usize = 96;
const DAY_SECS: f64 = 86_400.0;
const SLOT_SECS: f64 = DAY_SECS / PROFILE_SLOTS as f64;
/// Steps of Holt's forecast examined over the horizon, at most.
const MAX_HORIZON_STEPS: u32 = 120;

/// Smoothing factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForecastParams {
    /// Level smoothing (0..1].
    pub alpha: f64,
    /// Trend smoothing (0..1].
    pub beta: f64,
    /// Trend damping per step (0..1].
    pub phi: f64,
    /// Weight of the newest day in the daily profile (0..1].
    pub gamma: f64,
}

impl Default for ForecastParams {
    fn default() -> Self {
        Self { alpha: 0.5, beta: 0.1, phi: 0.9, gamma: 0.3 }
    }
}

/// One target's forecast state.
#[derive(Clone, Debug)]
pub struct Forecaster {
    params: ForecastParams,
    level: f64,
    trend: f64,
    started: Option<f64>,
    profile: [f64; PROFILE_SLOTS],
    profile_seen: [bool; PROFILE_SLOTS],
    slot: Option<usize>,
    slot_sum: f64,
    slot_n: u32,
}

impl Forecaster {
    /// A forecaster that has seen nothing yet: no level, no trend, an empty daily profile.
    pub fn new(params: ForecastParams) -> Self {
        Self {
            params,
            level: 0.0,
            trend: 0.0,
            started: None,
            profile: [0.0; PROFILE_SLOTS],
            profile_seen: [false; PROFILE_SLOTS],
            slot: None,
            slot_sum: 0.0,
            slot_n: 0,
        }
    }

    /// Takes one rate reading, `wall_secs` seconds after the Unix epoch.
    pub fn observe(&mut self, rate: f64, wall_secs: f64) {
        let p = self.params;
        if self.started.is_none() {
            self.started = Some(wall_secs);
            self.level = rate;
        } else {
            let previous = self.level;
            self.level = p.alpha * rate + (1.0 - p.alpha) * (previous + p.phi * self.trend);
            self.trend = p.beta * (self.level - previous) + (1.0 - p.beta) * p.phi * self.trend;
        }
        let slot = slot_of(wall_secs);
        if self.slot != Some(slot) {
            self.close_slot();
            self.slot = Some(slot);
        }
        self.slot_sum += rate;
        self.slot_n += 1;
    }

    fn close_slot(&mut self) {
        if let (Some(s), true) = (self.slot, self.slot_n > 0) {
            let mean = self.slot_sum / self.slot_n as f64;
            self.profile[s] = if self.profile_seen[s] {
                (1.0 - self.params.gamma) * self.profile[s] + self.params.gamma * mean
            } else {
                mean
            };
            self.profile_seen[s] = true;
        }
        self.slot_sum = 0.0;
        self.slot_n = 0;
    }

    /// Elements held in its buffers: the daily profile and which of its slots are filled.
    pub fn footprint(&self) -> usize {
        self.profile.len() + self.profile_seen.len()
    }

    /// Whether a full day of history exists, so the daily profile is used.
    pub fn has_day(&self, wall_secs: f64) -> bool {
        self.started.is_some_and(|s| wall_secs - s >= DAY_SECS)
    }

    /// The highest rate expected over `[now, now + horizon]`, steps of `step` apart.
    pub fn max_ahead(&self, wall_secs: f64, horizon: Duration, step: Duration) -> f64 {
        if self.started.is_none() {
            return 0.0;
        }
        let steps = if step.is_zero() { 0 } else { (horizon.as_secs_f64() / step.as_secs_f64()).ceil() as u32 };
        let mut best = self.level;
        let mut damp = 0.0;
        let mut phi_k = 1.0;
        for _ in 0..steps.min(MAX_HORIZON_STEPS) {
            phi_k *= self.params.phi;
            damp += phi_k;
            best = best.max(self.level + damp * self.trend);
        }
        if self.has_day(wall_secs) {
            let (now, end) = (slot_of(wall_secs), slot_of(wall_secs + horizon.as_secs_f64()));
            let mut s = now;
            loop {
                if self.profile_seen[s] {
                    best = best.max(self.profile[s]);
                }
                if s == end {
                    break;
                }
                s = (s + 1) % PROFILE_SLOTS;
            }
        }
        best.max(0.0)
    }
}

fn slot_of(wall_secs: f64) -> usize {
    ((wall_secs.rem_euclid(DAY_SECS) / SLOT_SECS) as usize).min(PROFILE_SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_rising_rate_is_forecast_above_its_last_value() {
        let mut f = Forecaster::new(ForecastParams::default());
        for k in 0..30 {
            f.observe(k as f64, k as f64 * 60.0);
        }
        let ahead = f.max_ahead(29.0 * 60.0, 5 * MIN, MIN);
        assert!(ahead > 29.0, "{ahead}");
        assert!(ahead < 40.0, "the damped trend does not run away: {ahead}");
    }

    #[test]
    fn a_falling_rate_is_held_at_its_current_level() {
        let mut f = Forecaster::new(ForecastParams::default());
        for k in 0..30 {
            f.observe(100.0 - k as f64, k as f64 * 60.0);
        }
        let ahead = f.max_ahead(29.0 * 60.0, 5 * MIN, MIN);
        assert!((ahead - f.level).abs() < 1e-9, "scale down late: {ahead} vs level {}", f.level);
    }

    #[test]
    fn a_daily_peak_is_forecast_from_the_previous_day() {
        let mut f = Forecaster::new(ForecastParams::default());
        // Two days at 1/min; a 50/min peak from 12:00 to 13:00 each day.
        let rate = |minute: u64| if (720..780).contains(&(minute % 1440)) { 50.0 } else { 1.0 };
        for m in 0..(1440 + 700) {
            f.observe(rate(m), m as f64 * 60.0);
        }
        let now = (1440.0 + 700.0) * 60.0;
        assert!(f.has_day(now));
        let ahead = f.max_ahead(now, 30 * MIN, MIN);
        assert!(ahead > 40.0, "the peak 20 minutes ahead is seen: {ahead}");
        let quiet = f.max_ahead(now, 5 * MIN, MIN);
        assert!(quiet < 5.0, "but not 5 minutes ahead: {quiet}");
    }

    #[test]
    fn no_profile_is_used_before_a_full_day() {
        let mut f = Forecaster::new(ForecastParams::default());
        for m in 0..600 {
            f.observe(if m < 60 { 50.0 } else { 0.0 }, m as f64 * 60.0);
        }
        assert!(!f.has_day(600.0 * 60.0));
        assert!(f.max_ahead(600.0 * 60.0, 60 * MIN, MIN) < 1e-6);
    }
}
