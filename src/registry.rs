//! Live targets: each one's spec, its collectors, its decision channel, and idle eviction.
//!
//! A target is one trigger of one ScaledObject, identified by (namespace, name, metadata). Its
//! task re-evaluates the engine on every reading and every tick and publishes a [`TargetState`]
//! on a `watch` channel; calls and streams only read that channel.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::Config;
use crate::duration;
use crate::engine::{Decision, Inputs, Now, TargetEngine, lag};
use crate::signals::{Collector, Hub, Reading, SourceKey, SourceView};
use crate::target::{InvalidMetadata, TargetSpec};

/// Identifies a target: KEDA sends no trigger index, so the metadata tells triggers apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub namespace: String,
    pub name: String,
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
    /// The first source without a fresh reading, if any: unary answers are then `UNAVAILABLE`.
    pub problem: Option<SourceProblem>,
}

/// Why a source has no usable reading.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SourceProblem {
    #[error("{signal}: no reading yet")]
    Pending { signal: String },
    #[error("{signal}: {cause}")]
    Failed { signal: String, cause: String },
    #[error("{signal}: the last good reading is {age} old (staleAfter {limit})")]
    Stale { signal: String, age: String, limit: String },
}

impl SourceProblem {
    fn rank(&self) -> u8 {
        match self {
            SourceProblem::Failed { .. } => 0,
            SourceProblem::Stale { .. } => 1,
            SourceProblem::Pending { .. } => 2,
        }
    }
}

/// One live target.
pub struct Target {
    pub key: TargetKey,
    pub spec: Arc<TargetSpec>,
    state: watch::Receiver<TargetState>,
    /// Milliseconds since the registry's epoch at the last call about this target.
    last_seen_ms: AtomicU64,
    open_streams: AtomicUsize,
    task: JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target {
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
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard(self.clone())
    }

    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::Relaxed)
    }
}

