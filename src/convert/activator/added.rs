//! The documents `--activator` adds: a ScaledObject for a SpinApp that an Ingress serves and
//! nothing scales, and the ExternalName Service that stands for the activator in an Ingress's
//! namespace.

use serde_yaml_ng::{Mapping, Value};

use super::super::{ConvertError, DocRef, Options, keda, triggers};
use super::{Added, App, COOLDOWN, MAX_REPLICAS, RouteKeys, SERVICE_NAME, SERVICE_PORT};

fn metadata_of(namespace: Option<&String>, name: &str) -> Value {
    let mut metadata = Mapping::new();
    metadata.insert("name".into(), name.into());
    if let Some(ns) = namespace {
        metadata.insert("namespace".into(), ns.clone().into());
    }
    Value::Mapping(metadata)
}

/// A ScaledObject for a SpinApp that an Ingress serves and nothing scales.
pub(super) fn new_scaled_object(app: &App, keys: &RouteKeys, options: &Options) -> Result<Added, ConvertError> {
    let name = format!("{}-scaler", app.key.name);
    let label = format!("new ScaledObject {name} (for SpinApp {})", app.key.name);
    let doc = DocRef { label: label.clone() };
    let mut notes = vec![format!(
        "added by --activator: {} routes {} to SpinApp {}, which no ScaledObject in this input scales; this one \
         scales its Deployment (apps/v1, same name: a SpinApp has no /scale subresource) from zero, woken by \
         spinscale's activator",
        keys.via,
        keys.hosts.join(","),
        app.key.name
    )];
    let max = app.replicas.map_or(MAX_REPLICAS, |r| r.max(MAX_REPLICAS));
    notes.push(format!(
        "minReplicaCount 0, maxReplicaCount {max}, cooldownPeriod {COOLDOWN}: convert's defaults{}; adjust them",
        if max > MAX_REPLICAS { " (maxReplicaCount: the SpinApp's replicas)" } else { "" }
    ));
    let trigger = keda::route_trigger(keys, options, &doc, &mut notes)?;
    notes.push(keys.note(&format!("spec.triggers[0] ({})", triggers::PUSH_TYPE)));

    let mut target = Mapping::new();
    target.insert("apiVersion".into(), "apps/v1".into());
    target.insert("kind".into(), "Deployment".into());
    target.insert("name".into(), app.key.name.clone().into());
    let mut spec = Mapping::new();
    spec.insert("scaleTargetRef".into(), Value::Mapping(target));
    spec.insert("minReplicaCount".into(), 0.into());
    spec.insert("maxReplicaCount".into(), max.into());
    spec.insert("cooldownPeriod".into(), COOLDOWN.into());
    spec.insert("triggers".into(), Value::Sequence(vec![trigger]));
    let mut object = Mapping::new();
    object.insert("apiVersion".into(), "keda.sh/v1alpha1".into());
    object.insert("kind".into(), "ScaledObject".into());
    object.insert("metadata".into(), metadata_of(app.key.namespace.as_ref(), &name));
    object.insert("spec".into(), Value::Mapping(spec));
    Ok(Added { label, notes, value: Value::Mapping(object) })
}

/// Where the deploy kit's `spinscale-activator` Service is: next to the Service in `scalerAddress`
/// when that is a cluster Service name, else in namespace `spinscale`.
fn activator_host(scaler_address: &str) -> (String, bool) {
    let host = scaler_address.rsplit_once(':').map_or(scaler_address, |(host, _)| host);
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [_, namespace, "svc", domain @ ..] => {
            // An ExternalName is a DNS CNAME: it needs the full name, cluster domain included.
            let domain = if domain.is_empty() { "cluster.local".to_string() } else { domain.join(".") };
            (format!("{SERVICE_NAME}.{namespace}.svc.{domain}"), true)
        }
        _ => (format!("{SERVICE_NAME}.spinscale.svc.cluster.local"), false),
    }
}

pub(super) fn external_name_service(namespace: Option<String>, for_ingress: &str, options: &Options) -> Added {
    let (external_name, derived) = activator_host(&options.scaler_address);
    let mut notes = vec![format!(
        "added by --activator for {for_ingress}: an Ingress can only name a Service of its own namespace, so this \
         ExternalName Service stands for spinscale's activator ({external_name}, port {SERVICE_PORT}); the ingress \
         controller must accept ExternalName backends (ingress-nginx does; Traefik needs allowExternalNameServices) \
         and pass on the client's Host, which the activator routes by"
    )];
    if !derived {
        notes.push(format!(
            "--scaler-address {} is not a cluster Service name (NAME.NAMESPACE.svc...): assumed the deploy kit's \
             namespace, spinscale",
            options.scaler_address
        ));
    }
    let mut port = Mapping::new();
    port.insert("name".into(), "http".into());
    port.insert("port".into(), SERVICE_PORT.into());
    let mut spec = Mapping::new();
    spec.insert("type".into(), "ExternalName".into());
    spec.insert("externalName".into(), external_name.into());
    spec.insert("ports".into(), Value::Sequence(vec![Value::Mapping(port)]));
    let mut object = Mapping::new();
    object.insert("apiVersion".into(), "v1".into());
    object.insert("kind".into(), "Service".into());
    object.insert("metadata".into(), metadata_of(namespace.as_ref(), SERVICE_NAME));
    object.insert("spec".into(), Value::Mapping(spec));
    Added { label: format!("new Service {SERVICE_NAME} (for {for_ingress})"), notes, value: Value::Mapping(object) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_activator_service_is_found_next_to_the_scaler_service() {
        assert_eq!(
            activator_host("spinscale.spinscale.svc.cluster.local:9500"),
            ("spinscale-activator.spinscale.svc.cluster.local".to_string(), true)
        );
        assert_eq!(
            activator_host("spinscale.keda.svc:9500"),
            ("spinscale-activator.keda.svc.cluster.local".into(), true)
        );
        assert_eq!(activator_host("10.0.0.7:9500"), ("spinscale-activator.spinscale.svc.cluster.local".into(), false));
    }
}
