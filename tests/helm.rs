//! The Helm chart (`deploy/helm/spinscale`), rendered and linted by Helm itself: PyPI's
//! `helm-python-sdk` (import `helm_python`) binds Helm v4's Go SDK, so no `helm` binary is needed.
//! `scripts/install-helm-sdk.sh` installs it into `target/helm-venv`; without it these tests skip
//! (and fail where `SPINSCALE_REQUIRE_COMPONENTS` or `CI` is set).
//!
//! Every rendered object is parsed into k8s-openapi types (and typed structs for the Prometheus
//! Operator's kinds, from `tests/manifests`), round-tripped so a misspelt field fails, and checked:
//! the default render is deploy/base (the kustomize kit) object by object, and each value set
//! (activator off, TLS, monitoring, extra arguments, another release and namespace) changes what it
//! should. The schema rejects wrong values at render and lint time.

mod manifests;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use manifests::{Kustomization, PrometheusRule, ServiceMonitor};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use spinscale::config::Config;

const RELEASE: &str = "spinscale";
const NAMESPACE: &str = "spinscale";
/// Labels Helm charts add by convention and deploy/base does not have: the only difference the
/// comparison with the kit allows (in metadata labels and in selectors alike).
const HELM_LABELS: [&str; 3] = ["helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> PathBuf {
    repo().join("deploy/helm/spinscale")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// === the Helm engine ===

/// Same rule as tests/support's `components_required`: required in CI and in scripts/test.sh.
fn components_required() -> bool {
    std::env::var_os("SPINSCALE_REQUIRE_COMPONENTS").is_some() || std::env::var_os("CI").is_some()
}

/// The python of scripts/install-helm-sdk.sh's virtualenv, if `helm_python` loads in it; `None`
/// (with the reason printed) when it is missing and components are not required.
fn helm_python() -> Option<&'static Path> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let python = match (std::env::var_os("SPINSCALE_HELM_PYTHON"), std::env::var_os("SPINSCALE_HELM_VENV")) {
            (Some(python), _) => PathBuf::from(python),
            (None, Some(venv)) => PathBuf::from(venv).join("bin/python"),
            (None, None) => repo().join("target/helm-venv/bin/python"),
        };
        if !python.exists() {
            return Err(format!("no {}", python.display()));
        }
        let probe = Command::new(&python)
            .args(["-c", "import helm_python as h; print(h.__version__, h.helm_sdk_version())"])
            .output()
            .map_err(|e| format!("{}: {e}", python.display()))?;
        if !probe.status.success() {
            return Err(format!(
                "{} cannot import helm_python: {}",
                python.display(),
                String::from_utf8_lossy(&probe.stderr).trim()
            ));
        }
        eprintln!("helm-python-sdk {}", String::from_utf8_lossy(&probe.stdout).trim());
        Ok(python)
    });
    match found {
        Ok(python) => Some(python),
        Err(reason) => {
            assert!(
                !components_required(),
                "the Helm SDK is required: run `bash scripts/install-helm-sdk.sh` ({reason})"
            );
            eprintln!("SKIPPED: the Helm SDK is missing ({reason}); run `bash scripts/install-helm-sdk.sh`");
            None
        }
    }
}

/// Loads the chart and renders it (`op: render`, which validates the values against
/// values.schema.json first, as `helm install` does) or lints it (`op: lint`, `helm lint --strict`).
const DRIVER: &str = r#"
import json, sys
import helm_python as helm

req = json.load(sys.stdin)
try:
    if req["op"] == "render":
        with helm.Chart.load(req["chart"]) as chart:
            out = {"ok": True, "manifests": chart.render(req["values"], name=req["name"], namespace=req["namespace"])}
    else:
        out = {"ok": True, "report": helm.lint(req["chart"], req["values"], strict=True, namespace=req["namespace"])}
except helm.HelmError as e:
    out = {"ok": False, "type": type(e).__name__, "error": str(e)}
json.dump(out, sys.stdout)
"#;

