//! `spinscale simulate`: replays a trace through the server's engine on a virtual clock, next to
//! the baselines people run today, on fixed definitions (see [`replay`]), and reports.
//!
//! - [`trace`]: loaders (Azure 2019 invitro samples, NASA-HTTP per minute, generic CSV);
//! - [`policy`]: the policies (the engine itself for `spinscale` and `hybrid`; timers for the rest);
//! - [`replay`]: the virtual clock and the scoring; [`report`] and [`chart`]: the outputs;
//! - [`hindsight`]: what a policy that knew the whole trace could reach, as a yardstick;
//! - [`sweep`]: `--sweep`, the engine policies under a range of knob settings (a frontier).
//!
//! Within the crate it may use [`config`](crate::config) and [`status`](crate::status); nothing
//! else.

pub mod chart;
pub mod hindsight;
pub mod policy;
pub mod replay;
pub mod report;
pub mod sweep;
pub mod trace;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use serde::Serialize;

use crate::config::Config;
use policy::PolicyKind;
use report::PolicySummary;
use spinscale_core::engine::EngineSettings;
use spinscale_core::spec::RateRules;
use trace::{LoadOptions, Trace};

/// Arguments of `spinscale simulate`.
#[derive(Clone, Debug, clap::Args)]
pub struct SimulateArgs {
    /// `azure:PREFIX` (of the `*_inv.csv`/`*_mem.csv` files), `nasa:FILE` (per-minute CSV) or
    /// `csv:FILE` (`timestamp,count[,series]`, `,` or `;`). Repeat for several traces.
    #[arg(long, required = true)]
    pub trace: Vec<String>,
    /// Policies, comma-separated: spinscale, spinscale-idle, spinscale-off, fixed-DURATION, keda, knative, hybrid
    /// [default: spinscale,hybrid,fixed-10m,fixed-20m,keda,knative; with --sweep:
    /// spinscale,hybrid,fixed-5m,fixed-10m,fixed-20m,fixed-1h]
    #[arg(long, value_delimiter = ',')]
    pub policy: Vec<String>,
    /// Replay the spinscale policies once per setting of an engine knob: `KNOB=a..b[:steps]` (steps
    /// settings from a to b, both in; 5 by default) or `KNOB=v1,v2,...`, e.g. `coldStartBudget=0..0.09:10`
    /// or `coldStartWorth=1h,4h,12h`. Knobs: coldStartBudget, coldStartWorth, keepAlive, maxKeepAlive,
    /// minGaps, headMargin, tailMargin, timeOfDayWindow, histogramMax, forecastActivation. Repeat for a
    /// grid. The other policies are replayed once, as reference rows.
    #[arg(long)]
    pub sweep: Vec<String>,
    /// Lead time (Go duration): an app is warm in a step if it was active `lead` earlier.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub lead: Duration,
    /// How many series (functions) to replay: a number or `all`.
    #[arg(long, default_value = "all")]
    pub functions: String,
    /// Keep each request with this probability (0..1], to create idle stretches.
    #[arg(long)]
    pub thin: Option<f64>,
    /// Replay from this day (YYYY-MM-DD, trace time).
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Replay up to the end of this day (YYYY-MM-DD, trace time).
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Requests per second one replica serves (replica counts, and `short` steps).
    #[arg(long, default_value_t = 1.0)]
    pub target_rps: f64,
    /// Memory of one instance (MB) when the trace has none.
    #[arg(long, default_value_t = 128.0)]
    pub memory_mb: f64,
    /// Engine knobs from a spinscale config file (its `engine:` section).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also print hindsight bounds: the least wasted memory with which a policy knowing each
    /// series' whole trace could keep the per-series cold-start p75 below this rate (e.g. 0.1).
    #[arg(long)]
    pub hindsight: Option<f64>,
    /// With --hindsight, also bound it with at most this many cold starts over all series together
    /// (e.g. a reference policy's total): what foresight could do under both of its constraints.
    #[arg(long, requires = "hindsight")]
    pub hindsight_cold: Option<u64>,
    /// Seed of `--thin`.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write into this directory: a CSV per policy (a row per series), `<trace>.summary.csv` (a row
    /// per policy and quartile), an SVG chart, and with `--sweep` `<trace>.sweep.csv` and
    /// `<trace>.sweep.svg` (the frontier).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    spinscale_core::duration::parse(s)
}

/// What can go wrong in a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A `--trace` that is not `azure:`, `nasa:` or `csv:` and a path.
    #[error("--trace {0:?}: expected azure:PREFIX, nasa:FILE or csv:FILE")]
    TraceSpec(String),
    /// A `--trace` with no series or no steps left after loading and windowing.
    #[error("--trace {0:?}: no data")]
    Empty(String),
    /// A trace file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of a trace file is not in the expected format.
    #[error("{path}, line {line}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The line, from 1; 0 when no one line is at fault (no rows, an app without memory).
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A `--policy` name that is not one of the policies.
    #[error(
        "--policy {0:?}: expected spinscale, spinscale-idle, spinscale-off, fixed-<duration> (e.g. fixed-10m), keda, knative or hybrid"
    )]
    Policy(String),
    /// Any other argument out of range, with the flag in the message.
    #[error("{0}")]
    Argument(String),
    /// The `--config` file is not a valid config.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// An output file (`--json`, `--out`) could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The results of one trace.
