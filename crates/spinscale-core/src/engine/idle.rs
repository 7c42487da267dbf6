//! The idle-time model: a bounded histogram of a target's idle gaps, and the keep-alive / pre-warm
//! windows it implies. Two rules choose the windows: the hybrid-histogram policy of Shahrad et al.
//! (ATC 2020), and spinscale's priced rule, which weighs each window's idle memory against the cold
//! starts it avoids, at one price for every app, and holds an app whose next cold start would take it
//! past its cold-start budget while its gaps are still few. Both know lead time and the tick, and
//! remember the time of day of wakes after gaps longer than the histogram.
//!
//! A gap is the time from the last reading that showed activity to the next one, counted only
//! when at least one quiet reading lies between. All times are `Duration`s since any fixed origin:
//! the model never reads a clock.

use std::time::Duration;

use super::decision::Reason;

/// How gap lengths map to bins.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BinLayout {
    /// `count` bins, log-spaced from `min` to `max` (spinscale's own model).
    Log {
        /// Where the log spacing starts; shorter gaps fall into the first bin.
        min: Duration,
        /// Longest gap the histogram holds; longer ones count as out of range.
        max: Duration,
        /// Number of bins.
        count: usize,
    },
    /// Bins of `width` centred on multiples of `width`, up to `max` (the paper's 1-minute bins).
    Linear {
        /// Width of each bin.
        width: Duration,
        /// Centre of the last bin; gaps beyond its upper edge count as out of range.
        max: Duration,
    },
}

impl BinLayout {
    fn count(self) -> usize {
        match self {
            BinLayout::Log { count, .. } => count.max(1),
            BinLayout::Linear { width, max } => (max.as_secs_f64() / width.as_secs_f64()).round() as usize + 1,
        }
    }

    /// The bin of a gap, or `None` above the range.
    fn bin(self, gap: Duration) -> Option<usize> {
        let g = gap.as_secs_f64();
        match self {
            BinLayout::Log { min, max, count } => {
                if g > max.as_secs_f64() {
                    return None;
                }
                let (lo, hi) = (min.as_secs_f64().ln(), max.as_secs_f64().ln());
                let x = ((g.max(min.as_secs_f64()).ln() - lo) / (hi - lo) * count as f64).floor() as usize;
                Some(x.min(count - 1))
            }
            BinLayout::Linear { width, max } => {
                if g > max.as_secs_f64() + width.as_secs_f64() / 2.0 {
                    return None;
                }
                Some((g / width.as_secs_f64()).round() as usize)
            }
        }
    }

    /// The lower and upper edge of bin `i`, in seconds.
    fn edges(self, i: usize) -> (f64, f64) {
        match self {
            BinLayout::Log { min, max, count } => {
                let (lo, hi) = (min.as_secs_f64().ln(), max.as_secs_f64().ln());
                let at = |k: usize| (lo + (hi - lo) * k as f64 / count as f64).exp();
                (if i == 0 { 0.0 } else { at(i) }, at(i + 1))
            }
            BinLayout::Linear { width, .. } => {
                let w = width.as_secs_f64();
                ((i as f64 * w - w / 2.0).max(0.0), i as f64 * w + w / 2.0)
            }
        }
    }
}

/// How the windows are chosen from the histogram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WindowRule {
    /// The paper's rule: pre-warm at the head percentile, keep alive to the tail percentile.
    Percentiles,
    /// spinscale's rule: the window over the gaps seen with the most `worth × gaps caught − warm idle
    /// time`, where `worth` is what one cold start avoided is worth in idle time of a 1 GiB instance
    /// (divided by [`IdleParams::idle_cost`]: the same memory price for every app, busy or rare). While
    /// fewer than `min_gaps` gaps are seen and the next cold start would take the target's share of
    /// cold requests past `budget`, it is also kept alive for `fallback_keep_alive` (ski rental).
    Budget {
        /// Share of requests that may meet a cold start, 0..=1 (`engine.coldStartBudget`): below it
        /// with a cold start to spare, a target is no longer held by the fallback keep-alive.
        budget: f64,
        /// Idle time of a 1 GiB instance that one cold start avoided is worth (`engine.coldStartWorth`).
        worth: Duration,
    },
}

