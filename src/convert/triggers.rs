//! A ScaledObject's `prometheus` and `kafka` (or `apache-kafka`) triggers: read and checked
//! ([`read_triggers`]), grouped ([`group`]) and each group built into one `external-push` trigger
//! with spinscale's keys ([`build_trigger`]), credentials included (`auth`), then checked by
//! spinscale's own parser.

use std::collections::{BTreeMap, HashMap};

use serde_yaml_ng::{Mapping, Value};

use super::activator::RouteKeys;
use super::auth::{self, AuthRef, Connections, TriggerView};
use super::comments::{Moves, child, trigger_path};
use super::{ConvertError, DocRef, Options, show};
use spinscale_core::spec::{self, TargetSpec};

pub(crate) const PUSH_TYPE: &str = "external-push";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
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

    pub fn name(self) -> &'static str {
        match self {
            Source::Prometheus => "prometheus",
            Source::Kafka => "kafka",
        }
    }
}

/// KEDA's prometheus keys and spinscale's names for them.
pub(crate) const PROMETHEUS_KEYS: [(&str, &str); 9] = [
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

/// KEDA's kafka keys spinscale reads under the same names (`tls` and `sasl` only as disable/none
/// without a connection).
pub(crate) const KAFKA_KEYS: [&str; 14] = [
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

const UNSAFE_PROMETHEUS: &str = "in an external-push trigger KEDA reads it for its own connection to spinscale; \
     spinscale checks Prometheus's certificate (a prometheusConnection's tls.caFile trusts a private CA)";
const UNSAFE_KAFKA: &str = "in an external-push trigger KEDA reads it for its own connection to spinscale; \
     spinscale checks the brokers' certificates (a kafkaConnection's caFile trusts a private CA)";
const ONLY_WITH_IDENTITY: &str =
    "KEDA uses it only with a TriggerAuthentication's podIdentity, which this trigger has not";

/// KEDA keys spinscale does not support, and why they are dropped.
const PROMETHEUS_DROPPED: [(&str, &str); 5] = [
    ("metricName", "KEDA removed it from the prometheus scaler; spinscale names its own metric (spinscale-replicas)"),
    ("unsafeSsl", UNSAFE_PROMETHEUS),
    ("cortexOrgID", "KEDA removed it; send the header with customHeaders: X-Scope-OrgID=<id>"),
    ("awsRegion", ONLY_WITH_IDENTITY),
    ("identityOwner", ONLY_WITH_IDENTITY),
];
const KAFKA_DROPPED: [(&str, &str); 4] = [
    ("version", "spinscale's Kafka client negotiates the protocol version with the brokers"),
    ("fullMetadata", "spinscale reads only the metadata of the topics it watches"),
    ("unsafeSsl", UNSAFE_KAFKA),
    ("awsRegion", "KEDA uses it only for MSK IAM, with a TriggerAuthentication this trigger has not"),
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
pub(crate) struct SourceTrigger {
    pub index: usize,
    pub source: Source,
    type_name: String,
    metadata: Vec<(String, String)>,
    name: Option<String>,
    /// `Value`, or `None` for KEDA's default `AverageValue`.
    value_metric: bool,
    use_cached_metrics: Option<bool>,
    auth_ref: Option<AuthRef>,
    other_fields: Vec<String>,
}

impl SourceTrigger {
    fn field(&self, rest: &str) -> String {
        format!("spec.triggers[{}].{rest}", self.index)
    }

    fn describe(&self) -> String {
        format!("spec.triggers[{}] ({})", self.index, self.type_name)
    }

    /// A query that measures HTTP requests (a rate of a request counter): the app serves HTTP.
    pub fn is_request_rate(&self) -> bool {
        self.source == Source::Prometheus && self.metadata.iter().any(|(k, v)| k == spec::QUERY && is_request_query(v))
    }
}

/// A trigger as written, in order: one to convert, or one kept as it is.
pub(crate) enum Item {
    Source(usize),
    /// Its index in `spec.triggers`, and the trigger.
    Kept(usize, Value),
}

/// Every trigger in order, with the `prometheus`/`kafka` ones read and checked; `kept` gets a note
/// for each trigger left as written.
pub(crate) fn read_triggers(
    spec: &Mapping,
    doc: &DocRef,
    kept: &mut Vec<String>,
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
                kept.push(format!(
                    "spec.triggers[{index}] ({type_name}): kept as written (spinscale takes over prometheus and \
                     kafka triggers only)"
                ));
                items.push(Item::Kept(index, trigger.clone()));
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
    let value_metric = match text("metricType")?.as_deref() {
        None | Some("AverageValue") => false,
        Some("Value") => true,
        Some(other) => {
            return Err(doc.error(
                at("metricType"),
                format!("{other:?} is not a metric type of a {type_name} trigger: KEDA takes AverageValue or Value"),
            ));
        }
    };
    let use_cached_metrics = match map.get("useCachedMetrics") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(doc.error(at("useCachedMetrics"), format!("is {}, not true or false", show(other)))),
    };
    let auth_ref = match map.get("authenticationRef") {
        None | Some(Value::Null) => None,
        Some(value) => Some(AuthRef::read(value, &at("authenticationRef"), doc)?),
    };
    const FIELDS: [&str; 6] = ["type", "name", "metadata", "metricType", "useCachedMetrics", "authenticationRef"];
    Ok(SourceTrigger {
        index,
        source,
        type_name,
        metadata: pairs,
        name: text("name")?,
        value_metric,
        use_cached_metrics,
        auth_ref,
        other_fields: map
            .keys()
            .map(|k| k.as_str().map_or_else(|| show(k), String::from))
            .filter(|k| !FIELDS.contains(&k.as_str()))
            .collect(),
    })
}

/// Indices into `sources`, one group per spinscale trigger: the first prometheus and the first
/// kafka trigger together (one metric, the max of both), any further ones on their own. With
/// `scalingModifiers` every trigger stays on its own, since the formula names them; so does a
/// trigger with `metricType: Value`, whose metric the HPA reads in its own units.
pub(crate) fn group(sources: &[SourceTrigger], separate: bool) -> Vec<Vec<usize>> {
    if separate {
        return (0..sources.len()).map(|i| vec![i]).collect();
    }
    let first = |kind: Source| sources.iter().position(|s| s.source == kind && !s.value_metric);
    let folded: Vec<usize> = [first(Source::Prometheus), first(Source::Kafka)].into_iter().flatten().collect();
    let mut groups = if folded.is_empty() { Vec::new() } else { vec![folded.clone()] };
    groups.extend((0..sources.len()).filter(|i| !folded.contains(i)).map(|i| vec![i]));
    for g in &mut groups {
        g.sort_unstable();
    }
    groups.sort_by_key(|g| g[0]);
    groups
}

/// What one spinscale trigger is built from and into.
pub(crate) struct Build<'a> {
    pub members: &'a [&'a SourceTrigger],
    /// `scalingModifiers`: every trigger keeps its own metrics.
    pub formula: bool,
    /// Its index in the new `spec.triggers`.
    pub new_index: usize,
    pub route: Option<&'a RouteKeys>,
    /// `queryInterval` for a trigger with a Prometheus query, from the ScaledObject's `pollingInterval`.
    pub query_interval: Option<&'a str>,
    /// The ScaledObject's namespace and its label for the skeleton (`ScaledObject ns/name`).
    pub namespace: Option<&'a str>,
    pub scaled_object: &'a str,
}

