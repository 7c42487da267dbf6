//! `spinscale convert`: manifests written for KEDA's `prometheus` and `kafka` scalers and a SpinApp
//! target (which cannot work, docs/keda.md §8) rewritten into the working spinscale setup.
//!
//! - A ScaledObject's `prometheus` and `kafka` triggers are folded into one `external-push` trigger
//!   to spinscale carrying the same values under spinscale's keys (`keda`, `triggers`).
//! - Their `authenticationRef`s become named connections of spinscale's config, printed as a
//!   skeleton with the Deployment patch that mounts the same Secrets (`auth`).
//! - A `scaleTargetRef` to a SpinApp points at the SpinApp's Deployment instead (same name).
//! - A SpinApp gets the current API group, and, when it is autoscaled, `enableAutoscaling: true`
//!   and no `replicas` (`spinkube`).
//! - With `--activator` (`activator`), an Ingress that routes to an app's Service points at
//!   spinscale's activator instead, and the app's trigger gains the route (`hosts`, `backend`); a
//!   SpinApp served that way without a ScaledObject gets one.
//! - The items of a `List` are converted like documents (`lists`, `assemble`); ScaledJobs and
//!   KEDA v1 objects are passed through with a note saying so; every other document passes
//!   through as written.
//!
//! Each change is explained by a `# spinscale convert: ...` comment on its document and returned as
//! a [`Note`]. A rewritten document keeps its comments (`comments`), and converting converted
//! output changes nothing. The conversion is a pure function of the text; [`run`] is the command
//! around it.
//!
//! Within the crate it may use no other module (a leaf).

mod activator;
mod assemble;
mod auth;
mod comments;
mod documents;
mod keda;
mod lists;
mod spinkube;
mod triggers;

use std::fmt;
use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde_yaml_ng::{Mapping, Value};

use comments::Moves;
use documents::Chunk;

/// Where KEDA reaches spinscale when installed from `deploy/base`.
pub const DEFAULT_SCALER_ADDRESS: &str = "spinscale.spinscale.svc.cluster.local:9500";

/// The prefix of every comment the conversion writes.
pub const COMMENT_PREFIX: &str = "# spinscale convert: ";

/// How `spinscale convert` rewrites (its command-line flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The `scalerAddress` written into every spinscale trigger (`host:port`).
    pub scaler_address: String,
    /// Put spinscale's activator in front of HTTP apps that an Ingress of the input routes to.
    pub activator: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { scaler_address: DEFAULT_SCALER_ADDRESS.to_string(), activator: false }
    }
}

/// The converted manifests and what was changed, or left alone, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Converted {
    /// Multi-document YAML; the notes are comments on their documents.
    pub yaml: String,
    /// Every change and warning, in document order; also printed to stderr by the command.
    pub notes: Vec<Note>,
    /// spinscale's side of the converted credentials, when a converted trigger names a connection:
    /// the connections for its config, then a patch of its Deployment that mounts their files
    /// (two YAML documents, with comments).
    pub config: Option<String>,
}

/// One change or warning, on one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// e.g. `document 2 (ScaledObject webhook-handler-scaler, line 17)`.
    pub document: String,
    /// What was changed or left alone, and why.
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.document, self.message)
    }
}

/// Input that cannot be converted, naming the document and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConvertError {
    /// The document, as in [`Note::document`].
    pub document: String,
    /// A path such as `spec.triggers[1].metadata.lagThreshold`; empty when the whole document is at fault.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.document, self.message)
        } else {
            write!(f, "{}: {}: {}", self.document, self.field, self.message)
        }
    }
}

/// One document's name in notes and errors; builds errors that carry it.
#[derive(Clone, Debug)]
pub(crate) struct DocRef {
    label: String,
}

impl DocRef {
    pub(crate) fn error(&self, field: impl Into<String>, message: impl Into<String>) -> ConvertError {
        ConvertError { document: self.label.clone(), field: field.into(), message: message.into() }
    }
}

