//! `convert --activator`: an HTTP app that an Ingress of the input routes to, through its Service,
//! gets spinscale's activator in front of it.
//!
//! - The Ingress's backend becomes the Service `spinscale-activator`, an ExternalName Service
//!   added in the Ingress's namespace (an Ingress can only name a Service of its own namespace)
//!   that stands for the deploy kit's `spinscale-activator` Service.
//! - The app's ScaledObject trigger gains the route: `hosts` (the rules' hosts), `pathPrefixes`
//!   (their paths, unless just `/`) and `backend` (the Service the Ingress pointed at).
//! - A SpinApp without a ScaledObject gets one whose trigger is just the route.
//!
//! [`plan`] reads the whole input first; [`super::convert`] then applies the plan document by
//! document, [`super::keda`] writing the route into triggers.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_yaml_ng::{Mapping, Value};

mod added;
mod ingress;

use super::{ConvertError, DocRef, Document, ObjectKey, Options, Outcome, keda, object_key, spinkube, str_at};
use added::{external_name_service, new_scaled_object};
use ingress::{INGRESS_API, IngressInfo, IngressPath, Port, ingress_label, read_ingress, show_port};
use spinscale_activator::{covers, normalize_prefix};
use spinscale_core::spec as target;

/// The Service an Ingress points at for the activator: the deploy kit's, and the ExternalName
/// Service standing for it in an app's namespace.
pub(crate) const SERVICE_NAME: &str = "spinscale-activator";
/// The port of both.
pub(crate) const SERVICE_PORT: i64 = 80;
/// A new ScaledObject's `maxReplicaCount` and `cooldownPeriod`.
const MAX_REPLICAS: i64 = 10;
const COOLDOWN: i64 = 30;
/// The port name and number of the Service the Spin operator creates for a SpinApp (docs/keda.md §8).
const SPIN_SERVICE_PORT: (&str, i64) = ("http-app", 80);
const APP_NAME_LABEL: &str = "app-name";

/// The activator keys one trigger gains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RouteKeys {
    pub hosts: Vec<String>,
    /// Empty when the app has every path (`/`).
    pub path_prefixes: Vec<String>,
    /// `http://SERVICE.NAMESPACE.svc:PORT`.
    pub backend: String,
    /// Where the route comes from, e.g. `Ingress api`.
    pub via: String,
}

impl RouteKeys {
    /// The metadata keys and values, in the order they are written.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![(target::HOSTS, self.hosts.join(","))];
        if !self.path_prefixes.is_empty() {
            pairs.push((target::PATH_PREFIXES, self.path_prefixes.join(",")));
        }
        pairs.push((target::BACKEND, self.backend.clone()));
        pairs
    }

    /// The note for `what` (a trigger) gaining these keys.
    pub fn note(&self, what: &str) -> String {
        let keys: Vec<String> = self.pairs().iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!(
            "{what}: {} added from {}: spinscale's activator, which the Ingress now points at, holds requests while \
             the app is at zero, wakes it at once and counts every request (the app's request rate, exactly)",
            keys.join(", "),
            self.via
        )
    }
}

/// What `--activator` changes and adds, by input document index.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// ScaledObject → the route its trigger gains.
    pub routes: HashMap<usize, RouteKeys>,
    /// Ingress → the backends pointed at the activator.
    pub ingresses: HashMap<usize, Vec<Repoint>>,
    /// Documents written after the input document of that index.
    pub added: BTreeMap<usize, Vec<Added>>,
    /// SpinApps that get a ScaledObject, or have one through their Deployment (so they are autoscaled).
    pub scaled_apps: Vec<ObjectKey>,
    /// Further notes on input documents.
    pub notes: HashMap<usize, Vec<String>>,
}

/// One Ingress path whose backend becomes the activator.
#[derive(Debug)]
pub(crate) struct Repoint {
    rule: usize,
    path: usize,
    note: String,
}

