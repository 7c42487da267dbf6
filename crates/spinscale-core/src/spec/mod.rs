//! `ScaledObjectRef.scalerMetadata` → a typed, validated [`TargetSpec`].
//!
//! Every key is a documented const. Values come from the trigger's metadata first, then from the
//! configured defaults. All problems are collected before refusing, and each names the key, the
//! value and what is allowed, so one round trip shows a user everything to fix.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

pub mod kafka_connection;
pub mod schedule;

use crate::{duration, quantity};
use kafka_connection::KafkaConnection;
use schedule::Schedule;

// === keys ===

/// KEDA's own key: where spinscale listens. Passed through, not used.
pub const SCALER_ADDRESS: &str = "scalerAddress";
/// Prometheus base URL; `/api/v1/query` is appended. Alias: KEDA's `serverAddress`.
pub const PROMETHEUS_ADDRESS: &str = "prometheusAddress";
/// PromQL returning one series: the app's request rate in requests per second.
pub const QUERY: &str = "query";
/// Requests per second one replica should serve (> 0). Alias: KEDA's `threshold`.
pub const TARGET_RPS: &str = "targetRps";
/// Rate above which the app is active (strict `>`, ≥ 0). Alias: KEDA's `activationThreshold`.
pub const ACTIVATION_RPS: &str = "activationRps";
/// As KEDA's prometheus scaler: an empty query result counts as 0 instead of an error.
pub const IGNORE_NULL_VALUES: &str = "ignoreNullValues";
/// Prometheus request timeout: a Go duration or integer milliseconds (as KEDA).
pub const TIMEOUT: &str = "timeout";
/// Prometheus request headers, `k1=v1,k2=v2` (e.g. `X-Scope-OrgID=team-a`).
pub const CUSTOM_HEADERS: &str = "customHeaders";
/// Extra Prometheus query parameters, `k1=v1,k2=v2`.
pub const QUERY_PARAMETERS: &str = "queryParameters";
/// Thanos-style tenancy: sent as `namespace=<value>` with the query.
pub const NAMESPACE: &str = "namespace";
/// Exposition endpoints to scrape directly: one URL or a comma list (their counters are summed).
pub const SCRAPE_URL: &str = "scrapeUrl";
/// The counter to read from `scrapeUrl` (OpenMetrics family names find their `_total` samples).
pub const SCRAPE_METRIC: &str = "scrapeMetric";
/// Label matchers for `scrapeMetric`, `k=v,k2=v2` (all must match).
pub const SCRAPE_LABELS: &str = "scrapeLabels";
/// Kafka bootstrap servers, a comma list.
pub const BOOTSTRAP_SERVERS: &str = "bootstrapServers";
/// The consumer group whose lag is measured. spinscale never joins or commits for it.
pub const CONSUMER_GROUP: &str = "consumerGroup";
/// Topic, or a comma list of topics; empty means every topic the group has committed offsets for.
pub const TOPIC: &str = "topic";
/// Partitions to count, e.g. `0,1,4-6`; needs `topic`.
pub const PARTITION_LIMITATION: &str = "partitionLimitation";
/// Lag one replica should handle (> 0).
pub const LAG_THRESHOLD: &str = "lagThreshold";
/// Lag above which the app is active (strict `>`, ≥ 0).
pub const ACTIVATION_LAG_THRESHOLD: &str = "activationLagThreshold";
/// `latest` or `earliest`: how a partition without a committed offset counts (KEDA's rules).
pub const OFFSET_RESET_POLICY: &str = "offsetResetPolicy";
/// Allow more replicas than partitions.
pub const ALLOW_IDLE_CONSUMERS: &str = "allowIdleConsumers";
/// Lag on a partition whose commit has not moved does not drive 1→N (it still keeps the app active).
pub const EXCLUDE_PERSISTENT_LAG: &str = "excludePersistentLag";
/// Cap replicas at the number of partitions that have lag; needs `topic`.
pub const LIMIT_TO_PARTITIONS_WITH_LAG: &str = "limitToPartitionsWithLag";
/// A partition without a committed offset counts 0 (instead of 1, or the whole log).
pub const SCALE_TO_ZERO_ON_INVALID_OFFSET: &str = "scaleToZeroOnInvalidOffset";
/// Round the lag up to a replica count that divides the partitions evenly; needs `topic`.
pub const ENSURE_EVEN_DISTRIBUTION: &str = "ensureEvenDistributionOfPartitions";
/// A named connection of the config's `kafkaConnections` (TLS, SASL, secrets in files).
pub const KAFKA_CONNECTION: &str = "kafkaConnection";
/// KEDA's Kafka TLS switch; credentials cannot travel in metadata, so only `disable` (without a
/// `kafkaConnection`, which decides instead).
pub const KAFKA_TLS: &str = "tls";
/// KEDA's Kafka SASL mechanism; as `tls`: only `none` without a `kafkaConnection`.
pub const KAFKA_SASL: &str = "sasl";
/// `combined` (one metric: desired replicas) or `separate` (one metric per signal).
pub const METRICS: &str = "metrics";
/// `off` (reactive only), `idle` (idle-time keep-alive and pre-warm) or `full` (idle + rate forecast).
pub const PREDICTIVE: &str = "predictive";
/// How long the app takes from "activate" to ready (Go duration): pre-warms start this much earlier.
pub const LEAD_TIME: &str = "leadTime";
/// Cron expressions of known wake times, `;`-separated (e.g. `0 9 * * 1-5; 30 17 * * *`), UTC.
pub const SCHEDULE: &str = "schedule";
/// Memory of one instance of the app (a Kubernetes quantity, e.g. `128Mi`): what its idle time costs.
pub const INSTANCE_MEMORY: &str = "instanceMemory";