/// One document: its text, its value, its name.
struct Document {
    chunk: Chunk,
    value: Value,
    doc: DocRef,
}

/// What a converter did to one document.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The object was rewritten (otherwise its text is kept as written).
    pub changed: bool,
    pub notes: Vec<String>,
    /// Where the rewrite moved nodes, for their comments.
    pub moves: Moves,
}

/// A Kubernetes object: a namespace (if written) and a name, for matching ScaledObjects to SpinApps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// Same name, and the same namespace unless one of them leaves it to `kubectl -n`.
    pub fn matches(&self, other: &ObjectKey) -> bool {
        self.name == other.name
            && (self.namespace.is_none() || other.namespace.is_none() || self.namespace == other.namespace)
    }
}

/// Converts multi-document YAML. Documents that need no change keep their text (comments included).
pub fn convert(text: &str, options: &Options) -> Result<Converted, ConvertError> {
    let (mut docs, slots) = assemble::read(text)?;
    let plan = if options.activator { activator::plan(&docs, options)? } else { activator::Plan::default() };
    let objects = || docs.iter().filter_map(|d| d.value.as_mapping());
    let mut scaled_spin_apps: Vec<ObjectKey> = objects().filter_map(keda::spin_app_target).collect();
    scaled_spin_apps.extend(plan.scaled_apps.iter().cloned());
    let spin_apps: Vec<ObjectKey> = objects().filter(|o| spinkube::is_spin_app(o)).filter_map(object_key).collect();
    let app_memory: Vec<(ObjectKey, String)> = objects()
        .filter(|o| spinkube::is_spin_app(o))
        .filter_map(|o| Some((object_key(o)?, spinkube::instance_memory(o)?)))
        .collect();
    let auth = auth::Index::read(&docs);
    let input = Input {
        options,
        scaled_spin_apps: &scaled_spin_apps,
        spin_apps: &spin_apps,
        app_memory: &app_memory,
        plan: &plan,
        auth: &auth,
    };

    let mut connections = auth::Connections::default();
    let mut outcomes = Vec::with_capacity(docs.len());
    for (index, doc) in docs.iter_mut().enumerate() {
        let is_null = doc.value.is_null();
        let mut outcome = match doc.value.as_mapping_mut() {
            None if is_null => Outcome::default(),
            None => return Err(doc.doc.error("", "is not a Kubernetes object (a mapping with apiVersion and kind)")),
            Some(object) => convert_object(object, index, &doc.doc, &doc.chunk, &input, &mut connections)?,
        };
        outcome.notes.extend(plan.notes.get(&index).into_iter().flatten().cloned());
        outcomes.push(outcome);
    }
    let (yaml, notes) = assemble::write(&docs, &outcomes, slots, &plan)?;
    let config = auth::render(&connections, &spinscale_namespace(&options.scaler_address));
    Ok(Converted { yaml, notes, config })
}

/// The namespace spinscale runs in: the one of the Service in `scalerAddress`
/// (`NAME.NAMESPACE.svc...`), else the deploy kit's, `spinscale`.
fn spinscale_namespace(scaler_address: &str) -> String {
    let host = scaler_address.rsplit_once(':').map_or(scaler_address, |(host, _)| host);
    match host.split('.').collect::<Vec<_>>().as_slice() {
        [_, namespace, "svc", ..] => (*namespace).to_string(),
        _ => "spinscale".into(),
    }
}

/// What every document's conversion may consult about the whole input.
struct Input<'a> {
    options: &'a Options,
    /// SpinApps a ScaledObject targets (as written, or added by `--activator`).
    scaled_spin_apps: &'a [ObjectKey],
    spin_apps: &'a [ObjectKey],
    /// SpinApps' memory per instance, as written in their resources.
    app_memory: &'a [(ObjectKey, String)],
    plan: &'a activator::Plan,
    auth: &'a auth::Index,
}

/// KEDA's API group before v2; KEDA v2 no longer serves it.
const KEDA_V1_GROUP: &str = "keda.k8s.io";