/// A document the conversion adds.
#[derive(Debug)]
pub(crate) struct Added {
    pub label: String,
    pub notes: Vec<String>,
    pub value: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AppKind {
    SpinApp,
    /// A Deployment written in the input: its pod labels are known.
    Deployment,
    /// A Deployment a ScaledObject scales but the input does not hold: assumed served by the
    /// Service of its name.
    Unseen,
}

/// A scale target that may serve HTTP.
#[derive(Debug)]
struct App {
    /// The Deployment's namespace and name (a SpinApp's Deployment has the SpinApp's name).
    key: ObjectKey,
    kind: AppKind,
    pod_labels: BTreeMap<String, String>,
    scaled_object: Option<usize>,
    spin_app: Option<usize>,
    replicas: Option<i64>,
}

impl App {
    fn describe(&self) -> String {
        match self.kind {
            AppKind::SpinApp => format!("SpinApp {}", self.key.name),
            AppKind::Deployment | AppKind::Unseen => format!("Deployment {}", self.key.name),
        }
    }
}

#[derive(Debug)]
struct ServiceInfo {
    key: ObjectKey,
    selector: BTreeMap<String, String>,
    ports: Vec<(Option<String>, i64)>,
}

/// An Ingress path that reaches an app, resolved to the app's Service and port.
struct Claim<'a> {
    ingress: &'a IngressInfo,
    path: &'a IngressPath,
    port: i64,
}

