//! The virtual-clock replay and its scoring, on fixed definitions (issue 5):
//!
//! - a policy decides at the start of each step from the counts before it;
//! - a series is warm in step t if the policy had it active at the start of step t − lead;
//! - a step with invocations while not warm is one cold start;
//! - wasted memory = warm steps without invocations × the series' memory; memory held = that plus
//!   one instance in every step with invocations (a cold start loads it as well);
//! - replicas: the policy's desired count, rounded up, at least 1 while active, with the HPA's
//!   5-minute scale-down stabilization (KEDA drives an HPA; Knative's own autoscaler has none).

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use super::policy::PolicyKind;
use super::trace::{Series, Trace};
use spinscale_core::engine::{EngineSettings, Now};
use spinscale_core::spec::RateRules;

/// The HPA's default scale-down stabilization window.
const HPA_STABILIZATION: Duration = Duration::from_secs(300);

/// Counts of one series under one policy. `*_all` count every scored step, `*_late` leave out the first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SeriesScore {
    /// The series' name.
    pub name: String,
    /// Invocations in scored steps.
    pub invocations_all: u64,
    /// Cold starts in scored steps (at most one per step).
    pub cold_all: u64,
    /// Invocations in scored steps after the first.
    pub invocations_late: u64,
    /// Cold starts in scored steps after the first.
    pub cold_late: u64,
    /// Scored steps with invocations (warm or cold: either way one instance serves them).
    pub busy_steps: u64,
    /// Warm steps with no invocation.
    pub idle_warm_steps: u64,
    /// Sum over scored steps of the replicas running.
    pub replica_steps: f64,
    /// Scored steps whose requests exceeded what the running replicas serve at `targetRps`.
    pub short_steps: u64,
    /// Memory of one warm instance, MB.
    pub memory_mb: f64,
}

impl SeriesScore {
    /// Cold starts per invocation, first step counted or not; `None` without invocations.
    pub fn cold_rate(&self, first_counted: bool) -> Option<f64> {
        let (cold, inv) =
            if first_counted { (self.cold_all, self.invocations_all) } else { (self.cold_late, self.invocations_late) };
        (inv > 0).then(|| cold as f64 / inv as f64)
    }
}

/// Replays every series of `trace` under `policy`.
pub fn replay(
    trace: &Trace,
    policy: &PolicyKind,
    settings: &EngineSettings,
    rate: &RateRules,
    lead: Duration,
) -> Vec<SeriesScore> {
    trace.series.iter().map(|s| replay_series(trace, s, policy, settings, rate, lead)).collect()
}

fn replay_series(
    trace: &Trace,
    series: &Series,
    policy: &PolicyKind,
    settings: &EngineSettings,
    rate: &RateRules,
    lead: Duration,
) -> SeriesScore {
    let step = trace.step;
    let step_secs = step.as_secs_f64();
    let lead_steps = (lead.as_secs_f64() / step_secs).ceil() as usize;
    let stabilization = if *policy == PolicyKind::Knative {
        1
    } else {
        (HPA_STABILIZATION.as_secs_f64() / step_secs).ceil().max(1.0) as usize
    };
    let mut driver = policy.driver(settings, rate, lead, series.memory_measured.then_some(series.memory_mb));
    let mut recent: VecDeque<f64> = VecDeque::with_capacity(stabilization + 1);
    // Replicas decided at the start of each of the last `lead_steps + 1` steps.
    let mut decided: VecDeque<f64> = VecDeque::with_capacity(lead_steps + 2);
    let mut score = SeriesScore { name: series.name.clone(), memory_mb: series.memory_mb, ..SeriesScore::default() };
    for (t, &count) in series.counts.iter().enumerate() {
        let now = Now { mono: step * t as u32, wall_secs: trace.start_wall + t as f64 * step_secs };
        let previous = if t == 0 { 0 } else { series.counts[t - 1] };
        let s = driver.step(now, previous as f64 / step_secs);
        recent.push_back(if s.active { s.desired.ceil().max(1.0) } else { 0.0 });
        if recent.len() > stabilization {
            recent.pop_front();
        }
        let replicas = if s.active { recent.iter().copied().fold(0.0, f64::max) } else { 0.0 };
        decided.push_back(replicas);
        if decided.len() > lead_steps + 1 {
            decided.pop_front();
        }
        if !series.is_scored(t) {
            continue;
        }
        let running = if decided.len() == lead_steps + 1 { decided[0] } else { 0.0 };
        let warm = running > 0.0;
        let count = u64::from(count);
        if count > 0 {
            score.busy_steps += 1;
            score.invocations_all += count;
            if t > 0 {
                score.invocations_late += count;
            }
            if !warm {
                score.cold_all += 1;
                if t > 0 {
                    score.cold_late += 1;
                }
            }
        } else if warm {
            score.idle_warm_steps += 1;
        }
        score.replica_steps += running;
        if count as f64 > running * rate.target_rps * step_secs {
            score.short_steps += 1;
        }
    }
    score
}
