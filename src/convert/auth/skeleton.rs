//! The spinscale side of the converted credentials, as YAML a user can apply: the connections for
//! spinscale's config, then a strategic-merge patch of spinscale's Deployment that mounts their
//! files (a projected volume per connection, from the same Secrets and keys KEDA read).

use serde_yaml_ng::{Mapping, Value};

use super::kafka::KafkaConnection;
use super::prometheus::{Platform, PrometheusConnection};
use super::{Connection, Connections, Entry, FileRef, MOUNT_ROOT, Mount, path};

/// The pod label Azure Workload Identity's webhook looks for.
const AZURE_LABEL: &str = "azure.workload.identity/use";

/// Both documents, or `None` when no converted trigger names a connection. `namespace`: where
/// spinscale runs (its Secrets must be there).
pub(crate) fn render(connections: &Connections, namespace: &str) -> Option<String> {
    if connections.entries.is_empty() {
        return None;
    }
    let mut out = String::new();
    out.push_str(
        "# spinscale convert: spinscale's side of the converted credentials. KEDA does not pass\n\
         # TriggerAuthentications to external scalers (keda#2571), so spinscale reads the same\n\
         # credentials as files. 1. Add these connections to spinscale's config (the file of\n\
         # `spinscale serve --config`, or its ConfigMap; Helm: config.prometheusConnections and\n\
         # config.kafkaConnections).\n",
    );
    let section = |out: &mut String, title: &str, of_prometheus: bool| {
        let entries: Vec<&Entry> = connections
            .entries
            .iter()
            .filter(|e| matches!(e.connection, Connection::Prometheus(_)) == of_prometheus)
            .collect();
        if entries.is_empty() {
            return;
        }
        out.push_str(title);
        out.push_str(":\n");
        for entry in entries {
            out.push_str(&format!("  {}:\n", scalar(&entry.name)));
            let summary = match &entry.connection {
                Connection::Prometheus(c) => &c.summary,
                Connection::Kafka(c) => &c.summary,
            };
            out.push_str(&format!("    # from {} ({summary}), for {}\n", entry.origin, entry.users.join(", ")));
            scope(out, entry);
            match &entry.connection {
                Connection::Prometheus(c) => prometheus(out, &entry.name, c),
                Connection::Kafka(c) => kafka(out, &entry.name, c),
            }
        }
    };
    section(&mut out, "prometheusConnections", true);
    section(&mut out, "kafkaConnections", false);
    if let Some(patch) = deployment_patch(connections, namespace) {
        out.push_str("---\n");
        out.push_str(&patch);
    }
    Some(out)
}

/// Where the connection may be used: the triggers' addresses, and the namespace their
/// TriggerAuthentication served (a ClusterTriggerAuthentication served any).
fn scope(out: &mut String, entry: &Entry) {
    let (field, what) = match entry.connection {
        Connection::Prometheus(_) => ("addresses", "the triggers' serverAddress"),
        Connection::Kafka(_) => ("bootstrapServers", "the triggers' brokers"),
    };
    let from = match &entry.namespace {
        Some(namespace) => format!("from namespace {namespace}, as its TriggerAuthentication in KEDA"),
        None => "from any namespace, as a ClusterTriggerAuthentication (`namespaces:` narrows it)".to_string(),
    };
    out.push_str(&format!("    # where it may be used: {what}, {from}\n"));
    if entry.addresses.is_empty() {
        out.push_str(&format!("    {field}: []   # the trigger gave none: list where it may be used\n"));
    } else {
        out.push_str(&format!("    {field}:\n"));
        for address in &entry.addresses {
            out.push_str(&format!("    - {}\n", scalar(address)));
        }
    }
    if let Some(namespace) = &entry.namespace {
        out.push_str(&format!("    namespaces:\n    - {}\n", scalar(namespace)));
    }
}

