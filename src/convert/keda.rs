//! KEDA ScaledObjects: `prometheus` and `kafka` (or `apache-kafka`) triggers become one
//! `external-push` trigger to spinscale with the same values under spinscale's keys, checked by
//! spinscale's own parser; a `scaleTargetRef` to a SpinApp becomes the SpinApp's Deployment.

use std::collections::{BTreeMap, HashMap};

use serde_yaml_ng::{Mapping, Value};

use super::activator::RouteKeys;
use super::{ConvertError, DocRef, ObjectKey, Options, Outcome, show, str_at};
use spinscale_core::spec::{self, TargetSpec};

pub(crate) const PUSH_TYPE: &str = "external-push";

pub(crate) fn is_scaled_object(object: &Mapping) -> bool {
    str_at(object, "kind") == Some("ScaledObject")
        && str_at(object, "apiVersion").is_some_and(|v| v.starts_with("keda.sh/"))
}

/// The SpinApp a ScaledObject scales, if its `scaleTargetRef` names one.
pub(crate) fn spin_app_target(object: &Mapping) -> Option<ObjectKey> {
    if !is_scaled_object(object) {
        return None;
    }
    let target = object.get("spec")?.get("scaleTargetRef")?;
    // A SpinApp's Deployment has the SpinApp's name: a ScaledObject on it scales the SpinApp.
    matches!(target.get("kind")?.as_str()?, "SpinApp" | "Deployment").then_some(())?;
    Some(ObjectKey {
        namespace: object.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str).map(String::from),
        name: target.get("name")?.as_str()?.to_string(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Prometheus,
    Kafka,
}

impl Source {
    fn of(trigger_type: &str) -> Option<Self> {
        match trigger_type {
            "prometheus" => Some(Source::Prometheus),
            "kafka" | "apache-kafka" => Some(Source::Kafka),
            _ => None,
        }
    }
}

/// KEDA's prometheus keys and spinscale's names for them.
const PROMETHEUS_KEYS: [(&str, &str); 9] = [
    ("serverAddress", spec::PROMETHEUS_ADDRESS),
    ("threshold", spec::TARGET_RPS),
    ("activationThreshold", spec::ACTIVATION_RPS),
    (spec::QUERY, spec::QUERY),
    (spec::IGNORE_NULL_VALUES, spec::IGNORE_NULL_VALUES),
    (spec::TIMEOUT, spec::TIMEOUT),
    (spec::CUSTOM_HEADERS, spec::CUSTOM_HEADERS),
    (spec::QUERY_PARAMETERS, spec::QUERY_PARAMETERS),
    (spec::NAMESPACE, spec::NAMESPACE),
];

/// KEDA's kafka keys spinscale reads under the same names (`tls` and `sasl` only as disable/none).
const KAFKA_KEYS: [&str; 14] = [
    spec::BOOTSTRAP_SERVERS,
    spec::CONSUMER_GROUP,
    spec::TOPIC,
    spec::PARTITION_LIMITATION,
    spec::LAG_THRESHOLD,
    spec::ACTIVATION_LAG_THRESHOLD,
    spec::OFFSET_RESET_POLICY,
    spec::ALLOW_IDLE_CONSUMERS,
    spec::EXCLUDE_PERSISTENT_LAG,
    spec::LIMIT_TO_PARTITIONS_WITH_LAG,
    spec::SCALE_TO_ZERO_ON_INVALID_OFFSET,
    spec::ENSURE_EVEN_DISTRIBUTION,
    spec::KAFKA_TLS,
    spec::KAFKA_SASL,
];

const NO_PROMETHEUS_AUTH: &str =
    "spinscale does not authenticate to Prometheus in this version; Prometheus must answer it without credentials";
const CONNECTION_FLAG: &str = "in an external-push trigger KEDA reads it for its own connection to spinscale";

/// KEDA keys spinscale does not support, and why they are dropped.
const PROMETHEUS_DROPPED: [(&str, &str); 7] = [
    ("metricName", "KEDA removed it from the prometheus scaler; spinscale names its own metric (spinscale-replicas)"),
    ("unsafeSsl", CONNECTION_FLAG),
    ("cortexOrgID", "KEDA removed it; send the header with customHeaders: X-Scope-OrgID=<id>"),
    ("authModes", NO_PROMETHEUS_AUTH),
    ("authMode", NO_PROMETHEUS_AUTH),
    ("awsRegion", NO_PROMETHEUS_AUTH),
    ("identityOwner", NO_PROMETHEUS_AUTH),
];
const KAFKA_DROPPED: [(&str, &str); 5] = [
    ("version", "spinscale's Kafka client negotiates the protocol version with the brokers"),
    ("fullMetadata", "spinscale reads only the metadata of the topics it watches"),
    ("unsafeSsl", CONNECTION_FLAG),
    ("saslTokenProvider", "spinscale supports no Kafka SASL in this version"),
    ("awsRegion", "spinscale supports no Kafka SASL (MSK IAM) in this version"),
];

/// What becomes of one metadata key of a KEDA trigger.
enum Fate {
    Keep(&'static str),
    Drop(&'static str),
    Unknown,
}

fn fate(source: Source, key: &str) -> Fate {
    let (kept, dropped): (Option<&'static str>, &[(&str, &'static str)]) = match source {
        Source::Prometheus => {
            (PROMETHEUS_KEYS.iter().find(|(keda, _)| *keda == key).map(|(_, ours)| *ours), &PROMETHEUS_DROPPED)
        }
        Source::Kafka => (KAFKA_KEYS.iter().find(|k| **k == key).copied(), &KAFKA_DROPPED),
    };
    match (kept, dropped.iter().find(|(k, _)| *k == key)) {
        (Some(ours), _) => Fate::Keep(ours),
        (None, Some((_, why))) => Fate::Drop(why),
        (None, None) => Fate::Unknown,
    }
}

/// A `prometheus` or `kafka` trigger as written.
struct SourceTrigger {
    index: usize,
    source: Source,
    type_name: String,
    metadata: Vec<(String, String)>,
    name: Option<String>,
    metric_type: Option<String>,
    use_cached_metrics: Option<bool>,
    has_authentication_ref: bool,
    other_fields: Vec<String>,
}

impl SourceTrigger {
    fn field(&self, rest: &str) -> String {
        format!("spec.triggers[{}].{rest}", self.index)
    }

    fn describe(&self) -> String {
        format!("spec.triggers[{}] ({})", self.index, self.type_name)
    }
}

/// A trigger as written, in order: one to convert, or one kept as it is.
enum Item {
    Source(usize),
    Kept(Value),
}

/// `route`: the activator route `--activator` found for the scale target (from an Ingress);
/// `memory`: the target SpinApp's memory per instance, for `instanceMemory`.
pub(crate) fn convert_scaled_object(
    object: &mut Mapping,
    doc: &DocRef,
    options: &Options,
    spin_apps: &[ObjectKey],
    route: Option<&RouteKeys>,
    memory: Option<&str>,
) -> Result<Outcome, ConvertError> {
    let mut outcome = Outcome::default();
    let target_app = spin_app_target(object);
    let spec = object
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .ok_or_else(|| doc.error("spec", "is missing or not a mapping"))?;
    retarget(spec, doc, target_app.as_ref(), spin_apps, &mut outcome)?;

    let (items, sources) = read_triggers(spec, doc, &mut outcome.notes)?;
    if sources.is_empty() {
        if let Some(route) = route {
            route_without_sources(spec, route, options, doc, &mut outcome)?;
        }
        return Ok(outcome);
    }
    let separate = spec.get("advanced").and_then(|a| a.get("scalingModifiers")).is_some();
    let groups = group(&sources, separate);
    // The route goes with the request rate: the group of the first prometheus trigger, else the first.
    let route_group =
        groups.iter().position(|g| g.iter().any(|&i| sources[i].source == Source::Prometheus)).unwrap_or(0);
    if separate {
        outcome.notes.push(format!(
            "spec.advanced.scalingModifiers refers to triggers by name, so each trigger becomes its own {PUSH_TYPE} \
             trigger with `metrics: separate` (values in the same units as before)"
        ));
    }
    let mut triggers = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Item::Kept(value) => triggers.push(value),
            Item::Source(i) => {
                if let Some(at) = groups.iter().position(|g| g[0] == i) {
                    let members: Vec<&SourceTrigger> = groups[at].iter().map(|&m| &sources[m]).collect();
                    let route = route.filter(|_| at == route_group);
                    let mut trigger = build_trigger(&members, separate, options, route, doc, &mut outcome.notes)?;
                    if let Some(memory) = memory {
                        add_instance_memory(&mut trigger, memory, &mut outcome.notes);
                    }
                    triggers.push(trigger);
                }
            }
        }
    }
    spec.insert("triggers".into(), Value::Sequence(triggers));
    outcome.changed = true;

    let min_replicas = spec.get("minReplicaCount").map(Value::as_i64);
    if route.is_some() {
        at_least_one(spec, &mut outcome.notes);
    }
    if route.is_none()
        && matches!(min_replicas, None | Some(Some(0)))
        && sources.iter().any(|s| s.source == Source::Prometheus)
    {
        outcome.notes.push(format!(
            "minReplicaCount 0{}: while the app is at zero, an HTTP request needs something to hold it until a \
             replica is ready (KEDA's HTTP add-on, or a gateway that retries); spinscale pushes the wake-up as soon \
             as it sees the rate rise",
            if min_replicas.is_none() { " (KEDA's default)" } else { "" }
        ));
        if options.activator {
            outcome.notes.push(
                "--activator: no Ingress in this input routes to this app's Service; if it serves HTTP, convert its \
                 Ingress along with it, or give the trigger `hosts` and `backend` for spinscale's activator"
                    .into(),
            );
        }
    }
    Ok(outcome)
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
                outcome.notes.push(format!(
                    "spec.triggers[{i}] ({PUSH_TYPE}) already routes {} through spinscale's activator; left as written \
                     ({} gives hosts {})",
                    show(hosts),
                    route.via,
                    route.hosts.join(",")
                ));
                return Ok(());
            }
            add_route(metadata, route, &field, doc)?;
            validate(metadata, &HashMap::new(), &field, doc, &mut outcome.notes)?;
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
    add_route(&mut metadata, route, "spec.triggers[0].metadata", doc)?;
    validate(&metadata, &HashMap::new(), "spec.triggers[0].metadata", doc, notes)?;
    let mut trigger = Mapping::new();
    trigger.insert("type".into(), PUSH_TYPE.into());
    trigger.insert("metadata".into(), Value::Mapping(metadata));
    Ok(Value::Mapping(trigger))
}

