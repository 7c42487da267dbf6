//! Credentials: a `prometheus` or `kafka` trigger's `authenticationRef` becomes a named connection
//! of spinscale's config (`prometheusConnections`, `kafkaConnections`) that the converted trigger
//! names (`prometheusConnection: NAME`, `kafkaConnection: NAME`).
//!
//! KEDA does not pass a TriggerAuthentication to an external scaler (keda#2571), so spinscale
//! reads the same credentials from files: the Secrets the TriggerAuthentication names, mounted
//! into spinscale's pod. [`Index`] holds what the input says about credentials (the
//! (Cluster)TriggerAuthentications, Secrets and ConfigMaps), [`resolve`] maps one trigger
//! (`prometheus`, `kafka`) and [`Connections`] collects the result for the config skeleton
//! (`skeleton`), each with where it may be used (the triggers' addresses, the
//! TriggerAuthentication's namespace). A trigger whose credentials convert cannot carry over (a
//! TriggerAuthentication not in the input, Vault, a pod identity it cannot map, a secret for an
//! `http://` address) is refused: the converted trigger must never quietly lose them.

mod kafka;
mod prometheus;
mod skeleton;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use serde_yaml_ng::{Mapping, Value};

use super::triggers::Source;
use super::{ConvertError, DocRef, Document, ObjectKey, object_key, show, str_at};

pub(crate) use skeleton::render;

/// Where the connections' files are mounted in spinscale's pod: `ROOT/NAME/FILE`.
pub(crate) const MOUNT_ROOT: &str = "/var/run/secrets/spinscale";

/// `authenticationRef` of a trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AuthRef {
    pub name: String,
    pub cluster: bool,
}

impl AuthRef {
    /// Reads `spec.triggers[i].authenticationRef`, naming the field in errors.
    pub fn read(value: &Value, field: &str, doc: &DocRef) -> Result<Self, ConvertError> {
        let map = value.as_mapping().ok_or_else(|| doc.error(field, format!("is {}, not a mapping", show(value))))?;
        let name = match map.get("name") {
            Some(Value::String(name)) if !name.is_empty() => name.clone(),
            other => {
                let shown = other.map_or("missing".to_string(), show);
                return Err(
                    doc.error(format!("{field}.name"), format!("is {shown}, not the name of a TriggerAuthentication"))
                );
            }
        };
        let cluster = match map.get("kind").and_then(Value::as_str) {
            None | Some("TriggerAuthentication") => false,
            Some("ClusterTriggerAuthentication") => true,
            Some(other) => {
                return Err(doc.error(
                    format!("{field}.kind"),
                    format!("{other:?} is neither TriggerAuthentication nor ClusterTriggerAuthentication"),
                ));
            }
        };
        Ok(AuthRef { name, cluster })
    }

    fn kind(&self) -> &'static str {
        if self.cluster { "ClusterTriggerAuthentication" } else { "TriggerAuthentication" }
    }
}

/// Where a parameter of a TriggerAuthentication comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ParamSource {
    Secret {
        name: String,
        key: String,
    },
    ConfigMap {
        name: String,
        key: String,
    },
    /// A source spinscale cannot read, e.g. `HashiCorp Vault`.
    Unsupported(&'static str),
}

/// One parameter: its source and the TriggerAuthentication field it is written in.
#[derive(Clone, Debug)]
struct Param {
    source: ParamSource,
    field: String,
}

/// `spec.podIdentity` of a TriggerAuthentication.
#[derive(Clone, Debug, Default)]
pub(crate) struct PodIdentity {
    pub provider: String,
    pub identity_id: Option<String>,
    pub role_arn: Option<String>,
    pub identity_owner: Option<String>,
}

/// A (Cluster)TriggerAuthentication, read.
#[derive(Debug)]
pub(crate) struct TriggerAuth {
    /// e.g. `TriggerAuthentication shop/kafka-credentials`.
    pub label: String,
    pub name: String,
    /// The namespace of its Secrets: its own; `None` for a ClusterTriggerAuthentication (KEDA's namespace).
    pub namespace: Option<String>,
    params: BTreeMap<String, Param>,
    pub pod_identity: Option<PodIdentity>,
}