/// Reads the input and decides every change `--activator` makes. Refuses, naming the Ingress field,
/// what the activator cannot express: a rule without a host, one app reached through two
/// backends, hosts with different paths for one app, one host and prefix for two apps.
pub(crate) fn plan(docs: &[Document], options: &Options) -> Result<Plan, ConvertError> {
    let mut plan = Plan::default();
    let objects: Vec<(usize, &Mapping, &DocRef)> =
        docs.iter().enumerate().filter_map(|(i, d)| Some((i, d.value.as_mapping()?, &d.doc))).collect();

    let classes: Vec<ingress::IngressClass> =
        objects.iter().filter_map(|(_, o, _)| ingress::ingress_class(o)).collect();
    let services: Vec<ServiceInfo> =
        objects.iter().filter(|(_, o, _)| is_core(o, "Service")).filter_map(|(_, o, _)| service_info(o)).collect();
    let mut ingresses = Vec::new();
    for &(index, object, doc) in &objects {
        if str_at(object, "kind") != Some("Ingress") {
            continue;
        }
        match str_at(object, "apiVersion") {
            Some(INGRESS_API) => {
                let paths = read_ingress(object, doc)?;
                let key = object_key(object).unwrap_or(ObjectKey { namespace: None, name: String::new() });
                let class = ingress::class_of(object);
                ingresses.push(IngressInfo { index, doc: doc.clone(), key, paths, class });
                if let Some(service) =
                    object.get("spec").and_then(|s| s.get("defaultBackend")).and_then(|b| b.get("service"))
                    && service.get("name").and_then(Value::as_str) != Some(SERVICE_NAME)
                {
                    plan.notes.entry(index).or_default().push(
                        "spec.defaultBackend: left as written: the activator routes by host and path, which a default \
                         backend has neither of"
                            .into(),
                    );
                }
            }
            other => plan.notes.entry(index).or_default().push(format!(
                "apiVersion {}: --activator reads {INGRESS_API} Ingresses only (the older APIs were removed in \
                 Kubernetes 1.22); left as written",
                other.unwrap_or("missing")
            )),
        }
    }

    let apps = read_apps(&objects);
    // A ScaledObject that already targets a SpinApp's Deployment scales the SpinApp too.
    plan.scaled_apps
        .extend(apps.iter().filter(|a| a.kind == AppKind::SpinApp && a.scaled_object.is_some()).map(|a| a.key.clone()));
    let mut claimed: HashSet<(usize, usize, usize)> = HashSet::new();
    // (host, prefix) → the app and Ingress field that route it, across apps.
    let mut taken: HashMap<(String, String), (String, String)> = HashMap::new();
    let mut external_names: Vec<(Option<String>, usize)> = Vec::new();
    for app in apps.iter().filter(|a| a.scaled_object.is_some() || a.kind == AppKind::SpinApp) {
        let mut claims = Vec::new();
        for ingress in &ingresses {
            for path in &ingress.paths {
                if claimed.contains(&(ingress.index, path.rule, path.path)) {
                    continue;
                }
                let Some(written) = app_service(app, ingress.key.namespace.as_ref(), &path.service, &services) else {
                    continue;
                };
                let port = resolve_port(path, written, app, &ingress.doc)?;
                claims.push(Claim { ingress, path, port });
            }
        }
        if claims.is_empty() {
            continue;
        }
        for c in &claims {
            claimed.insert((c.ingress.index, c.path.rule, c.path.path));
            ingress::check_external_name(c.ingress, &classes)?;
        }
        let (keys, namespace_note) = route_of(app, &claims, &mut plan)?;
        for host in &keys.hosts {
            let prefixes =
                if keys.path_prefixes.is_empty() { vec!["/".to_string()] } else { keys.path_prefixes.clone() };
            for prefix in prefixes {
                let on_host = |c: &&Claim<'_>| c.path.host.as_deref().is_some_and(|h| h.eq_ignore_ascii_case(host));
                let claim = claims
                    .iter()
                    .filter(on_host)
                    .find(|c| normalize_prefix(&c.path.prefix) == prefix)
                    .or_else(|| claims.iter().find(on_host))
                    .unwrap_or(&claims[0]);
                let here = format!("{} of {}", claim.path.field(), ingress_label(claim.ingress));
                match taken.get(&(host.to_lowercase(), prefix.clone())) {
                    Some((other, there)) => {
                        return Err(claim.ingress.doc.error(
                            format!("spec.rules[{}].host", claim.path.rule),
                            format!(
                                "host {host} path prefix {prefix} goes to {} here and to {other} through {there}: the \
                                 activator sends one host and prefix to one app",
                                app.describe()
                            ),
                        ));
                    }
                    None => {
                        taken.insert((host.to_lowercase(), prefix), (app.describe(), here));
                    }
                }
            }
        }

        for c in &claims {
            plan.ingresses.entry(c.ingress.index).or_default().push(Repoint {
                rule: c.path.rule,
                path: c.path.path,
                note: format!(
                    "{}.backend: Service {} port {} → Service {SERVICE_NAME} port {SERVICE_PORT}: spinscale's \
                     activator (the ExternalName Service of that name stands for it in this namespace) holds requests \
                     for {} while it is at zero and forwards them to {}",
                    c.path.field(),
                    c.path.service,
                    show_port(&c.path.port),
                    app.describe(),
                    keys.backend
                ),
            });
            if !external_names.iter().any(|(ns, _)| ns == &c.ingress.key.namespace) {
                external_names.push((c.ingress.key.namespace.clone(), c.ingress.index));
            }
        }
        if let Some(note) = namespace_note {
            plan.notes.entry(claims[0].ingress.index).or_default().push(note);
        }
        if app.kind == AppKind::Unseen {
            plan.notes.entry(claims[0].ingress.index).or_default().push(format!(
                "Deployment {0} is not in this input: Service {0} is taken to be its Service (the same name)",
                app.key.name
            ));
        }
        match (app.scaled_object, app.spin_app) {
            (Some(so), _) => {
                plan.routes.insert(so, keys);
            }
            (None, Some(spin_app)) => {
                let added = new_scaled_object(app, &keys, options)?;
                plan.added.entry(spin_app).or_default().push(added);
                plan.scaled_apps.push(app.key.clone());
            }
            (None, None) => {}
        }
    }

    for (namespace, after) in external_names {
        let key = ObjectKey { namespace: namespace.clone(), name: SERVICE_NAME.into() };
        if services.iter().any(|s| s.key.matches(&key)) {
            continue;
        }
        let for_ingress = ingresses.iter().find(|i| i.index == after).map(ingress_label).unwrap_or_default();
        plan.added.entry(after).or_default().push(external_name_service(namespace, &for_ingress, options));
    }

    for ingress in &ingresses {
        for path in &ingress.paths {
            if path.service != SERVICE_NAME && !claimed.contains(&(ingress.index, path.rule, path.path)) {
                plan.notes.entry(ingress.index).or_default().push(format!(
                    "{}: Service {} is not the Service of a SpinApp or of a scaled Deployment in this input; left as \
                     written",
                    path.field(),
                    path.service
                ));
            }
        }
    }
    Ok(plan)
}

