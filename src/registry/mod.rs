//! Live targets: the map of them, with its limits and idle eviction.
//!
//! A target is one trigger of one ScaledObject, identified by (namespace, name, metadata). Its
//! task (`task`) re-evaluates the engine on every reading and every tick and publishes a
//! [`TargetState`] on a `watch` channel; calls and streams only read that channel. `routes`
//! keeps the activator's routes in step with the targets, `peers` takes demand from other
//! replicas, and `live` reads the present for the exporter.
//!
//! Within the crate it may use [`config`](crate::config), [`history`](crate::history),
//! [`peers`](crate::peers), [`signals`](crate::signals) and [`telemetry`](crate::telemetry);
//! nothing else.

mod live;
mod peers;
mod routes;
mod target;
mod task;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::outbound;
use crate::peers::Peers;
use crate::signals::{Hub, SourceKey};
use crate::telemetry::Telemetry;
use spinscale_activator::Activator;
use spinscale_core::duration;
use spinscale_core::policy::{self, AddressPolicy, HostOwnership};
use spinscale_core::spec::{InvalidMetadata, TargetSpec};

pub use routes::trigger_route;
use routes::{routed_by_triggers, settle_route};
use target::{Limits, Setup, Shared};
pub use target::{SourceProblem, StreamGuard, Target, TargetKey, TargetState};

/// Why a call's target was not served.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The trigger's metadata does not parse (under the config's defaults and profiles).
    #[error("{0}")]
    InvalidMetadata(#[from] InvalidMetadata),
    /// The metadata is larger than `limits.*` allows: bad input, not load.
    #[error("scalerMetadata has {actual} {what}, more than the {limit} allowed (limits.{setting})")]
    MetadataTooLarge {
        /// What is counted: `keys` or `bytes`.
        what: &'static str,
        /// How many the metadata has.
        actual: usize,
        /// How many the limit allows.
        limit: usize,
        /// The `limits` key that sets it, e.g. `maxMetadataKeys`.
        setting: &'static str,
    },
    /// `hosts`/`backend` without an activator, or a route the activator refuses.
    #[error("{0}")]
    Route(String),
    /// The server holds as many as `limits.*` allows.
    #[error("spinscale already holds {limit} {what} (limits.{setting}); refusing another")]
    Full {
        /// What is full, e.g. `targets`.
        what: &'static str,
        /// How many the limit allows.
        limit: usize,
        /// The `limits` key that sets it, e.g. `maxTargets`.
        setting: &'static str,
    },
}

/// A config that does not fit the live targets; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[error("the new config does not fit the live targets, so none of it is applied: {}", problems.join("; "))]
pub struct Rejected {
    /// One line per misfit, each naming the target or route and the key.
    pub problems: Vec<String>,
}

/// What a config reload changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Live targets whose spec, collectors or engine were replaced.
    pub targets_changed: usize,
    /// The collector settings changed, so every collector restarted with the new ones.
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
    /// Who may claim which host (`--watch-ingresses`); else the config's `activator.allowedHosts`.
    host_owners: OnceLock<Arc<dyn HostOwnership + Send + Sync>>,
    this: Weak<Registry>,
}

