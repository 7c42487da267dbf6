//! Hindsight bounds: the least wasted memory with which a policy that knew every series' whole
//! trace in advance could keep enough series below a cold-start rate for a percentile to fall
//! under it (`p75 < 10 %`: the cheapest 750 of 1,000 functions below 10 %).
//!
//! On the replay's definitions ([`super::replay`]): the first active step is always cold; the step
//! after an active one is warm (every policy here holds the reactive floor), so a gap of `g` steps
//! between two active steps wastes at least that one step, and a covered gap wastes whatever warm
//! steps it holds. Four bounds (`floor` is the lowest, `one_keep_alive` the highest):
//! - `floor`: the reactive steps alone, as a policy that pre-warms each needed gap exactly at its
//!   end would pay (it would have to know every arrival to the step);
//! - `keep_warm`: each series stays warm through exactly the gaps it must cover, the shortest ones
//!   (a bound for any policy that covers a gap by staying up through it, adaptive or not);
//! - `one_window`: each series has one window of steps after activity, warm from `lo` to `hi`
//!   (the best for it), as a pre-warm or a keep-alive;
//! - `one_keep_alive`: each series has one keep-alive, the best for it (`fixed-K` with its own K).

use serde::Serialize;

use super::trace::{Series, Trace};

/// What a series' best cover costs, in warm idle steps; `None` when no cover gets it below the rate.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SeriesCost {
    floor: Option<u64>,
    keep_warm: Option<u64>,
    one_window: Option<u64>,
    one_keep_alive: Option<u64>,
}

/// The bounds for one trace, in GB-h per day.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bounds {
    /// Cold-start rate to stay below.
    pub rate: f64,
    /// Percentile that must fall below it (0.75).
    pub percentile: f64,
    /// Series with invocations (the others have no rate).
    pub series: usize,
    /// Series that must be below it (`floor(p·(n−1)) + 1` of them).
    pub needed: usize,
    /// Series that can be below it at all.
    pub feasible: usize,
    /// The `floor` bound (see the module doc); `None` when too few series can get below the rate.
    pub floor: Option<f64>,
    /// The `keep_warm` bound; `None` as for `floor`.
    pub keep_warm: Option<f64>,
    /// The `one_window` bound; `None` as for `floor`.
    pub one_window: Option<f64>,
    /// The `one_keep_alive` bound; `None` as for `floor`.
    pub one_keep_alive: Option<f64>,
}

/// The bounds for `trace`: `percentile` of its series below `rate`.
pub fn bounds(trace: &Trace, rate: f64, percentile: f64) -> Bounds {
    let step_minutes = trace.step.as_secs_f64() / 60.0;
    let steps = trace.series.first().map_or(0, |s| s.counts.len());
    let days = (steps as f64 * step_minutes / 1440.0).max(1e-9);
    let series: Vec<(&Series, SeriesCost)> =
        trace.series.iter().filter_map(|s| series_cost(s, rate).map(|c| (s, c))).collect();
    let needed = if series.is_empty() { 0 } else { (percentile * (series.len() - 1) as f64).floor() as usize + 1 };
    let total = |pick: fn(&SeriesCost) -> Option<u64>| {
        let mut costs: Vec<f64> = series
            .iter()
            .filter_map(|(s, c)| pick(c).map(|steps| steps as f64 * step_minutes * s.memory_mb / 1024.0 / 60.0))
            .collect();
        if costs.len() < needed {
            return None;
        }
        costs.sort_by(f64::total_cmp);
        Some(costs[..needed].iter().sum::<f64>() / days)
    };
    Bounds {
        rate,
        percentile,
        series: series.len(),
        needed,
        feasible: series.iter().filter(|(_, c)| c.floor.is_some()).count(),
        floor: total(|c| c.floor),
        keep_warm: total(|c| c.keep_warm),
        one_window: total(|c| c.one_window),
        one_keep_alive: total(|c| c.one_keep_alive),
    }
}

