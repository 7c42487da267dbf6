//! One target's stateful engine: the reactive floor of [`decide`], then the idle-time model,
//! the rate forecast and the schedule on top. The server runs one per target on the wall clock;
//! `spinscale simulate` runs the very same type on a virtual clock.
//!
//! Time comes in as a [`Now`] argument: the engine never reads a clock.

use std::time::Duration;

use serde::Deserialize;

use super::decision::{Decision, Inputs, Reason, decide};
use super::forecast::{ForecastParams, Forecaster};
use super::idle::{BinLayout, IdleModel, IdleParams, WindowRule};
use crate::duration;
use crate::duration::Dur;
use crate::quantity::GI;
use crate::spec::schedule::{Schedule, ScheduleState};
use crate::spec::{LagRules, PredictiveMode, PredictiveSpec, RateRules, TargetSpec};

/// The time of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Now {
    /// Monotonic time since any fixed origin (gaps and windows are measured on it).
    pub mono: Duration,
    /// Wall-clock time, seconds since the Unix epoch (time of day and cron schedules).
    pub wall_secs: f64,
}

/// The `engine:` section of the config: knobs of the predictive engine, shared by every target.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EngineSettings {
    /// While a target has fewer than `minGaps` idle gaps and no cold start to spare under
    /// `coldStartBudget`, it is kept alive this long after activity (ski rental), for a 1 GiB
    /// instance: longer for smaller ones (their idle time costs less), at most `maxKeepAlive`.
    pub keep_alive: Dur,
    /// The longest keep-alive or pre-warm window.
    pub max_keep_alive: Dur,
    /// Shortest idle gap the histogram resolves (its first bin).
    pub histogram_min: Dur,
    /// Longest idle gap the histogram holds; longer gaps go to the time-of-day memory.
    pub histogram_max: Dur,
    /// Log-spaced bins between `histogramMin` and `histogramMax`.
    pub histogram_bins: usize,
    /// Idle gaps seen before the histogram alone decides (the `keepAlive` fallback ends). Pre-warms
    /// are tried from the second gap on.
    pub min_gaps: u32,
    /// The share of a target's requests that may meet a cold start. A target that can take its next
    /// cold start within it is held only by the windows `coldStartWorth` pays for; one that cannot is
    /// also kept alive for `keepAlive` until it has `minGaps` gaps. 0: every target gets the fallback.
    pub cold_start_budget: f64,
    /// What one cold start avoided is worth, in idle time of a 1 GiB instance (scaled by the trigger's
    /// `instanceMemory`: an app of 128Mi gets 8 times as much). Windows are chosen for the most
    /// `worth × gaps caught − idle time`: one price of memory per cold start for every app.
    pub cold_start_worth: Dur,
    /// A pre-warm starts at most this fraction before the gaps of its window (and `leadTime` and one tick);
    /// less when their bin holds gaps of one length (timers).
    pub head_margin: f64,
    /// A window ends this fraction after the longest gap it covers.
    pub tail_margin: f64,
    /// How long a target is pre-warmed on each side of a remembered time-of-day wake (0s = off).
    pub time_of_day_window: Dur,
    /// `full`: activate when the forecast expects at least this many requests within `leadTime` + one tick.
    pub forecast_activation: f64,
    /// Holt level smoothing.
    pub forecast_alpha: f64,
    /// Holt trend smoothing.
    pub forecast_beta: f64,
    /// Holt trend damping per step.
    pub forecast_phi: f64,
    /// Weight of the newest day in the daily profile.
    pub forecast_gamma: f64,
    /// How long a target stays active after a scheduled wake.
    pub schedule_hold: Dur,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            // Tuned on the Azure 100-function sample and NASA July (README, "Predictive activation").
            keep_alive: Dur(Duration::from_secs(8 * 3600)),
            max_keep_alive: Dur(Duration::from_secs(24 * 3600)),
            histogram_min: Dur(Duration::from_secs(1)),
            histogram_max: Dur(Duration::from_secs(24 * 3600)),
            histogram_bins: 120,
            min_gaps: 15,
            // A first burst of 12.5 requests or more leaves a cold start to spare (0.09 needed 14, the
            // size of many of the samples' bursts: the memory saved fell off a step just below it).
            cold_start_budget: 0.1,
            cold_start_worth: Dur(Duration::from_secs(12 * 3600)),
            head_margin: 0.05,
            tail_margin: 1.0,
            time_of_day_window: Dur(Duration::from_secs(5 * 60)),
            forecast_activation: 10.0,
            forecast_alpha: 0.5,
            forecast_beta: 0.1,
            forecast_phi: 0.9,
            forecast_gamma: 0.3,
            schedule_hold: Dur(Duration::from_secs(60)),
        }
    }
}

