//! Live targets: each one's spec, its collectors, its decision channel, and idle eviction.
//!
//! A target is one trigger of one ScaledObject, identified by (namespace, name, metadata). Its
//! task re-evaluates the engine on every reading and every tick and publishes a [`TargetState`]
//! on a `watch` channel; calls and streams only read that channel.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::activator::{Activator, Route};
use crate::config::{Config, StaticRoute};
use crate::duration;
use crate::engine::{Decision, EngineSettings, Inputs, Now, TargetEngine, lag};
use crate::history::{History, Sample};
use crate::peers::Peers;
use crate::signals::prometheus::{self, QueryError};
use crate::signals::{Collector, Hub, Reading, SourceKey, SourceState, SourceView};
use crate::target::{HttpRoute, InvalidMetadata, PredictiveMode, TargetSpec};
use crate::telemetry::Telemetry;

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
    /// What the target's task runs with; replaced in place when the config changes.
    setup: watch::Sender<Arc<Setup>>,
    state: watch::Receiver<TargetState>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// What a target's task runs with: derived from its metadata and the config of the moment.
struct Setup {
    spec: Arc<TargetSpec>,
    collectors: Vec<Arc<Collector>>,
    tick: Duration,
    limits: Limits,
    engine: EngineSettings,
    /// How much of the past to learn from Prometheus when the engine starts.
    backfill: Duration,
    /// The window of the activator's request rate.
    rate_window: Duration,
}

/// Written by the target's task and by calls; read by the exporter and the status page.
struct Shared {
    /// Milliseconds since the registry's epoch at the last call about this target.
    last_seen_ms: AtomicU64,
    open_streams: AtomicUsize,
    /// Open streams of every target (the registry's count).
    all_streams: Arc<AtomicUsize>,
    /// The engine's latest rate forecast (f64 bits), 0 without `predictive: full`.
    forecast: AtomicU64,
    /// Idle gaps the engine's idle-time model holds.
    learned_gaps: AtomicU32,
    /// Times a signal made the target active after an inactive decision (live steps only).
    cold_starts: AtomicU64,
    /// The activator is holding a request for this target: evaluate now, not at the next tick.
    demand: Notify,
    /// A peer replica holds a request for this target, until then at the latest.
    peer_held_until: Mutex<Option<Instant>>,
    history: Mutex<History>,
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
        self.shared.history.lock().unwrap_or_else(|e| e.into_inner()).samples()
    }

    /// `namespace/name`: the ScaledObject, as the activator knows it.
    pub fn id(&self) -> String {
        self.key.to_string()
    }

    /// Whether this target belongs to the ScaledObject `id` (`namespace/name`), without allocating.
    fn is(&self, id: &str) -> bool {
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

/// Why a call's target was not served.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    InvalidMetadata(#[from] InvalidMetadata),
    /// The metadata is larger than `limits.*` allows: bad input, not load.
    #[error("scalerMetadata has {actual} {what}, more than the {limit} allowed (limits.{setting})")]
    MetadataTooLarge { what: &'static str, actual: usize, limit: usize, setting: &'static str },
    /// `hosts`/`backend` without an activator, or a route the activator refuses.
    #[error("{0}")]
    Route(String),
    /// The server holds as many as `limits.*` allows.
    #[error("spinscale already holds {limit} {what} (limits.{setting}); refusing another")]
    Full { what: &'static str, limit: usize, setting: &'static str },
}

/// A config that does not fit the live targets; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[error("the new config does not fit the live targets, so none of it is applied: {}", problems.join("; "))]
pub struct Rejected {
    pub problems: Vec<String>,
}

/// What a config reload changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Live targets whose spec, collectors or engine were replaced.
    pub targets_changed: usize,
    pub collectors_restarted: bool,
}

/// All live targets.
pub struct Registry {
    config: RwLock<Arc<Config>>,
    hub: Arc<Hub>,
    targets: RwLock<HashMap<TargetKey, Arc<Target>>>,
    epoch: Instant,
    telemetry: Arc<Telemetry>,
    open_streams: Arc<AtomicUsize>,
    /// The HTTP activator, when spinscale serves one (`--activator-listen`).
    activator: OnceLock<Arc<Activator>>,
    /// The other replicas, told of every request held here.
    peers: OnceLock<Arc<Peers>>,
    this: Weak<Registry>,
}

