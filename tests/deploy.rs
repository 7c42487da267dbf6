//! The deploy kit (`deploy/`): every YAML file parsed into typed objects (built-in kinds through
//! k8s-openapi and back, so unknown or misspelt fields fail; custom resources into structs that deny
//! unknown fields), the kustomizations resolved without kubectl, and the references between the
//! objects checked: selectors, port names, RBAC, the config mount, the peer token Secret and where
//! the config looks for it, the grace period against the drain period, the NetworkPolicies' allowed
//! peers per port, the examples' scaler address, and the activator's path from an example Ingress
//! through its ExternalName Service to spinscale's pods.

mod manifests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use manifests::{Kustomization, PrometheusRule, ScaledObject, ServiceMonitor, SpinApp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use spinscale::config::Config;
use spinscale_core::spec::TargetSpec;

const NAMESPACE: &str = "spinscale";

/// The exporter's metric names (histograms also expose `_bucket`, `_sum` and `_count`).
const METRICS: [&str; 18] = [
    "spinscale_source_up",
    "spinscale_source_reading_age_seconds",
    "spinscale_push_failures_total",
    "spinscale_config_reload_total",
    "spinscale_build_info",
    "spinscale_targets",
    "spinscale_open_streams",
    "spinscale_target_active",
    "spinscale_target_desired_replicas",
    "spinscale_target_signal",
    "spinscale_target_forecast",
    "spinscale_target_cold_starts_total",
    "spinscale_pushes_total",
    "spinscale_push_latency_seconds",
    "spinscale_source_errors_total",
    "spinscale_source_cycle_seconds",
    "spinscale_grpc_requests_total",
    "spinscale_grpc_request_duration_seconds",
];
const HISTOGRAMS: [&str; 3] =
    ["spinscale_push_latency_seconds", "spinscale_source_cycle_seconds", "spinscale_grpc_request_duration_seconds"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Everything one kustomization renders, typed, plus the files its generators read.
#[derive(Default)]
struct Bundle {
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    ingresses: Vec<Ingress>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    network_policies: Vec<NetworkPolicy>,
    disruption_budgets: Vec<PodDisruptionBudget>,
    spin_apps: Vec<SpinApp>,
    scaled_objects: Vec<ScaledObject>,
    service_monitors: Vec<ServiceMonitor>,
    prometheus_rules: Vec<PrometheusRule>,
    /// Every file the kustomization names (resources and generator inputs), relative to its directory.
    listed: BTreeSet<String>,
}

impl Bundle {
    /// Resolves `dir/kustomization.yaml` as kustomize would (resources and ConfigMap generators).
    fn load(dir: &Path) -> Self {
        let path = dir.join("kustomization.yaml");
        let text = read(&path);
        let docs = manifests::documents(&text, &path.display().to_string());
        assert_eq!(docs.len(), 1, "{}: one Kustomization", path.display());
        let kustomization: Kustomization = manifests::typed(&docs[0], &path.display().to_string());
        assert_eq!(
            (kustomization.api_version.as_str(), kustomization.kind.as_str()),
            ("kustomize.config.k8s.io/v1beta1", "Kustomization")
        );
        let mut bundle = Bundle::default();
        for resource in &kustomization.resources {
            let file = dir.join(resource);
            assert!(file.is_file(), "{}: resource {resource} is not a file here", path.display());
            bundle.listed.insert(resource.clone());
            let origin = file.display().to_string();
            let docs = manifests::documents(&read(&file), &origin);
            assert!(!docs.is_empty(), "{origin}: no object");
            for (i, doc) in docs.iter().enumerate() {
                bundle.add(doc, &format!("{origin} document {}", i + 1));
            }
        }
        for generator in &kustomization.config_map_generator {
            let options = generator.options.clone();
            let mut data = BTreeMap::new();
            for file in &generator.files {
                bundle.listed.insert(file.clone());
                data.insert(file.clone(), read(&dir.join(file)));
            }
            let suffix = !options.as_ref().and_then(|o| o.disable_name_suffix_hash).unwrap_or(false);
            assert!(
                !suffix,
                "{}: ConfigMap {} needs disableNameSuffixHash (watched by name)",
                path.display(),
                generator.name
            );
            bundle.config_maps.push(ConfigMap {
                metadata: ObjectMeta {
                    name: Some(generator.name.clone()),
                    namespace: generator.namespace.clone(),
                    labels: options.and_then(|o| o.labels),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            });
        }
        bundle
    }

    fn add(&mut self, doc: &serde_json::Value, origin: &str) {
        match manifests::type_of(doc) {
            ("v1", "Namespace") => self.namespaces.push(built_in(doc, origin)),
            ("v1", "ServiceAccount") => self.service_accounts.push(built_in(doc, origin)),
            ("v1", "Service") => self.services.push(built_in(doc, origin)),
            ("v1", "ConfigMap") => self.config_maps.push(built_in(doc, origin)),
            ("v1", "Secret") => self.secrets.push(built_in(doc, origin)),
            ("networking.k8s.io/v1", "Ingress") => self.ingresses.push(built_in(doc, origin)),
            ("networking.k8s.io/v1", "NetworkPolicy") => self.network_policies.push(built_in(doc, origin)),
            ("apps/v1", "Deployment") => self.deployments.push(built_in(doc, origin)),
            ("rbac.authorization.k8s.io/v1", "Role") => self.roles.push(built_in(doc, origin)),
            ("rbac.authorization.k8s.io/v1", "RoleBinding") => self.role_bindings.push(built_in(doc, origin)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => self.cluster_roles.push(built_in(doc, origin)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                self.cluster_role_bindings.push(built_in(doc, origin));
            }
            ("policy/v1", "PodDisruptionBudget") => self.disruption_budgets.push(built_in(doc, origin)),
            ("core.spinkube.dev/v1alpha1", "SpinApp") => self.spin_apps.push(manifests::typed(doc, origin)),
            ("keda.sh/v1alpha1", "ScaledObject") => self.scaled_objects.push(manifests::typed(doc, origin)),
            ("monitoring.coreos.com/v1", "ServiceMonitor") => self.service_monitors.push(manifests::typed(doc, origin)),
            ("monitoring.coreos.com/v1", "PrometheusRule") => self.prometheus_rules.push(manifests::typed(doc, origin)),
            (api_version, kind) => panic!("{origin}: {api_version} {kind} is not a kind this test knows"),
        }
    }

    /// Every object's `metadata`, with its kind.
    fn metas(&self) -> Vec<(&'static str, &ObjectMeta)> {
        let mut all: Vec<(&'static str, &ObjectMeta)> = Vec::new();
        all.extend(self.namespaces.iter().map(|o| ("Namespace", &o.metadata)));
        all.extend(self.service_accounts.iter().map(|o| ("ServiceAccount", &o.metadata)));
        all.extend(self.roles.iter().map(|o| ("Role", &o.metadata)));
        all.extend(self.role_bindings.iter().map(|o| ("RoleBinding", &o.metadata)));
        all.extend(self.cluster_roles.iter().map(|o| ("ClusterRole", &o.metadata)));
        all.extend(self.cluster_role_bindings.iter().map(|o| ("ClusterRoleBinding", &o.metadata)));
        all.extend(self.deployments.iter().map(|o| ("Deployment", &o.metadata)));
        all.extend(self.services.iter().map(|o| ("Service", &o.metadata)));
        all.extend(self.ingresses.iter().map(|o| ("Ingress", &o.metadata)));
        all.extend(self.config_maps.iter().map(|o| ("ConfigMap", &o.metadata)));
        all.extend(self.secrets.iter().map(|o| ("Secret", &o.metadata)));
        all.extend(self.network_policies.iter().map(|o| ("NetworkPolicy", &o.metadata)));
        all.extend(self.disruption_budgets.iter().map(|o| ("PodDisruptionBudget", &o.metadata)));
        all.extend(self.spin_apps.iter().map(|o| ("SpinApp", &o.metadata)));
        all.extend(self.scaled_objects.iter().map(|o| ("ScaledObject", &o.metadata)));
        all.extend(self.service_monitors.iter().map(|o| ("ServiceMonitor", &o.metadata)));
        all.extend(self.prometheus_rules.iter().map(|o| ("PrometheusRule", &o.metadata)));
        all
    }

    fn service(&self, name: &str) -> &Service {
        self.services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Service {name}"))
    }

    fn spin_app(&self, name: &str) -> &SpinApp {
        self.spin_apps
            .iter()
            .find(|a| a.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no SpinApp {name}"))
    }

    fn scaled_object(&self, name: &str) -> &ScaledObject {
        self.scaled_objects
            .iter()
            .find(|o| o.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no ScaledObject {name}"))
    }

    fn config_map(&self, name: &str) -> &ConfigMap {
        self.config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))
    }

    fn secret(&self, name: &str) -> &Secret {
        self.secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Secret {name}"))
    }

    fn service_account(&self, name: &str) -> &ServiceAccount {
        self.service_accounts
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no ServiceAccount {name}"))
    }

    /// The text of the tuning file the kit ships (ConfigMap spinscale-config, key config.yaml).
    fn config_text(&self) -> &str {
        self.config_map("spinscale-config")
            .data
            .as_ref()
            .and_then(|d| d.get("config.yaml"))
            .expect("config.yaml in spinscale-config")
    }

    /// The tuning file the kit ships, parsed and validated as spinscale does.
    fn config(&self) -> Config {
        Config::parse(self.config_text()).expect("the kit's config.yaml is valid")
    }
}

fn base() -> Bundle {
    Bundle::load(&deploy_dir().join("base"))
}

fn examples() -> Bundle {
    Bundle::load(&deploy_dir().join("examples"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn built_in<T: DeserializeOwned + Serialize>(doc: &serde_json::Value, origin: &str) -> T {
    manifests::round_trip(doc, origin)
}

fn one<'a, T>(items: &'a [T], what: &str) -> &'a T {
    assert_eq!(items.len(), 1, "expected exactly one {what}");
    &items[0]
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment.spec.template.spec.as_ref().expect("Deployment has a pod template spec")
}

fn container(deployment: &Deployment) -> &Container {
    one(&pod_spec(deployment).containers, "container")
}

fn container_port(container: &Container, name: &str) -> i32 {
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .map(|p| p.container_port)
        .unwrap_or_else(|| panic!("container {} has no port named {name}", container.name))
}

fn named_port(port: &IntOrString) -> &str {
    match port {
        IntOrString::String(name) => name,
        IntOrString::Int(n) => panic!("port {n} is given by number; use the container's port name"),
    }
}

/// The headless Service KEDA reaches spinscale through.
fn service(bundle: &Bundle) -> &Service {
    bundle.service("spinscale")
}

fn service_port(service: &Service, name: &str) -> i32 {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(name)))
        .map(|p| p.port)
        .unwrap_or_else(|| panic!("Service has no port named {name}"))
}

/// The port a Service sends `port` to, by the container port's name.
fn target_port_name(service: &Service, port: i32) -> &str {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    let found = ports.and_then(|ports| ports.iter().find(|p| p.port == port));
    named_port(found.and_then(|p| p.target_port.as_ref()).unwrap_or_else(|| panic!("no targetPort for port {port}")))
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// === files and kustomizations ===

#[test]
fn every_file_under_deploy_is_listed_in_its_kustomization_and_parses() {
    let root = deploy_dir();
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(&root).expect("deploy/ exists") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            // The Helm chart is rendered and checked by tests/helm.rs.
            if path.file_name().is_some_and(|n| n != "helm") {
                dirs.push(path);
            }
        } else {
            assert_eq!(path.file_name().and_then(|n| n.to_str()), Some("README.md"), "stray file {}", path.display());
        }
    }
    dirs.sort();
    let names: Vec<String> =
        dirs.iter().filter_map(|d| d.file_name().and_then(|n| n.to_str()).map(String::from)).collect();
    assert_eq!(names, ["base", "examples"]);
    for dir in &dirs {
        let bundle = Bundle::load(dir);
        for entry in std::fs::read_dir(dir).expect("readable dir") {
            let path = entry.expect("readable entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).expect("utf-8 file name").to_string();
            assert!(path.is_file(), "{}: no subdirectories expected", path.display());
            if name == "kustomization.yaml" || name == "README.md" {
                continue;
            }
            assert!(bundle.listed.contains(&name), "{} is not listed in its kustomization.yaml", path.display());
        }
    }
}

#[test]
fn the_base_has_every_part_of_the_kit_in_the_spinscale_namespace() {
    let bundle = base();
    assert_eq!(one(&bundle.namespaces, "Namespace").metadata.name.as_deref(), Some(NAMESPACE));
    for (kind, meta) in bundle.metas() {
        let name = meta.name.as_deref().unwrap_or_else(|| panic!("a {kind} has no name"));
        if !matches!(kind, "Namespace" | "ClusterRole" | "ClusterRoleBinding") {
            assert_eq!(meta.namespace.as_deref(), Some(NAMESPACE), "{kind} {name}");
        }
    }
    let kinds: BTreeSet<&str> = bundle.metas().into_iter().map(|(kind, _)| kind).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(kinds.contains(kind), "the base has no {kind}");
    }
}

// === Deployment ===

#[test]
fn the_deployment_runs_serve_with_the_mounted_config_and_is_locked_down() {
    let bundle = base();
    let deployment = one(&bundle.deployments, "Deployment");
    let pod = pod_spec(deployment);
    let c = container(deployment);
    assert_eq!(c.image.as_deref(), Some("ghcr.io/spinscale/spinscale:0.1.0"));
    assert_eq!(container_port(c, "grpc"), 9500);
    assert_eq!(container_port(c, "http"), 9501);
    assert_eq!(container_port(c, "activator"), 9502);
    let args = c.args.clone().expect("args");
    assert_eq!(args[..5], ["serve", "--config", "/etc/spinscale/config.yaml", "--activator-listen", "0.0.0.0:9502"]);

    let resources = c.resources.as_ref().expect("resources");
    for (what, list) in [("requests", &resources.requests), ("limits", &resources.limits)] {
        let list = list.as_ref().unwrap_or_else(|| panic!("no resource {what}"));
        assert!(list.contains_key("cpu") && list.contains_key("memory"), "{what}: {list:?}");
    }

    let pod_security = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(pod_security.run_as_user.is_some_and(|uid| uid > 0), "a non-root uid");
    let seccomp = pod_security.seccomp_profile.as_ref().expect("seccompProfile");
    assert_eq!(seccomp.type_, "RuntimeDefault");
    let security = c.security_context.as_ref().expect("container securityContext");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let dropped = security.capabilities.as_ref().and_then(|c| c.drop.clone()).unwrap_or_default();
    assert_eq!(dropped, ["ALL"]);
    assert!(security.capabilities.as_ref().and_then(|c| c.add.as_ref()).is_none(), "no capability added");
}

#[test]
fn probes_use_the_http_port_and_health_paths() {
    let bundle = base();
    let c = container(one(&bundle.deployments, "Deployment"));
    for (probe, path) in [(&c.liveness_probe, "/healthz"), (&c.readiness_probe, "/readyz")] {
        let get =
            probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap_or_else(|| panic!("{path}: no httpGet probe"));
        assert_eq!(get.path.as_deref(), Some(path));
        let port = named_port(&get.port);
        assert_eq!(port, "http");
        container_port(c, port);
    }
}

// === shutdown ===

#[test]
fn the_grace_period_outlasts_the_drain_period_and_readiness_drops_at_once() {
    let bundle = base();
    let deployment = one(&bundle.deployments, "Deployment");
    let drain = bundle.config().activator.drain_period.0;
    let grace = pod_spec(deployment).termination_grace_period_seconds.expect("terminationGracePeriodSeconds");
    let grace = std::time::Duration::from_secs(u64::try_from(grace).expect("a positive grace period"));
    // After drainPeriod the listeners close and in-flight requests get up to 5 s more; the kubelet's
    // SIGKILL must not come before.
    assert!(
        grace > drain + std::time::Duration::from_secs(5),
        "terminationGracePeriodSeconds {grace:?} must exceed activator.drainPeriod {drain:?} + 5 s"
    );
    // The drain only happens with the activator listening (as in the kit).
    let args = container(deployment).args.clone().unwrap_or_default();
    assert!(args.iter().any(|a| a == "--activator-listen"), "{args:?}");

    // /readyz fails from SIGTERM on: one failed probe, soon, takes the pod out well within the drain.
    let readiness = container(deployment).readiness_probe.as_ref().expect("readinessProbe");
    let (period, failures) = (readiness.period_seconds.unwrap_or(10), readiness.failure_threshold.unwrap_or(3));
    assert_eq!((period, failures), (2, 1), "readiness: periodSeconds 2, failureThreshold 1");
    let unready_after = std::time::Duration::from_secs(u64::try_from(period * failures).expect("positive"));
    assert!(unready_after * 2 <= drain, "unready after {unready_after:?}, drain {drain:?}");
    // No preStop hook: the drain period is the wait a preStop sleep would add.
    assert!(
        container(deployment).lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).is_none(),
        "no preStop hook needed"
    );
}

#[test]
fn the_config_volume_is_the_configmap_mounted_as_a_directory_where_config_points() {
    let bundle = base();
    let deployment = one(&bundle.deployments, "Deployment");
    let c = container(deployment);
    let args = c.args.clone().unwrap_or_default();
    let at = args.iter().position(|a| a == "--config").expect("--config flag");
    let config_path = Path::new(&args[at + 1]);
    let (dir, file) = (config_path.parent().expect("a directory"), config_path.file_name().expect("a file name"));

    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| Path::new(&m.mount_path) == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {}", dir.display()));
    assert!(mount.sub_path.is_none() && mount.sub_path_expr.is_none(), "a subPath mount never sees updates");
    assert_eq!(mount.read_only, Some(true));
    let volume = pod_spec(deployment)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("no volume {}", mount.name));
    let source = volume.config_map.as_ref().expect("a configMap volume");
    assert!(source.items.is_none(), "all keys projected, so the file name is the key");
    let config_map = bundle.config_map(&source.name);
    assert_eq!(config_map.metadata.name.as_deref(), Some("spinscale-config"));
    let key = file.to_str().expect("utf-8");
    let text = config_map.data.as_ref().and_then(|d| d.get(key)).unwrap_or_else(|| panic!("no key {key}"));
    Config::parse(text).expect("the mounted config is valid");
}

#[test]
fn config_yaml_writes_out_every_knob_with_its_built_in_default() {
    let bundle = base();
    let text = bundle.config_text().to_string();
    // Every knob is the built-in default, except the peer token file, which the kit sets to the
    // Secret the Deployment mounts.
    let parsed = Config::parse(&text).expect("config.yaml is valid");
    let mut expected = Config::default();
    assert_eq!(expected.activator.peer_token_file, None, "no built-in peer token file");
    expected.activator.peer_token_file = Some(peer_token_path(&bundle));
    assert_eq!(parsed, expected);

    let written: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("YAML");
    let keys_at = |section: Option<&str>| -> BTreeSet<String> {
        let node = match section {
            None => Some(&written),
            Some(s) => written.get(s),
        };
        node.and_then(|n| n.as_mapping())
            .map(|m| m.keys().filter_map(|k| k.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    // The config's own parser names every field it accepts when it meets one it does not.
    let top = accepted_fields("");
    assert!(top.contains("collectors") && top.contains("engine"), "{top:?}");
    assert_eq!(keys_at(None), top, "top-level sections");
    for section in ["collectors", "targets", "engine", "limits", "activator"] {
        let accepted = accepted_fields(section);
        assert!(accepted.len() >= 3, "{section}: {accepted:?}");
        assert_eq!(keys_at(Some(section)), accepted, "{section}: every knob written out");
    }
}

/// The fields `Config::parse` accepts in `section` (top level when empty), from its unknown-field error.
fn accepted_fields(section: &str) -> BTreeSet<String> {
    let probe = if section.is_empty() { "zzProbe: 1\n".to_string() } else { format!("{section}:\n  zzProbe: 1\n") };
    let message = Config::parse(&probe).expect_err("an unknown field is an error").to_string();
    let expected = message.split_once("expected").map(|(_, rest)| rest).unwrap_or_else(|| panic!("{message}"));
    expected.split('`').skip(1).step_by(2).map(String::from).collect()
}

// === peer token ===

/// The Secret replicas share as the peer token.
const PEER_TOKEN_SECRET: &str = "spinscale-peer-token";

/// Where the Deployment mounts the peer token Secret's `token` key: its mount path joined with the
/// path the key is projected to.
fn peer_token_path(bundle: &Bundle) -> PathBuf {
    let deployment = one(&bundle.deployments, "Deployment");
    let volumes: Vec<_> = pod_spec(deployment)
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(PEER_TOKEN_SECRET))
        .collect();
    let volume = one(&volumes, "volume of Secret spinscale-peer-token");
    let source = volume.secret.as_ref().expect("a secret volume");
    assert_ne!(source.optional, Some(true), "spinscale must not start without its token");
    // Only `token` projected: as a listed key it must exist, so the kubelet waits for the token
    // controller to write it before it starts the container.
    let items = source.items.clone().expect("items: the `token` key listed");
    let item = one(&items, "projected key");
    assert_eq!(item.key, "token");
    let c = container(deployment);
    let mounts: Vec<_> = c.volume_mounts.iter().flatten().filter(|m| m.name == volume.name).collect();
    let mount = one(&mounts, "mount of the peer token volume");
    assert_eq!(mount.read_only, Some(true), "mounted read-only");
    assert!(mount.sub_path.is_none() && mount.sub_path_expr.is_none(), "a subPath mount never sees a rotation");
    Path::new(&mount.mount_path).join(&item.path)
}

#[test]
fn the_config_reads_the_peer_token_where_the_deployment_mounts_its_secret() {
    let bundle = base();
    let path = peer_token_path(&bundle);
    assert_eq!(path, Path::new("/var/run/spinscale/peer/token"));
    assert_eq!(bundle.config().activator.peer_token_file.as_deref(), Some(path.as_path()));
    // spinscale refuses to start with --peer-service and no token file.
    let args = container(one(&bundle.deployments, "Deployment")).args.clone().unwrap_or_default();
    assert!(args.iter().any(|a| a == "--peer-service" || a == "--peers"), "{args:?}");
    // The mount is not inside the config directory (the ConfigMap volume would hide or be hidden by it).
    assert!(!path.starts_with("/etc/spinscale"), "{}", path.display());
}

#[test]
fn the_peer_token_secret_is_filled_by_the_token_controller_for_an_account_without_permissions() {
    let bundle = base();
    let secret = bundle.secret(PEER_TOKEN_SECRET);
    assert_eq!(secret.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/service-account-token"));
    assert!(
        secret.data.is_none() && secret.string_data.is_none(),
        "the token controller writes the token; the kit holds no value"
    );
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let account = annotations.get("kubernetes.io/service-account.name").expect("service-account.name annotation");
    assert!(!annotations.contains_key("kubernetes.io/service-account.uid"), "the controller fills the uid");

    // The ServiceAccount exists in the kit, in the Secret's namespace (the controller deletes a
    // token Secret whose ServiceAccount is missing).
    let sa = bundle.service_account(account);
    assert_eq!(sa.metadata.namespace, secret.metadata.namespace);
    // The JWT is also an API credential that never expires, sent between pods over plain HTTP: it
    // belongs to an account of its own that no pod runs as and nothing grants anything to.
    assert_eq!(sa.automount_service_account_token, Some(false));
    let runs_as = pod_spec(one(&bundle.deployments, "Deployment")).service_account_name.clone();
    assert_ne!(runs_as.as_deref(), Some(account.as_str()), "not spinscale's own (privileged) account");
    let subjects = bundle
        .role_bindings
        .iter()
        .flat_map(|b| b.subjects.iter().flatten())
        .chain(bundle.cluster_role_bindings.iter().flat_map(|b| b.subjects.iter().flatten()));
    for subject in subjects {
        assert!(
            !(subject.kind == "ServiceAccount" && &subject.name == account),
            "{account} is bound to a role: the peer token would carry its permissions"
        );
    }
}

// === NetworkPolicies ===

/// Who an ingress rule of a NetworkPolicy lets in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    /// Every pod of the namespace of this name.
    Namespace(String),
    /// spinscale's own pods (a pod selector matching the Deployment's pods, in its namespace).
    SpinscalePods,
}

/// The peers each of the Deployment's container ports (by number) is open to, over every
/// NetworkPolicy. Fails on anything broader or vaguer than the two kinds of `Peer`.
fn allowed_peers(bundle: &Bundle) -> BTreeMap<i32, BTreeSet<Peer>> {
    let deployment = one(&bundle.deployments, "Deployment");
    let c = container(deployment);
    let pod_labels = deployment.spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).expect("pod labels");
    let mut allowed: BTreeMap<i32, BTreeSet<Peer>> = BTreeMap::new();
    for policy in &bundle.network_policies {
        let name = policy.metadata.name.as_deref().unwrap_or_default();
        assert_eq!(policy.metadata.namespace, deployment.metadata.namespace, "{name}");
        let spec = policy.spec.as_ref().unwrap_or_else(|| panic!("{name}: no spec"));
        let selector = &spec.pod_selector;
        assert!(selector.as_ref().and_then(|s| s.match_expressions.as_ref()).is_none(), "{name}: matchLabels only");
        let selected = selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default();
        assert!(labels_match(&selected, &pod_labels), "{name}: selects {selected:?}, not spinscale's pods");
        // Egress stays open: sources and apps can be anywhere.
        assert_eq!(spec.policy_types.as_deref(), Some(&["Ingress".to_string()][..]), "{name}: Ingress only");
        assert!(spec.egress.is_none(), "{name}: no egress rules");

        for rule in spec.ingress.iter().flatten() {
            let ports = rule.ports.as_ref().filter(|p| !p.is_empty());
            let ports = ports.unwrap_or_else(|| panic!("{name}: a rule without ports opens every port"));
            let from = rule.from.as_ref().filter(|f| !f.is_empty());
            let from = from.unwrap_or_else(|| panic!("{name}: a rule without `from` admits every source"));
            let mut peers = BTreeSet::new();
            for source in from {
                assert!(source.ip_block.is_none(), "{name}: no ipBlock expected");
                let peer = match (&source.namespace_selector, &source.pod_selector) {
                    (Some(namespaces), None) => {
                        assert!(namespaces.match_expressions.is_none(), "{name}: matchLabels only");
                        let labels = namespaces.match_labels.clone().unwrap_or_default();
                        let (key, value) = one(&labels.into_iter().collect::<Vec<_>>(), "namespace label").clone();
                        assert_eq!(key, "kubernetes.io/metadata.name", "{name}: one namespace, by name");
                        Peer::Namespace(value)
                    }
                    (None, Some(pods)) => {
                        assert!(pods.match_expressions.is_none(), "{name}: matchLabels only");
                        let labels = pods.match_labels.clone().unwrap_or_default();
                        assert!(labels_match(&labels, &pod_labels), "{name}: pods {labels:?} are not spinscale's");
                        Peer::SpinscalePods
                    }
                    other => panic!("{name}: unexpected source {other:?}"),
                };
                peers.insert(peer);
            }
            for port in ports {
                assert!(matches!(port.protocol.as_deref(), None | Some("TCP")), "{name}: TCP");
                assert!(port.end_port.is_none(), "{name}: no port ranges");
                let number = match port.port.as_ref().unwrap_or_else(|| panic!("{name}: a rule for every port")) {
                    IntOrString::String(port_name) => container_port(c, port_name),
                    IntOrString::Int(n) => *n,
                };
                allowed.entry(number).or_default().extend(peers.iter().cloned());
            }
        }
    }
    allowed
}

#[test]
fn network_policies_open_each_port_to_its_clients_only() {
    let bundle = base();
    assert_eq!(bundle.network_policies.len(), 3, "one policy per port");
    let c = container(one(&bundle.deployments, "Deployment"));
    let namespace = |n: &str| Peer::Namespace(n.to_string());
    let expected = BTreeMap::from([
        // KEDA's operator calls the scaler.
        (container_port(c, "grpc"), BTreeSet::from([namespace("keda")])),
        // Peer demand between replicas, and Prometheus scraping /metrics.
        (container_port(c, "http"), BTreeSet::from([Peer::SpinscalePods, namespace("monitoring")])),
        // Apps' traffic from the ingress controller.
        (container_port(c, "activator"), BTreeSet::from([namespace("ingress-nginx")])),
    ]);
    assert_eq!(allowed_peers(&bundle), expected);
}

#[test]
fn network_policies_admit_the_peers_and_the_scrape_on_the_ports_they_use() {
    let bundle = base();
    let allowed = allowed_peers(&bundle);
    let svc = service(&bundle);
    let c = container(one(&bundle.deployments, "Deployment"));
    let open_to = |service_port_name: &str| {
        let target = target_port_name(svc, service_port(svc, service_port_name));
        allowed.get(&container_port(c, target)).cloned().unwrap_or_default()
    };
    // --peer-service names the headless Service's HTTP port: the replicas reach each other there.
    let args = c.args.clone().unwrap_or_default();
    let peers = args.iter().position(|a| a == "--peer-service").and_then(|i| args.get(i + 1)).expect("--peer-service");
    let port: i32 = peers.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).expect("host:port");
    let peer_port_name = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.port == port)
        .and_then(|p| p.name.clone())
        .expect("a named Service port");
    assert!(open_to(&peer_port_name).contains(&Peer::SpinscalePods), "replicas reach each other on {port}");
    // The ServiceMonitor's port is open to the monitoring namespace; KEDA's to KEDA's.
    let monitor = one(&bundle.service_monitors, "ServiceMonitor");
    let scraped = one(&monitor.spec.endpoints, "endpoint").port.clone().expect("endpoint port");
    assert!(open_to(&scraped).contains(&Peer::Namespace("monitoring".into())));
    assert!(open_to("grpc").contains(&Peer::Namespace("keda".into())));
    // The activator Service's port leads to a container port open to the ingress controller.
    let activator = bundle.service("spinscale-activator");
    let port = one(activator.spec.as_ref().and_then(|s| s.ports.as_deref()).unwrap_or_default(), "port").port;
    let target = container_port(c, target_port_name(activator, port));
    assert!(allowed.get(&target).is_some_and(|p| p.contains(&Peer::Namespace("ingress-nginx".into()))));
}