fn convert_object(
    object: &mut Mapping,
    index: usize,
    doc: &DocRef,
    chunk: &Chunk,
    input: &Input<'_>,
    connections: &mut auth::Connections,
) -> Result<Outcome, ConvertError> {
    let key = object_key(object);
    let group = str_at(object, "apiVersion").and_then(|v| v.split_once('/')).map(|(group, _)| group);
    if keda::is_scaled_object(object) {
        let route = input.plan.routes.get(&index);
        let memory = keda::spin_app_target(object)
            .and_then(|app| input.app_memory.iter().find(|(key, _)| key.matches(&app)))
            .map(|(_, memory)| memory.as_str());
        let ctx = keda::Context { options: input.options, spin_apps: input.spin_apps, route, memory, auth: input.auth };
        keda::convert_scaled_object(object, doc, &ctx, connections)
    } else if group == Some(KEDA_V1_GROUP) {
        let outcome = Outcome {
            notes: vec![format!(
                "not converted: a KEDA v1 object ({KEDA_V1_GROUP}), which KEDA v2 no longer serves; migrate it to \
                 keda.sh/v1alpha1 first (KEDA's v1 to v2 migration guide), then convert it"
            )],
            ..Outcome::default()
        };
        Ok(outcome)
    } else if group == Some("keda.sh") && str_at(object, "kind") == Some("ScaledJob") {
        let outcome = Outcome {
            notes: vec![
                "not converted: spinscale scales ScaledObjects; a ScaledJob runs a Job per event, and KEDA ignores \
                 pushed activation for ScaledJobs (docs/keda.md §2.7), so its triggers stay KEDA's own"
                    .into(),
            ],
            ..Outcome::default()
        };
        Ok(outcome)
    } else if spinkube::is_spin_app(object) {
        let scaled = key.as_ref().is_some_and(|k| input.scaled_spin_apps.iter().any(|t| t.matches(k)));
        spinkube::convert_spin_app(object, doc, scaled)
    } else if str_at(object, "kind") == Some("Service") {
        spinkube::convert_service(object, doc, key.as_ref(), input.spin_apps)
    } else {
        let mut outcome = Outcome::default();
        if str_at(object, "kind").is_none() {
            outcome.notes.push("has no `kind`; passed through as written".into());
        }
        if chunk.text.contains(spinkube::OLD_GROUP) {
            outcome.notes.push(format!(
                "mentions {}, SpinKube's API group until 2024 (now {}); left as written, check it",
                spinkube::OLD_GROUP,
                spinkube::GROUP
            ));
        }
        if let Some(repoints) = input.plan.ingresses.get(&index) {
            activator::repoint_ingress(object, doc, repoints, &mut outcome)?;
        }
        Ok(outcome)
    }
}

fn object_key(object: &Mapping) -> Option<ObjectKey> {
    let metadata = object.get("metadata")?;
    Some(ObjectKey {
        namespace: metadata.get("namespace").and_then(Value::as_str).map(String::from),
        name: metadata.get("name").and_then(Value::as_str)?.to_string(),
    })
}

fn str_at<'a>(map: &'a Mapping, key: &str) -> Option<&'a str> {
    map.get(key).and_then(Value::as_str)
}