impl EngineSettings {
    /// Every problem with these settings, each naming its field (`engine.<field>`).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut fraction = |name: &str, v: f64, lo: f64, hi: f64, lo_open: bool| {
            let ok = v.is_finite() && (if lo_open { v > lo } else { v >= lo }) && v <= hi;
            if !ok {
                let open = if lo_open { "(" } else { "[" };
                problems.push(format!("engine.{name}: {v} is not in {open}{lo}, {hi}]"));
            }
        };
        fraction("coldStartBudget", self.cold_start_budget, 0.0, 1.0, false);
        fraction("headMargin", self.head_margin, 0.0, 0.9, false);
        fraction("tailMargin", self.tail_margin, 0.0, 10.0, false);
        fraction("forecastActivation", self.forecast_activation, 0.0, f64::MAX, true);
        fraction("forecastAlpha", self.forecast_alpha, 0.0, 1.0, true);
        fraction("forecastBeta", self.forecast_beta, 0.0, 1.0, true);
        fraction("forecastPhi", self.forecast_phi, 0.0, 1.0, true);
        fraction("forecastGamma", self.forecast_gamma, 0.0, 1.0, true);
        if !(4..=1024).contains(&self.histogram_bins) {
            problems.push(format!("engine.histogramBins: {} is not in 4..=1024", self.histogram_bins));
        }
        if self.histogram_min.0.is_zero() || self.histogram_min.0 >= self.histogram_max.0 {
            problems.push(format!(
                "engine.histogramMin: {} must be above 0 and below engine.histogramMax ({})",
                duration::format(self.histogram_min.0),
                duration::format(self.histogram_max.0)
            ));
        }
        if self.cold_start_worth.0.is_zero() {
            problems.push("engine.coldStartWorth: must be above 0s".into());
        }
        if self.keep_alive.0 > self.max_keep_alive.0 {
            problems.push(format!(
                "engine.keepAlive: {} is above engine.maxKeepAlive ({})",
                duration::format(self.keep_alive.0),
                duration::format(self.max_keep_alive.0)
            ));
        }
        problems
    }

    /// The idle-model parameters these settings give for an instance of `instance_memory` bytes
    /// (`None`: 1 GiB).
    pub fn idle_params(&self, instance_memory: Option<u64>) -> IdleParams {
        IdleParams {
            bins: BinLayout::Log { min: self.histogram_min.0, max: self.histogram_max.0, count: self.histogram_bins },
            rule: WindowRule::Budget { budget: self.cold_start_budget, worth: self.cold_start_worth.0 },
            head: 0.05,
            tail: 0.99,
            head_margin: self.head_margin,
            tail_margin: self.tail_margin,
            min_gaps: self.min_gaps,
            min_cv: 0.0,
            fallback_keep_alive: self.keep_alive.0,
            max_keep_alive: self.max_keep_alive.0,
            min_unloaded_ticks: 1.0,
            decay_at: 1000,
            time_of_day_window: self.time_of_day_window.0,
            idle_cost: instance_memory.map_or(1.0, |bytes| bytes as f64 / GI),
        }
    }

    /// The engine parameters for one target.
    pub fn params(&self, spec: &PredictiveSpec) -> EngineParams {
        EngineParams {
            mode: spec.mode,
            lead_time: spec.lead_time,
            schedule: spec.schedule.clone(),
            idle: self.idle_params(spec.instance_memory),
            forecast: ForecastParams {
                alpha: self.forecast_alpha,
                beta: self.forecast_beta,
                phi: self.forecast_phi,
                gamma: self.forecast_gamma,
            },
            forecast_activation: self.forecast_activation,
            schedule_hold: self.schedule_hold.0,
        }
    }
}

/// Everything one target's engine needs besides its rules.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineParams {
    /// The trigger's `predictive`: which models run on top of the reactive floor.
    pub mode: PredictiveMode,
    /// The trigger's `leadTime`: pre-warms, forecasts and scheduled wakes look this far ahead.
    pub lead_time: Duration,
    /// The trigger's `schedule`: known wake times, if any.
    pub schedule: Option<Schedule>,
    /// The idle-time model's knobs, from `engine:` and the trigger's `instanceMemory`.
    pub idle: IdleParams,
    /// The forecast's smoothing factors (`engine.forecastAlpha` and the like).
    pub forecast: ForecastParams,
    /// `full`: requests the forecast must expect within `leadTime` + one tick to activate (`engine.forecastActivation`).
    pub forecast_activation: f64,
    /// How long a target stays active after a scheduled wake (`engine.scheduleHold`).
    pub schedule_hold: Duration,
}

