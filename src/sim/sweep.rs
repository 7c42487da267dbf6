//! `--sweep KNOB=a..b[:steps]`: a frontier instead of a point. The engine policies (`spinscale`,
//! `spinscale-idle`, `spinscale-off`) are replayed once per setting of one or more engine knobs; the
//! other policies (`fixed-*`, `keda`, `knative`, `hybrid`) do not read the knobs and are replayed
//! once, as reference rows.
//!
//! - `KNOB=a..b:steps`: `steps` settings (2 or more; 5 without `:steps`) evenly spaced from `a` to
//!   `b`, both included; `KNOB=v1,v2,…`: those settings. Durations are Go durations (`30m`, `12h`),
//!   interpolated in seconds and rounded to a second; `minGaps` is rounded to a whole number.
//!   Settings that round to the same value are replayed once.
//! - Repeat `--sweep` for a grid: every combination, the first knob varying slowest.
//! - The knobs are the `engine:` keys of the config ([`KNOBS`]), applied on top of `--config` (or
//!   the defaults) and checked as the config is.
//! - A row is on the frontier when no other row, reference rows included, is as good on the three
//!   figures (p75, total cold starts, wasted memory, or replica-hours on single-series traces) and
//!   better on one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::SimError;
use super::policy::PolicyKind;
use super::replay;
use super::report::PolicySummary;
use super::trace::Trace;
use spinscale_core::duration::{self, Dur};
use spinscale_core::engine::EngineSettings;
use spinscale_core::spec::RateRules;

/// What values a knob takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A real number.
    Number,
    /// A Go duration, held in seconds.
    Duration,
    /// A whole number.
    Count,
}

/// The knobs `--sweep` can vary: the `engine:` keys that trade memory for cold starts.
pub const KNOBS: [(&str, Kind); 10] = [
    ("coldStartBudget", Kind::Number),
    ("coldStartWorth", Kind::Duration),
    ("keepAlive", Kind::Duration),
    ("maxKeepAlive", Kind::Duration),
    ("minGaps", Kind::Count),
    ("headMargin", Kind::Number),
    ("tailMargin", Kind::Number),
    ("timeOfDayWindow", Kind::Duration),
    ("histogramMax", Kind::Duration),
    ("forecastActivation", Kind::Number),
];

/// One swept knob and its settings, in the knob's unit (seconds for durations).
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The `engine:` key.
    pub knob: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// The settings, in order.
    pub values: Vec<f64>,
}

/// A duration in whole seconds the way a person writes it: `12h`, `1h30m`, `45s`, `0s`.
pub fn human_duration(secs: f64) -> String {
    let secs = secs.round() as u64;
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (v, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if v > 0 {
            let _ = write!(out, "{v}{unit}");
        }
    }
    out
}

impl Axis {
    /// Parses `KNOB=a..b[:steps]` or `KNOB=v1,v2,…`.
    pub fn parse(spec: &str) -> Result<Self, SimError> {
        let err = |why: String| SimError::Argument(format!("--sweep {spec:?}: {why}"));
        let (knob, rest) =
            spec.split_once('=').ok_or_else(|| err("expected KNOB=a..b[:steps] or KNOB=v1,v2".into()))?;
        let &(knob, kind) = KNOBS
            .iter()
            .find(|(k, _)| *k == knob.trim())
            .ok_or_else(|| err(format!("unknown knob {knob:?}; one of {}", KNOBS.map(|(k, _)| k).join(", "))))?;
        let value = |text: &str| -> Result<f64, SimError> {
            let text = text.trim();
            let v = match kind {
                Kind::Duration => duration::parse(text).map(|d| d.as_secs_f64()).map_err(err)?,
                Kind::Number | Kind::Count => text
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| err(format!("{text:?} is not a number")))?,
            };
            if kind == Kind::Count && v < 0.0 {
                return Err(err(format!("{text:?} is below 0")));
            }
            Ok(v)
        };
        let mut values =
            if let Some((a, b)) = rest.split_once("..") {
                let (b, steps) =
                    match b.rsplit_once(':') {
                        Some((b, steps)) => (
                            b,
                            steps.trim().parse::<usize>().ok().filter(|n| (2..=1000).contains(n)).ok_or_else(|| {
                                err(format!("steps {steps:?}: expected a whole number from 2 to 1000"))
                            })?,
                        ),
                        None => (b, 5),
                    };
                let (a, b) = (value(a)?, value(b)?);
                (0..steps).map(|i| a + (b - a) * i as f64 / (steps - 1) as f64).collect::<Vec<_>>()
            } else {
                rest.split(',').map(value).collect::<Result<Vec<_>, _>>()?
            };
        for v in &mut values {
            *v = match kind {
                Kind::Duration | Kind::Count => v.round(),
                // Keeps 0.1 + 0.2 from printing as 0.30000000000000004.
                Kind::Number => (*v * 1e9).round() / 1e9,
            };
        }
        values.dedup();
        Ok(Self { knob, kind, values })
    }

    /// A setting as written in `--sweep` and the config: `0.03`, `12h`, `15`.
    pub fn format(&self, v: f64) -> String {
        match self.kind {
            Kind::Duration => human_duration(v),
            Kind::Count => format!("{v:.0}"),
            Kind::Number => format!("{v}"),
        }
    }
}