/// A short rendering of a YAML value for messages.
fn show(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// `spinscale convert FILE|- [--activator] [--config-out FILE]`: converted YAML on stdout, every
/// note on stderr, then spinscale's side of the converted credentials (on stderr, or in
/// `config_out`).
pub fn run(
    input: &str,
    scaler_address: Option<String>,
    activator: bool,
    config_out: Option<&Path>,
) -> anyhow::Result<()> {
    let scaler_address = scaler_address.unwrap_or_else(|| DEFAULT_SCALER_ADDRESS.to_string());
    let port = scaler_address.rsplit_once(':').map(|(host, port)| (host.is_empty(), port.parse::<u16>()));
    if !matches!(port, Some((false, Ok(_)))) {
        anyhow::bail!("--scaler-address {scaler_address:?} is not host:port (e.g. {DEFAULT_SCALER_ADDRESS})");
    }
    let text = if input == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read standard input")?;
        text
    } else {
        std::fs::read_to_string(input).with_context(|| format!("cannot read {input}"))?
    };
    let shown = if input == "-" { "<stdin>" } else { input };
    let options = Options { scaler_address, activator };
    let converted = convert(&text, &options).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    for note in &converted.notes {
        eprintln!("spinscale convert: {shown}: {note}");
    }
    match (&converted.config, config_out) {
        (Some(config), Some(path)) => {
            std::fs::write(path, config).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "spinscale convert: {shown}: spinscale's connections and its Deployment patch (for the converted \
                 credentials) are in {}",
                path.display()
            );
        }
        (Some(config), None) => {
            eprintln!(
                "spinscale convert: {shown}: spinscale's connections and its Deployment patch, for the converted \
                 credentials, follow (--config-out FILE writes them to a file):"
            );
            eprint!("{config}");
        }
        (None, _) => {}
    }
    print!("{}", converted.yaml);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: &str = "# leading comment document\n---\napiVersion: v1\nkind: ConfigMap # as written\nmetadata: {name: c}\n\
                         data: {note: see core.spinoperator.dev}\n---\napiVersion: core.spinoperator.dev/v1alpha1\n\
                         kind: SpinApp\nmetadata: {name: a}\nspec: {image: i, replicas: 0}\n";

    #[test]
    fn untouched_documents_keep_their_text_and_changed_ones_carry_their_notes() {
        let converted = convert(INPUT, &Options::default()).expect("converts");
        let docs: Vec<&str> = converted.yaml.split("---\n").collect();
        assert_eq!(docs.len(), 3, "{}", converted.yaml);
        assert_eq!(docs[0], "# leading comment document\n");
        assert!(
            docs[1].ends_with(
                "kind: ConfigMap # as written\nmetadata: {name: c}\ndata: {note: see core.spinoperator.dev}\n"
            )
        );
        assert!(docs[1].starts_with(COMMENT_PREFIX), "{}", docs[1]);
        let body: Vec<&str> = docs[2].lines().filter(|l| !l.starts_with('#')).collect();
        assert!(body.contains(&"  enableAutoscaling: true"), "{}", docs[2]);
        assert!(!body.iter().any(|l| l.contains("replicas")), "{}", docs[2]);

        let documents: Vec<&str> = converted.notes.iter().map(|n| n.document.as_str()).collect();
        assert_eq!(documents[0], "document 1 (ConfigMap c, line 3)");
        assert!(documents[1..].iter().all(|d| *d == "document 2 (SpinApp a, line 8)"), "{documents:?}");
        let comments = converted.yaml.lines().filter(|l| l.starts_with(COMMENT_PREFIX)).count();
        assert_eq!(comments, converted.notes.len(), "every note is a comment too");
    }

    #[test]
    fn the_output_parses_back_as_the_same_number_of_documents() {
        let converted = convert(INPUT, &Options::default()).expect("converts");
        let values: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&converted.yaml)
            .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("valid YAML"))
            .filter(|v| !v.is_null())
            .collect();
        assert_eq!(values.len(), 2);
    }

    #[test]
    fn a_document_that_is_not_an_object_is_an_error() {
        let err = convert("a: 1\n---\njust words\n", &Options::default()).expect_err("a scalar");
        assert_eq!(err.document, "document 2 (line 3)");
        assert!(err.to_string().contains("not a Kubernetes object"), "{err}");
        let err = convert("a: [1\n", &Options::default()).expect_err("not YAML");
        assert!(err.to_string().starts_with("document at line 1: not valid YAML"), "{err}");
    }

    #[test]
    fn object_keys_match_when_a_namespace_is_left_open() {
        let key = |ns: Option<&str>| ObjectKey { namespace: ns.map(String::from), name: "a".into() };
        assert!(key(None).matches(&key(Some("x"))));
        assert!(key(Some("x")).matches(&key(Some("x"))));
        assert!(!key(Some("x")).matches(&key(Some("y"))));
    }
}
