//! Known wake times: cron expressions (`;`-separated), pre-warmed `leadTime` early.
//!
//! Parsing and next-occurrence search are `croner`'s; this module only caches the next wake so a
//! tick costs a comparison, and holds the target for a while after each wake.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use croner::Cron;

/// Parsed cron expressions of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    crons: Vec<Cron>,
}

impl Schedule {
    /// Parses `;`-separated cron expressions (5 fields, or 6 with seconds). Errors name the bad one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut crons = Vec::new();
        for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let cron = Cron::from_str(item).map_err(|e| format!("cron expression {item:?}: {e}"))?;
            crons.push(cron);
        }
        if crons.is_empty() {
            return Err("no cron expression".into());
        }
        Ok(Self { crons })
    }

    /// The first wake strictly after `wall_secs` (Unix seconds, UTC), if any within the search range.
    pub fn next_after(&self, wall_secs: i64) -> Option<i64> {
        let at: DateTime<Utc> = DateTime::from_timestamp(wall_secs, 0)?;
        self.crons.iter().filter_map(|c| c.find_next_occurrence(&at, false).ok()).map(|t| t.timestamp()).min()
    }
}

/// A schedule with its next wake cached.
#[derive(Clone, Debug)]
pub struct ScheduleState {
    schedule: Schedule,
    /// The wake the target is being prepared for (or held after), Unix seconds.
    next: Option<i64>,
}

impl ScheduleState {
    /// The state of `schedule` before any wake has been looked up.
    pub fn new(schedule: Schedule) -> Self {
        Self { schedule, next: None }
    }

    /// Whether the target must be active at `wall_secs`: from `ahead` seconds before a wake until
    /// `hold` seconds after it.
    pub fn wants_active(&mut self, wall_secs: i64, ahead: i64, hold: i64) -> bool {
        let next = match self.next {
            Some(next) if wall_secs < next + hold => next,
            _ => {
                // Looks one search back so a wake that just passed is still held.
                let Some(next) = self.schedule.next_after(wall_secs - hold - 1) else { return false };
                self.next = Some(next);
                next
            }
        };
        wall_secs >= next - ahead && wall_secs < next + hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-05 00:00:00 UTC, a Monday.
    const MONDAY: i64 = 1_767_571_200;

    #[test]
    fn expressions_are_split_on_semicolons_and_errors_name_the_bad_one() {
        assert!(Schedule::parse("0 9 * * 1-5; 30 17 * * *").is_ok());
        let err = Schedule::parse("0 9 * * *; 61 * * * *").unwrap_err();
        assert!(err.contains("\"61 * * * *\""), "{err}");
        assert!(Schedule::parse(" ; ").is_err());
    }

    #[test]
    fn the_next_wake_is_the_earliest_of_all_expressions() {
        let s = Schedule::parse("0 9 * * *; 30 8 * * *").unwrap();
        assert_eq!(s.next_after(MONDAY), Some(MONDAY + 8 * 3600 + 1800));
    }

    #[test]
    fn a_scheduled_wake_is_pre_warmed_lead_early_and_held_after() {
        let mut state = ScheduleState::new(Schedule::parse("0 9 * * *").unwrap());
        let wake = MONDAY + 9 * 3600;
        let active = |state: &mut ScheduleState, t: i64| state.wants_active(t, 30, 60);
        assert!(!active(&mut state, wake - 31));
        assert!(active(&mut state, wake - 30));
        assert!(active(&mut state, wake + 59));
        assert!(!active(&mut state, wake + 60));
        assert!(active(&mut state, wake + 86_400 - 10), "the next day");
    }
}
