//! KEDA ScaledObjects: `prometheus` and `kafka` (or `apache-kafka`) triggers become `external-push`
//! triggers to spinscale with the same values under spinscale's keys (`triggers`), their
//! credentials as named connections (`auth`); a `scaleTargetRef` to a SpinApp becomes the
//! SpinApp's Deployment; `pollingInterval` above KEDA's default becomes the query's
//! `queryInterval`.

use std::collections::HashMap;

use serde_yaml_ng::{Mapping, Value};

use super::activator::RouteKeys;
use super::auth::{self, Connections};
use super::comments::trigger_path;
use super::triggers::{self, Build, Item, PUSH_TYPE, Source, SourceTrigger};
use super::{ConvertError, DocRef, ObjectKey, Options, Outcome, show, str_at};
use spinscale_core::spec;

/// KEDA's default `pollingInterval`, seconds (docs/keda.md §5).
const KEDA_POLLING_INTERVAL: i64 = 30;

pub(crate) fn is_scaled_object(object: &Mapping) -> bool {
    str_at(object, "kind") == Some("ScaledObject")
        && str_at(object, "apiVersion").is_some_and(|v| v.starts_with("keda.sh/"))
}

/// The SpinApp a ScaledObject scales, if its `scaleTargetRef` names one: a SpinApp, or a
/// Deployment (KEDA's default kind, and `apps/v1` its default apiVersion), which has the name of
/// the SpinApp the Spin operator runs as it.
pub(crate) fn spin_app_target(object: &Mapping) -> Option<ObjectKey> {
    if !is_scaled_object(object) {
        return None;
    }
    let target = object.get("spec")?.get("scaleTargetRef")?;
    let written = |key: &str| target.get(key).filter(|v| !v.is_null());
    let kind = written("kind").map_or(Some("Deployment"), Value::as_str)?;
    let api = written("apiVersion").map_or(Some("apps/v1"), Value::as_str)?;
    if !(kind == "SpinApp" || (kind == "Deployment" && api == "apps/v1")) {
        return None;
    }
    Some(ObjectKey {
        namespace: object.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).map(String::from),
        name: target.get("name")?.as_str()?.to_string(),
    })
}

/// What converting one ScaledObject may consult about the rest of the input.
pub(crate) struct Context<'a> {
    pub options: &'a Options,
    pub spin_apps: &'a [ObjectKey],
    /// The activator route `--activator` found for the scale target (from an Ingress).
    pub route: Option<&'a RouteKeys>,
    /// The target SpinApp's memory per instance, for `instanceMemory`.
    pub memory: Option<&'a str>,
    pub auth: &'a auth::Index,
}

