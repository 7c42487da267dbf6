//! The trigger-key vocabulary: every metadata key spinscale reads (one documented const each),
//! KEDA's aliases for some of them, the built-in defaults, and hints for keys that look like a
//! misspelling of a known one.

use std::time::Duration;

use super::PredictiveMode;

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
/// How often this trigger's query runs (Go duration, e.g. `60s`), for an expensive query; at
/// least the config's `collectors.prometheusInterval`, which is also the default.
pub const QUERY_INTERVAL: &str = "queryInterval";
/// A named connection of the config's `prometheusConnections` (bearer token, basic auth, TLS,
/// headers, SigV4; secrets in files).
pub const PROMETHEUS_CONNECTION: &str = "prometheusConnection";
/// KEDA's prometheus `authModes` (`bearer`, `basic`, `tls`, `custom`): the credentials live in a
/// TriggerAuthentication KEDA does not pass on, so it is refused without a `prometheusConnection`
/// (which decides instead).
pub const AUTH_MODES: &str = "authModes";
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
/// How the activator speaks to the backend: `http1` (default) or `h2c` (HTTP/2 without TLS, for
/// gRPC apps: trailers intact).
pub const BACKEND_PROTOCOL: &str = "backendProtocol";

/// Selects a named set of defaults from the config's `profiles` (handled by the registry, not here).
pub const PROFILE: &str = "profile";

/// KEDA's names for spinscale keys, so values of KEDA's `prometheus` trigger carry over.
pub const ALIASES: [(&str, &str); 3] =
    [(PROMETHEUS_ADDRESS, "serverAddress"), (TARGET_RPS, "threshold"), (ACTIVATION_RPS, "activationThreshold")];

/// The name under which `metadata` gives `key`: KEDA's alias when only the alias is written, so an
/// error names what the user wrote.
pub fn written_key<'a>(key: &'a str, metadata: &std::collections::HashMap<String, String>) -> &'a str {
    ALIASES
        .iter()
        .find(|(k, a)| *k == key && !metadata.contains_key(key) && metadata.contains_key(*a))
        .map_or(key, |(_, a)| *a)
}

/// Keys KEDA itself reads from the same map (or that KEDA users commonly leave in); accepted quietly.
const PASSTHROUGH_KEYS: [&str; 5] = [SCALER_ADDRESS, "enableTLS", "unsafeSsl", "metricName", "metricType"];

/// Every key spinscale reads, for defaults validation and misspelling hints.
pub const KEYS: [&str; 42] = [
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
    QUERY_INTERVAL,
    PROMETHEUS_CONNECTION,
    AUTH_MODES,
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
    BACKEND_PROTOCOL,
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

// === misspellings ===

/// Hints for keys that look like a known key but are not one (`lagTreshold`, `lagthreshold`).
pub(super) fn misspelling_hints<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<String> {
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