/// One target's engine: fixed-size state, no allocation per step.
#[derive(Clone, Debug)]
pub struct TargetEngine {
    rate: RateRules,
    lag: LagRules,
    mode: PredictiveMode,
    lead_time: Duration,
    forecast_activation: f64,
    schedule_hold: Duration,
    idle: IdleModel,
    forecast: Forecaster,
    schedule: Option<ScheduleState>,
    last_step: Option<Duration>,
    tick: Duration,
    /// The latest forecast's maximum over the lead time, in requests per second.
    last_forecast: f64,
    /// Whether the latest decision was active: activity after an inactive one is a cold start.
    was_active: bool,
}

impl TargetEngine {
    /// The engine for a parsed trigger.
    pub fn for_spec(spec: &TargetSpec, settings: &EngineSettings) -> Self {
        let params = settings.params(&spec.predictive);
        Self::new(spec.rate.clone(), spec.lag.clone(), params)
    }

    /// An engine that has seen nothing yet, with a one-second tick until steps show the real one.
    pub fn new(rate: RateRules, lag: LagRules, params: EngineParams) -> Self {
        Self {
            rate,
            lag,
            mode: params.mode,
            lead_time: params.lead_time,
            forecast_activation: params.forecast_activation,
            schedule_hold: params.schedule_hold,
            idle: IdleModel::new(params.idle),
            forecast: Forecaster::new(params.forecast),
            schedule: params.schedule.map(ScheduleState::new),
            last_step: None,
            tick: Duration::from_secs(1),
            last_forecast: 0.0,
            was_active: false,
        }
    }

    /// The rate the forecast expects within the lead time, in requests per second (0 unless `full`).
    pub fn forecast(&self) -> f64 {
        self.last_forecast
    }

    /// The idle-time model's state (its histogram tells how many gaps were learned).
    pub fn idle_model(&self) -> &IdleModel {
        &self.idle
    }

    /// Elements held in this target's buffers (idle histogram, time-of-day ring, daily profile). All
    /// are sized when the engine is built, so this stays the same however many steps it takes: the
    /// per-target memory bound that lets 10,000 targets fit (DESIGN.md §5).
    pub fn footprint(&self) -> usize {
        self.idle.footprint() + self.forecast.footprint()
    }

    /// The reactive decision alone, learning nothing: for moments when a source has no usable
    /// reading, so an outage is not learned as an idle gap or a drop in the rate.
    pub fn reactive(&self, inputs: &Inputs) -> Decision {
        decide(&self.rate, &self.lag, inputs)
    }