/// Points the planned backends of one Ingress at the activator.
pub(crate) fn repoint_ingress(
    object: &mut Mapping,
    doc: &DocRef,
    repoints: &[Repoint],
    outcome: &mut Outcome,
) -> Result<(), ConvertError> {
    for r in repoints {
        let field = format!("spec.rules[{}].http.paths[{}].backend.service", r.rule, r.path);
        let service = object
            .get_mut("spec")
            .and_then(|s| s.get_mut("rules"))
            .and_then(|rules| rules.get_mut(r.rule))
            .and_then(|rule| rule.get_mut("http"))
            .and_then(|http| http.get_mut("paths"))
            .and_then(|paths| paths.get_mut(r.path))
            .and_then(|path| path.get_mut("backend"))
            .and_then(|backend| backend.get_mut("service"))
            .and_then(Value::as_mapping_mut)
            .ok_or_else(|| doc.error(&field, "is not a mapping"))?;
        service.insert("name".into(), SERVICE_NAME.into());
        let mut port = Mapping::new();
        port.insert("number".into(), SERVICE_PORT.into());
        service.insert("port".into(), Value::Mapping(port));
        outcome.notes.push(r.note.clone());
        outcome.changed = true;
    }
    Ok(())
}

fn is_core(object: &Mapping, kind: &str) -> bool {
    str_at(object, "apiVersion") == Some("v1") && str_at(object, "kind") == Some(kind)
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_mapping)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// Labels of the old SpinKube group read as the current group's, as the conversion rewrites them.
fn current_labels(labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().map(|(k, v)| (spinkube::current_group(&k).unwrap_or(k), v)).collect()
}

fn service_info(object: &Mapping) -> Option<ServiceInfo> {
    let spec = object.get("spec");
    let ports = spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_sequence)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    Some((p.get("name").and_then(Value::as_str).map(String::from), p.get("port")?.as_i64()?))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ServiceInfo {
        key: object_key(object)?,
        selector: current_labels(string_map(spec.and_then(|s| s.get("selector")))),
        ports,
    })
}

/// SpinApps and Deployments of the input, and the Deployments ScaledObjects scale that it lacks.
fn read_apps(objects: &[(usize, &Mapping, &DocRef)]) -> Vec<App> {
    let mut apps = Vec::new();
    for &(index, object, _) in objects {
        let Some(key) = object_key(object) else { continue };
        let spec = object.get("spec");
        if spinkube::is_spin_app(object) {
            let mut pod_labels = current_labels(string_map(spec.and_then(|s| s.get("podLabels"))));
            pod_labels.insert(format!("{}/{APP_NAME_LABEL}", spinkube::GROUP), key.name.clone());
            let replicas = spec.and_then(|s| s.get("replicas")).and_then(Value::as_i64);
            apps.push(App {
                key,
                kind: AppKind::SpinApp,
                pod_labels,
                scaled_object: None,
                spin_app: Some(index),
                replicas,
            });
        } else if str_at(object, "apiVersion") == Some("apps/v1") && str_at(object, "kind") == Some("Deployment") {
            let labels =
                spec.and_then(|s| s.get("template")).and_then(|t| t.get("metadata")).and_then(|m| m.get("labels"));
            apps.push(App {
                key,
                kind: AppKind::Deployment,
                pod_labels: string_map(labels),
                scaled_object: None,
                spin_app: None,
                replicas: None,
            });
        }
    }
    for &(index, object, _) in objects {
        if !keda::is_scaled_object(object) {
            continue;
        }
        let Some(target) = object.get("spec").and_then(|s| s.get("scaleTargetRef")) else { continue };
        // KEDA's default target kind is an apps/v1 Deployment.
        let kind = target.get("kind").and_then(Value::as_str).unwrap_or("Deployment");
        let Some(name) = target.get("name").and_then(Value::as_str) else { continue };
        if !matches!(kind, "SpinApp" | "Deployment") {
            continue;
        }
        let namespace = object.get("metadata").and_then(|m| m.get("namespace")).and_then(Value::as_str);
        let key = ObjectKey { namespace: namespace.map(String::from), name: name.to_string() };
        match apps.iter_mut().find(|a| a.key.matches(&key)) {
            Some(app) if app.scaled_object.is_none() => app.scaled_object = Some(index),
            Some(_) => {}
            None => apps.push(App {
                kind: if kind == "SpinApp" { AppKind::SpinApp } else { AppKind::Unseen },
                pod_labels: if kind == "SpinApp" {
                    BTreeMap::from([(format!("{}/{APP_NAME_LABEL}", spinkube::GROUP), name.to_string())])
                } else {
                    BTreeMap::new()
                },
                key,
                scaled_object: Some(index),
                spin_app: None,
                replicas: None,
            }),
        }
    }
    apps
}