/// Writes the route's keys into a trigger's metadata; a different value already there is an error.
fn add_route(metadata: &mut Mapping, route: &RouteKeys, field: &str, doc: &DocRef) -> Result<(), ConvertError> {
    for (key, value) in route.pairs() {
        match metadata.get(key) {
            Some(existing) if existing.as_str() != Some(value.as_str()) => {
                return Err(doc.error(
                    format!("{field}.{key}"),
                    format!("{} conflicts with {value:?} from {}", show(existing), route.via),
                ));
            }
            _ => {
                metadata.insert(key.into(), value.into());
            }
        }
    }
    Ok(())
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

/// Every trigger in order, with the `prometheus`/`kafka` ones read and checked.
fn read_triggers(
    spec: &Mapping,
    doc: &DocRef,
    notes: &mut Vec<String>,
) -> Result<(Vec<Item>, Vec<SourceTrigger>), ConvertError> {
    let triggers = match spec.get("triggers") {
        None | Some(Value::Null) => return Err(doc.error("spec.triggers", "is missing: a ScaledObject needs triggers")),
        Some(Value::Sequence(t)) if t.is_empty() => {
            return Err(doc.error("spec.triggers", "is empty: a ScaledObject needs triggers"));
        }
        Some(Value::Sequence(t)) => t,
        Some(other) => return Err(doc.error("spec.triggers", format!("is {}, not a list", show(other)))),
    };
    let mut items = Vec::with_capacity(triggers.len());
    let mut sources = Vec::new();
    for (index, trigger) in triggers.iter().enumerate() {
        let at = |rest: &str| format!("spec.triggers[{index}]{rest}");
        let map =
            trigger.as_mapping().ok_or_else(|| doc.error(at(""), format!("is {}, not a mapping", show(trigger))))?;
        let type_name = match map.get("type") {
            Some(Value::String(t)) => t.clone(),
            Some(other) => return Err(doc.error(at(".type"), format!("is {}, not a string", show(other)))),
            None => return Err(doc.error(at(".type"), "is missing")),
        };
        match Source::of(&type_name) {
            Some(source) => {
                sources.push(read_source(map, index, source, type_name, doc)?);
                items.push(Item::Source(sources.len() - 1));
            }
            None => {
                notes.push(format!(
                    "spec.triggers[{index}] ({type_name}): kept as written (spinscale takes over prometheus and \
                     kafka triggers only)"
                ));
                items.push(Item::Kept(trigger.clone()));
            }
        }
    }
    Ok((items, sources))
}

fn read_source(
    map: &Mapping,
    index: usize,
    source: Source,
    type_name: String,
    doc: &DocRef,
) -> Result<SourceTrigger, ConvertError> {
    let at = |rest: &str| format!("spec.triggers[{index}].{rest}");
    let text = |key: &str| -> Result<Option<String>, ConvertError> {
        match map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(doc.error(at(key), format!("is {}, not a string", show(other)))),
        }
    };
    let metadata = match map.get("metadata") {
        Some(Value::Mapping(m)) => m,
        None | Some(Value::Null) => {
            return Err(doc.error(at("metadata"), format!("is missing: a {type_name} trigger needs its metadata")));
        }
        Some(other) => return Err(doc.error(at("metadata"), format!("is {}, not a mapping", show(other)))),
    };
    let mut pairs = Vec::with_capacity(metadata.len());
    for (key, value) in metadata {
        let key = key
            .as_str()
            .ok_or_else(|| doc.error(at("metadata"), format!("has a key that is not a string: {}", show(key))))?;
        match value {
            Value::String(v) => pairs.push((key.to_string(), v.clone())),
            other => {
                return Err(doc.error(
                    at(&format!("metadata.{key}")),
                    format!(
                        "is {}, not a string (KEDA's trigger metadata holds strings: quote the value)",
                        show(other)
                    ),
                ));
            }
        }
    }
    let use_cached_metrics = match map.get("useCachedMetrics") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(doc.error(at("useCachedMetrics"), format!("is {}, not true or false", show(other)))),
    };
    const FIELDS: [&str; 6] = ["type", "name", "metadata", "metricType", "useCachedMetrics", "authenticationRef"];
    Ok(SourceTrigger {
        index,
        source,
        type_name,
        metadata: pairs,
        name: text("name")?,
        metric_type: text("metricType")?,
        use_cached_metrics,
        has_authentication_ref: map.contains_key("authenticationRef"),
        other_fields: map
            .keys()
            .map(|k| k.as_str().map_or_else(|| show(k), String::from))
            .filter(|k| !FIELDS.contains(&k.as_str()))
            .collect(),
    })
}