/// Sets `knob` (an `engine:` key of [`KNOBS`]) to `v` (seconds for durations).
fn set(settings: &mut EngineSettings, knob: &str, v: f64) {
    let secs = || Dur(Duration::from_secs_f64(v.max(0.0)));
    match knob {
        "coldStartBudget" => settings.cold_start_budget = v,
        "coldStartWorth" => settings.cold_start_worth = secs(),
        "keepAlive" => settings.keep_alive = secs(),
        "maxKeepAlive" => settings.max_keep_alive = secs(),
        "minGaps" => settings.min_gaps = v as u32,
        "headMargin" => settings.head_margin = v,
        "tailMargin" => settings.tail_margin = v,
        "timeOfDayWindow" => settings.time_of_day_window = secs(),
        "histogramMax" => settings.histogram_max = secs(),
        "forecastActivation" => settings.forecast_activation = v,
        _ => unreachable!("a knob of KNOBS"),
    }
}

/// One combination of the axes' values.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// `knob=value`, space-separated: `coldStartBudget=0.03 coldStartWorth=12h`.
    pub label: String,
    /// Each knob's value, in its unit (seconds for durations).
    pub values: BTreeMap<String, f64>,
    /// The engine settings: `base` with the values applied.
    pub settings: EngineSettings,
}

/// Every combination of the axes' values on top of `base`, the first axis varying slowest; an error
/// names the first setting the config would reject.
pub fn grid(base: &EngineSettings, axes: &[Axis]) -> Result<Vec<Setting>, SimError> {
    let mut combos: Vec<Vec<f64>> = vec![Vec::new()];
    for axis in axes {
        combos =
            combos.into_iter().flat_map(|c| axis.values.iter().map(move |v| [c.clone(), vec![*v]].concat())).collect();
    }
    combos
        .into_iter()
        .map(|combo| {
            let mut settings = base.clone();
            let mut values = BTreeMap::new();
            let mut label = Vec::new();
            for (axis, &v) in axes.iter().zip(&combo) {
                set(&mut settings, axis.knob, v);
                values.insert(axis.knob.to_string(), v);
                label.push(format!("{}={}", axis.knob, axis.format(v)));
            }
            let label = label.join(" ");
            let problems = settings.problems();
            if !problems.is_empty() {
                return Err(SimError::Argument(format!("--sweep {label}: {}", problems.join("; "))));
            }
            Ok(Setting { label, values, settings })
        })
        .collect()
}

/// The results of one setting.
#[derive(Clone, Debug, Serialize)]
pub struct SweepPoint {
    /// `knob=value`, space-separated.
    pub setting: String,
    /// Each knob's value (seconds for durations).
    pub values: BTreeMap<String, f64>,
    /// One summary per swept policy, in `--policy` order.
    pub policies: Vec<PolicySummary>,
    /// Whether each of `policies` is on the frontier.
    pub frontier: Vec<bool>,
}

/// The results of a sweep over one trace; the reference rows are the trace's `policies`.
#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    /// The swept knobs.
    pub knobs: Vec<String>,
    /// Whether the third figure of the frontier is wasted memory (else replica-hours).
    pub by_memory: bool,
    /// One point per setting.
    pub points: Vec<SweepPoint>,
    /// Whether each reference row (the trace's `policies`) is on the frontier.
    pub reference_frontier: Vec<bool>,
}

/// Replays `swept` policies (those that read the engine's knobs) under every setting of `grid`.
pub fn run(
    trace: &Trace,
    swept: &[PolicyKind],
    grid: &[Setting],
    rate: &RateRules,
    lead: Duration,
    days: f64,
) -> Vec<SweepPoint> {
    let step_secs = trace.step.as_secs_f64();
    grid.iter()
        .map(|g| SweepPoint {
            setting: g.label.clone(),
            values: g.values.clone(),
            policies: swept
                .iter()
                .map(|p| {
                    PolicySummary::new(
                        p.to_string(),
                        replay::replay(trace, p, &g.settings, rate, lead),
                        step_secs,
                        days,
                    )
                })
                .collect(),
            frontier: Vec::new(),
        })
        .collect()
}

