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
//!
//! With a cap on the cold starts of all series together (`--hindsight-cold`, e.g. a reference
//! policy's total), every series counts, not only the cheapest ones below the rate, and each may
//! leave some gaps cold: [`capped`] gives the same four bounds under both constraints. It prices a
//! cold start (a Lagrange multiplier), lets each series pick its cheapest cover at that price, makes
//! the ones it costs least force below the rate, and raises the price until the total fits; the value
//! is a lower bound for any price, and the tightest one near the price where the total crosses the cap.

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
    /// The same bounds with at most a number of cold starts in all, with `--hindsight-cold`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capped: Option<Capped>,
}

/// The bounds under both constraints: the percentile below the rate, and at most `cold_starts` cold
/// starts over every series (the first of each included), in GB-h per day; `None` out of reach.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Capped {
    /// The cap on all cold starts together.
    pub cold_starts: u64,
    /// Every arrival known: only the reactive steps of every series, and one cold start each.
    pub floor: Option<f64>,
    /// Each series stays warm through the gaps it chooses.
    pub keep_warm: Option<f64>,
    /// Each series has one window of steps after activity, a pre-warm or a keep-alive.
    pub one_window: Option<f64>,
    /// Each series has one keep-alive.
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
        capped: None,
    }
}

/// A cover at a price: its GB-h plus the price of its cold starts, and the cold starts.
type Priced = (f64, u64);

/// A series' least warm steps for each number of cold starts it may have, by kind of cover.
struct Curves {
    /// Cold starts allowed strictly below the rate (the first included); 0: never below it.
    allowed: u64,
    /// GB-h per warm step of one instance of this series.
    gb_hours_per_step: f64,
    /// The reactive steps (paid whatever the cover).
    reactive: u64,
    /// `[c]`: the least warm steps with at most `c` cold starts (`u64::MAX` when none), from `c` = 1.
    keep_warm: Vec<u64>,
    one_window: Vec<u64>,
    one_keep_alive: Vec<u64>,
}

/// The bounds for `trace` with `percentile` of its series below `rate` and at most `cold_starts`
/// cold starts over all of them (see the module doc).
pub fn capped(trace: &Trace, rate: f64, percentile: f64, cold_starts: u64) -> Capped {
    let step_minutes = trace.step.as_secs_f64() / 60.0;
    let steps = trace.series.first().map_or(0, |s| s.counts.len());
    let days = (steps as f64 * step_minutes / 1440.0).max(1e-9);
    let curves: Vec<Curves> = trace.series.iter().filter_map(|s| series_curves(s, rate, step_minutes)).collect();
    let needed = if curves.is_empty() { 0 } else { (percentile * (curves.len() - 1) as f64).floor() as usize + 1 };
    let bound = |pick: fn(&Curves) -> &[u64]| priced_bound(&curves, pick, needed, cold_starts).map(|v| v / days);
    // Every arrival known: one cold start per series, and only the reactive steps.
    let floor = (curves.len() as u64 <= cold_starts && curves.iter().filter(|c| c.allowed > 0).count() >= needed)
        .then(|| curves.iter().map(|c| c.reactive as f64 * c.gb_hours_per_step).sum::<f64>() / days);
    Capped {
        cold_starts,
        floor,
        keep_warm: bound(|c| &c.keep_warm),
        one_window: bound(|c| &c.one_window),
        one_keep_alive: bound(|c| &c.one_keep_alive),
    }
}