fn drive(python: &Path, request: &Value) -> Value {
    let mut child = Command::new(python)
        .args(["-c", DRIVER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("request written");
    let output = child.wait_with_output().expect("the driver ends");
    assert!(output.status.success(), "the Helm driver failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("driver output: {e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// What rendering `values` gives: the manifests by template path, or Helm's error.
fn try_render(python: &Path, values: &Value, name: &str, namespace: &str) -> Result<BTreeMap<String, String>, String> {
    let request = json!({"op": "render", "chart": chart_dir(), "values": values, "name": name, "namespace": namespace});
    let answer = drive(python, &request);
    match answer["ok"].as_bool() {
        Some(true) => Ok(serde_json::from_value(answer["manifests"].clone()).expect("manifests by template")),
        _ => Err(format!("{}: {}", answer["type"].as_str().unwrap_or("?"), answer["error"].as_str().unwrap_or("?"))),
    }
}

/// `helm lint --strict` with `values`: the report's errors and its messages of severity warning
/// (2) or error (3).
fn lint_problems(python: &Path, values: &Value) -> Vec<String> {
    let request = json!({"op": "lint", "chart": chart_dir(), "values": values, "namespace": NAMESPACE});
    let answer = drive(python, &request);
    assert_eq!(answer["ok"], json!(true), "lint itself failed: {answer}");
    let report = &answer["report"];
    assert_eq!(report["total_charts_linted"], json!(1), "{report}");
    let mut problems: Vec<String> = report["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e.as_str().unwrap_or_default().to_string())
        .collect();
    for message in report["messages"].as_array().expect("messages") {
        if message["severity"].as_i64().unwrap_or(3) >= 2 {
            problems.push(format!("{}: {}", message["path"], message["error"]));
        }
    }
    problems
}

// === rendered objects ===

/// One object of a render or of the kit.
#[derive(Clone, Debug)]
struct Object {
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    doc: Value,
    origin: String,
}

/// Every object of one render (or of deploy/base), each checked to parse into its typed form.
#[derive(Debug)]
struct Objects(Vec<Object>);

impl Objects {
    fn from_documents(sources: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut objects = Vec::new();
        for (origin, text) in sources {
            for (i, doc) in manifests::documents(&text, &origin).into_iter().enumerate() {
                let origin = format!("{origin} document {}", i + 1);
                check_typed(&doc, &origin);
                let (api_version, kind) = manifests::type_of(&doc);
                let meta = &doc["metadata"];
                objects.push(Object {
                    api_version: api_version.to_string(),
                    kind: kind.to_string(),
                    name: meta["name"].as_str().unwrap_or_else(|| panic!("{origin}: no name")).to_string(),
                    namespace: meta["namespace"].as_str().map(String::from),
                    doc,
                    origin,
                });
            }
        }
        Objects(objects)
    }

    fn render(values: &Value) -> Option<Self> {
        Self::render_as(values, RELEASE, NAMESPACE)
    }

    fn render_as(values: &Value, name: &str, namespace: &str) -> Option<Self> {
        let python = helm_python()?;
        let manifests = try_render(python, values, name, namespace).unwrap_or_else(|e| panic!("render {values}: {e}"));
        assert!(manifests.contains_key("spinscale/templates/NOTES.txt"), "{:?}", manifests.keys());
        let sources = manifests.into_iter().filter(|(path, _)| path.ends_with(".yaml"));
        let objects = Self::from_documents(sources);
        objects.check_references();
        Some(objects)
    }

    /// deploy/base as `kubectl apply -k` builds it: its resources and its ConfigMap generators.
    fn base() -> Self {
        let dir = repo().join("deploy/base");
        let path = dir.join("kustomization.yaml");
        let docs = manifests::documents(&read(&path), "deploy/base/kustomization.yaml");
        let kustomization: Kustomization = manifests::typed(&docs[0], "deploy/base/kustomization.yaml");
        let mut sources: Vec<(String, String)> =
            kustomization.resources.iter().map(|r| (format!("deploy/base/{r}"), read(&dir.join(r)))).collect();
        for generator in &kustomization.config_map_generator {
            let data: BTreeMap<String, String> =
                generator.files.iter().map(|f| (f.clone(), read(&dir.join(f)))).collect();
            let labels = generator.options.as_ref().and_then(|o| o.labels.clone());
            let mut metadata = json!({"name": generator.name, "namespace": generator.namespace});
            if let Some(labels) = labels {
                metadata["labels"] = json!(labels);
            }
            let doc = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data});
            sources.push((format!("deploy/base configMapGenerator {}", generator.name), doc.to_string()));
        }
        Self::from_documents(sources)
    }

    fn find(&self, kind: &str, name: &str) -> Option<&Object> {
        self.0.iter().find(|o| o.kind == kind && o.name == name)
    }

    fn has(&self, kind: &str, name: &str) -> bool {
        self.find(kind, name).is_some()
    }

    fn get<T: DeserializeOwned>(&self, kind: &str, name: &str) -> T {
        let object = self.find(kind, name).unwrap_or_else(|| panic!("no {kind} {name} in {:?}", self.names()));
        manifests::typed(&object.doc, &object.origin)
    }

    fn all<T: DeserializeOwned>(&self, kind: &str) -> Vec<T> {
        self.0.iter().filter(|o| o.kind == kind).map(|o| manifests::typed(&o.doc, &o.origin)).collect()
    }

    fn names(&self) -> BTreeSet<(String, String)> {
        self.0.iter().map(|o| (o.kind.clone(), o.name.clone())).collect()
    }

    fn deployment(&self) -> Deployment {
        let mut all: Vec<Deployment> = self.all("Deployment");
        assert_eq!(all.len(), 1, "one Deployment");
        all.remove(0)
    }

    /// The references between the objects, for any values: selectors reach the pods, volumes and
    /// bindings name objects that exist (or are meant to be brought), namespaced objects are in the
    /// release namespace.
    fn check_references(&self) {
        let deployment = self.deployment();
        let namespace = deployment.metadata.namespace.clone().expect("Deployment namespace");
        let spec = &deployment.spec;
        let pod_labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        let selector = spec.selector.match_labels.clone().unwrap_or_default();
        assert!(selects(&selector, &pod_labels), "the Deployment selects its own pods");
        for object in &self.0 {
            let cluster_wide = matches!(object.kind.as_str(), "ClusterRole" | "ClusterRoleBinding");
            let expected = (!cluster_wide).then_some(&namespace);
            assert_eq!(object.namespace.as_ref(), expected, "{}: namespace", object.origin);
        }
        for service in self.all::<Service>("Service") {
            let selector = service.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
            assert!(selects(&selector, &pod_labels), "Service {:?} selects the pods", service.metadata.name);
            for port in service.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
                let target = port.target_port.as_ref().map(port_name).expect("targetPort by name");
                container_port(&container(&deployment), target);
            }
        }
        for pdb in self.all::<PodDisruptionBudget>("PodDisruptionBudget") {
            let selector = pdb.spec.and_then(|s| s.selector).and_then(|s| s.match_labels).unwrap_or_default();
            assert!(selects(&selector, &pod_labels), "the PDB selects the pods");
        }
        for policy in self.all::<NetworkPolicy>("NetworkPolicy") {
            let spec = policy.spec.expect("NetworkPolicy spec");
            let pod_selector = spec.pod_selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default();
            assert!(selects(&pod_selector, &pod_labels));
            assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]), "ingress only");
            for rule in spec.ingress.iter().flatten() {
                for port in rule.ports.iter().flatten() {
                    container_port(&container(&deployment), port_name(port.port.as_ref().expect("port")));
                }
            }
        }
        for monitor in self.all::<ServiceMonitor>("ServiceMonitor") {
            let selector = monitor.spec.selector.match_labels.clone().unwrap_or_default();
            let selected: Vec<Service> = self
                .all::<Service>("Service")
                .into_iter()
                .filter(|s| selects(&selector, s.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
                .collect();
            let scraped: Vec<&Service> = selected.iter().filter(|s| service_port(s, "http").is_some()).collect();
            assert_eq!(scraped.len(), 1, "the ServiceMonitor scrapes the pods through one Service");
            assert_eq!(monitor.spec.endpoints[0].port.as_deref(), Some("http"));
        }
        let pod = pod_spec(&deployment);
        let account = pod.service_account_name.clone().expect("serviceAccountName");
        assert!(self.has("ServiceAccount", &account) || account == "default", "the pods' ServiceAccount {account}");
        for volume in pod.volumes.iter().flatten() {
            if let Some(config_map) = &volume.config_map {
                assert!(
                    self.has("ConfigMap", &config_map.name),
                    "volume {}: ConfigMap {}",
                    volume.name,
                    config_map.name
                );
            }
        }
        for binding in self.all::<RoleBinding>("RoleBinding") {
            assert!(self.has(&binding.role_ref.kind, &binding.role_ref.name), "{:?}", binding.role_ref);
            for subject in binding.subjects.iter().flatten() {
                assert_eq!((subject.name.as_str(), subject.namespace.as_ref()), (account.as_str(), Some(&namespace)));
            }
        }
        for binding in self.all::<ClusterRoleBinding>("ClusterRoleBinding") {
            assert!(self.has("ClusterRole", &binding.role_ref.name), "{:?}", binding.role_ref);
            for subject in binding.subjects.iter().flatten() {
                assert_eq!((subject.name.as_str(), subject.namespace.as_ref()), (account.as_str(), Some(&namespace)));
            }
        }
    }
}

/// Deserializes a built-in kind with k8s-openapi and checks it serializes back to the same JSON
/// (k8s-openapi skips fields it does not know, so this catches a misspelt field); the Prometheus
/// Operator's kinds into tests/manifests' structs, which deny unknown fields.
fn check_typed(doc: &Value, origin: &str) {
    fn built_in<T: DeserializeOwned + Serialize>(doc: &Value, origin: &str) {
        let _: T = manifests::round_trip(doc, origin);
    }
    match manifests::type_of(doc) {
        ("v1", "Namespace") => built_in::<k8s_openapi::api::core::v1::Namespace>(doc, origin),
        ("v1", "ServiceAccount") => built_in::<ServiceAccount>(doc, origin),
        ("v1", "Service") => built_in::<Service>(doc, origin),
        ("v1", "ConfigMap") => built_in::<ConfigMap>(doc, origin),
        ("v1", "Secret") => built_in::<Secret>(doc, origin),
        ("networking.k8s.io/v1", "NetworkPolicy") => built_in::<NetworkPolicy>(doc, origin),
        ("apps/v1", "Deployment") => built_in::<Deployment>(doc, origin),
        ("rbac.authorization.k8s.io/v1", "Role") => built_in::<Role>(doc, origin),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => built_in::<RoleBinding>(doc, origin),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => built_in::<ClusterRole>(doc, origin),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => built_in::<ClusterRoleBinding>(doc, origin),
        ("policy/v1", "PodDisruptionBudget") => built_in::<PodDisruptionBudget>(doc, origin),
        ("monitoring.coreos.com/v1", "ServiceMonitor") => {
            let _: ServiceMonitor = manifests::typed(doc, origin);
        }
        ("monitoring.coreos.com/v1", "PrometheusRule") => {
            let _: PrometheusRule = manifests::typed(doc, origin);
        }
        (api_version, kind) => panic!("{origin}: {api_version} {kind} is not a kind this test knows"),
    }
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment.spec.template.spec.as_ref().expect("pod spec")
}

fn container(deployment: &Deployment) -> Container {
    let containers = &pod_spec(deployment).containers;
    assert_eq!(containers.len(), 1, "one container");
    containers[0].clone()
}

fn args(deployment: &Deployment) -> Vec<String> {
    container(deployment).args.unwrap_or_default()
}

/// The value following `flag` in the arguments.
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().position(|a| a == flag).map(|i| args.get(i + 1).unwrap_or_else(|| panic!("{flag} has a value")).clone())
}

fn container_port(container: &Container, name: &str) -> i32 {
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn port_name(port: &IntOrString) -> &str {
    match port {
        IntOrString::String(name) => name,
        IntOrString::Int(n) => panic!("port {n} given by number, not by the container port's name"),
    }
}

fn service_port(service: &Service, name: &str) -> Option<i32> {
    service.spec.as_ref()?.ports.as_ref()?.iter().find(|p| p.name.as_deref() == Some(name)).map(|p| p.port)
}

/// The tuning file a render ships (ConfigMap `<fullname>-config`, key config.yaml).
fn config_text(objects: &Objects, fullname: &str) -> String {
    let config_map: ConfigMap = objects.get("ConfigMap", &format!("{fullname}-config"));
    config_map.data.and_then(|mut d| d.remove("config.yaml")).expect("config.yaml key")
}

/// Where the Deployment mounts the peer token Secret's `token` key, and that Secret's name.
fn peer_token_mount(deployment: &Deployment) -> Option<(PathBuf, String)> {
    let pod = pod_spec(deployment);
    let volume = pod.volumes.iter().flatten().find(|v| v.name == "peer-token")?;
    let secret = volume.secret.as_ref().expect("a Secret volume");
    let items = secret.items.clone().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].key, "token");
    let mount = container(deployment)
        .volume_mounts
        .into_iter()
        .flatten()
        .find(|m| m.name == "peer-token")
        .expect("peer-token mounted");
    assert_eq!(mount.read_only, Some(true));
    assert!(mount.sub_path.is_none(), "a directory mount, so rotations reach the pod");
    Some((Path::new(&mount.mount_path).join(&items[0].path), secret.secret_name.clone().expect("secretName")))
}