/// Hostnames the activator routes to this app (comma list; exact, or `*.suffix`), matched on the
/// `Host` header without its port. With `backend`, a signal of its own: no `query` needed.
pub const HOSTS: &str = "hosts";
/// Path prefixes under those hosts (comma list, each starting with `/`); the longest wins. Default `/`.
pub const PATH_PREFIXES: &str = "pathPrefixes";
/// The app's Service URL the activator forwards to, e.g. `http://webhook-handler.default.svc:80`.
pub const BACKEND: &str = "backend";
/// How long the activator holds a request while the app starts; then `504`. Default 20s.
pub const HOLD_TIMEOUT: &str = "holdTimeout";
/// Requests held at once per app; more get `503` with `Retry-After`. Default 1000.
pub const MAX_HELD: &str = "maxHeld";
/// Add `x-spinscale-cold-start: <ms held>` to responses that were held. Default true.
pub const COLD_START_HEADER: &str = "coldStartHeader";

/// Selects a named set of defaults from the config's `profiles` (handled by the registry, not here).
pub const PROFILE: &str = "profile";

/// KEDA's names for spinscale keys, so values of KEDA's `prometheus` trigger carry over.
pub const ALIASES: [(&str, &str); 3] =
    [(PROMETHEUS_ADDRESS, "serverAddress"), (TARGET_RPS, "threshold"), (ACTIVATION_RPS, "activationThreshold")];

/// Keys KEDA itself reads from the same map (or that KEDA users commonly leave in); accepted quietly.
const PASSTHROUGH_KEYS: [&str; 5] = [SCALER_ADDRESS, "enableTLS", "unsafeSsl", "metricName", "metricType"];

/// Every key spinscale reads, for defaults validation and misspelling hints.
pub const KEYS: [&str; 38] = [
    PROMETHEUS_ADDRESS,
    SCRAPE_URL,
    SCRAPE_METRIC,
    SCRAPE_LABELS,
    QUERY,
    TARGET_RPS,
    ACTIVATION_RPS,
    IGNORE_NULL_VALUES,
    TIMEOUT,
    CUSTOM_HEADERS,
    QUERY_PARAMETERS,
    NAMESPACE,
    BOOTSTRAP_SERVERS,
    CONSUMER_GROUP,
    TOPIC,
    PARTITION_LIMITATION,
    LAG_THRESHOLD,
    ACTIVATION_LAG_THRESHOLD,
    OFFSET_RESET_POLICY,
    ALLOW_IDLE_CONSUMERS,
    EXCLUDE_PERSISTENT_LAG,
    LIMIT_TO_PARTITIONS_WITH_LAG,
    SCALE_TO_ZERO_ON_INVALID_OFFSET,
    ENSURE_EVEN_DISTRIBUTION,
    HOSTS,
    PATH_PREFIXES,
    BACKEND,
    HOLD_TIMEOUT,
    MAX_HELD,
    COLD_START_HEADER,
    KAFKA_CONNECTION,
    KAFKA_TLS,
    KAFKA_SASL,
    METRICS,
    PREDICTIVE,
    LEAD_TIME,
    SCHEDULE,
    INSTANCE_MEMORY,
];

// === defaults ===

/// As KEDA's prometheus scaler: an empty result is 0 (the query may legitimately match nothing at zero).
pub const DEFAULT_IGNORE_NULL_VALUES: bool = true;
/// Requests per second per replica when neither the trigger nor the config says.
pub const DEFAULT_TARGET_RPS: f64 = 10.0;
/// KEDA's kafka scaler default.
pub const DEFAULT_LAG_THRESHOLD: f64 = 10.0;
/// Reactive only unless asked: a keep-alive on top of KEDA's own `cooldownPeriod` (300 s by default)
/// and pre-warms from a history that restarts empty would hold apps up for reasons a user cannot see
/// in their ScaledObject. Set `predictive` per trigger, or `defaults.predictive` in the config.
pub const DEFAULT_PREDICTIVE: PredictiveMode = PredictiveMode::Off;
/// A SpinApp pod's typical time from scale-up to ready (scheduling, image pull from cache, Wasm start).
pub const DEFAULT_LEAD_TIME: Duration = Duration::from_secs(3);

// === spec ===

/// A validated trigger: its signal sources and the rules that turn readings into a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSpec {
    pub prometheus: Option<PrometheusSource>,
    pub scrape: Option<ScrapeSource>,
    pub kafka: Option<KafkaSource>,
    /// The activator's route: requests to these hosts are counted (the rate) and held at zero.
    pub http: Option<HttpRoute>,
    pub rate: RateRules,
    pub lag: LagRules,
    pub metrics: MetricsMode,
    pub predictive: PredictiveSpec,
    /// Likely mistakes that are not errors (misspelt keys, ignored options), logged on registration.
    pub warnings: Vec<String>,
}

