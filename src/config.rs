//! The tuning file (`--config FILE`, YAML): trigger defaults, collector and target knobs.
//!
//! Every field has a built-in default, so an empty file (or none) is a valid config.
//! Unknown fields are errors: a typo in a config file must not pass silently.
//!
//! Within the crate it may use no other module (a leaf).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use spinscale_activator::ActivatorLimits;
use spinscale_core::duration::{self, Dur};
use spinscale_core::quantity::ByteSize;
use spinscale_core::spec as target;
use spinscale_core::spec::kafka_connection::KafkaConnection;
use spinscale_core::spec::prometheus_connection::PrometheusConnection;
use spinscale_core::spec::{InvalidMetadata, Problem};

/// The whole tuning config.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Defaults for trigger metadata keys (canonical names, e.g. `prometheusAddress`, `lagThreshold`).
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// Named sets of trigger-key defaults; a trigger picks one with `profile: NAME`. A profile's
    /// keys override `defaults`; the trigger's own keys override both.
    #[serde(default)]
    pub profiles: BTreeMap<String, BTreeMap<String, String>>,
    /// `collectors`: how often sources are polled, how long a request may take, when a reading is stale.
    #[serde(default)]
    pub collectors: CollectorSettings,
    /// `targets`: how targets are re-evaluated, waited for on their first call, and forgotten.
    #[serde(default)]
    pub targets: TargetSettings,
    /// Knobs of the predictive engine (idle-time model, forecast, schedules).
    #[serde(default)]
    pub engine: spinscale_core::engine::EngineSettings,
    /// `limits`: bounds on concurrent calls, streams, live targets and trigger metadata size.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Named Kafka connections (TLS, SASL; secrets in files), picked by `kafkaConnection: NAME`,
    /// each only for its `bootstrapServers` (and `namespaces`).
    #[serde(default)]
    pub kafka_connections: BTreeMap<String, KafkaConnection>,
    /// Named Prometheus connections (bearer token, basic auth, TLS, headers, SigV4; secrets in
    /// files), picked by `prometheusConnection: NAME`, each only for its `addresses` (and
    /// `namespaces`).
    #[serde(default)]
    pub prometheus_connections: BTreeMap<String, PrometheusConnection>,
    /// Activator routes that exist from the start, before KEDA's first call after a restart.
    /// A trigger with `hosts` for the same ScaledObject replaces its route.
    #[serde(default)]
    pub routes: Vec<StaticRoute>,
    /// `activator`: what the HTTP activator lets triggers route to.
    #[serde(default)]
    pub activator: ActivatorSettings,
}

/// One activator route of the config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticRoute {
    /// `namespace/name` of the ScaledObject whose app this is.
    pub scaled_object: String,
    /// `hosts`: exact host names or `*.suffix` patterns, matched on the `Host` without its port.
    pub hosts: Vec<String>,
    /// `pathPrefixes`: path prefixes under those hosts, matched on whole segments, the longest
    /// winning. Default: none, which means `/`.
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    /// The app's Service URL, e.g. `http://api-function.default.svc:80`.
    pub backend: String,
    /// `holdTimeout`: how long a request waits for a ready backend before a `504`. Default 20 s.
    pub hold_timeout: Option<Dur>,
    /// `maxHeld`: requests held at once for this app; one more gets a `503`. Default 1000.
    pub max_held: Option<usize>,
    /// `coldStartHeader`: add `x-spinscale-cold-start: <ms held>` to the responses of held
    /// requests. Default true.
    pub cold_start_header: Option<bool>,
}

/// The activator's policy and limits.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ActivatorSettings {
    /// `allowedBackends`: URL patterns (`*` a wildcard, e.g. `http://127.0.0.1:*`) a trigger's
    /// `backend` may name besides a Service of its own namespace. Link-local and metadata
    /// addresses must be listed exactly. Default: none.
    pub allowed_backends: Vec<String>,
    /// `allowedHosts`: namespace → host patterns (`*.shop.example.com`) its triggers may claim in
    /// `hosts`. Empty (and without `--watch-ingresses`): any namespace may claim any host, which
    /// suits a single tenant only. Default: empty.
    pub allowed_hosts: BTreeMap<String, Vec<String>>,
    /// `peerTokenFile`: the shared secret replicas send each other as `Authorization: Bearer`
    /// (re-read on every use, so a rotated Secret applies at once). Required with `--peers` or
    /// `--peer-service`; without it `/peer/demand` refuses every caller. Default: none.
    pub peer_token_file: Option<PathBuf>,
    /// `drainPeriod`: after SIGTERM, `/readyz` fails at once while the activator (and gRPC) keep
    /// serving this long, so load balancers stop sending before the listener closes. Default 15s.
    pub drain_period: Dur,
    /// `headerReadTimeout`: how long a client may take to send a request's head; also closes
    /// keep-alive connections idle that long. Default 10s.
    pub header_read_timeout: Dur,
    /// `maxHeaderBytes`: the longest request head (a number or a quantity); longer gets `431`.
    /// Default 64Ki.
    pub max_header_bytes: ByteSize,
}