impl Registry {
    /// An empty registry under `config`, with its signal hub and telemetry.
    pub fn new(config: Config) -> Result<Arc<Self>, reqwest::Error> {
        let http = outbound::client(|| reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(90)))?;
        Ok(Arc::new_cyclic(|registry| {
            let this = registry.clone();
            let telemetry = Telemetry::new(Box::new(live::Live { registry: registry.clone() }));
            let max_body = config.limits.max_response_bytes.bytes();
            let hub = Hub::new(config.collectors.clone(), max_body, telemetry.clone(), http);
            Self {
                config: RwLock::new(Arc::new(config)),
                hub,
                targets: RwLock::new(HashMap::new()),
                epoch: Instant::now(),
                telemetry,
                open_streams: Arc::default(),
                activator: OnceLock::new(),
                peers: OnceLock::new(),
                host_owners: OnceLock::new(),
                this,
            }
        }))
    }

    /// The config of the moment (it changes on reload).
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The metrics it counts into and exports.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// The signal hub its targets' collectors run on.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// How many collectors run (one per distinct source).
    pub fn collectors(&self) -> usize {
        self.hub.running()
    }

    /// How many targets are live.
    pub fn len(&self) -> usize {
        self.targets.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether no target is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Open streams across all targets.
    pub fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::Relaxed)
    }

    /// Every live target, in no particular order.
    pub fn targets(&self) -> Vec<Arc<Target>> {
        self.targets.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
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
        if let Some(target) = self.targets.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key) {
            target.shared.last_seen_ms.store(now_ms, Ordering::Relaxed);
            return Ok(target.clone());
        }
        let parsed_with = self.config();
        let spec = Arc::new(self.parse_spec(&parsed_with, namespace, metadata)?);
        let mut targets = self.targets.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(target) = targets.get(&key) {
            return Ok(target.clone());
        }
        if targets.len() >= limits.max_targets {
            return Err(Refused::Full { what: "targets", limit: limits.max_targets, setting: "maxTargets" });
        }
        // Reloads hold the targets' lock, so the config is stable here; one that ran since the parse
        // above would have missed this target: parse again.
        let config = self.config();
        let spec = if Arc::ptr_eq(&config, &parsed_with) {
            spec
        } else {
            Arc::new(self.parse_spec(&config, namespace, metadata)?)
        };
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
        let targets = self.targets.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut specs = Vec::with_capacity(targets.len());
        let mut problems = Vec::new();
        for (key, target) in targets.iter() {
            let metadata: HashMap<String, String> = key.metadata.clone().into_iter().collect();
            match self.parse_spec(&new, &key.namespace, &metadata) {
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
        let old = std::mem::replace(
            &mut *self.config.write().unwrap_or_else(std::sync::PoisonError::into_inner),
            new.clone(),
        );
        if let Some(activator) = self.activator.get() {
            activator.set_limits(new.activator_limits());
        }
        let collectors_restarted =
            old.collectors != new.collectors || old.limits.max_response_bytes != new.limits.max_response_bytes;
        if collectors_restarted {
            self.hub.reconfigure(new.collectors.clone(), new.limits.max_response_bytes.bytes());
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
                let route_changed = target.spec().http != spec.http;
                target.setup.send_replace(Arc::new(self.setup(Arc::new(spec), &new)));
                targets_changed += 1;
                if route_changed && let Some(activator) = self.activator.get() {
                    // `defaults:` and `profiles:` reach the route too (holdTimeout, maxHeld, ...).
                    settle_route(activator, &targets, &new.routes, &target.id());
                }
            }
        }
        Ok(Reloaded { targets_changed, collectors_restarted })
    }

    /// Host claims are checked against `owners` from now on (set once, at start).
    pub fn set_host_owners(&self, owners: Arc<dyn HostOwnership + Send + Sync>) {
        let _ = self.host_owners.set(owners);
    }

    /// The trigger's spec under `config`, with its addresses checked against the operator's
    /// policy for a ScaledObject in `namespace`.
    fn parse_spec(
        &self,
        config: &Config,
        namespace: &str,
        metadata: &HashMap<String, String>,
    ) -> Result<TargetSpec, InvalidMetadata> {
        let mut spec = TargetSpec::parse(metadata, &*config.defaults_for(metadata)?)?;
        config.resolve_connection(&mut spec, namespace)?;
        let allowed_hosts = &config.activator.allowed_hosts;
        let hosts: Option<&dyn HostOwnership> = match self.host_owners.get() {
            Some(owners) => Some(owners.as_ref()),
            None => (!allowed_hosts.is_empty()).then_some(allowed_hosts),
        };
        let policy = AddressPolicy {
            allowed_sources: &config.limits.allowed_sources,
            allowed_backends: &config.activator.allowed_backends,
            hosts,
        };
        policy::check(&spec, metadata, namespace, &policy)?;
        Ok(spec)
    }

    /// Drops targets nobody asked about for `targets.idleTimeout` and that have no open stream.
    pub fn evict_idle(&self) -> usize {
        let config = self.config();
        let idle_timeout = config.targets.idle_timeout.0;
        let idle_ms = idle_timeout.as_millis() as u64;
        let now_ms = self.now_ms();
        let mut targets = self.targets.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = targets.len();
        let mut unrouted = HashSet::new();
        targets.retain(|key, t| {
            let last_seen = t.shared.last_seen_ms.load(Ordering::Relaxed);
            let keep = t.open_streams() > 0 || now_ms.saturating_sub(last_seen) < idle_ms;
            if !keep {
                info!(target = %key, "target dropped: not asked about for {}", duration::format(idle_timeout));
                if t.spec().http.is_some() {
                    unrouted.insert(t.id());
                }
            }
            keep
        });
        if let Some(activator) = self.activator.get() {
            // A route belongs to every live target that carries it: another trigger of the same
            // ScaledObject (an edited one) keeps it; the config's static route comes after them.
            for id in unrouted {
                settle_route(activator, &targets, &config.routes, &id);
            }
        }
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

pub(super) fn target_sources(spec: &TargetSpec) -> Vec<SourceKey> {
    let prometheus = spec.prometheus.clone().map(SourceKey::Prometheus);
    let scrape = spec.scrape.clone().map(SourceKey::Scrape);
    let kafka = spec.kafka.clone().map(SourceKey::Kafka);
    prometheus.into_iter().chain(scrape).chain(kafka).collect()
}
