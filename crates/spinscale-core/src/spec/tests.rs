//! Unit tests of metadata parsing: KEDA aliases, error messages, defaults, misspelling hints.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

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
        ("backendProtocol", "h3", "http1, h2c"),
        ("customHeaders", "X-Org", "key=value"),
        ("tls", "enable", "needs credentials"),
        ("authModes", "bearer", "`prometheusConnection`"),
        ("queryInterval", "soon", "duration"),
        ("queryInterval", "0s", "greater than 0"),
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
fn a_prometheus_connection_and_query_interval_are_read_and_auth_modes_defer_to_the_connection() {
    let mut pairs = SEED.to_vec();
    pairs.extend([("prometheusConnection", "thanos"), ("authModes", "tls,bearer"), ("queryInterval", "1m")]);
    let prom = parse(&pairs).unwrap().prometheus.unwrap();
    assert_eq!(prom.connection.as_deref(), Some("thanos"));
    assert_eq!(prom.query_interval, Some(Duration::from_secs(60)));
    assert_eq!(prom.auth, None, "the registry fills it in from the config");
    let plain = parse(&SEED).unwrap().prometheus.unwrap();
    assert_eq!((plain.connection, plain.query_interval), (None, None));
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
    let err = parse(&[("query", "up"), ("prometheusAddress", "http://a"), ("serverAddress", "http://b")]).unwrap_err();
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
    assert_eq!(kafka.partition_limitation, Some(PartitionSet::of_ranges(vec![(0, 0), (2, 2), (4, 6)])));
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
