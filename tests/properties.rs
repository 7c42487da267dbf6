//! Properties over random inputs (proptest): what KEDA, upstreams and users can send never makes
//! spinscale panic, and every answer keeps its invariants.
//!
//! - trigger metadata → `TargetSpec::parse`: a spec with sources and targets > 0, or problems that
//!   each name a key;
//! - exposition bodies → the scrape parser and the rate over them;
//! - Prometheus API responses → KEDA's result rules: a finite value or an error;
//! - config files → `Config::parse`: a valid config, or an error naming the field;
//! - the engine over random signal sequences: never inactive while a signal is above its
//!   activation threshold, every value finite and ≥ 0, memory per target fixed.

use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};
use spinscale::config::{Config, ConfigError};
use spinscale::signals::prometheus::interpret;
use spinscale::signals::scrape::{CounterRate, matching_series};
use spinscale_core::engine::lag::summarize;
use spinscale_core::engine::{EngineSettings, Inputs, LagSummary, Now, PartitionOffsets, TargetEngine, decide};
use spinscale_core::spec::schedule::Schedule;
use spinscale_core::spec::{
    ALIASES, KEYS, LagRules, MetricName, OffsetResetPolicy, PredictiveMode, PredictiveSpec, RateRules, TargetSpec,
};

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig { cases: n, failure_persistence: None, ..ProptestConfig::default() }
}

// === trigger metadata ===

/// Keys KEDA passes through that spinscale accepts quietly.
const PASSTHROUGH: [&str; 5] = ["scalerAddress", "enableTLS", "unsafeSsl", "metricName", "metricType"];
/// The pseudo-key of "no signal source".
const SOURCE_KEY: &str = "query|scrapeUrl|bootstrapServers";

fn known_keys() -> Vec<&'static str> {
    KEYS.iter().copied().chain(ALIASES.iter().map(|(_, alias)| *alias)).chain(PASSTHROUGH).collect()
}

fn metadata_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(known_keys()).prop_map(String::from),
        1 => "[a-zA-Z]{1,14}",
        1 => select(vec!["lagTreshold", "Query", "threshhold", "bootstrapservers", "scrape_url"]).prop_map(String::from),
    ]
}

fn metadata_value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "",
            " ",
            "0",
            "1",
            "-1",
            "10",
            "2.5",
            "NaN",
            "inf",
            "-inf",
            "1e309",
            "true",
            "false",
            "True",
            "yes",
            "latest",
            "earliest",
            "combined",
            "separate",
            "off",
            "idle",
            "full",
            "disable",
            "enable",
            "none",
            "http://p:9090",
            "https://p",
            "prometheus:9090",
            "http://",
            "k:9092",
            "a,b",
            " a, ,b ",
            "0,1,4-6",
            "6-4",
            "-1-3",
            "1-",
            "2147483647-2147483647",
            "a=b,c=d",
            "=x",
            "x",
            "3s",
            "500ms",
            "1500",
            "2h",
            "1.5h",
            "0s",
            "µs",
            "0 9 * * 1-5; 30 17 * * *",
            "61 * * * *",
            ";",
            "* * * * * * *",
            "@daily",
            "sum(rate(x[1m]))",
            "requests_total",
        ])
        .prop_map(String::from),
        any::<f64>().prop_map(|v| v.to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        "[0-9]{1,4}-[0-9]{1,4}(,[0-9]{1,3})?",
        "[0-9]{1,6}(ns|us|ms|s|m|h|d)",
        "[0-9*/,-]{1,4} [0-9*/,-]{1,4} [0-9*/,?LW#-]{1,4} [0-9*/,A-Z-]{1,4} [0-9*/,A-Z#L-]{1,4}",
        ".{0,24}",
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn metadata_parses_to_a_usable_spec_or_problems_that_name_keys(
        metadata in prop::collection::hash_map(metadata_key(), metadata_value(), 0..12),
        defaults in prop::collection::btree_map(select(KEYS.to_vec()).prop_map(String::from), metadata_value(), 0..4),
    ) {
        match TargetSpec::parse(&metadata, &defaults) {
            Ok(spec) => {
                prop_assert!(spec.prometheus.is_some() || spec.scrape.is_some() || spec.kafka.is_some());
                let targets = spec.metric_targets();
                prop_assert!(!targets.is_empty(), "KEDA refuses an empty spec list");
                for (metric, size) in targets {
                    prop_assert!(size.is_finite() && size > 0.0, "{metric:?} target {size}");
                }
                prop_assert!(spec.rate.activation_rps.is_finite() && spec.rate.activation_rps >= 0.0);
                prop_assert!(spec.lag.activation_lag_threshold.is_finite() && spec.lag.activation_lag_threshold >= 0.0);
            }
            Err(e) => {
                prop_assert!(!e.problems.is_empty(), "an error without a problem: {e}");
                let known = known_keys();
                let text = e.to_string();
                for p in &e.problems {
                    let named = metadata.contains_key(&p.key) || known.contains(&p.key.as_str()) || p.key == SOURCE_KEY;
                    prop_assert!(named, "problem names no key: {p:?}");
                    prop_assert!(!p.message.is_empty(), "{p:?}");
                    prop_assert!(text.contains(&format!("{}: ", p.key)), "{text}");
                }
            }
        }
    }
}