/// A series' best covers below `rate`; `None` for a series without invocations.
fn series_cost(series: &Series, rate: f64) -> Option<SeriesCost> {
    let active: Vec<usize> = (0..series.counts.len()).filter(|&t| series.counts[t] > 0).collect();
    let &last = active.last()?;
    let invocations: u64 = series.counts.iter().map(|&c| u64::from(c)).sum();
    let mut gaps: Vec<u64> = active.windows(2).map(|w| (w[1] - w[0]) as u64).filter(|&g| g >= 2).collect();
    gaps.sort_unstable();
    // Steps after the last activity behave as a gap that never closes.
    let tail = (series.counts.len() - 1 - last) as u64;
    // Cold starts allowed strictly below the rate (the first activity is one of them); the epsilon
    // keeps 0.1 × 30 = 3.0000000000000004 from allowing 3.
    let allowed = ((rate * invocations as f64 - 1e-9).ceil().max(0.0) as u64).saturating_sub(1);
    let uncovered = 1 + gaps.len() as u64;
    let must_cover = uncovered.saturating_sub(allowed) as usize;
    if allowed == 0 {
        return Some(SeriesCost { floor: None, keep_warm: None, one_window: None, one_keep_alive: None });
    }
    let reactive = gaps.len() as u64 + u64::from(tail > 0);
    if must_cover == 0 {
        let nothing = Some(reactive);
        return Some(SeriesCost { floor: nothing, keep_warm: nothing, one_window: nothing, one_keep_alive: nothing });
    }
    // Staying up through gap g costs its g − 2 steps beyond the reactive one.
    let keep_warm = reactive + gaps[..must_cover].iter().map(|g| g - 2).sum::<u64>();
    Some(SeriesCost {
        floor: Some(reactive),
        keep_warm: Some(keep_warm),
        one_window: best_window(&gaps, tail, must_cover, false).map(|w| reactive + w),
        one_keep_alive: best_window(&gaps, tail, must_cover, true).map(|w| reactive + w),
    })
}

/// The fewest warm steps beyond the reactive one of a window `lo..=hi` (steps after activity, from 2)
/// that holds at least `must_cover` of the sorted `gaps` (a gap g is held when `lo ≤ g ≤ hi`).
/// `keep_alive`: only windows from step 2.
fn best_window(gaps: &[u64], tail: u64, must_cover: usize, keep_alive: bool) -> Option<u64> {
    // Warm steps of window lo..=hi in a gap of g steps: those before the next activity, lo..=min(g−1, hi).
    let idle = |lo: u64, hi: u64| {
        let held = |g: u64| (g.saturating_sub(1).min(hi) + 1).saturating_sub(lo);
        gaps.iter().map(|&g| held(g)).sum::<u64>() + held(tail + 1)
    };
    let starts = if keep_alive { 0..1 } else { 0..gaps.len() };
    starts
        .filter(|&i| i == 0 || gaps[i] != gaps[i - 1])
        .filter_map(|i| {
            // From the i-th shortest gap, the window must reach the one `must_cover − 1` further on.
            let end = i + must_cover - 1;
            let lo = if keep_alive { 2 } else { gaps[i] };
            gaps.get(end).map(|&hi| idle(lo, hi))
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(active: &[usize], len: usize, memory_mb: f64) -> Series {
        let mut counts = vec![0; len];
        for &t in active {
            counts[t] = 1;
        }
        Series { name: "s".into(), counts, scored: None, memory_mb, memory_measured: true }
    }

    #[test]
    fn a_timer_is_covered_by_one_exact_window_but_a_keep_alive_pays_for_every_step() {
        // 20 runs, 30 steps apart: below 10 % allows one cold start (the first), so all 19 gaps are
        // covered. A window at exactly step 30 wastes only the reactive steps; a keep-alive 28 more each.
        let active: Vec<usize> = (0..20).map(|k| k * 30).collect();
        let c = series_cost(&series(&active, 600, 1024.0), 0.1).unwrap();
        assert_eq!((c.floor, c.one_window), (Some(19 + 1), Some(19 + 1)));
        assert_eq!(c.keep_warm, Some(19 + 1 + 19 * 28));
        assert_eq!(c.one_keep_alive, Some(19 + 1 + 19 * 28 + 28));
    }

    #[test]
    fn spare_cold_starts_skip_the_longest_gaps() {
        // 30 single requests: below 10 % allows 2 cold starts, the first and one more; the longest gap
        // (100 steps) is left cold.
        let mut active = vec![0];
        for k in 0..29 {
            active.push(active.last().unwrap() + if k == 10 { 100 } else { 5 });
        }
        let len = active.last().unwrap() + 1;
        let c = series_cost(&series(&active, len, 1024.0), 0.1).unwrap();
        assert_eq!(c.keep_warm, Some(29 + 28 * 3));
        assert_eq!(c.one_keep_alive, Some(29 + 28 * 3 + 4), "the long gap keeps the keep-alive's 4 steps");
    }

    #[test]
    fn a_series_with_too_few_requests_can_never_be_below_the_rate() {
        let c = series_cost(&series(&[5, 50, 500], 600, 1024.0), 0.1).unwrap();
        assert_eq!(c, SeriesCost { floor: None, keep_warm: None, one_window: None, one_keep_alive: None });
        assert!(series_cost(&series(&[], 600, 1024.0), 0.1).is_none());
    }
}