/// Indices into `sources`, one group per spinscale trigger: the first prometheus and the first kafka
/// trigger together (one metric, the max of both), any further ones on their own. With
/// `scalingModifiers` every trigger stays on its own, since the formula names them.
fn group(sources: &[SourceTrigger], separate: bool) -> Vec<Vec<usize>> {
    if separate {
        return (0..sources.len()).map(|i| vec![i]).collect();
    }
    let first = |kind: Source| sources.iter().position(|s| s.source == kind);
    let folded: Vec<usize> = [first(Source::Prometheus), first(Source::Kafka)].into_iter().flatten().collect();
    let mut groups = vec![folded.clone()];
    groups.extend((0..sources.len()).filter(|i| !folded.contains(i)).map(|i| vec![i]));
    for g in &mut groups {
        g.sort_unstable();
    }
    groups
}

fn build_trigger(
    members: &[&SourceTrigger],
    separate: bool,
    options: &Options,
    route: Option<&RouteKeys>,
    doc: &DocRef,
    notes: &mut Vec<String>,
) -> Result<Value, ConvertError> {
    let described: Vec<String> = members.iter().map(|m| m.describe()).collect();
    notes.push(if members.len() > 1 {
        format!(
            "{} → one {PUSH_TYPE} trigger to spinscale at {}: its one metric (spinscale-replicas) is \
             max(rate / targetRps, lag / lagThreshold), and activation is pushed as soon as either signal rises",
            described.join(" and "),
            options.scaler_address
        )
    } else {
        format!("{} → an {PUSH_TYPE} trigger to spinscale at {}", described[0], options.scaler_address)
    });

    let mut metadata = Mapping::new();
    metadata.insert(spec::SCALER_ADDRESS.into(), options.scaler_address.clone().into());
    // spinscale key → the field it came from, to name the field in errors.
    let mut origin: HashMap<String, String> = HashMap::new();
    for member in members {
        copy_metadata(member, &mut metadata, &mut origin, doc, notes)?;
    }
    if let Some(route) = route {
        add_route(&mut metadata, route, &members[0].field("metadata"), doc)?;
        notes.push(route.note(&described.join(" and ")));
        if members.iter().any(|m| m.source == Source::Prometheus) {
            notes.push(
                "the query stays next to the activator's count and the higher rate counts; once every request \
                 passes the activator, the query (and the Prometheus it needs) can go"
                    .into(),
            );
        }
    }
    if separate {
        metadata.insert(spec::METRICS.into(), "separate".into());
    }
    validate(&metadata, &origin, &members[0].field("metadata"), doc, notes)?;

    let mut trigger = Mapping::new();
    trigger.insert("type".into(), PUSH_TYPE.into());
    let mut names = members.iter().filter_map(|m| m.name.as_ref().map(|n| (m, n)));
    if let Some((_, name)) = names.next() {
        trigger.insert("name".into(), name.clone().into());
    }
    for (member, name) in names {
        notes.push(format!("{}: {name} dropped (one trigger keeps one name)", member.field("name")));
    }
    for member in members {
        match (&member.metric_type, separate) {
            (Some(t), true) => {
                trigger.insert("metricType".into(), t.clone().into());
            }
            (Some(t), false) if t != "AverageValue" => notes.push(format!(
                "{}: {t} dropped: spinscale-replicas is a replica count, which the HPA reads as AverageValue \
                 (the default)",
                member.field("metricType")
            )),
            _ => {}
        }
    }
    let cached: Vec<bool> = members.iter().filter_map(|m| m.use_cached_metrics).collect();
    if cached.contains(&true) {
        trigger.insert("useCachedMetrics".into(), true.into());
        if cached.contains(&false) {
            notes.push("useCachedMetrics: true, as one of the folded triggers asked".into());
        }
    }
    for member in members {
        if member.has_authentication_ref {
            let instead = match member.source {
                Source::Prometheus => {
                    "spinscale reads no Prometheus credentials in this version; Prometheus must \
                                       answer without them"
                }
                Source::Kafka => {
                    "describe the Kafka credentials as a connection in spinscale's config \
                                  (kafkaConnections, secrets in mounted files) and add `kafkaConnection: NAME` to \
                                  the trigger"
                }
            };
            notes.push(format!(
                "{}: dropped: KEDA does not pass TriggerAuthentication parameters to external scalers \
                 (keda#2571); {instead}",
                member.field("authenticationRef"),
            ));
        }
        for field in &member.other_fields {
            notes.push(format!("{}: not a field of a KEDA trigger; dropped", member.field(field)));
        }
    }
    trigger.insert("metadata".into(), Value::Mapping(metadata));
    Ok(Value::Mapping(trigger))
}

