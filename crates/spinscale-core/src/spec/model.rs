//! The validated spec's types: a target's signal sources, the rules that turn readings into a
//! decision, the activator's route, the predictive settings, and the metric names it reports.
//! Plain data: [`TargetSpec::parse`] is the only way in from metadata.

use std::time::Duration;

use super::kafka_connection::KafkaConnection;
use super::prometheus_connection::PrometheusConnection;
use super::schedule::Schedule;
use super::{DEFAULT_LAG_THRESHOLD, DEFAULT_LEAD_TIME, DEFAULT_PREDICTIVE};

/// A validated trigger: its signal sources and the rules that turn readings into a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetSpec {
    /// The request rate from a Prometheus query (`query`, `prometheusAddress`), if the trigger has one.
    pub prometheus: Option<PrometheusSource>,
    /// The request rate from a counter scraped directly (`scrapeUrl`, `scrapeMetric`), if any.
    pub scrape: Option<ScrapeSource>,
    /// A consumer group's lag (`bootstrapServers`, `consumerGroup`), if any.
    pub kafka: Option<KafkaSource>,
    /// The activator's route: requests to these hosts are counted (the rate) and held at zero.
    pub http: Option<HttpRoute>,
    /// How the request rate becomes replicas and activation (`targetRps`, `activationRps`).
    pub rate: RateRules,
    /// How Kafka lag becomes replicas and activation (`lagThreshold` and KEDA's other kafka keys).
    pub lag: LagRules,
    /// `metrics`: what KEDA is sent, one combined metric or one per signal.
    pub metrics: MetricsMode,
    /// What the engine may do beyond the reactive floor (`predictive`, `leadTime`, `schedule`, `instanceMemory`).
    pub predictive: PredictiveSpec,
    /// Likely mistakes that are not errors (misspelt keys, ignored options), logged on registration.
    pub warnings: Vec<String>,
}

impl TargetSpec {
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

/// Where the activator routes an app's requests, and how it holds them at zero.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRoute {
    /// `hosts`: hostnames matched on the `Host` header without its port; exact, or `*.suffix`.
    pub hosts: Vec<String>,
    /// `pathPrefixes`: prefixes under those hosts, each starting with `/`; empty means every path.
    pub path_prefixes: Vec<String>,
    /// `backend`: the app's Service URL (`http://` with a host) that requests are forwarded to.
    pub backend: http::Uri,
    /// `holdTimeout`: how long a request is held while the app starts before it gets `504`.
    pub hold_timeout: Duration,
    /// `maxHeld`: requests held at once; more get `503` with `Retry-After`.
    pub max_held: usize,
    /// `coldStartHeader`: add `x-spinscale-cold-start: <ms held>` to responses that were held.
    pub cold_start_header: bool,
    /// `backendProtocol`: how the activator speaks to the backend.
    pub backend_protocol: BackendProtocol,
}

/// `backendProtocol`: the protocol between the activator and the app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendProtocol {
    /// HTTP/1.1 (`http1`, the default).
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge, no TLS (`h2c`): gRPC apps, trailers intact.
    H2c,
}

impl HttpRoute {
    /// How long a request waits for a ready backend when `holdTimeout` is not given.
    pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(20);
    /// How many requests may wait at once when `maxHeld` is not given.
    pub const DEFAULT_MAX_HELD: usize = 1000;
}

/// One Prometheus instant query. Equal values share one collector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PrometheusSource {
    /// `prometheusAddress` (or `serverAddress`): base URL without a trailing `/`.
    pub address: String,
    /// `query`: PromQL giving the request rate, requests per second.
    pub query: String,
    /// `ignoreNullValues`: an empty result counts as 0 instead of an error. Default true.
    pub ignore_null_values: bool,
    /// Per-request timeout; `None` = the collector default.
    pub timeout: Option<Duration>,
    /// `customHeaders`: extra request headers, in the order given.
    pub headers: Vec<(String, String)>,
    /// `queryParameters`: extra query-string parameters, in the order given.
    pub query_parameters: Vec<(String, String)>,
    /// `namespace`: sent as `namespace=<value>` for Thanos-style tenancy.
    pub namespace: Option<String>,
    /// `queryInterval`: how often the query runs; `None` = the collector default
    /// (`collectors.prometheusInterval`, also the least it may be: the registry bounds it).
    pub query_interval: Option<Duration>,
    /// `prometheusConnection`: the name of the config's connection to use.
    pub connection: Option<String>,
    /// That connection's settings, filled in by the registry from the config.
    pub auth: Option<PrometheusConnection>,
}