/// A file of a connection: its name in the connection's folder and where its content comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FileRef {
    pub file: &'static str,
    pub from: Mount,
}

/// A key of a Secret or ConfigMap, mounted as a file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Mount {
    pub config_map: bool,
    pub namespace: Option<String>,
    pub name: String,
    pub key: String,
}

/// How a trigger's credentials were mapped to a connection, for one mapper.
pub(crate) struct Mapped {
    /// `None`: KEDA used none of the TriggerAuthentication's parameters (e.g. no `authModes`).
    pub connection: Option<Connection>,
    /// Metadata keys the connection replaces (not copied into the converted trigger).
    pub consumed: Vec<&'static str>,
    /// What the mapping says, e.g. parameters it did not use.
    pub notes: Vec<String>,
}

/// A connection of spinscale's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Connection {
    Prometheus(prometheus::PrometheusConnection),
    Kafka(kafka::KafkaConnection),
}

impl Connection {
    /// Whether its requests carry a secret an eavesdropper could use (a token, a password, a
    /// header value): spinscale then sends them only over TLS. Kafka's SASL is the brokers' matter.
    fn sends_secrets(&self) -> bool {
        match self {
            Connection::Prometheus(c) => {
                c.bearer_token.is_some() || c.platform.is_some() || c.username.is_some() || !c.headers.is_empty()
            }
            Connection::Kafka(_) => false,
        }
    }

    /// The trigger key that names it.
    pub fn key(&self) -> &'static str {
        match self {
            Connection::Prometheus(_) => spinscale_core::spec::PROMETHEUS_CONNECTION,
            Connection::Kafka(_) => spinscale_core::spec::KAFKA_CONNECTION,
        }
    }

    fn files(&self) -> Vec<&FileRef> {
        match self {
            Connection::Prometheus(c) => c.files(),
            Connection::Kafka(c) => c.files(),
        }
    }
}

/// One connection of the skeleton.
#[derive(Debug)]
pub(crate) struct Entry {
    pub name: String,
    pub connection: Connection,
    /// e.g. `TriggerAuthentication shop/kafka (sasl plaintext, tls enable)`.
    pub origin: String,
    /// The triggers that name it, e.g. `ScaledObject shop/orders spec.triggers[0]`.
    pub users: Vec<String>,
    /// Where those triggers point: their `serverAddress` (Prometheus) or the brokers of their
    /// `bootstrapServers` (Kafka), each once, in order; the connection's `addresses` or
    /// `bootstrapServers`.
    pub addresses: Vec<String>,
    /// The TriggerAuthentication's namespace, which alone could use it in KEDA; `None` for a
    /// ClusterTriggerAuthentication (any namespace).
    pub namespace: Option<String>,
}

/// The connections the converted triggers name, in the order they were first needed.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    pub entries: Vec<Entry>,
}

impl Connections {
    /// The name for `connection` from `auth`: `base` unless another connection has it (then
    /// `base-2`, ...); the same connection again gets the same name, and `addresses` join its own.
    fn add(
        &mut self,
        base: &str,
        connection: Connection,
        auth: &TriggerAuth,
        user: String,
        addresses: Vec<String>,
    ) -> String {
        let mut n = 1;
        loop {
            let name = if n == 1 { base.to_string() } else { format!("{base}-{n}") };
            match self.entries.iter_mut().find(|e| e.name == name) {
                Some(entry) if entry.connection == connection && entry.origin == auth.label => {
                    entry.users.push(user);
                    for address in addresses {
                        if !entry.addresses.contains(&address) {
                            entry.addresses.push(address);
                        }
                    }
                    return name;
                }
                Some(_) => n += 1,
                None => {
                    self.entries.push(Entry {
                        name: name.clone(),
                        connection,
                        origin: auth.label.clone(),
                        users: vec![user],
                        addresses,
                        namespace: auth.namespace.clone(),
                    });
                    return name;
                }
            }
        }
    }
}

