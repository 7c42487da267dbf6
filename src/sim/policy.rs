//! The policies a simulation compares. `spinscale` (and `hybrid`, the paper's parameters on the
//! same idle model) drive the server's [`TargetEngine`]; the baselines the server does not run
//! (fixed keep-alive, KEDA's cooldown, Knative's window) are small timers here.

use std::fmt;
use std::time::Duration;

use super::SimError;
use spinscale_core::duration;
use spinscale_core::engine::idle::IdleParams;
use spinscale_core::engine::{EngineSettings, Inputs, Now, TargetEngine};
use spinscale_core::quantity::MI;
use spinscale_core::spec::{LagRules, PredictiveMode, PredictiveSpec, RateRules};

/// A policy by name.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyKind {
    /// The server's engine with a `predictive` mode.
    Spinscale(PredictiveMode),
    /// Warm for `K` after each active step (the Azure paper's fixed keep-alive).
    Fixed(Duration),
    /// KEDA: 30 s polling, active until 300 s after the last active poll (`cooldownPeriod`).
    Keda,
    /// Knative: scale to zero after a 60 s stable window plus 30 s grace.
    Knative,
    /// The hybrid histogram of Shahrad et al. (ATC 2020), on the server's idle model.
    Hybrid,
}

impl PolicyKind {
    /// `spinscale` (= full), `spinscale-idle`, `spinscale-off`, `fixed-<duration>`, `keda`, `knative`, `hybrid`.
    pub fn parse(name: &str) -> Result<Self, SimError> {
        Ok(match name {
            "spinscale" | "spinscale-full" => PolicyKind::Spinscale(PredictiveMode::Full),
            "spinscale-idle" => PolicyKind::Spinscale(PredictiveMode::Idle),
            "spinscale-off" => PolicyKind::Spinscale(PredictiveMode::Off),
            "keda" => PolicyKind::Keda,
            "knative" => PolicyKind::Knative,
            "hybrid" => PolicyKind::Hybrid,
            _ => match name.strip_prefix("fixed-").map(duration::parse) {
                Some(Ok(k)) if !k.is_zero() => PolicyKind::Fixed(k),
                _ => return Err(SimError::Policy(name.to_string())),
            },
        })
    }

    /// A fresh driver for one series whose instances take `memory_mb` when the trace says.
    pub fn driver(
        &self,
        settings: &EngineSettings,
        rate: &RateRules,
        lead: Duration,
        memory_mb: Option<f64>,
    ) -> Box<dyn Driver> {
        let instance_memory = memory_mb.map(|mb| (mb * MI).round().max(1.0) as u64);
        let engine = |mode, idle: Option<IdleParams>| {
            let spec = PredictiveSpec { mode, lead_time: lead, schedule: None, instance_memory };
            let mut params = settings.params(&spec);
            if let Some(idle) = idle {
                params.idle = idle;
            }
            Box::new(EngineDriver(TargetEngine::new(rate.clone(), LagRules::default(), params))) as Box<dyn Driver>
        };
        match self {
            PolicyKind::Spinscale(mode) => engine(*mode, None),
            PolicyKind::Hybrid => engine(PredictiveMode::Idle, Some(IdleParams::hybrid())),
            PolicyKind::Fixed(k) => Box::new(KeepAliveTimer::new(*k, rate.target_rps)),
            PolicyKind::Keda => Box::new(KeepAliveTimer::new(Duration::from_secs(300), rate.target_rps)),
            PolicyKind::Knative => Box::new(KeepAliveTimer::new(Duration::from_secs(90), rate.target_rps)),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyKind::Spinscale(PredictiveMode::Full) => f.write_str("spinscale"),
            PolicyKind::Spinscale(PredictiveMode::Idle) => f.write_str("spinscale-idle"),
            PolicyKind::Spinscale(PredictiveMode::Off) => f.write_str("spinscale-off"),
            PolicyKind::Fixed(k) => match k.as_secs() {
                s if k.subsec_nanos() == 0 && s % 3600 == 0 => write!(f, "fixed-{}h", s / 3600),
                s if k.subsec_nanos() == 0 && s % 60 == 0 => write!(f, "fixed-{}m", s / 60),
                _ => write!(f, "fixed-{}", duration::format(*k)),
            },
            PolicyKind::Keda => f.write_str("keda"),
            PolicyKind::Knative => f.write_str("knative"),
            PolicyKind::Hybrid => f.write_str("hybrid"),
        }
    }
}

/// What a policy decides at the start of a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Whether the app is kept (or brought) up for this step.
    pub active: bool,
    /// Replicas wanted (before the HPA's rounding and stabilization).
    pub desired: f64,
}

/// One policy running on one series: told the time and the rate seen during the previous step.
pub trait Driver {
    /// The decision at `now`, from `rps`, the request rate of the step that just ended.
    fn step(&mut self, now: Now, rps: f64) -> Step;
}

struct EngineDriver(TargetEngine);

impl Driver for EngineDriver {
    fn step(&mut self, now: Now, rps: f64) -> Step {
        let d = self.0.step(now, &Inputs { rps: Some(rps), ..Inputs::default() });
        Step { active: d.active, desired: d.desired_replicas }
    }
}

/// Active until `keep_alive` after the last step that saw activity; replicas follow the rate.
struct KeepAliveTimer {
    keep_alive: Duration,
    target_rps: f64,
    last_activity: Option<Duration>,
}

impl KeepAliveTimer {
    fn new(keep_alive: Duration, target_rps: f64) -> Self {
        Self { keep_alive, target_rps, last_activity: None }
    }
}

impl Driver for KeepAliveTimer {
    fn step(&mut self, now: Now, rps: f64) -> Step {
        if rps > 0.0 {
            self.last_activity = Some(now.mono);
        }
        let active = self.last_activity.is_some_and(|last| now.mono.saturating_sub(last) < self.keep_alive);
        Step { active, desired: rps / self.target_rps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_names_round_trip() {
        for name in [
            "spinscale",
            "spinscale-idle",
            "spinscale-off",
            "fixed-10m",
            "fixed-20m",
            "fixed-4h",
            "fixed-90s",
            "keda",
            "knative",
            "hybrid",
        ] {
            assert_eq!(PolicyKind::parse(name).unwrap().to_string(), name);
        }
        assert!(PolicyKind::parse("fixed-0s").is_err());
        assert!(PolicyKind::parse("random").is_err());
    }

    #[test]
    fn a_fixed_keep_alive_is_warm_for_k_steps_after_activity() {
        let mut d = KeepAliveTimer::new(Duration::from_secs(600), 1.0);
        let now = |m: u64| Now { mono: Duration::from_secs(m * 60), wall_secs: (m * 60) as f64 };
        assert!(d.step(now(1), 1.0).active);
        assert!(d.step(now(10), 0.0).active);
        assert!(!d.step(now(11), 0.0).active);
    }
}