impl Default for ActivatorSettings {
    fn default() -> Self {
        Self {
            allowed_backends: Vec::new(),
            allowed_hosts: BTreeMap::new(),
            peer_token_file: None,
            drain_period: Dur(Duration::from_secs(15)),
            header_read_timeout: Dur(ActivatorLimits::DEFAULT_HEADER_READ_TIMEOUT),
            max_header_bytes: ByteSize(ActivatorLimits::DEFAULT_MAX_HEADER_BYTES as u64),
        }
    }
}

/// Bounds that keep one misbehaving client from taking the server down for every app.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Unary calls in progress at once; one more is refused at once with `RESOURCE_EXHAUSTED`
    /// (load shedding: KEDA retries at its next poll, and the calls already admitted stay fast). Default 1024.
    pub max_concurrent_calls: usize,
    /// A unary call not answered by then ends with `DEADLINE_EXCEEDED`.
    /// Default 5 s; must be longer than `targets.firstReadingWait`.
    pub call_timeout: Dur,
    /// Keys in one trigger's metadata. Default 64.
    pub max_metadata_keys: usize,
    /// Bytes of one trigger's metadata (keys and values). Default 16 KiB.
    pub max_metadata_bytes: usize,
    /// Live targets; a new one beyond is refused with `RESOURCE_EXHAUSTED`. Default 50,000.
    pub max_targets: usize,
    /// Open streams; one more is refused with `RESOURCE_EXHAUSTED`. Default 100,000.
    pub max_streams: usize,
    /// `maxResponseBytes`: the longest body read from a Prometheus or scrape endpoint (a number or
    /// a quantity such as `8Mi`); a longer one fails that source, naming this limit. Default 8Mi.
    pub max_response_bytes: ByteSize,
    /// `allowedSources`: when not empty, every `serverAddress`, `scrapeUrl` and `bootstrapServers`
    /// entry must match one of these URL or host patterns (`*` a wildcard). Link-local and cloud
    /// metadata addresses are refused unless listed exactly. Default: empty (any other address).
    pub allowed_sources: Vec<String>,
    /// `maxHeldRequests`: requests the activator holds for all apps together; one more gets `503`
    /// with `Retry-After` at once (each route's `maxHeld` applies too). Default 10,000.
    pub max_held_requests: usize,
    /// `maxHeldBodyBytes`: request body bytes held requests declare or may have buffered, all apps
    /// together (a number or a quantity such as `64Mi`); over it `503` with `Retry-After`.
    /// Default 64Mi.
    pub max_held_body_bytes: ByteSize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 1024,
            call_timeout: Dur(Duration::from_secs(5)),
            max_metadata_keys: 64,
            max_metadata_bytes: 16 * 1024,
            max_targets: 50_000,
            max_streams: 100_000,
            max_response_bytes: ByteSize(8 * 1024 * 1024),
            allowed_sources: Vec::new(),
            max_held_requests: ActivatorLimits::DEFAULT_MAX_HELD_REQUESTS,
            max_held_body_bytes: ByteSize(ActivatorLimits::DEFAULT_MAX_HELD_BODY_BYTES),
        }
    }
}

/// How signal sources are polled.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CollectorSettings {
    /// Prometheus query interval. Default 2 s, at least 100 ms.
    pub prometheus_interval: Dur,
    /// Kafka offsets interval. Default 1 s, at least 100 ms.
    pub kafka_interval: Dur,
    /// Kafka tail watch: how long one fetch waits at the broker. Some brokers answer as soon as a
    /// record arrives; others (tansu, librdkafka's mock) hold every fetch for the whole wait, so
    /// it bounds the push delay. One fetch loop serves each broker: a short wait costs a fetch
    /// per broker, not per app. Default 20 ms (measured on tansu: docs/operations.md).
    pub tail_fetch_wait: Dur,
    /// Direct exposition scrape interval (`scrapeUrl`), down to 100 ms. Default 1 s.
    pub scrape_interval: Dur,
    /// The window a scraped counter's rate is averaged over (the first increase still shows at once).
    /// Default 10 s, at least `scrapeInterval`.
    pub scrape_window: Dur,
    /// Timeout of one upstream request (Prometheus query, Kafka request) unless the trigger sets `timeout`.
    /// Default 3 s.
    pub timeout: Dur,
    /// A source whose last good reading is older than this is unavailable, even without an error.
    /// Default 15 s; must be longer than the slowest interval.
    pub stale_after: Dur,
}

