//! Typed views of the custom resources spinscale's manifests use (SpinApp, ScaledObject,
//! ServiceMonitor, PrometheusRule) and of kustomize's Kustomization, plus multi-document YAML
//! reading. Unknown fields are errors, so a misspelt field fails the tests that read it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Deserialize;

/// Every non-empty document of a multi-document YAML text, as JSON values (the shape Kubernetes
/// types deserialize from).
pub fn documents(text: &str, origin: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .enumerate()
        .map(|(i, doc)| {
            serde_json::Value::deserialize(doc).unwrap_or_else(|e| panic!("{origin}: document {}: {e}", i + 1))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `(apiVersion, kind)` of a document.
pub fn type_of(doc: &serde_json::Value) -> (&str, &str) {
    let field = |name: &str| doc.get(name).and_then(|v| v.as_str()).unwrap_or("");
    (field("apiVersion"), field("kind"))
}

/// Deserializes a document into `T`, naming the origin on failure.
pub fn typed<T: serde::de::DeserializeOwned>(doc: &serde_json::Value, origin: &str) -> T {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{origin}: {e}"))
}

/// Deserializes a built-in kind with k8s-openapi and checks it serializes back to the same JSON.
/// k8s-openapi skips fields it does not know, so this is what catches a misspelt field.
pub fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &serde_json::Value, origin: &str) -> T {
    let typed: T = typed(doc, origin);
    let back = serde_json::to_value(&typed).unwrap_or_else(|e| panic!("{origin}: {e}"));
    if let Some(difference) = first_difference(doc, &back, "") {
        panic!("{origin}: does not round-trip through k8s-openapi (unknown field or wrong form?): {difference}");
    }
    typed
}

/// The first path where `a` and `b` differ, if any: a key only one has, or different values.
pub fn first_difference(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, &format!("{path}.{k}")),
                (Some(_), None) => Some(format!("{path}.{k} only in the first")),
                (None, _) => Some(format!("{path}.{k} only in the second")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpinApp {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: SpinAppSpec,
}

/// The fields of spin-operator's SpinApp spec that these manifests may use.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpinAppSpec {
    pub image: String,
    pub executor: String,
    pub replicas: Option<i32>,
    pub enable_autoscaling: Option<bool>,
    pub resources: Option<Resources>,
    pub image_pull_secrets: Option<Vec<serde_json::Value>>,
    pub variables: Option<Vec<serde_json::Value>>,
    pub runtime_config: Option<serde_json::Value>,
    pub pod_labels: Option<BTreeMap<String, String>>,
    pub pod_annotations: Option<BTreeMap<String, String>>,
    pub deployment_annotations: Option<BTreeMap<String, String>>,
    pub service_annotations: Option<BTreeMap<String, String>>,
    pub components: Option<Vec<String>>,
    pub checks: Option<serde_json::Value>,
    pub volumes: Option<Vec<serde_json::Value>>,
    pub volume_mounts: Option<Vec<serde_json::Value>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub limits: Option<BTreeMap<String, String>>,
    pub requests: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaledObject {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ScaledObjectSpec,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaledObjectSpec {
    pub scale_target_ref: ScaleTargetRef,
    pub polling_interval: Option<i32>,
    pub cooldown_period: Option<i32>,
    pub initial_cooldown_period: Option<i32>,
    pub idle_replica_count: Option<i32>,
    pub min_replica_count: Option<i32>,
    pub max_replica_count: Option<i32>,
    pub advanced: Option<serde_json::Value>,
    pub fallback: Option<serde_json::Value>,
    pub triggers: Vec<Trigger>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleTargetRef {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub env_source_container_name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Trigger {
    #[serde(rename = "type")]
    pub type_: String,
    pub name: Option<String>,
    /// KEDA's CRD types these as strings; a number here is a mistake.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub metric_type: Option<String>,
    pub use_cached_metrics: Option<bool>,
    pub authentication_ref: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceMonitorSpec,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    pub namespace_selector: Option<NamespaceSelector>,
    pub endpoints: Vec<ScrapeEndpoint>,
    pub job_label: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceSelector {
    pub match_names: Option<Vec<String>>,
    pub any: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScrapeEndpoint {
    pub port: Option<String>,
    pub path: Option<String>,
    pub interval: Option<String>,
    pub scrape_timeout: Option<String>,
    pub scheme: Option<String>,
    pub honor_labels: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusRule {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PrometheusRuleSpec,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusRuleSpec {
    pub groups: Vec<RuleGroup>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    pub name: String,
    pub interval: Option<String>,
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub alert: Option<String>,
    pub record: Option<String>,
    pub expr: String,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kustomization {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub config_map_generator: Vec<ConfigMapGenerator>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapGenerator {
    pub name: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub files: Vec<String>,
    pub options: Option<GeneratorOptions>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeneratorOptions {
    pub disable_name_suffix_hash: Option<bool>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
}
