//! Builds a [`TargetSpec`] from the [`Reader`]'s typed lookups, one part at a time (Prometheus,
//! scrape, Kafka, the activator route, rate and lag rules, predictive settings), and checks the
//! rules that span keys: what a key needs with it, which keys conflict, that a signal source exists.

use std::time::Duration;

use super::keys::*;
use super::reader::{Bound, Reader};
use super::schedule::Schedule;
use super::{
    BackendProtocol, HttpRoute, KafkaSource, LagRules, MetricsMode, OffsetResetPolicy, PredictiveMode, PredictiveSpec,
    PrometheusSource, RateRules, ScrapeSource, TargetSpec,
};
use crate::{duration, quantity};

/// The problem key for "no signal source at all" (names the keys that would each provide one).
pub(super) const SOURCE_KEY: &str = "query|scrapeUrl|bootstrapServers";

/// A backend URL the activator can forward to: `http://` with a host.
pub fn parse_backend(text: &str) -> Result<http::Uri, String> {
    match text.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Ok(uri),
        _ => Err(format!("{text:?} is not an http:// URL with a host")),
    }
}

impl Reader<'_> {
    /// Reads every part of a spec and checks that it has a signal source. The result is valid only
    /// if no problem was recorded.
    pub(super) fn spec(&mut self) -> Option<TargetSpec> {
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
        let backend_protocol = match self.choice(BACKEND_PROTOCOL, &["http1", "h2c"]) {
            Some("h2c") => BackendProtocol::H2c,
            _ => BackendProtocol::Http1,
        };
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
                    backend_protocol,
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
        let query_interval = self.query_interval();
        let connection = self.text(PROMETHEUS_CONNECTION);
        if let Some(modes) = self.text(AUTH_MODES)
            && connection.is_none()
        {
            self.problem(
                AUTH_MODES,
                format!(
                    "value {modes:?} needs credentials, which KEDA does not pass to external scalers: \
                     name a connection of spinscale's config with `{PROMETHEUS_CONNECTION}` instead"
                ),
            );
        }
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
        Some(PrometheusSource {
            address,
            query,
            ignore_null_values,
            timeout,
            headers,
            query_parameters,
            namespace,
            query_interval,
            connection,
            auth: None,
        })
    }

    /// `queryInterval`: a Go duration above 0 (the config bounds it further).
    fn query_interval(&mut self) -> Option<Duration> {
        let raw = self.text(QUERY_INTERVAL)?;
        match duration::parse(&raw) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.problem(QUERY_INTERVAL, format!("value {raw:?} must be greater than 0"));
                None
            }
            Err(e) => {
                self.problem(QUERY_INTERVAL, format!("value {raw:?} is not a duration (e.g. 60s, 5m): {e}"));
                None
            }
        }
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
}