// === normalized comparison with deploy/base ===

/// An object's document for comparison: Helm's conventional labels removed (from labels and
/// selectors alike), every number as a float (Helm writes the tuning file's `1.0` as `1`), and the
/// tuning file parsed from its text (the text's comments and key order do not matter).
fn normalized(object: &Object) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for key in HELM_LABELS {
                    map.remove(key);
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Number(n) => *value = json!(n.as_f64().expect("a finite number")),
            _ => {}
        }
    }
    let mut doc = object.doc.clone();
    if object.kind == "ConfigMap"
        && let Some(text) = doc["data"].get("config.yaml").and_then(Value::as_str)
    {
        let parsed: Value = serde_yaml_ng::from_str(text).expect("config.yaml is YAML");
        doc["data"]["config.yaml"] = parsed;
    }
    walk(&mut doc);
    doc
}

fn by_identity(objects: &Objects) -> BTreeMap<(String, String, String), Value> {
    objects.0.iter().map(|o| ((o.api_version.clone(), o.kind.clone(), o.name.clone()), normalized(o))).collect()
}

fn monitoring() -> Value {
    json!({"serviceMonitor": {"enabled": true}, "prometheusRule": {"enabled": true}})
}

#[test]
fn the_default_render_is_deploy_base() {
    let Some(chart) = Objects::render(&monitoring()) else { return };
    let Some(defaults) = Objects::render(&json!({})) else { return };
    let base = Objects::base();

    let mut chart_objects = by_identity(&chart);
    let mut kit = by_identity(&base);
    // Helm installs into the namespace it is given (`--namespace spinscale --create-namespace`); the
    // kit creates its own.
    let namespace = kit.remove(&("v1".into(), "Namespace".into(), NAMESPACE.into()));
    assert!(namespace.is_some(), "the kit has its Namespace");

    let only_chart: Vec<_> = chart_objects.keys().filter(|k| !kit.contains_key(*k)).collect();
    let only_kit: Vec<_> = kit.keys().filter(|k| !chart_objects.contains_key(*k)).collect();
    assert!(
        only_chart.is_empty() && only_kit.is_empty(),
        "only in the chart: {only_chart:?}; only in the kit: {only_kit:?}"
    );
    for (key, kit_doc) in &kit {
        let chart_doc = &chart_objects[key];
        if let Some(difference) = manifests::first_difference(chart_doc, kit_doc, "") {
            panic!("{key:?} differs between the chart (first) and deploy/base (second): {difference}");
        }
    }

    // The defaults leave out only what needs the Prometheus Operator's CRDs.
    let monitoring_kinds = ["ServiceMonitor", "PrometheusRule"];
    chart_objects.retain(|(_, kind, _), _| !monitoring_kinds.contains(&kind.as_str()));
    assert_eq!(by_identity(&defaults), chart_objects, "defaults = the kit without ServiceMonitor and PrometheusRule");

    // Helm's own labels are there, and the selectors include the release.
    let deployment = chart.deployment();
    let labels = deployment.metadata.labels.clone().unwrap_or_default();
    for key in HELM_LABELS {
        assert!(labels.contains_key(key), "{key} on the Deployment");
    }
    let selector = deployment.spec.selector.match_labels.clone().unwrap_or_default();
    assert_eq!(selector.get("app.kubernetes.io/instance").map(String::as_str), Some(RELEASE));
}