impl Registry {
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new_cyclic(|registry| {
            let this = registry.clone();
            let telemetry = Telemetry::new(registry.clone());
            let hub = Hub::new(config.collectors.clone(), telemetry.clone());
            Self {
                config: RwLock::new(Arc::new(config)),
                hub,
                targets: RwLock::new(HashMap::new()),
                epoch: Instant::now(),
                telemetry,
                open_streams: Arc::default(),
                activator: OnceLock::new(),
                peers: OnceLock::new(),
                this,
            }
        })
    }

    /// Creates the HTTP activator (once; later calls return it): a held request wakes its
    /// target at once. Triggers with `hosts` are refused until it exists.
    pub fn enable_activator(&self) -> Arc<Activator> {
        self.activator
            .get_or_init(|| {
                let registry = self.this.clone();
                Activator::new(Arc::new(move |target: &str| {
                    if let Some(registry) = registry.upgrade() {
                        registry.demand(target);
                        if let Some(peers) = registry.peers.get() {
                            peers.announce(target);
                        }
                    }
                }))
            })
            .clone()
    }

    /// Sets the config's static routes that changed between `old` and `new` in the activator, and
    /// removes those that went. A ScaledObject whose trigger has `hosts` keeps its trigger's route.
    /// All or nothing: on a refused route, the routes set so far are put back.
    pub fn apply_static_routes(&self, old: &[StaticRoute], new: &[StaticRoute]) -> Result<usize, Vec<String>> {
        let targets = self.targets.read().unwrap_or_else(|e| e.into_inner());
        self.set_static_routes(old, new, &routed_by_triggers(&targets))
    }

    fn set_static_routes(
        &self,
        old: &[StaticRoute],
        new: &[StaticRoute],
        routed: &HashSet<String>,
    ) -> Result<usize, Vec<String>> {
        let Some(activator) = self.activator.get() else { return Ok(0) };
        let owned_by_trigger = |id: &str| routed.contains(id);
        let mut problems = Vec::new();
        let mut applied = Vec::new();
        for (i, route) in new.iter().enumerate() {
            if old.contains(route) || owned_by_trigger(&route.scaled_object) {
                continue;
            }
            match route.to_route().and_then(|r| activator.set_route(r).map_err(|e| e.to_string())) {
                Ok(()) => applied.push(route.scaled_object.clone()),
                Err(e) => problems.push(format!("routes[{i}]: {e}")),
            }
        }
        if !problems.is_empty() {
            for id in applied {
                restore_static_route(activator, old, &id);
            }
            return Err(problems);
        }
        for gone in old.iter().filter(|r| !new.iter().any(|n| n.scaled_object == r.scaled_object)) {
            if !owned_by_trigger(&gone.scaled_object) {
                activator.remove_route(&gone.scaled_object);
            }
        }
        Ok(applied.len())
    }

    /// Announces every request held here to these peers (set once, at start).
    pub fn set_peers(&self, peers: Arc<Peers>) {
        let _ = self.peers.set(peers);
    }

    /// This replica's id in the peer protocol, when it has peers.
    pub fn peer_id(&self) -> Option<u64> {
        self.peers.get().map(|p| p.id)
    }

    /// A peer holds a request for `target`: it counts as held here too, until the route's
    /// `holdTimeout` at most (the longest the peer can hold it).
    pub fn peer_demand(&self, target: &str) {
        let targets = self.targets.read().unwrap_or_else(|e| e.into_inner());
        for t in targets.values().filter(|t| t.is(target)) {
            let Some(http) = t.spec().http.clone() else { continue };
            *t.shared.peer_held_until.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::now() + http.hold_timeout);
            t.shared.demand.notify_one();
        }
    }

    /// A request for `target` (`namespace/name`) is held: its triggers evaluate now.
    fn demand(&self, target: &str) {
        let targets = self.targets.read().unwrap_or_else(|e| e.into_inner());
        for t in targets.values().filter(|t| t.is(target) && t.spec().http.is_some()) {
            t.shared.demand.notify_one();
        }
    }

    /// The config of the moment (it changes on reload).
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
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

    /// Open streams across all targets.
    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::Relaxed)
    }

    /// Every live target, in no particular order.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.targets.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// The target for this trigger, registered (and its collectors started) on first use.
    pub fn target(
        &self,
        namespace: &str,
        name: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<Arc<Target>, Refused> {
        let limits = self.config().limits.clone();
        if metadata.len() > limits.max_metadata_keys {
            return Err(Refused::MetadataTooLarge {
                what: "keys",
                actual: metadata.len(),
                limit: limits.max_metadata_keys,
                setting: "maxMetadataKeys",
            });
        }
        let bytes: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if bytes > limits.max_metadata_bytes {
            return Err(Refused::MetadataTooLarge {
                what: "bytes",
                actual: bytes,
                limit: limits.max_metadata_bytes,
                setting: "maxMetadataBytes",
            });
        }
        let key = TargetKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
            metadata: metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        let now_ms = self.now_ms();
        if let Some(target) = self.targets.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            target.shared.last_seen_ms.store(now_ms, Ordering::Relaxed);
            return Ok(target.clone());
        }
        let parsed_with = self.config();
        let spec = Arc::new(parse_spec(&parsed_with, metadata)?);
        let mut targets = self.targets.write().unwrap_or_else(|e| e.into_inner());
        if let Some(target) = targets.get(&key) {
            return Ok(target.clone());
        }
        if targets.len() >= limits.max_targets {
            return Err(Refused::Full { what: "targets", limit: limits.max_targets, setting: "maxTargets" });
        }
        // Reloads hold the targets' lock, so the config is stable here; one that ran since the parse
        // above would have missed this target: parse again.
        let config = self.config();
        let spec = if Arc::ptr_eq(&config, &parsed_with) { spec } else { Arc::new(parse_spec(&config, metadata)?) };
        if let Some(http) = &spec.http {
            self.route(&key, http)?;
        }
        for warning in &spec.warnings {
            warn!(target = %key, "{warning}");
        }
        let setup = self.setup(spec, &config);
        let sources = setup.collectors.len();
        let target = Arc::new(self.start(key.clone(), setup, now_ms));
        info!(target = %key, sources, "target registered");
        targets.insert(key, target.clone());
        Ok(target)
    }

    /// Applies a new config to every live target without dropping their streams, or to none:
    /// a config under which a live trigger's metadata no longer parses is rejected whole.
    pub fn reload(&self, new: Config) -> Result<Reloaded, Rejected> {
        let targets = self.targets.write().unwrap_or_else(|e| e.into_inner());
        let mut specs = Vec::with_capacity(targets.len());
        let mut problems = Vec::new();
        for (key, target) in targets.iter() {
            let metadata: HashMap<String, String> = key.metadata.clone().into_iter().collect();
            match parse_spec(&new, &metadata) {
                Ok(spec) => specs.push((target, spec)),
                Err(e) => problems.push(format!("target {key}: {e}")),
            }
        }
        if !problems.is_empty() {
            problems.sort();
            return Err(Rejected { problems });
        }
        self.set_static_routes(&self.config().routes, &new.routes, &routed_by_triggers(&targets))
            .map_err(|problems| Rejected { problems })?;
        let new = Arc::new(new);
        let old = std::mem::replace(&mut *self.config.write().unwrap_or_else(|e| e.into_inner()), new.clone());
        let collectors_restarted = old.collectors != new.collectors;
        if collectors_restarted {
            self.hub.reconfigure(new.collectors.clone());
        }
        let mut targets_changed = 0;
        for (target, spec) in specs {
            let unchanged = {
                let current = target.setup.borrow();
                !collectors_restarted
                    && *current.spec == spec
                    && current.tick == new.targets.tick.0
                    && current.limits == Limits::of(&new)
                    && current.engine == new.engine
            };
            if !unchanged {
                target.setup.send_replace(Arc::new(self.setup(Arc::new(spec), &new)));
                targets_changed += 1;
            }
        }
        Ok(Reloaded { targets_changed, collectors_restarted })
    }

    /// Routes `hosts` to the target in the activator (`INVALID_ARGUMENT` without one, or on a conflict).
    fn route(&self, key: &TargetKey, http: &HttpRoute) -> Result<(), Refused> {
        let Some(activator) = self.activator.get() else {
            return Err(Refused::Route(format!(
                "{}/{}: hosts and backend need the activator: start spinscale with --activator-listen",
                crate::target::HOSTS,
                crate::target::BACKEND
            )));
        };
        activator
            .set_route(Route::of_trigger(key.to_string(), http))
            .map_err(|e| Refused::Route(format!("{}: {e}", crate::target::HOSTS)))
    }

    fn setup(&self, spec: Arc<TargetSpec>, config: &Config) -> Setup {
        let collectors = target_sources(&spec).iter().map(|s| self.hub.subscribe(s)).collect();
        Setup {
            spec,
            collectors,
            tick: config.targets.tick.0,
            limits: Limits::of(config),
            engine: config.engine.clone(),
            backfill: config.targets.backfill.0,
            rate_window: config.collectors.scrape_window.0,
        }
    }

    fn start(&self, key: TargetKey, setup: Setup, now_ms: u64) -> Target {
        let engine = TargetEngine::for_spec(&setup.spec, &setup.engine);
        let shared = Arc::new(Shared {
            last_seen_ms: AtomicU64::new(now_ms),
            open_streams: AtomicUsize::new(0),
            all_streams: self.open_streams.clone(),
            forecast: AtomicU64::new(0),
            learned_gaps: AtomicU32::new(0),
            cold_starts: AtomicU64::new(0),
            demand: Notify::new(),
            peer_held_until: Mutex::new(None),
            history: Mutex::new(History::default()),
        });
        let activator = setup.spec.http.as_ref().and(self.activator.get().cloned()).map(|a| (a, key.to_string()));
        let mut evaluation = Evaluation {
            engine,
            epoch: self.epoch,
            telemetry: self.telemetry.clone(),
            activator,
            shared: shared.clone(),
        };
        let initial = evaluation.evaluate(&setup, Instant::now());
        let (tx, rx) = watch::channel(initial);
        let (setup_tx, setup_rx) = watch::channel(Arc::new(setup));
        let span = info_span!("target", target = %key);
        let http = self.hub.http().clone();
        let task = tokio::spawn(run_target(setup_rx, evaluation, tx, shared.clone(), http).instrument(span));
        Target { key, setup: setup_tx, state: rx, shared, task }
    }

    /// Drops targets nobody asked about for `targets.idleTimeout` and that have no open stream.
    pub fn evict_idle(&self) -> usize {
        let config = self.config();
        let idle_timeout = config.targets.idle_timeout.0;
        let idle_ms = idle_timeout.as_millis() as u64;
        let now_ms = self.now_ms();
        let mut targets = self.targets.write().unwrap_or_else(|e| e.into_inner());
        let before = targets.len();
        targets.retain(|key, t| {
            let last_seen = t.shared.last_seen_ms.load(Ordering::Relaxed);
            let keep = t.open_streams() > 0 || now_ms.saturating_sub(last_seen) < idle_ms;
            if !keep {
                info!(target = %key, "target dropped: not asked about for {}", duration::format(idle_timeout));
                if let (Some(activator), Some(_)) = (self.activator.get(), &t.spec().http) {
                    // The config's route for this app, if any, outlives the trigger's.
                    restore_static_route(activator, &config.routes, &key.to_string());
                }
            }
            keep
        });
        before - targets.len()
    }

    /// Runs [`Self::evict_idle`] periodically until `shutdown`.
    pub async fn run_evictions(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let every =
                (self.config().targets.idle_timeout.0 / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => { self.evict_idle(); }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// The ScaledObjects whose triggers route requests through the activator.
fn routed_by_triggers(targets: &HashMap<TargetKey, Arc<Target>>) -> HashSet<String> {
    targets.values().filter(|t| t.spec().http.is_some()).map(|t| t.id()).collect()
}

fn parse_spec(config: &Config, metadata: &HashMap<String, String>) -> Result<TargetSpec, InvalidMetadata> {
    let mut spec = TargetSpec::parse(metadata, &*config.defaults_for(metadata)?)?;
    config.resolve_connection(&mut spec)?;
    Ok(spec)
}

fn target_sources(spec: &TargetSpec) -> Vec<SourceKey> {
    let prometheus = spec.prometheus.clone().map(SourceKey::Prometheus);
    let scrape = spec.scrape.clone().map(SourceKey::Scrape);
    let kafka = spec.kafka.clone().map(SourceKey::Kafka);
    prometheus.into_iter().chain(scrape).chain(kafka).collect()
}

/// The time limits a target's evaluation applies.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Limits {
    stale_after: Duration,
    persistent_lag_after: Duration,
}

impl Limits {
    fn of(config: &Config) -> Self {
        Self {
            stale_after: config.collectors.stale_after.0,
            persistent_lag_after: config.targets.persistent_lag_after.0,
        }
    }
}

async fn run_target(
    mut setup_rx: watch::Receiver<Arc<Setup>>,
    mut evaluation: Evaluation,
    tx: watch::Sender<TargetState>,
    shared: Arc<Shared>,
    http: reqwest::Client,
) {
    let mut setup = setup_rx.borrow_and_update().clone();
    let mut backfill = backfill(&setup, &http);
    'setup: loop {
        let mut readings = StreamMap::new();
        for (i, c) in setup.collectors.iter().enumerate() {
            readings.insert(i, WatchStream::from_changes(c.subscribe()));
        }
        let mut ticker = tokio::time::interval(setup.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            let state = evaluation.evaluate(&setup, Instant::now());
            shared.record(&state, &evaluation.engine);
            let was_active = tx.borrow().decision.active;
            if state.decision.active && !was_active {
                if state.decision.reason.is_signal() {
                    shared.cold_starts.fetch_add(1, Ordering::Relaxed);
                }
                if shared.open_streams.load(Ordering::Relaxed) == 0 {
                    evaluation.telemetry.push_failures.inc();
                }
            }
            tx.send_if_modified(|current| {
                let changed = !current.same_outcome(&state);
                *current = state;
                changed
            });
            tokio::select! {
                _ = ticker.tick() => {}
                Some(_) = readings.next() => {}
                _ = shared.demand.notified() => {}
                Some(past) = async { Some(backfill.as_mut()?.await) }, if backfill.is_some() => {
                    backfill = None;
                    match past {
                        Ok(points) => {
                            let learned = evaluation.learn_past(&setup, &points);
                            info!(points = points.len(), gaps = learned, "learned the past from Prometheus");
                        }
                        Err(e) => warn!("no backfill from Prometheus ({e}); the engine learns from now on"),
                    }
                }
                changed = setup_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = setup_rx.borrow_and_update().clone();
                    if next.spec != setup.spec || next.engine != setup.engine {
                        // A different trigger or engine: the learned history does not carry over.
                        evaluation.engine = TargetEngine::for_spec(&next.spec, &next.engine);
                        backfill = self::backfill(&next, &http);
                    }
                    setup = next;
                    continue 'setup;
                }
            }
        }
    }
}