#[derive(Clone, Debug, Serialize)]
pub struct TraceResult {
    /// The trace's name.
    pub trace: String,
    /// Series replayed.
    pub series: usize,
    /// Length of one step, seconds.
    pub step_secs: f64,
    /// Length of the replay, days.
    pub days: f64,
    /// `--lead`, seconds.
    pub lead_secs: f64,
    /// Wall-clock time the replay of every policy (and setting) took, seconds.
    pub elapsed_secs: f64,
    /// One summary per policy, in `--policy` order; with `--sweep`, the reference policies only.
    pub policies: Vec<PolicySummary>,
    /// The swept policies under each setting, with `--sweep`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<sweep::Sweep>,
    /// The hindsight bounds, with `--hindsight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hindsight: Option<hindsight::Bounds>,
}

/// Replays and scores one loaded trace under every policy.
pub fn simulate(
    trace: &Trace,
    policies: &[PolicyKind],
    settings: &EngineSettings,
    rate: &RateRules,
    lead: Duration,
) -> TraceResult {
    let started = Instant::now();
    let step_secs = trace.step.as_secs_f64();
    let steps = trace.series.first().map_or(0, |s| s.counts.len());
    let days = (steps as f64 * step_secs / 86_400.0).max(1e-9);
    let summaries = policies
        .iter()
        .map(|p| PolicySummary::new(p.to_string(), replay::replay(trace, p, settings, rate, lead), step_secs, days))
        .collect();
    TraceResult {
        trace: trace.name.clone(),
        series: trace.series.len(),
        step_secs,
        days,
        lead_secs: lead.as_secs_f64(),
        elapsed_secs: started.elapsed().as_secs_f64(),
        policies: summaries,
        sweep: None,
        hindsight: None,
    }
}

/// Replays `swept` policies under every setting of `axes` (on top of `settings`) and `references`
/// once with `settings`, and marks the frontier: `--sweep`.
pub fn simulate_sweep(
    trace: &Trace,
    swept: &[PolicyKind],
    references: &[PolicyKind],
    settings: &EngineSettings,
    axes: &[sweep::Axis],
    rate: &RateRules,
    lead: Duration,
) -> Result<TraceResult, SimError> {
    let started = Instant::now();
    let grid = sweep::grid(settings, axes)?;
    let mut result = simulate(trace, references, settings, rate, lead);
    let points = sweep::run(trace, swept, &grid, rate, lead, result.days);
    result.sweep = Some(sweep::Sweep {
        knobs: axes.iter().map(|a| a.knob.to_string()).collect(),
        by_memory: false,
        points,
        reference_frontier: Vec::new(),
    });
    result.elapsed_secs = started.elapsed().as_secs_f64();
    let by_memory = by_memory(&result);
    if let Some(s) = &mut result.sweep {
        s.by_memory = by_memory;
        s.reference_frontier = sweep::mark_frontier(&mut s.points, &result.policies, by_memory);
    }
    Ok(result)
}

/// The policies of `--policy` without one.
pub const DEFAULT_POLICIES: &str = "spinscale,hybrid,fixed-10m,fixed-20m,keda,knative";

/// The policies of `--policy` with `--sweep` and without `--policy`.
pub const DEFAULT_SWEEP_POLICIES: &str = "spinscale,hybrid,fixed-5m,fixed-10m,fixed-20m,fixed-1h";

/// Whether the cost axis is wasted memory (many series, some memory wasted) or replica-hours.
fn by_memory(result: &TraceResult) -> bool {
    let swept = result.sweep.iter().flat_map(|s| &s.points).flat_map(|p| &p.policies);
    result.series > 1 && result.policies.iter().chain(swept).any(|p| p.wasted_gb_hours_per_day > 0.0)
}

