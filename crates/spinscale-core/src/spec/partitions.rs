//! KEDA's `partitionLimitation` (`0,1,4-6`) as sorted, merged ranges: a trigger's memory grows with
//! what it wrote, never with the numbers in it (`0-2147483647` is one range, not two billion ids).

use std::fmt;

/// A set of partition ids, kept as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PartitionSet {
    ranges: Vec<(i32, i32)>,
}

impl PartitionSet {
    /// Parses a comma list of partition ids and `a-b` ranges (`0, 4-6, 2`); every item is checked.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for item in text.split(',').map(str::trim) {
            let range = match item.split_once('-') {
                Some((a, b)) => a.trim().parse::<i32>().ok().zip(b.trim().parse::<i32>().ok()),
                None => item.parse::<i32>().ok().map(|p| (p, p)),
            };
            match range {
                Some((a, b)) if 0 <= a && a <= b => ranges.push((a, b)),
                _ => return Err(format!("item {item:?} is not a partition number or range like 4-6")),
            }
        }
        Ok(Self::of_ranges(ranges))
    }

    /// The set of these inclusive ranges (any order, overlapping or not).
    pub fn of_ranges(mut ranges: Vec<(i32, i32)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(i32, i32)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged.shrink_to_fit();
        Self { ranges: merged }
    }

    /// Whether `partition` is in the set (a binary search over the ranges).
    pub fn contains(&self, partition: i32) -> bool {
        let after = self.ranges.partition_point(|&(a, _)| a <= partition);
        after > 0 && self.ranges[after - 1].1 >= partition
    }

    /// The merged ranges, ascending.
    pub fn ranges(&self) -> &[(i32, i32)] {
        &self.ranges
    }
}

impl fmt::Display for PartitionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(a, b)) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            match a == b {
                true => write!(f, "{sep}{a}")?,
                false => write!(f, "{sep}{a}-{b}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_merge_into_ranges_and_membership_is_exact() {
        let set = PartitionSet::parse("0, 4-6, 2, 5, 3").unwrap();
        assert_eq!(set.ranges(), &[(0, 0), (2, 6)]);
        assert_eq!(set.to_string(), "0,2-6");
        let members: Vec<i32> = (-1..9).filter(|&p| set.contains(p)).collect();
        assert_eq!(members, vec![0, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn the_whole_id_space_is_one_range() {
        let set = PartitionSet::parse("0-2147483647").unwrap();
        assert_eq!(set.ranges(), &[(0, i32::MAX)]);
        assert!(set.contains(0) && set.contains(i32::MAX) && !set.contains(-1));
    }

    #[test]
    fn bad_items_are_named() {
        for bad in ["3-1", "-1", "a", "1-", "", "1,,2", "99999999999"] {
            let err = PartitionSet::parse(bad).unwrap_err();
            assert!(err.starts_with("item "), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 256, failure_persistence: None, ..Default::default() })]
        /// Whatever numbers a tenant writes, the set holds at most one range per item written.
        #[test]
        fn memory_is_bounded_by_the_text_not_by_the_numbers(
            items in proptest::collection::vec((0..i32::MAX, 0..i32::MAX), 1..64)
        ) {
            let text: Vec<String> = items.iter().map(|&(a, b)| format!("{}-{}", a.min(b), a.max(b))).collect();
            let set = PartitionSet::parse(&text.join(",")).unwrap();
            proptest::prop_assert!(set.ranges().len() <= items.len());
            for &(a, b) in &items {
                proptest::prop_assert!(set.contains(a) && set.contains(b));
            }
        }
    }
}
