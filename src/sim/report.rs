//! Summaries of a simulation: per-policy aggregates, the printed tables, JSON and CSV.
//!
//! The figures, for a whole trace and for each quartile of it ([`Figures`]), on the replay's
//! definitions ([`super::replay`]; a step is a minute on Azure traces):
//!
//! - **cold starts**: scored steps with invocations in which the series was not warm, summed over the
//!   series. One per step however many invocations the step holds (the Azure paper's cold minute);
//!   `cold-1st` leaves each series' first step out.
//! - **invocation-weighted cold-start rate** (`cold/inv%`, `cold_start_rate`): all cold starts ÷ all
//!   invocations, both summed over the series first: how often a request (a user) meets a cold
//!   start, busy series weighing as much as their traffic.
//! - **per-series percentiles** `p50`/`p75`/`p90`/`p99`: each series' cold-start rate (its cold
//!   starts ÷ its invocations) over the series with at least one invocation, at the lower nearest
//!   rank `sorted[floor(p·(n−1))]` ([`percentile`]): how often the unluckiest apps' users do.
//! - **wasted GB-h/day**: memory held while idle, Σ over series of its warm steps without invocations
//!   × the step's length × its instance memory (`AverageAllocatedMb` on Azure), in GB-hours
//!   (1 GB = 1,024 MB) per day of replay.
//! - **total GB-h/day**: memory held at all, the same with every scored step with invocations added
//!   (one instance serves them, warm or started cold): wasted + what any policy must hold. Replicas
//!   beyond one are in `replica-h/d`, not here.
//! - **quartiles of daily invocations**: the series ranked by invocations per day (invocations in
//!   scored steps ÷ days of the replay; ties in trace order), the `i`-th of `n` (from 0) in quartile
//!   `floor(4i/n) + 1`: Q1 is the rarest quarter, Q4 the busiest; sizes differ by one at most. Every
//!   series has a quartile, those without invocations too, so the quartiles' cold starts,
//!   invocations and memory add up to the whole trace's.

use std::fmt::Write as _;

use serde::Serialize;

use super::hindsight::Bounds;
use super::replay::SeriesScore;

/// The figures users feel and their price, over a set of series (a whole trace or a quartile).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Series in the set (with and without invocations).
    pub series: usize,
    /// Fewest invocations per day of a series in the set (0 for no series).
    pub invocations_per_day_min: f64,
    /// Most invocations per day of a series in the set (0 for no series).
    pub invocations_per_day_max: f64,
    /// Invocations in scored steps.
    pub invocations: u64,
    /// Cold starts (cold steps), first step counted.
    pub cold_starts: u64,
    /// Invocation-weighted cold-start rate: `cold_starts ÷ invocations` (0 without invocations).
    pub cold_start_rate: f64,
    /// Median per-series cold-start rate, over the series with invocations.
    pub p50: f64,
    /// 75th percentile of the per-series cold-start rate.
    pub p75: f64,
    /// 90th percentile of the per-series cold-start rate.
    pub p90: f64,
    /// 99th percentile of the per-series cold-start rate.
    pub p99: f64,
    /// Memory held while idle (warm steps without invocations), GB-h per day.
    pub wasted_gb_hours_per_day: f64,
    /// Memory held at all (steps with invocations plus wasted), GB-h per day.
    pub memory_gb_hours_per_day: f64,
}

/// One quartile of the series by invocations per day.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Quartile {
    /// 1 (the rarest quarter of series) to 4 (the busiest).
    pub quartile: usize,
    /// Its figures.
    #[serde(flatten)]
    pub figures: Figures,
}

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
    /// Invocation-weighted cold-start rate: cold starts ÷ invocations, all series together, first
    /// step counted.
    pub cold_start_rate: f64,
    /// Per-series cold-start rate percentiles, first step counted.
    pub p50: f64,
    /// The 75th percentile, as `p50`.
    pub p75: f64,
    /// The 90th percentile, as `p50`.
    pub p90: f64,
    /// The 99th percentile, as `p50`.
    pub p99: f64,
    /// The same, first step not counted.
    pub p50_late: f64,
    /// The 75th percentile, as `p50_late`.
    pub p75_late: f64,
    /// The 90th percentile, as `p50_late`.
    pub p90_late: f64,
    /// Memory of warm instances in steps without invocations, GB-h per day.
    pub wasted_gb_hours_per_day: f64,
    /// Memory held at all: one instance in each scored step with invocations, plus the wasted, GB-h
    /// per day.
    pub memory_gb_hours_per_day: f64,
    /// Replicas running, summed over scored steps, in replica-hours per day.
    pub replica_hours_per_day: f64,
    /// Steps whose requests exceeded the running replicas' capacity.
    pub short_steps: u64,
    /// The same figures for each quartile of the series by invocations per day, Q1 first.
    pub quartiles: Vec<Quartile>,
    /// Each series' counts (for the CSV; left out of the JSON).
    #[serde(skip)]
    pub series: Vec<SeriesScore>,
    /// Each series' quartile, 1 to 4, in `series` order (for the CSV).
    #[serde(skip)]
    pub series_quartiles: Vec<usize>,
    /// GB-h per day that one MB held for one step stands for (for the CSV).
    #[serde(skip)]
    gb_hours_per_day_per_mb_step: f64,
    /// Days of the replay.
    #[serde(skip)]
    days: f64,
}

