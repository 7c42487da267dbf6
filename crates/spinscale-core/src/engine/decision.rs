//! The reactive decision: rate part, lag part, activation thresholds, and why.

use std::fmt;

use super::lag::LagSummary;
use crate::spec::{LagRules, MetricName, RateRules};

/// The signals a target has right now; `None` = the target has no such source (or no reading).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    /// Request rate, requests per second (Prometheus query, scraped counter or the activator's count).
    pub rps: Option<f64>,
    /// Kafka consumer lag, already summed and capped under the target's [`LagRules`].
    pub lag: Option<LagSummary>,
    /// The activator holds a request for this target: there is demand right now.
    pub held: bool,
}

/// What the engine decided for one target.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Whether the target should run at all (KEDA's `IsActive`): `false` lets KEDA scale it to zero.
    pub active: bool,
    /// Replicas wanted, ≥ 0, finite: `max(rate part, lag part)`.
    pub desired_replicas: f64,
    /// Request rate, finite and ≥ 0 (0 without a rate source).
    pub rps: f64,
    /// Capped lag, the value of the `spinscale-lag` metric.
    pub lag: f64,
    /// Why `active` is what it is.
    pub reason: Reason,
}

/// Why a target is active (or not). Shown in logs and, later, on /status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No signal is above its activation threshold.
    Idle,
    /// The request rate is above `activationRps`.
    Rps,
    /// The lag (with persistent lag) is above `activationLagThreshold`.
    Lag,
    /// The idle-time model expects activity soon: woken ahead of it.
    PreWarm,
    /// Activity stopped recently: held for the gaps the idle-time model expects.
    KeepAlive,
    /// The rate forecast expects requests within the lead time.
    Forecast,
    /// A `schedule` cron expression fires within the lead time (or just fired).
    Schedule,
    /// The activator holds a request for the target until it has a ready backend.
    HeldRequest,
}

impl Reason {
    /// Whether a signal itself (not a prediction) made the target active.
    pub const fn is_signal(self) -> bool {
        matches!(self, Reason::Rps | Reason::Lag | Reason::HeldRequest)
    }

    /// Its name in logs, lowercase and hyphenated (`pre-warm`, `held-request`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Idle => "idle",
            Reason::Rps => "rps",
            Reason::Lag => "lag",
            Reason::PreWarm => "pre-warm",
            Reason::KeepAlive => "keep-alive",
            Reason::Forecast => "forecast",
            Reason::Schedule => "schedule",
            Reason::HeldRequest => "held-request",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Decision {
    /// The value KEDA gets for `metric`: finite and ≥ 0.
    pub fn metric_value(&self, metric: MetricName) -> f64 {
        match metric {
            MetricName::Replicas => self.desired_replicas,
            MetricName::Rps => self.rps,
            MetricName::Lag => self.lag,
        }
    }
}

/// The reactive floor (DESIGN.md §5): never inactive while a signal is above its threshold.
pub fn decide(rate: &RateRules, lag_rules: &LagRules, inputs: &Inputs) -> Decision {
    let rps = finite_non_negative(inputs.rps.unwrap_or(0.0));
    let (lag, lag_with_persistent) = inputs
        .lag
        .as_ref()
        .map_or((0.0, 0.0), |l| (finite_non_negative(l.lag), finite_non_negative(l.lag_with_persistent)));
    let rate_part = rps / rate.target_rps;
    let lag_part = lag / lag_rules.lag_threshold;
    let rps_active = inputs.rps.is_some() && rps > rate.activation_rps;
    let lag_active = inputs.lag.is_some() && lag_with_persistent > lag_rules.activation_lag_threshold;
    let reason = match (rps_active, lag_active) {
        _ if inputs.held => Reason::HeldRequest,
        (true, true) if lag_part > rate_part => Reason::Lag,
        (true, _) => Reason::Rps,
        (false, true) => Reason::Lag,
        (false, false) => Reason::Idle,
    };
    // A held request needs one replica now, whatever the rate says yet.
    let floor = if inputs.held { 1.0 } else { 0.0 };
    Decision {
        active: rps_active || lag_active || inputs.held,
        desired_replicas: finite_non_negative(rate_part.max(lag_part)).max(floor),
        rps,
        lag,
        reason,
    }
}

fn finite_non_negative(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 { v } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(lag: f64, with_persistent: f64) -> Option<LagSummary> {
        Some(LagSummary { lag, lag_with_persistent: with_persistent, partitions: 4, partitions_with_lag: 1 })
    }

    #[test]
    fn decision_table() {
        let rate = RateRules { target_rps: 10.0, activation_rps: 0.5 };
        let lag_rules = LagRules { lag_threshold: 5.0, activation_lag_threshold: 2.0, ..LagRules::default() };
        // (what, inputs, active, desired, reason)
        let cases = [
            ("nothing measured", Inputs::default(), false, 0.0, Reason::Idle),
            ("quiet rate", Inputs { rps: Some(0.5), lag: None, held: false }, false, 0.05, Reason::Idle),
            (
                "rate above activation (strict)",
                Inputs { rps: Some(0.6), lag: None, held: false },
                true,
                0.06,
                Reason::Rps,
            ),
            ("rate part", Inputs { rps: Some(35.0), lag: None, held: false }, true, 3.5, Reason::Rps),
            (
                "lag at activation is not active",
                Inputs { rps: None, lag: lag(2.0, 2.0), held: false },
                false,
                0.4,
                Reason::Idle,
            ),
            ("lag part", Inputs { rps: None, lag: lag(12.0, 12.0), held: false }, true, 2.4, Reason::Lag),
            (
                "a held request wakes a target at zero",
                Inputs { rps: Some(0.0), lag: None, held: true },
                true,
                1.0,
                Reason::HeldRequest,
            ),
            (
                "a held request under load keeps the load's replicas",
                Inputs { rps: Some(35.0), lag: None, held: true },
                true,
                3.5,
                Reason::HeldRequest,
            ),
            (
                "persistent lag activates, drives nothing",
                Inputs { rps: None, lag: lag(0.0, 40.0), held: false },
                true,
                0.0,
                Reason::Lag,
            ),
            (
                "max of both, lag larger",
                Inputs { rps: Some(10.0), lag: lag(20.0, 20.0), held: false },
                true,
                4.0,
                Reason::Lag,
            ),
            (
                "max of both, rate larger",
                Inputs { rps: Some(80.0), lag: lag(20.0, 20.0), held: false },
                true,
                8.0,
                Reason::Rps,
            ),
            ("NaN rate is 0", Inputs { rps: Some(f64::NAN), lag: None, held: false }, false, 0.0, Reason::Idle),
            ("negative rate is 0", Inputs { rps: Some(-3.0), lag: None, held: false }, false, 0.0, Reason::Idle),
            (
                "infinite lag is 0",
                Inputs { rps: None, lag: lag(f64::INFINITY, f64::INFINITY), held: false },
                false,
                0.0,
                Reason::Idle,
            ),
        ];
        for (what, inputs, active, desired, reason) in cases {
            let d = decide(&rate, &lag_rules, &inputs);
            assert_eq!(d.active, active, "{what}: active");
            assert!((d.desired_replicas - desired).abs() < 1e-9, "{what}: desired {} != {desired}", d.desired_replicas);
            assert_eq!(d.reason, reason, "{what}: reason");
            for m in [MetricName::Replicas, MetricName::Rps, MetricName::Lag] {
                let v = d.metric_value(m);
                assert!(v.is_finite() && v >= 0.0, "{what}: {m:?} = {v}");
            }
        }
    }
}
