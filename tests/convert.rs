//! `spinscale convert` on fixtures of the shape KEDA users write today (`tests/fixtures/convert/`):
//! the function and the binary (with a file and with `-` on stdin), the output read back document by
//! document and field by field, its triggers fed to spinscale's own parser, and bad input refused
//! with the document and the field named. With `--activator`: Ingresses repointed at spinscale's
//! activator through an ExternalName Service, routes in the triggers (installed in a real activator
//! route table), and what the activator cannot express refused naming the Ingress field (GKE's
//! ingress-gce class included). A `kind: List` converted item by item, and comments kept in a
//! rewritten ScaledObject. The corpus of real-shaped inputs with golden outputs is
//! `tests/convert_corpus.rs`.

mod manifests;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressTLS};
use manifests::{ScaledObject, SpinApp, Trigger};
use spinscale::convert::{COMMENT_PREFIX, Converted, DEFAULT_SCALER_ADDRESS, Options, convert};
use spinscale_activator::Activator;
use spinscale_core::spec::{HttpRoute, MetricsMode, OffsetResetPolicy, TargetSpec};

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
            ("instanceMemory", "64Mi"),
        ])
    );
    let parsed = spinscale_reads(trigger);
    assert_eq!(parsed.predictive.instance_memory, Some(64 << 20), "the SpinApp's memory limit");
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
            ("prometheusConnection", "thanos-credentials"),
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
    assert_eq!(kafka.partition_limitation, Some(spinscale_core::spec::PartitionSet::of_ranges(vec![(0, 3)])));
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
    for wanted in [
        "spec.triggers[0].authenticationRef (TriggerAuthentication shop/thanos-credentials) → prometheusConnection: \
         thanos-credentials",
        "spec.triggers[0].metadata.unsafeSsl: dropped",
    ] {
        assert!(messages.iter().any(|m| m.starts_with(wanted)), "{wanted:?} not in {messages:#?}");
    }

    let config = out.config.as_deref().expect("the connection for spinscale's config");
    assert!(config.contains("bearerTokenFile: /var/run/secrets/spinscale/thanos-credentials/token"), "{config}");

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

// === --activator ===

const ACTIVATOR_HOST: &str = "spinscale-activator.spinscale.svc.cluster.local";

fn with_activator() -> Options {
    Options { activator: true, ..Options::default() }
}