/// Where the activator routes an app's requests, and how it holds them at zero.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRoute {
    pub hosts: Vec<String>,
    pub path_prefixes: Vec<String>,
    pub backend: http::Uri,
    pub hold_timeout: Duration,
    pub max_held: usize,
    pub cold_start_header: bool,
}

impl HttpRoute {
    /// How long a request waits for a ready backend when `holdTimeout` is not given.
    pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(20);
    /// How many requests may wait at once when `maxHeld` is not given.
    pub const DEFAULT_MAX_HELD: usize = 1000;
}

/// A backend URL the activator can forward to: `http://` with a host.
pub fn parse_backend(text: &str) -> Result<http::Uri, String> {
    match text.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Ok(uri),
        _ => Err(format!("{text:?} is not an http:// URL with a host")),
    }
}

/// One Prometheus instant query. Equal values share one collector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PrometheusSource {
    pub address: String,
    pub query: String,
    pub ignore_null_values: bool,
    /// Per-request timeout; `None` = the collector default.
    pub timeout: Option<Duration>,
    pub headers: Vec<(String, String)>,
    pub query_parameters: Vec<(String, String)>,
    pub namespace: Option<String>,
}

/// A counter scraped from exposition endpoints. Equal values share one collector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScrapeSource {
    pub urls: Vec<String>,
    pub metric: String,
    pub labels: Vec<(String, String)>,
}

/// One consumer group's offsets on a set of topics. Equal values share one collector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KafkaSource {
    pub bootstrap_servers: String,
    pub consumer_group: String,
    /// Empty: every topic the group has committed offsets for.
    pub topics: Vec<String>,
    /// Partitions to keep (sorted, deduplicated); `None` = all.
    pub partition_limitation: Option<Vec<i32>>,
    /// `kafkaConnection`: the name of the config's connection to use.
    pub connection: Option<String>,
    /// That connection's settings, filled in by the registry from the config.
    pub security: Option<KafkaConnection>,
}

/// Request-rate rules.
#[derive(Clone, Debug, PartialEq)]
pub struct RateRules {
    pub target_rps: f64,
    pub activation_rps: f64,
}

/// KEDA's kafka scaler rules (KEDA.md §4).
#[derive(Clone, Debug, PartialEq)]
pub struct LagRules {
    pub lag_threshold: f64,
    pub activation_lag_threshold: f64,
    pub offset_reset_policy: OffsetResetPolicy,
    pub allow_idle_consumers: bool,
    pub exclude_persistent_lag: bool,
    pub limit_to_partitions_with_lag: bool,
    pub scale_to_zero_on_invalid_offset: bool,
    pub ensure_even_distribution: bool,
}

impl Default for LagRules {
    fn default() -> Self {
        Self {
            lag_threshold: DEFAULT_LAG_THRESHOLD,
            activation_lag_threshold: 0.0,
            offset_reset_policy: OffsetResetPolicy::Latest,
            allow_idle_consumers: false,
            exclude_persistent_lag: false,
            limit_to_partitions_with_lag: false,
            scale_to_zero_on_invalid_offset: false,
            ensure_even_distribution: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetResetPolicy {
    Latest,
    Earliest,
}

/// What the engine may do beyond the reactive floor.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictiveSpec {
    pub mode: PredictiveMode,
    pub lead_time: Duration,
    pub schedule: Option<Schedule>,
    /// Memory of one instance, bytes: what an idle instance costs (`None`: the engine's 1 GiB reference).
    pub instance_memory: Option<u64>,
}

impl Default for PredictiveSpec {
    fn default() -> Self {
        Self { mode: DEFAULT_PREDICTIVE, lead_time: DEFAULT_LEAD_TIME, schedule: None, instance_memory: None }
    }
}

/// The `predictive` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PredictiveMode {
    /// The reactive floor alone.
    Off,
    /// Plus the idle-time model: keep-alive after activity, pre-warm before predictable activity.
    Idle,
    /// Plus the rate forecast (Holt with damped trend and a daily profile) for activation and 1→N.
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsMode {
    /// One metric, `spinscale-replicas`, target 1: the desired replica count.
    Combined,
    /// `spinscale-rps` and `spinscale-lag` in natural units; the HPA takes the max.
    Separate,
}

// === errors ===

/// One bad key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Everything wrong with one trigger's metadata, plus hints about likely misspellings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct InvalidMetadata {
    pub problems: Vec<Problem>,
    pub hints: Vec<String>,
}

impl fmt::Display for InvalidMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid scaler metadata: ")?;
        let all: Vec<String> = self.problems.iter().map(Problem::to_string).chain(self.hints.iter().cloned()).collect();
        write!(f, "{}", all.join("; "))
    }
}

// === parsing ===

impl TargetSpec {
    /// Parses a trigger's metadata, falling back to `defaults` (canonical key names) for keys it lacks.
    pub fn parse(
        metadata: &HashMap<String, String>,
        defaults: &BTreeMap<String, String>,
    ) -> Result<Self, InvalidMetadata> {
        let mut r = Reader { metadata, defaults, problems: Vec::new(), warnings: Vec::new() };
        let spec = r.spec();
        let hints = misspelling_hints(metadata.keys().map(String::as_str));
        match spec {
            Some(spec) if r.problems.is_empty() => {
                let mut warnings = r.warnings;
                warnings.extend(hints);
                Ok(TargetSpec { warnings, ..spec })
            }
            _ => Err(InvalidMetadata { problems: r.problems, hints }),
        }
    }

