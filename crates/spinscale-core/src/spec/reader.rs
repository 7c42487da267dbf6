//! The metadata [`Reader`]: looks a key up (the trigger's metadata, then KEDA's alias, then the
//! configured defaults), parses its value into a typed setting, and records a [`Problem`] for
//! every bad one instead of stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{ALIASES, PARTITION_LIMITATION, PartitionSet, Problem, TIMEOUT};
use crate::duration;

/// Reads one trigger's keys, collecting problems and warnings as it goes.
pub(super) struct Reader<'a> {
    /// The trigger's own metadata; wins over `defaults`.
    pub(super) metadata: &'a HashMap<String, String>,
    /// The configured defaults, by canonical key name.
    pub(super) defaults: &'a BTreeMap<String, String>,
    /// Every bad value seen so far.
    pub(super) problems: Vec<Problem>,
    /// Likely mistakes that are not errors (e.g. an option ignored for lack of another).
    pub(super) warnings: Vec<String>,
}

impl<'a> Reader<'a> {
    /// A reader with no problems or warnings yet.
    pub(super) fn new(metadata: &'a HashMap<String, String>, defaults: &'a BTreeMap<String, String>) -> Self {
        Reader { metadata, defaults, problems: Vec::new(), warnings: Vec::new() }
    }
}

impl Reader<'_> {
    /// A comma list (items trimmed, empty ones dropped); empty when the key is not set.
    pub(super) fn list(&mut self, key: &str) -> Vec<String> {
        let text = self.text(key).unwrap_or_default();
        text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(String::from).collect()
    }

    /// The value of `key` (or its KEDA alias), then the default; blank counts as unset.
    pub(super) fn text(&mut self, key: &str) -> Option<String> {
        let own = self.metadata.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let alias = ALIASES.iter().find(|(k, _)| *k == key).map(|(_, a)| *a);
        let aliased = alias.and_then(|a| self.metadata.get(a)).map(|v| v.trim()).filter(|v| !v.is_empty());
        match (own, aliased, alias) {
            (Some(a), Some(b), Some(alias)) if a != b => {
                self.problem(
                    key,
                    format!("value {a:?} conflicts with `{alias}` {b:?} (they are the same setting; give one)"),
                );
                None
            }
            (Some(v), _, _) | (None, Some(v), _) => Some(v.to_string()),
            (None, None, _) => self.defaults.get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()),
        }
    }

    pub(super) fn number(&mut self, key: &str, default: f64, bound: Bound) -> f64 {
        let Some(raw) = self.text(key) else { return default };
        match raw.parse::<f64>() {
            Ok(v) if v.is_finite() && bound.admits(v) => v,
            _ => {
                self.problem(key, format!("value {raw:?} is not {}", bound.describe()));
                default
            }
        }
    }

    /// Go's `strconv.ParseBool`, as KEDA reads its flags.
    pub(super) fn flag(&mut self, key: &str, default: bool) -> bool {
        let Some(raw) = self.text(key) else { return default };
        match raw.as_str() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => {
                self.problem(key, format!("value {raw:?} is not a boolean (allowed: true, false)"));
                default
            }
        }
    }

    pub(super) fn choice(&mut self, key: &str, allowed: &[&'static str]) -> Option<&'static str> {
        let raw = self.text(key)?;
        let found = allowed.iter().copied().find(|a| *a == raw);
        if found.is_none() {
            self.problem(key, format!("value {raw:?} is not one of {}", allowed.join(", ")));
        }
        found
    }

    /// KEDA's `timeout`: a Go duration, or an integer number of milliseconds.
    pub(super) fn timeout(&mut self) -> Option<Duration> {
        let raw = self.text(TIMEOUT)?;
        let parsed = match raw.parse::<u64>() {
            Ok(ms) => Ok(Duration::from_millis(ms)),
            Err(_) => duration::parse(&raw),
        };
        match parsed {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(TIMEOUT, format!("value {raw:?} must be greater than 0"));
                None
            }
            Err(e) => {
                self.problem(
                    TIMEOUT,
                    format!("value {raw:?} is not a duration (e.g. 3s, 500ms) or integer milliseconds: {e}"),
                );
                None
            }
        }
    }

    /// `k1=v1,k2=v2`.
    pub(super) fn pairs(&mut self, key: &str) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for item in self.list(key) {
            match item.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => pairs.push((k.trim().to_string(), v.trim().to_string())),
                _ => self.problem(key, format!("item {item:?} is not of the form key=value")),
            }
        }
        pairs
    }

    /// KEDA's `partitionLimitation`: `0,1,4-6`, kept as ranges.
    pub(super) fn partition_limitation(&mut self) -> Option<PartitionSet> {
        let raw = self.text(PARTITION_LIMITATION)?;
        PartitionSet::parse(&raw).map_err(|e| self.problem(PARTITION_LIMITATION, e)).ok()
    }

    /// Records a problem under the key the user wrote (KEDA's alias if that is what they used).
    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let written = super::written_key(key, self.metadata);
        self.problems.push(Problem { key: written.to_string(), message: message.into() });
    }

    pub(super) fn has_problem_for(&self, keys: &[&str]) -> bool {
        self.problems.iter().any(|p| keys.contains(&p.key.as_str()))
    }
}

#[derive(Clone, Copy)]
pub(super) enum Bound {
    Positive,
    NonNegative,
}

impl Bound {
    fn admits(self, v: f64) -> bool {
        match self {
            Bound::Positive => v > 0.0,
            Bound::NonNegative => v >= 0.0,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Bound::Positive => "a number greater than 0",
            Bound::NonNegative => "a number ≥ 0",
        }
    }
}