/// Knobs of the idle model: [`IdleParams::hybrid`] is the paper's preset; spinscale's come from the
/// config (`EngineSettings::idle_params`).
#[derive(Clone, Debug, PartialEq)]
pub struct IdleParams {
    /// How gap lengths map to histogram bins.
    pub bins: BinLayout,
    /// How the keep-alive and pre-warm windows are chosen from the histogram.
    pub rule: WindowRule,
    /// Percentile whose lower edge starts the pre-warm (0.05).
    pub head: f64,
    /// Percentile whose upper edge ends the keep-alive (0.99).
    pub tail: f64,
    /// Fraction taken off the head before pre-warming.
    pub head_margin: f64,
    /// Fraction added to the tail.
    pub tail_margin: f64,
    /// Gaps needed before the histogram is trusted.
    pub min_gaps: u32,
    /// Coefficient of variation of the bin counts needed before the histogram is trusted (the paper: 2).
    pub min_cv: f64,
    /// Keep-alive when the histogram is not trusted.
    pub fallback_keep_alive: Duration,
    /// Longest keep-alive the histogram may ask for.
    pub max_keep_alive: Duration,
    /// Shortest unloaded stretch worth going inactive for, in ticks.
    pub min_unloaded_ticks: f64,
    /// Counts are halved when their sum reaches this (recent gaps weigh more).
    pub decay_at: u32,
    /// How long a remembered time-of-day wake keeps the target pre-warmed on each side (0 = off).
    pub time_of_day_window: Duration,
    /// What a second of this target's idle instance costs against a 1 GiB one (its memory ÷ 1 GiB):
    /// `Budget`'s `worth` and the fallback keep-alive are divided by it.
    pub idle_cost: f64,
}

impl IdleParams {
    /// The hybrid histogram of "Serverless in the Wild": 1-minute bins up to 4 h, pre-warm at p5 −10 %,
    /// keep-alive p99 +10 %, a fixed 4 h keep-alive when the histogram is not representative.
    pub fn hybrid() -> Self {
        Self {
            bins: BinLayout::Linear { width: Duration::from_secs(60), max: Duration::from_secs(4 * 3600) },
            rule: WindowRule::Percentiles,
            head: 0.05,
            tail: 0.99,
            head_margin: 0.10,
            tail_margin: 0.10,
            min_gaps: 10,
            min_cv: 2.0,
            fallback_keep_alive: Duration::from_secs(4 * 3600),
            max_keep_alive: Duration::from_secs(4 * 3600 + 1440),
            min_unloaded_ticks: 1.0,
            decay_at: u32::MAX,
            time_of_day_window: Duration::ZERO,
            idle_cost: 1.0,
        }
    }
}

/// A bounded histogram of idle gaps: one counter per bin, allocated once.
#[derive(Clone, Debug)]
pub struct GapHistogram {
    layout: BinLayout,
    counts: Vec<u32>,
    /// Sum of the gaps in each bin, seconds (their mean is more exact than the bin's edges).
    sums: Vec<f64>,
    /// Shortest gap seen in each bin, seconds (a timer's bin holds one gap length: its pre-warm can be exact).
    mins: Vec<f64>,
    total: u32,
    out_of_range: u32,
}

impl GapHistogram {
    /// An empty histogram with every bin of `layout` allocated up front.
    pub fn new(layout: BinLayout) -> Self {
        let n = layout.count();
        Self { layout, counts: vec![0; n], sums: vec![0.0; n], mins: vec![f64::INFINITY; n], total: 0, out_of_range: 0 }
    }

    /// Records one gap; returns `false` when it is longer than the histogram's range.
    pub fn record(&mut self, gap: Duration, decay_at: u32) -> bool {
        if self.total.saturating_add(self.out_of_range) >= decay_at {
            for ((c, s), m) in self.counts.iter_mut().zip(self.sums.iter_mut()).zip(self.mins.iter_mut()) {
                let mean = if *c > 0 { *s / *c as f64 } else { 0.0 };
                *c /= 2;
                *s = mean * *c as f64;
                if *c == 0 {
                    *m = f64::INFINITY;
                }
            }
            self.total = self.counts.iter().sum();
            self.out_of_range /= 2;
        }
        match self.layout.bin(gap) {
            Some(i) => {
                self.counts[i] += 1;
                self.sums[i] += gap.as_secs_f64();
                self.mins[i] = self.mins[i].min(gap.as_secs_f64());
                self.total += 1;
                true
            }
            None => {
                self.out_of_range += 1;
                false
            }
        }
    }

    /// Gaps inside the range.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Gaps longer than the range.
    pub fn out_of_range(&self) -> u32 {
        self.out_of_range
    }

    /// Every gap recorded, in the range or not.
    pub fn all(&self) -> u32 {
        self.total.saturating_add(self.out_of_range)
    }

    /// Elements held in its buffers: three per bin, fixed when it is built.
    pub fn footprint(&self) -> usize {
        self.counts.len() + self.sums.len() + self.mins.len()
    }

