//! SpinApps and the Services in front of them, fixed for the SpinKube facts of docs/keda.md §8: the API
//! group is `core.spinkube.dev` (it was `core.spinoperator.dev` until 2024, pod labels included),
//! and an autoscaled SpinApp sets `enableAutoscaling: true` and no `replicas`, which its webhook
//! rejects together (and `replicas < 1` alone).

use serde_yaml_ng::{Mapping, Value};

use super::{ConvertError, DocRef, ObjectKey, Outcome, show, str_at};
use spinscale_core::quantity;

pub(crate) const GROUP: &str = "core.spinkube.dev";
pub(crate) const OLD_GROUP: &str = "core.spinoperator.dev";
const AUTOSCALING: &str = "enableAutoscaling";
const REPLICAS: &str = "replicas";

/// A SpinApp of the current or the old API group.
pub(crate) fn is_spin_app(object: &Mapping) -> bool {
    let group = str_at(object, "apiVersion").and_then(|v| v.rsplit_once('/')).map(|(group, _)| group);
    str_at(object, "kind") == Some("SpinApp") && matches!(group, Some(GROUP | OLD_GROUP))
}

/// A SpinApp's memory per instance: `spec.resources.limits.memory`, else `requests.memory`, when it
/// is a quantity spinscale reads.
pub(crate) fn instance_memory(object: &Mapping) -> Option<String> {
    let resources = object.get("spec")?.get("resources")?;
    ["limits", "requests"]
        .iter()
        .filter_map(|kind| resources.get(kind)?.get("memory")?.as_str())
        .find(|memory| quantity::parse_memory(memory).is_ok())
        .map(String::from)
}

/// `core.spinoperator.dev/x` → `core.spinkube.dev/x` (an apiVersion or a label name); `None` for
/// other values.
pub(crate) fn current_group(name: &str) -> Option<String> {
    let rest = name.strip_prefix(OLD_GROUP)?.strip_prefix('/')?;
    Some(format!("{GROUP}/{rest}"))
}

/// `scaled`: a ScaledObject of the same input targets this SpinApp.
pub(crate) fn convert_spin_app(object: &mut Mapping, doc: &DocRef, scaled: bool) -> Result<Outcome, ConvertError> {
    let mut outcome = Outcome::default();
    if let Some(old) = str_at(object, "apiVersion").map(String::from)
        && let Some(new) = current_group(&old)
    {
        outcome.notes.push(format!(
            "apiVersion {old} → {new}: SpinKube's API group has been {GROUP} since 2024, the old one is not served"
        ));
        object.insert("apiVersion".into(), new.into());
        outcome.changed = true;
    }

    let spec = object
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| doc.error("spec", "is missing or not a mapping"))?;
    let replicas = match spec.get(REPLICAS) {
        None => None,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
        Some(other) => return Err(doc.error("spec.replicas", format!("{} is not an integer", show(other)))),
    };
    let autoscaling = match spec.get(AUTOSCALING) {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(doc.error("spec.enableAutoscaling", format!("{} is not true or false", show(other)))),
    };
    // `replicas: 0` can only mean "scale me to zero": that is autoscaling.
    let wants_zero = replicas.is_some_and(|r| r < 1);
    if !(scaled || wants_zero || autoscaling == Some(true)) {
        return Ok(outcome);
    }
    if let Some(r) = replicas {
        let why = if wants_zero {
            "the SpinApp webhook rejects replicas below 1 without autoscaling, and replicas with it"
        } else {
            "the SpinApp webhook rejects replicas together with enableAutoscaling"
        };
        outcome.notes.push(format!("spec.replicas: {r} removed: KEDA and its HPA own the replica count ({why})"));
    }
    if autoscaling != Some(true) {
        outcome.notes.push(format!(
            "spec.enableAutoscaling: true{}: the Spin operator then creates the Deployment without a replica \
             count, for KEDA to scale",
            if autoscaling == Some(false) { " (was false)" } else { "" }
        ));
    }
    if replicas.is_some() || autoscaling != Some(true) {
        set_autoscaling(spec);
        outcome.changed = true;
    }
    if !scaled {
        outcome.notes.push(
            "no ScaledObject in this input scales this SpinApp: until one targets its Deployment \
             (apps/v1, same name), it runs one replica"
                .into(),
        );
    }
    Ok(outcome)
}

/// `enableAutoscaling: true` where `replicas` or `enableAutoscaling` was (or at the end), no `replicas`.
fn set_autoscaling(spec: &mut Mapping) {
    let mut rebuilt = Mapping::with_capacity(spec.len());
    let mut placed = false;
    for (key, value) in std::mem::take(spec) {
        if matches!(key.as_str(), Some(REPLICAS | AUTOSCALING)) {
            if !placed {
                rebuilt.insert(AUTOSCALING.into(), Value::Bool(true));
                placed = true;
            }
        } else {
            rebuilt.insert(key, value);
        }
    }
    if !placed {
        rebuilt.insert(AUTOSCALING.into(), Value::Bool(true));
    }
    *spec = rebuilt;
}