fn prometheus(out: &mut String, name: &str, c: &PrometheusConnection) {
    let file = |f: &FileRef| scalar(&path(name, f));
    match &c.platform {
        Some(Platform::Azure { identity_id }) => {
            out.push_str(
                "    # Azure Monitor takes an Entra ID access token for https://prometheus.monitor.azure.com.\n    \
                 # A sidecar using Azure Workload Identity must write it to this file and keep it fresh\n    \
                 # (the workload identity's projected ServiceAccount token is not that token).\n",
            );
            if let Some(id) = identity_id {
                out.push_str(&format!(
                    "    # KEDA's identity: client ID {id}; annotate spinscale's ServiceAccount with\n    \
                     # azure.workload.identity/client-id set to it (or to an identity of its own).\n"
                ));
            }
            out.push_str(&format!("    bearerTokenFile: {MOUNT_ROOT}/{name}/token\n"));
        }
        Some(Platform::Gcp) => out.push_str(&format!(
            "    # Google Managed Prometheus takes a Google OAuth access token. A sidecar using GKE Workload\n    \
             # Identity (spinscale's ServiceAccount annotated iam.gke.io/gcp-service-account, with\n    \
             # roles/monitoring.viewer) must write it to this file and keep it fresh.\n    \
             bearerTokenFile: {MOUNT_ROOT}/{name}/token\n"
        )),
        None => {}
    }
    if let Some(token) = &c.bearer_token {
        out.push_str(&format!("    bearerTokenFile: {}\n", file(token)));
    }
    if let (Some(username), Some(password)) = (&c.username, &c.password) {
        out.push_str(&format!(
            "    basicAuth:\n      usernameFile: {}\n      passwordFile: {}\n",
            file(username),
            file(password)
        ));
    }
    let tls: Vec<(&str, &FileRef)> = [("caFile", &c.ca), ("certFile", &c.cert), ("keyFile", &c.key)]
        .into_iter()
        .filter_map(|(k, f)| Some((k, f.as_ref()?)))
        .collect();
    if !tls.is_empty() {
        out.push_str("    tls:\n");
        for (key, f) in tls {
            out.push_str(&format!("      {key}: {}\n", file(f)));
        }
    }
    if !c.headers.is_empty() {
        out.push_str("    headers:\n");
        for (header, f) in &c.headers {
            out.push_str(&format!("      {}:\n        valueFile: {}\n", scalar(header), file(f)));
        }
    }
    if let Some(sigv4) = &c.sigv4 {
        out.push_str(
            "    # SigV4 with credentials from the standard AWS chain: give spinscale's ServiceAccount an IAM\n    \
             # role allowed aps:QueryMetrics (IRSA annotation eks.amazonaws.com/role-arn, or an EKS Pod\n    \
             # Identity association).\n",
        );
        if sigv4.workload_identity {
            out.push_str(
                "    # KEDA signed with the app's own identity (identityOwner: workload): spinscale's role needs\n    \
                 # the same access.\n",
            );
        }
        out.push_str(&format!("    sigv4:\n      region: {}\n      service: aps\n", scalar(&sigv4.region)));
        if let Some(arn) = &sigv4.role_arn {
            out.push_str(&format!("      roleArn: {}\n", scalar(arn)));
        }
    }
}

fn kafka(out: &mut String, name: &str, c: &KafkaConnection) {
    out.push_str(&format!("    securityProtocol: {}\n", c.security_protocol));
    if let Some(mechanism) = c.sasl_mechanism {
        out.push_str(&format!("    saslMechanism: {mechanism}\n"));
    }
    for (key, f) in [
        ("usernameFile", &c.username),
        ("passwordFile", &c.password),
        ("caFile", &c.ca),
        ("certFile", &c.cert),
        ("keyFile", &c.key),
    ] {
        if let Some(f) = f {
            out.push_str(&format!("    {key}: {}\n", scalar(&path(name, f))));
        }
    }
}