/// The least GB-h for which the series' covers (each a curve of warm steps by cold starts) keep at
/// least `needed` of them below the rate with at most `cap` cold starts in all; `None` when no price
/// gets there. Lagrangian: at price λ per cold start, each series' cheapest cover costs
/// `min_c steps(c) × gb + λc`, or, to be below the rate, the same over `c ≤ allowed`; the `needed`
/// series for which that costs least extra are held below it. `Σ cost − λ × cap` bounds the optimum
/// from below for every λ ≥ 0; it is largest where the total cold starts cross `cap`.
fn priced_bound(curves: &[Curves], pick: fn(&Curves) -> &[u64], needed: usize, cap: u64) -> Option<f64> {
    // Cheapest cover at price `lambda`, over cold counts up to `limit`.
    let cheapest = |c: &Curves, lambda: f64, limit: u64| -> Option<Priced> {
        let curve = pick(c);
        (1..curve.len())
            .take_while(|&k| k as u64 <= limit)
            .filter(|&k| curve[k] != u64::MAX)
            .map(|k| (curve[k] as f64 * c.gb_hours_per_step + lambda * k as f64, k as u64))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
    };
    // At price `lambda`: (Σ cost, Σ cold starts), `None` when fewer than `needed` can be below the rate.
    let solve = |lambda: f64| -> Option<Priced> {
        // Each series' cheapest cover, the extra to hold it below the rate, and that cover.
        let mut picks: Vec<(Priced, f64, Priced)> = curves
            .iter()
            .map(|c| {
                let free = cheapest(c, lambda, u64::MAX).expect("the empty cover always exists");
                let below = if c.allowed > 0 { cheapest(c, lambda, c.allowed) } else { None };
                (free, below.map_or(f64::INFINITY, |b| b.0 - free.0), below.unwrap_or(free))
            })
            .collect();
        picks.sort_by(|a, b| a.1.total_cmp(&b.1));
        if needed > 0 && picks.get(needed - 1).is_none_or(|p| p.1.is_infinite()) {
            return None;
        }
        Some(picks.iter().enumerate().fold((0.0, 0), |(cost, cold), (i, (free, _, below))| {
            let (c, k) = if i < needed { *below } else { *free };
            (cost + c, cold + k)
        }))
    };
    // The most any cover of any series costs: past that price, every series covers all it can.
    let top: f64 = curves
        .iter()
        .map(|c| {
            pick(c)[1..].iter().filter(|&&w| w != u64::MAX).max().copied().unwrap_or(0) as f64 * c.gb_hours_per_step
        })
        .sum::<f64>()
        + 1.0;
    let (_, fewest) = solve(top)?;
    if fewest > cap {
        return None;
    }
    let (mut lo, mut hi) = (0.0, top);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        match solve(mid) {
            Some((_, cold)) if cold <= cap => hi = mid,
            _ => lo = mid,
        }
    }
    let value = |lambda: f64| solve(lambda).map(|(cost, _)| cost - lambda * cap as f64);
    [value(lo), value(hi)].into_iter().flatten().reduce(f64::max).map(|v| v.max(0.0))
}

/// A series' idle time, as both bounds read it.
struct Idle {
    /// Gaps of two steps or more between activities, shortest first.
    gaps: Vec<u64>,
    /// Steps after the last activity: a gap that never closes.
    tail: u64,
    /// Cold starts allowed strictly below the rate, the first activity not counted.
    allowed: u64,
}

/// `None` for a series without invocations.
fn idle(series: &Series, rate: f64) -> Option<Idle> {
    let active: Vec<usize> = (0..series.counts.len()).filter(|&t| series.counts[t] > 0).collect();
    let &last = active.last()?;
    let invocations: u64 = series.counts.iter().map(|&c| u64::from(c)).sum();
    let mut gaps: Vec<u64> = active.windows(2).map(|w| (w[1] - w[0]) as u64).filter(|&g| g >= 2).collect();
    gaps.sort_unstable();
    let tail = (series.counts.len() - 1 - last) as u64;
    // The first activity is one of the cold starts; the epsilon keeps 0.1 × 30 =
    // 3.0000000000000004 from allowing 3.
    let allowed = ((rate * invocations as f64 - 1e-9).ceil().max(0.0) as u64).saturating_sub(1);
    Some(Idle { gaps, tail, allowed })
}

/// A series' curves; `None` without invocations.
fn series_curves(series: &Series, rate: f64, step_minutes: f64) -> Option<Curves> {
    let Idle { gaps, tail, allowed } = idle(series, rate)?;
    let reactive = gaps.len() as u64 + u64::from(tail > 0);
    let n = gaps.len();
    // Index = cold starts (1 + gaps left uncovered); index 0 unused.
    let mut keep_warm = vec![u64::MAX; n + 2];
    let mut covered_steps = 0;
    for m in 0..=n {
        keep_warm[1 + n - m] = reactive + covered_steps;
        if m < n {
            covered_steps += gaps[m] - 2;
        }
    }
    // Warm steps lo..=min(g − 1, hi) summed over the gaps and the tail, with prefix sums.
    let prefix: Vec<u64> = std::iter::once(0)
        .chain(gaps.iter().scan(0, |sum, &g| {
            *sum += g;
            Some(*sum)
        }))
        .collect();
    let held = |lo: u64, hi: u64| -> u64 {
        let a = gaps.partition_point(|&g| g <= lo);
        let b = gaps.partition_point(|&g| g <= hi + 1);
        let inside = (prefix[b] - prefix[a]) - lo * (b - a) as u64;
        let beyond = (hi + 1 - lo) * (n - b) as u64;
        let tail_held = (tail.min(hi) + 1).saturating_sub(lo);
        inside + beyond + tail_held
    };
    let caught = |lo: u64, hi: u64| gaps.partition_point(|&g| g <= hi) - gaps.partition_point(|&g| g < lo);
    let mut one_window = vec![u64::MAX; n + 2];
    let mut one_keep_alive = vec![u64::MAX; n + 2];
    one_window[1 + n] = reactive;
    one_keep_alive[1 + n] = reactive;
    let mut distinct = gaps.clone();
    distinct.dedup();
    for (i, &hi) in distinct.iter().enumerate() {
        for lo in std::iter::once(2).chain(distinct[..=i].iter().copied()) {
            let cold = 1 + n - caught(lo, hi);
            let steps = reactive + held(lo, hi);
            one_window[cold] = one_window[cold].min(steps);
            if lo == 2 {
                one_keep_alive[cold] = one_keep_alive[cold].min(steps);
            }
        }
    }
    // At most `c` cold starts: the best of every count up to `c`.
    for curve in [&mut keep_warm, &mut one_window, &mut one_keep_alive] {
        for k in 2..curve.len() {
            curve[k] = curve[k].min(curve[k - 1]);
        }
    }
    let gb_hours_per_step = step_minutes / 60.0 * series.memory_mb / 1024.0;
    Some(Curves { allowed, gb_hours_per_step, reactive, keep_warm, one_window, one_keep_alive })
}