fn converted_with_activator(name: &str) -> Converted {
    convert(&fixture(name).1, &with_activator()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ingress(docs: &[serde_json::Value], name: &str) -> Ingress {
    manifests::typed(find(docs, "Ingress", name), name)
}

/// The one ExternalName Service `spinscale-activator` of the output, checked: it stands for the
/// deploy kit's activator Service, on the port the Ingresses use.
fn external_name_service(docs: &[serde_json::Value]) -> Service {
    let all: Vec<&serde_json::Value> =
        docs.iter().filter(|d| d["kind"] == "Service" && d["metadata"]["name"] == "spinscale-activator").collect();
    assert_eq!(all.len(), 1, "one ExternalName Service per namespace");
    let service: Service = manifests::typed(all[0], "spinscale-activator");
    let spec = service.spec.clone().expect("spec");
    assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
    assert_eq!(spec.external_name.as_deref(), Some(ACTIVATOR_HOST));
    let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
    assert_eq!(ports, [80]);
    service
}

/// `(host, path, Service, port number)` of every path of an Ingress.
fn backends(ingress: &Ingress) -> Vec<(String, String, String, i32)> {
    let rules = ingress.spec.as_ref().and_then(|s| s.rules.clone()).unwrap_or_default();
    let mut all = Vec::new();
    for rule in rules {
        for path in rule.http.map(|h| h.paths).unwrap_or_default() {
            let service = path.backend.service.expect("a Service backend");
            let number = service.port.and_then(|p| p.number).unwrap_or(-1);
            all.push((rule.host.clone().unwrap_or_default(), path.path.unwrap_or_default(), service.name, number));
        }
    }
    all
}

fn to_activator(host: &str, path: &str) -> (String, String, String, i32) {
    (host.into(), path.into(), "spinscale-activator".into(), 80)
}

/// The ScaledObject's only spinscale trigger: its metadata exactly, and its route as spinscale reads it.
fn route_of(trigger: &Trigger, expected: &[(&str, &str)]) -> HttpRoute {
    assert_eq!(trigger.type_, "external-push");
    assert_eq!(trigger.metadata, metadata(expected));
    spinscale_reads(trigger).http.expect("an activator route")
}

/// Installs the routes in a real activator, as spinscale does when KEDA first calls for each target.
fn install(routes: &[(&str, &HttpRoute)]) -> Result<(), spinscale_activator::RouteError> {
    let activator = Activator::new(std::sync::Arc::new(|_: &str| {}));
    for (target, http) in routes {
        activator.set_route(spinscale::registry::trigger_route(*target, http))?;
    }
    Ok(())
}

#[tokio::test]
async fn with_activator_the_seed_api_function_is_held_and_woken_through_spinscale() {
    let out = converted_with_activator("article.yaml");
    let docs = documents(&out.yaml);
    let shape: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| (d["kind"].as_str().unwrap_or_default(), d["metadata"]["name"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        shape,
        [
            ("SpinApp", "webhook-handler"),
            ("ScaledObject", "webhook-handler-scaler"),
            ("SpinApp", "api-function"),
            ("ScaledObject", "api-function-scaler"),
            ("Service", "api-function"),
            ("Ingress", "api-function"),
            ("Service", "spinscale-activator"),
        ],
        "the new ScaledObject follows its SpinApp, the ExternalName Service its Ingress"
    );

    // The webhook handler has no Ingress: as without --activator.
    let plain = documents(&converted("article.yaml").yaml);
    for (kind, name) in [("SpinApp", "webhook-handler"), ("ScaledObject", "webhook-handler-scaler")] {
        assert_eq!(find(&docs, kind, name), find(&plain, kind, name), "{kind} {name}");
    }

    let app = spin_app(&docs, "api-function");
    assert_eq!(app.api_version, "core.spinkube.dev/v1alpha1");
    assert_eq!((app.spec.enable_autoscaling, app.spec.replicas), (Some(true), None), "now autoscaled");

    let scaled = scaled_object(&docs, "api-function-scaler");
    let target = &scaled.spec.scale_target_ref;
    assert_eq!(
        (target.api_version.as_deref(), target.kind.as_deref(), target.name.as_str()),
        (Some("apps/v1"), Some("Deployment"), "api-function")
    );
    let spec = &scaled.spec;
    assert_eq!((spec.min_replica_count, spec.max_replica_count, spec.cooldown_period), (Some(0), Some(10), Some(30)));
    let trigger = one_trigger(&scaled);
    let route = route_of(
        trigger,
        &[
            ("scalerAddress", DEFAULT_SCALER_ADDRESS),
            ("hosts", "api.example.com"),
            ("backend", "http://api-function.default.svc:80"),
        ],
    );
    assert_eq!(route.hosts, ["api.example.com"]);
    assert!(route.path_prefixes.is_empty());
    assert_eq!((route.backend.host(), route.backend.port_u16()), (Some("api-function.default.svc"), Some(80)));
    let parsed = spinscale_reads(trigger);
    assert!(parsed.prometheus.is_none() && parsed.kafka.is_none(), "the route is the signal");

    let ingress = ingress(&docs, "api-function");
    assert_eq!(backends(&ingress), [to_activator("api.example.com", "/")]);
    let path_type = ingress.spec.as_ref().and_then(|s| s.rules.as_ref()).and_then(|r| r[0].http.as_ref());
    assert_eq!(path_type.map(|h| h.paths[0].path_type.as_str()), Some("Prefix"));
    let service = external_name_service(&docs);
    assert_eq!(service.metadata.namespace, ingress.metadata.namespace);
    install(&[("default/api-function-scaler", &route)]).expect("the activator takes the route");

    let comments: Vec<&str> = out.yaml.lines().filter_map(|l| l.strip_prefix(COMMENT_PREFIX)).collect();
    let messages: Vec<&str> = out.notes.iter().map(|n| n.message.as_str()).collect();
    assert_eq!(comments, messages, "every note is a comment on its document");
    let on = |document: &str| out.notes.iter().filter(|n| n.document == document).count();
    assert_eq!(on("new ScaledObject api-function-scaler (for SpinApp api-function)"), 3);
    assert_eq!(on("new Service spinscale-activator (for Ingress api-function)"), 1);
    let ingress_notes: Vec<&str> = out
        .notes
        .iter()
        .filter(|n| n.document.contains("Ingress api-function, line"))
        .map(|n| n.message.as_str())
        .collect();
    assert!(
        ingress_notes[0].starts_with(
            "spec.rules[0].http.paths[0].backend: Service api-function port 80 → Service spinscale-activator port 80"
        ),
        "{ingress_notes:?}"
    );
    assert!(ingress_notes.iter().any(|n| n.starts_with("no namespace written")), "{ingress_notes:?}");
    let scaled_notes = out.notes.iter().filter(|n| n.document.contains("ScaledObject webhook-handler-scaler"));
    assert!(scaled_notes.clone().any(|n| n.message.starts_with("--activator: no Ingress in this input routes")));

    // The deploy kit's example is this conversion, with maxReplicaCount 50 (and without the seed's
    // own Service, which collides with the operator's).
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/api-function.yaml");
    let example_text = std::fs::read_to_string(&example_path).expect("the deploy example");
    let example = manifests::documents(&example_text, "deploy/examples/api-function.yaml");
    let mut expected_scaled = find(&docs, "ScaledObject", "api-function-scaler").clone();
    expected_scaled["spec"]["maxReplicaCount"] = 50.into();
    assert_eq!(example.len(), 4);
    assert_eq!(&example[0], find(&docs, "SpinApp", "api-function"));
    assert_eq!(example[1], expected_scaled);
    assert_eq!(&example[2], find(&docs, "Service", "spinscale-activator"));
    assert_eq!(&example[3], find(&docs, "Ingress", "api-function"));
}

fn one_trigger(scaled: &ScaledObject) -> &Trigger {
    assert_eq!(scaled.spec.triggers.len(), 1, "{:?}", scaled.spec.triggers);
    &scaled.spec.triggers[0]
}

#[test]
fn the_binary_converts_with_activator_from_a_file_and_stdin() {
    let (path, input) = fixture("article.yaml");
    let expected = converted_with_activator("article.yaml");
    let path = path.to_str().expect("UTF-8 path");

    let from_file = spinscale(&["convert", "--activator", path], None);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    assert_eq!(text(&from_file.stdout), expected.yaml);
    let stderr = text(&from_file.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), expected.notes.len(), "{stderr}");
    for (line, note) in lines.iter().zip(&expected.notes) {
        assert_eq!(*line, format!("spinscale convert: {path}: {note}"));
    }
    assert!(
        stderr.contains(&format!(
            "spinscale convert: {path}: new Service spinscale-activator (for Ingress api-function): added by --activator"
        )),
        "{stderr}"
    );

    let from_stdin = spinscale(&["convert", "-", "--activator"], Some(&input));
    assert!(from_stdin.status.success(), "{}", text(&from_stdin.stderr));
    assert_eq!(text(&from_stdin.stdout), expected.yaml);
    assert!(text(&from_stdin.stderr).contains("spinscale convert: <stdin>: new ScaledObject api-function-scaler"));

    // The activator's ExternalName follows --scaler-address to spinscale's namespace.
    let address = "spinscale.keda.svc.cluster.local:9500";
    let elsewhere = spinscale(&["convert", "--activator", "--scaler-address", address, "-"], Some(&input));
    assert!(elsewhere.status.success(), "{}", text(&elsewhere.stderr));
    let docs = documents(&text(&elsewhere.stdout));
    let service: Service = manifests::typed(find(&docs, "Service", "spinscale-activator"), "spinscale-activator");
    let external = service.spec.and_then(|s| s.external_name);
    assert_eq!(external.as_deref(), Some("spinscale-activator.keda.svc.cluster.local"));
    assert_eq!(one_trigger(&scaled_object(&docs, "api-function-scaler")).metadata["scalerAddress"], address);

    let without = spinscale(&["convert", path], None);
    assert!(!text(&without.stdout).contains("spinscale-activator"), "only with --activator");

    let bad = input.replace(
        "    - host: api.example.com
      http:",
        "    - http:",
    );
    let refused = spinscale(&["convert", "--activator", "-"], Some(&bad));
    assert!(!refused.status.success() && refused.stdout.is_empty());
    let ingress_line = line_of(&input, "apiVersion: networking.k8s.io/v1");
    let wanted =
        format!("<stdin>: document 5 (Ingress api-function, line {ingress_line}): spec.rules[0].host: is missing");
    assert!(text(&refused.stderr).contains(&wanted), "{}\nwanted: {wanted}", text(&refused.stderr));
}

#[tokio::test]
async fn http_apps_in_a_namespace_get_their_routes_field_by_field() {
    let (_, input) = fixture("http-apps.yaml");
    let out = converted_with_activator("http-apps.yaml");
    let docs = documents(&out.yaml);
    assert_eq!(docs.len(), 12, "10 documents, a ScaledObject and an ExternalName Service added:\n{}", out.yaml);
    let written = documents(&input);

    // An API on two hosts, behind TLS, with a fixed replica count and no ScaledObject.
    let app = spin_app(&docs, "api");
    assert_eq!((app.spec.enable_autoscaling, app.spec.replicas), (Some(true), None));
    let api = scaled_object(&docs, "api-scaler");
    assert_eq!(api.metadata.namespace.as_deref(), Some("web"));
    assert_eq!(api.spec.scale_target_ref.name, "api");
    assert_eq!((api.spec.min_replica_count, api.spec.max_replica_count), (Some(0), Some(10)));
    let api_route = route_of(
        one_trigger(&api),
        &[
            ("scalerAddress", DEFAULT_SCALER_ADDRESS),
            ("hosts", "api.example.com,api.example.org"),
            // The port named http-app is the operator's Service port 80.
            ("backend", "http://api.web.svc:80"),
        ],
    );
    let api_ingress = ingress(&docs, "api");
    assert_eq!(backends(&api_ingress), [to_activator("api.example.com", "/"), to_activator("api.example.org", "/")]);
    let tls: Vec<IngressTLS> = api_ingress.spec.as_ref().and_then(|s| s.tls.clone()).expect("tls kept");
    assert_eq!(tls, ingress(&written, "api").spec.and_then(|s| s.tls).expect("tls written"));
    assert_eq!(tls[0].secret_name.as_deref(), Some("api-tls"));
    assert_eq!(api_ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()), Some("nginx"));
    assert_eq!(api_ingress.metadata.annotations, ingress(&written, "api").metadata.annotations);

    // Webhooks scaled on their own counter: the route joins the folded Prometheus trigger.
    let hooks = scaled_object(&docs, "hooks");
    let hooks_route = route_of(
        one_trigger(&hooks),
        &[
            ("scalerAddress", DEFAULT_SCALER_ADDRESS),
            ("prometheusAddress", "http://prometheus.monitoring:9090"),
            ("query", r#"sum(rate(http_requests_total{app="hooks"}[1m]))"#),
            ("targetRps", "25"),
            ("hosts", "hooks.example.com"),
            ("pathPrefixes", "/github,/stripe"),
            ("backend", "http://hooks-public.web.svc:8080"),
        ],
    );
    assert_eq!(hooks_route.path_prefixes, ["/github", "/stripe"]);
    assert!(spinscale_reads(one_trigger(&hooks)).prometheus.is_some());
    assert_eq!(
        backends(&ingress(&docs, "hooks")),
        [
            to_activator("hooks.example.com", "/github"),
            to_activator("hooks.example.com", "/stripe/"),
            ("hooks.example.com".into(), "/docs".into(), "docs".into(), 80),
        ],
        "the path to a Service of no app stays"
    );

    // A Deployment scaled on CPU: a route trigger next to the cpu trigger; minReplicaCount kept.
    let legacy = scaled_object(&docs, "legacy");
    assert_eq!(legacy.spec.min_replica_count, Some(1));
    let types: Vec<&str> = legacy.spec.triggers.iter().map(|t| t.type_.as_str()).collect();
    assert_eq!(types, ["cpu", "external-push"]);
    assert_eq!(legacy.spec.triggers[0].metadata, metadata(&[("value", "60")]));
    let legacy_route = route_of(
        &legacy.spec.triggers[1],
        &[
            ("scalerAddress", DEFAULT_SCALER_ADDRESS),
            ("hosts", "legacy.example.com"),
            ("backend", "http://legacy-svc.web.svc:80"),
        ],
    );
    assert_eq!(backends(&ingress(&docs, "legacy")), [to_activator("legacy.example.com", "/")]);

    let service = external_name_service(&docs);
    assert_eq!(service.metadata.namespace.as_deref(), Some("web"));
    for (kind, name) in [("Deployment", "legacy"), ("Service", "legacy-svc"), ("Service", "hooks-public")] {
        assert_eq!(find(&docs, kind, name), find(&written, kind, name), "{kind} {name} unchanged");
    }
    install(&[("web/api-scaler", &api_route), ("web/hooks", &hooks_route), ("web/legacy", &legacy_route)])
        .expect("the activator takes every route");

    let messages: Vec<&str> = out.notes.iter().map(|n| n.message.as_str()).collect();
    for wanted in [
        "spec.rules[0].http.paths[2]: Service docs is not the Service of a SpinApp or of a scaled Deployment",
        "the query stays next to the activator's count",
        "minReplicaCount 1: left as written",
        "spec.triggers[1]: a new external-push trigger to spinscale",
    ] {
        assert!(messages.iter().any(|m| m.starts_with(wanted)), "{wanted:?} not in {messages:#?}");
    }
    assert!(!messages.iter().any(|m| m.starts_with("no namespace written")), "every object has its namespace");
}

#[tokio::test]
async fn one_host_routed_to_two_services_gives_two_routes_with_path_prefixes() {
    let out = converted_with_activator("shared-host.yaml");
    let docs = documents(&out.yaml);
    let api = route_of(
        one_trigger(&scaled_object(&docs, "api-scaler")),
        &[
            ("scalerAddress", DEFAULT_SCALER_ADDRESS),
            ("hosts", "shop.example.com"),
            ("pathPrefixes", "/api"),
            ("backend", "http://api.default.svc:80"),
        ],
    );
    let hooks = route_of(
        one_trigger(&scaled_object(&docs, "hooks-scaler")),
        &[
            ("scalerAddress", DEFAULT_SCALER_ADDRESS),
            ("hosts", "shop.example.com"),
            ("pathPrefixes", "/hooks"),
            ("backend", "http://hooks.default.svc:80"),
        ],
    );
    let shop = ingress(&docs, "shop");
    assert_eq!(backends(&shop), [to_activator("shop.example.com", "/api"), to_activator("shop.example.com", "/hooks")]);
    let tls = shop.spec.as_ref().and_then(|s| s.tls.clone()).expect("tls kept");
    assert_eq!(
        (tls[0].hosts.clone(), tls[0].secret_name.as_deref()),
        (Some(vec!["shop.example.com".into()]), Some("shop-tls"))
    );
    external_name_service(&docs);
    install(&[("default/api-scaler", &api), ("default/hooks-scaler", &hooks)]).expect("two routes on one host");
    // Had convert given both the same prefix, the activator would refuse the second.
    let clash = HttpRoute { path_prefixes: api.path_prefixes.clone(), ..hooks.clone() };
    assert!(install(&[("default/api-scaler", &api), ("default/hooks-scaler", &clash)]).is_err());
}

#[test]
fn what_the_activator_cannot_express_is_refused_naming_the_ingress_field() {
    let (_, input) = fixture("shared-host.yaml");
    let ingress_line = line_of(&input, "apiVersion: networking.k8s.io/v1");
    let shop = format!("document 3 (Ingress shop, line {ingress_line})");
    let api_path = "          - path: /api\n            pathType: Prefix\n            backend:\n              service:\n                name: api\n                port:\n                  number: 80\n";
    assert!(input.contains(api_path));
    let second_ingress = |host: &str, path: &str, service: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: more\nspec:\n  rules:\n    - host: \
             {host}\n      http:\n        paths:\n          - path: {path}\n            pathType: Prefix\n            \
             backend:\n              service:\n                name: {service}\n                port:\n                  \
             number: 80\n"
        )
    };
    // The second Ingress starts after the input's last line and a `---`.
    let more = format!("document 4 (Ingress more, line {})", input.lines().count() + 2);
    let cases = [
        (
            input.replace("    - host: shop.example.com\n      http:", "    - http:"),
            format!("{shop}: spec.rules[0].host: is missing: the rule sends every host to SpinApp api"),
        ),
        (
            input.replace(
                api_path,
                &(api_path.to_string()
                    + &api_path
                        .replace("/api", "/api/v2")
                        .replace("name: api", "name: api-internal")
                        .replace("number: 80", "number: 8080")),
            ) + "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: api-internal\nspec:\n  selector:\n    \
                   core.spinkube.dev/app-name: api\n  ports:\n    - port: 8080\n",
            format!(
                "{shop}: spec.rules[0].http.paths[1].backend.service: Service api-internal port 8080 is a second way into SpinApp api"
            ),
        ),
        (
            input.replace(
                "                name: api\n                port:\n                  number: 80",
                "                name: api\n                port:\n                  name: grpc",
            ),
            format!(
                "{shop}: spec.rules[0].http.paths[0].backend.service.port.name: \"grpc\" is not a port of Service api"
            ),
        ),
        (
            input.clone() + &second_ingress("api.example.com", "/", "api"),
            format!(
                "{more}: spec.rules[0].host: api.example.com sends / to SpinApp api while shop.example.com sends /api"
            ),
        ),
        (
            input.clone() + &second_ingress("shop.example.com", "/api", "hooks"),
            format!(
                "{more}: spec.rules[0].host: host shop.example.com path prefix /api goes to SpinApp hooks here and to \
                 SpinApp api through spec.rules[0].http.paths[0] of Ingress shop"
            ),
        ),
    ];
    for (bad, wanted) in &cases {
        let err = convert(bad, &with_activator()).expect_err(wanted);
        assert!(err.to_string().starts_with(wanted.as_str()), "{err}\nwanted: {wanted}");
        assert!(convert(bad, &Options::default()).is_ok(), "only --activator reads Ingresses: {wanted}");
    }
}

