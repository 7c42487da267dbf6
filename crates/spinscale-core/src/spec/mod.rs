//! `ScaledObjectRef.scalerMetadata` → a typed, validated [`TargetSpec`].
//!
//! Every key is a documented const. Values come from the trigger's metadata first, then from the
//! configured defaults. All problems are collected before refusing, and each names the key, the
//! value and what is allowed, so one round trip shows a user everything to fix.
//!
//! This module holds the two entry points, [`TargetSpec::parse`] and [`check_defaults`], and
//! re-exports everything else at `spec::`:
//! - `keys`: the key names, KEDA's aliases, the built-in defaults, misspelling hints;
//! - `model`: the spec's types ([`TargetSpec`] and its parts);
//! - `error`: [`Problem`] and [`InvalidMetadata`];
//! - `reader`: looking up one key and parsing its value;
//! - `parts`: building each part of a spec from its keys, and the rules that span keys;
//! - [`kafka_connection`], [`prometheus_connection`], [`schedule`]: named Kafka and Prometheus
//!   connections, and cron wake times.

use std::collections::{BTreeMap, HashMap};

mod error;
pub mod kafka_connection;
mod keys;
mod model;
mod partitions;
mod parts;
pub mod prometheus_connection;
mod reader;
pub mod schedule;
#[cfg(test)]
mod tests;

pub use error::{InvalidMetadata, Problem};
pub use keys::*;
pub use model::{
    BackendProtocol, HttpRoute, KafkaSource, LagRules, MetricName, MetricsMode, OffsetResetPolicy, PredictiveMode,
    PredictiveSpec, PrometheusSource, RateRules, ScrapeSource, TargetSpec,
};
pub use partitions::PartitionSet;
pub use parts::parse_backend;

use parts::SOURCE_KEY;
use reader::Reader;

impl TargetSpec {
    /// Parses a trigger's metadata, falling back to `defaults` (canonical key names) for keys it lacks.
    pub fn parse(
        metadata: &HashMap<String, String>,
        defaults: &BTreeMap<String, String>,
    ) -> Result<Self, InvalidMetadata> {
        let mut r = Reader::new(metadata, defaults);
        let spec = r.spec();
        let hints = keys::misspelling_hints(metadata.keys().map(String::as_str));
        match spec {
            Some(spec) if r.problems.is_empty() => {
                let mut warnings = r.warnings;
                warnings.extend(hints);
                Ok(TargetSpec { warnings, ..spec })
            }
            _ => Err(InvalidMetadata { problems: r.problems, hints }),
        }
    }
}

/// Checks the configured defaults on their own: every key known, every value valid.
pub fn check_defaults(defaults: &BTreeMap<String, String>) -> Result<(), InvalidMetadata> {
    let mut problems: Vec<Problem> = defaults
        .keys()
        .filter(|k| !KEYS.contains(&k.as_str()))
        .map(|k| Problem { key: k.clone(), message: "is not a trigger key spinscale knows".into() })
        .collect();
    let empty = HashMap::new();
    let mut r = Reader::new(&empty, defaults);
    r.spec();
    // Defaults alone need not name a signal source; every other problem is real.
    problems.extend(r.problems.into_iter().filter(|p| p.key != SOURCE_KEY));
    let hints = keys::misspelling_hints(defaults.keys().map(String::as_str));
    if problems.is_empty() { Ok(()) } else { Err(InvalidMetadata { problems, hints }) }
}