// === exposition bodies ===

fn sample_line() -> impl Strategy<Value = String> {
    let name = select(vec!["requests_total", "requests", "requests_created", "requests_bucket", "other", "x:y"]);
    let label = ("[a-z_]{1,6}", prop_oneof!["[a-z0-9]{0,6}", r#"[,="{}\\ a-z]{0,6}"#, ".{0,6}"])
        .prop_map(|(k, v)| format!("{k}=\"{v}\""));
    let labels = prop_oneof![
        Just(String::new()),
        Just("{}".to_string()),
        prop::collection::vec(label, 1..4).prop_map(|l| format!("{{{}}}", l.join(","))),
        "\\{[^\n]{0,12}\\}?",
    ];
    let value = prop_oneof![
        select(vec!["1", "0", "-1", "NaN", "+Inf", "-Inf", "1e309", "1.5e3", "abc", "", "0x10", "1_0"])
            .prop_map(String::from),
        any::<f64>().prop_map(|v| v.to_string()),
        (0u64..1_000_000).prop_map(|v| v.to_string()),
    ];
    let suffix =
        select(vec!["", " 1700000000000", " -1", " junk", " # {trace_id=\"a\"} 1 1700000000", "  9999999999999999999"]);
    (name, labels, value, suffix).prop_map(|(n, l, v, s)| format!("{n}{l} {v}{s}"))
}

fn exposition_line() -> impl Strategy<Value = String> {
    let kind = select(vec!["counter", "gauge", "histogram", "summary", "untyped", "unknown", "info", ""]);
    let name = select(vec!["requests_total", "requests", "other"]);
    prop_oneof![
        6 => sample_line(),
        2 => (name.clone(), kind).prop_map(|(n, k)| format!("# TYPE {n} {k}")),
        1 => (name, ".{0,12}").prop_map(|(n, d)| format!("# HELP {n} {d}")),
        1 => select(vec!["# EOF", "", "   ", "#", "# a comment"]).prop_map(String::from),
        1 => "[^\n]{0,30}",
    ]
}

fn exposition_body() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(exposition_line(), 0..12).prop_map(|lines| lines.join("\n")),
        1 => ".{0,300}",
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn exposition_bodies_never_make_the_scrape_parser_panic(
        bodies in prop::collection::vec(exposition_body(), 1..4),
        metric in select(vec!["requests_total", "requests", "other", "x:y"]),
        labels in prop::collection::vec(("[a-z_]{1,6}", "[a-z0-9]{0,6}"), 0..2),
        steps in prop::collection::vec(0u64..2_000, 4),
    ) {
        let mut rate = CounterRate::new(Duration::from_secs(1));
        let mut at = Duration::ZERO;
        for (body, step) in bodies.iter().zip(steps) {
            at += Duration::from_millis(step);
            if let Ok(series) = matching_series(body, metric, &labels) {
                for (_, v) in &series {
                    prop_assert!(v.is_finite(), "{body:?}: {v}");
                }
                if let Some(rps) = rate.observe(at, series.into_iter().collect()) {
                    prop_assert!(!rps.is_nan(), "{body:?}");
                }
            }
        }
    }
}

// === Prometheus API responses ===

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn numberish() -> impl Strategy<Value = Value> {
    prop_oneof![
        select(vec![
            "1",
            "35",
            "-2",
            "0",
            "-0",
            "NaN",
            "+Inf",
            "-Inf",
            "Inf",
            "nan",
            "inf",
            "1e309",
            "-1e309",
            "0x1F",
            "",
            " 1",
            "1_000",
            "∞",
            "1.7976931348623157e308",
        ])
        .prop_map(|s| Value::String(s.into())),
        any::<f64>().prop_map(|v| Value::String(v.to_string())),
        json_value(),
    ]
}

fn series() -> impl Strategy<Value = Value> {
    let pair = prop_oneof![
        4 => (any::<f64>(), numberish()).prop_map(|(ts, v)| json!([ts, v])),
        1 => numberish().prop_map(|v| json!([v])),
        1 => Just(json!([])),
        1 => json_value(),
    ];
    prop_oneof![
        4 => pair.clone().prop_map(|value| json!({"metric": {"app": "a"}, "value": value})),
        1 => pair.prop_map(|values| json!({"metric": {}, "values": [values]})),
        1 => json_value(),
    ]
}

fn query_response() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![4 => Just(json!("success")), 1 => Just(json!("error")), 1 => json_value()];
    let result_type = select(vec!["vector", "scalar", "matrix", "string", "junk"]);
    let result = prop_oneof![
        4 => prop::collection::vec(series(), 0..4).prop_map(Value::Array),
        1 => (any::<f64>(), numberish()).prop_map(|(ts, v)| json!([ts, v])),
        1 => json_value(),
    ];
    let near_valid = (status, result_type, result, prop::option::of(".{0,10}")).prop_map(|(s, t, r, error)| {
        let mut doc = json!({"status": s, "data": {"resultType": t, "result": r}});
        if let Some(error) = error {
            doc["error"] = Value::String(error);
        }
        serde_json::to_vec(&doc).unwrap()
    });
    prop_oneof![
        4 => near_valid.clone(),
        1 => (near_valid, any::<prop::sample::Index>()).prop_map(|(body, cut)| body[..cut.index(body.len() + 1)].to_vec()),
        1 => json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn prometheus_responses_read_as_a_finite_value_or_a_clear_error(body in query_response()) {
        let rate = RateRules { target_rps: 10.0, activation_rps: 0.0 };
        let strict = interpret(&body, false);
        let lenient = interpret(&body, true);
        for result in [&strict, &lenient] {
            match result {
                // Negative values pass through as in KEDA; the decision clamps them to 0.
                Ok(v) => {
                    prop_assert!(v.is_finite(), "{v}");
                    let d = decide(&rate, &LagRules::default(), &Inputs { rps: Some(*v), ..Inputs::default() });
                    for m in [MetricName::Replicas, MetricName::Rps, MetricName::Lag] {
                        let value = d.metric_value(m);
                        prop_assert!(value.is_finite() && value >= 0.0, "{m:?} = {value} from {v}");
                    }
                }
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
        // ignoreNullValues only turns errors into 0, never a value into another.
        if let Ok(v) = strict {
            prop_assert_eq!(lenient, Ok(v));
        }
    }
}

// === config files ===

const SECTIONS: [(&str, &[&str]); 3] = [
    (
        "collectors",
        &[
            "prometheusInterval",
            "kafkaInterval",
            "tailFetchWait",
            "scrapeInterval",
            "scrapeWindow",
            "timeout",
            "staleAfter",
        ],
    ),
    ("targets", &["tick", "idleTimeout", "firstReadingWait", "persistentLagAfter"]),
    (
        "engine",
        &[
            "keepAlive",
            "maxKeepAlive",
            "histogramMin",
            "histogramMax",
            "histogramBins",
            "minGaps",
            "coldStartBudget",
            "coldStartWorth",
            "headMargin",
            "tailMargin",
            "timeOfDayWindow",
            "forecastActivation",
            "forecastAlpha",
            "forecastBeta",
            "forecastPhi",
            "forecastGamma",
            "scheduleHold",
        ],
    ),
];

fn yaml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "2s",
            "100ms",
            "0s",
            "10ms",
            "-1s",
            "soon",
            "1h",
            "0",
            "1",
            "4",
            "96",
            "4096",
            "true",
            "null",
            "~",
            "[]",
            "{}",
            "\"5\"",
            "1e3",
            "0.5",
            "0.95",
            ".nan",
            "-3",
            "5000000000000000h",
            "1.5",
            "[1, 2]",
            "{a: 1}",
            "'x'",
            "&a 1",
            "*a",
            "!!binary aGk=",
            "|\n    text",
        ])
        .prop_map(String::from),
        ".{0,10}".prop_map(|s| serde_json::to_string(&s).unwrap()),
    ]
}