/// A Secret's data, decoded, or why it could not be read.
type SecretData = Result<BTreeMap<String, Vec<u8>>, String>;

/// What the input says about credentials.
#[derive(Debug, Default)]
pub(crate) struct Index {
    auths: Vec<(ObjectKey, bool, Result<TriggerAuth, ConvertError>)>,
    secrets: Vec<(ObjectKey, SecretData)>,
    config_maps: Vec<(ObjectKey, BTreeMap<String, String>)>,
}

impl Index {
    pub fn read(docs: &[Document]) -> Self {
        let mut index = Index::default();
        for d in docs {
            let Some(object) = d.value.as_mapping() else { continue };
            let Some(key) = object_key(object) else { continue };
            let (api, kind) = (str_at(object, "apiVersion").unwrap_or(""), str_at(object, "kind").unwrap_or(""));
            match (api, kind) {
                (api, "TriggerAuthentication" | "ClusterTriggerAuthentication") if api.starts_with("keda.sh/") => {
                    let cluster = kind == "ClusterTriggerAuthentication";
                    index.auths.push((key.clone(), cluster, read_auth(object, &key, cluster, &d.doc)));
                }
                ("v1", "Secret") => index.secrets.push((key, secret_data(&d.value))),
                ("v1", "ConfigMap") => {
                    let data = object
                        .get("data")
                        .and_then(Value::as_mapping)
                        .map(|m| m.iter().filter_map(|(k, v)| Some((k.as_str()?.into(), v.as_str()?.into()))).collect())
                        .unwrap_or_default();
                    index.config_maps.push((key, data));
                }
                _ => {}
            }
        }
        index
    }

    fn auth(&self, reference: &AuthRef, namespace: Option<&str>) -> Option<&Result<TriggerAuth, ConvertError>> {
        let wanted = ObjectKey { namespace: namespace.map(String::from), name: reference.name.clone() };
        self.auths
            .iter()
            .find(|(key, cluster, _)| {
                *cluster == reference.cluster && (if *cluster { key.name == wanted.name } else { key.matches(&wanted) })
            })
            .map(|(_, _, auth)| auth)
    }

    /// The value of a parameter that the connection needs as text (a SASL mode, a region), read
    /// from its Secret or ConfigMap in the input; `Ok(None)` if the TriggerAuthentication lacks it.
    pub fn literal(&self, auth: &TriggerAuth, parameter: &str) -> Result<Option<String>, String> {
        let Some(param) = auth.params.get(parameter) else { return Ok(None) };
        let wanted = |name: &str| ObjectKey { namespace: auth.namespace.clone(), name: name.to_string() };
        let missing = |what: &str, name: &str| {
            format!(
                "{}: {} (parameter {parameter}) comes from {what} {name}, which is not in this input: convert needs its \
                 value to write the connection; add the {what} to the input",
                auth.label, param.field
            )
        };
        match &param.source {
            ParamSource::Secret { name, key } => {
                let (_, data) = self
                    .secrets
                    .iter()
                    .find(|(k, _)| k.matches(&wanted(name)))
                    .ok_or_else(|| missing("Secret", name))?;
                let data = data.as_ref().map_err(|e| format!("Secret {name}: {e}"))?;
                let bytes = data
                    .get(key)
                    .ok_or_else(|| format!("{}: {}: Secret {name} has no key {key}", auth.label, param.field))?;
                let text = String::from_utf8(bytes.clone()).map_err(|_| {
                    format!("{}: {}: Secret {name} key {key} is not UTF-8 text", auth.label, param.field)
                })?;
                Ok(Some(text.trim().to_string()))
            }
            ParamSource::ConfigMap { name, key } => {
                let (_, data) = self
                    .config_maps
                    .iter()
                    .find(|(k, _)| k.matches(&wanted(name)))
                    .ok_or_else(|| missing("ConfigMap", name))?;
                let value = data
                    .get(key)
                    .ok_or_else(|| format!("{}: {}: ConfigMap {name} has no key {key}", auth.label, param.field))?;
                Ok(Some(value.trim().to_string()))
            }
            ParamSource::Unsupported(what) => Err(unsupported(auth, parameter, param, what)),
        }
    }
}