/// Counts one open stream of a target.
pub struct StreamGuard(Arc<Target>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// All live targets.
pub struct Registry {
    config: Config,
    hub: Arc<Hub>,
    targets: RwLock<HashMap<TargetKey, Arc<Target>>>,
    epoch: Instant,
}

impl Registry {
    pub fn new(config: Config) -> Arc<Self> {
        let hub = Hub::new(config.collectors.clone());
        Arc::new(Self { config, hub, targets: RwLock::new(HashMap::new()), epoch: Instant::now() })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How many collectors run (one per distinct source).
    pub fn collectors(&self) -> usize {
        self.hub.running()
    }

    pub fn len(&self) -> usize {
        self.targets.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The target for this trigger, registered (and its collectors started) on first use.
    pub fn target(
        &self,
        namespace: &str,
        name: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Arc<Target>, InvalidMetadata> {
        let key = TargetKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
            metadata: metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        let now_ms = self.now_ms();
        if let Some(target) = self.targets.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            target.last_seen_ms.store(now_ms, Ordering::Relaxed);
            return Ok(target.clone());
        }
        let spec = Arc::new(TargetSpec::parse(metadata, &self.config.defaults)?);
        let mut targets = self.targets.write().unwrap_or_else(|e| e.into_inner());
        if let Some(target) = targets.get(&key) {
            return Ok(target.clone());
        }
        for warning in &spec.warnings {
            warn!(target = %key, "{warning}");
        }
        let target = Arc::new(self.start(key.clone(), spec, now_ms));
        info!(target = %key, sources = target_sources(&target.spec).len(), "target registered");
        targets.insert(key, target.clone());
        Ok(target)
    }

    fn start(&self, key: TargetKey, spec: Arc<TargetSpec>, now_ms: u64) -> Target {
        let collectors: Vec<Arc<Collector>> = target_sources(&spec).iter().map(|s| self.hub.subscribe(s)).collect();
        let limits = Limits {
            stale_after: self.config.collectors.stale_after.0,
            persistent_lag_after: self.config.targets.persistent_lag_after.0,
        };
        let mut engine = TargetEngine::for_spec(&spec, &self.config.engine);
        let initial = evaluate(&spec, &mut engine, &collectors, self.epoch, Instant::now(), limits);
        let (tx, rx) = watch::channel(initial);
        let span = info_span!("target", target = %key);
        let run = run_target(spec.clone(), engine, collectors, tx, self.config.targets.tick.0, limits, self.epoch);
        let task = tokio::spawn(run.instrument(span));
        Target { key, spec, state: rx, last_seen_ms: AtomicU64::new(now_ms), open_streams: AtomicUsize::new(0), task }
    }

    /// Drops targets nobody asked about for `targets.idleTimeout` and that have no open stream.
    pub fn evict_idle(&self) -> usize {
        let idle_ms = self.config.targets.idle_timeout.0.as_millis() as u64;
        let now_ms = self.now_ms();
        let mut targets = self.targets.write().unwrap_or_else(|e| e.into_inner());
        let before = targets.len();
        targets.retain(|key, t| {
            let keep = t.open_streams() > 0 || now_ms.saturating_sub(t.last_seen_ms.load(Ordering::Relaxed)) < idle_ms;
            if !keep {
                info!(target = %key, "target dropped: not asked about for {}", duration::format(self.config.targets.idle_timeout.0));
            }
            keep
        });
        before - targets.len()
    }

    /// Runs [`Self::evict_idle`] periodically until `shutdown`.
    pub async fn run_evictions(self: Arc<Self>, shutdown: CancellationToken) {
        let every = (self.config.targets.idle_timeout.0 / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => { self.evict_idle(); }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

fn target_sources(spec: &TargetSpec) -> Vec<SourceKey> {
    let prometheus = spec.prometheus.clone().map(SourceKey::Prometheus);
    let scrape = spec.scrape.clone().map(SourceKey::Scrape);
    let kafka = spec.kafka.clone().map(SourceKey::Kafka);
    prometheus.into_iter().chain(scrape).chain(kafka).collect()
}

/// The time limits a target's evaluation applies.
#[derive(Clone, Copy)]
struct Limits {
    stale_after: Duration,
    persistent_lag_after: Duration,
}

async fn run_target(
    spec: Arc<TargetSpec>,
    mut engine: TargetEngine,
    collectors: Vec<Arc<Collector>>,
    tx: watch::Sender<TargetState>,
    tick: Duration,
    limits: Limits,
    epoch: Instant,
) {
    let mut readings = StreamMap::new();
    for (i, c) in collectors.iter().enumerate() {
        readings.insert(i, WatchStream::from_changes(c.subscribe()));
    }
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let state = evaluate(&spec, &mut engine, &collectors, epoch, Instant::now(), limits);
        tx.send_if_modified(|current| {
            let changed = *current != state;
            if changed {
                *current = state;
            }
            changed
        });
        tokio::select! {
            _ = ticker.tick() => {}
            Some(_) = readings.next() => {}
        }
    }
}

/// Feeds the fresh readings to the engine and names the first source that has none.
fn evaluate(
    spec: &TargetSpec,
    engine: &mut TargetEngine,
    collectors: &[Arc<Collector>],
    epoch: Instant,
    now: Instant,
    limits: Limits,
) -> TargetState {
    let stale_after = limits.stale_after;
    let mut inputs = Inputs::default();
    let mut problem: Option<SourceProblem> = None;
    for c in collectors {
        let state = c.borrow();
        let source = || c.key.to_string();
        let found = match state.view(now, stale_after) {
            // A query and a scrape both measure the request rate: the higher one never under-scales.
            SourceView::Fresh(Reading::Rate(rps)) => {
                inputs.rps = Some(inputs.rps.map_or(*rps, |other| other.max(*rps)));
                None
            }
            SourceView::Fresh(Reading::Offsets(partitions)) => {
                inputs.lag = Some(lag::summarize(partitions, &spec.lag, limits.persistent_lag_after));
                None
            }
            SourceView::Pending => Some(SourceProblem::Pending { signal: source() }),
            SourceView::Failed(cause) => Some(SourceProblem::Failed { signal: source(), cause: cause.to_string() }),
            SourceView::Stale(age) => Some(SourceProblem::Stale {
                signal: source(),
                age: duration::format(age),
                limit: duration::format(stale_after),
            }),
        };
        if let Some(found) = found
            && problem.as_ref().is_none_or(|p| found.rank() < p.rank())
        {
            problem = Some(found);
        }
    }
    // The engine measures gaps on the monotonic clock; the time-of-day model and schedules need the wall clock.
    let wall_secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let clock = Now { mono: now.saturating_duration_since(epoch), wall_secs };
    TargetState { decision: engine.step(clock, &inputs), problem }
}