/// A series' best covers below `rate`; `None` for a series without invocations.
fn series_cost(series: &Series, rate: f64) -> Option<SeriesCost> {
    let Idle { gaps, tail, allowed } = idle(series, rate)?;
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

    /// Two series of 1 GiB over 31 one-minute steps: A runs at 0, 10 and 20 (two gaps of 10, a tail
    /// of 10), B at 0 and 30 (one gap of 30). Reactive steps: A 3 (its two gaps and the tail), B 1.
    fn two_series() -> Trace {
        Trace {
            name: "t".into(),
            step: std::time::Duration::from_secs(60),
            start_wall: 0.0,
            series: vec![series(&[0, 10, 20], 31, 1024.0), series(&[0, 30], 31, 1024.0)],
        }
    }

    /// Warm steps of a 1 GiB series, in GB-h per day of the 31-step trace.
    fn gb(steps: f64) -> Option<f64> {
        Some(steps / 60.0 / (31.0 / 1440.0))
    }

    fn close(a: Option<f64>, b: Option<f64>) -> bool {
        match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-6 * b.abs().max(1.0),
            (a, b) => a == b,
        }
    }

    #[test]
    fn a_cold_start_cap_makes_every_series_pay_for_the_gaps_it_leaves_cold() {
        // Below 100 % with p75 (one series of two): no percentile to meet but A's. Staying warm costs
        // A 8 steps a gap and B 28, so 3 cold starts in all cover A's gaps and leave B's: 3 + 16 + 1
        // steps. With 2, B's gap is covered too (28 more); 1 is fewer than one per series.
        let trace = two_series();
        let c = capped(&trace, 1.0, 0.75, 3);
        assert!(close(c.floor, gb(4.0)), "the reactive steps alone: {c:?}");
        assert!(close(c.keep_warm, gb(20.0)), "{c:?}");
        // One keep-alive for A that catches both gaps also holds 9 steps of its tail: 28, or A keeps
        // nothing and B covers its gap: 3 + 29 (more); the bound is where A's price crosses over.
        assert!(close(c.one_keep_alive, gb(29.0)), "{c:?}");
        let c = capped(&trace, 1.0, 0.75, 2);
        assert!(close(c.keep_warm, gb(19.0 + 29.0)), "{c:?}");
        assert!(close(c.one_keep_alive, gb(28.0 + 29.0)), "{c:?}");
        // A pre-warm at exactly step 10 (and 30 for B) holds only A's tail step 10: 3 + 1 and 1.
        assert!(close(c.one_window, gb(5.0)), "{c:?}");
        let c = capped(&trace, 1.0, 0.75, 1);
        assert_eq!((c.floor, c.keep_warm, c.one_window, c.one_keep_alive), (None, None, None, None));
    }

    #[test]
    fn under_a_loose_cap_the_percentile_picks_the_series_cheapest_to_hold_below_the_rate() {
        // Below 60 %: A (3 invocations) and B (2) may each have 1 cold start, the first. One of them
        // must: A for 16 steps more, B for 28. The cap of 5 allows every gap to stay cold.
        let c = capped(&two_series(), 0.6, 0.75, 5);
        assert!(close(c.keep_warm, gb(19.0 + 1.0)), "{c:?}");
        // The uncapped bound counts A alone, the series it keeps below the rate.
        let b = bounds(&two_series(), 0.6, 0.75);
        assert!(close(b.keep_warm, gb(19.0)), "{b:?}");
    }

    #[test]
    fn a_series_with_too_few_requests_can_never_be_below_the_rate() {
        let c = series_cost(&series(&[5, 50, 500], 600, 1024.0), 0.1).unwrap();
        assert_eq!(c, SeriesCost { floor: None, keep_warm: None, one_window: None, one_keep_alive: None });
        assert!(series_cost(&series(&[], 600, 1024.0), 0.1).is_none());
    }
}