impl Default for CollectorSettings {
    fn default() -> Self {
        Self {
            prometheus_interval: Dur(Duration::from_secs(2)),
            kafka_interval: Dur(Duration::from_secs(1)),
            tail_fetch_wait: Dur(Duration::from_millis(20)),
            scrape_interval: Dur(Duration::from_secs(1)),
            scrape_window: Dur(Duration::from_secs(10)),
            // KEDA's own HTTP default (KEDA_HTTP_DEFAULT_TIMEOUT).
            timeout: Dur(Duration::from_secs(3)),
            stale_after: Dur(Duration::from_secs(15)),
        }
    }
}

/// The longest `targets.backfill`: a week of one point a minute is 10,080 points, within one
/// Prometheus `query_range` (at most 11,000 points).
pub const MAX_BACKFILL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How targets are evaluated and forgotten.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TargetSettings {
    /// Re-evaluation tick, on top of every new reading (catches staleness). Default 1 s.
    pub tick: Dur,
    /// A target KEDA has not asked about (and has no open stream) for this long is dropped. Default 10 min.
    pub idle_timeout: Dur,
    /// How long a new target's first call waits for a first reading (KEDA's HPA path has 3 s in all).
    /// Default 2 s, which is also the most it may be.
    pub first_reading_wait: Dur,
    /// Under `excludePersistentLag`, a commit unchanged this long is persistent (KEDA's default poll). Default 30 s.
    pub persistent_lag_after: Dur,
    /// A new predictive target with a Prometheus query learns this much of its past from
    /// `query_range` (one point a minute), so keep-alive and forecasts survive a restart. 0 disables.
    /// Default 24 h, at most a week.
    pub backfill: Dur,
}

impl Default for TargetSettings {
    fn default() -> Self {
        Self {
            tick: Dur(Duration::from_secs(1)),
            // Twenty of KEDA's default 30 s polls.
            idle_timeout: Dur(Duration::from_secs(600)),
            first_reading_wait: Dur(Duration::from_secs(2)),
            persistent_lag_after: Dur(Duration::from_secs(30)),
            backfill: Dur(Duration::from_secs(24 * 3600)),
        }
    }
}

/// The trigger key `key` names `name`, which `section` does not define; the error lists what it does.
fn unknown_name<'a>(
    key: &str,
    name: &str,
    what: &str,
    section: &str,
    defined: impl Iterator<Item = &'a String>,
) -> InvalidMetadata {
    let defined: Vec<&str> = defined.map(String::as_str).collect();
    let defined = if defined.is_empty() { "none".to_string() } else { defined.join(", ") };
    let message = format!("{name:?} is not {what}: {section} defines {defined}");
    InvalidMetadata { problems: vec![Problem { key: key.into(), message }], hints: vec![] }
}

/// Whether the Prometheus connection `name` may be used by a trigger at `address` (its
/// `serverAddress`) of a ScaledObject in `namespace`; else why not, naming the connection, the
/// address and the addresses it allows (addresses are not secrets).
fn prometheus_scope(
    name: &str,
    connection: &PrometheusConnection,
    address: &str,
    namespace: &str,
) -> Result<(), String> {
    if !connection.serves_namespace(namespace) {
        return Err(format!(
            "connection {name:?} is not for namespace {namespace:?} (prometheusConnections.{name}.namespaces)"
        ));
    }
    if connection.addresses.iter().any(|allowed| is_under(address, allowed)) {
        return Ok(());
    }
    Err(format!(
        "connection {name:?} is not for {address}: prometheusConnections.{name}.addresses allows {} (the same scheme, \
         host and port, and a path at or under one of theirs)",
        connection.addresses.join(", ")
    ))
}

