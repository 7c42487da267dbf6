//! Consumer lag from partition offsets, with every rule of KEDA's kafka scaler (docs/keda.md §4).
//!
//! Two deliberate differences, both documented in the README:
//! - the partition cap is exact (`min(lag, bound × lagThreshold)`), where KEDA caps only when the
//!   integer quotient exceeds the bound (the transient extra replica of keda#4483);
//! - a negative partition lag (commit ahead of a stale high watermark) counts 0 instead of
//!   cancelling another partition's lag.

use std::sync::Arc;
use std::time::Duration;

use crate::spec::{LagRules, OffsetResetPolicy};

/// What the collector knows about one partition.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionOffsets {
    /// The partition's topic (shared: many partitions name the same one).
    pub topic: Arc<str>,
    /// The partition number within `topic`.
    pub partition: i32,
    /// The group's committed offset; `None` when the group has none (Kafka's -1).
    pub committed: Option<i64>,
    /// How long `committed` has had its current value, as far as the collector has seen.
    pub committed_unchanged_for: Duration,
    /// The high watermark; `None` when the partition was missing from the ListOffsets answer.
    pub latest: Option<i64>,
}

/// The lag of one source under one target's rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LagSummary {
    /// Lag that drives 1→N, capped as KEDA caps it.
    pub lag: f64,
    /// Lag including persistent lag: what activation compares against.
    pub lag_with_persistent: f64,
    /// Partitions summed: the bound of the partition cap.
    pub partitions: usize,
    /// Partitions with lag above 0: the bound under `limitToPartitionsWithLag`.
    pub partitions_with_lag: usize,
}

/// Sums the lag of `partitions` under `rules`. Under `excludePersistentLag`, a commit that has not
/// moved for `persistent_after` is persistent: KEDA compares consecutive polls, `pollingInterval`
/// (30 s by default) apart; spinscale polls every second, so it measures that as time.
pub fn summarize(partitions: &[PartitionOffsets], rules: &LagRules, persistent_after: Duration) -> LagSummary {
    let mut lag = 0.0;
    let mut lag_with_persistent = 0.0;
    let mut partitions_with_lag = 0;
    for p in partitions {
        let (l, lp) = partition_lag(p, rules, persistent_after);
        lag += l;
        lag_with_persistent += lp;
        if l > 0.0 {
            partitions_with_lag += 1;
        }
    }
    let total = partitions.len();
    if !rules.allow_idle_consumers || rules.limit_to_partitions_with_lag || rules.ensure_even_distribution {
        if rules.ensure_even_distribution {
            lag = even_factor(lag, total, rules.lag_threshold) as f64 * rules.lag_threshold;
        }
        let bound = if rules.limit_to_partitions_with_lag { partitions_with_lag } else { total };
        lag = lag.min(bound as f64 * rules.lag_threshold);
    }
    LagSummary { lag, lag_with_persistent, partitions: total, partitions_with_lag }
}

/// (lag, lag with persistent) of one partition.
fn partition_lag(p: &PartitionOffsets, rules: &LagRules, persistent_after: Duration) -> (f64, f64) {
    let invalid_lag = |otherwise: f64| if rules.scale_to_zero_on_invalid_offset { 0.0 } else { otherwise };
    match (p.committed, rules.offset_reset_policy) {
        // One consumer must run to make the first commit.
        (None, OffsetResetPolicy::Latest) => {
            let l = invalid_lag(1.0);
            return (l, l);
        }
        (None, OffsetResetPolicy::Earliest) => {
            let l = invalid_lag(p.latest.unwrap_or(0).max(0) as f64);
            return (l, l);
        }
        (Some(_), _) => {}
    }
    let (Some(committed), Some(latest)) = (p.committed, p.latest) else {
        return (0.0, 0.0);
    };
    let l = latest.saturating_sub(committed).max(0) as f64;
    if rules.exclude_persistent_lag && p.committed_unchanged_for >= persistent_after { (0.0, l) } else { (l, l) }
}