/// A Service selecting pods by the old group's labels selects nothing: the operator labels pods
/// `core.spinkube.dev/app-name`. A Service named like a SpinApp collides with the operator's own.
pub(crate) fn convert_service(
    object: &mut Mapping,
    doc: &DocRef,
    key: Option<&ObjectKey>,
    spin_apps: &[ObjectKey],
) -> Result<Outcome, ConvertError> {
    let mut outcome = Outcome::default();
    let selector = object.get_mut("spec").and_then(|s| s.get_mut("selector"));
    if let Some(selector) = selector {
        let selector = selector.as_mapping_mut().ok_or_else(|| doc.error("spec.selector", "is not a mapping"))?;
        let mut rebuilt = Mapping::with_capacity(selector.len());
        for (label, value) in std::mem::take(selector) {
            match label.as_str().and_then(|l| Some((l, current_group(l)?))) {
                Some((old, new)) => {
                    outcome.notes.push(format!(
                        "spec.selector: label {old} → {new}: the Spin operator labels pods with {GROUP} names now, \
                         so the old label selects no pod"
                    ));
                    rebuilt.insert(new.into(), value);
                    outcome.changed = true;
                }
                None => {
                    rebuilt.insert(label, value);
                }
            }
        }
        *selector = rebuilt;
    }
    if let Some(key) = key
        && spin_apps.iter().any(|app| app.matches(key))
    {
        outcome.notes.push(format!(
            "the Spin operator creates a Service named {} for the SpinApp of that name (port 80 to the pods' \
             http-app port); this one has the same name, so the two overwrite each other: remove it and use the \
             operator's",
            key.name
        ));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(yaml: &str) -> Mapping {
        serde_yaml_ng::from_str(yaml).expect("test YAML")
    }

    fn doc() -> DocRef {
        DocRef { label: "document 1 (SpinApp a, line 1)".into() }
    }

    #[test]
    fn a_scaled_spin_app_gets_autoscaling_in_place_of_replicas_and_the_current_group() {
        let mut app = mapping(
            "apiVersion: core.spinoperator.dev/v1alpha1\nkind: SpinApp\nmetadata: {name: a}\n\
             spec: {image: i, replicas: 0, executor: containerd-shim-spin}\n",
        );
        let outcome = convert_spin_app(&mut app, &doc(), true).expect("converts");
        assert!(outcome.changed);
        assert_eq!(str_at(&app, "apiVersion"), Some("core.spinkube.dev/v1alpha1"));
        let spec = app["spec"].as_mapping().expect("spec");
        let keys: Vec<&str> = spec.keys().filter_map(Value::as_str).collect();
        assert_eq!(keys, ["image", "enableAutoscaling", "executor"]);
        assert_eq!(spec["enableAutoscaling"], Value::Bool(true));
        assert_eq!(outcome.notes.len(), 3, "{:?}", outcome.notes);
        assert!(outcome.notes[1].starts_with("spec.replicas: 0 removed"), "{:?}", outcome.notes);
    }

    #[test]
    fn an_unscaled_spin_app_with_replicas_keeps_them() {
        let mut app = mapping("apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nspec: {image: i, replicas: 2}\n");
        let outcome = convert_spin_app(&mut app, &doc(), false).expect("converts");
        assert!(!outcome.changed && outcome.notes.is_empty(), "{outcome:?}");
        assert_eq!(app["spec"]["replicas"], Value::from(2));
    }

    #[test]
    fn replicas_zero_without_a_scaled_object_turns_autoscaling_on_and_says_it_runs_one_replica() {
        let mut app = mapping("apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nspec: {image: i, replicas: 0}\n");
        let outcome = convert_spin_app(&mut app, &doc(), false).expect("converts");
        assert!(outcome.changed);
        assert_eq!(app["spec"], Value::Mapping(mapping("{image: i, enableAutoscaling: true}")));
        assert!(outcome.notes.last().is_some_and(|n| n.contains("runs one replica")), "{:?}", outcome.notes);
    }

    #[test]
    fn an_already_correct_spin_app_is_left_alone() {
        let mut app = mapping(
            "apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nspec: {image: i, enableAutoscaling: true}\n",
        );
        let outcome = convert_spin_app(&mut app, &doc(), true).expect("converts");
        assert!(!outcome.changed && outcome.notes.is_empty(), "{outcome:?}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        for (spec, field) in
            [("{replicas: \"0\"}", "spec.replicas"), ("{enableAutoscaling: yes please}", "spec.enableAutoscaling")]
        {
            let mut app = mapping(&format!("apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\nspec: {spec}\n"));
            let err = convert_spin_app(&mut app, &doc(), true).expect_err(spec);
            assert_eq!(err.field, field);
        }
        let mut app = mapping("apiVersion: core.spinkube.dev/v1alpha1\nkind: SpinApp\n");
        assert_eq!(convert_spin_app(&mut app, &doc(), true).expect_err("no spec").field, "spec");
    }

    #[test]
    fn service_selectors_move_to_the_current_group_and_name_clashes_are_reported() {
        let mut svc = mapping(
            "apiVersion: v1\nkind: Service\nmetadata: {name: api}\n\
             spec: {selector: {core.spinoperator.dev/app-name: api, tier: web}, ports: [{port: 80}]}\n",
        );
        let key = ObjectKey { namespace: None, name: "api".into() };
        let outcome = convert_service(&mut svc, &doc(), Some(&key), std::slice::from_ref(&key)).expect("converts");
        assert!(outcome.changed);
        assert_eq!(svc["spec"]["selector"], Value::Mapping(mapping("{core.spinkube.dev/app-name: api, tier: web}")));
        assert_eq!(outcome.notes.len(), 2, "{:?}", outcome.notes);
        assert!(outcome.notes[1].contains("same name"), "{:?}", outcome.notes);
    }

    #[test]
    fn api_versions_of_the_old_group_are_rewritten_only() {
        assert_eq!(current_group("core.spinoperator.dev/v1alpha1").as_deref(), Some("core.spinkube.dev/v1alpha1"));
        assert_eq!(current_group("core.spinkube.dev/v1alpha1"), None);
        assert_eq!(current_group("core.spinoperator.devx/v1"), None);
    }
}