    /// The bin holding percentile `p` (0..=1) of all gaps, `None` when it lies above the range.
    fn percentile_bin(&self, p: f64) -> Option<usize> {
        let all = self.all();
        if all == 0 {
            return None;
        }
        let rank = ((p * all as f64).ceil() as u32).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(i);
            }
        }
        None
    }

    /// Lower edge of the bin of percentile `p`, in seconds.
    pub fn lower(&self, p: f64) -> Option<f64> {
        self.percentile_bin(p).map(|i| self.layout.edges(i).0)
    }

    /// Upper edge of the bin of percentile `p`, in seconds.
    pub fn upper(&self, p: f64) -> Option<f64> {
        self.percentile_bin(p).map(|i| self.layout.edges(i).1)
    }

    /// Non-empty bins in order: (count, mean gap, shortest gap), seconds.
    fn filled(&self) -> impl Iterator<Item = (f64, f64, f64)> + Clone + '_ {
        self.counts
            .iter()
            .zip(&self.sums)
            .zip(&self.mins)
            .filter(|((c, _), _)| **c > 0)
            .map(|((&c, &s), &m)| (c as f64, s / c as f64, m))
    }

    /// Coefficient of variation of the bin counts (the paper's representativeness test).
    pub fn cv(&self) -> f64 {
        let n = self.counts.len() as f64;
        let mean = self.total as f64 / n;
        if mean == 0.0 {
            return 0.0;
        }
        let var = self.counts.iter().map(|&c| (c as f64 - mean).powi(2)).sum::<f64>() / n;
        var.sqrt() / mean
    }
}

/// What to do after activity stops, measured from the last activity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plan {
    /// Stay active until `until`.
    KeepAlive {
        /// End of the keep-alive, measured from the last activity.
        until: Duration,
    },
    /// Go inactive, then pre-warm from `from` until `until`.
    Unload {
        /// Start of the pre-warm, measured from the last activity.
        from: Duration,
        /// End of the pre-warm, measured from the last activity.
        until: Duration,
    },
}

impl Plan {
    /// When the plan lets the target go for good.
    pub fn until(self) -> Duration {
        match self {
            Plan::KeepAlive { until } | Plan::Unload { until, .. } => until,
        }
    }
}

/// Cold starts the budget must still hold, counting the next burst's requests, before a target with
/// few gaps is let go without the fallback keep-alive: the next cold start, and half of one the
/// windows did not plan for (apps with few requests have a budget of one or two).
const COLD_START_RESERVE: f64 = 1.5;

/// Gaps seen before the priced rule tries pre-warms: one to see a length, one to see it again. Fewer
/// than a keep-alive needs to be trusted (`min_gaps`): a pre-warm that misses costs one cold start,
/// and each gap it covers saves the whole gap's idle time (an hourly timer, 15 hours of it).
const PRE_WARM_GAPS: u32 = 2;

/// Remembered times of day (seconds after midnight) at which the target woke after a gap longer
/// than the histogram, in a fixed ring.
const TIME_OF_DAY_SLOTS: usize = 8;
const DAY: f64 = 86_400.0;

/// One target's idle-time state.
#[derive(Clone, Debug)]
pub struct IdleModel {
    params: IdleParams,
    histogram: GapHistogram,
    last_activity: Option<Duration>,
    quiet_since_activity: bool,
    plan: Option<Plan>,
    wakes: [Option<f64>; TIME_OF_DAY_SLOTS],
    next_wake_slot: usize,
    /// Requests, bursts and cold starts seen; halved together when the bursts reach `decay_at`, so
    /// recent ones weigh more (as the histogram's counts).
    requests: f64,
    bursts: f64,
    cold_starts: f64,
}

impl IdleModel {
    /// A model with an empty histogram and no activity seen yet.
    pub fn new(params: IdleParams) -> Self {
        let histogram = GapHistogram::new(params.bins);
        Self {
            params,
            histogram,
            last_activity: None,
            quiet_since_activity: false,
            plan: None,
            wakes: [None; TIME_OF_DAY_SLOTS],
            next_wake_slot: 0,
            requests: 0.0,
            bursts: 0.0,
            cold_starts: 0.0,
        }
    }

    /// The idle gaps recorded so far.
    pub fn histogram(&self) -> &GapHistogram {
        &self.histogram
    }

    /// Elements held in its buffers: the histogram's and the time-of-day ring's.
    pub fn footprint(&self) -> usize {
        self.histogram.footprint() + self.wakes.len()
    }

