//! One live target: its key, its state, the handle calls and streams hold, and what its task shares.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::history::{History, Sample};
use crate::signals::{Collector, SourceKey, SourceState};
use spinscale_core::engine::{Decision, EngineSettings};
use spinscale_core::spec::TargetSpec;

/// Identifies a target: KEDA sends no trigger index, so the metadata tells triggers apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetKey {
    /// The ScaledObject's namespace.
    pub namespace: String,
    /// The ScaledObject's name.
    pub name: String,
    /// The trigger's `scalerMetadata`, as KEDA sent it.
    pub metadata: BTreeMap<String, String>,
}

impl std::fmt::Display for TargetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The latest evaluation of one target.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetState {
    /// Decided from the sources that have fresh readings.
    pub decision: Decision,
    /// The worst source without a fresh reading (failed, then stale, then pending), if any:
    /// `GetMetrics` then answers `UNAVAILABLE`, and so does `IsActive` unless the others show activity.
    pub problem: Option<SourceProblem>,
    /// When the newest reading behind this decision arrived: push latency is measured from it.
    pub observed_at: Option<Instant>,
}

impl TargetState {
    /// Same decision and problem: nothing a caller or a stream would see differently.
    pub fn same_outcome(&self, other: &TargetState) -> bool {
        self.decision == other.decision && self.problem == other.problem
    }
}

/// Why a source has no usable reading.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SourceProblem {
    /// The source has not answered yet.
    #[error("{signal}: no reading yet")]
    Pending {
        /// The source, as shown in logs and on the status page.
        signal: String,
    },
    /// The source's last poll failed.
    #[error("{signal}: {cause}")]
    Failed {
        /// The source, as shown in logs and on the status page.
        signal: String,
        /// The poll's error.
        cause: String,
    },
    /// The last good reading is older than `collectors.staleAfter`.
    #[error("{signal}: the last good reading is {age} old (staleAfter {limit})")]
    Stale {
        /// The source, as shown in logs and on the status page.
        signal: String,
        /// The last good reading's age, formatted (`20s`).
        age: String,
        /// `collectors.staleAfter`, formatted.
        limit: String,
    },
}

impl SourceProblem {
    pub(super) fn rank(&self) -> u8 {
        match self {
            SourceProblem::Failed { .. } => 0,
            SourceProblem::Stale { .. } => 1,
            SourceProblem::Pending { .. } => 2,
        }
    }
}

/// One live target.
pub struct Target {
    /// Which trigger of which ScaledObject this is.
    pub key: TargetKey,
    /// What the target's task runs with; replaced in place when the config changes.
    pub(super) setup: watch::Sender<Arc<Setup>>,
    pub(super) state: watch::Receiver<TargetState>,
    pub(super) shared: Arc<Shared>,
    pub(super) task: JoinHandle<()>,
}

/// What a target's task runs with: derived from its metadata and the config of the moment.
pub(super) struct Setup {
    pub(super) spec: Arc<TargetSpec>,
    pub(super) collectors: Vec<Arc<Collector>>,
    pub(super) tick: Duration,
    pub(super) limits: Limits,
    pub(super) engine: EngineSettings,
    /// How much of the past to learn from Prometheus when the engine starts.
    pub(super) backfill: Duration,
    /// `limits.maxResponseBytes`, for the backfill's `query_range`.
    pub(super) max_response_bytes: usize,
    /// The window of the activator's request rate.
    pub(super) rate_window: Duration,
}

/// Written by the target's task and by calls; read by the exporter and the status page.
pub(super) struct Shared {
    /// Milliseconds since the registry's epoch at the last call about this target.
    pub(super) last_seen_ms: AtomicU64,
    pub(super) open_streams: AtomicUsize,
    /// Open streams of every target (the registry's count).
    pub(super) all_streams: Arc<AtomicUsize>,
    /// The engine's latest rate forecast (f64 bits), 0 without `predictive: full`.
    pub(super) forecast: AtomicU64,
    /// Idle gaps the engine's idle-time model holds.
    pub(super) learned_gaps: AtomicU32,
    /// Times a signal made the target active after an inactive decision (live steps only).
    pub(super) cold_starts: AtomicU64,
    /// The activator is holding a request for this target: evaluate now, not at the next tick.
    pub(super) demand: Notify,
    /// A peer replica holds a request for this target, until then at the latest.
    pub(super) peer_held_until: Mutex<Option<Instant>>,
    pub(super) history: Mutex<History>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target {
    /// The parsed trigger, as of the current config.
    pub fn spec(&self) -> Arc<TargetSpec> {
        self.setup.borrow().spec.clone()
    }

    /// The current state, without waiting.
    pub fn state(&self) -> TargetState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every new state.
    pub fn watch(&self) -> watch::Receiver<TargetState> {
        self.state.clone()
    }

    /// The state once every source has answered at least once, or after `wait` at most.
    pub async fn settled(&self, wait: Duration) -> TargetState {
        let mut rx = self.state.clone();
        let settled = |s: &TargetState| !matches!(s.problem, Some(SourceProblem::Pending { .. }));
        match tokio::time::timeout(wait, rx.wait_for(settled)).await {
            Ok(Ok(state)) => state.clone(),
            _ => self.state(),
        }
    }

    /// Marks a stream open until the guard drops; targets with open streams are never evicted.
    pub fn open_stream(self: &Arc<Self>) -> StreamGuard {
        self.shared.open_streams.fetch_add(1, Ordering::Relaxed);
        self.shared.all_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    /// Streams open on this target now.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::Relaxed)
    }

    /// The latest rate forecast in requests per second (0 unless `predictive: full`).
    pub fn forecast(&self) -> f64 {
        f64::from_bits(self.shared.forecast.load(Ordering::Relaxed))
    }

    /// Idle gaps the engine has learned (from the backfilled past and since).
    pub fn learned_gaps(&self) -> u32 {
        self.shared.learned_gaps.load(Ordering::Relaxed)
    }

    /// Times a signal made the target active while it was inactive: traffic found the app at zero.
    pub fn cold_starts(&self) -> u64 {
        self.shared.cold_starts.load(Ordering::Relaxed)
    }

    /// The last hour, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.shared.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).samples()
    }

    /// `namespace/name`: the ScaledObject, as the activator knows it.
    pub fn id(&self) -> String {
        self.key.to_string()
    }

    /// Whether this target belongs to the ScaledObject `id` (`namespace/name`), without allocating.
    pub(super) fn is(&self, id: &str) -> bool {
        id.split_once('/') == Some((self.key.namespace.as_str(), self.key.name.as_str()))
    }

    /// The sources this target reads, in the order of its signals, each with its latest state.
    pub fn sources(&self) -> Vec<(SourceKey, SourceState)> {
        self.setup.borrow().collectors.iter().map(|c| (c.key.clone(), c.borrow().clone())).collect()
    }
}

/// Counts one open stream of a target.
pub struct StreamGuard(Arc<Target>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.shared.open_streams.fetch_sub(1, Ordering::Relaxed);
        self.0.shared.all_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The time limits a target's evaluation applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Limits {
    pub(super) stale_after: Duration,
    pub(super) persistent_lag_after: Duration,
}
impl Limits {
    pub(super) fn of(config: &Config) -> Self {
        Self {
            stale_after: config.collectors.stale_after.0,
            persistent_lag_after: config.targets.persistent_lag_after.0,
        }
    }
}