#[test]
fn the_chart_and_app_versions_are_the_crate_version() {
    let cargo = read(&repo().join("Cargo.toml"));
    let mut section = "";
    let mut version = None;
    for line in cargo.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
        } else if section == "[workspace.package]"
            && let Some(rest) = line.strip_prefix("version")
        {
            version = rest.trim_start().strip_prefix('=').map(|v| v.trim().trim_matches('"').to_string());
        }
    }
    let version = version.expect("[workspace.package] version in Cargo.toml");
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let chart: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(&chart_dir().join("Chart.yaml"))).expect("Chart.yaml");
    assert_eq!(chart["apiVersion"].as_str(), Some("v2"));
    assert_eq!(chart["name"].as_str(), Some("spinscale"));
    assert_eq!(chart["version"].as_str(), Some(version.as_str()), "Chart.yaml version");
    assert_eq!(chart["appVersion"].as_str(), Some(version.as_str()), "Chart.yaml appVersion");

    let Some(objects) = Objects::render(&json!({})) else { return };
    let deployment = objects.deployment();
    assert_eq!(
        container(&deployment).image.as_deref(),
        Some(format!("ghcr.io/spinscale/spinscale:{version}").as_str())
    );
    let labels = deployment.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/version"), Some(&version));
    assert_eq!(labels.get("helm.sh/chart"), Some(&format!("spinscale-{version}")));
}

#[test]
fn the_chart_dashboard_is_a_copy_of_the_kit_dashboard() {
    let kit = std::fs::read(repo().join("deploy/base/grafana-dashboard.json")).expect("kit dashboard");
    let chart = std::fs::read(chart_dir().join("files/grafana-dashboard.json")).expect("chart dashboard");
    assert!(kit == chart, "deploy/helm/spinscale/files/grafana-dashboard.json must be a copy of deploy/base's");

    let Some(objects) = Objects::render(&json!({})) else { return };
    let config_map: ConfigMap = objects.get("ConfigMap", "spinscale-grafana-dashboard");
    let labels = config_map.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("grafana_dashboard").map(String::as_str), Some("1"));
    let data = config_map.data.unwrap_or_default();
    assert_eq!(data.get("grafana-dashboard.json").map(String::as_bytes), Some(kit.as_slice()), "byte for byte");

    let Some(off) = Objects::render(&json!({"grafanaDashboard": {"enabled": false}})) else { return };
    assert!(!off.has("ConfigMap", "spinscale-grafana-dashboard"));
}

#[test]
fn helm_lint_strict_passes_for_every_value_set() {
    let Some(python) = helm_python() else { return };
    for values in value_sets() {
        let problems = lint_problems(python, &values);
        assert!(problems.is_empty(), "helm lint --strict with {values}: {problems:?}");
    }
}

/// The value sets the tests render.
fn value_sets() -> Vec<Value> {
    vec![
        json!({}),
        json!({"activator": {"enabled": false}}),
        tls(true),
        monitoring(),
        extra(),
        json!({"peerToken": {"existingSecret": "my-peer-token"}, "networkPolicy": {"enabled": false}}),
    ]
}

