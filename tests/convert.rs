//! `spinscale convert` on fixtures of the shape KEDA users write today (`tests/fixtures/convert/`):
//! the function and the binary (with a file and with `-` on stdin), the output read back document by
//! document and field by field, its triggers fed to spinscale's own parser, and bad input refused
//! with the document and the field named.

mod manifests;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use manifests::{ScaledObject, SpinApp, Trigger};
use spinscale::convert::{COMMENT_PREFIX, Converted, DEFAULT_SCALER_ADDRESS, Options, convert};
use spinscale::target::{MetricsMode, OffsetResetPolicy, TargetSpec};

fn fixture(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convert").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

fn converted(name: &str) -> Converted {
    convert(&fixture(name).1, &Options::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The output's documents, as Kubernetes types read them.
fn documents(yaml: &str) -> Vec<serde_json::Value> {
    manifests::documents(yaml, "convert output")
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the output"))
}

fn spin_app(docs: &[serde_json::Value], name: &str) -> SpinApp {
    manifests::typed(find(docs, "SpinApp", name), name)
}

fn scaled_object(docs: &[serde_json::Value], name: &str) -> ScaledObject {
    manifests::typed(find(docs, "ScaledObject", name), name)
}

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// spinscale's parser accepts the trigger as it is, without warnings.
fn spinscale_reads(trigger: &Trigger) -> TargetSpec {
    let metadata = trigger.metadata.clone().into_iter().collect();
    let spec = TargetSpec::parse(&metadata, &BTreeMap::new()).unwrap_or_else(|e| panic!("{trigger:?}: {e}"));
    assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
    spec
}

/// The 1-based line of the first line of `text` equal to `line`.
fn line_of(text: &str, line: &str) -> usize {
    text.lines().position(|l| l == line).map(|i| i + 1).unwrap_or_else(|| panic!("no line {line:?}"))
}

fn spinscale(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spinscale"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spinscale starts");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(text.as_bytes()).expect("stdin written");
    }
    child.wait_with_output().expect("spinscale ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

#[test]
fn the_article_manifests_become_the_deploy_example() {
    let out = converted("article.yaml");
    let docs = documents(&out.yaml);
    assert_eq!(docs.len(), 5, "every document is kept:\n{}", out.yaml);

    let app = spin_app(&docs, "webhook-handler");
    assert_eq!(app.api_version, "core.spinkube.dev/v1alpha1");
    assert_eq!((app.spec.enable_autoscaling, app.spec.replicas), (Some(true), None));
    assert_eq!(app.spec.image, "ghcr.io/myorg/webhook-handler:v1");
    assert_eq!(app.spec.executor, "containerd-shim-spin");
    let limits = app.spec.resources.as_ref().and_then(|r| r.limits.clone()).expect("limits kept");
    assert_eq!(limits, metadata(&[("cpu", "100m"), ("memory", "64Mi")]));

    let scaled = scaled_object(&docs, "webhook-handler-scaler");
    let target = &scaled.spec.scale_target_ref;
    assert_eq!(
        (target.api_version.as_deref(), target.kind.as_deref(), target.name.as_str()),
        (Some("apps/v1"), Some("Deployment"), "webhook-handler")
    );
    let spec = &scaled.spec;
    assert_eq!((spec.min_replica_count, spec.max_replica_count, spec.cooldown_period), (Some(0), Some(50), Some(30)));
    assert_eq!(spec.triggers.len(), 1);
    let trigger = &spec.triggers[0];
    assert_eq!(trigger.type_, "external-push");
    assert_eq!((trigger.name.as_ref(), trigger.metric_type.as_ref()), (None, None));
    assert_eq!(
        trigger.metadata,
        metadata(&[
            ("scalerAddress", DEFAULT_SCALER_ADDRESS),
            ("prometheusAddress", "http://prometheus.monitoring:9090"),
            ("query", r#"sum(rate(http_requests_total{app="webhook-handler"}[1m]))"#),
            ("targetRps", "10"),
            ("bootstrapServers", "kafka.default:9092"),
            ("consumerGroup", "webhook-handler"),
            ("topic", "events"),
            ("lagThreshold", "5"),
        ])
    );
    let parsed = spinscale_reads(trigger);
    assert_eq!(parsed.prometheus.expect("Prometheus source").address, "http://prometheus.monitoring:9090");
    assert_eq!(parsed.kafka.expect("Kafka source").consumer_group, "webhook-handler");
    assert_eq!((parsed.rate.target_rps, parsed.lag.lag_threshold, parsed.metrics), (10.0, 5.0, MetricsMode::Combined));

    // The shipped example is exactly this conversion.
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/webhook-handler.yaml");
    let example_text = std::fs::read_to_string(&example_path).expect("the deploy example");
    let example = manifests::documents(&example_text, "deploy/examples/webhook-handler.yaml");
    assert_eq!(&example[0], find(&docs, "SpinApp", "webhook-handler"));
    assert_eq!(&example[1], find(&docs, "ScaledObject", "webhook-handler-scaler"));

    let api = spin_app(&docs, "api-function");
    assert_eq!(api.api_version, "core.spinkube.dev/v1alpha1");
    assert_eq!((api.spec.replicas, api.spec.enable_autoscaling), (Some(1), None), "not autoscaled: replicas stay");

    let service = find(&docs, "Service", "api-function");
    assert_eq!(service["spec"]["selector"], serde_json::json!({"core.spinkube.dev/app-name": "api-function"}));
    assert_eq!(service["spec"]["ports"], serde_json::json!([{"port": 80, "targetPort": 80}]));

    let input = fixture("article.yaml").1;
    let ingress = input.rsplit("---\n").next().expect("the Ingress document");
    assert!(out.yaml.ends_with(ingress), "the Ingress passes through as written");
}

#[test]
fn every_change_is_a_note_and_a_comment_on_its_document() {
    let (_, input) = fixture("article.yaml");
    let out = converted("article.yaml");
    let comments: Vec<&str> = out.yaml.lines().filter_map(|l| l.strip_prefix(COMMENT_PREFIX)).collect();
    let messages: Vec<&str> = out.notes.iter().map(|n| n.message.as_str()).collect();
    assert_eq!(comments, messages);

    let scaled_line = line_of(&input, "apiVersion: keda.sh/v1alpha1");
    let on = |document: &str| -> Vec<&str> {
        out.notes.iter().filter(|n| n.document == document).map(|n| n.message.as_str()).collect()
    };
    let app_notes = on("document 1 (SpinApp webhook-handler, line 4)");
    assert!(app_notes.iter().any(|m| m.starts_with("apiVersion core.spinoperator.dev/v1alpha1 → core.spinkube.dev")));
    assert!(app_notes.iter().any(|m| m.starts_with("spec.replicas: 0 removed")));
    assert!(app_notes.iter().any(|m| m.starts_with("spec.enableAutoscaling: true")));
    let scaled_notes = on(&format!("document 2 (ScaledObject webhook-handler-scaler, line {scaled_line})"));
    for wanted in [
        "spec.scaleTargetRef: SpinApp webhook-handler → apps/v1 Deployment webhook-handler",
        "spec.triggers[0] (prometheus) and spec.triggers[1] (kafka) → one external-push trigger",
        "spec.triggers[0].metadata.metricName: dropped",
        "spec.triggers[0] (prometheus): serverAddress → prometheusAddress, threshold → targetRps",
    ] {
        assert!(scaled_notes.iter().any(|m| m.starts_with(wanted)), "{wanted:?} not in {scaled_notes:#?}");
    }
    let service_line = line_of(&input, "kind: Service") - 1;
    let service_notes = on(&format!("document 4 (Service api-function, line {service_line})"));
    assert!(service_notes.iter().any(|m| m.starts_with("spec.selector: label core.spinoperator.dev/app-name")));
    assert!(out.notes.iter().all(|n| !n.document.contains("Ingress")), "nothing to say about the Ingress");
}

#[test]
fn formula_scaled_objects_keep_one_named_trigger_per_signal_and_unchanged_ones_keep_their_text() {
    let (_, input) = fixture("shop.yaml");
    let out = converted("shop.yaml");
    let docs = documents(&out.yaml);

    let app = spin_app(&docs, "orders");
    assert_eq!(app.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!((app.spec.enable_autoscaling, app.spec.replicas), (Some(true), None));

    let scaled = scaled_object(&docs, "orders");
    assert_eq!(scaled.spec.scale_target_ref.kind.as_deref(), Some("Deployment"));
    assert_eq!(scaled.spec.polling_interval, Some(15));
    assert!(scaled.spec.advanced.as_ref().is_some_and(|a| a["scalingModifiers"]["formula"] == "rps / 20 + lag / 100"));
    let triggers = &scaled.spec.triggers;
    let shape: Vec<(&str, Option<&str>)> = triggers.iter().map(|t| (t.type_.as_str(), t.name.as_deref())).collect();
    assert_eq!(shape, [("external-push", Some("rps")), ("external-push", Some("lag")), ("cron", None)]);
    assert!(triggers[0].authentication_ref.is_none());
    assert_eq!(
        triggers[0].metadata,
        metadata(&[
            ("scalerAddress", DEFAULT_SCALER_ADDRESS),
            ("prometheusAddress", "https://thanos.monitoring:9090"),
            ("query", "sum(rate(orders_requests_total[2m]))"),
            ("targetRps", "20"),
            ("activationRps", "0.5"),
            ("ignoreNullValues", "false"),
            ("customHeaders", "X-Scope-OrgID=shop"),
            ("metrics", "separate"),
        ])
    );
    let rps = spinscale_reads(&triggers[0]);
    let prometheus = rps.prometheus.expect("Prometheus source");
    assert_eq!(prometheus.headers, [("X-Scope-OrgID".to_string(), "shop".to_string())]);
    assert!(!prometheus.ignore_null_values);
    assert_eq!((rps.rate.activation_rps, rps.metrics), (0.5, MetricsMode::Separate));

    let lag = spinscale_reads(&triggers[1]);
    let kafka = lag.kafka.expect("Kafka source");
    assert_eq!(kafka.bootstrap_servers, "kafka-0.kafka:9092,kafka-1.kafka:9092");
    assert_eq!(kafka.partition_limitation, Some(vec![0, 1, 2, 3]));
    assert_eq!((lag.lag.offset_reset_policy, lag.lag.lag_threshold), (OffsetResetPolicy::Earliest, 100.0));
    assert_eq!(
        triggers[2].metadata,
        metadata(&[
            ("timezone", "Europe/Paris"),
            ("start", "0 8 * * 1-5"),
            ("end", "0 18 * * 1-5"),
            ("desiredReplicas", "2")
        ])
    );

    let messages: Vec<&str> = out.notes.iter().map(|n| n.message.as_str()).collect();
    for wanted in ["spec.triggers[0].authenticationRef: dropped", "spec.triggers[0].metadata.unsafeSsl: dropped"] {
        assert!(messages.iter().any(|m| m.starts_with(wanted)), "{wanted:?} not in {messages:#?}");
    }

    let reports = input.split("---\n").last().expect("the reports document");
    let body = reports.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert!(out.yaml.trim_end().ends_with(body.trim_end()), "an unchanged ScaledObject keeps its text:\n{}", out.yaml);
}

#[test]
fn the_binary_converts_a_file_and_stdin_alike() {
    let (path, input) = fixture("article.yaml");
    let expected = converted("article.yaml");
    let path = path.to_str().expect("UTF-8 path");

    let from_file = spinscale(&["convert", path], None);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    assert_eq!(text(&from_file.stdout), expected.yaml);
    let stderr = text(&from_file.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.notes.len(), "{stderr}");
    for (line, note) in lines.iter().zip(&expected.notes) {
        assert_eq!(*line, format!("spinscale convert: {path}: {note}"));
    }

    let from_stdin = spinscale(&["convert", "-"], Some(&input));
    assert!(from_stdin.status.success(), "{}", text(&from_stdin.stderr));
    assert_eq!(text(&from_stdin.stdout), expected.yaml);
    assert!(text(&from_stdin.stderr).starts_with("spinscale convert: <stdin>: document 1"));

    let address = "spinscale.keda.svc.cluster.local:9500";
    let elsewhere = spinscale(&["convert", "--scaler-address", address, "-"], Some(&input));
    assert!(elsewhere.status.success(), "{}", text(&elsewhere.stderr));
    let scaled = scaled_object(&documents(&text(&elsewhere.stdout)), "webhook-handler-scaler");
    assert_eq!(scaled.spec.triggers[0].metadata["scalerAddress"], address);
}

#[test]
fn bad_input_fails_naming_the_document_and_the_field() {
    let (_, input) = fixture("article.yaml");
    let scaled_line = line_of(&input, "apiVersion: keda.sh/v1alpha1");
    let scaled = format!("document 2 (ScaledObject webhook-handler-scaler, line {scaled_line})");
    let triggers_at = input.find("  triggers:\n").expect("triggers");
    let triggers_end = input[triggers_at..].find("---\n").map(|i| triggers_at + i).expect("end of the document");
    let without_triggers = format!("{}{}", &input[..triggers_at], &input[triggers_end..]);
    let cases = [
        ("kind: [Unclosed\nname: x\n".to_string(), "document at line 1: not valid YAML".to_string()),
        (without_triggers, format!("{scaled}: spec.triggers: is missing")),
        (
            input.replace("threshold: \"10\"", "threshold: 10"),
            format!("{scaled}: spec.triggers[0].metadata.threshold: is 10, not a string"),
        ),
        (
            input.replace("lagThreshold: \"5\"", "lagThreshold: {value: 5}"),
            format!("{scaled}: spec.triggers[1].metadata.lagThreshold: is a mapping, not a string"),
        ),
    ];
    for (bad, wanted) in &cases {
        let err = convert(bad, &Options::default()).expect_err(wanted);
        assert!(err.to_string().starts_with(wanted.as_str()), "{err}\nwanted: {wanted}");

        let run = spinscale(&["convert", "-"], Some(bad));
        assert!(!run.status.success(), "{wanted}: exit 0");
        assert!(run.stdout.is_empty(), "{wanted}: nothing on stdout");
        let stderr = text(&run.stderr);
        assert!(stderr.contains(&format!("<stdin>: {wanted}")), "{stderr}\nwanted: {wanted}");
    }

    let missing = spinscale(&["convert", "/nonexistent/manifests.yaml"], None);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("cannot read /nonexistent/manifests.yaml"), "{}", text(&missing.stderr));
    let bad_address = spinscale(&["convert", "--scaler-address", "spinscale", "-"], Some(&input));
    assert!(!bad_address.status.success());
    assert!(text(&bad_address.stderr).contains("--scaler-address \"spinscale\" is not host:port"));
}