/// Whether the Service `name` in `namespace` leads to `app`: `Some(written)` if so, with the
/// Service as written in the input when it is there.
fn app_service<'a>(
    app: &App,
    namespace: Option<&String>,
    name: &str,
    services: &'a [ServiceInfo],
) -> Option<Option<&'a ServiceInfo>> {
    let key = ObjectKey { namespace: namespace.cloned(), name: name.to_string() };
    let same_namespace = ObjectKey { namespace: app.key.namespace.clone(), name: name.to_string() }.matches(&key);
    if !same_namespace {
        return None;
    }
    // The Spin operator creates a Service named after the SpinApp; an unseen Deployment is taken
    // to be served by the Service of its name, as is usual.
    let by_name = matches!(app.kind, AppKind::SpinApp | AppKind::Unseen) && name == app.key.name;
    match services.iter().find(|s| s.key.matches(&key)) {
        Some(s) => {
            let selects = !s.selector.is_empty()
                && !app.pod_labels.is_empty()
                && s.selector.iter().all(|(k, v)| app.pod_labels.get(k) == Some(v));
            (selects || by_name).then_some(Some(s))
        }
        None => by_name.then_some(None),
    }
}

fn resolve_port(
    path: &IngressPath,
    written: Option<&ServiceInfo>,
    app: &App,
    doc: &DocRef,
) -> Result<i64, ConvertError> {
    let name = match &path.port {
        Port::Number(n) => return Ok(*n),
        Port::Name(name) => name,
    };
    let found = match written {
        Some(s) => s.ports.iter().find(|(n, _)| n.as_deref() == Some(name.as_str())).map(|(_, port)| *port),
        None if app.kind == AppKind::SpinApp && name == SPIN_SERVICE_PORT.0 => Some(SPIN_SERVICE_PORT.1),
        None => None,
    };
    found.ok_or_else(|| {
        doc.error(
            format!("{}.backend.service.port.name", path.field()),
            format!(
                "{name:?} is not a port of Service {} in this input: write the port number (the activator's \
                 `backend` needs it)",
                path.service
            ),
        )
    })
}