// === Service, monitoring ===

#[test]
fn the_headless_service_selects_the_deployment_pods_by_their_port_names() {
    let bundle = base();
    let deployment = one(&bundle.deployments, "Deployment");
    let svc = service(&bundle);
    let spec = svc.spec.as_ref().expect("Service spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless, so KEDA's client sees every pod");
    let pod_labels = deployment.spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).expect("pod labels");
    assert_eq!(pod_labels.get("app.kubernetes.io/name").map(String::as_str), Some("spinscale"));
    let selector = spec.selector.clone().expect("Service selector");
    assert!(labels_match(&selector, &pod_labels), "Service selector {selector:?} vs pod labels {pod_labels:?}");
    let deployment_selector = deployment.spec.selector.match_labels.clone().expect("Deployment matchLabels");
    assert!(labels_match(&deployment_selector, &pod_labels));

    let c = container(deployment);
    let ports = spec.ports.clone().expect("Service ports");
    for (name, number) in [("grpc", 9500), ("http", 9501)] {
        let port = ports.iter().find(|p| p.name.as_deref() == Some(name)).unwrap_or_else(|| panic!("port {name}"));
        assert_eq!(port.port, number);
        let target = named_port(port.target_port.as_ref().expect("targetPort"));
        assert_eq!(container_port(c, target), number, "{name}");
    }

    let budget = one(&bundle.disruption_budgets, "PodDisruptionBudget");
    let budget_selector = budget.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| s.match_labels.clone());
    assert!(labels_match(&budget_selector.expect("PDB selector"), &pod_labels));
}