/// Whether each row is on the frontier: no other row is at most as high on p75, cold starts and
/// `cost` (wasted memory, or replica-hours) and lower on one of them.
pub fn frontier(rows: &[&PolicySummary], by_memory: bool) -> Vec<bool> {
    let key = |s: &PolicySummary| [s.p75, s.cold_starts as f64, super::chart::cost(s, by_memory)];
    rows.iter()
        .map(|r| {
            let a = key(r);
            !rows.iter().any(|o| {
                let b = key(o);
                b.iter().zip(&a).all(|(b, a)| b <= a) && b.iter().zip(&a).any(|(b, a)| b < a)
            })
        })
        .collect()
}

/// Sets the frontier flags of `points` and returns those of `references`.
pub fn mark_frontier(points: &mut [SweepPoint], references: &[PolicySummary], by_memory: bool) -> Vec<bool> {
    let rows: Vec<&PolicySummary> = points.iter().flat_map(|p| &p.policies).chain(references).collect();
    let flags = frontier(&rows, by_memory);
    let mut it = flags.into_iter();
    for p in points.iter_mut() {
        p.frontier = it.by_ref().take(p.policies.len()).collect();
    }
    it.collect()
}

/// The printed sweep: a row per setting and swept policy, then the reference rows.
pub fn table(title: &str, sweep: &Sweep, references: &[PolicySummary]) -> String {
    let quartiles = sweep.points.iter().flat_map(|p| &p.policies).chain(references).all(PolicySummary::has_quartiles);
    let width = sweep.points.iter().map(|p| p.setting.chars().count()).max().unwrap_or(0).max(9);
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = write!(
        out,
        "{:<width$} {:<14} {:>7} {:>9} {:>9} {:>11} {:>11} {:>11}",
        "setting", "policy", "p75%", "cold", "cold/inv%", "waste GBh/d", "total GBh/d", "replica-h/d"
    );
    if quartiles {
        let _ = write!(out, " {:>8} {:>8} {:>8} {:>8}", "cold Q1", "cold Q2", "cold Q3", "cold Q4");
    }
    let _ = writeln!(out, " frontier");
    let row = |out: &mut String, setting: &str, s: &PolicySummary, on: bool| {
        let _ = write!(
            out,
            "{setting:<width$} {:<14} {:>7.2} {:>9} {:>9.3} {:>11.1} {:>11.1} {:>11.1}",
            s.policy,
            100.0 * s.p75,
            s.cold_starts,
            100.0 * s.cold_start_rate,
            s.wasted_gb_hours_per_day,
            s.memory_gb_hours_per_day,
            s.replica_hours_per_day
        );
        if quartiles {
            for q in &s.quartiles {
                let _ = write!(out, " {:>8}", q.figures.cold_starts);
            }
        }
        let _ = writeln!(out, " {}", if on { "*" } else { "" });
    };
    for p in &sweep.points {
        for (s, on) in p.policies.iter().zip(&p.frontier) {
            row(&mut out, &p.setting, s, *on);
        }
    }
    for (s, on) in references.iter().zip(&sweep.reference_frontier) {
        row(&mut out, "reference", s, *on);
    }
    let _ = write!(
        out,
        "frontier *: no other row has p75, cold starts and {} all as low and one lower",
        if sweep.by_memory { "waste" } else { "replica-h/d" }
    );
    if quartiles {
        out.push_str("; cold Qn: cold starts in quartile n of invocations per day (Q1 the rarest)");
    }
    out.push('\n');
    out
}