#[test]
fn without_activator_ingresses_pass_through_as_written() {
    for name in ["http-apps.yaml", "shared-host.yaml"] {
        let (_, input) = fixture(name);
        let out = converted(name);
        assert!(!out.yaml.contains("spinscale-activator"), "{name}");
        assert_eq!(documents(&out.yaml).len(), documents(&input).len(), "{name}: nothing added");
        for ingress in input.split("---\n").filter(|d| d.contains("kind: Ingress")) {
            assert!(out.yaml.contains(ingress), "{name}: the Ingress keeps its text");
        }
    }
}

#[test]
fn converting_the_activator_output_again_changes_nothing() {
    for name in ["article.yaml", "http-apps.yaml", "shared-host.yaml"] {
        let once = converted_with_activator(name);
        let twice = convert(&once.yaml, &with_activator()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(documents(&twice.yaml), documents(&once.yaml), "{name}");
        assert!(!twice.notes.iter().any(|n| n.document.starts_with("new ")), "{name}: nothing added twice");
        assert!(!twice.notes.iter().any(|n| n.message.contains("runs one replica")), "{name}: {:#?}", twice.notes);
    }
}

#[test]
fn with_activator_an_ingress_whose_controller_cannot_reach_an_external_name_is_refused_naming_its_class() {
    // For issue 19: GKE's ingress-gce routes to no ExternalName Service.
    let (_, input) = fixture("article.yaml");
    let ingress_line = line_of(&input, "apiVersion: networking.k8s.io/v1");
    let ingress = format!("document 5 (Ingress api-function, line {ingress_line})");
    let spec = "spec:\n  rules:\n    - host: api.example.com";
    let metadata = "kind: Ingress\nmetadata:\n  name: api-function\nspec:";
    assert!(input.contains(spec) && input.contains(metadata));
    let default_gce = "---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: gke-l7\n  \
                       annotations:\n    ingressclass.kubernetes.io/is-default-class: \"true\"\nspec:\n  \
                       controller: k8s.io/ingress-gce\n";
    let cases = [
        (
            input.replace(spec, "spec:\n  ingressClassName: gce-internal\n  rules:\n    - host: api.example.com"),
            "spec.ingressClassName: \"gce-internal\"",
        ),
        (
            input.replace(
                metadata,
                "kind: Ingress\nmetadata:\n  name: api-function\n  annotations:\n    kubernetes.io/ingress.class: gce\nspec:",
            ),
            "metadata.annotations.kubernetes.io/ingress.class: \"gce\"",
        ),
        (input.clone() + default_gce, "spec.ingressClassName: \"gke-l7\" (unset: the default IngressClass)"),
    ];
    for (bad, field) in &cases {
        let err = convert(bad, &with_activator()).expect_err(field);
        let wanted = format!("{ingress}: {field}: the GCE ingress controller (k8s.io/ingress-gce)");
        assert!(err.to_string().starts_with(&wanted), "{err}\nwanted: {wanted}");
        assert!(convert(bad, &Options::default()).is_ok(), "without --activator the Ingress passes through");
    }
    let nginx = input.replace(spec, "spec:\n  ingressClassName: nginx\n  rules:\n    - host: api.example.com");
    assert!(convert(&nginx, &with_activator()).is_ok());
}

#[test]
fn a_list_from_kubectl_is_converted_item_by_item_and_gains_the_activator_s_objects_as_items() {
    // For issue 19: `kubectl get -o yaml` prints a List, whose items used to pass through.
    let (_, input) = fixture("article.yaml");
    let docs = documents(&input);
    let list =
        serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": docs});
    let text = serde_yaml_ng::to_string(&list).expect("YAML");
    let out = convert(&text, &with_activator()).expect("converts");
    let output = documents(&out.yaml);
    assert_eq!(output.len(), 1, "one List in, one List out");
    let items = output[0]["items"].as_array().expect("items").clone();
    let plain = documents(&converted_with_activator("article.yaml").yaml);
    assert_eq!(items, plain, "the same objects as the documents converted one by one, in the same order");
    assert!(out.notes.iter().all(|n| n.document.starts_with("document 1 (List, line 1) items[")), "{:#?}", out.notes);
    let comments = out.yaml.lines().filter(|l| l.starts_with(COMMENT_PREFIX)).count();
    assert_eq!(comments, out.notes.len(), "every note is a comment on the List");
    let again = convert(&out.yaml, &with_activator()).expect("converts");
    assert_eq!(again.yaml, out.yaml, "converting the converted List changes nothing");
}

#[test]
fn comments_inside_a_rewritten_scaled_object_stay_with_their_fields() {
    // For issue 19: rewriting a ScaledObject lost every comment inside it.
    let (_, input) = fixture("article.yaml");
    let commented = input
        .replace("  maxReplicaCount: 50\n", "  # the node pool's size\n  maxReplicaCount: 50\n")
        .replace("        threshold: \"10\"\n", "        threshold: \"10\" # from the load test\n")
        .replace("        topic: events\n", "        # the webhook events\n        topic: events\n");
    let out = convert(&commented, &Options::default()).expect("converts");
    for wanted in [
        "  # the node pool's size\n  maxReplicaCount: 50\n",
        "      targetRps: '10' # from the load test\n",
        "      # the webhook events\n      topic: events\n",
    ] {
        assert!(out.yaml.contains(wanted), "{wanted:?} not in:\n{}", out.yaml);
    }
    assert_eq!(documents(&out.yaml), documents(&converted("article.yaml").yaml), "comments change no value");
}