fn copy_metadata(
    member: &SourceTrigger,
    metadata: &mut Mapping,
    origin: &mut HashMap<String, String>,
    doc: &DocRef,
    notes: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let mut renamed = Vec::new();
    for (key, value) in &member.metadata {
        let field = member.field(&format!("metadata.{key}"));
        if let Some(base) = key.strip_suffix("FromEnv") {
            return Err(doc.error(
                field,
                format!(
                    "is not supported: KEDA resolves it from the scale target's containers, spinscale reads only \
                     `{base}`; write the value itself"
                ),
            ));
        }
        let ours = match fate(member.source, key) {
            Fate::Keep(ours) => {
                if ours != key {
                    renamed.push(format!("{key} → {ours}"));
                }
                ours.to_string()
            }
            Fate::Drop(why) => {
                notes.push(format!("{field}: dropped: {why}"));
                continue;
            }
            Fate::Unknown => {
                notes.push(format!(
                    "{field}: not a key of KEDA's {} scaler nor of spinscale; kept, spinscale ignores it",
                    member.type_name
                ));
                key.clone()
            }
        };
        if let Some(existing) = metadata.get(ours.as_str()) {
            if existing.as_str() == Some(value.as_str()) {
                continue;
            }
            let first = origin.get(&ours).map_or("--scaler-address", String::as_str);
            return Err(
                doc.error(field, format!("{value:?} conflicts with {first} {} (both become `{ours}`)", show(existing)))
            );
        }
        metadata.insert(ours.clone().into(), value.clone().into());
        origin.insert(ours, member.field(&format!("metadata.{key}")));
    }
    if !renamed.is_empty() {
        notes.push(format!("{}: {} (same values, spinscale's names)", member.describe(), renamed.join(", ")));
    }
    Ok(())
}