/// Lower nearest rank: `sorted[floor(p·(n−1))]`; zero (`T::default()`) for no values.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    sorted[((p * (sorted.len() - 1) as f64).floor() as usize).min(sorted.len() - 1)]
}

/// Each series' quartile (1 to 4) by its `invocations`: ranked from the fewest, ties in the given
/// order, the `i`-th of `n` (from 0) in quartile `floor(4i/n) + 1`.
pub fn quartiles(invocations: &[u64]) -> Vec<usize> {
    let n = invocations.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| invocations[i]);
    let mut quartile = vec![0; n];
    for (rank, &i) in order.iter().enumerate() {
        quartile[i] = 4 * rank / n + 1;
    }
    quartile
}

/// The [`Figures`] of `series`, with one MB held for one step worth `per_mb_step` GB-h per day.
fn figures(series: &[&SeriesScore], per_mb_step: f64, days: f64) -> Figures {
    let invocations: u64 = series.iter().map(|s| s.invocations_all).sum();
    let cold_starts: u64 = series.iter().map(|s| s.cold_all).sum();
    let mut rates: Vec<f64> = series.iter().filter_map(|s| s.cold_rate(true)).collect();
    rates.sort_by(f64::total_cmp);
    let per_day = series.iter().map(|s| s.invocations_all as f64 / days);
    let held = |steps: fn(&SeriesScore) -> u64| {
        series.iter().map(|s| steps(s) as f64 * s.memory_mb).sum::<f64>() * per_mb_step
    };
    Figures {
        series: series.len(),
        invocations_per_day_min: per_day.clone().reduce(f64::min).unwrap_or(0.0),
        invocations_per_day_max: per_day.reduce(f64::max).unwrap_or(0.0),
        invocations,
        cold_starts,
        cold_start_rate: if invocations > 0 { cold_starts as f64 / invocations as f64 } else { 0.0 },
        p50: percentile(&rates, 0.5),
        p75: percentile(&rates, 0.75),
        p90: percentile(&rates, 0.9),
        p99: percentile(&rates, 0.99),
        wasted_gb_hours_per_day: held(|s| s.idle_warm_steps),
        memory_gb_hours_per_day: held(|s| s.idle_warm_steps + s.busy_steps),
    }
}

impl PolicySummary {
    /// Aggregates `series`' scores over a replay of `days` days in steps of `step_secs` seconds.
    pub fn new(policy: String, series: Vec<SeriesScore>, step_secs: f64, days: f64) -> Self {
        let sum = |f: fn(&SeriesScore) -> u64| series.iter().map(f).sum::<u64>();
        let mut late: Vec<f64> = series.iter().filter_map(|s| s.cold_rate(false)).collect();
        late.sort_by(f64::total_cmp);
        let step_minutes = step_secs / 60.0;
        let per_mb_step = step_minutes / 1024.0 / 60.0 / days;
        let all = figures(&series.iter().collect::<Vec<_>>(), per_mb_step, days);
        let series_quartiles = quartiles(&series.iter().map(|s| s.invocations_all).collect::<Vec<_>>());
        let quartiles = (1..=4)
            .map(|q| {
                let members: Vec<&SeriesScore> =
                    series.iter().zip(&series_quartiles).filter(|(_, sq)| **sq == q).map(|(s, _)| s).collect();
                Quartile { quartile: q, figures: figures(&members, per_mb_step, days) }
            })
            .collect();
        let replica_steps: f64 = series.iter().map(|s| s.replica_steps).sum();
        Self {
            policy,
            invocations: all.invocations,
            cold_starts: all.cold_starts,
            cold_starts_late: sum(|s| s.cold_late),
            cold_start_rate: all.cold_start_rate,
            p50: all.p50,
            p75: all.p75,
            p90: all.p90,
            p99: all.p99,
            p50_late: percentile(&late, 0.5),
            p75_late: percentile(&late, 0.75),
            p90_late: percentile(&late, 0.9),
            wasted_gb_hours_per_day: all.wasted_gb_hours_per_day,
            memory_gb_hours_per_day: all.memory_gb_hours_per_day,
            replica_hours_per_day: replica_steps * step_minutes / 60.0 / days,
            short_steps: sum(|s| s.short_steps),
            quartiles,
            series,
            series_quartiles,
            gb_hours_per_day_per_mb_step: per_mb_step,
            days,
        }
    }