pub(crate) fn build_trigger(
    build: &Build<'_>,
    options: &Options,
    index: &auth::Index,
    connections: &mut Connections,
    doc: &DocRef,
    notes: &mut Vec<String>,
    moves: &mut Moves,
) -> Result<Value, ConvertError> {
    let members = build.members;
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
    let to = trigger_path(build.new_index);
    for member in members {
        moves.push(trigger_path(member.index), to.clone());
    }

    let mut metadata = Mapping::new();
    metadata.insert(spec::SCALER_ADDRESS.into(), options.scaler_address.clone().into());
    // spinscale key → the field it came from, to name the field in errors.
    let mut origin: HashMap<String, String> = HashMap::new();
    for member in members {
        let view = TriggerView {
            source: member.source,
            field: format!("spec.triggers[{}]", member.index),
            metadata: &member.metadata,
            auth_ref: member.auth_ref.as_ref(),
            namespace: build.namespace,
            user: format!("{} spec.triggers[{}]", build.scaled_object, member.index),
        };
        let resolved = auth::resolve(&view, index, connections, doc)?;
        let consumed = resolved.as_ref().map(|r| r.consumed.clone()).unwrap_or_default();
        copy_metadata(member, &consumed, &mut metadata, &mut origin, doc, notes, moves, &to)?;
        if let Some(resolved) = resolved {
            notes.extend(resolved.notes);
            if let Some((key, name)) = resolved.connection {
                metadata.insert(key.into(), name.into());
                origin.insert(key.to_string(), member.field("authenticationRef"));
            }
        }
    }
    if let Some(route) = build.route {
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
    if let Some(interval) = build.query_interval
        && members.iter().any(|m| m.source == Source::Prometheus)
        && !metadata.contains_key(spec::QUERY_INTERVAL)
    {
        metadata.insert(spec::QUERY_INTERVAL.into(), interval.into());
    }
    let value_metric = members.iter().any(|m| m.value_metric);
    if build.formula || value_metric {
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
    if value_metric {
        trigger.insert("metricType".into(), "Value".into());
        notes.push(format!(
            "{}: Value kept, with `metrics: separate`: the HPA reads the signal in its own units against its \
             threshold (desired = current replicas × value / threshold), as it did with KEDA's trigger",
            members[0].field("metricType")
        ));
    }
    let cached: Vec<bool> = members.iter().filter_map(|m| m.use_cached_metrics).collect();
    if cached.contains(&true) {
        trigger.insert("useCachedMetrics".into(), true.into());
        if cached.contains(&false) {
            notes.push("useCachedMetrics: true, as one of the folded triggers asked".into());
        }
    }
    for member in members {
        for field in &member.other_fields {
            notes.push(format!("{}: not a field of a KEDA trigger; dropped", member.field(field)));
        }
    }
    trigger.insert("metadata".into(), Value::Mapping(metadata));
    Ok(Value::Mapping(trigger))
}

#[allow(clippy::too_many_arguments)]
fn copy_metadata(
    member: &SourceTrigger,
    consumed: &[&str],
    metadata: &mut Mapping,
    origin: &mut HashMap<String, String>,
    doc: &DocRef,
    notes: &mut Vec<String>,
    moves: &mut Moves,
    to: &[super::comments::Seg],
) -> Result<(), ConvertError> {
    let mut renamed = Vec::new();
    for (key, value) in &member.metadata {
        let field = member.field(&format!("metadata.{key}"));
        if consumed.contains(&key.as_str()) {
            continue;
        }
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
                    let from = child(&trigger_path(member.index), &["metadata", key]);
                    moves.push(from, child(to, &["metadata", ours]));
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

/// Writes the route's keys into a trigger's metadata; a different value already there is an error.
pub(crate) fn add_route(
    metadata: &mut Mapping,
    route: &RouteKeys,
    field: &str,
    doc: &DocRef,
) -> Result<(), ConvertError> {
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

/// spinscale's own parser must accept the trigger, or the conversion has not produced a working one.
pub(crate) fn validate(
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

/// Whether a PromQL query measures requests: a metric name in it (outside label matchers and
/// strings) speaks of requests, HTTP or gRPC. Queue depths, GPU use or job counts do not, and an
/// app scaled on them need not serve HTTP.
pub(crate) fn is_request_query(query: &str) -> bool {
    let mut depth = 0;
    let mut quote = None;
    let mut word = String::new();
    let mut words = Vec::new();
    for c in query.chars().chain([' ']) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{') => depth += 1,
            (None, '}') => depth -= 1,
            (None, c) if depth == 0 && (c.is_ascii_alphanumeric() || c == '_' || c == ':') => word.push(c),
            _ => {}
        }
        if !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || word.is_empty()) {
            words.push(std::mem::take(&mut word));
        }
    }
    words.iter().any(|w| {
        let w = w.to_ascii_lowercase();
        w.contains("request") || w.contains("http") || w.contains("grpc") || w.split(['_', ':']).any(|p| p == "rq")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keda_keys_map_to_spinscale_keys_that_spinscale_reads() {
        for (keda, ours) in PROMETHEUS_KEYS {
            assert!(spec::KEYS.contains(&ours), "{keda} → {ours}");
            assert!(spec::ALIASES.iter().any(|(k, a)| *k == ours && *a == keda) || keda == ours, "{keda} → {ours}");
        }
        for key in KAFKA_KEYS {
            assert!(spec::KEYS.contains(&key), "{key}");
        }
        assert!(spec::KEYS.contains(&spec::QUERY_INTERVAL) && spec::KEYS.contains(&spec::PROMETHEUS_CONNECTION));
    }

    #[test]
    fn request_rates_are_told_from_queue_depths_and_gpu_use() {
        for query in [
            r#"sum(rate(http_requests_total{app="a"}[1m]))"#,
            "sum(rate(istio_requests_total[2m]))",
            "sum(rate(envoy_cluster_upstream_rq_total[1m]))",
            "sum(rate(grpc_server_handled_total[1m]))",
            "sum(irate(nginx_ingress_controller_requests{ingress=\"shop\"}[1m]))",
        ] {
            assert!(is_request_query(query), "{query}");
        }
        for query in [
            "sum(rabbitmq_queue_messages_ready{queue=\"jobs\"})",
            r#"avg(DCGM_FI_DEV_GPU_UTIL{pod=~"http-.*"})"#,
            "sum(kafka_consumergroup_lag{topic='requests'})",
            "sum(rate(jobs_processed_total[5m]))",
        ] {
            assert!(!is_request_query(query), "{query}");
        }
    }
}
