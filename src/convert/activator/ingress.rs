//! The Ingresses `--activator` repoints: their paths with a Service backend, and their class,
//! whose controller must be able to route to the ExternalName Service that stands for the
//! activator.

use serde_yaml_ng::{Mapping, Value};

use super::super::{ConvertError, DocRef, ObjectKey, show, str_at};
use super::SERVICE_NAME;

pub(super) const INGRESS_API: &str = "networking.k8s.io/v1";
/// The annotation that named an Ingress's class before `spec.ingressClassName`.
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// The annotation that makes an IngressClass the default.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// Ingress classes whose controllers route only to Services with endpoints of their own (node
/// ports or network endpoint groups), never to an ExternalName Service.
const NO_EXTERNAL_NAME_CLASSES: [&str; 2] = ["gce", "gce-internal"];
/// The controller of those classes, for IngressClasses of other names.
const NO_EXTERNAL_NAME_CONTROLLERS: [&str; 1] = ["k8s.io/ingress-gce"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Port {
    Number(i64),
    Name(String),
}

/// One `spec.rules[r].http.paths[p]` with a Service backend.
#[derive(Debug)]
pub(super) struct IngressPath {
    pub(super) rule: usize,
    pub(super) path: usize,
    pub(super) host: Option<String>,
    pub(super) prefix: String,
    pub(super) path_type: Option<String>,
    pub(super) service: String,
    pub(super) port: Port,
}

impl IngressPath {
    pub(super) fn field(&self) -> String {
        format!("spec.rules[{}].http.paths[{}]", self.rule, self.path)
    }
}

#[derive(Debug)]
pub(super) struct IngressInfo {
    pub(super) index: usize,
    pub(super) doc: DocRef,
    pub(super) key: ObjectKey,
    pub(super) paths: Vec<IngressPath>,
    /// `spec.ingressClassName` or the older annotation: (the field, the class).
    pub(super) class: Option<(String, String)>,
}

/// The paths of an Ingress that have a Service backend.
pub(super) fn read_ingress(object: &Mapping, doc: &DocRef) -> Result<Vec<IngressPath>, ConvertError> {
    let rules = match object.get("spec").and_then(|s| s.get("rules")) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Sequence(rules)) => rules,
        Some(other) => return Err(doc.error("spec.rules", format!("is {}, not a list", show(other)))),
    };
    let mut paths = Vec::new();
    for (r, rule) in rules.iter().enumerate() {
        let host = match rule.get("host") {
            None | Some(Value::Null) => None,
            Some(Value::String(host)) => Some(host.clone()),
            Some(other) => {
                return Err(doc.error(format!("spec.rules[{r}].host"), format!("is {}, not a string", show(other))));
            }
        };
        let rule_paths = match rule.get("http").and_then(|h| h.get("paths")) {
            None | Some(Value::Null) => continue,
            Some(Value::Sequence(p)) => p,
            Some(other) => {
                return Err(doc.error(format!("spec.rules[{r}].http.paths"), format!("is {}, not a list", show(other))));
            }
        };
        for (p, path) in rule_paths.iter().enumerate() {
            let at = |rest: &str| format!("spec.rules[{r}].http.paths[{p}]{rest}");
            // A `resource` backend is no Service: nothing for the activator.
            let Some(service) = path.get("backend").and_then(|b| b.get("service")) else { continue };
            let service_name = service
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| doc.error(at(".backend.service.name"), "is missing or not a string"))?;
            let port = service.get("port");
            let port = match (port.and_then(|p| p.get("number")), port.and_then(|p| p.get("name"))) {
                (Some(n), _) => Port::Number(
                    n.as_i64().ok_or_else(|| doc.error(at(".backend.service.port.number"), "is not an integer"))?,
                ),
                (None, Some(Value::String(name))) => Port::Name(name.clone()),
                _ => return Err(doc.error(at(".backend.service.port"), "needs `number` or `name`")),
            };
            let prefix = match path.get("path") {
                None | Some(Value::Null) => "/".to_string(),
                Some(Value::String(p)) => p.clone(),
                Some(other) => return Err(doc.error(at(".path"), format!("is {}, not a string", show(other)))),
            };
            paths.push(IngressPath {
                rule: r,
                path: p,
                host: host.clone(),
                prefix,
                path_type: path.get("pathType").and_then(Value::as_str).map(String::from),
                service: service_name.to_string(),
                port,
            });
        }
    }
    Ok(paths)
}

pub(super) fn ingress_label(ingress: &IngressInfo) -> String {
    format!("Ingress {}", ingress.key.name)
}

pub(super) fn show_port(port: &Port) -> String {
    match port {
        Port::Number(n) => n.to_string(),
        Port::Name(name) => name.clone(),
    }
}

/// An IngressClass of the input: its name, its controller, whether it is the default.
#[derive(Debug)]
pub(super) struct IngressClass {
    name: String,
    controller: Option<String>,
    default: bool,
}

pub(super) fn ingress_class(object: &Mapping) -> Option<IngressClass> {
    if str_at(object, "apiVersion") != Some(INGRESS_API) || str_at(object, "kind") != Some("IngressClass") {
        return None;
    }
    let metadata = object.get("metadata");
    let default = metadata
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true");
    Some(IngressClass {
        name: metadata.and_then(|m| m.get("name")).and_then(Value::as_str)?.to_string(),
        controller: object.get("spec").and_then(|s| s.get("controller")).and_then(Value::as_str).map(String::from),
        default,
    })
}

/// The class an Ingress names: `spec.ingressClassName`, else the older annotation.
pub(super) fn class_of(object: &Mapping) -> Option<(String, String)> {
    if let Some(class) = object.get("spec").and_then(|s| s.get("ingressClassName")).and_then(Value::as_str) {
        return Some(("spec.ingressClassName".into(), class.to_string()));
    }
    let annotation = object.get("metadata")?.get("annotations")?.get(CLASS_ANNOTATION)?.as_str()?;
    Some((format!("metadata.annotations.{CLASS_ANNOTATION}"), annotation.to_string()))
}

/// Refuses an Ingress whose controller cannot route to an ExternalName Service (GKE's
/// ingress-gce), naming its class: pointed at the activator, it would route nowhere.
pub(super) fn check_external_name(ingress: &IngressInfo, classes: &[IngressClass]) -> Result<(), ConvertError> {
    let (field, class) = match &ingress.class {
        Some((field, class)) => (field.clone(), class.clone()),
        None => match classes.iter().find(|c| c.default) {
            Some(default) => ("spec.ingressClassName".to_string(), default.name.clone()),
            None => return Ok(()),
        },
    };
    let controller = classes.iter().find(|c| c.name == class).and_then(|c| c.controller.clone());
    let refused = NO_EXTERNAL_NAME_CLASSES.contains(&class.as_str())
        || controller.as_deref().is_some_and(|c| NO_EXTERNAL_NAME_CONTROLLERS.contains(&c));
    if !refused {
        return Ok(());
    }
    let unset = if ingress.class.is_none() { " (unset: the default IngressClass)" } else { "" };
    Err(ingress.doc.error(
        field,
        format!(
            "{class:?}{unset}: the GCE ingress controller (k8s.io/ingress-gce) routes only to Services with node ports \
             or network endpoint groups, not to the ExternalName Service {SERVICE_NAME} that --activator points this \
             Ingress at; serve the app's hosts through a controller that takes ExternalName backends (ingress-nginx, \
             Traefik with allowExternalNameServices) or convert without --activator"
        ),
    ))
}