    /// Decides at `now` from the current readings. Never inactive while a signal is above its
    /// activation threshold.
    pub fn step(&mut self, now: Now, inputs: &Inputs) -> Decision {
        let mut d = decide(&self.rate, &self.lag, inputs);
        let cold = d.active && !self.was_active;
        // Requests since the previous step: the server also steps between ticks, on every reading.
        let since_previous = self.last_step.map_or(self.tick, |p| now.mono.saturating_sub(p)).min(self.tick);
        if let Some(previous) = self.last_step
            && now.mono > previous
        {
            // The server steps on every tick and every reading, so spacings jitter below the tick:
            // follow a longer spacing at once, a shorter one slowly.
            self.tick = (now.mono - previous).max(self.tick.mul_f64(0.9));
        }
        self.last_step = Some(now.mono);
        let day_secs = now.wall_secs.rem_euclid(86_400.0);
        if self.mode != PredictiveMode::Off {
            if d.active {
                let requests = d.rps * since_previous.as_secs_f64();
                self.idle.on_activity(now.mono, day_secs, requests, cold);
            } else if let Some(reason) = self.idle.on_quiet(now.mono, day_secs, self.tick, self.lead_time) {
                d.active = true;
                d.reason = reason;
            }
        }
        if self.mode == PredictiveMode::Full {
            self.forecast.observe(d.rps, now.wall_secs);
            let horizon = self.lead_time + self.tick;
            let expected = self.forecast.max_ahead(now.wall_secs, horizon, self.tick);
            self.last_forecast = if expected.is_finite() { expected.max(0.0) } else { 0.0 };
            let part = expected / self.rate.target_rps;
            if part.is_finite() && part > d.desired_replicas {
                d.desired_replicas = part;
            }
            if !d.active && expected * horizon.as_secs_f64() >= self.forecast_activation {
                d.active = true;
                d.reason = Reason::Forecast;
            }
        }
        if let Some(schedule) = &mut self.schedule {
            let ahead = (self.lead_time + self.tick).as_secs_f64().ceil() as i64;
            if schedule.wants_active(now.wall_secs.floor() as i64, ahead, self.schedule_hold.as_secs() as i64)
                && !d.active
            {
                d.active = true;
                d.reason = Reason::Schedule;
            }
        }
        self.was_active = d.active;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LagSummary;
    use crate::spec::PredictiveMode;

    const MIN: Duration = Duration::from_secs(60);
    /// 2026-01-05 00:00:00 UTC.
    const EPOCH: f64 = 1_767_571_200.0;

    fn engine(mode: PredictiveMode, schedule: Option<&str>) -> TargetEngine {
        engine_with_lead(mode, schedule, Duration::ZERO)
    }

    fn engine_with_lead(mode: PredictiveMode, schedule: Option<&str>, lead: Duration) -> TargetEngine {
        let settings = EngineSettings::default();
        let schedule = schedule.map(|s| Schedule::parse(s).unwrap());
        let rate = RateRules { target_rps: 1.0, activation_rps: 0.0 };
        let spec = PredictiveSpec { mode, lead_time: lead, schedule, instance_memory: None };
        TargetEngine::new(rate, LagRules::default(), settings.params(&spec))
    }

    fn at(minute: u64) -> Now {
        Now { mono: MIN * minute as u32, wall_secs: EPOCH + (minute * 60) as f64 }
    }

    fn rps(r: f64) -> Inputs {
        Inputs { rps: Some(r), ..Inputs::default() }
    }

    #[test]
    fn the_engine_is_never_inactive_while_a_signal_is_above_its_threshold() {
        // Whatever the history, a reading above a threshold is active: random-ish patterns in every mode.
        for mode in [PredictiveMode::Off, PredictiveMode::Idle, PredictiveMode::Full] {
            let mut e = engine(mode, Some("*/7 * * * *"));
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for m in 0..5000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (r, lag) =
                    (if x.is_multiple_of(5) { (x % 100) as f64 / 10.0 } else { 0.0 }, (x >> 8).is_multiple_of(7));
                let inputs = Inputs {
                    rps: Some(r),
                    lag: lag.then_some(LagSummary {
                        lag: 3.0,
                        lag_with_persistent: 3.0,
                        partitions: 1,
                        partitions_with_lag: 1,
                    }),
                    held: false,
                };
                let d = e.step(at(m), &inputs);
                if r > 0.0 || lag {
                    assert!(d.active, "{mode:?} minute {m}: inactive with rps {r}, lag {lag}");
                    assert!(matches!(d.reason, Reason::Rps | Reason::Lag), "{mode:?} minute {m}: {:?}", d.reason);
                }
            }
        }
    }

    #[test]
    fn off_is_the_reactive_floor_alone() {
        let mut e = engine(PredictiveMode::Off, None);
        assert!(e.step(at(0), &rps(2.0)).active);
        let d = e.step(at(1), &rps(0.0));
        assert_eq!((d.active, d.reason), (false, Reason::Idle));
    }

    #[test]
    fn readings_between_ticks_do_not_count_requests_twice() {
        // The server steps on every tick and on every reading: a minute at 2 rps is 120 requests
        // whether one step or four see it.
        let (mut once, mut often) = (engine(PredictiveMode::Idle, None), engine(PredictiveMode::Idle, None));
        for m in 0..3 {
            once.step(at(m), &rps(0.0));
            often.step(at(m), &rps(0.0));
        }
        once.step(at(3), &rps(2.0));
        for quarter in 1..=4 {
            let t = MIN * 2 + Duration::from_secs(15 * quarter);
            often.step(Now { mono: t, wall_secs: EPOCH + t.as_secs_f64() }, &rps(2.0));
        }
        let rate = |e: &TargetEngine| e.idle_model().cold_start_rate();
        assert_eq!((rate(&once), rate(&often)), (1.0 / 120.0, 1.0 / 120.0), "one cold start in 120 requests");
    }