fn unsupported(auth: &TriggerAuth, parameter: &str, param: &Param, what: &str) -> String {
    format!(
        "{}: {} (parameter {parameter}) comes from {what}, which spinscale cannot read: put it in a Secret \
         (secretTargetRef), which spinscale mounts as a file",
        auth.label, param.field
    )
}

impl TriggerAuth {
    /// Whether the TriggerAuthentication gives `parameter`.
    pub fn has(&self, parameter: &str) -> bool {
        self.params.contains_key(parameter)
    }

    /// The parameters it gives that are not in `used`.
    pub fn unused<'a>(&'a self, used: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
        self.params.keys().map(String::as_str).filter(|p| !used.contains(p))
    }

    /// A parameter as a file of the connection, named `file` in its folder.
    pub fn file(&self, parameter: &str, file: &'static str) -> Result<Option<FileRef>, String> {
        let Some(param) = self.params.get(parameter) else { return Ok(None) };
        let (config_map, name, key) = match &param.source {
            ParamSource::Secret { name, key } => (false, name, key),
            ParamSource::ConfigMap { name, key } => (true, name, key),
            ParamSource::Unsupported(what) => return Err(unsupported(self, parameter, param, what)),
        };
        let from = Mount { config_map, namespace: self.namespace.clone(), name: name.clone(), key: key.clone() };
        Ok(Some(FileRef { file, from }))
    }
}