/// Engine time starts this long before the registry's epoch, so the backfilled past has room.
const ENGINE_ORIGIN: Duration = Duration::from_secs(8 * 24 * 3600);

type Backfill = Option<Pin<Box<dyn Future<Output = Result<Vec<(f64, f64)>, QueryError>> + Send>>>;

/// The query for a predictive target's past, when it has a Prometheus query and backfill is on.
fn backfill(setup: &Setup, http: &reqwest::Client) -> Backfill {
    let source = setup.spec.prometheus.clone()?;
    if setup.spec.predictive.mode == PredictiveMode::Off || setup.backfill.is_zero() {
        return None;
    }
    let (http, end) = (http.clone(), wall_secs());
    let start = end - setup.backfill.as_secs_f64();
    let timeout = source.timeout.unwrap_or(Duration::from_secs(10)).max(Duration::from_secs(10));
    Some(Box::pin(async move { prometheus::query_range(&http, &source, start, end, 60.0, timeout).await }))
}

/// A target's engine and what evaluating it needs besides the setup.
struct Evaluation {
    engine: TargetEngine,
    epoch: Instant,
    telemetry: Arc<Telemetry>,
    /// The activator and this target's id in it, for targets with `hosts`.
    activator: Option<(Arc<Activator>, String)>,
    shared: Arc<Shared>,
}