    #[test]
    fn a_periodic_target_is_pre_warmed_before_its_next_run() {
        // One request every 40 minutes: no cold start to spare, so each run is caught.
        let mut e = engine(PredictiveMode::Idle, None);
        let mut reasons = Vec::new();
        for m in 0..800 {
            let d = e.step(at(m), &rps(if m % 40 == 0 { 1.0 / 60.0 } else { 0.0 }));
            reasons.push(d.reason);
        }
        assert_eq!(reasons[799], Reason::PreWarm);
        assert_eq!(reasons[780], Reason::Idle, "unloaded between runs once minGaps gaps are seen");
        assert_eq!(e.idle_model().cold_start_rate(), 1.0 / 20.0, "only the first run of 20 started cold");
    }

    #[test]
    fn a_busy_target_is_pre_warmed_not_let_go_for_issue_18() {
        // 120 requests in each one-minute burst, every 40 minutes: the budget allows 12 cold starts a
        // burst, and once let such a target go after each. Now 39 idle minutes of a 1 GiB instance are
        // worth less than a cold start: it is held through the first gaps, then unloaded between
        // bursts and pre-warmed.
        let mut e = engine(PredictiveMode::Idle, None);
        for m in 0..600 {
            let d = e.step(at(m), &rps(if m % 40 == 0 { 2.0 } else { 0.0 }));
            if m > 120 && m % 40 == 39 {
                assert_eq!(d.reason, Reason::PreWarm, "minute {m}");
            }
            if m > 120 && m % 40 == 20 {
                assert!(!d.active, "minute {m}: {:?}", d.reason);
            }
        }
        let rate = e.idle_model().cold_start_rate();
        assert!(rate < 1.5 / (15.0 * 120.0), "one cold start, the first: {rate}");
    }

    #[test]
    fn full_scales_out_ahead_of_a_rising_rate() {
        let mut e = engine_with_lead(PredictiveMode::Full, None, 5 * MIN);
        let mut d = e.step(at(0), &rps(1.0));
        for m in 1..20 {
            d = e.step(at(m), &rps(m as f64));
        }
        assert!(d.desired_replicas > 19.0, "above the current rate part: {}", d.desired_replicas);
        assert_eq!(d.reason, Reason::Rps, "active for the rate itself");
    }

    #[test]
    fn a_schedule_wakes_a_quiet_target() {
        let mut e = engine(PredictiveMode::Off, Some("30 * * * *"));
        assert!(!e.step(at(28), &rps(0.0)).active);
        let d = e.step(at(29), &rps(0.0));
        assert_eq!((d.active, d.reason), (true, Reason::Schedule), "one tick ahead of 00:30");
        assert_eq!(e.step(at(30), &rps(0.0)).reason, Reason::Schedule);
        assert!(!e.step(at(31), &rps(0.0)).active, "held one minute");
    }

    #[test]
    fn a_reading_just_after_a_tick_does_not_shrink_the_tick() {
        let mut e = engine(PredictiveMode::Off, Some("30 * * * *"));
        let at_secs = |s: f64| Now { mono: Duration::from_secs_f64(s), wall_secs: EPOCH + s };
        e.step(at_secs(1680.0), &rps(0.0));
        e.step(at_secs(1740.0), &rps(0.0));
        // A reading 10 ms later, then 00:29:15: still about one minute-tick ahead of 00:30.
        e.step(at_secs(1740.01), &rps(0.0));
        assert_eq!(e.step(at_secs(1755.0), &rps(0.0)).reason, Reason::Schedule);
    }

    #[test]
    fn default_settings_are_valid_and_bad_ones_are_named() {
        assert_eq!(EngineSettings::default().problems(), Vec::<String>::new());
        let bad = EngineSettings { head_margin: 0.95, histogram_bins: 2, ..EngineSettings::default() };
        let problems = bad.problems().join("; ");
        assert!(problems.contains("engine.headMargin: 0.95 is not in [0, 0.9]"), "{problems}");
        assert!(problems.contains("engine.histogramBins: 2"), "{problems}");
    }

    #[test]
    fn reactive_decisions_during_an_outage_teach_the_engine_nothing() {
        let mut e = engine(PredictiveMode::Full, None);
        for m in 0..30 {
            e.step(at(m), &rps(if m % 10 == 0 { 5.0 } else { 0.0 }));
        }
        let (gaps, forecast) = (e.idle_model().histogram().total(), e.forecast());
        for _ in 0..100 {
            let d = e.reactive(&Inputs::default());
            assert!(!d.active);
        }
        assert!(e.reactive(&rps(3.0)).active, "the reactive floor still holds");
        assert_eq!((e.idle_model().histogram().total(), e.forecast()), (gaps, forecast));
    }
}