/// The data of a Secret, decoded (`stringData` over `data`, as the API server does).
fn secret_data(value: &Value) -> SecretData {
    let secret: Secret = serde_yaml_ng::from_value(value.clone()).map_err(|e| format!("is not a valid Secret: {e}"))?;
    let mut data: BTreeMap<String, Vec<u8>> =
        secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    data.extend(secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
    Ok(data)
}

/// KEDA's sources of parameters other than Secrets and ConfigMaps, and what they are called.
const UNSUPPORTED_SOURCES: [(&str, &str, &str); 5] = [
    ("hashiCorpVault", "secrets", "HashiCorp Vault"),
    ("azureKeyVault", "secrets", "Azure Key Vault"),
    ("gcpSecretManager", "secrets", "GCP Secret Manager"),
    ("awsSecretManager", "secrets", "AWS Secrets Manager"),
    ("awsSecretsManager", "secrets", "AWS Secrets Manager"),
];

fn read_auth(object: &Mapping, key: &ObjectKey, cluster: bool, doc: &DocRef) -> Result<TriggerAuth, ConvertError> {
    let kind = if cluster { "ClusterTriggerAuthentication" } else { "TriggerAuthentication" };
    let label = match (&key.namespace, cluster) {
        (Some(ns), false) => format!("{kind} {ns}/{}", key.name),
        _ => format!("{kind} {}", key.name),
    };
    let spec = object
        .get("spec")
        .and_then(Value::as_mapping)
        .ok_or_else(|| doc.error("spec", "is missing or not a mapping"))?;
    let mut params = BTreeMap::new();
    let mut add = |parameter: Option<&str>, field: String, source: ParamSource| -> Result<(), ConvertError> {
        let parameter =
            parameter.ok_or_else(|| doc.error(format!("{field}.parameter"), "is missing or not a string"))?;
        params.insert(parameter.to_string(), Param { source, field });
        Ok(())
    };
    for (section, config_map) in [("secretTargetRef", false), ("configMapTargetRef", true)] {
        for (i, entry) in list(spec, section, doc)?.iter().enumerate() {
            let field = format!("spec.{section}[{i}]");
            let text = |k: &str| -> Result<String, ConvertError> {
                entry
                    .get(k)
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| doc.error(format!("{field}.{k}"), "is missing or not a string"))
            };
            let (name, key) = (text("name")?, text("key")?);
            let source =
                if config_map { ParamSource::ConfigMap { name, key } } else { ParamSource::Secret { name, key } };
            add(entry.get("parameter").and_then(Value::as_str), field, source)?;
        }
    }
    for (i, entry) in list(spec, "env", doc)?.iter().enumerate() {
        let source = ParamSource::Unsupported("an environment variable of the scale target's container");
        add(entry.get("parameter").and_then(Value::as_str), format!("spec.env[{i}]"), source)?;
    }
    for (i, entry) in list(spec, "boundServiceAccountToken", doc)?.iter().enumerate() {
        let source = ParamSource::Unsupported("a bound ServiceAccount token");
        add(entry.get("parameter").and_then(Value::as_str), format!("spec.boundServiceAccountToken[{i}]"), source)?;
    }
    for (section, inner, what) in UNSUPPORTED_SOURCES {
        let Some(store) = spec.get(section) else { continue };
        let entries = store.get(inner).and_then(Value::as_sequence).cloned().unwrap_or_default();
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("spec.{section}.{inner}[{i}]");
            add(entry.get("parameter").and_then(Value::as_str), field, ParamSource::Unsupported(what))?;
        }
    }
    let pod_identity = match spec.get("podIdentity") {
        None | Some(Value::Null) => None,
        Some(Value::Mapping(p)) => {
            let text = |k: &str| p.get(k).and_then(Value::as_str).map(String::from);
            let provider =
                text("provider").ok_or_else(|| doc.error("spec.podIdentity.provider", "is missing or not a string"))?;
            Some(PodIdentity {
                provider,
                identity_id: text("identityId"),
                role_arn: text("roleArn"),
                identity_owner: text("identityOwner"),
            })
        }
        Some(other) => return Err(doc.error("spec.podIdentity", format!("is {}, not a mapping", show(other)))),
    };
    Ok(TriggerAuth {
        label,
        name: key.name.clone(),
        namespace: if cluster { None } else { key.namespace.clone() },
        params,
        pod_identity: pod_identity.filter(|p| p.provider != "none"),
    })
}

fn list<'a>(spec: &'a Mapping, section: &str, doc: &DocRef) -> Result<&'a [Value], ConvertError> {
    match spec.get(section) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Sequence(items)) => Ok(items),
        Some(other) => Err(doc.error(format!("spec.{section}"), format!("is {}, not a list", show(other)))),
    }
}

/// One `prometheus` or `kafka` trigger, as the mappers need it.
pub(crate) struct TriggerView<'a> {
    pub source: Source,
    /// e.g. `spec.triggers[0]`.
    pub field: String,
    pub metadata: &'a [(String, String)],
    pub auth_ref: Option<&'a AuthRef>,
    /// The ScaledObject's namespace, where its TriggerAuthentication is.
    pub namespace: Option<&'a str>,
    /// e.g. `ScaledObject shop/orders spec.triggers[0]`, for the skeleton's comments.
    pub user: String,
}