/// The route of one app from the Ingress paths that reach it, and a note if its namespace is guessed.
fn route_of(app: &App, claims: &[Claim<'_>], plan: &mut Plan) -> Result<(RouteKeys, Option<String>), ConvertError> {
    let first = &claims[0];
    for c in claims {
        if c.path.host.is_none() {
            return Err(c.ingress.doc.error(
                format!("spec.rules[{}].host", c.path.rule),
                format!(
                    "is missing: the rule sends every host to {}, and spinscale's activator routes by host; give the \
                     rule the host(s) the app is served on",
                    app.describe()
                ),
            ));
        }
        if (c.path.service.as_str(), c.port) != (first.path.service.as_str(), first.port) {
            return Err(c.ingress.doc.error(
                format!("{}.backend.service", c.path.field()),
                format!(
                    "Service {} port {} is a second way into {}, next to Service {} port {} ({} of {}): spinscale's \
                     activator forwards one app to one backend; point both paths at one Service",
                    c.path.service,
                    c.port,
                    app.describe(),
                    first.path.service,
                    first.port,
                    first.path.field(),
                    ingress_label(first.ingress)
                ),
            ));
        }
        match c.path.path_type.as_deref() {
            Some("Prefix") => {}
            Some("Exact") => plan.notes.entry(c.ingress.index).or_default().push(format!(
                "{}.pathType: Exact: the activator routes {} as a prefix; the Ingress still sends it only that exact \
                 path",
                c.path.field(),
                c.path.prefix
            )),
            other => plan.notes.entry(c.ingress.index).or_default().push(format!(
                "{}.pathType: {}: the activator routes {} as a prefix on whole segments; check that is what the \
                 controller matches",
                c.path.field(),
                other.unwrap_or("missing"),
                c.path.prefix
            )),
        }
    }

    // Every host keeps its paths, less those a shorter one covers.
    let mut by_host: Vec<(String, Vec<String>, &Claim<'_>)> = Vec::new();
    for c in claims {
        let host = c.path.host.clone().unwrap_or_default();
        let prefix = normalize_prefix(&c.path.prefix);
        match by_host.iter_mut().find(|(h, _, _)| h.eq_ignore_ascii_case(&host)) {
            Some((_, prefixes, _)) if !prefixes.contains(&prefix) => prefixes.push(prefix),
            Some(_) => {}
            None => by_host.push((host, vec![prefix], c)),
        }
    }
    for (_, prefixes, _) in &mut by_host {
        let all = prefixes.clone();
        prefixes.retain(|p| !all.iter().any(|q| q != p && covers(q, p)));
    }
    let sorted = |p: &Vec<String>| {
        let mut p = p.clone();
        p.sort();
        p
    };
    let (first_host, first_prefixes, _) = &by_host[0];
    for (host, prefixes, claim) in &by_host[1..] {
        if sorted(prefixes) != sorted(first_prefixes) {
            return Err(claim.ingress.doc.error(
                format!("spec.rules[{}].host", claim.path.rule),
                format!(
                    "{host} sends {} to {} while {first_host} sends {}: a trigger's hosts and pathPrefixes combine \
                     (every prefix on every host), so spinscale cannot route these; give the app the same paths on \
                     each of its hosts",
                    prefixes.join(","),
                    app.describe(),
                    first_prefixes.join(",")
                ),
            ));
        }
    }

    let namespace = first.ingress.key.namespace.clone().or_else(|| app.key.namespace.clone());
    let namespace_note = namespace.is_none().then(|| {
        format!(
            "no namespace written: the activator's backend for {} assumes `default` \
             (http://{}.default.svc:{}); change it if you apply these manifests elsewhere",
            app.describe(),
            first.path.service,
            first.port
        )
    });
    let namespace = namespace.unwrap_or_else(|| "default".into());
    let mut via: Vec<String> = Vec::new();
    for c in claims {
        let label = ingress_label(c.ingress);
        if !via.contains(&label) {
            via.push(label);
        }
    }
    let path_prefixes = if first_prefixes.as_slice() == ["/"] { Vec::new() } else { first_prefixes.clone() };
    let keys = RouteKeys {
        hosts: by_host.iter().map(|(h, _, _)| h.clone()).collect(),
        path_prefixes,
        backend: format!("http://{}.{namespace}.svc:{}", first.path.service, first.port),
        via: via.join(", "),
    };
    Ok((keys, namespace_note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_leave_out_path_prefixes_when_the_app_has_every_path() {
        let keys = RouteKeys {
            hosts: vec!["a.example.com".into(), "b.example.com".into()],
            path_prefixes: Vec::new(),
            backend: "http://a.default.svc:80".into(),
            via: "Ingress a".into(),
        };
        let pairs = keys.pairs();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(pairs, [("hosts", "a.example.com,b.example.com"), ("backend", "http://a.default.svc:80")]);
    }
}