fn yaml_document() -> impl Strategy<Value = String> {
    let field_names: Vec<&str> = SECTIONS.iter().flat_map(|(_, f)| f.iter().copied()).chain(KEYS).collect();
    let field = prop_oneof![4 => select(field_names), 1 => select(vec!["junk", "Timeout", "stale_after", "defaults"])];
    let section_name = prop_oneof![
        4 => select(vec!["defaults", "collectors", "targets", "engine"]),
        1 => select(vec!["collector", "Defaults", "junk"]),
    ];
    let section_body = prop_oneof![
        4 => prop::collection::vec((field, yaml_scalar()), 0..6)
            .prop_map(|fields| fields.iter().map(|(f, v)| format!("\n  {f}: {v}")).collect::<String>()),
        1 => yaml_scalar().prop_map(|v| format!(" {v}")),
    ];
    prop_oneof![
        6 => prop::collection::vec((section_name, section_body), 0..5)
            .prop_map(|sections| sections.iter().map(|(s, b)| format!("{s}:{b}\n")).collect::<String>()),
        1 => "[^\\x00]{0,200}",
        1 => (1usize..300).prop_map(|depth| "[".repeat(depth) + &"]".repeat(depth)),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_files_parse_to_a_valid_config_or_an_error_naming_the_field(text in yaml_document()) {
        match Config::parse(&text) {
            Ok(config) => {
                // What validation promises the rest of the server.
                let c = &config.collectors;
                let slowest = c.prometheus_interval.0.max(c.kafka_interval.0).max(c.scrape_interval.0);
                prop_assert!(c.stale_after.0 > slowest);
                prop_assert!(config.targets.tick.0 >= Duration::from_millis(100));
                prop_assert!(config.engine.problems().is_empty());
            }
            Err(e) => {
                let message = e.to_string();
                let names_a_field = SECTIONS
                    .iter()
                    .map(|(s, _)| *s)
                    .chain(["defaults"])
                    .any(|s| message.contains(&format!("{s}.")) || message.contains(&format!("{s}:")))
                    || ["unknown field", "duplicate field", "missing field"].iter().any(|f| message.contains(f))
                    // The document itself is not a mapping.
                    || message.contains("expected struct Config");
                // Text that is not YAML at all has no field to name yet, only its syntax error.
                let not_yaml = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text).is_err()
                    && matches!(e, ConfigError::Parse { .. });
                prop_assert!(names_a_field || not_yaml, "{text:?}: {message}");
            }
        }
    }
}