impl Evaluation {
    fn mono(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch) + ENGINE_ORIGIN
    }

    /// Starts the engine over from `points` (`(unix seconds, requests/s)`, oldest first): the
    /// target's past as Prometheus recorded it. Returns the idle gaps learned.
    fn learn_past(&mut self, setup: &Setup, points: &[(f64, f64)]) -> u32 {
        let mut engine = TargetEngine::for_spec(&setup.spec, &setup.engine);
        let (mono, wall) = (self.mono(Instant::now()), wall_secs());
        for &(at, rps) in points {
            let ago = Duration::from_secs_f64((wall - at).max(0.0));
            let Some(then) = mono.checked_sub(ago) else { continue };
            engine.step(Now { mono: then, wall_secs: at }, &Inputs { rps: Some(rps), ..Inputs::default() });
        }
        self.engine = engine;
        self.engine.idle_model().histogram().total()
    }

    /// Feeds the fresh readings to the engine and names the first source that has none.
    fn evaluate(&mut self, setup: &Setup, now: Instant) -> TargetState {
        let stale_after = setup.limits.stale_after;
        let mut inputs = Inputs::default();
        let mut problem: Option<SourceProblem> = None;
        let mut observed_at: Option<Instant> = None;
        for c in &setup.collectors {
            let state = c.borrow();
            let source = || c.key.to_string();
            if let Some((_, at)) = &state.last_good {
                observed_at = observed_at.max(Some(*at));
            }
            let found = match state.view(now, stale_after) {
                // A query and a scrape both measure the request rate: the higher one never under-scales.
                SourceView::Fresh(Reading::Rate(rps)) => {
                    inputs.rps = Some(inputs.rps.map_or(*rps, |other| other.max(*rps)));
                    None
                }
                SourceView::Fresh(Reading::Offsets(partitions)) => {
                    inputs.lag = Some(lag::summarize(partitions, &setup.spec.lag, setup.limits.persistent_lag_after));
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
        // The activator counts every request exactly: a rate that is never stale, and held demand.
        if let Some((activator, id)) = &self.activator
            && let Some(stats) = activator.stats(id)
        {
            let rps = activator.rate(id, setup.rate_window).unwrap_or(0.0);
            inputs.rps = Some(inputs.rps.map_or(rps, |other| other.max(rps)));
            let peer_held =
                self.shared.peer_held_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|u| u > now);
            if stats.held > 0 || peer_held {
                inputs.held = true;
                observed_at = Some(now);
            }
        }
        // The engine measures gaps on the monotonic clock; the time-of-day model and schedules need the wall clock.
        let decision = match &problem {
            // Without every signal the engine would learn the outage as quiet: decide, don't learn.
            Some(_) => self.engine.reactive(&inputs),
            None => self.engine.step(Now { mono: self.mono(now), wall_secs: wall_secs() }, &inputs),
        };
        TargetState { decision, problem, observed_at }
    }
}

/// Puts the route of `routes` for the ScaledObject `id` back in the activator, or removes the
/// route there when `routes` has none.
fn restore_static_route(activator: &Activator, routes: &[StaticRoute], id: &str) {
    match routes.iter().find(|r| r.scaled_object == id).and_then(|r| r.to_route().ok()) {
        Some(route) => {
            let _ = activator.set_route(route);
        }
        None => activator.remove_route(id),
    }
}

fn wall_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Shared {
    fn record(&self, state: &TargetState, engine: &TargetEngine) {
        let forecast = engine.forecast();
        self.forecast.store(forecast.to_bits(), Ordering::Relaxed);
        self.learned_gaps.store(engine.idle_model().histogram().total(), Ordering::Relaxed);
        let d = &state.decision;
        self.history.lock().unwrap_or_else(|e| e.into_inner()).observe(wall_secs(), d.rps, d.lag, forecast, d.active);
    }
}