#[test]
fn the_defaults_run_two_locked_down_replicas_with_probes_and_the_activator() {
    let Some(objects) = Objects::render(&json!({})) else { return };
    let deployment = objects.deployment();
    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let pod = pod_spec(&deployment);
    assert_eq!(pod.service_account_name.as_deref(), Some("spinscale"));
    let spread = pod.topology_spread_constraints.clone().expect("topology spread");
    assert_eq!(spread.len(), 1);
    assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");
    let spread_labels = spread[0].label_selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default();
    assert_eq!(Some(&spread_labels), spec.selector.match_labels.as_ref(), "spread over this release's pods");
    let pdb: PodDisruptionBudget = objects.get("PodDisruptionBudget", "spinscale");
    assert_eq!(pdb.spec.and_then(|s| s.min_available), Some(IntOrString::Int(1)));

    let pod_security = pod.security_context.clone().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.seccomp_profile.map(|p| p.type_), Some("RuntimeDefault".to_string()));
    let c = container(&deployment);
    let security = c.security_context.clone().expect("container securityContext");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_string()]));
    assert!(security.privileged.is_none_or(|p| !p));

    let ports: BTreeMap<String, i32> =
        c.ports.iter().flatten().map(|p| (p.name.clone().unwrap_or_default(), p.container_port)).collect();
    assert_eq!(ports, BTreeMap::from([("grpc".into(), 9500), ("http".into(), 9501), ("activator".into(), 9502)]));
    let liveness = c.liveness_probe.clone().and_then(|p| p.http_get).expect("liveness httpGet");
    assert_eq!((liveness.path.as_deref(), &liveness.port), (Some("/healthz"), &IntOrString::String("http".into())));
    let readiness = c.readiness_probe.clone().expect("readiness");
    let get = readiness.http_get.clone().expect("readiness httpGet");
    assert_eq!((get.path.as_deref(), &get.port), (Some("/readyz"), &IntOrString::String("http".into())));
    assert_eq!((readiness.period_seconds, readiness.failure_threshold), (Some(2), Some(1)));
    assert!(c.lifecycle.and_then(|l| l.pre_stop).is_none(), "no preStop sleep");

    let args = args(&deployment);
    assert_eq!(&args[..3], ["serve", "--config", "/etc/spinscale/config.yaml"]);
    assert_eq!(flag_value(&args, "--activator-listen").as_deref(), Some("0.0.0.0:9502"));
    assert_eq!(flag_value(&args, "--peer-service").as_deref(), Some("spinscale.spinscale.svc.cluster.local:9501"));
    assert!(args.contains(&"--watch-endpoints".into()) && args.contains(&"--watch-ingresses".into()), "{args:?}");
    assert!(!args.iter().any(|a| a.starts_with("--tls")), "{args:?}");
    let env: Vec<(String, Option<String>)> =
        c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone())).collect();
    assert_eq!(env, [("SPINSCALE_LOG_FORMAT".to_string(), Some("json".to_string()))]);
    let resources = c.resources.clone().expect("resources");
    assert!(resources.requests.is_some() && resources.limits.is_some());

    let service: Service = objects.get("Service", "spinscale");
    let service_spec = service.spec.clone().expect("spec");
    assert_eq!(service_spec.cluster_ip.as_deref(), Some("None"), "headless");
    assert_eq!((service_port(&service, "grpc"), service_port(&service, "http")), (Some(9500), Some(9501)));
    let grpc = service_spec.ports.iter().flatten().find(|p| p.name.as_deref() == Some("grpc")).expect("grpc port");
    assert_eq!(grpc.app_protocol.as_deref(), Some("kubernetes.io/h2c"));
    let activator: Service = objects.get("Service", "spinscale-activator");
    assert_eq!(activator.spec.as_ref().and_then(|s| s.type_.as_deref()), Some("ClusterIP"));
    assert_eq!(service_port(&activator, "activator"), Some(80));

    // The tuning file: spinscale's built-in defaults, plus the peer token where the pod mounts it.
    let text = config_text(&objects, "spinscale");
    let parsed = Config::parse(&text).expect("the chart's config is valid");
    let (token_path, secret) = peer_token_mount(&deployment).expect("the peer token is mounted");
    assert_eq!(secret, "spinscale-peer-token");
    let mut expected = Config::default();
    expected.activator.peer_token_file = Some(token_path);
    assert_eq!(parsed, expected);
    let grace = pod.termination_grace_period_seconds.expect("grace period");
    assert!(grace as f64 > parsed.activator.drain_period.0.as_secs_f64() + 5.0, "grace {grace}s");

    let secret: Secret = objects.get("Secret", "spinscale-peer-token");
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/service-account-token"));
    let annotations = secret.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("kubernetes.io/service-account.name").map(String::as_str), Some("spinscale-peer"));
    let peer: ServiceAccount = objects.get("ServiceAccount", "spinscale-peer");
    assert_eq!(peer.automount_service_account_token, Some(false));
    for binding in objects.all::<RoleBinding>("RoleBinding") {
        assert!(
            binding.subjects.iter().flatten().all(|s| s.name != "spinscale-peer"),
            "nothing bound to the peer account"
        );
    }
    for binding in objects.all::<ClusterRoleBinding>("ClusterRoleBinding") {
        assert!(
            binding.subjects.iter().flatten().all(|s| s.name != "spinscale-peer"),
            "nothing bound to the peer account"
        );
    }

    let expected: BTreeSet<(String, String)> = [
        ("ServiceAccount", "spinscale"),
        ("ServiceAccount", "spinscale-peer"),
        ("Secret", "spinscale-peer-token"),
        ("Role", "spinscale"),
        ("RoleBinding", "spinscale"),
        ("ClusterRole", "spinscale-endpoints"),
        ("ClusterRoleBinding", "spinscale-endpoints"),
        ("Deployment", "spinscale"),
        ("Service", "spinscale"),
        ("Service", "spinscale-activator"),
        ("PodDisruptionBudget", "spinscale"),
        ("NetworkPolicy", "spinscale-grpc"),
        ("NetworkPolicy", "spinscale-activator"),
        ("NetworkPolicy", "spinscale-http"),
        ("ConfigMap", "spinscale-config"),
        ("ConfigMap", "spinscale-grafana-dashboard"),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(objects.names(), expected);
}

/// Which namespaces (by `kubernetes.io/metadata.name`) and whether the pods themselves may reach
/// each port, from the NetworkPolicies.
fn admitted(objects: &Objects) -> BTreeMap<String, (BTreeSet<String>, bool)> {
    let mut admitted: BTreeMap<String, (BTreeSet<String>, bool)> = BTreeMap::new();
    for policy in objects.all::<NetworkPolicy>("NetworkPolicy") {
        for rule in policy.spec.and_then(|s| s.ingress).unwrap_or_default() {
            for port in rule.ports.iter().flatten() {
                let entry = admitted.entry(port_name(port.port.as_ref().expect("port")).to_string()).or_default();
                for peer in rule.from.iter().flatten() {
                    if let Some(ns) = &peer.namespace_selector {
                        let labels = ns.match_labels.clone().unwrap_or_default();
                        entry.0.insert(labels["kubernetes.io/metadata.name"].clone());
                    } else if peer.pod_selector.is_some() {
                        entry.1 = true;
                    }
                }
            }
        }
    }
    admitted
}