/// Whether the URL `address` is `allowed` or under it: the same scheme, host and port, and a path
/// equal to `allowed`'s or extending it at a `/`. Both are read by the URL parser requests are
/// sent with (`..`, `%2e` and backslashes resolved as they will be), and an address with user
/// info, a query or a fragment is never under anything.
fn is_under(address: &str, allowed: &str) -> bool {
    let (Ok(address), Ok(allowed)) = (reqwest::Url::parse(address), reqwest::Url::parse(allowed)) else {
        return false;
    };
    let plain = |u: &reqwest::Url| u.username().is_empty() && u.password().is_none() && u.fragment().is_none();
    if !plain(&address) || !plain(&allowed) || address.query().is_some() || address.cannot_be_a_base() {
        return false;
    }
    let same_origin = address.scheme() == allowed.scheme()
        && address.host().is_some()
        && address.host() == allowed.host()
        && address.port_or_known_default() == allowed.port_or_known_default();
    let (path, prefix) = (address.path().trim_end_matches('/'), allowed.path().trim_end_matches('/'));
    same_origin && (path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')))
}

/// `namespace/name`, both parts non-empty, as `(namespace, name)`.
pub fn split_namespaced(text: &str) -> Option<(&str, &str)> {
    text.split_once('/').filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
}

impl StaticRoute {
    /// The activator's route, checked: `scaledObject` is `namespace/name`, the backend an http URL.
    pub fn to_route(&self) -> Result<spinscale_activator::Route, String> {
        if split_namespaced(&self.scaled_object).is_none() {
            return Err(format!("scaledObject: {:?} is not namespace/name", self.scaled_object));
        }
        let backend = spinscale_core::spec::parse_backend(&self.backend).map_err(|e| format!("backend: {e}"))?;
        let mut route = spinscale_activator::Route::new(self.scaled_object.clone(), self.hosts.clone(), backend);
        route.path_prefixes = self.path_prefixes.clone();
        route.hold_timeout = self.hold_timeout.map_or(route.hold_timeout, |d| d.0);
        route.max_held = self.max_held.unwrap_or(route.max_held);
        route.cold_start_header = self.cold_start_header.unwrap_or(route.cold_start_header);
        spinscale_activator::check_route(&route)?;
        Ok(route)
    }
}

/// Why a config (file or text) was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file, as given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not YAML of the config's shape: bad syntax, an unknown field, a value of the
    /// wrong type (a duration that does not parse).
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file, as given; empty when text was parsed ([`Config::parse`]).
        path: String,
        /// The YAML parser's message, with the line and column.
        message: String,
    },
    /// The YAML parsed but values are out of bounds or contradict each other.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file, as given; empty when text was parsed ([`Config::parse`]).
        path: String,
        /// Every problem, `; `-separated, each naming its key (`collectors.kafkaInterval: ...`).
        message: String,
    },
}

impl Config {
    /// The activator's limits under this config.
    pub fn activator_limits(&self) -> ActivatorLimits {
        ActivatorLimits {
            max_held_requests: self.limits.max_held_requests,
            max_held_body_bytes: self.limits.max_held_body_bytes.0,
            header_read_timeout: self.activator.header_read_timeout.0,
            max_header_bytes: self.activator.max_header_bytes.bytes(),
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse { path: shown.clone(), message },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid { path: shown.clone(), message },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml_ng::from_str(text)
                .map_err(|e| ConfigError::Parse { path: String::new(), message: e.to_string() })?
        };
        config.validate().map_err(|message| ConfigError::Invalid { path: String::new(), message })?;
        Ok(config)
    }