fn deployment_patch(connections: &Connections, namespace: &str) -> Option<String> {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut copies: Vec<(&Mount, Vec<&str>)> = Vec::new();
    let mut sidecars = Vec::new();
    let mut azure = false;
    for entry in &connections.entries {
        let volume = format!("conn-{}", entry.name);
        let platform = match &entry.connection {
            Connection::Prometheus(c) => c.platform.as_ref(),
            Connection::Kafka(_) => None,
        };
        let files = entry.connection.files();
        let source = match platform {
            Some(platform) => {
                azure |= matches!(platform, Platform::Azure { .. });
                sidecars.push(entry.name.as_str());
                map(&[("emptyDir", map(&[("medium", "Memory".into())]))])
            }
            None if files.is_empty() => continue,
            None => map(&[("projected", map(&[("sources", Value::Sequence(projected_sources(&files)))]))]),
        };
        for f in files {
            match copies.iter_mut().find(|(m, _)| same_object(m, &f.from)) {
                Some((_, keys)) if !keys.contains(&f.from.key.as_str()) => keys.push(&f.from.key),
                Some(_) => {}
                None => copies.push((&f.from, vec![&f.from.key])),
            }
        }
        let mut v = map(&[("name", volume.clone().into())]);
        if let (Value::Mapping(v), Value::Mapping(source)) = (&mut v, source) {
            v.extend(source);
        }
        volumes.push(v);
        mounts.push(map(&[
            ("name", volume.into()),
            ("mountPath", format!("{MOUNT_ROOT}/{}", entry.name).into()),
            ("readOnly", true.into()),
        ]));
    }
    if volumes.is_empty() {
        return None;
    }
    let mut comment = format!(
        "# 2. Mount the connections' files into spinscale's Deployment (a strategic-merge patch):\n\
         #      kubectl -n {namespace} patch deployment spinscale --patch-file FILE\n\
         #    (kustomize: list it under `patches`; Helm: the same volumes as extraVolumes and\n\
         #    extraVolumeMounts).\n"
    );
    if !copies.is_empty() {
        comment.push_str(&format!(
            "# Secrets and ConfigMaps mount only in their own namespace: create these in namespace {namespace},\n\
             # same names and keys:\n"
        ));
        for (m, keys) in &copies {
            let kind = if m.config_map { "ConfigMap" } else { "Secret" };
            let from = m
                .namespace
                .as_ref()
                .map_or("KEDA's namespace (keda by default)".to_string(), |ns| format!("namespace {ns}"));
            comment.push_str(&format!("#   {kind} {} (now in {from}): {}\n", m.name, keys.join(", ")));
        }
    }
    if !sidecars.is_empty() {
        comment.push_str(&format!(
            "# The token file of {} is written by a sidecar you add to the pod, with the same\n\
             # volume mounted (see the connection's comment above).\n",
            sidecars.join(", ")
        ));
    }
    let container = map(&[("name", "spinscale".into()), ("volumeMounts", Value::Sequence(mounts))]);
    let mut pod = Mapping::new();
    pod.insert("containers".into(), Value::Sequence(vec![container]));
    pod.insert("volumes".into(), Value::Sequence(volumes));
    let mut template = Mapping::new();
    if azure {
        template.insert("metadata".into(), map(&[("labels", map(&[(AZURE_LABEL, "true".into())]))]));
    }
    template.insert("spec".into(), Value::Mapping(pod));
    let patch = map(&[("spec", map(&[("template", Value::Mapping(template))]))]);
    let body = serde_yaml_ng::to_string(&patch).ok()?;
    Some(comment + &body)
}

fn same_object(a: &Mount, b: &Mount) -> bool {
    (a.config_map, &a.namespace, &a.name) == (b.config_map, &b.namespace, &b.name)
}

/// One projected source per Secret or ConfigMap, each with its keys as the connection's files.
fn projected_sources(files: &[&FileRef]) -> Vec<Value> {
    let mut sources: Vec<(&Mount, Vec<Value>)> = Vec::new();
    for f in files {
        let item = map(&[("key", f.from.key.clone().into()), ("path", f.file.into())]);
        match sources.iter_mut().find(|(m, _)| same_object(m, &f.from)) {
            Some((_, items)) => items.push(item),
            None => sources.push((&f.from, vec![item])),
        }
    }
    sources
        .into_iter()
        .map(|(m, items)| {
            let kind = if m.config_map { "configMap" } else { "secret" };
            map(&[(kind, map(&[("name", m.name.clone().into()), ("items", Value::Sequence(items))]))])
        })
        .collect()
}

fn map(pairs: &[(&str, Value)]) -> Value {
    Value::Mapping(pairs.iter().map(|(k, v)| (Value::from(*k), v.clone())).collect())
}

/// A string as a YAML scalar, quoted when it needs to be.
fn scalar(text: &str) -> String {
    serde_yaml_ng::to_string(&Value::from(text)).map_or_else(|_| format!("{text:?}"), |s| s.trim_end().to_string())
}