pub(crate) fn convert_scaled_object(
    object: &mut Mapping,
    doc: &DocRef,
    ctx: &Context<'_>,
    connections: &mut Connections,
) -> Result<Outcome, ConvertError> {
    let mut outcome = Outcome::default();
    let target_app = spin_app_target(object);
    let metadata = object.get("metadata");
    let namespace = metadata.and_then(|m| m.get("namespace")).and_then(Value::as_str).map(String::from);
    let name = metadata.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("(no name)");
    let label = match &namespace {
        Some(ns) => format!("ScaledObject {ns}/{name}"),
        None => format!("ScaledObject {name}"),
    };
    let spec = object
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| doc.error("spec", "is missing or not a mapping"))?;
    retarget(spec, doc, target_app.as_ref(), ctx.spin_apps, &mut outcome)?;

    let mut kept = Vec::new();
    let (items, sources) = triggers::read_triggers(spec, doc, &mut kept)?;
    if sources.is_empty() {
        match ctx.route {
            Some(route) => route_without_sources(spec, route, ctx.options, doc, &mut outcome)?,
            None if has_spinscale_trigger(spec, ctx.options) => {}
            None => outcome.notes.push(
                "spec.triggers: none is a prometheus or kafka trigger, the ones spinscale takes over; kept as \
                 written"
                    .into(),
            ),
        }
        return Ok(outcome);
    }
    outcome.notes.extend(kept);
    let formula = spec.get("advanced").and_then(|a| a.get("scalingModifiers")).is_some();
    let groups = triggers::group(&sources, formula);
    // The route goes with the request rate: the group of the first prometheus trigger, else the first.
    let route_group =
        groups.iter().position(|g| g.iter().any(|&i| sources[i].source == Source::Prometheus)).unwrap_or(0);
    if formula {
        outcome.notes.push(format!(
            "spec.advanced.scalingModifiers refers to triggers by name, so each trigger becomes its own {PUSH_TYPE} \
             trigger with `metrics: separate` (values in the same units as before)"
        ));
    }
    let query_interval = query_interval(spec, doc)?;
    let mut built = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Kept(old, value) => {
                outcome.moves.push(trigger_path(old), trigger_path(built.len()));
                built.push(value);
            }
            Item::Source(i) => {
                let Some(at) = groups.iter().position(|g| g[0] == i) else { continue };
                let members: Vec<&SourceTrigger> = groups[at].iter().map(|&m| &sources[m]).collect();
                let build = Build {
                    members: &members,
                    formula,
                    new_index: built.len(),
                    route: ctx.route.filter(|_| at == route_group),
                    query_interval: query_interval.as_ref().map(|(_, d)| d.as_str()),
                    namespace: namespace.as_deref(),
                    scaled_object: &label,
                };
                let mut trigger = triggers::build_trigger(
                    &build,
                    ctx.options,
                    ctx.auth,
                    connections,
                    doc,
                    &mut outcome.notes,
                    &mut outcome.moves,
                )?;
                if let Some((seconds, interval)) = &query_interval
                    && trigger.get("metadata").and_then(|m| m.get(spec::QUERY_INTERVAL)).and_then(Value::as_str)
                        == Some(interval.as_str())
                {
                    outcome.notes.push(format!(
                        "spec.pollingInterval: {seconds} → spec.triggers[{}].metadata.{}: {interval}: \
                         spinscale runs the query on its own schedule (every 2s by default), not at KEDA's polls; \
                         this keeps it as rare, and the load on Prometheus as low, as before",
                        build.new_index,
                        spec::QUERY_INTERVAL
                    ));
                }
                if let Some(memory) = ctx.memory {
                    add_instance_memory(&mut trigger, memory, &mut outcome.notes);
                }
                built.push(trigger);
            }
        }
    }
    spec.insert("triggers".into(), Value::Sequence(built));
    outcome.changed = true;

    let min_replicas = spec.get("minReplicaCount").map(Value::as_i64);
    if ctx.route.is_some() {
        at_least_one(spec, &mut outcome.notes);
    }
    // Only an app scaled on its request rate serves HTTP that must be held at zero.
    if ctx.route.is_none()
        && matches!(min_replicas, None | Some(Some(0)))
        && sources.iter().any(SourceTrigger::is_request_rate)
    {
        outcome.notes.push(format!(
            "minReplicaCount 0{}: while the app is at zero, an HTTP request needs something to hold it until a \
             replica is ready (KEDA's HTTP add-on, or a gateway that retries); spinscale pushes the wake-up as soon \
             as it sees the rate rise",
            if min_replicas.is_none() { " (KEDA's default)" } else { "" }
        ));
        if ctx.options.activator {
            outcome.notes.push(
                "--activator: no Ingress in this input routes to this app's Service; if it serves HTTP, convert its \
                 Ingress along with it, or give the trigger `hosts` and `backend` for spinscale's activator"
                    .into(),
            );
        }
    }
    Ok(outcome)
}

/// The ScaledObject already has a trigger to this spinscale (it was converted before).
fn has_spinscale_trigger(spec: &Mapping, options: &Options) -> bool {
    spec.get("triggers").and_then(Value::as_sequence).is_some_and(|triggers| {
        triggers.iter().any(|t| {
            t.get("type").and_then(Value::as_str) == Some(PUSH_TYPE)
                && t.get("metadata").and_then(|m| m.get(spec::SCALER_ADDRESS)).and_then(Value::as_str)
                    == Some(options.scaler_address.as_str())
        })
    })
}