#[test]
fn the_service_monitor_scrapes_metrics_on_the_http_port() {
    let bundle = base();
    let monitor = one(&bundle.service_monitors, "ServiceMonitor");
    let svc = service(&bundle);
    let selector = monitor.spec.selector.match_labels.clone().expect("matchLabels");
    assert!(labels_match(&selector, svc.metadata.labels.as_ref().expect("Service labels")));
    // Without a namespaceSelector a ServiceMonitor selects Services of its own namespace.
    if let Some(names) = monitor.spec.namespace_selector.as_ref().and_then(|n| n.match_names.as_ref()) {
        assert!(names.iter().any(|n| Some(n) == svc.metadata.namespace.as_ref()), "{names:?}");
    }
    assert_eq!(monitor.metadata.namespace, svc.metadata.namespace);
    let endpoint = one(&monitor.spec.endpoints, "endpoint");
    let port = endpoint.port.as_deref().expect("endpoint port");
    assert_eq!(port, "http");
    service_port(svc, port);
    container_port(container(one(&bundle.deployments, "Deployment")), port);
    assert_eq!(endpoint.path.as_deref(), Some("/metrics"));
}

#[test]
fn the_prometheus_rule_alerts_on_spinscale_metrics() {
    let bundle = base();
    let rule = one(&bundle.prometheus_rules, "PrometheusRule");
    let rules: Vec<&manifests::Rule> = rule.spec.groups.iter().flat_map(|g| &g.rules).collect();
    for r in &rules {
        let names = metric_names(&r.expr);
        assert!(!names.is_empty(), "{}: no metric", r.expr);
        for name in names {
            assert!(is_spinscale_metric(&name), "{}: {name} is not a spinscale metric", r.expr);
        }
    }
    let wanted = [
        ("SpinscaleSourceDown", "spinscale_source_up", Some("2m")),
        ("SpinscaleSignalStale", "spinscale_source_reading_age_seconds", Some("2m")),
        ("SpinscalePushesFailing", "spinscale_push_failures_total", None),
        ("SpinscaleConfigRejected", "spinscale_config_reload_total", None),
    ];
    for (alert, metric, for_) in wanted {
        let r = rules.iter().find(|r| r.alert.as_deref() == Some(alert)).unwrap_or_else(|| panic!("no {alert}"));
        assert_eq!(metric_names(&r.expr), [metric], "{alert}");
        if for_.is_some() {
            assert_eq!(r.for_.as_deref(), for_, "{alert}");
        }
        let annotations = r.annotations.clone().unwrap_or_default();
        assert!(annotations.contains_key("summary"), "{alert}: a summary");
    }
}