#[test]
fn network_policies_admit_keda_the_ingress_controller_peers_and_prometheus() {
    let Some(objects) = Objects::render(&json!({})) else { return };
    let set = |names: &[&str]| names.iter().map(ToString::to_string).collect::<BTreeSet<_>>();
    assert_eq!(
        admitted(&objects),
        BTreeMap::from([
            ("grpc".to_string(), (set(&["keda"]), false)),
            ("activator".to_string(), (set(&["ingress-nginx"]), false)),
            ("http".to_string(), (set(&["monitoring"]), true)),
        ])
    );

    let values = json!({"networkPolicy": {
        "grpc": {"namespaces": ["keda", "keda-2"]},
        "activator": {"namespaces": [], "extraFrom": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]},
        "http": {"namespaces": []},
    }});
    let Some(objects) = Objects::render(&values) else { return };
    let policy: NetworkPolicy = objects.get("NetworkPolicy", "spinscale-activator");
    let from = policy.spec.and_then(|s| s.ingress).and_then(|i| i[0].from.clone()).expect("from");
    assert_eq!(from.len(), 1);
    assert_eq!(from[0].ip_block.as_ref().map(|b| b.cidr.as_str()), Some("10.0.0.0/24"));
    let admitted = admitted(&objects);
    assert_eq!(admitted["grpc"], (set(&["keda", "keda-2"]), false));
    assert_eq!(admitted["http"], (set(&[]), true), "peers only");

    // No peer at all: the policy admits nobody on its port (an empty `from` would admit everyone).
    let values = json!({"activator": {"enabled": false}, "networkPolicy": {"http": {"namespaces": []}}});
    let Some(objects) = Objects::render(&values) else { return };
    let policy: NetworkPolicy = objects.get("NetworkPolicy", "spinscale-http");
    assert_eq!(policy.spec.and_then(|s| s.ingress), Some(vec![]));

    let Some(objects) = Objects::render(&json!({"networkPolicy": {"enabled": false}})) else { return };
    assert!(objects.all::<NetworkPolicy>("NetworkPolicy").is_empty());
}

#[test]
fn without_the_activator_there_is_no_activator_port_argument_service_or_peer_token() {
    let Some(objects) = Objects::render(&json!({"activator": {"enabled": false}})) else { return };
    let deployment = objects.deployment();
    let c = container(&deployment);
    let ports: Vec<String> = c.ports.iter().flatten().filter_map(|p| p.name.clone()).collect();
    assert_eq!(ports, ["grpc", "http"]);
    let args = args(&deployment);
    assert_eq!(args, ["serve", "--config", "/etc/spinscale/config.yaml"]);
    assert!(peer_token_mount(&deployment).is_none());
    for (kind, name) in [
        ("Service", "spinscale-activator"),
        ("NetworkPolicy", "spinscale-activator"),
        ("ServiceAccount", "spinscale-peer"),
        ("Secret", "spinscale-peer-token"),
        ("ClusterRole", "spinscale-endpoints"),
        ("ClusterRoleBinding", "spinscale-endpoints"),
    ] {
        assert!(!objects.has(kind, name), "{kind} {name} without the activator");
    }
    assert!(objects.has("Service", "spinscale") && objects.has("Role", "spinscale"));
    let admitted = admitted(&objects);
    assert_eq!(admitted.keys().collect::<Vec<_>>(), ["grpc", "http"]);
    assert!(!admitted["http"].1, "no peers without the activator");
    Config::parse(&config_text(&objects, "spinscale")).expect("the config is still valid");

    // The watches one by one: their flag and their rules together.
    let values = json!({"activator": {"watchIngresses": false}});
    let Some(objects) = Objects::render(&values) else { return };
    let args = self::args(&objects.deployment());
    assert!(args.contains(&"--watch-endpoints".into()) && !args.contains(&"--watch-ingresses".into()));
    let role: ClusterRole = objects.get("ClusterRole", "spinscale-endpoints");
    let resources: Vec<String> =
        role.rules.iter().flatten().flat_map(|r| r.resources.clone().unwrap_or_default()).collect();
    assert_eq!(resources, ["endpointslices"]);
    let values = json!({"activator": {"watchIngresses": false, "watchEndpoints": false}});
    let Some(objects) = Objects::render(&values) else { return };
    assert!(!objects.has("ClusterRole", "spinscale-endpoints"));
    assert!(flag_value(&self::args(&objects.deployment()), "--activator-listen").is_some());
}

fn tls(client_ca: bool) -> Value {
    json!({"tls": {"existingSecret": "spinscale-tls", "clientCA": client_ca}})
}

#[test]
fn tls_mounts_the_existing_secret_and_passes_its_files() {
    let Some(objects) = Objects::render(&tls(true)) else { return };
    let deployment = objects.deployment();
    let pod = pod_spec(&deployment);
    let volume = pod.volumes.iter().flatten().find(|v| v.name == "tls").expect("tls volume");
    assert_eq!(volume.secret.as_ref().and_then(|s| s.secret_name.as_deref()), Some("spinscale-tls"));
    let c = container(&deployment);
    let mount = c.volume_mounts.iter().flatten().find(|m| m.name == "tls").expect("tls mount");
    assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/var/run/spinscale/tls", Some(true)));
    let args = args(&deployment);
    assert_eq!(flag_value(&args, "--tls-cert").as_deref(), Some("/var/run/spinscale/tls/tls.crt"));
    assert_eq!(flag_value(&args, "--tls-key").as_deref(), Some("/var/run/spinscale/tls/tls.key"));
    assert_eq!(flag_value(&args, "--tls-client-ca").as_deref(), Some("/var/run/spinscale/tls/ca.crt"));
    assert!(!objects.has("Secret", "spinscale-tls"), "an existing Secret: the chart does not create it");
    // gRPC is no longer cleartext HTTP/2.
    let service: Service = objects.get("Service", "spinscale");
    let grpc =
        service.spec.and_then(|s| s.ports).unwrap_or_default().into_iter().find(|p| p.name.as_deref() == Some("grpc"));
    assert_eq!(grpc.expect("grpc port").app_protocol, None);

    let Some(objects) = Objects::render(&tls(false)) else { return };
    let args = self::args(&objects.deployment());
    assert!(flag_value(&args, "--tls-cert").is_some() && flag_value(&args, "--tls-client-ca").is_none(), "{args:?}");
}