    /// The defaults a trigger's metadata falls back to: `defaults`, overlaid by its `profile`'s keys.
    pub fn defaults_for(
        &self,
        metadata: &HashMap<String, String>,
    ) -> Result<Cow<'_, BTreeMap<String, String>>, InvalidMetadata> {
        let Some(name) = metadata.get(target::PROFILE) else {
            return Ok(Cow::Borrowed(&self.defaults));
        };
        match self.profiles.get(name.trim()) {
            Some(keys) => Ok(Cow::Owned(self.merged_defaults(keys))),
            None => Err(unknown_name(target::PROFILE, name, "a profile", "the config", self.profiles.keys())),
        }
    }

    /// Fills in the settings of the Kafka and Prometheus connections a trigger of a ScaledObject in
    /// `namespace` names, and bounds its `queryInterval` by `collectors.prometheusInterval` (below)
    /// and `collectors.staleAfter`.
    ///
    /// Every trigger is tenant input: a connection is given only to a trigger whose address it is
    /// for (its `addresses`, `bootstrapServers`) in a namespace it serves (`namespaces`), so a
    /// tenant cannot have the operator's credentials sent to an address of its choosing.
    pub fn resolve_connection(&self, spec: &mut target::TargetSpec, namespace: &str) -> Result<(), InvalidMetadata> {
        let mut problems = Vec::new();
        if let Some(prometheus) = &mut spec.prometheus {
            if let Some(name) = &prometheus.connection {
                match self.prometheus_connections.get(name) {
                    Some(connection) => match prometheus_scope(name, connection, &prometheus.address, namespace) {
                        Ok(()) => prometheus.auth = Some(connection.for_requests()),
                        Err(message) => problems.push(Problem { key: target::PROMETHEUS_CONNECTION.into(), message }),
                    },
                    None => problems.extend(
                        unknown_name(
                            target::PROMETHEUS_CONNECTION,
                            name,
                            "a connection",
                            "the config's prometheusConnections",
                            self.prometheus_connections.keys(),
                        )
                        .problems,
                    ),
                }
            }
            if let Some(interval) = prometheus.query_interval {
                let (least, stale_after) = (self.collectors.prometheus_interval.0, self.collectors.stale_after.0);
                if interval >= stale_after {
                    let message = format!(
                        "{} must be shorter than the config's collectors.staleAfter ({}): a reading older than \
                         that is unavailable",
                        duration::format(interval),
                        duration::format(stale_after)
                    );
                    problems.push(Problem { key: target::QUERY_INTERVAL.into(), message });
                } else if interval < least {
                    spec.warnings.push(format!(
                        "{}: {} is below the config's collectors.prometheusInterval; the query runs every {}",
                        target::QUERY_INTERVAL,
                        duration::format(interval),
                        duration::format(least)
                    ));
                }
                // The default interval is no interval of its own: such sources share a query.
                prometheus.query_interval = (interval > least).then_some(interval);
            }
        }
        if let Some(kafka) = &mut spec.kafka
            && let Some(name) = &kafka.connection
        {
            match self.kafka_connections.get(name) {
                Some(connection) => {
                    let foreign = connection.foreign_servers(&kafka.bootstrap_servers);
                    let message = if !connection.serves_namespace(namespace) {
                        Some(format!(
                            "connection {name:?} is not for namespace {namespace:?} (kafkaConnections.{name}.namespaces)"
                        ))
                    } else if !foreign.is_empty() {
                        Some(format!(
                            "connection {name:?} is not for {}: kafkaConnections.{name}.bootstrapServers allows {}",
                            foreign.join(","),
                            connection.bootstrap_servers.join(", ")
                        ))
                    } else {
                        None
                    };
                    match message {
                        None => kafka.security = Some(connection.for_clients()),
                        Some(message) => problems.push(Problem { key: target::KAFKA_CONNECTION.into(), message }),
                    }
                }
                None => problems.extend(
                    unknown_name(
                        target::KAFKA_CONNECTION,
                        name,
                        "a connection",
                        "the config's kafkaConnections",
                        self.kafka_connections.keys(),
                    )
                    .problems,
                ),
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(InvalidMetadata { problems, hints: vec![] }) }
    }

    fn merged_defaults(&self, profile: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut merged = self.defaults.clone();
        merged.extend(profile.iter().map(|(k, v)| (k.clone(), v.clone())));
        merged
    }

    fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if let Err(e) = target::check_defaults(&self.defaults) {
            problems.extend(e.problems.iter().map(|p| format!("defaults.{p}")));
        }
        for (name, keys) in &self.profiles {
            if keys.contains_key(target::PROFILE) {
                problems.push(format!("profiles.{name}.{}: a profile cannot select another profile", target::PROFILE));
            }
            if let Err(e) = target::check_defaults(&self.merged_defaults(keys)) {
                let own = e.problems.iter().filter(|p| keys.contains_key(&p.key));
                problems.extend(own.map(|p| format!("profiles.{name}.{p}")));
            }
        }
        let at_least = |name: &str, value: Dur, min: Duration, problems: &mut Vec<String>| {
            if value.0 < min {
                problems.push(format!(
                    "{name}: {} is below the minimum {}",
                    duration::format(value.0),
                    duration::format(min)
                ));
            }
        };
        let c = &self.collectors;
        at_least("collectors.prometheusInterval", c.prometheus_interval, Duration::from_millis(100), &mut problems);
        at_least("collectors.kafkaInterval", c.kafka_interval, Duration::from_millis(100), &mut problems);
        at_least("collectors.tailFetchWait", c.tail_fetch_wait, Duration::from_millis(1), &mut problems);
        at_least("collectors.scrapeInterval", c.scrape_interval, Duration::from_millis(100), &mut problems);
        at_least("collectors.scrapeWindow", c.scrape_window, c.scrape_interval.0, &mut problems);
        at_least("collectors.timeout", c.timeout, Duration::from_millis(10), &mut problems);
        at_least("targets.tick", self.targets.tick, Duration::from_millis(100), &mut problems);
        at_least("targets.idleTimeout", self.targets.idle_timeout, Duration::from_secs(1), &mut problems);
        let slowest = c.prometheus_interval.0.max(c.kafka_interval.0).max(c.scrape_interval.0);
        if c.stale_after.0 <= slowest {
            problems.push(format!(
                "collectors.staleAfter: {} must be longer than the slowest collector interval ({})",
                duration::format(c.stale_after.0),
                duration::format(slowest)
            ));
        }
        if self.targets.backfill.0 > MAX_BACKFILL {
            problems.push(format!(
                "targets.backfill: {} is above the maximum {}",
                duration::format(self.targets.backfill.0),
                duration::format(MAX_BACKFILL)
            ));
        }
        if self.targets.first_reading_wait.0 > Duration::from_secs(2) {
            problems.push(format!(
                "targets.firstReadingWait: {} is above 2s (KEDA's HPA path allows 3 s for all calls)",
                duration::format(self.targets.first_reading_wait.0)
            ));
        }
        problems.extend(self.engine.problems());
        for (name, connection) in &self.kafka_connections {
            problems.extend(connection.problems(name));
        }
        for (name, connection) in &self.prometheus_connections {
            problems.extend(connection.problems(name));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if let Err(e) = route.to_route() {
                problems.push(format!("routes[{i}]: {e}"));
            }
        }
        let l = &self.limits;
        for (name, value) in [
            ("maxConcurrentCalls", l.max_concurrent_calls),
            ("maxMetadataKeys", l.max_metadata_keys),
            ("maxMetadataBytes", l.max_metadata_bytes),
            ("maxTargets", l.max_targets),
            ("maxStreams", l.max_streams),
        ] {
            if value == 0 {
                problems.push(format!("limits.{name}: must be at least 1"));
            }
        }
        if l.call_timeout.0 <= self.targets.first_reading_wait.0 {
            problems.push(format!(
                "limits.callTimeout: {} must be longer than targets.firstReadingWait ({})",
                duration::format(l.call_timeout.0),
                duration::format(self.targets.first_reading_wait.0)
            ));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_built_in_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::parse("{}").unwrap(), Config::default());
    }

    #[test]
    fn a_full_file_parses() {
        let config = Config::parse(
            "defaults:\n  prometheusAddress: http://prometheus.monitoring:9090\n  lagThreshold: \"20\"\n\
             collectors:\n  prometheusInterval: 1s\n  kafkaInterval: 500ms\n  staleAfter: 5s\n\
             targets:\n  idleTimeout: 5m\n",
        )
        .unwrap();
        assert_eq!(config.defaults["lagThreshold"], "20");
        assert_eq!(config.collectors.kafka_interval, Dur(Duration::from_millis(500)));
        assert_eq!(config.targets.idle_timeout, Dur(Duration::from_secs(300)));
        assert_eq!(config.collectors.timeout, CollectorSettings::default().timeout);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("collectors:\n  kafkaIntervall: 1s\n", "kafkaIntervall"),
            ("collectors:\n  kafkaInterval: soon\n", "soon"),
            ("collectors:\n  kafkaInterval: 10ms\n", "collectors.kafkaInterval: 10ms is below the minimum 100ms"),
            ("collectors:\n  staleAfter: 1s\n", "collectors.staleAfter"),
            ("targets:\n  firstReadingWait: 5s\n", "targets.firstReadingWait"),
            ("defaults:\n  lagTreshold: \"5\"\n", "defaults.lagTreshold: is not a trigger key"),
            ("defaults:\n  targetRps: \"0\"\n", "defaults.targetRps: value \"0\""),
            ("engine:\n  keepAlive: 25h\n", "engine.keepAlive: 90000s is above engine.maxKeepAlive"),
            ("engine:\n  coldStartBudget: 1.5\n", "engine.coldStartBudget: 1.5 is not in [0, 1]"),
            ("engine:\n  coldStartWorth: 0s\n", "engine.coldStartWorth: must be above 0s"),
            ("engine:\n  tailMargins: 0.2\n", "tailMargins"),
            ("profiles:\n  batch:\n    lagThreshold: \"-1\"\n", "profiles.batch.lagThreshold: value \"-1\""),
            ("profiles:\n  batch:\n    lagTreshold: \"5\"\n", "profiles.batch.lagTreshold: is not a trigger key"),
            ("profiles:\n  batch:\n    profile: web\n", "profiles.batch.profile: a profile cannot select"),
            ("limits:\n  maxTargets: 0\n", "limits.maxTargets: must be at least 1"),
            (
                "prometheusConnections:\n  amp:\n    sigv4: {region: eu-west-1}\n    bearerTokenFile: /nonexistent/t\n    \
                 addresses: [https://p]\n",
                "prometheusConnections.amp.bearerTokenFile: bearerTokenFile and sigv4 each set the Authorization",
            ),
            ("prometheusConnections:\n  amp:\n    sigv4: {regio: x}\n", "unknown field `regio`"),
            (
                "limits:\n  callTimeout: 1s\n",
                "limits.callTimeout: 1s must be longer than targets.firstReadingWait (2s)",
            ),
        ];
        for (text, wanted) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{text:?}: {err}");
        }
    }

    /// A trigger's spec from the query `up` at `address` plus `pairs`.
    fn prometheus_spec(config: &Config, address: &str, pairs: &[(&str, &str)]) -> target::TargetSpec {
        let mut meta: HashMap<String, String> =
            [("query", "up"), ("serverAddress", address)].map(|(k, v)| (k.into(), v.into())).into();
        meta.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        target::TargetSpec::parse(&meta, &config.defaults).unwrap()
    }

    #[test]
    fn a_trigger_gets_its_prometheus_connection_and_a_bounded_query_interval() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        let config = Config::parse(&format!(
            "collectors:\n  prometheusInterval: 2s\n  staleAfter: 90s\n\
             prometheusConnections:\n  thanos:\n    bearerTokenFile: {}/token\n    addresses: [\"https://p:9090\"]\n",
            dir.path().display()
        ))
        .unwrap();
        let spec = |pairs: &[(&str, &str)]| prometheus_spec(&config, "https://p:9090", pairs);
        let mut slow = spec(&[("prometheusConnection", "thanos"), ("queryInterval", "60s")]);
        config.resolve_connection(&mut slow, "default").unwrap();
        let prometheus = slow.prometheus.unwrap();
        let thanos = &config.prometheus_connections["thanos"];
        assert_eq!(prometheus.auth, Some(thanos.for_requests()));
        assert_eq!(prometheus.auth.unwrap().bearer_token_file, thanos.bearer_token_file);
        assert_eq!(prometheus.query_interval, Some(Duration::from_secs(60)));

        let mut fast = spec(&[("queryInterval", "500ms")]);
        config.resolve_connection(&mut fast, "default").unwrap();
        assert_eq!(fast.prometheus.unwrap().query_interval, None, "raised to the default: shares its query");
        assert!(fast.warnings.iter().any(|w| w.contains("queryInterval: 500ms is below")), "{:?}", fast.warnings);

        let mut bad = spec(&[("prometheusConnection", "amp"), ("queryInterval", "2m")]);
        let err = config.resolve_connection(&mut bad, "default").unwrap_err().to_string();
        assert!(
            err.contains(
                "prometheusConnection: \"amp\" is not a connection: the config's prometheusConnections defines thanos"
            ),
            "{err}"
        );
        assert!(
            err.contains("queryInterval: 120s must be shorter than the config's collectors.staleAfter (90s)"),
            "{err}"
        );
    }

    #[test]
    fn a_prometheus_connection_goes_only_to_its_addresses_and_namespaces() {
        let config = Config::parse(
            "prometheusConnections:\n  thanos:\n    sigv4: {region: eu-west-1}\n    \
             addresses: [\"https://thanos.example:9091/tenant-a/\", \"https://mimir.example\"]\n  \
             shop:\n    sigv4: {region: eu-west-1}\n    addresses: [\"https://mimir.example\"]\n    namespaces: [shop]\n",
        )
        .unwrap();
        let resolve = |address: &str, connection: &str, namespace: &str| {
            let mut spec = prometheus_spec(&config, address, &[("prometheusConnection", connection)]);
            config.resolve_connection(&mut spec, namespace).map(|()| spec.prometheus.unwrap().auth.is_some())
        };
        for allowed in [
            "https://thanos.example:9091/tenant-a",
            "https://thanos.example:9091/tenant-a/",
            "https://THANOS.example:9091/tenant-a/prometheus",
            "https://mimir.example",
            "https://mimir.example:443/prometheus",
        ] {
            assert_eq!(resolve(allowed, "thanos", "default"), Ok(true), "{allowed}");
        }
        for refused in [
            "https://evil.example",
            "http://thanos.example:9091/tenant-a",
            "https://thanos.example:9092/tenant-a",
            "https://thanos.example:9091",
            "https://thanos.example:9091/tenant-ab",
            "https://thanos.example:9091/tenant-b",
            "https://thanos.example:9091/tenant-a/../tenant-b",
            "https://thanos.example:9091/tenant-a/%2e%2e/tenant-b",
            "https://thanos.example:9091/tenant-a?x=1",
            "https://mimir.example@evil.example",
            "https://mimir.example.evil.example",
            "https://mimir.example:8443",
        ] {
            let err = resolve(refused, "thanos", "default").unwrap_err().to_string();
            assert!(err.contains(": prometheusConnection: connection \"thanos\" is not for "), "{refused}: {err}");
            assert!(
                err.contains(
                    "prometheusConnections.thanos.addresses allows https://thanos.example:9091/tenant-a/, \
                     https://mimir.example"
                ),
                "{refused}: {err}"
            );
        }
        let err = resolve("https://evil.example/x", "thanos", "default").unwrap_err().to_string();
        assert!(err.contains("is not for https://evil.example/x:"), "the trigger's address is named: {err}");
        assert_eq!(resolve("https://mimir.example", "shop", "shop"), Ok(true));
        let err = resolve("https://mimir.example", "shop", "default").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid scaler metadata: prometheusConnection: connection \"shop\" is not for namespace \"default\" \
             (prometheusConnections.shop.namespaces)"
        );
    }

    #[test]
    fn a_kafka_connection_goes_only_to_its_brokers_and_namespaces() {
        let config = Config::parse(
            "kafkaConnections:\n  prod:\n    bootstrapServers: [\"kafka-0.kafka:9092\", \"kafka-1.kafka:9092\"]\n  \
             shop:\n    bootstrapServers: [\"kafka-0.kafka:9092\"]\n    namespaces: [shop]\n",
        )
        .unwrap();
        let resolve = |servers: &str, connection: &str, namespace: &str| {
            let meta: HashMap<String, String> =
                [("bootstrapServers", servers), ("consumerGroup", "g"), ("kafkaConnection", connection)]
                    .map(|(k, v)| (k.into(), v.into()))
                    .into();
            let mut spec = target::TargetSpec::parse(&meta, &config.defaults).unwrap();
            config.resolve_connection(&mut spec, namespace).map(|()| spec.kafka.unwrap().security)
        };
        let security = resolve("kafka-1.kafka:9092, kafka-0.kafka:9092", "prod", "default").unwrap();
        assert_eq!(security, Some(config.kafka_connections["prod"].for_clients()));
        let err = resolve("kafka-0.kafka:9092,evil.example:9092", "prod", "default").unwrap_err().to_string();
        assert!(
            err.contains(
                "kafkaConnection: connection \"prod\" is not for evil.example:9092: \
                 kafkaConnections.prod.bootstrapServers allows kafka-0.kafka:9092, kafka-1.kafka:9092"
            ),
            "{err}"
        );
        assert!(resolve("kafka-0.kafka:9092", "shop", "shop").is_ok());
        let err = resolve("kafka-0.kafka:9092", "shop", "default").unwrap_err().to_string();
        assert!(err.contains("connection \"shop\" is not for namespace \"default\""), "{err}");
    }

    #[test]
    fn a_connection_without_its_addresses_is_a_config_error() {
        let err = Config::parse(
            "prometheusConnections:\n  thanos: {sigv4: {region: eu-west-1}}\nkafkaConnections:\n  prod: {}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("prometheusConnections.thanos.addresses: is required"), "{err}");
        assert!(err.contains("kafkaConnections.prod.bootstrapServers: is required"), "{err}");
    }

    #[test]
    fn a_profile_overlays_the_defaults_and_the_trigger_overlays_both() {
        let config = Config::parse(
            "defaults:\n  lagThreshold: \"20\"\n  targetRps: \"5\"\n\
             profiles:\n  batch:\n    lagThreshold: \"500\"\n",
        )
        .unwrap();
        let meta = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        let plain = config.defaults_for(&meta(&[])).unwrap();
        assert_eq!(plain["lagThreshold"], "20");
        let batch = config.defaults_for(&meta(&[("profile", "batch")])).unwrap();
        assert_eq!((batch["lagThreshold"].as_str(), batch["targetRps"].as_str()), ("500", "5"));
        let unknown = config.defaults_for(&meta(&[("profile", "web")])).unwrap_err().to_string();
        assert!(unknown.contains("profile: \"web\" is not a profile: the config defines batch"), "{unknown}");
    }
}