// === engine ===

/// One step's inputs: a rate and/or a lag (either may be missing, as a source without a reading).
fn signal() -> impl Strategy<Value = Inputs> {
    let rps = prop_oneof![
        4 => Just(Some(0.0)),
        4 => (0.0f64..50.0).prop_map(Some),
        1 => Just(None),
        1 => select(vec![f64::NAN, f64::INFINITY, -3.0, 1e300, 1e-300]).prop_map(Some),
    ];
    let lag = prop_oneof![
        4 => Just(None),
        3 => (0.0f64..100.0, 0.0f64..100.0, 0usize..8).prop_map(|(l, p, n)| Some(LagSummary {
            lag: l,
            lag_with_persistent: l + p,
            partitions: n,
            partitions_with_lag: n.min(1),
        })),
        1 => select(vec![f64::NAN, f64::INFINITY, -1.0]).prop_map(|v| Some(LagSummary {
            lag: v,
            lag_with_persistent: v,
            partitions: 1,
            partitions_with_lag: 1,
        })),
    ];
    (rps, lag).prop_map(|(rps, lag)| Inputs { rps, lag, held: false })
}

/// Time between steps: the server's ticks and readings, pauses, and long idle stretches.
fn gap() -> impl Strategy<Value = Duration> {
    prop_oneof![
        6 => (0u64..1_500).prop_map(Duration::from_millis),
        2 => (1u64..600).prop_map(Duration::from_secs),
        1 => (600u64..30_000).prop_map(Duration::from_secs),
        1 => Just(Duration::ZERO),
    ]
}

/// Steps `engine` through `steps` and checks every decision; returns the engine.
fn run(
    mut engine: TargetEngine,
    rules: (&RateRules, &LagRules),
    steps: &[(Duration, Inputs)],
) -> Result<TargetEngine, TestCaseError> {
    let (rate, lag) = rules;
    let mut now = Now { mono: Duration::from_secs(1), wall_secs: 1_767_571_200.0 };
    for (i, (gap, inputs)) in steps.iter().enumerate() {
        now.mono += *gap;
        now.wall_secs += gap.as_secs_f64();
        let d = engine.step(now, inputs);
        let rps = inputs.rps.filter(|r| r.is_finite());
        let lag_with_persistent = inputs.lag.as_ref().map(|l| l.lag_with_persistent).filter(|l| l.is_finite());
        if rps.is_some_and(|r| r > rate.activation_rps)
            || lag_with_persistent.is_some_and(|l| l > lag.activation_lag_threshold)
        {
            prop_assert!(d.active, "step {i}: inactive with {inputs:?}: {d:?}");
        }
        for m in [MetricName::Replicas, MetricName::Rps, MetricName::Lag] {
            let v = d.metric_value(m);
            prop_assert!(v.is_finite() && v >= 0.0, "step {i}: {m:?} = {v} from {inputs:?}");
        }
    }
    Ok(engine)
}