    /// A reading with activity at `now` (`day_secs`: its wall-clock time of day; `requests`: about how
    /// many requests since the previous reading; `cold`: the target was inactive when it came).
    pub fn on_activity(&mut self, now: Duration, day_secs: f64, requests: f64, cold: bool) {
        // A burst is at least one request, also for signals that count none (Kafka lag); a reading
        // beyond any real rate is capped so the counts stay finite.
        let requests = if requests.is_finite() { requests.clamp(0.0, 1e12) } else { 0.0 };
        let starts_burst = self.quiet_since_activity || self.last_activity.is_none();
        if starts_burst {
            if self.bursts >= f64::from(self.params.decay_at) {
                self.requests /= 2.0;
                self.bursts /= 2.0;
                self.cold_starts /= 2.0;
            }
            self.bursts += 1.0;
        }
        self.requests += if starts_burst { requests.max(1.0) } else { requests };
        if cold {
            self.cold_starts += 1.0;
        }
        if let (Some(last), true) = (self.last_activity, self.quiet_since_activity) {
            let gap = now.saturating_sub(last);
            if !self.histogram.record(gap, self.params.decay_at) && !self.params.time_of_day_window.is_zero() {
                self.wakes[self.next_wake_slot] = Some(day_secs);
                self.next_wake_slot = (self.next_wake_slot + 1) % TIME_OF_DAY_SLOTS;
            }
        }
        self.last_activity = Some(now);
        self.quiet_since_activity = false;
        self.plan = None;
    }

    /// A quiet reading at `now`: whether the model holds the target active, and why.
    /// `tick` is the time between readings, `lead` the target's lead time.
    pub fn on_quiet(&mut self, now: Duration, day_secs: f64, tick: Duration, lead: Duration) -> Option<Reason> {
        self.quiet_since_activity = true;
        let last = self.last_activity?;
        let plan = match self.plan {
            Some(plan) => plan,
            None => {
                let plan = self.plan(tick, lead);
                self.plan = Some(plan);
                plan
            }
        };
        let since = now.saturating_sub(last);
        let held = match plan {
            Plan::KeepAlive { until } => (since < until).then_some(Reason::KeepAlive),
            Plan::Unload { from, until } => (since >= from && since < until).then_some(Reason::PreWarm),
        };
        held.or_else(|| self.time_of_day(day_secs, tick, lead))
    }

    /// Cold starts per request so far.
    pub fn cold_start_rate(&self) -> f64 {
        if self.requests > 0.0 { self.cold_starts / self.requests } else { 0.0 }
    }

    /// The windows the histogram implies now.
    pub fn plan(&self, tick: Duration, lead: Duration) -> Plan {
        match self.params.rule {
            WindowRule::Percentiles => self.percentile_plan(tick, lead),
            WindowRule::Budget { budget, worth } => self.budget_plan(budget, worth, tick, lead),
        }
    }

    fn percentile_plan(&self, tick: Duration, lead: Duration) -> Plan {
        let p = &self.params;
        let h = &self.histogram;
        let fallback = Plan::KeepAlive { until: p.fallback_keep_alive };
        if h.total() < p.min_gaps || h.cv() < p.min_cv {
            return fallback;
        }
        let (Some(head), Some(tail)) = (h.lower(p.head), h.upper(p.tail)) else { return fallback };
        let until = (tail * (1.0 + p.tail_margin)).min(p.max_keep_alive.as_secs_f64());
        let from = head * (1.0 - p.head_margin) - tick.as_secs_f64() - lead.as_secs_f64();
        let until = Duration::from_secs_f64(until.max(0.0));
        if from >= p.min_unloaded_ticks * tick.as_secs_f64() {
            Plan::Unload { from: Duration::from_secs_f64(from), until }
        } else {
            Plan::KeepAlive { until }
        }
    }

    fn budget_plan(&self, budget: f64, worth: Duration, tick: Duration, lead: Duration) -> Plan {
        let p = &self.params;
        let cost = p.idle_cost.max(1e-6);
        let fitted = self.best_window(worth.as_secs_f64() / cost, tick, lead);
        // Cold starts still affordable should the next burst start cold.
        let per_burst = self.requests / self.bursts.max(1.0);
        let slack = budget * (self.requests + per_burst) - self.cold_starts;
        if self.histogram.all() >= p.min_gaps || slack >= COLD_START_RESERVE {
            return fitted.unwrap_or(Plan::KeepAlive { until: Duration::ZERO });
        }
        // Ski rental: too few gaps to trust and no cold start to spare, so stay up for a while whatever
        // the few gaps say (a first long gap often follows a few short ones).
        let fallback = (p.fallback_keep_alive.as_secs_f64() / cost).min(p.max_keep_alive.as_secs_f64());
        let fitted_until = fitted.map_or(0.0, |plan| plan.until().as_secs_f64());
        Plan::KeepAlive { until: Duration::from_secs_f64(fallback.max(fitted_until)) }
    }