/// `pollingInterval` above KEDA's default: its seconds, and as a duration for `queryInterval` (`60s`).
fn query_interval(spec: &Mapping, doc: &DocRef) -> Result<Option<(i64, String)>, ConvertError> {
    match spec.get("pollingInterval") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|s| s >= 1) => {
            Ok(n.as_i64().filter(|&s| s > KEDA_POLLING_INTERVAL).map(|s| (s, format!("{s}s"))))
        }
        Some(other) => Err(doc
            .error("spec.pollingInterval", format!("is {}, not a whole number of seconds of at least 1", show(other)))),
    }
}

/// The SpinApp's memory per instance as the trigger's `instanceMemory`, unless written there.
fn add_instance_memory(trigger: &mut Value, memory: &str, notes: &mut Vec<String>) {
    let Some(metadata) = trigger.get_mut("metadata").and_then(Value::as_mapping_mut) else { return };
    if metadata.contains_key(spec::INSTANCE_MEMORY) {
        return;
    }
    metadata.insert(spec::INSTANCE_MEMORY.into(), memory.into());
    notes.push(format!(
        "{}: {memory}, the SpinApp's memory per instance: what an idle replica costs spinscale's predictive engine \
         (with `predictive: idle` or `full`, a smaller app may stay warm longer)",
        spec::INSTANCE_MEMORY
    ));
}

/// A ScaledObject with no trigger spinscale takes over: the route goes into its spinscale trigger
/// if it has one, else into a new trigger next to the others.
fn route_without_sources(
    spec: &mut Mapping,
    route: &RouteKeys,
    options: &Options,
    doc: &DocRef,
    outcome: &mut Outcome,
) -> Result<(), ConvertError> {
    at_least_one(spec, &mut outcome.notes);
    let Some(triggers) = spec.get_mut("triggers").and_then(Value::as_sequence_mut) else {
        return Err(doc.error("spec.triggers", "is not a list"));
    };
    let ours = triggers.iter().position(|t| {
        t.get("type").and_then(Value::as_str) == Some(PUSH_TYPE)
            && t.get("metadata").and_then(|m| m.get(spec::SCALER_ADDRESS)).and_then(Value::as_str)
                == Some(options.scaler_address.as_str())
    });
    match ours {
        Some(i) => {
            let field = format!("spec.triggers[{i}].metadata");
            let metadata = triggers[i]
                .get_mut("metadata")
                .and_then(Value::as_mapping_mut)
                .ok_or_else(|| doc.error(&field, "is not a mapping"))?;
            if let Some(hosts) = metadata.get(spec::HOSTS) {
                if hosts.as_str() != Some(route.hosts.join(",").as_str()) {
                    outcome.notes.push(format!(
                        "spec.triggers[{i}] ({PUSH_TYPE}) already routes {} through spinscale's activator; left as \
                         written ({} gives hosts {})",
                        show(hosts),
                        route.via,
                        route.hosts.join(",")
                    ));
                }
                return Ok(());
            }
            triggers::add_route(metadata, route, &field, doc)?;
            triggers::validate(metadata, &HashMap::new(), &field, doc, &mut outcome.notes)?;
            outcome.notes.push(route.note(&format!("spec.triggers[{i}] ({PUSH_TYPE})")));
        }
        None => {
            let trigger = route_trigger(route, options, doc, &mut outcome.notes)?;
            let at = triggers.len();
            triggers.push(trigger);
            outcome.notes.push(format!(
                "spec.triggers[{at}]: a new {PUSH_TYPE} trigger to spinscale at {}, next to the triggers spinscale \
                 does not take over",
                options.scaler_address
            ));
            outcome.notes.push(route.note(&format!("spec.triggers[{at}] ({PUSH_TYPE})")));
        }
    }
    outcome.changed = true;
    Ok(())
}

/// A ScaledObject given an activator route that never lets its app reach zero.
fn at_least_one(spec: &Mapping, notes: &mut Vec<String>) {
    if let Some(min) = spec.get("minReplicaCount").and_then(Value::as_i64).filter(|&m| m >= 1) {
        notes.push(format!(
            "minReplicaCount {min}: left as written, so the app never scales to zero and the activator only counts \
             its requests; set 0 to let it sleep and be woken by the first request"
        ));
    }
}