/// KEDA's `ensureEvenDistributionOfPartitions`: the smallest divisor f of the partition count
/// with `f × lagThreshold ≥ lag`, or the partition count itself.
fn even_factor(lag: f64, partitions: usize, lag_threshold: f64) -> usize {
    (1..=partitions)
        .filter(|f| partitions.is_multiple_of(*f))
        .find(|&f| f as f64 * lag_threshold >= lag)
        .unwrap_or(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: i32, committed: Option<i64>, latest: Option<i64>) -> PartitionOffsets {
        PartitionOffsets { topic: "t".into(), partition, committed, committed_unchanged_for: Duration::ZERO, latest }
    }

    fn rules(edit: impl FnOnce(&mut LagRules)) -> LagRules {
        let mut r = LagRules::default();
        edit(&mut r);
        r
    }

    const PERSISTENT_AFTER: Duration = Duration::from_secs(30);

    #[test]
    fn lag_rules_table() {
        let stuck = |p: PartitionOffsets| PartitionOffsets { committed_unchanged_for: PERSISTENT_AFTER, ..p };
        // (what, partitions, rules, lag, lag_with_persistent, partitions_with_lag)
        type Case = (&'static str, Vec<PartitionOffsets>, LagRules, f64, f64, usize);
        let cases: Vec<Case> = vec![
            (
                "plain lag sums partitions",
                vec![part(0, Some(3), Some(10)), part(1, Some(5), Some(6))],
                rules(|_| {}),
                8.0,
                8.0,
                2,
            ),
            ("no commit, latest: 1", vec![part(0, None, Some(100))], rules(|_| {}), 1.0, 1.0, 1),
            (
                "no commit, latest, scaleToZeroOnInvalidOffset: 0",
                vec![part(0, None, Some(100))],
                rules(|r| r.scale_to_zero_on_invalid_offset = true),
                0.0,
                0.0,
                0,
            ),
            (
                "no commit, earliest: whole high watermark",
                vec![part(0, None, Some(100))],
                rules(|r| {
                    r.offset_reset_policy = OffsetResetPolicy::Earliest;
                    r.allow_idle_consumers = true;
                }),
                100.0,
                100.0,
                1,
            ),
            (
                "no commit, earliest, scaleToZeroOnInvalidOffset: 0",
                vec![part(0, None, Some(100))],
                rules(|r| {
                    r.offset_reset_policy = OffsetResetPolicy::Earliest;
                    r.scale_to_zero_on_invalid_offset = true;
                }),
                0.0,
                0.0,
                0,
            ),
            (
                "partition missing from ListOffsets: 0",
                vec![part(0, Some(4), None), part(1, Some(0), Some(2))],
                rules(|_| {}),
                2.0,
                2.0,
                1,
            ),
            (
                "commit ahead of watermark counts 0, not negative",
                vec![part(0, Some(9), Some(5)), part(1, Some(0), Some(3))],
                rules(|_| {}),
                3.0,
                3.0,
                1,
            ),
            (
                "capped at partitions × lagThreshold",
                vec![part(0, Some(0), Some(500)), part(1, Some(0), Some(500))],
                rules(|_| {}),
                20.0,
                1000.0,
                2,
            ),
            (
                "exact cap where KEDA's integer division lets 25 through (keda#4483)",
                vec![part(0, Some(0), Some(25)), part(1, Some(0), Some(0))],
                rules(|_| {}),
                20.0,
                25.0,
                1,
            ),
            (
                "allowIdleConsumers lifts the cap",
                vec![part(0, Some(0), Some(500)), part(1, Some(0), Some(500))],
                rules(|r| r.allow_idle_consumers = true),
                1000.0,
                1000.0,
                2,
            ),
            (
                "limitToPartitionsWithLag caps at partitions that have lag",
                vec![part(0, Some(0), Some(500)), part(1, Some(7), Some(7)), part(2, Some(7), Some(7))],
                rules(|r| r.limit_to_partitions_with_lag = true),
                10.0,
                500.0,
                1,
            ),
            (
                "excludePersistentLag: a stuck commit keeps activation but not 1→N",
                vec![stuck(part(0, Some(2), Some(50))), part(1, Some(0), Some(4))],
                rules(|r| r.exclude_persistent_lag = true),
                4.0,
                52.0,
                1,
            ),
            (
                "excludePersistentLag: a commit that moved recently counts",
                vec![part(0, Some(2), Some(50))],
                rules(|r| {
                    r.exclude_persistent_lag = true;
                    r.allow_idle_consumers = true;
                }),
                48.0,
                48.0,
                1,
            ),
            (
                "persistent lag is counted when the option is off",
                vec![stuck(part(0, Some(2), Some(50)))],
                rules(|r| r.allow_idle_consumers = true),
                48.0,
                48.0,
                1,
            ),
            (
                "offsets far apart do not overflow (found by tests/properties.rs)",
                vec![
                    part(0, Some(-5_969_378_880_195_359_522), Some(3_253_993_156_659_416_286)),
                    part(1, None, Some(-4)),
                ],
                rules(|r| {
                    r.offset_reset_policy = OffsetResetPolicy::Earliest;
                    r.allow_idle_consumers = true;
                }),
                i64::MAX as f64,
                i64::MAX as f64,
                1,
            ),
            (
                "ensureEvenDistribution rounds up to a divisor of 6 partitions",
                (0..6).map(|i| part(i, Some(0), Some(if i == 0 { 25 } else { 0 }))).collect(),
                rules(|r| r.ensure_even_distribution = true),
                30.0,
                25.0,
                1,
            ),
            (
                "ensureEvenDistribution past every divisor: the partition count",
                (0..4).map(|i| part(i, Some(0), Some(100))).collect(),
                rules(|r| r.ensure_even_distribution = true),
                40.0,
                400.0,
                4,
            ),
        ];
        for (what, partitions, rules, lag, with_persistent, with_lag) in cases {
            let s = summarize(&partitions, &rules, PERSISTENT_AFTER);
            assert_eq!(s.lag, lag, "{what}: lag");
            assert_eq!(s.lag_with_persistent, with_persistent, "{what}: lag with persistent");
            assert_eq!(s.partitions_with_lag, with_lag, "{what}: partitions with lag");
            assert_eq!(s.partitions, partitions.len(), "{what}: partitions");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 256, failure_persistence: None, ..Default::default() })]

        /// KEDA's rule, read back: the smallest divisor of the partition count that covers the lag,
        /// or the partition count itself.
        #[test]
        fn even_factor_is_the_smallest_covering_divisor(lag in 0.0f64..1e6, partitions in 1usize..64, threshold in 0.5f64..100.0) {
            let f = even_factor(lag, partitions, threshold);
            proptest::prop_assert!(partitions.is_multiple_of(f), "{f} does not divide {partitions}");
            proptest::prop_assert!(f as f64 * threshold >= lag || f == partitions);
            for smaller in (1..f).filter(|d| partitions.is_multiple_of(*d)) {
                proptest::prop_assert!((smaller as f64) * threshold < lag, "{smaller} already covers {lag}");
            }
        }
    }
}