    /// The whole trace's [`Figures`].
    pub fn figures(&self) -> Figures {
        let per_day = self.series.iter().map(|s| s.invocations_all as f64 / self.days);
        Figures {
            series: self.series.len(),
            invocations_per_day_min: per_day.clone().reduce(f64::min).unwrap_or(0.0),
            invocations_per_day_max: per_day.reduce(f64::max).unwrap_or(0.0),
            invocations: self.invocations,
            cold_starts: self.cold_starts,
            cold_start_rate: self.cold_start_rate,
            p50: self.p50,
            p75: self.p75,
            p90: self.p90,
            p99: self.p99,
            wasted_gb_hours_per_day: self.wasted_gb_hours_per_day,
            memory_gb_hours_per_day: self.memory_gb_hours_per_day,
        }
    }

    /// Whether the quartiles are worth showing: at least one series in each.
    pub fn has_quartiles(&self) -> bool {
        self.series.len() >= 4
    }
}

/// A count per day, short: `13`, `2,016`, `0.5` (tenths only below 10, and only when not whole).
pub fn per_day(v: f64) -> String {
    if v >= 10.0 || v == v.round() { thousands(v.round() as u64) } else { format!("{v:.1}") }
}

/// `1234567` as `1,234,567`.
pub fn thousands(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The printed tables: a row per policy, then (with 4 series or more) a row per policy and quartile.
pub fn table(title: &str, summaries: &[PolicySummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let _ = writeln!(
        out,
        "{:<16} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>11} {:>11} {:>11} {:>7}",
        "policy",
        "cold",
        "cold-1st",
        "cold/inv%",
        "p50%",
        "p75%",
        "p90%",
        "p99%",
        "p75-1st%",
        "waste GBh/d",
        "total GBh/d",
        "replica-h/d",
        "short"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<16} {:>9} {:>9} {:>9.3} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>11.1} {:>11.1} {:>11.1} {:>7}",
            s.policy,
            s.cold_starts,
            s.cold_starts_late,
            100.0 * s.cold_start_rate,
            100.0 * s.p50,
            100.0 * s.p75,
            100.0 * s.p90,
            100.0 * s.p99,
            100.0 * s.p75_late,
            s.wasted_gb_hours_per_day,
            s.memory_gb_hours_per_day,
            s.replica_hours_per_day,
            s.short_steps
        );
    }
    let _ = writeln!(
        out,
        "cold: cold starts (steps with invocations while not warm), first step counted; cold-1st and p75-1st%: \
         first step not counted;\ncold/inv%: all cold starts ÷ all invocations; p50..p99: per-series cold-start rate; \
         waste: memory held while idle; total: held at all"
    );
    if summaries.iter().all(PolicySummary::has_quartiles) && !summaries.is_empty() {
        out.push('\n');
        out.push_str(&quartile_table(summaries));
    }
    out
}

/// A row per policy and quartile of the series by invocations per day.
pub fn quartile_table(summaries: &[PolicySummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "by quartile of invocations per day (Q1: the rarest quarter of series, Q4: the busiest)");
    let _ = writeln!(
        out,
        "{:<16} {:>2} {:>6} {:>19} {:>12} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>11} {:>11}",
        "policy",
        "Q",
        "series",
        "invocations/day",
        "invocations",
        "cold",
        "cold/inv%",
        "p50%",
        "p75%",
        "p90%",
        "p99%",
        "waste GBh/d",
        "total GBh/d"
    );
    for s in summaries {
        for q in &s.quartiles {
            let f = &q.figures;
            let _ = writeln!(
                out,
                "{:<16} {:>2} {:>6} {:>19} {:>12} {:>9} {:>9.3} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>11.1} {:>11.1}",
                s.policy,
                format!("Q{}", q.quartile),
                f.series,
                format!("{}–{}", per_day(f.invocations_per_day_min), per_day(f.invocations_per_day_max)),
                f.invocations,
                f.cold_starts,
                100.0 * f.cold_start_rate,
                100.0 * f.p50,
                100.0 * f.p75,
                100.0 * f.p90,
                100.0 * f.p99,
                f.wasted_gb_hours_per_day,
                f.memory_gb_hours_per_day
            );
        }
    }
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
    ) + &b.capped.as_ref().map_or(String::new(), |c| {
        format!(
            "and with at most {} cold starts over all series (every series counted), wasted at least:\n  \
             {} with every arrival known\n  \
             {} staying warm through the gaps each series covers\n  \
             {} with the best pre-warm window per series\n  \
             {} with the best keep-alive per series\n",
            thousands(c.cold_starts),
            gb(c.floor),
            gb(c.keep_warm),
            gb(c.one_window),
            gb(c.one_keep_alive)
        )
    })
}