    /// Among the windows over the seen gaps, the one with the most `worth × gaps caught − warm idle
    /// seconds`; `None` when no window is worth anything. A window ends `tail_margin` after the mean gap
    /// of one bin; it is a keep-alive (from the last activity) or, once [`PRE_WARM_GAPS`] gaps are
    /// seen, an unload and a pre-warm from the head of one bin on. Gaps shorter than a pre-warm's start
    /// are missed at no idle cost; gaps longer than a window's end are missed and hold it to its end.
    fn best_window(&self, worth: f64, tick: Duration, lead: Duration) -> Option<Plan> {
        let p = &self.params;
        let h = &self.histogram;
        let (tick, lead) = (tick.as_secs_f64(), lead.as_secs_f64());
        let all = f64::from(h.all());
        let max_keep = p.max_keep_alive.as_secs_f64();
        let mut best: (f64, Option<Plan>) = (0.0, None);
        let pre_warms = if h.all() >= PRE_WARM_GAPS { h.filled().count() } else { 0 };
        // `skip` = None: a keep-alive; Some(i): a pre-warm from the head of the i-th filled bin.
        for skip in std::iter::once(None).chain((0..pre_warms).map(Some)) {
            let from = match skip.and_then(|i| h.filled().nth(i)) {
                None => 0.0,
                Some((_, mean, shortest)) => {
                    // `headMargin` before the bin's mean gap, or later when its gaps are tightly spread
                    // (a timer's are all one length): from the shortest seen less its distance to the
                    // mean, and never after the shortest itself.
                    let head = (mean * (1.0 - p.head_margin)).max(shortest - (mean - shortest)).min(shortest);
                    let from = head - tick - lead;
                    if from < p.min_unloaded_ticks * tick {
                        continue;
                    }
                    from
                }
            };
            let (mut caught, mut idle, mut seen) = (0.0, 0.0, 0.0);
            for (k, (count, gap, _)) in h.filled().enumerate() {
                seen += count;
                if skip.is_some_and(|i| k < i) {
                    continue;
                }
                let until = (gap * (1.0 + p.tail_margin)).min(max_keep);
                if gap - tick >= until || until <= from {
                    break;
                }
                caught += count;
                idle += count * (gap - tick - from).max(0.0);
                let value = worth * caught - idle - (all - seen) * (until - from);
                if value > best.0 {
                    let until = Duration::from_secs_f64(until);
                    let plan = match skip {
                        None => Plan::KeepAlive { until },
                        Some(_) => Plan::Unload { from: Duration::from_secs_f64(from), until },
                    };
                    best = (value, Some(plan));
                }
            }
        }
        best.1
    }