/// One CSV of the sweep: a row per setting and swept policy, then the reference rows (`setting` empty).
pub fn csv(sweep: &Sweep, references: &[PolicySummary]) -> String {
    let mut out = String::from(
        "setting,policy,frontier,p50,p75,p90,p99,invocations,cold_starts,cold_start_rate,wasted_gb_hours_per_day,\
         memory_gb_hours_per_day,replica_hours_per_day,cold_starts_q1,cold_starts_q2,cold_starts_q3,cold_starts_q4,\
         wasted_q1,wasted_q2,wasted_q3,wasted_q4\n",
    );
    let row = |out: &mut String, setting: &str, s: &PolicySummary, on: bool| {
        let _ = write!(
            out,
            "{setting},{},{on},{:.6},{:.6},{:.6},{:.6},{},{},{:.6},{:.3},{:.3},{:.3}",
            s.policy,
            s.p50,
            s.p75,
            s.p90,
            s.p99,
            s.invocations,
            s.cold_starts,
            s.cold_start_rate,
            s.wasted_gb_hours_per_day,
            s.memory_gb_hours_per_day,
            s.replica_hours_per_day
        );
        for q in &s.quartiles {
            let _ = write!(out, ",{}", q.figures.cold_starts);
        }
        for q in &s.quartiles {
            let _ = write!(out, ",{:.3}", q.figures.wasted_gb_hours_per_day);
        }
        out.push('\n');
    };
    for p in &sweep.points {
        for (s, on) in p.policies.iter().zip(&p.frontier) {
            row(&mut out, &p.setting, s, *on);
        }
    }
    for (s, on) in references.iter().zip(&sweep.reference_frontier) {
        row(&mut out, "", s, *on);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::replay::SeriesScore;

    #[test]
    fn a_range_is_evenly_spaced_and_both_ends_are_in() {
        let a = Axis::parse("coldStartBudget=0..0.09:4").unwrap();
        assert_eq!(a.values, vec![0.0, 0.03, 0.06, 0.09]);
        assert_eq!(a.values.iter().map(|v| a.format(*v)).collect::<Vec<_>>(), ["0", "0.03", "0.06", "0.09"]);
        assert_eq!(Axis::parse("coldStartBudget=0..0.1").unwrap().values.len(), 5, "5 settings by default");
        let d = Axis::parse("coldStartWorth=1h..3h:5").unwrap();
        assert_eq!(d.values, vec![3600.0, 5400.0, 7200.0, 9000.0, 10800.0]);
        assert_eq!(d.format(5400.0), "1h30m");
        let l = Axis::parse("keepAlive=10m,1h,8h").unwrap();
        assert_eq!(l.values, vec![600.0, 3600.0, 28800.0]);
        assert_eq!(Axis::parse("minGaps=5..6:4").unwrap().values, vec![5.0, 6.0], "rounded, then once each");
    }

    #[test]
    fn bad_sweeps_name_what_is_wrong() {
        for (spec, named) in [
            ("coldStartBudget", "KNOB="),
            ("budget=0..1", "unknown knob"),
            ("coldStartBudget=0..x", "\"x\""),
            ("coldStartBudget=0..1:1", "steps"),
            ("coldStartWorth=1..2", "missing unit"),
            ("minGaps=-1,2", "below 0"),
        ] {
            let err = Axis::parse(spec).unwrap_err().to_string();
            assert!(err.contains(named), "{spec}: {err}");
        }
        let axes = [Axis::parse("coldStartBudget=0.5..1.5:3").unwrap()];
        let err = grid(&EngineSettings::default(), &axes).unwrap_err().to_string();
        assert!(err.contains("coldStartBudget=1") && err.contains("engine.coldStartBudget"), "{err}");
    }

    #[test]
    fn a_grid_is_every_combination_first_knob_slowest() {
        let axes = [Axis::parse("coldStartBudget=0,0.05").unwrap(), Axis::parse("coldStartWorth=1h,12h").unwrap()];
        let g = grid(&EngineSettings::default(), &axes).unwrap();
        let labels: Vec<&str> = g.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "coldStartBudget=0 coldStartWorth=1h",
                "coldStartBudget=0 coldStartWorth=12h",
                "coldStartBudget=0.05 coldStartWorth=1h",
                "coldStartBudget=0.05 coldStartWorth=12h"
            ]
        );
        assert_eq!(g[3].settings.cold_start_budget, 0.05);
        assert_eq!(g[3].settings.cold_start_worth.0, Duration::from_secs(12 * 3600));
        assert_eq!(g[3].values["coldStartWorth"], 43_200.0);
    }

    fn summary(policy: &str, cold: u64, idle_warm_steps: u64) -> PolicySummary {
        // One series of 100 invocations: p75 is its rate, cold / 100.
        let s = SeriesScore {
            name: "s".into(),
            invocations_all: 100,
            cold_all: cold,
            idle_warm_steps,
            memory_mb: 1024.0,
            ..SeriesScore::default()
        };
        PolicySummary::new(policy.into(), vec![s], 60.0, 1.0)
    }

    #[test]
    fn the_frontier_keeps_every_row_no_other_beats() {
        let rows = [summary("a", 5, 100), summary("b", 5, 90), summary("c", 2, 200), summary("d", 2, 200)];
        let refs: Vec<&PolicySummary> = rows.iter().collect();
        // b beats a (as many cold starts, less memory); c and d tie, so neither beats the other.
        assert_eq!(frontier(&refs, true), [false, true, true, true]);
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human_duration(0.0), "0s");
        assert_eq!(human_duration(45.0), "45s");
        assert_eq!(human_duration(43_200.0), "12h");
        assert_eq!(human_duration(3_661.0), "1h1m1s");
    }
}