/// spinscale's own parser must accept the trigger, or the conversion has not produced a working one.
fn validate(
    metadata: &Mapping,
    origin: &HashMap<String, String>,
    fallback_field: &str,
    doc: &DocRef,
    notes: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let map: HashMap<String, String> =
        metadata.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string()))).collect();
    match TargetSpec::parse(&map, &BTreeMap::new()) {
        Ok(spec) => {
            notes.extend(spec.warnings.iter().map(|w| format!("spinscale warns: {w}")));
            Ok(())
        }
        Err(invalid) => {
            let field = invalid.problems.iter().find_map(|p| origin.get(&p.key)).map_or(fallback_field, String::as_str);
            Err(doc.error(field, format!("spinscale would refuse the converted trigger: {invalid}")))
        }
    }
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

    fn convert(yaml: &str, spin_apps: &[ObjectKey]) -> Result<(Mapping, Outcome), ConvertError> {
        let mut object: Mapping = serde_yaml_ng::from_str(yaml).expect("test YAML");
        let outcome = convert_scaled_object(&mut object, &doc(), &Options::default(), spin_apps, None, None)?;
        Ok((object, outcome))
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
        let mut object: Mapping = serde_yaml_ng::from_str(&yaml).expect("test YAML");
        convert_scaled_object(&mut object, &doc(), &Options::default(), &[], None, Some("128Mi")).expect("converts");
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
    fn trigger_fields_spinscale_cannot_honour_are_dropped_with_a_note() {
        let yaml = SEED_SO.replace(
            "    - type: prometheus\n",
            "    - type: prometheus\n      authenticationRef: {name: prom-auth}\n      useCachedMetrics: true\n      metricType: Value\n",
        );
        let (object, outcome) = convert(&yaml, &[]).expect("converts");
        let trigger = &object["spec"]["triggers"][0];
        assert!(trigger.get("authenticationRef").is_none() && trigger.get("metricType").is_none());
        assert_eq!(trigger["useCachedMetrics"], Value::Bool(true));
        let notes = outcome.notes.join("\n");
        assert!(notes.contains("authenticationRef: dropped"), "{notes}");
        assert!(notes.contains("metricType: Value dropped"), "{notes}");
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
        let mut object: Mapping = serde_yaml_ng::from_str(yaml).expect("test YAML");
        let options = Options { activator: true, ..Options::default() };
        let outcome = convert_scaled_object(&mut object, &doc(), &options, &[], Some(&route()), None)?;
        Ok((object, outcome))
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
        assert!(!outcome.changed && outcome.notes.iter().any(|n| n.contains("already routes")), "{:?}", outcome.notes);
        assert_eq!(again, object);

        let cpu = ours.replace("external-push", "cpu").replace("scalerAddress: spinscale.spinscale.svc.cluster.local:9500\n        query: up\n        prometheusAddress: http://p:9090", "value: \"60\"");
        let (object, _) = convert_with_route(&cpu).expect("converts");
        let triggers = object["spec"]["triggers"].as_sequence().expect("triggers");
        assert_eq!((triggers.len(), &triggers[1]["type"]), (2, &Value::from("external-push")));
        assert_eq!(triggers[1]["metadata"]["pathPrefixes"], Value::from("/github"));
    }

    #[test]
    fn keda_keys_map_to_spinscale_keys_that_spinscale_reads() {
        for (keda, ours) in PROMETHEUS_KEYS {
            assert!(spec::KEYS.contains(&ours), "{keda} → {ours}");
            assert!(spec::ALIASES.iter().any(|(k, a)| *k == ours && *a == keda) || keda == ours, "{keda} → {ours}");
        }
        for key in KAFKA_KEYS {
            assert!(spec::KEYS.contains(&key), "{key}");
        }
    }

    #[test]
    fn a_scaled_object_on_a_spin_apps_deployment_scales_that_spin_app() {
        let doc = |kind: &str| -> Mapping {
            serde_yaml_ng::from_str(&format!(
                "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {{name: so, namespace: shop}}\n\
                 spec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: {kind}, name: checkout}}\n"
            ))
            .unwrap()
        };
        let key = spin_app_target(&doc("Deployment")).expect("a SpinApp's Deployment");
        assert_eq!((key.namespace.as_deref(), key.name.as_str()), (Some("shop"), "checkout"));
        assert!(spin_app_target(&doc("StatefulSet")).is_none());
    }
}