#[test]
fn the_service_monitor_and_prometheus_rule_come_when_enabled() {
    let values = json!({
        "serviceMonitor": {"enabled": true, "interval": "30s", "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}},
    });
    let Some(objects) = Objects::render(&values) else { return };
    let monitor: ServiceMonitor = objects.get("ServiceMonitor", "spinscale");
    let endpoint = &monitor.spec.endpoints[0];
    assert_eq!(
        (endpoint.port.as_deref(), endpoint.path.as_deref(), endpoint.interval.as_deref()),
        (Some("http"), Some("/metrics"), Some("30s"))
    );
    assert_eq!(
        monitor.metadata.labels.unwrap_or_default().get("release").map(String::as_str),
        Some("kube-prometheus-stack")
    );
    let rule: PrometheusRule = objects.get("PrometheusRule", "spinscale");
    assert_eq!(
        rule.metadata.labels.unwrap_or_default().get("release").map(String::as_str),
        Some("kube-prometheus-stack")
    );
    let alerts: Vec<&str> = rule.spec.groups.iter().flat_map(|g| &g.rules).filter_map(|r| r.alert.as_deref()).collect();
    assert_eq!(
        alerts,
        ["SpinscaleSourceDown", "SpinscaleSignalStale", "SpinscalePushesFailing", "SpinscaleConfigRejected"]
    );
    // Prometheus's own templates reach it unexpanded by Helm.
    let summary = rule.spec.groups[0].rules[0].annotations.as_ref().and_then(|a| a.get("summary")).expect("summary");
    assert!(summary.contains("{{ $labels.kind }}") && summary.contains("{{ $labels.source }}"), "{summary}");

    let Some(objects) = Objects::render(&json!({})) else { return };
    assert!(!objects.has("ServiceMonitor", "spinscale") && !objects.has("PrometheusRule", "spinscale"));
}

fn extra() -> Value {
    json!({
        "replicaCount": 3,
        "image": {"repository": "registry.example/spinscale", "tag": "dev", "pullPolicy": "Always"},
        "extraArgs": ["--configmap", "spinscale/spinscale-config"],
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "logFormat": "text",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "podSecurityContext": {"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 1000},
        "config": {"collectors": {"prometheusInterval": "5s"}, "defaults": {"targetRps": "20"}},
    })
}

#[test]
fn extra_args_env_image_resources_and_config_values_reach_the_pod() {
    let Some(objects) = Objects::render(&extra()) else { return };
    let deployment = objects.deployment();
    assert_eq!(deployment.spec.replicas, Some(3));
    let c = container(&deployment);
    assert_eq!(c.image.as_deref(), Some("registry.example/spinscale:dev"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
    let args = args(&deployment);
    assert_eq!(&args[args.len() - 2..], ["--configmap", "spinscale/spinscale-config"], "appended last");
    assert!(args.contains(&"--activator-listen".to_string()));
    let env: Vec<(String, Option<String>)> =
        c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone())).collect();
    assert_eq!(
        env,
        [
            ("SPINSCALE_LOG_FORMAT".to_string(), Some("text".to_string())),
            ("RUST_BACKTRACE".to_string(), Some("1".to_string()))
        ]
    );
    // Helm merges maps into the defaults: the limits and the rest of the pod security context stay.
    let resources = c.resources.clone().expect("resources");
    let quantity = |map: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
                    key: &str| { map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone()) };
    assert_eq!(quantity(&resources.requests, "cpu").as_deref(), Some("50m"));
    assert_eq!(quantity(&resources.limits, "memory").as_deref(), Some("512Mi"));
    let pod_security = pod_spec(&deployment).security_context.clone().expect("pod securityContext");
    assert_eq!(
        (pod_security.fs_group, pod_security.run_as_user, pod_security.run_as_group),
        (Some(1000), Some(1000), Some(65532))
    );
    assert_eq!(pod_security.seccomp_profile.map(|p| p.type_).as_deref(), Some("RuntimeDefault"));

    let config = Config::parse(&config_text(&objects, "spinscale")).expect("valid");
    assert_eq!(config.collectors.prometheus_interval.0, std::time::Duration::from_secs(5));
    assert_eq!(config.defaults.get("targetRps").map(String::as_str), Some("20"));
    assert_eq!(
        config.collectors.kafka_interval,
        Config::default().collectors.kafka_interval,
        "the other defaults stay"
    );
}

#[test]
fn another_release_and_namespace_rename_everything_consistently() {
    let Some(objects) = Objects::render_as(&json!({}), "prod", "ops") else { return };
    let deployment = objects.deployment();
    assert_eq!(deployment.metadata.name.as_deref(), Some("prod-spinscale"));
    assert_eq!(
        flag_value(&args(&deployment), "--peer-service").as_deref(),
        Some("prod-spinscale.ops.svc.cluster.local:9501"),
        "the headless Service of this release"
    );
    assert!(objects.has("Service", "prod-spinscale") && objects.has("Service", "prod-spinscale-activator"));
    assert!(objects.has("ClusterRole", "prod-spinscale-endpoints"));
    let (_, secret) = peer_token_mount(&deployment).expect("peer token");
    assert_eq!(secret, "prod-spinscale-peer-token");
    let token: Secret = objects.get("Secret", "prod-spinscale-peer-token");
    let annotations = token.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("kubernetes.io/service-account.name").map(String::as_str), Some("prod-spinscale-peer"));
    config_text(&objects, "prod-spinscale");
    let selector = deployment.spec.selector.match_labels.unwrap_or_default();
    assert_eq!(selector.get("app.kubernetes.io/instance").map(String::as_str), Some("prod"));

    // A Secret of your own instead of the controller-filled one.
    let Some(objects) = Objects::render(&json!({"peerToken": {"existingSecret": "my-peer-token"}})) else { return };
    let (path, secret) = peer_token_mount(&objects.deployment()).expect("peer token");
    assert_eq!(secret, "my-peer-token");
    assert!(!objects.has("Secret", "spinscale-peer-token") && !objects.has("ServiceAccount", "spinscale-peer"));
    let config = Config::parse(&config_text(&objects, "spinscale")).expect("valid");
    assert_eq!(config.activator.peer_token_file, Some(path));
}