#[test]
fn the_grafana_dashboard_is_valid_json_on_spinscale_metrics() {
    let bundle = base();
    let config_map = bundle.config_map("spinscale-grafana-dashboard");
    let labels = config_map.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("grafana_dashboard").map(String::as_str), Some("1"));
    let text = config_map.data.as_ref().and_then(|d| d.get("grafana-dashboard.json")).expect("dashboard file");
    let dashboard: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());

    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(panel["id"].as_u64().expect("numeric id")), "{title}: duplicate id");
        assert!(panel["gridPos"]["w"].is_u64() && panel["gridPos"]["h"].is_u64(), "{title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        for target in targets.unwrap_or_else(|| panic!("{title}: no query")) {
            exprs.push((title.to_string(), target["expr"].as_str().expect("expr").to_string()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().expect("templating") {
        if let Some(query) = variable["query"]["query"].as_str() {
            let inner = query.strip_prefix("label_values(").and_then(|q| q.rsplit_once(',')).map(|(m, _)| m);
            exprs.push((format!("variable {}", variable["name"]), inner.expect("label_values(metric, label)").into()));
        }
    }
    let mut used = BTreeSet::new();
    for (title, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: {expr}: no metric");
        for name in names {
            assert!(is_spinscale_metric(&name), "{title}: {expr}: {name} is not a spinscale metric");
            used.insert(name);
        }
    }
    assert!(used.len() >= 12, "the dashboard shows most of the exporter: {used:?}");
}

// === RBAC ===

#[test]
fn the_role_binding_lets_the_deployment_service_account_read_configmaps() {
    let bundle = base();
    let account =
        pod_spec(one(&bundle.deployments, "Deployment")).service_account_name.clone().expect("serviceAccountName");
    let sa = bundle.service_account(&account);

    let binding = one(&bundle.role_bindings, "RoleBinding");
    let subject = one(binding.subjects.as_deref().unwrap_or_default(), "subject");
    assert_eq!((subject.kind.as_str(), subject.name.as_str()), ("ServiceAccount", account.as_str()));
    assert_eq!(subject.namespace, sa.metadata.namespace);
    assert_eq!(
        (binding.role_ref.api_group.as_deref(), binding.role_ref.kind.as_str()),
        (Some("rbac.authorization.k8s.io"), "Role")
    );

    let role = one(&bundle.roles, "Role");
    assert_eq!(role.metadata.name.as_deref(), Some(binding.role_ref.name.as_str()));
    assert_eq!(role.metadata.namespace, binding.metadata.namespace);
    let grants: BTreeSet<&str> = role
        .rules
        .iter()
        .flatten()
        .filter(|r| r.api_groups.iter().flatten().any(std::string::String::is_empty))
        .filter(|r| r.resources.iter().flatten().any(|res| res == "configmaps"))
        .flat_map(|r| r.verbs.iter().map(String::as_str))
        .collect();
    assert_eq!(grants, BTreeSet::from(["get", "list", "watch"]));
}

#[test]
fn the_activator_may_watch_endpoint_slices_in_every_namespace() {
    let bundle = base();
    let deployment = one(&bundle.deployments, "Deployment");
    let args = pod_spec(deployment).containers[0].args.clone().unwrap_or_default();
    assert!(args.iter().any(|a| a == "--watch-endpoints"), "{args:?}");
    let account = pod_spec(deployment).service_account_name.clone().expect("serviceAccountName");
    let binding = one(&bundle.cluster_role_bindings, "ClusterRoleBinding");
    let subject = one(binding.subjects.as_deref().unwrap_or_default(), "subject");
    assert_eq!((subject.name.as_str(), subject.namespace.as_deref()), (account.as_str(), Some(NAMESPACE)));
    let role = one(&bundle.cluster_roles, "ClusterRole");
    assert_eq!(role.metadata.name.as_deref(), Some(binding.role_ref.name.as_str()));
    let grants: BTreeSet<&str> = role
        .rules
        .iter()
        .flatten()
        .filter(|r| r.api_groups.iter().flatten().any(|g| g == "discovery.k8s.io"))
        .filter(|r| r.resources.iter().flatten().any(|res| res == "endpointslices"))
        .flat_map(|r| r.verbs.iter().map(String::as_str))
        .collect();
    assert_eq!(grants, BTreeSet::from(["list", "watch"]));
    // The peers are the headless Service's addresses on its HTTP port.
    let peers = args.iter().position(|a| a == "--peer-service").and_then(|i| args.get(i + 1)).expect("--peer-service");
    let service = bundle.service("spinscale");
    assert_eq!(service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()), Some("None"), "headless");
    let http_port =
        service.spec.iter().flat_map(|s| s.ports.iter().flatten()).find(|p| p.name.as_deref() == Some("http"));
    assert_eq!(peers, &format!("spinscale.{NAMESPACE}.svc.cluster.local:{}", http_port.expect("http port").port));
}

// === the example ===

/// An example app's SpinApp and ScaledObject: autoscaled, its Deployment scaled from 0 to 50 by
/// one `external-push` trigger that reaches spinscale's gRPC port. The trigger as spinscale reads it
/// (`scalerAddress` is KEDA's and passed over quietly), with the shipped config's defaults.
fn example_app(kit: &Bundle, example: &Bundle, name: &str, scaled_object: &str) -> TargetSpec {
    let app = example.spin_app(name);
    let scaled = example.scaled_object(scaled_object);

    assert_eq!(app.spec.enable_autoscaling, Some(true));
    assert_eq!(app.spec.replicas, None, "replicas and autoscaling are exclusive");
    assert_eq!(app.spec.executor, "containerd-shim-spin");

    let target = &scaled.spec.scale_target_ref;
    assert_eq!(target.api_version.as_deref(), Some("apps/v1"));
    assert_eq!(target.kind.as_deref(), Some("Deployment"));
    assert_eq!(
        Some(target.name.as_str()),
        app.metadata.name.as_deref(),
        "the Deployment the operator names after the SpinApp"
    );
    assert_eq!(scaled.metadata.namespace, app.metadata.namespace);
    let spec = &scaled.spec;
    assert_eq!((spec.min_replica_count, spec.max_replica_count, spec.cooldown_period), (Some(0), Some(50), Some(30)));

    let trigger = one(&spec.triggers, "trigger");
    assert_eq!(trigger.type_, "external-push");
    let address = trigger.metadata.get("scalerAddress").expect("scalerAddress");
    let (host, port) = address.rsplit_once(':').expect("host:port");
    let svc = service(kit);
    let expected_host = format!(
        "{}.{}.svc.cluster.local",
        svc.metadata.name.as_deref().unwrap_or_default(),
        svc.metadata.namespace.as_deref().unwrap_or_default()
    );
    assert_eq!(host, expected_host);
    assert_eq!(port.parse::<i32>().ok(), Some(service_port(svc, "grpc")));

    let config = Config::parse(
        kit.config_map("spinscale-config").data.as_ref().and_then(|d| d.get("config.yaml")).expect("config.yaml"),
    )
    .expect("valid config");
    let metadata: HashMap<String, String> = trigger.metadata.clone().into_iter().collect();
    let parsed = TargetSpec::parse(&metadata, &config.defaults).expect("spinscale accepts the example trigger");
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    parsed
}

#[test]
fn the_example_scaled_object_reaches_spinscale_and_scales_the_spinapp_deployment() {
    let parsed = example_app(&base(), &examples(), "webhook-handler", "webhook-handler-scaler");
    let prometheus = parsed.prometheus.expect("a Prometheus source");
    assert_eq!(prometheus.address, "http://prometheus.monitoring:9090");
    let kafka = parsed.kafka.expect("a Kafka source");
    assert_eq!(
        (kafka.consumer_group.as_str(), kafka.topics.as_slice()),
        ("webhook-handler", &["events".to_string()][..])
    );
    assert_eq!((parsed.rate.target_rps, parsed.lag.lag_threshold), (10.0, 5.0));
}

// === the activator ===

#[test]
fn the_activator_listens_on_its_named_container_port() {
    let bundle = base();
    let c = container(one(&bundle.deployments, "Deployment"));
    let args = c.args.clone().unwrap_or_default();
    let at = args.iter().position(|a| a == "--activator-listen").expect("--activator-listen flag");
    let address: std::net::SocketAddr = args.get(at + 1).expect("its value").parse().expect("an address");
    assert!(address.ip().is_unspecified(), "reachable from other pods: {address}");
    assert_eq!(i32::from(address.port()), container_port(c, "activator"));
}

#[test]
fn the_activator_service_is_a_cluster_ip_service_on_the_deployment_pods() {
    let bundle = base();
    let deployment = one(&bundle.deployments, "Deployment");
    let svc = bundle.service("spinscale-activator");
    assert_eq!(svc.metadata.namespace.as_deref(), Some(NAMESPACE));
    let spec = svc.spec.as_ref().expect("Service spec");
    assert!(matches!(spec.type_.as_deref(), None | Some("ClusterIP")), "{:?}", spec.type_);
    assert_ne!(spec.cluster_ip.as_deref(), Some("None"), "not headless: an Ingress backend needs the port mapping");
    let pod_labels = deployment.spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).expect("pod labels");
    assert!(labels_match(&spec.selector.clone().expect("selector"), &pod_labels));
    let ports = spec.ports.clone().expect("ports");
    let port = one(&ports, "port");
    assert_eq!(port.port, 80);
    let target = named_port(port.target_port.as_ref().expect("targetPort"));
    assert_eq!(target, "activator");
    assert_eq!(container_port(container(deployment), target), 9502);

    // The ServiceMonitor scrapes its port on every Service it selects: only the headless one has it,
    // or every pod would be scraped twice (and the activator asked for /metrics).
    let monitor = one(&bundle.service_monitors, "ServiceMonitor");
    let selector = monitor.spec.selector.match_labels.clone().expect("matchLabels");
    let scraped = one(&monitor.spec.endpoints, "endpoint").port.clone().expect("endpoint port");
    let with_port: Vec<&str> = bundle
        .services
        .iter()
        .filter(|s| labels_match(&selector, s.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
        .filter(|s| {
            s.spec.iter().flat_map(|spec| spec.ports.iter().flatten()).any(|p| p.name.as_ref() == Some(&scraped))
        })
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    assert_eq!(with_port, ["spinscale"]);
}

/// The Service an example Ingress path sends to, and the port it names.
fn ingress_backends(ingress: &Ingress) -> Vec<(Option<String>, String, String, i32)> {
    let rules = ingress.spec.as_ref().and_then(|s| s.rules.clone()).unwrap_or_default();
    let mut backends = Vec::new();
    for rule in rules {
        for path in rule.http.map(|h| h.paths).unwrap_or_default() {
            let service = path.backend.service.expect("a Service backend");
            let number = service.port.and_then(|p| p.number).expect("a port number");
            backends.push((rule.host.clone(), path.path.unwrap_or_else(|| "/".into()), service.name, number));
        }
    }
    backends
}

#[test]
fn the_example_ingress_reaches_the_activator_through_an_external_name_service() {
    let kit = base();
    let example = examples();
    let ingress = one(&example.ingresses, "Ingress");
    let backends = ingress_backends(ingress);
    assert!(!backends.is_empty());
    for (host, _, name, number) in backends {
        assert!(host.is_some(), "the activator routes by host");
        // An Ingress names a Service of its own namespace.
        let local = example.service(&name);
        assert_eq!(local.metadata.namespace, ingress.metadata.namespace);
        let spec = local.spec.as_ref().expect("Service spec");
        assert_eq!(spec.type_.as_deref(), Some("ExternalName"));
        assert!(spec.ports.iter().flatten().any(|p| p.port == number), "{name} declares port {number}");
        let external = spec.external_name.as_deref().expect("externalName");
        let labels: Vec<&str> = external.split('.').collect();
        assert_eq!(labels[2..], ["svc", "cluster", "local"], "a full cluster DNS name: {external}");
        let activator = kit
            .services
            .iter()
            .find(|s| {
                s.metadata.name.as_deref() == Some(labels[0]) && s.metadata.namespace.as_deref() == Some(labels[1])
            })
            .unwrap_or_else(|| panic!("{external} is no Service of the base"));
        assert_eq!(activator.metadata.name.as_deref(), Some("spinscale-activator"));
        let target = target_port_name(activator, number);
        assert_eq!(target, "activator");
        container_port(container(one(&kit.deployments, "Deployment")), target);
    }
}

#[test]
fn the_example_activator_trigger_routes_the_ingress_hosts_to_the_app_service() {
    let kit = base();
    let example = examples();
    let parsed = example_app(&kit, &example, "api-function", "api-function-scaler");
    assert!(
        parsed.prometheus.is_none() && parsed.scrape.is_none() && parsed.kafka.is_none(),
        "the route is the signal"
    );
    let route = parsed.http.expect("an activator route");

    let ingress = one(&example.ingresses, "Ingress");
    for (host, path, _, _) in ingress_backends(ingress) {
        let host = host.expect("a host");
        assert!(route.hosts.contains(&host), "{host} not in {:?}", route.hosts);
        assert!(
            path == "/" && route.path_prefixes.is_empty() || route.path_prefixes.contains(&path),
            "{path} vs {:?}",
            route.path_prefixes
        );
    }

    // `backend` is the Service the Spin operator creates for the SpinApp: its name, port 80, in the
    // namespace the example documents (it is applied without one).
    let app = example.spin_app("api-function");
    assert_eq!((app.metadata.namespace.as_ref(), ingress.metadata.namespace.as_ref()), (None, None));
    let service_host = format!("{}.default.svc", app.metadata.name.as_deref().unwrap_or_default());
    assert_eq!(route.backend.scheme_str(), Some("http"));
    assert_eq!(route.backend.host(), Some(service_host.as_str()));
    assert_eq!(route.backend.port_u16(), Some(80));
    assert_eq!(
        (route.hold_timeout, route.max_held, route.cold_start_header),
        (std::time::Duration::from_secs(20), 1000, true),
        "the documented defaults"
    );
}

// === PromQL metric names ===

fn is_spinscale_metric(name: &str) -> bool {
    METRICS.contains(&name)
        || HISTOGRAMS
            .iter()
            .any(|h| name.strip_prefix(h).is_some_and(|suffix| ["_bucket", "_sum", "_count"].contains(&suffix)))
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers and
/// range selectors that are not functions, aggregations, keywords or grouping labels.
fn metric_names(expr: &str) -> Vec<String> {
    const AGGREGATIONS: [&str; 14] = [
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "limitk",
        "limit_ratio",
    ];
    const KEYWORDS: [&str; 6] = ["bool", "and", "or", "unless", "offset", "atan2"];
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

    // Blank out strings, `{...}` matchers and `[...]` ranges.
    let mut plain = String::with_capacity(expr.len());
    let (mut quote, mut depth) = (None, 0usize);
    for c in expr.chars() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth = depth.saturating_sub(1),
            _ if depth == 0 => {
                plain.push(c);
                continue;
            }
            _ => {}
        }
        plain.push(' ');
    }

    let chars: Vec<char> = plain.chars().collect();
    let next_non_space = |from: usize| chars[from..].iter().find(|c| !c.is_whitespace()).copied();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '$' || c == '.' {
            // Numbers, durations and dashboard variables.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "._$".contains(chars[i])) {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        if GROUPING.contains(&word.as_str()) {
            if next_non_space(i) == Some('(') {
                i += chars[i..].iter().position(|&c| c == ')').map_or(chars.len() - i, |p| p + 1);
            }
        } else if !(AGGREGATIONS.contains(&word.as_str())
            || KEYWORDS.contains(&word.as_str())
            || next_non_space(i) == Some('('))
        {
            names.push(word);
        }
    }
    names
}