/// An engine in any predictive mode, lead time and schedule, with the rules it was built with.
fn engine_with_rules() -> impl Strategy<Value = (TargetEngine, RateRules, LagRules)> {
    let mode = select(vec![PredictiveMode::Off, PredictiveMode::Idle, PredictiveMode::Full]);
    let schedule = prop::option::of(select(vec!["*/7 * * * *", "30 9 * * 1-5", "0 0 * * *"]));
    (mode, 0u64..120, schedule, 0.01f64..100.0, 0.0f64..20.0, 0.5f64..50.0, 0.0f64..20.0).prop_map(
        |(mode, lead, schedule, target, activation, threshold, lag_activation)| {
            let rate = RateRules { target_rps: target, activation_rps: activation };
            let lag =
                LagRules { lag_threshold: threshold, activation_lag_threshold: lag_activation, ..LagRules::default() };
            let schedule = schedule.map(|s| Schedule::parse(s).unwrap());
            let spec = PredictiveSpec { mode, lead_time: Duration::from_secs(lead), schedule, instance_memory: None };
            let params = EngineSettings::default().params(&spec);
            (TargetEngine::new(rate.clone(), lag.clone(), params), rate, lag)
        },
    )
}

proptest! {
    #![proptest_config(cases(48))]

    #[test]
    fn the_engine_keeps_its_invariants_over_random_signal_sequences(
        (engine, rate, lag) in engine_with_rules(),
        steps in prop::collection::vec((gap(), signal()), 1..1500),
    ) {
        run(engine, (&rate, &lag), &steps)?;
    }
}

proptest! {
    #![proptest_config(cases(6))]

    #[test]
    fn an_engines_memory_does_not_grow_over_ten_thousand_steps(
        (engine, rate, lag) in engine_with_rules(),
        pattern in prop::collection::vec((gap(), signal()), 50..200),
    ) {
        let built = engine.footprint();
        // 96 bins × 3, 8 wakes, 96 profile slots × 2: a few KiB per target.
        prop_assert!(built <= 1024, "{built}");
        let steps: Vec<(Duration, Inputs)> = pattern.iter().cycle().take(10_000).cloned().collect();
        let engine = run(engine, (&rate, &lag), &steps)?;
        prop_assert_eq!(engine.footprint(), built);
    }
}

// === KEDA's lag rules ===

fn partition() -> impl Strategy<Value = PartitionOffsets> {
    let offset = prop_oneof![4 => (0i64..1_000).prop_map(Some), 1 => Just(None), 1 => any::<i64>().prop_map(Some)];
    (0i32..8, offset.clone(), offset, 0u64..100).prop_map(|(partition, committed, latest, unchanged)| {
        PartitionOffsets {
            topic: "t".into(),
            partition,
            committed,
            committed_unchanged_for: Duration::from_secs(unchanged),
            latest,
        }
    })
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn lag_is_finite_non_negative_and_capped_at_partitions_times_threshold(
        partitions in prop::collection::vec(partition(), 0..8),
        flags in prop::array::uniform5(any::<bool>()),
        earliest in any::<bool>(),
        threshold in 0.5f64..100.0,
    ) {
        let [allow_idle, exclude_persistent, limit_to_lag, zero_on_invalid, even] = flags;
        let rules = LagRules {
            lag_threshold: threshold,
            activation_lag_threshold: 0.0,
            offset_reset_policy: if earliest { OffsetResetPolicy::Earliest } else { OffsetResetPolicy::Latest },
            allow_idle_consumers: allow_idle,
            exclude_persistent_lag: exclude_persistent,
            limit_to_partitions_with_lag: limit_to_lag,
            scale_to_zero_on_invalid_offset: zero_on_invalid,
            ensure_even_distribution: even,
        };
        let s = summarize(&partitions, &rules, Duration::from_secs(30));
        prop_assert!(s.lag.is_finite() && s.lag >= 0.0, "{s:?}");
        prop_assert!(s.lag_with_persistent.is_finite() && s.lag_with_persistent >= 0.0, "{s:?}");
        prop_assert!(s.partitions_with_lag <= s.partitions && s.partitions == partitions.len());
        if !allow_idle || limit_to_lag || even {
            prop_assert!(s.lag <= partitions.len() as f64 * threshold + 1e-9, "{s:?}");
        }
    }
}