#[test]
fn the_schema_rejects_wrong_values_at_render_and_lint() {
    let Some(python) = helm_python() else { return };
    let cases = [
        (json!({"replicaCount": "two"}), "/replicaCount"),
        (json!({"replicas": 3}), "replicas"),
        (json!({"activator": {"enabled": "yes"}}), "/activator/enabled"),
        (json!({"image": {"pullPolicy": "Sometimes"}}), "/image/pullPolicy"),
        (json!({"extraArgs": "--watch-endpoints"}), "/extraArgs"),
        (json!({"config": {"collectors": {"kafkaIntervall": "1s"}}}), "kafkaIntervall"),
        (json!({"config": {"collectors": {"kafkaInterval": "soon"}}}), "/config/collectors/kafkaInterval"),
        (json!({"config": {"engine": {"coldStartBudget": 1.5}}}), "/config/engine/coldStartBudget"),
        (json!({"networkPolicy": {"grpc": {"namespaces": ["Not A Namespace"]}}}), "/networkPolicy/grpc/namespaces/0"),
    ];
    for (values, named) in cases {
        let error = try_render(python, &values, RELEASE, NAMESPACE).expect_err(&format!("{values} renders"));
        assert!(error.starts_with("HelmValuesError") && error.contains(named), "{values}: {error}");
        let problems = lint_problems(python, &values);
        assert!(problems.iter().any(|p| p.contains(named)), "lint {values}: {problems:?}");
    }
}

// === values.yaml, schema and README ===

/// The chart's values.yaml.
fn chart_values() -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&read(&chart_dir().join("values.yaml"))).expect("values.yaml")
}

fn to_json(value: &serde_yaml_ng::Value) -> Value {
    serde_json::to_value(value).expect("YAML as JSON")
}

/// Numbers as floats, so `1.0` and `1` compare equal.
fn floats(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), floats(v))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(floats).collect()),
        Value::Number(n) => json!(n.as_f64().expect("finite")),
        other => other.clone(),
    }
}

#[test]
fn values_config_is_the_kit_config_yaml() {
    let values = to_json(&chart_values());
    let kit: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(&repo().join("deploy/base/config.yaml"))).expect("kit config.yaml");
    let kit = to_json(&kit);
    if let Some(difference) = manifests::first_difference(&floats(&values["config"]), &floats(&kit), "config") {
        panic!("values.yaml `config` and deploy/base/config.yaml differ: {difference}");
    }
}

fn chart_schema() -> Value {
    serde_json::from_str(&read(&chart_dir().join("values.schema.json"))).expect("values.schema.json")
}

/// The keys of values.yaml as dotted paths, each checked against the schema on the way down: where
/// the schema lists an object's properties, it refuses unknown keys and lists every key of the
/// object. A path ends at a scalar, a list, an empty map, a free-form object of the schema
/// (`resources`, `podSecurityContext`, ...) or a section of `config` (whose knobs are checked
/// against spinscale's own parser).
fn value_paths(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if path == "config" => out.extend(map.keys().map(|k| format!("config.{k}"))),
        Value::Object(map) if !map.is_empty() && schema.get("properties").is_some() => {
            assert_eq!(schema["additionalProperties"], json!(false), "schema at {path:?}: refuses unknown keys");
            for (key, v) in map {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                let node = schema["properties"].get(key).unwrap_or_else(|| panic!("the schema has no {child}"));
                value_paths(v, node, &child, out);
            }
        }
        _ => out.push(path.to_string()),
    }
}

fn all_value_paths() -> Vec<String> {
    let mut paths = Vec::new();
    value_paths(&to_json(&chart_values()), &chart_schema(), "", &mut paths);
    paths
}

#[test]
fn the_schema_describes_every_value_and_every_config_knob() {
    let paths = all_value_paths();
    assert!(paths.contains(&"replicaCount".to_string()) && paths.contains(&"tls.existingSecret".to_string()));
    let schema = chart_schema();
    let config = &schema["properties"]["config"];
    let described = |node: &Value| -> BTreeSet<String> {
        assert_eq!(node["additionalProperties"], json!(false));
        node["properties"].as_object().expect("properties").keys().cloned().collect()
    };
    assert_eq!(described(config), accepted_fields(""), "config sections");
    for section in ["collectors", "targets", "engine", "limits", "activator"] {
        assert_eq!(described(&config["properties"][section]), accepted_fields(section), "config.{section}: every knob");
    }
}

/// The fields `Config::parse` accepts in `section` (top level when empty), from its unknown-field error.
fn accepted_fields(section: &str) -> BTreeSet<String> {
    let probe = if section.is_empty() { "zzProbe: 1\n".to_string() } else { format!("{section}:\n  zzProbe: 1\n") };
    let message = Config::parse(&probe).expect_err("an unknown field is an error").to_string();
    let expected = message.split_once("expected").map(|(_, rest)| rest).unwrap_or_else(|| panic!("{message}"));
    expected.split('`').skip(1).step_by(2).map(String::from).collect()
}

#[test]
fn the_chart_readme_lists_every_value() {
    let readme = read(&chart_dir().join("README.md"));
    let paths = all_value_paths();
    let missing: Vec<&String> = paths.iter().filter(|p| !readme.contains(&format!("`{p}`"))).collect();
    assert!(missing.is_empty(), "deploy/helm/spinscale/README.md does not list {missing:?}");
    for section in ["collectors", "targets", "engine", "limits", "activator"] {
        for knob in accepted_fields(section) {
            assert!(readme.contains(&format!("`{knob}`")), "README: config.{section}.{knob}");
        }
    }
}