    /// The metric names this target reports, with their HPA targets, in a stable order.
    pub fn metric_targets(&self) -> Vec<(MetricName, f64)> {
        match self.metrics {
            MetricsMode::Combined => vec![(MetricName::Replicas, 1.0)],
            MetricsMode::Separate => {
                let mut specs = Vec::with_capacity(2);
                if self.prometheus.is_some() || self.scrape.is_some() || self.http.is_some() {
                    specs.push((MetricName::Rps, self.rate.target_rps));
                }
                if self.kafka.is_some() {
                    specs.push((MetricName::Lag, self.lag.lag_threshold));
                }
                specs
            }
        }
    }
}

/// The metric names spinscale reports: lowercase `[a-z0-9-]`, stable across calls and releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricName {
    Replicas,
    Rps,
    Lag,
}

impl MetricName {
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricName::Replicas => "spinscale-replicas",
            MetricName::Rps => "spinscale-rps",
            MetricName::Lag => "spinscale-lag",
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
    let mut r = Reader { metadata: &empty, defaults, problems: Vec::new(), warnings: Vec::new() };
    r.spec();
    // Defaults alone need not name a signal source; every other problem is real.
    problems.extend(r.problems.into_iter().filter(|p| p.key != SOURCE_KEY));
    let hints = misspelling_hints(defaults.keys().map(String::as_str));
    if problems.is_empty() { Ok(()) } else { Err(InvalidMetadata { problems, hints }) }
}

const SOURCE_KEY: &str = "query|scrapeUrl|bootstrapServers";