    /// Pre-warm around a remembered time-of-day wake that lies just ahead.
    fn time_of_day(&self, day_secs: f64, tick: Duration, lead: Duration) -> Option<Reason> {
        let window = self.params.time_of_day_window.as_secs_f64();
        if window == 0.0 {
            return None;
        }
        let ahead = lead.as_secs_f64() + tick.as_secs_f64();
        self.wakes
            .iter()
            .flatten()
            .any(|&wake| {
                let until_wake = (wake - day_secs).rem_euclid(DAY);
                until_wake <= ahead + window || until_wake >= DAY - window
            })
            .then_some(Reason::PreWarm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const SEC: Duration = Duration::from_secs(1);

    fn spinscale_like() -> IdleParams {
        IdleParams {
            bins: BinLayout::Log { min: Duration::from_secs(1), max: Duration::from_secs(4 * 3600), count: 96 },
            rule: WindowRule::Percentiles,
            head: 0.05,
            tail: 0.99,
            head_margin: 0.05,
            tail_margin: 0.05,
            min_gaps: 3,
            min_cv: 0.0,
            fallback_keep_alive: 10 * MIN,
            max_keep_alive: Duration::from_secs(4 * 3600),
            min_unloaded_ticks: 1.0,
            decay_at: 1000,
            time_of_day_window: 5 * MIN,
            idle_cost: 1.0,
        }
    }

    /// Feeds activity at the given minutes, one reading per minute up to `end`, and returns the
    /// minutes at which the model held the target active (and why).
    fn replay(model: &mut IdleModel, active: &[u64], end: u64) -> Vec<(u64, Reason)> {
        let mut held = Vec::new();
        let mut warm = false;
        for m in 0..end {
            let now = MIN * m as u32;
            let day_secs = (m * 60 % 86_400) as f64;
            if active.contains(&m) {
                model.on_activity(now, day_secs, 1.0, !warm);
                warm = true;
            } else {
                let reason = model.on_quiet(now, day_secs, MIN, Duration::ZERO);
                warm = reason.is_some();
                held.extend(reason.map(|r| (m, r)));
            }
        }
        held
    }

    /// The spinscale rule with a budget and a worth, other knobs as [`spinscale_like`].
    fn budget(budget: f64, worth: Duration) -> IdleParams {
        IdleParams { rule: WindowRule::Budget { budget, worth }, ..spinscale_like() }
    }

    #[test]
    fn log_bins_cover_the_range_and_reject_longer_gaps() {
        let layout = BinLayout::Log { min: Duration::from_secs(1), max: Duration::from_secs(14_400), count: 96 };
        assert_eq!(layout.bin(Duration::ZERO), Some(0));
        assert_eq!(layout.bin(Duration::from_secs(14_400)), Some(95));
        assert_eq!(layout.bin(Duration::from_secs(14_401)), None);
        let i = layout.bin(Duration::from_secs(600)).unwrap();
        let (lo, hi) = layout.edges(i);
        assert!(lo <= 600.0 && 600.0 < hi && hi / lo < 1.11, "{lo}..{hi}");
    }

    #[test]
    fn linear_bins_are_centred_on_whole_minutes() {
        let layout = BinLayout::Linear { width: MIN, max: Duration::from_secs(4 * 3600) };
        assert_eq!(layout.count(), 241);
        assert_eq!(layout.bin(3 * MIN), Some(3));
        assert_eq!(layout.edges(3), (150.0, 210.0));
        assert_eq!(layout.bin(Duration::from_secs(4 * 3600 + 60)), None);
    }

    #[test]
    fn a_periodic_target_is_unloaded_between_runs_and_pre_warmed_before_each() {
        let mut model = IdleModel::new(spinscale_like());
        let runs: Vec<u64> = (0..20).map(|k| k * 30).collect();
        let held = replay(&mut model, &runs, 600);
        // After a few periods, the minutes just before each run are pre-warmed, the middle is not.
        let late: Vec<_> = held.iter().filter(|(m, _)| *m > 300).collect();
        for run in (330..600).step_by(30) {
            assert!(late.contains(&&(run - 1, Reason::PreWarm)), "minute {} should be pre-warmed: {late:?}", run - 1);
            assert!(!held.iter().any(|(m, _)| *m == run - 15), "minute {} should be unloaded", run - 15);
        }
    }

    #[test]
    fn a_timer_is_pre_warmed_exactly_one_tick_before_each_run() {
        // Gaps of exactly 60 minutes: the bin's shortest gap equals its mean, so no head margin is needed.
        let mut model = IdleModel::new(IdleParams { head_margin: 0.1, ..budget(0.0, 100 * 60 * MIN) });
        let runs: Vec<u64> = (0..12).map(|k| k * 60).collect();
        let held = replay(&mut model, &runs, 720);
        for run in (480..720).step_by(60) {
            assert!(held.contains(&(run - 1, Reason::PreWarm)), "minute {} should be pre-warmed: {held:?}", run - 1);
            assert!(!held.iter().any(|(m, _)| *m == run - 2), "minute {} should be unloaded: {held:?}", run - 2);
        }
        // With jitter (58 and 62 minutes), the pre-warm starts before the shortest gap and lasts past the longest.
        let mut model = IdleModel::new(budget(0.0, 100 * 60 * MIN));
        let mut runs = vec![0];
        for k in 0..12 {
            runs.push(runs.last().unwrap() + if k % 2 == 0 { 58 } else { 62 });
        }
        let held = replay(&mut model, &runs, runs.last().unwrap() + 1);
        for pair in runs[8..].windows(2) {
            let (previous, run) = (pair[0], pair[1]);
            assert!(held.contains(&(run - 1, Reason::PreWarm)), "minute {} should be pre-warmed: {held:?}", run - 1);
            assert!(!held.iter().any(|(m, _)| *m == previous + 50), "minute {} should be unloaded", previous + 50);
        }
    }

    #[test]
    fn a_bursty_target_is_kept_alive_through_its_short_gaps() {
        let mut model = IdleModel::new(spinscale_like());
        // Bursts with 1–4 minute gaps inside: the keep-alive covers the longest of them.
        let mut active = Vec::new();
        let mut m = 0;
        for gap in [1, 3, 2, 4, 1, 2, 3, 4, 2, 1, 3, 4, 2, 3, 1, 4] {
            active.push(m);
            m += gap;
        }
        let held = replay(&mut model, &active, m + 20);
        let plan = model.plan(MIN, Duration::ZERO);
        match plan {
            Plan::KeepAlive { until } => assert!(until >= 4 * MIN && until <= 5 * MIN, "{until:?}"),
            other => panic!("a bursty target is kept alive, not unloaded: {other:?}"),
        }
        assert!(held.iter().all(|(_, r)| *r == Reason::KeepAlive));
        assert!(!held.iter().any(|(at, _)| *at > m + 5), "the keep-alive ends: {held:?}");
    }

    #[test]
    fn a_one_off_target_gets_the_fallback_keep_alive_and_then_nothing() {
        let mut model = IdleModel::new(spinscale_like());
        let held = replay(&mut model, &[5], 60);
        assert_eq!(held.first(), Some(&(6, Reason::KeepAlive)));
        assert_eq!(held.last(), Some(&(14, Reason::KeepAlive)), "10 minutes after the last activity");
        assert_eq!(held.len(), 9);
    }

    #[test]
    fn a_daily_wake_after_a_long_gap_is_pre_warmed_the_next_day() {
        let mut model = IdleModel::new(spinscale_like());
        let day = 1440;
        let held = replay(&mut model, &[100, 100 + day, 100 + 2 * day], 3 * day + 1);
        assert!(held.contains(&(100 + 2 * day - 1, Reason::PreWarm)), "the minute before the third wake");
        assert!(!held.iter().any(|(m, _)| *m == 100 + 2 * day - 60), "not an hour before");
    }

    /// Feeds bursts of `requests` one-minute readings at the given minutes (as [`replay`]).
    fn replay_bursts(model: &mut IdleModel, active: &[u64], requests: f64, end: u64) -> Vec<(u64, Reason)> {
        let mut held = Vec::new();
        let mut warm = false;
        for m in 0..end {
            let day_secs = (m * 60 % 86_400) as f64;
            if active.contains(&m) {
                model.on_activity(MIN * m as u32, day_secs, requests, !warm);
                warm = true;
            } else {
                let reason = model.on_quiet(MIN * m as u32, day_secs, MIN, Duration::ZERO);
                warm = reason.is_some();
                held.extend(reason.map(|r| (m, r)));
            }
        }
        held
    }

    #[test]
    fn without_a_cold_start_to_spare_every_gap_is_covered() {
        // One request per burst at irregular gaps of 7 to 50 minutes, budget 5 %: after the first
        // (always cold) request, the fallback keep-alive and then the fitted windows catch the bursts.
        let params = IdleParams { fallback_keep_alive: 240 * MIN, min_gaps: 10, tail_margin: 0.5, ..spinscale_like() };
        let mut model =
            IdleModel::new(IdleParams { rule: WindowRule::Budget { budget: 0.05, worth: 100 * 60 * MIN }, ..params });
        let mut active = vec![0];
        for k in 0..40u64 {
            active.push(active.last().unwrap() + 7 + (k * 37 % 44));
        }
        let held = replay_bursts(&mut model, &active, 1.0, active.last().unwrap() + 1);
        assert!(
            model.cold_start_rate() <= 2.0 / 41.0,
            "at most one cold start after the first: {}",
            model.cold_start_rate()
        );
        assert!(held.len() < (active.last().unwrap() - 41) as usize, "not simply kept up throughout");
    }

    /// Bursts of 4 requests, gaps alternating 3 minutes and 60 to 120 minutes.
    fn short_and_long_gaps() -> Vec<u64> {
        let mut active = vec![0];
        for k in 0..40 {
            active.push(active.last().unwrap() + if k % 2 == 0 { 3 } else { 60 + k * 37 % 61 });
        }
        active
    }

    #[test]
    fn a_window_covers_the_gaps_whose_idle_time_its_cold_starts_are_worth() {
        // With a cold start to spare (15 %), a cold start avoided is worth 30 minutes of idle time: the
        // 3-minute gaps are, the hour-long ones are not (nor a pre-warm over them, 60 to 120 minutes
        // apart), so half the bursts start cold and the long gaps are not held.
        let active = short_and_long_gaps();
        let mut model = IdleModel::new(budget(0.15, 30 * MIN));
        let held = replay_bursts(&mut model, &active, 4.0, active.last().unwrap() + 1);
        let rate = model.cold_start_rate();
        assert!((0.10..=0.14).contains(&rate), "about one burst in two starts cold: {rate}");
        let until = model.plan(MIN, Duration::ZERO).until();
        assert!(until >= 2 * MIN && until <= 6 * MIN, "kept alive through the short gaps only: {until:?}");
        let late = active[31];
        assert!(!held.iter().any(|(m, _)| (late + 10..late + 50).contains(m)), "the long gaps are not held");
        // Worth 10 hours, the long gaps are covered as well, the budget notwithstanding.
        let mut model = IdleModel::new(budget(0.15, 600 * MIN));
        replay_bursts(&mut model, &active, 4.0, active.last().unwrap() + 1);
        let rate = model.cold_start_rate();
        assert!(rate <= 3.0 / (41.0 * 4.0), "at most three bursts start cold: {rate}");
    }

    #[test]
    fn a_busy_target_is_held_through_the_gaps_it_is_worth_holding_for_issue_18() {
        // 100 requests in each burst, 2 to 6 minutes apart: a 9 % budget would allow 9 cold starts a
        // burst, and the budget rule let such a target go after every burst. Priced, a few minutes of
        // idle memory are worth far less than a cold start: only the first burst starts cold.
        let mut active = vec![0];
        for k in 0..60u64 {
            active.push(active.last().unwrap() + 2 + k * 7 % 5);
        }
        let mut model = IdleModel::new(budget(0.09, 60 * MIN));
        let held = replay_bursts(&mut model, &active, 100.0, active.last().unwrap() + 1);
        let rate = model.cold_start_rate();
        assert!(rate <= 4.0 / (61.0 * 100.0), "a few cold starts while the first gaps are learned: {rate}");
        let late: Vec<u64> = active[10..].windows(2).flat_map(|w| w[0] + 1..w[1]).collect();
        assert!(late.iter().all(|m| held.iter().any(|(h, _)| h == m)), "every quiet minute held: {held:?}");
    }

    #[test]
    fn a_timer_with_a_cold_start_to_spare_is_pre_warmed_after_two_gaps() {
        // An hourly run of 14 requests: after the first, a 10 % budget has a cold start to spare, so the
        // target is not held 15 gaps long for lack of history. The second run starts cold; one gap on,
        // a keep-alive covers the hour; from two gaps on, it is unloaded and pre-warmed a tick ahead.
        let params = IdleParams { min_gaps: 15, head_margin: 0.05, tail_margin: 1.0, ..budget(0.1, 12 * 60 * MIN) };
        let mut model = IdleModel::new(params);
        let runs: Vec<u64> = (0..12).map(|k| k * 60).collect();
        let held = replay_bursts(&mut model, &runs, 14.0, 12 * 60);
        assert_eq!(model.cold_start_rate(), 2.0 / (12.0 * 14.0), "the first two runs start cold");
        assert!(held.contains(&(119, Reason::KeepAlive)), "the second gap is kept alive: {held:?}");
        for run in (180..720).step_by(60) {
            assert!(held.contains(&(run - 1, Reason::PreWarm)), "minute {} pre-warmed: {held:?}", run - 1);
            assert!(!held.iter().any(|(m, _)| (run - 58..run - 1).contains(m)), "unloaded before {run}: {held:?}");
        }
    }

    #[test]
    fn one_memory_price_holds_a_small_app_through_a_gap_a_big_one_is_let_go_in() {
        // One gap of 90 minutes seen and trusted, one cold start worth an hour of a 1 GiB
        // instance: 8 hours of a 128Mi one, which covers the gap (and its 5 % tail margin); 30 minutes
        // of a 2 GiB one, which does not.
        let params = IdleParams { min_gaps: 1, ..budget(0.0, 60 * MIN) };
        let mut small = IdleModel::new(IdleParams { idle_cost: 0.125, ..params.clone() });
        let mut big = IdleModel::new(IdleParams { idle_cost: 2.0, ..params });
        for model in [&mut small, &mut big] {
            replay_bursts(model, &[0, 90], 1.0, 91);
        }
        assert_eq!(small.plan(MIN, Duration::ZERO), Plan::KeepAlive { until: 90 * MIN + 270 * SEC });
        assert_eq!(big.plan(MIN, Duration::ZERO), Plan::KeepAlive { until: Duration::ZERO });
    }

    #[test]
    fn a_bigger_instance_gets_a_shorter_keep_alive_while_history_is_short() {
        let params = IdleParams { fallback_keep_alive: 240 * MIN, ..budget(0.0, 100 * 60 * MIN) };
        let mut small = IdleModel::new(IdleParams { idle_cost: 0.5, ..params.clone() });
        let mut big = IdleModel::new(IdleParams { idle_cost: 4.0, ..params });
        for model in [&mut small, &mut big] {
            model.on_activity(Duration::ZERO, 0.0, 1.0, true);
        }
        assert_eq!(small.plan(MIN, Duration::ZERO), Plan::KeepAlive { until: Duration::from_secs(4 * 3600) });
        assert_eq!(big.plan(MIN, Duration::ZERO), Plan::KeepAlive { until: 60 * MIN });
    }

    #[test]
    fn the_hybrid_preset_falls_back_to_four_hours_until_representative() {
        let model = IdleModel::new(IdleParams::hybrid());
        assert_eq!(model.plan(MIN, Duration::ZERO), Plan::KeepAlive { until: Duration::from_secs(4 * 3600) });
    }

    #[test]
    fn halving_keeps_the_histogram_bounded() {
        let mut h = GapHistogram::new(BinLayout::Log { min: Duration::from_secs(1), max: MIN, count: 8 });
        for _ in 0..10_000 {
            h.record(Duration::from_secs(10), 100);
        }
        assert!(h.total() <= 100, "{}", h.total());
    }
}
