//! Signal sources: one collector per distinct source, shared by every target that uses it.
//! Prometheus queries that differ only in one label's value share one query per interval
//! ([`grouping`]); their collectors read their own share of its answer.
//!
//! Collectors only fetch and publish raw readings on a `watch` channel; the targets interpret them
//! (KEDA's lag rules, thresholds) in the pure [`spinscale_core::engine`].
//!
//! Within the crate it may use [`config`](crate::config) and [`telemetry`](crate::telemetry);
//! nothing else.

pub mod body;
pub mod cluster;
pub mod committed;
pub mod grouping;
pub mod hub;
pub mod kafka;
pub mod kafka_sasl;
pub mod kafka_security;
pub mod kafka_wire;
pub mod log_ends;
pub mod pool;
pub mod prometheus;
pub mod prometheus_auth;
pub mod scrape;
pub mod tail;
pub mod tail_fetch;
pub mod tls_files;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::warn;

use spinscale_core::engine::PartitionOffsets;
use spinscale_core::spec::{KafkaSource, PrometheusSource, ScrapeSource};

pub use hub::{Collector, Hub};

/// What a collector watches. Equal keys share one collector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// An instant query against one Prometheus server.
    Prometheus(PrometheusSource),
    /// A counter scraped straight from `/metrics` endpoints.
    Scrape(ScrapeSource),
    /// One consumer group's offsets on one Kafka cluster.
    Kafka(KafkaSource),
}

impl SourceKey {
    /// `prometheus`, `scrape` or `kafka`: the `kind` label of the exporter.
    pub const fn kind(&self) -> &'static str {
        match self {
            SourceKey::Prometheus(_) => "prometheus",
            SourceKey::Scrape(_) => "scrape",
            SourceKey::Kafka(_) => "kafka",
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceKey::Prometheus(p) => {
                write!(f, "prometheus {} query {:?}", p.address, p.query)?;
                if let Some(connection) = &p.connection {
                    write!(f, " via connection {connection:?}")?;
                }
                Ok(())
            }
            SourceKey::Scrape(s) => write!(f, "scrape {} metric {:?}", s.urls.join(","), s.metric),
            SourceKey::Kafka(k) => {
                write!(f, "kafka {} group {:?}", k.bootstrap_servers, k.consumer_group)?;
                if let Some(connection) = &k.connection {
                    write!(f, " via connection {connection:?}")?;
                }
                if k.topics.is_empty() {
                    write!(f, " (the group's topics)")
                } else {
                    write!(f, " topic {:?}", k.topics.join(","))
                }
            }
        }
    }
}

/// One successful poll.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// Requests per second.
    Rate(f64),
    /// Committed and latest offsets per partition.
    Offsets(Arc<[PartitionOffsets]>),
}

/// What a collector publishes after every poll.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceState {
    /// The last good reading and when it was taken.
    pub last_good: Option<(Reading, Instant)>,
    /// Why the most recent poll failed; `None` when it succeeded (or none has run yet).
    pub error: Option<Arc<str>>,
    /// Failed polls since the collector started.
    pub errors: u64,
}

/// A source's state as a target sees it at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SourceView<'a> {
    /// No poll has finished yet.
    Pending,
    /// The last poll failed.
    Failed(&'a str),
    /// The last good reading is older than `staleAfter`.
    Stale(Duration),
    /// The last poll succeeded, recently enough: its reading.
    Fresh(&'a Reading),
}

impl SourceState {
    /// How the state looks at `now`, a reading older than `stale_after` being stale.
    pub fn view(&self, now: Instant, stale_after: Duration) -> SourceView<'_> {
        match (&self.error, &self.last_good) {
            (Some(e), _) => SourceView::Failed(e),
            (None, None) => SourceView::Pending,
            (None, Some((_, at))) if now.saturating_duration_since(*at) > stale_after => {
                SourceView::Stale(now.saturating_duration_since(*at))
            }
            (None, Some((reading, _))) => SourceView::Fresh(reading),
        }
    }
}

/// Stores a poll's outcome. Subscribers are woken only when it differs from the last one: a
/// source shared by thousands of targets must not wake them all every second to say "no change".
/// The reading's time is refreshed either way; targets check staleness on their own tick.
pub(crate) fn publish(tx: &watch::Sender<SourceState>, result: Result<Reading, String>) {
    if let Some(cause) = store(tx, result) {
        warn!(%cause, "source poll failed");
    }
}

/// [`publish`] without the log line: the failure, when it is a new one.
pub(crate) fn store(tx: &watch::Sender<SourceState>, result: Result<Reading, String>) -> Option<Arc<str>> {
    let mut failed = None;
    tx.send_if_modified(|state| match result {
        Ok(reading) => {
            let changed = state.error.is_some() || state.last_good.as_ref().is_none_or(|(last, _)| *last != reading);
            state.last_good = Some((reading, Instant::now()));
            state.error = None;
            changed
        }
        Err(cause) => {
            state.errors += 1;
            let changed = state.error.as_deref() != Some(cause.as_str());
            let cause: Arc<str> = cause.into();
            if changed {
                failed = Some(cause.clone());
            }
            state.error = Some(cause);
            changed
        }
    });
    failed
}

/// `reqwest` hides the cause ("connection refused") in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