#[test]
fn metric_names_finds_selected_metrics_only() {
    let cases: [(&str, &[&str]); 7] = [
        ("spinscale_source_up == 0", &["spinscale_source_up"]),
        (
            "histogram_quantile(0.99, sum by (le, method) (rate(spinscale_grpc_request_duration_seconds_bucket[5m])))",
            &["spinscale_grpc_request_duration_seconds_bucket"],
        ),
        (
            r#"increase(spinscale_config_reload_total{result="rejected", x=~"a{1}"}[10m]) > 0"#,
            &["spinscale_config_reload_total"],
        ),
        ("sum(rate(a_total[$__rate_interval])) / ignoring(kind) group_left sum(b) without (pod)", &["a_total", "b"]),
        ("count(up == 0) or vector(0)", &["up"]),
        ("max(x offset 5m) > bool 1.5e3", &["x"]),
        (r#"label_replace(y, "dst", "$1", "src", "(.*)")"#, &["y"]),
    ];
    for (expr, want) in cases {
        assert_eq!(metric_names(expr), want, "{expr}");
    }
    assert!(is_spinscale_metric("spinscale_push_latency_seconds_bucket"));
    assert!(!is_spinscale_metric("spinscale_targets_bucket"));
    assert!(!is_spinscale_metric("up"));
}

#[test]
fn the_activator_may_watch_ingresses_and_http_routes_in_every_namespace() {
    let bundle = base();
    let deployment = one(&bundle.deployments, "Deployment");
    let args = pod_spec(deployment).containers[0].args.clone().unwrap_or_default();
    assert!(args.iter().any(|a| a == "--watch-ingresses"), "{args:?}");
    let role = one(&bundle.cluster_roles, "ClusterRole");
    for (group, resource) in [("networking.k8s.io", "ingresses"), ("gateway.networking.k8s.io", "httproutes")] {
        let grants: BTreeSet<&str> = role
            .rules
            .iter()
            .flatten()
            .filter(|r| r.api_groups.iter().flatten().any(|g| g == group))
            .filter(|r| r.resources.iter().flatten().any(|res| res == resource))
            .flat_map(|r| r.verbs.iter().map(String::as_str))
            .collect();
        assert_eq!(grants, BTreeSet::from(["list", "watch"]), "{group}/{resource}");
    }
}