/// `spinscale simulate`.
pub fn run(args: &SimulateArgs) -> Result<(), SimError> {
    let axes = args.sweep.iter().map(|s| sweep::Axis::parse(s)).collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = if !args.policy.is_empty() {
        args.policy.clone()
    } else if axes.is_empty() {
        DEFAULT_POLICIES.split(',').map(String::from).collect()
    } else {
        DEFAULT_SWEEP_POLICIES.split(',').map(String::from).collect()
    };
    let policies = names.iter().map(|p| PolicyKind::parse(p.trim())).collect::<Result<Vec<_>, _>>()?;
    let functions = match args.functions.as_str() {
        "all" => None,
        n => Some(
            n.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| SimError::Argument(format!("--functions {n:?}: expected a number above 0 or `all`")))?,
        ),
    };
    if let Some(f) = args.thin
        && !(f > 0.0 && f <= 1.0)
    {
        return Err(SimError::Argument(format!("--thin {f}: expected a fraction in (0, 1]")));
    }
    if let Some(r) = args.hindsight {
        if !(r > 0.0 && r <= 1.0) {
            return Err(SimError::Argument(format!("--hindsight {r}: expected a cold-start rate in (0, 1]")));
        }
        if !args.lead.is_zero() {
            return Err(SimError::Argument(
                "--hindsight: its bounds are for --lead 0s (the step right after activity is the reactive one)".into(),
            ));
        }
    }
    if !(args.target_rps.is_finite() && args.target_rps > 0.0) {
        return Err(SimError::Argument(format!("--target-rps {}: expected a number above 0", args.target_rps)));
    }
    let settings = match &args.config {
        Some(path) => Config::load(path)?.engine,
        None => EngineSettings::default(),
    };
    // Every setting checked before any trace is read.
    sweep::grid(&settings, &axes)?;
    let (swept, references): (Vec<PolicyKind>, Vec<PolicyKind>) = if axes.is_empty() {
        (Vec::new(), policies)
    } else {
        policies.into_iter().partition(|p| matches!(p, PolicyKind::Spinscale(_)))
    };
    if !axes.is_empty() && swept.is_empty() {
        return Err(SimError::Argument(
            "--sweep: --policy has no policy that reads the engine's knobs (spinscale, spinscale-idle, spinscale-off)"
                .into(),
        ));
    }
    let rate = RateRules { target_rps: args.target_rps, activation_rps: 0.0 };
    let opts = LoadOptions {
        thin: args.thin,
        functions,
        from: args.from,
        to: args.to,
        memory_mb: args.memory_mb,
        seed: args.seed,
    };
    let mut results = Vec::new();
    for spec in &args.trace {
        let trace = trace::load(spec, &opts)?;
        let mut result = if axes.is_empty() {
            simulate(&trace, &references, &settings, &rate, args.lead)
        } else {
            simulate_sweep(&trace, &swept, &references, &settings, &axes, &rate, args.lead)?
        };
        result.hindsight = args.hindsight.map(|r| {
            let mut bounds = hindsight::bounds(&trace, r, 0.75);
            bounds.capped = args.hindsight_cold.map(|cap| hindsight::capped(&trace, r, 0.75, cap));
            bounds
        });
        // The charts' title leaves the wall-clock time out: the same run draws the same chart.
        let chart_title = format!(
            "{}: {} series, {:.1} days, step {}s, lead {}s",
            result.trace, result.series, result.days, result.step_secs, result.lead_secs
        );
        let title = format!("{chart_title} ({:.2}s)", result.elapsed_secs);
        match &result.sweep {
            Some(s) => println!("{}", sweep::table(&sweep_title(&title, s), s, &result.policies)),
            None => println!("{}", report::table(&title, &result.policies)),
        }
        if let Some(bounds) = &result.hindsight {
            println!("{}", report::hindsight(bounds));
        }
        if let Some(dir) = &args.out {
            write_outputs(dir, &chart_title, &result)?;
        }
        results.push(result);
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results).map_err(|e| SimError::Argument(e.to_string()))?;
        write(path, &text)?;
    }
    Ok(())
}

fn sweep_title(title: &str, s: &sweep::Sweep) -> String {
    format!("sweep of {} ({} settings) on {title}", s.knobs.join(" × "), s.points.len())
}

fn write_outputs(dir: &std::path::Path, title: &str, result: &TraceResult) -> Result<(), SimError> {
    std::fs::create_dir_all(dir).map_err(|source| SimError::Write { path: dir.display().to_string(), source })?;
    let stem: String =
        result.trace.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    for p in &result.policies {
        write(&dir.join(format!("{stem}.{}.csv", p.policy)), &report::series_csv(p))?;
    }
    write(&dir.join(format!("{stem}.summary.csv")), &report::summary_csv(&result.policies))?;
    let by_memory = by_memory(result);
    write(&dir.join(format!("{stem}.svg")), &chart::svg(title, &result.policies, by_memory))?;
    if let Some(s) = &result.sweep {
        write(&dir.join(format!("{stem}.sweep.csv")), &sweep::csv(s, &result.policies))?;
        let swept = s.points.first().map_or(0, |p| p.policies.len());
        let lines: Vec<Vec<(String, &PolicySummary)>> = (0..swept)
            .map(|i| {
                s.points
                    .iter()
                    .map(|p| {
                        let label = if s.knobs.len() == 1 {
                            p.setting.split_once('=').map_or(p.setting.clone(), |(_, v)| v.to_string())
                        } else {
                            p.setting.clone()
                        };
                        let label = if swept > 1 { format!("{} {label}", p.policies[i].policy) } else { label };
                        (label, &p.policies[i])
                    })
                    .collect()
            })
            .collect();
        let svg = chart::frontier_svg(&sweep_title(title, s), &result.policies, &lines, by_memory);
        write(&dir.join(format!("{stem}.sweep.svg")), &svg)?;
    }
    Ok(())
}

fn write(path: &std::path::Path, text: &str) -> Result<(), SimError> {
    std::fs::write(path, text).map_err(|source| SimError::Write { path: path.display().to_string(), source })
}