/// A counter scraped from exposition endpoints. Equal values share one collector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ScrapeSource {
    /// `scrapeUrl`: the endpoints to scrape; their counters are summed.
    pub urls: Vec<String>,
    /// `scrapeMetric`: the counter's name (an OpenMetrics family name finds its `_total` samples).
    pub metric: String,
    /// `scrapeLabels`: label matchers, all of which a sample must match.
    pub labels: Vec<(String, String)>,
}

/// One consumer group's offsets on a set of topics. Equal values share one collector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KafkaSource {
    /// `bootstrapServers`: the brokers, a comma list as given.
    pub bootstrap_servers: String,
    /// `consumerGroup`: the group whose lag is measured (spinscale never joins it).
    pub consumer_group: String,
    /// Empty: every topic the group has committed offsets for.
    pub topics: Vec<String>,
    /// `partitionLimitation`: the partitions to count; `None` = all.
    pub partition_limitation: Option<super::PartitionSet>,
    /// `kafkaConnection`: the name of the config's connection to use.
    pub connection: Option<String>,
    /// That connection's settings, filled in by the registry from the config.
    pub security: Option<KafkaConnection>,
}

/// Request-rate rules.
#[derive(Clone, Debug, PartialEq)]
pub struct RateRules {
    /// `targetRps` (or `threshold`): requests per second one replica should serve, > 0.
    pub target_rps: f64,
    /// `activationRps` (or `activationThreshold`): the target is active above this rate (strict `>`).
    pub activation_rps: f64,
}

/// KEDA's kafka scaler rules (docs/keda.md §4).
#[derive(Clone, Debug, PartialEq)]
pub struct LagRules {
    /// `lagThreshold`: lag per replica, > 0.
    pub lag_threshold: f64,
    /// `activationLagThreshold`: the target is active above this lag (strict `>`, persistent lag included).
    pub activation_lag_threshold: f64,
    /// `offsetResetPolicy`: how a partition without a committed offset counts.
    pub offset_reset_policy: OffsetResetPolicy,
    /// `allowIdleConsumers`: allow more replicas than partitions (lifts the partition cap).
    pub allow_idle_consumers: bool,
    /// `excludePersistentLag`: lag behind a commit that has not moved does not drive 1→N.
    pub exclude_persistent_lag: bool,
    /// `limitToPartitionsWithLag`: cap replicas at the partitions that have lag.
    pub limit_to_partitions_with_lag: bool,
    /// `scaleToZeroOnInvalidOffset`: a partition without a committed offset counts 0.
    pub scale_to_zero_on_invalid_offset: bool,
    /// `ensureEvenDistributionOfPartitions`: round up to a replica count that divides the partitions evenly.
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

/// The `offsetResetPolicy` key: what a consumer would start from on a partition the group has not
/// committed on, and so how much lag that partition counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetResetPolicy {
    /// `latest` (the default): the partition counts 1, enough for one consumer to make the first commit.
    Latest,
    /// `earliest`: the partition counts its whole log (its high watermark).
    Earliest,
}

/// What the engine may do beyond the reactive floor.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictiveSpec {
    /// `predictive`: which models run on top of the reactive floor. Default `off`.
    pub mode: PredictiveMode,
    /// `leadTime`: how long the app takes from activation to ready; predictions act this much earlier.
    pub lead_time: Duration,
    /// `schedule`: known wake times (cron, UTC), if any.
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

/// The `metrics` key: which metrics KEDA's HPA scales on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsMode {
    /// One metric, `spinscale-replicas`, target 1: the desired replica count.
    Combined,
    /// `spinscale-rps` and `spinscale-lag` in natural units; the HPA takes the max.
    Separate,
}

/// The metric names spinscale reports: lowercase `[a-z0-9-]`, stable across calls and releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricName {
    /// `spinscale-replicas`: the desired replica count, HPA target 1 (`metrics: combined`).
    Replicas,
    /// `spinscale-rps`: the request rate, HPA target `targetRps` (`metrics: separate`).
    Rps,
    /// `spinscale-lag`: the capped Kafka lag, HPA target `lagThreshold` (`metrics: separate`).
    Lag,
}

impl MetricName {
    /// The name as KEDA and the HPA see it, e.g. `spinscale-rps`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricName::Replicas => "spinscale-replicas",
            MetricName::Rps => "spinscale-rps",
            MetricName::Lag => "spinscale-lag",
        }
    }
}
