//! Summaries of a simulation: per-policy aggregates, the printed table, JSON, CSV per policy.
//!
//! Percentiles over functions use the lower nearest rank, `sorted[floor(p·(n−1))]`, over the
//! functions with at least one invocation. Wasted memory is in GB-h per day (MB ÷ 1024 ÷ 60 per minute).

use std::fmt::Write as _;

use serde::Serialize;

use super::hindsight::Bounds;
use super::replay::SeriesScore;

/// One policy's results over a whole trace.
#[derive(Clone, Debug, Serialize)]
pub struct PolicySummary {
    /// The policy's name, as given to `--policy`.
    pub policy: String,
    /// Invocations in scored steps, all series.
    pub invocations: u64,
    /// Cold starts, first step counted.
    pub cold_starts: u64,
    /// Cold starts, first step not counted.
    pub cold_starts_late: u64,
    /// Cold starts ÷ invocations, all series together, first step counted.
    pub cold_start_rate: f64,
    /// Per-series cold-start rate percentiles, first step counted.
    pub p50: f64,
    /// The 75th percentile, as `p50`.
    pub p75: f64,
    /// The 90th percentile, as `p50`.
    pub p90: f64,
    /// The same, first step not counted.
    pub p50_late: f64,
    /// The 75th percentile, as `p50_late`.
    pub p75_late: f64,
    /// The 90th percentile, as `p50_late`.
    pub p90_late: f64,
    /// Memory of warm instances in steps without invocations, GB-h per day.
    pub wasted_gb_hours_per_day: f64,
    /// Replicas running, summed over scored steps, in replica-hours per day.
    pub replica_hours_per_day: f64,
    /// Steps whose requests exceeded the running replicas' capacity.
    pub short_steps: u64,
    /// Each series' counts (for the CSV; left out of the JSON).
    #[serde(skip)]
    pub series: Vec<SeriesScore>,
}

/// Lower nearest rank: `sorted[floor(p·(n−1))]`; zero (`T::default()`) for no values.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((p * (sorted.len() - 1) as f64).floor() as usize).min(sorted.len() - 1)]
}

impl PolicySummary {
    /// Aggregates `series`' scores over a replay of `days` days in steps of `step_secs` seconds.
    pub fn new(policy: String, series: Vec<SeriesScore>, step_secs: f64, days: f64) -> Self {
        let sum = |f: fn(&SeriesScore) -> u64| series.iter().map(f).sum::<u64>();
        let rates = |first: bool| {
            let mut r: Vec<f64> = series.iter().filter_map(|s| s.cold_rate(first)).collect();
            r.sort_by(f64::total_cmp);
            r
        };
        let (all, late) = (rates(true), rates(false));
        let invocations = sum(|s| s.invocations_all);
        let cold_starts = sum(|s| s.cold_all);
        let step_minutes = step_secs / 60.0;
        let wasted_mb_minutes: f64 = series.iter().map(|s| s.idle_warm_steps as f64 * step_minutes * s.memory_mb).sum();
        let replica_steps: f64 = series.iter().map(|s| s.replica_steps).sum();
        Self {
            policy,
            invocations,
            cold_starts,
            cold_starts_late: sum(|s| s.cold_late),
            cold_start_rate: if invocations > 0 { cold_starts as f64 / invocations as f64 } else { 0.0 },
            p50: percentile(&all, 0.5),
            p75: percentile(&all, 0.75),
            p90: percentile(&all, 0.9),
            p50_late: percentile(&late, 0.5),
            p75_late: percentile(&late, 0.75),
            p90_late: percentile(&late, 0.9),
            wasted_gb_hours_per_day: wasted_mb_minutes / 1024.0 / 60.0 / days,
            replica_hours_per_day: replica_steps * step_minutes / 60.0 / days,
            short_steps: sum(|s| s.short_steps),
            series,
        }
    }
}

/// The printed table.
pub fn table(title: &str, summaries: &[PolicySummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12} {:>8}",
        "policy",
        "cold",
        "cold-1st",
        "cold%",
        "p50%",
        "p75%",
        "p90%",
        "p75-1st%",
        "waste GBh/d",
        "replica-h/d",
        "short"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>10} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>12.1} {:>12.1} {:>8}",
            s.policy,
            s.cold_starts,
            s.cold_starts_late,
            100.0 * s.cold_start_rate,
            100.0 * s.p50,
            100.0 * s.p75,
            100.0 * s.p90,
            100.0 * s.p75_late,
            s.wasted_gb_hours_per_day,
            s.replica_hours_per_day,
            s.short_steps
        );
    }
    let _ = writeln!(
        out,
        "cold: cold starts, first step counted; cold-1st and p75-1st%: first step not counted; \
         p50/p75/p90: per-series cold-start rate"
    );
    out
}

/// The hindsight bounds, in a few lines.
pub fn hindsight(b: &Bounds) -> String {
    let gb = |v: Option<f64>| v.map_or("out of reach".to_string(), |v| format!("{v:.1} GB-h/day"));
    format!(
        "hindsight, p{:.0} below {:.1} % (the cheapest {} of {} series below it; {} can be), wasted at least:\n  \
         {} with every arrival known (the reactive steps alone)\n  \
         {} staying warm through the gaps each series must cover\n  \
         {} with the best pre-warm window per series\n  \
         {} with the best keep-alive per series\n",
        100.0 * b.percentile,
        100.0 * b.rate,
        b.needed,
        b.series,
        b.feasible,
        gb(b.floor),
        gb(b.keep_warm),
        gb(b.one_window),
        gb(b.one_keep_alive)
    )
}

/// One CSV per policy: a row per series.
pub fn series_csv(summary: &PolicySummary) -> String {
    let mut out =
        String::from("series,invocations,cold_starts,cold_start_rate,idle_warm_steps,memory_mb,replica_steps\n");
    for s in &summary.series {
        let _ = writeln!(
            out,
            "{},{},{},{:.6},{},{},{:.1}",
            s.name,
            s.invocations_all,
            s.cold_all,
            s.cold_rate(true).unwrap_or(0.0),
            s.idle_warm_steps,
            s.memory_mb,
            s.replica_steps
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_lower_nearest_rank() {
        let v = [0.0, 0.1, 0.2, 0.3, 0.4];
        assert_eq!(percentile(&v, 0.5), 0.2);
        assert_eq!(percentile(&v, 0.75), 0.3);
        assert_eq!(percentile(&v, 0.9), 0.3);
        assert_eq!(percentile::<f64>(&[], 0.5), 0.0);
    }
}