/// An `external-push` trigger whose only signal is the activator route, checked by spinscale's parser.
pub(crate) fn route_trigger(
    route: &RouteKeys,
    options: &Options,
    doc: &DocRef,
    notes: &mut Vec<String>,
) -> Result<Value, ConvertError> {
    let mut metadata = Mapping::new();
    metadata.insert(spec::SCALER_ADDRESS.into(), options.scaler_address.clone().into());
    triggers::add_route(&mut metadata, route, "spec.triggers[0].metadata", doc)?;
    triggers::validate(&metadata, &HashMap::new(), "spec.triggers[0].metadata", doc, notes)?;
    let mut trigger = Mapping::new();
    trigger.insert("type".into(), PUSH_TYPE.into());
    trigger.insert("metadata".into(), Value::Mapping(metadata));
    Ok(Value::Mapping(trigger))
}

/// A SpinApp has no `/scale` subresource: KEDA must scale the Deployment the Spin operator runs it as.
fn retarget(
    spec: &mut Mapping,
    doc: &DocRef,
    target_app: Option<&ObjectKey>,
    spin_apps: &[ObjectKey],
    outcome: &mut Outcome,
) -> Result<(), ConvertError> {
    let target = spec
        .get_mut("scaleTargetRef")
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| doc.error("spec.scaleTargetRef", "is missing or not a mapping"))?;
    if str_at(target, "kind") != Some("SpinApp") {
        return Ok(());
    }
    let name = str_at(target, "name")
        .ok_or_else(|| doc.error("spec.scaleTargetRef.name", "is missing or not a string"))?
        .to_string();
    let mut rebuilt = Mapping::with_capacity(target.len() + 1);
    rebuilt.insert("apiVersion".into(), "apps/v1".into());
    rebuilt.insert("kind".into(), "Deployment".into());
    for (key, value) in std::mem::take(target) {
        if !matches!(key.as_str(), Some("apiVersion" | "kind")) {
            rebuilt.insert(key, value);
        }
    }
    *target = rebuilt;
    outcome.changed = true;
    outcome.notes.push(format!(
        "spec.scaleTargetRef: SpinApp {name} → apps/v1 Deployment {name}: a SpinApp has no /scale subresource, \
         and the Spin operator runs it as a Deployment of the same name"
    ));
    if !target_app.is_some_and(|app| spin_apps.iter().any(|a| a.matches(app))) {
        outcome
            .notes
            .push(format!("SpinApp {name} is not in this input: give it `enableAutoscaling: true` and no `replicas`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_SO: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: handler-scaler
spec:
  scaleTargetRef:
    apiVersion: core.spinoperator.dev/v1alpha1
    kind: SpinApp
    name: handler
  minReplicaCount: 0
  triggers:
    - type: prometheus
      metadata:
        serverAddress: http://prometheus.monitoring:9090
        metricName: http_requests_total
        query: sum(rate(http_requests_total[1m]))
        threshold: "10"
    - type: cpu
      metadata:
        value: "80"
    - type: kafka
      metadata:
        bootstrapServers: kafka:9092
        consumerGroup: handler
        topic: events
        lagThreshold: "5"
"#;

    fn doc() -> DocRef {
        DocRef { label: "document 2 (ScaledObject handler-scaler, line 3)".into() }
    }

    fn run(
        yaml: &str,
        spin_apps: &[ObjectKey],
        route: Option<&RouteKeys>,
        memory: Option<&str>,
    ) -> Result<(Mapping, Outcome), ConvertError> {
        let mut object: Mapping = serde_yaml_ng::from_str(yaml).expect("test YAML");
        let options = Options { activator: route.is_some(), ..Options::default() };
        let index = auth::Index::default();
        let ctx = Context { options: &options, spin_apps, route, memory, auth: &index };
        let outcome = convert_scaled_object(&mut object, &doc(), &ctx, &mut Connections::default())?;
        Ok((object, outcome))
    }

    fn convert(yaml: &str, spin_apps: &[ObjectKey]) -> Result<(Mapping, Outcome), ConvertError> {
        run(yaml, spin_apps, None, None)
    }

    fn metadata_of(trigger: &Value) -> Vec<(String, String)> {
        trigger["metadata"]
            .as_mapping()
            .expect("metadata")
            .iter()
            .map(|(k, v)| (k.as_str().expect("key").to_string(), v.as_str().expect("string value").to_string()))
            .collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn prometheus_and_kafka_fold_into_one_push_trigger_in_place_of_the_first() {
        let app = ObjectKey { namespace: None, name: "handler".into() };
        let (object, outcome) = convert(SEED_SO, &[app]).expect("converts");
        assert!(outcome.changed);
        let spec = &object["spec"];
        assert_eq!(
            spec["scaleTargetRef"],
            serde_yaml_ng::from_str::<Value>("{apiVersion: apps/v1, kind: Deployment, name: handler}").expect("yaml")
        );
        let triggers = spec["triggers"].as_sequence().expect("triggers");
        assert_eq!(triggers.len(), 2);
        assert_eq!(triggers[0]["type"], Value::from("external-push"));
        assert_eq!(
            metadata_of(&triggers[0]),
            pairs(&[
                ("scalerAddress", "spinscale.spinscale.svc.cluster.local:9500"),
                ("prometheusAddress", "http://prometheus.monitoring:9090"),
                ("query", "sum(rate(http_requests_total[1m]))"),
                ("targetRps", "10"),
                ("bootstrapServers", "kafka:9092"),
                ("consumerGroup", "handler"),
                ("topic", "events"),
                ("lagThreshold", "5"),
            ])
        );
        assert_eq!(triggers[1]["type"], Value::from("cpu"), "other triggers stay where they were");
        let notes = outcome.notes.join("\n");
        for wanted in [
            "SpinApp handler → apps/v1 Deployment handler",
            "spec.triggers[0].metadata.metricName: dropped",
            "spec.triggers[1] (cpu): kept as written",
            "serverAddress → prometheusAddress, threshold → targetRps",
            "spec.triggers[0] (prometheus) and spec.triggers[2] (kafka) → one external-push trigger",
            "minReplicaCount 0",
        ] {
            assert!(notes.contains(wanted), "{wanted:?} not in:\n{notes}");
        }
        assert!(!notes.contains("is not in this input"), "{notes}");
    }

    #[test]
    fn scaling_modifiers_keep_one_named_trigger_per_signal_in_natural_units() {
        let yaml = SEED_SO
            .replace(
                "  minReplicaCount: 0\n",
                "  advanced:\n    scalingModifiers: {formula: rps + lag, target: \"10\"}\n",
            )
            .replace("    - type: prometheus\n", "    - type: prometheus\n      name: rps\n      metricType: Value\n")
            .replace("    - type: kafka\n", "    - type: kafka\n      name: lag\n");
        let (object, outcome) = convert(&yaml, &[]).expect("converts");
        let triggers = object["spec"]["triggers"].as_sequence().expect("triggers");
        let names: Vec<Option<&str>> = triggers.iter().map(|t| t.get("name").and_then(Value::as_str)).collect();
        assert_eq!(names, [Some("rps"), None, Some("lag")]);
        assert_eq!(triggers[0]["metricType"], Value::from("Value"));
        for i in [0, 2] {
            assert_eq!(triggers[i]["metadata"]["metrics"], Value::from("separate"));
        }
        assert!(
            outcome.notes.iter().any(|n| n.contains("SpinApp handler is not in this input")),
            "{:?}",
            outcome.notes
        );

        // The SpinApp's memory goes to every trigger spinscale serves: each is its own target.
        let (object, _) = run(&yaml, &[], None, Some("128Mi")).expect("converts");
        let triggers = object["spec"]["triggers"].as_sequence().expect("triggers");
        for i in [0, 2] {
            assert_eq!(triggers[i]["metadata"]["instanceMemory"], Value::from("128Mi"), "trigger {i}");
        }
    }

    #[test]
    fn further_triggers_of_one_kind_get_their_own_push_trigger() {
        let yaml = SEED_SO.replace("    - type: cpu\n      metadata:\n        value: \"80\"\n", "    - type: prometheus\n      metadata:\n        serverAddress: http://other:9090\n        query: up\n        threshold: \"3\"\n");
        let (object, _) = convert(&yaml, &[]).expect("converts");
        let triggers = object["spec"]["triggers"].as_sequence().expect("triggers");
        assert_eq!(triggers.len(), 2);
        assert!(triggers[0]["metadata"].get("bootstrapServers").is_some(), "the first prometheus folds with kafka");
        assert_eq!(triggers[1]["metadata"]["prometheusAddress"], Value::from("http://other:9090"));
        assert!(triggers[1]["metadata"].get("bootstrapServers").is_none());
    }

    #[test]
    fn unsupported_values_and_shapes_are_errors_naming_the_field() {
        let cases = [
            (
                SEED_SO.replace("threshold: \"10\"", "threshold: 10"),
                "spec.triggers[0].metadata.threshold",
                "not a string",
            ),
            (
                SEED_SO.replace("threshold: \"10\"", "threshold: \"ten\""),
                "spec.triggers[0].metadata.threshold",
                "targetRps",
            ),
            (
                SEED_SO.replace("topic: events", "topic: events\n        tls: enable"),
                "spec.triggers[2].metadata.tls",
                "needs credentials",
            ),
            (
                SEED_SO.replace("bootstrapServers: kafka:9092", "bootstrapServersFromEnv: KAFKA"),
                "spec.triggers[2].metadata.bootstrapServersFromEnv",
                "write the value",
            ),
            (
                SEED_SO.replace(
                    "      metadata:\n        bootstrapServers",
                    "      metadata: [bootstrapServers]\n      unused:\n        bootstrapServers",
                ),
                "spec.triggers[2].metadata",
                "not a mapping",
            ),
            (SEED_SO.replace("    - type: kafka", "    - type: 7"), "spec.triggers[2].type", "not a string"),
        ];
        for (yaml, field, message) in cases {
            let err = convert(&yaml, &[]).expect_err(field);
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains(message), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_kept_with_a_note_and_misspellings_get_spinscale_s_hint() {
        let yaml =
            SEED_SO.replace("topic: events", "topic: events\n        team: payments\n        lagTreshold: \"7\"");
        let (object, outcome) = convert(&yaml, &[]).expect("converts");
        let metadata = &object["spec"]["triggers"][0]["metadata"];
        assert_eq!(metadata["team"], Value::from("payments"));
        let notes = outcome.notes.join("\n");
        assert!(notes.contains("spec.triggers[2].metadata.team: not a key of KEDA's kafka scaler"), "{notes}");
        assert!(notes.contains("did you mean `lagThreshold`"), "{notes}");
    }

    #[test]
    fn a_scaled_object_without_triggers_is_an_error() {
        let head = SEED_SO.split("  triggers:").next().expect("head").to_string();
        for (yaml, message) in [
            (head.clone(), "is missing"),
            (head.clone() + "  triggers: []\n", "is empty"),
            (head + "  triggers: {}\n", "not a list"),
        ] {
            let err = convert(&yaml, &[]).expect_err(message);
            assert_eq!((err.field.as_str(), err.message.contains(message)), ("spec.triggers", true), "{err}");
        }
    }

    #[test]
    fn the_same_value_twice_is_fine_and_different_values_for_one_key_conflict() {
        let yaml = SEED_SO
            .replace("        lagThreshold: \"5\"\n", "        lagThreshold: \"5\"\n        extra: a\n")
            .replace("        threshold: \"10\"\n", "        threshold: \"10\"\n        extra: b\n");
        let err = convert(&yaml, &[]).expect_err("conflict");
        assert_eq!(err.field, "spec.triggers[2].metadata.extra");
        assert!(err.message.contains("spec.triggers[0].metadata.extra"), "{err}");
        let same = yaml.replace("extra: b", "extra: a");
        assert!(convert(&same, &[]).is_ok());
    }

    #[test]
    fn metric_type_value_keeps_its_trigger_apart_with_separate_metrics() {
        let yaml = SEED_SO.replace(
            "    - type: prometheus\n",
            "    - type: prometheus\n      useCachedMetrics: true\n      metricType: Value\n",
        );
        let (object, outcome) = convert(&yaml, &[]).expect("converts");
        let triggers = object["spec"]["triggers"].as_sequence().expect("triggers");
        assert_eq!(triggers.len(), 3, "the Value trigger is not folded with the kafka one");
        assert_eq!(triggers[0]["metricType"], Value::from("Value"));
        assert_eq!(triggers[0]["useCachedMetrics"], Value::Bool(true));
        assert_eq!(triggers[0]["metadata"]["metrics"], Value::from("separate"));
        assert!(triggers[2].get("metricType").is_none() && triggers[2]["metadata"].get("metrics").is_none());
        assert!(
            outcome.notes.iter().any(|n| n.starts_with("spec.triggers[0].metricType: Value kept")),
            "{:?}",
            outcome.notes
        );

        let bad =
            SEED_SO.replace("    - type: prometheus\n", "    - type: prometheus\n      metricType: Utilization\n");
        let err = convert(&bad, &[]).expect_err("Utilization");
        assert_eq!(err.field, "spec.triggers[0].metricType");
        assert!(err.message.starts_with("\"Utilization\" is not a metric type"), "{err}");
    }

    #[test]
    fn an_authentication_ref_that_is_not_in_the_input_is_refused_naming_it() {
        let yaml = SEED_SO.replace(
            "    - type: prometheus\n",
            "    - type: prometheus\n      authenticationRef: {name: prom-auth}\n",
        );
        let err = convert(&yaml, &[]).expect_err("no TriggerAuthentication");
        assert_eq!(err.field, "spec.triggers[0].authenticationRef");
        assert!(err.message.starts_with("TriggerAuthentication prom-auth is not in this input"), "{err}");
        let modes = SEED_SO.replace("threshold: \"10\"", "threshold: \"10\"\n        authModes: bearer");
        let err = convert(&modes, &[]).expect_err("authModes without credentials");
        assert_eq!(err.field, "spec.triggers[0].metadata");
        assert!(err.message.contains("has no authenticationRef"), "{err}");
    }

    #[test]
    fn polling_interval_above_keda_s_default_becomes_the_query_interval() {
        let slow = SEED_SO.replace("  minReplicaCount: 0\n", "  minReplicaCount: 0\n  pollingInterval: 120\n");
        let (object, outcome) = convert(&slow, &[]).expect("converts");
        assert_eq!(object["spec"]["triggers"][0]["metadata"]["queryInterval"], Value::from("120s"));
        assert!(outcome.notes.iter().any(|n| n.starts_with("spec.pollingInterval: 120 → spec.triggers[0]")));
        for interval in ["30", "10"] {
            let yaml = SEED_SO.replace("  minReplicaCount: 0\n", &format!("  pollingInterval: {interval}\n"));
            let (object, _) = convert(&yaml, &[]).expect("converts");
            assert!(object["spec"]["triggers"][0]["metadata"].get("queryInterval").is_none(), "{interval}");
        }
        let bad = SEED_SO.replace("  minReplicaCount: 0\n", "  pollingInterval: \"1m\"\n");
        assert_eq!(convert(&bad, &[]).expect_err("a string").field, "spec.pollingInterval");
    }

    #[test]
    fn the_http_hold_note_is_for_request_rates_only() {
        let queue = SEED_SO.replace("sum(rate(http_requests_total[1m]))", "sum(rabbitmq_queue_messages_ready)");
        let (_, outcome) = convert(&queue, &[]).expect("converts");
        assert!(!outcome.notes.iter().any(|n| n.contains("HTTP request")), "{:?}", outcome.notes);
        let (_, outcome) = convert(SEED_SO, &[]).expect("converts");
        assert!(outcome.notes.iter().any(|n| n.starts_with("minReplicaCount 0: while the app is at zero")));
    }

    fn route() -> RouteKeys {
        RouteKeys {
            hosts: vec!["hooks.example.com".into()],
            path_prefixes: vec!["/github".into()],
            backend: "http://handler.default.svc:80".into(),
            via: "Ingress handler".into(),
        }
    }

    fn convert_with_route(yaml: &str) -> Result<(Mapping, Outcome), ConvertError> {
        run(yaml, &[], Some(&route()), None)
    }

    #[test]
    fn a_route_joins_the_trigger_that_carries_the_request_rate() {
        let (object, outcome) = convert_with_route(SEED_SO).expect("converts");
        let triggers = object["spec"]["triggers"].as_sequence().expect("triggers");
        let metadata = metadata_of(&triggers[0]);
        for (key, value) in [
            ("hosts", "hooks.example.com"),
            ("pathPrefixes", "/github"),
            ("backend", "http://handler.default.svc:80"),
            ("topic", "events"),
        ] {
            assert!(metadata.contains(&(key.to_string(), value.to_string())), "{key} in {metadata:?}");
        }
        let notes = outcome.notes.join("\n");
        assert!(!notes.contains("KEDA's HTTP add-on"), "the activator holds requests now: {notes}");
        assert!(notes.contains("added from Ingress handler"), "{notes}");

        // With a formula, each trigger stands alone: the route goes with the rate, not the lag.
        let yaml = SEED_SO
            .replace(
                "  minReplicaCount: 0\n",
                "  advanced:\n    scalingModifiers: {formula: rps + lag, target: \"1\"}\n",
            )
            .replace("    - type: prometheus\n", "    - type: prometheus\n      name: rps\n")
            .replace("    - type: kafka\n", "    - type: kafka\n      name: lag\n");
        let (object, _) = convert_with_route(&yaml).expect("converts");
        let triggers = object["spec"]["triggers"].as_sequence().expect("triggers");
        assert_eq!(triggers[0]["metadata"]["hosts"], Value::from("hooks.example.com"));
        assert!(triggers[2]["metadata"].get("hosts").is_none(), "one route per ScaledObject");
    }

    #[test]
    fn a_route_that_contradicts_a_written_key_is_an_error_naming_it() {
        let yaml = SEED_SO.replace("threshold: \"10\"", "threshold: \"10\"\n        hosts: other.example.com");
        let err = convert_with_route(&yaml).expect_err("two hosts values");
        assert_eq!(err.field, "spec.triggers[0].metadata.hosts");
        assert!(err.message.contains("from Ingress handler"), "{err}");
    }

    #[test]
    fn a_spinscale_trigger_gains_the_route_once_and_other_triggers_get_one_next_to_them() {
        let ours = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: h}\nspec:\n  \
                    scaleTargetRef: {name: handler}\n  triggers:\n    - type: external-push\n      metadata:\n        \
                    scalerAddress: spinscale.spinscale.svc.cluster.local:9500\n        query: up\n        \
                    prometheusAddress: http://p:9090\n";
        let (object, outcome) = convert_with_route(ours).expect("converts");
        assert!(outcome.changed);
        assert_eq!(object["spec"]["triggers"][0]["metadata"]["backend"], Value::from("http://handler.default.svc:80"));
        let (again, outcome) = convert_with_route(&serde_yaml_ng::to_string(&object).expect("yaml")).expect("converts");
        assert!(!outcome.changed && outcome.notes.is_empty(), "{:?}", outcome.notes);
        assert_eq!(again, object);

        let cpu = ours.replace("external-push", "cpu").replace("scalerAddress: spinscale.spinscale.svc.cluster.local:9500\n        query: up\n        prometheusAddress: http://p:9090", "value: \"60\"");
        let (object, _) = convert_with_route(&cpu).expect("converts");
        let triggers = object["spec"]["triggers"].as_sequence().expect("triggers");
        assert_eq!((triggers.len(), &triggers[1]["type"]), (2, &Value::from("external-push")));
        assert_eq!(triggers[1]["metadata"]["pathPrefixes"], Value::from("/github"));
    }

    #[test]
    fn a_scaled_object_on_a_spin_apps_deployment_scales_that_spin_app() {
        let doc = |kind: &str| -> Mapping {
            serde_yaml_ng::from_str(&format!(
                "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: so, namespace: shop}}\n\
                 spec:\n  scaleTargetRef: {kind}name: checkout}}\n"
            ))
            .unwrap()
        };
        let key = spin_app_target(&doc("{apiVersion: apps/v1, kind: Deployment, ")).expect("a SpinApp's Deployment");
        assert_eq!((key.namespace.as_deref(), key.name.as_str()), (Some("shop"), "checkout"));
        // KEDA's defaults: kind Deployment, apiVersion apps/v1 (for issue 19).
        for written in ["{kind: Deployment, ", "{apiVersion: apps/v1, ", "{"] {
            assert!(spin_app_target(&doc(written)).is_some(), "{written}");
        }
        assert!(spin_app_target(&doc("{apiVersion: apps/v1, kind: StatefulSet, ")).is_none());
        assert!(spin_app_target(&doc("{apiVersion: argoproj.io/v1alpha1, kind: Rollout, ")).is_none());
    }
}