impl TriggerView<'_> {
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Where the trigger points: its `serverAddress` (without a trailing `/`, as spinscale reads
    /// it), or each broker of its `bootstrapServers`.
    fn addresses(&self) -> Vec<String> {
        match self.source {
            Source::Prometheus => {
                self.meta("serverAddress").map(|a| a.trim().trim_end_matches('/').to_string()).into_iter().collect()
            }
            Source::Kafka => self
                .meta(spinscale_core::spec::BOOTSTRAP_SERVERS)
                .into_iter()
                .flat_map(|list| list.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

/// What becomes of a trigger's credentials.
pub(crate) struct Resolved {
    /// The trigger key (`prometheusConnection` or `kafkaConnection`) and the connection's name.
    pub connection: Option<(&'static str, String)>,
    /// Metadata keys the connection replaces.
    pub consumed: Vec<&'static str>,
    pub notes: Vec<String>,
}

/// Maps the credentials of one trigger to a connection, or refuses naming the trigger and its
/// `authenticationRef`. `Ok(None)`: the trigger has no credentials to carry.
pub(crate) fn resolve(
    view: &TriggerView<'_>,
    index: &Index,
    connections: &mut Connections,
    doc: &DocRef,
) -> Result<Option<Resolved>, ConvertError> {
    let auth = match view.auth_ref {
        None => None,
        Some(reference) => match index.auth(reference, view.namespace) {
            Some(Ok(auth)) => Some(auth),
            Some(Err(e)) => {
                return Err(doc.error(
                    format!("{}.authenticationRef", view.field),
                    format!("{} {} cannot be read: {e}", reference.kind(), reference.name),
                ));
            }
            None => {
                return Err(doc.error(
                    format!("{}.authenticationRef", view.field),
                    format!(
                        "{} {} is not in this input: convert needs it to carry the trigger's credentials to spinscale \
                         (KEDA does not pass them to external scalers, keda#2571); add it to the input (kubectl get \
                         {} {} -o yaml)",
                        reference.kind(),
                        reference.name,
                        reference.kind().to_lowercase(),
                        reference.name
                    ),
                ));
            }
        },
    };
    let mapped = match view.source {
        Source::Prometheus => prometheus::map(view, auth, index),
        Source::Kafka => kafka::map(view, auth, index),
    };
    let refused = |message: String| {
        let field = match view.auth_ref {
            Some(_) => format!("{}.authenticationRef", view.field),
            None => format!("{}.metadata", view.field),
        };
        doc.error(field, message)
    };
    let Some(mapped) = mapped.map_err(refused)? else { return Ok(None) };
    let Some(auth) = auth else { return Ok(None) };
    let mut notes = mapped.notes;
    let Some(connection) = mapped.connection else {
        notes.insert(
            0,
            format!(
                "{}.authenticationRef ({}): dropped: KEDA's {} scaler uses none of its parameters with this trigger's \
                 settings, so neither does spinscale",
                view.field,
                auth.label,
                view.source.name()
            ),
        );
        return Ok(Some(Resolved { connection: None, consumed: mapped.consumed, notes }));
    };
    let addresses = view.addresses();
    if connection.sends_secrets()
        && let Some(plain) = addresses.iter().find(|a| a.starts_with("http://"))
    {
        return Err(doc.error(
            format!("{}.metadata.serverAddress", view.field),
            format!(
                "{plain} is plain http, and {} gives credentials that spinscale sends only over TLS (anyone on the \
                 path could read them; KEDA sent them in the clear): use the server's https:// address",
                auth.label
            ),
        ));
    }
    let key = connection.key();
    let name = connections.add(&dns_label(&auth.name), connection, auth, view.user.clone(), addresses);
    let list = match view.source {
        Source::Prometheus => "prometheusConnections",
        Source::Kafka => "kafkaConnections",
    };
    notes.insert(
        0,
        format!(
            "{}.authenticationRef ({}) → {key}: {name}: spinscale reads the same credentials as files, through the \
             connection {list}.{name} of its config, which convert writes out with the Deployment patch that mounts \
             them",
            view.field, auth.label
        ),
    );
    Ok(Some(Resolved { connection: Some((key, name)), consumed: mapped.consumed, notes }))
}

/// `name` as a DNS label: lowercase letters, digits and `-`, at most 50 characters (room for a suffix).
fn dns_label(name: &str) -> String {
    let label: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(50).collect();
    let label = label.trim_matches('-').to_string();
    if label.is_empty() { "connection".into() } else { label }
}

/// A file of a connection: its path in spinscale's pod.
pub(crate) fn path(connection: &str, file: &FileRef) -> String {
    format!("{MOUNT_ROOT}/{connection}/{}", file.file)
}

#[cfg(test)]
mod tests;