/// One CSV per policy: a row per series.
pub fn series_csv(summary: &PolicySummary) -> String {
    let mut out = String::from(
        "series,invocations,cold_starts,cold_start_rate,idle_warm_steps,memory_mb,replica_steps,\
         busy_steps,quartile,invocations_per_day,wasted_gb_hours_per_day,memory_gb_hours_per_day\n",
    );
    let per_mb_step = summary.gb_hours_per_day_per_mb_step;
    for (s, q) in summary.series.iter().zip(&summary.series_quartiles) {
        let _ = writeln!(
            out,
            "{},{},{},{:.6},{},{},{:.1},{},{},{:.3},{:.6},{:.6}",
            s.name,
            s.invocations_all,
            s.cold_all,
            s.cold_rate(true).unwrap_or(0.0),
            s.idle_warm_steps,
            s.memory_mb,
            s.replica_steps,
            s.busy_steps,
            q,
            s.invocations_all as f64 / summary.days,
            s.idle_warm_steps as f64 * s.memory_mb * per_mb_step,
            (s.idle_warm_steps + s.busy_steps) as f64 * s.memory_mb * per_mb_step
        );
    }
    out
}

/// The header of [`figures_csv_row`].
pub const FIGURES_CSV_HEADER: &str = "series,invocations_per_day_min,invocations_per_day_max,invocations,cold_starts,\
     cold_start_rate,p50,p75,p90,p99,wasted_gb_hours_per_day,memory_gb_hours_per_day";

/// [`Figures`] as CSV fields, in [`FIGURES_CSV_HEADER`]'s order.
pub fn figures_csv_row(f: &Figures) -> String {
    format!(
        "{},{:.3},{:.3},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.3},{:.3}",
        f.series,
        f.invocations_per_day_min,
        f.invocations_per_day_max,
        f.invocations,
        f.cold_starts,
        f.cold_start_rate,
        f.p50,
        f.p75,
        f.p90,
        f.p99,
        f.wasted_gb_hours_per_day,
        f.memory_gb_hours_per_day
    )
}

/// One CSV for all policies: per policy a row for the whole trace (`group` = `all`), then one per
/// quartile (`Q1` to `Q4`).
pub fn summary_csv(summaries: &[PolicySummary]) -> String {
    let mut out = format!("policy,group,{FIGURES_CSV_HEADER}\n");
    for s in summaries {
        let _ = writeln!(out, "{},all,{}", s.policy, figures_csv_row(&s.figures()));
        for q in &s.quartiles {
            let _ = writeln!(out, "{},Q{},{}", s.policy, q.quartile, figures_csv_row(&q.figures));
        }
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
        assert_eq!(percentile(&v, 0.99), 0.3);
        assert_eq!(percentile::<f64>(&[], 0.5), 0.0);
    }

    #[test]
    fn quartiles_rank_from_the_rarest_with_ties_in_order() {
        assert_eq!(quartiles(&[5, 1, 9, 1, 7, 3, 2, 8]), vec![3, 1, 4, 1, 3, 2, 2, 4]);
        assert_eq!(quartiles(&[1, 1, 1, 1, 1]), vec![1, 1, 2, 3, 4], "ties: the first in the trace ranks lower");
        assert_eq!(quartiles(&[4, 3, 2, 1, 0]), vec![4, 3, 2, 1, 1], "five series: 2, 1, 1, 1");
        assert_eq!(quartiles(&[]), Vec::<usize>::new());
    }

    #[test]
    fn thousands_and_per_day() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_209_537), "1,209,537");
        assert_eq!(per_day(0.5), "0.5");
        assert_eq!(per_day(2016.4), "2,016");
    }
}