struct Reader<'a> {
    metadata: &'a HashMap<String, String>,
    defaults: &'a BTreeMap<String, String>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Reader<'_> {
    fn spec(&mut self) -> Option<TargetSpec> {
        let prometheus = self.prometheus();
        let scrape = self.scrape();
        let kafka = self.kafka();
        let http = self.http();
        let rate = RateRules {
            target_rps: self.number(TARGET_RPS, DEFAULT_TARGET_RPS, Bound::Positive),
            activation_rps: self.number(ACTIVATION_RPS, 0.0, Bound::NonNegative),
        };
        let lag = self.lag_rules(kafka.as_ref());
        let metrics = match self.choice(METRICS, &["combined", "separate"]) {
            Some("separate") => MetricsMode::Separate,
            _ => MetricsMode::Combined,
        };
        let predictive = self.predictive();
        let source_keys = [
            QUERY,
            PROMETHEUS_ADDRESS,
            "serverAddress",
            SCRAPE_URL,
            SCRAPE_METRIC,
            BOOTSTRAP_SERVERS,
            CONSUMER_GROUP,
            HOSTS,
            BACKEND,
        ];
        let no_source = prometheus.is_none() && scrape.is_none() && kafka.is_none() && http.is_none();
        if no_source && !self.has_problem_for(&source_keys) {
            self.problem(
                SOURCE_KEY,
                "no signal source: set `query` (Prometheus request rate), `scrapeUrl` and `scrapeMetric` (a counter \
                 scraped directly), `bootstrapServers` and `consumerGroup` (Kafka lag) or `hosts` and `backend` \
                 (requests through the activator)",
            );
        }
        Some(TargetSpec { prometheus, scrape, kafka, http, rate, lag, metrics, predictive, warnings: Vec::new() })
    }

    fn predictive(&mut self) -> PredictiveSpec {
        let mode = match self.choice(PREDICTIVE, &["off", "idle", "full"]) {
            Some("idle") => PredictiveMode::Idle,
            Some("full") => PredictiveMode::Full,
            Some(_) => PredictiveMode::Off,
            None => DEFAULT_PREDICTIVE,
        };
        let lead_time = match self.text(LEAD_TIME).map(|raw| (duration::parse(&raw), raw)) {
            None => DEFAULT_LEAD_TIME,
            Some((Ok(d), _)) if d <= Duration::from_secs(3600) => d,
            Some((Ok(_), raw)) => {
                self.problem(LEAD_TIME, format!("value {raw:?} is above the maximum 1h"));
                DEFAULT_LEAD_TIME
            }
            Some((Err(e), raw)) => {
                self.problem(LEAD_TIME, format!("value {raw:?} is not a duration (e.g. 3s, 500ms): {e}"));
                DEFAULT_LEAD_TIME
            }
        };
        let schedule = self.text(SCHEDULE).and_then(|raw| match Schedule::parse(&raw) {
            Ok(s) => Some(s),
            Err(e) => {
                self.problem(
                    SCHEDULE,
                    format!("value {raw:?} is not `;`-separated cron expressions (e.g. 0 9 * * 1-5): {e}"),
                );
                None
            }
        });
        let instance_memory = self.text(INSTANCE_MEMORY).and_then(|raw| match quantity::parse_memory(&raw) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.problem(INSTANCE_MEMORY, format!("value {raw:?} {e}"));
                None
            }
        });
        PredictiveSpec { mode, lead_time, schedule, instance_memory }
    }

    fn http(&mut self) -> Option<HttpRoute> {
        let hosts = self.list(HOSTS);
        let path_prefixes = self.list(PATH_PREFIXES);
        let backend = self.text(BACKEND);
        for prefix in path_prefixes.iter().filter(|p| !p.starts_with('/')) {
            self.problem(PATH_PREFIXES, format!("value {prefix:?} must start with `/`"));
        }
        let hold_timeout = match self.text(HOLD_TIMEOUT).map(|raw| (duration::parse(&raw), raw)) {
            None => HttpRoute::DEFAULT_HOLD_TIMEOUT,
            Some((Ok(d), _)) if !d.is_zero() && d <= Duration::from_secs(600) => d,
            Some((_, raw)) => {
                self.problem(HOLD_TIMEOUT, format!("value {raw:?} is not a duration between 1ms and 10m (e.g. 20s)"));
                HttpRoute::DEFAULT_HOLD_TIMEOUT
            }
        };
        let max_held = self.number(MAX_HELD, HttpRoute::DEFAULT_MAX_HELD as f64, Bound::Positive);
        let cold_start_header = self.flag(COLD_START_HEADER, true);
        match (hosts.is_empty(), backend) {
            (true, None) => None,
            (true, Some(_)) => {
                self.problem(HOSTS, "is required with `backend` (the hostnames the activator routes)");
                None
            }
            (false, None) => {
                self.problem(
                    BACKEND,
                    "is required with `hosts` (the app's Service URL, e.g. http://app.default.svc:80)",
                );
                None
            }
            (false, Some(raw)) => match parse_backend(&raw) {
                Ok(uri) => Some(HttpRoute {
                    hosts,
                    path_prefixes,
                    backend: uri,
                    hold_timeout,
                    max_held: max_held.clamp(1.0, 1_000_000.0) as usize,
                    cold_start_header,
                }),
                Err(e) => {
                    self.problem(BACKEND, format!("value {e}"));
                    None
                }
            },
        }
    }

    fn prometheus(&mut self) -> Option<PrometheusSource> {
        let query = self.text(QUERY);
        let address = self.text(PROMETHEUS_ADDRESS);
        let ignore_null_values = self.flag(IGNORE_NULL_VALUES, DEFAULT_IGNORE_NULL_VALUES);
        let timeout = self.timeout();
        let headers = self.pairs(CUSTOM_HEADERS);
        let query_parameters = self.pairs(QUERY_PARAMETERS);
        let namespace = self.text(NAMESPACE);
        let query = query?;
        let Some(address) = address else {
            self.problem(
                PROMETHEUS_ADDRESS,
                "is required with `query` (or set `serverAddress`, or a default in the config)",
            );
            return None;
        };
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            self.problem(PROMETHEUS_ADDRESS, format!("value {address:?} is not an http:// or https:// URL"));
            return None;
        }
        let address = address.trim_end_matches('/').to_string();
        Some(PrometheusSource { address, query, ignore_null_values, timeout, headers, query_parameters, namespace })
    }

    fn scrape(&mut self) -> Option<ScrapeSource> {
        let urls = self.list(SCRAPE_URL);
        let metric = self.text(SCRAPE_METRIC);
        let labels = self.pairs(SCRAPE_LABELS);
        for url in &urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                self.problem(SCRAPE_URL, format!("value {url:?} is not an http:// or https:// URL"));
            }
        }
        match (urls.is_empty(), metric) {
            (true, None) => None,
            (true, Some(_)) => {
                self.problem(SCRAPE_URL, "is required with `scrapeMetric`");
                None
            }
            (false, None) => {
                self.problem(SCRAPE_METRIC, "is required with `scrapeUrl` (the name of a counter)");
                None
            }
            (false, Some(metric)) => Some(ScrapeSource { urls, metric, labels }),
        }
    }

    fn kafka(&mut self) -> Option<KafkaSource> {
        let bootstrap_servers = self.text(BOOTSTRAP_SERVERS);
        let consumer_group = self.text(CONSUMER_GROUP);
        let topics = self.list(TOPIC);
        let mut partition_limitation = self.partition_limitation();
        let connection = self.text(KAFKA_CONNECTION);
        for (key, value) in [(KAFKA_TLS, "disable"), (KAFKA_SASL, "none")] {
            if let Some(v) = self.text(key)
                && v != value
                && connection.is_none()
            {
                self.problem(
                    key,
                    format!(
                        "value {v:?} needs credentials, which KEDA does not pass to external scalers: \
                         name a connection of spinscale's config with `{KAFKA_CONNECTION}` instead"
                    ),
                );
            }
        }
        match (bootstrap_servers, consumer_group) {
            (None, None) => None,
            (Some(_), None) => {
                self.problem(CONSUMER_GROUP, "is required with `bootstrapServers`");
                None
            }
            (None, Some(_)) => {
                self.problem(BOOTSTRAP_SERVERS, "is required with `consumerGroup`");
                None
            }
            (Some(bootstrap_servers), Some(consumer_group)) => {
                if topics.is_empty() && partition_limitation.take().is_some() {
                    self.warnings.push(format!("{PARTITION_LIMITATION} is ignored without `topic` (as in KEDA)"));
                }
                Some(KafkaSource {
                    bootstrap_servers,
                    consumer_group,
                    topics,
                    partition_limitation,
                    connection,
                    security: None,
                })
            }
        }
    }

    fn lag_rules(&mut self, kafka: Option<&KafkaSource>) -> LagRules {
        let rules = LagRules {
            lag_threshold: self.number(LAG_THRESHOLD, DEFAULT_LAG_THRESHOLD, Bound::Positive),
            activation_lag_threshold: self.number(ACTIVATION_LAG_THRESHOLD, 0.0, Bound::NonNegative),
            offset_reset_policy: match self.choice(OFFSET_RESET_POLICY, &["latest", "earliest"]) {
                Some("earliest") => OffsetResetPolicy::Earliest,
                _ => OffsetResetPolicy::Latest,
            },
            allow_idle_consumers: self.flag(ALLOW_IDLE_CONSUMERS, false),
            exclude_persistent_lag: self.flag(EXCLUDE_PERSISTENT_LAG, false),
            limit_to_partitions_with_lag: self.flag(LIMIT_TO_PARTITIONS_WITH_LAG, false),
            scale_to_zero_on_invalid_offset: self.flag(SCALE_TO_ZERO_ON_INVALID_OFFSET, false),
            ensure_even_distribution: self.flag(ENSURE_EVEN_DISTRIBUTION, false),
        };
        let has_topic = kafka.is_some_and(|k| !k.topics.is_empty());
        if rules.limit_to_partitions_with_lag {
            if rules.allow_idle_consumers {
                self.problem(LIMIT_TO_PARTITIONS_WITH_LAG, "cannot be combined with `allowIdleConsumers: true`");
            }
            if rules.ensure_even_distribution {
                self.problem(
                    LIMIT_TO_PARTITIONS_WITH_LAG,
                    "cannot be combined with `ensureEvenDistributionOfPartitions: true`",
                );
            }
            if kafka.is_some() && !has_topic {
                self.problem(LIMIT_TO_PARTITIONS_WITH_LAG, "needs `topic`");
            }
        }
        if rules.ensure_even_distribution && kafka.is_some() && !has_topic {
            self.problem(ENSURE_EVEN_DISTRIBUTION, "needs `topic`");
        }
        rules
    }

    // --- typed lookups ---

    /// A comma list (items trimmed, empty ones dropped); empty when the key is not set.
    fn list(&mut self, key: &str) -> Vec<String> {
        let text = self.text(key).unwrap_or_default();
        text.split(',').map(str::trim).filter(|item| !item.is_empty()).map(String::from).collect()
    }

    /// The value of `key` (or its KEDA alias), then the default; blank counts as unset.
    fn text(&mut self, key: &str) -> Option<String> {
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

    fn number(&mut self, key: &str, default: f64, bound: Bound) -> f64 {
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
    fn flag(&mut self, key: &str, default: bool) -> bool {
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

    fn choice(&mut self, key: &str, allowed: &[&'static str]) -> Option<&'static str> {
        let raw = self.text(key)?;
        let found = allowed.iter().copied().find(|a| *a == raw);
        if found.is_none() {
            self.problem(key, format!("value {raw:?} is not one of {}", allowed.join(", ")));
        }
        found
    }

    /// KEDA's `timeout`: a Go duration, or an integer number of milliseconds.
    fn timeout(&mut self) -> Option<Duration> {
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
    fn pairs(&mut self, key: &str) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for item in self.list(key) {
            match item.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => pairs.push((k.trim().to_string(), v.trim().to_string())),
                _ => self.problem(key, format!("item {item:?} is not of the form key=value")),
            }
        }
        pairs
    }

    /// KEDA's `partitionLimitation`: `0,1,4-6`.
    fn partition_limitation(&mut self) -> Option<Vec<i32>> {
        let raw = self.text(PARTITION_LIMITATION)?;
        let mut partitions = Vec::new();
        for item in raw.split(',').map(str::trim) {
            let range = match item.split_once('-') {
                Some((a, b)) => a.trim().parse::<i32>().ok().zip(b.trim().parse::<i32>().ok()),
                None => item.parse::<i32>().ok().map(|p| (p, p)),
            };
            match range {
                Some((a, b)) if 0 <= a && a <= b => partitions.extend(a..=b),
                _ => {
                    self.problem(
                        PARTITION_LIMITATION,
                        format!("item {item:?} is not a partition number or range like 4-6"),
                    );
                    return None;
                }
            }
        }
        partitions.sort_unstable();
        partitions.dedup();
        Some(partitions)
    }

    /// Records a problem under the key the user wrote (KEDA's alias if that is what they used).
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let written = ALIASES
            .iter()
            .find(|(k, a)| *k == key && !self.metadata.contains_key(key) && self.metadata.contains_key(*a))
            .map_or(key, |(_, a)| *a);
        self.problems.push(Problem { key: written.to_string(), message: message.into() });
    }

    fn has_problem_for(&self, keys: &[&str]) -> bool {
        self.problems.iter().any(|p| keys.contains(&p.key.as_str()))
    }
}

#[derive(Clone, Copy)]
enum Bound {
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

// === misspellings ===

/// Hints for keys that look like a known key but are not one (`lagTreshold`, `lagthreshold`).
fn misspelling_hints<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut hints: Vec<String> = keys
        .filter(|k| !known_keys().any(|known| known == *k))
        .filter_map(|k| {
            let lower = k.to_ascii_lowercase();
            known_keys()
                .map(|known| (strsim::osa_distance(&lower, &known.to_ascii_lowercase()), known))
                .filter(|(d, known)| *d <= 2 && known.len() >= 5)
                .min()
                .map(|(_, known)| format!("unknown key `{k}`: did you mean `{known}`? (it is ignored)"))
        })
        .collect();
    hints.sort();
    hints
}

fn known_keys() -> impl Iterator<Item = &'static str> {
    KEYS.into_iter().chain(PASSTHROUGH_KEYS).chain([PROFILE]).chain(ALIASES.into_iter().map(|(_, alias)| alias))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<TargetSpec, InvalidMetadata> {
        TargetSpec::parse(&meta(pairs), &BTreeMap::new())
    }

    /// The seed's two KEDA triggers, merged into one spinscale trigger.
    const SEED: [(&str, &str); 7] = [
        ("scalerAddress", "spinscale.keda:9500"),
        ("serverAddress", "http://prometheus.monitoring:9090"),
        ("query", "sum(rate(http_requests_total{app=\"webhook-handler\"}[1m]))"),
        ("threshold", "10"),
        ("bootstrapServers", "kafka.default:9092"),
        ("consumerGroup", "webhook-handler"),
        ("topic", "events"),
    ];

    #[test]
    fn seed_trigger_values_carry_over_through_keda_aliases() {
        let mut pairs = SEED.to_vec();
        pairs.push(("lagThreshold", "5"));
        let spec = parse(&pairs).unwrap();
        let prom = spec.prometheus.unwrap();
        assert_eq!(prom.address, "http://prometheus.monitoring:9090");
        assert!(prom.ignore_null_values);
        assert_eq!(spec.rate.target_rps, 10.0);
        assert_eq!(spec.rate.activation_rps, 0.0);
        let kafka = spec.kafka.unwrap();
        assert_eq!(kafka.topics, vec!["events".to_string()]);
        assert_eq!(spec.lag.lag_threshold, 5.0);
        assert_eq!(spec.lag.offset_reset_policy, OffsetResetPolicy::Latest);
        assert_eq!(spec.metrics, MetricsMode::Combined);
        assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
    }

    #[test]
    fn every_bad_value_is_named_with_key_value_and_what_is_allowed() {
        let cases: &[(&str, &str, &str)] = &[
            ("threshold", "0", "greater than 0"),
            ("targetRps", "ten", "greater than 0"),
            ("activationRps", "-1", "≥ 0"),
            ("lagThreshold", "NaN", "greater than 0"),
            ("activationLagThreshold", "-3", "≥ 0"),
            ("offsetResetPolicy", "newest", "latest, earliest"),
            ("allowIdleConsumers", "yes", "true, false"),
            ("metrics", "both", "combined, separate"),
            ("timeout", "soon", "duration"),
            ("timeout", "0", "greater than 0"),
            ("partitionLimitation", "3-1", "range"),
            ("customHeaders", "X-Org", "key=value"),
            ("tls", "enable", "needs credentials"),
            ("serverAddress", "prometheus:9090", "http://"),
            ("predictive", "always", "off, idle, full"),
            ("leadTime", "3", "duration"),
            ("leadTime", "2h", "maximum 1h"),
            ("schedule", "0 25 * * *", "cron expressions"),
            ("instanceMemory", "128MB", "unknown suffix"),
            ("instanceMemory", "0", "from 1 byte to 1Ti"),
        ];
        for (key, value, allowed) in cases {
            let mut pairs = SEED.to_vec();
            let twin = ALIASES.iter().find(|(n, a)| n == key || a == key).map(|(n, a)| if n == key { *a } else { *n });
            pairs.retain(|(k, _)| k != key && Some(*k) != twin);
            pairs.push((key, value));
            let err = parse(&pairs).expect_err(key);
            let text = err.to_string();
            assert!(text.contains(&format!("{key}: ")), "{key}: {text}");
            assert!(text.contains(value), "{key}: {text}");
            assert!(text.contains(allowed), "{key}: {text}");
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let err = parse(&[("query", "up"), ("prometheusAddress", "http://p"), ("threshold", "-1"), ("metrics", "x")])
            .unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["threshold", METRICS]);
    }

    #[test]
    fn a_name_and_its_alias_with_different_values_conflict() {
        let err =
            parse(&[("query", "up"), ("prometheusAddress", "http://a"), ("serverAddress", "http://b")]).unwrap_err();
        assert!(err.to_string().contains("conflicts with `serverAddress`"), "{err}");
        let same = parse(&[("query", "up"), ("prometheusAddress", "http://a"), ("serverAddress", "http://a")]);
        assert!(same.is_ok());
    }

    #[test]
    fn a_signal_source_is_required() {
        let err = parse(&[("scalerAddress", "x:9500"), ("threshold", "5")]).unwrap_err();
        assert!(err.to_string().contains("no signal source"), "{err}");
        let err = parse(&[("bootstrapServers", "k:9092")]).unwrap_err();
        assert_eq!(err.problems[0].key, CONSUMER_GROUP);
        let err = parse(&[("query", "up")]).unwrap_err();
        assert_eq!(err.problems[0].key, PROMETHEUS_ADDRESS);
    }

    #[test]
    fn misspelt_keys_are_reported_as_warnings_and_in_errors() {
        let spec = parse(&[("bootstrapServers", "k:9092"), ("consumerGroup", "g"), ("lagTreshold", "5")]).unwrap();
        assert_eq!(spec.lag.lag_threshold, DEFAULT_LAG_THRESHOLD);
        assert_eq!(
            spec.warnings,
            vec!["unknown key `lagTreshold`: did you mean `lagThreshold`? (it is ignored)".to_string()]
        );

        let err = parse(&[("lagthreshold", "5"), ("querry", "up")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("did you mean `lagThreshold`"), "{text}");
        assert!(text.contains("did you mean `query`"), "{text}");

        // Keys that are simply other people's are left alone.
        let spec =
            parse(&[("query", "up"), ("prometheusAddress", "http://p"), ("team", "payments"), ("unsafeSsl", "true")])
                .unwrap();
        assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
    }

    #[test]
    fn kafka_rules_follow_keda_constraints() {
        let base = [("bootstrapServers", "k:9092"), ("consumerGroup", "g")];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            parse(&pairs)
        };
        assert_eq!(with(&[("limitToPartitionsWithLag", "true")]).unwrap_err().problems[0].message, "needs `topic`");
        assert_eq!(
            with(&[("ensureEvenDistributionOfPartitions", "true")]).unwrap_err().problems[0].message,
            "needs `topic`"
        );
        let err =
            with(&[("topic", "t"), ("limitToPartitionsWithLag", "true"), ("allowIdleConsumers", "true")]).unwrap_err();
        assert!(err.to_string().contains("allowIdleConsumers"), "{err}");
        let spec = with(&[("topic", "a, b"), ("partitionLimitation", "0, 4-6, 2, 5")]).unwrap();
        let kafka = spec.kafka.unwrap();
        assert_eq!(kafka.topics, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(kafka.partition_limitation, Some(vec![0, 2, 4, 5, 6]));
        let spec = with(&[("partitionLimitation", "1")]).unwrap();
        assert_eq!(spec.kafka.unwrap().partition_limitation, None);
        assert_eq!(spec.warnings.len(), 1);
    }

    #[test]
    fn defaults_fill_missing_keys_and_metadata_wins() {
        let defaults: BTreeMap<String, String> = [("prometheusAddress", "http://prom:9090"), ("targetRps", "50")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let spec = TargetSpec::parse(&meta(&[("query", "up")]), &defaults).unwrap();
        assert_eq!(spec.prometheus.unwrap().address, "http://prom:9090");
        assert_eq!(spec.rate.target_rps, 50.0);
        let spec = TargetSpec::parse(&meta(&[("query", "up"), ("threshold", "7")]), &defaults).unwrap();
        assert_eq!(spec.rate.target_rps, 7.0);
    }

    #[test]
    fn defaults_are_checked_on_their_own() {
        let ok: BTreeMap<String, String> = [("lagThreshold".to_string(), "20".to_string())].into();
        assert_eq!(check_defaults(&ok), Ok(()));
        let bad: BTreeMap<String, String> =
            [("lagThreshold".to_string(), "0".to_string()), ("lagTreshold".to_string(), "1".to_string())].into();
        let err = check_defaults(&bad).unwrap_err().to_string();
        assert!(err.contains("lagThreshold: value \"0\""), "{err}");
        assert!(err.contains("lagTreshold: is not a trigger key"), "{err}");
    }

    #[test]
    fn timeout_accepts_durations_and_keda_milliseconds() {
        let base = [("query", "up"), ("prometheusAddress", "http://p")];
        for (raw, want) in [("1500", 1500), ("2s", 2000), ("250ms", 250)] {
            let mut pairs = base.to_vec();
            pairs.push(("timeout", raw));
            assert_eq!(parse(&pairs).unwrap().prometheus.unwrap().timeout, Some(Duration::from_millis(want)));
        }
    }

    #[test]
    fn predictive_keys_default_to_reactive_and_parse_when_given() {
        let spec = parse(&SEED).unwrap();
        assert_eq!(spec.predictive, PredictiveSpec::default());
        assert_eq!(spec.predictive.mode, PredictiveMode::Off);
        let mut pairs = SEED.to_vec();
        pairs.extend([
            ("predictive", "full"),
            ("leadTime", "1500ms"),
            ("schedule", "0 9 * * 1-5; 30 17 * * *"),
            ("instanceMemory", "128Mi"),
        ]);
        let spec = parse(&pairs).unwrap();
        assert_eq!(spec.predictive.mode, PredictiveMode::Full);
        assert_eq!(spec.predictive.lead_time, Duration::from_millis(1500));
        assert!(spec.predictive.schedule.is_some());
        assert_eq!(spec.predictive.instance_memory, Some(128 << 20));
        let defaults: BTreeMap<String, String> = [("predictive".to_string(), "idle".to_string())].into();
        assert_eq!(check_defaults(&defaults), Ok(()));
        let spec = TargetSpec::parse(&meta(&SEED), &defaults).unwrap();
        assert_eq!(spec.predictive.mode, PredictiveMode::Idle);
    }

    #[test]
    fn metric_names_are_lowercase_and_stable() {
        for name in [MetricName::Replicas, MetricName::Rps, MetricName::Lag] {
            assert!(name.as_str().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
        let mut pairs = SEED.to_vec();
        pairs.push(("metrics", "separate"));
        let spec = parse(&pairs).unwrap();
        assert_eq!(spec.metric_targets(), vec![(MetricName::Rps, 10.0), (MetricName::Lag, 10.0)]);
    }
}
