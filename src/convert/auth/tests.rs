use std::collections::BTreeMap;

use super::super::assemble;
use super::*;

fn index(yaml: &str) -> Index {
    let (docs, _) = assemble::read(yaml).expect("test YAML");
    Index::read(&docs)
}

fn doc() -> DocRef {
    DocRef { label: "document 9 (ScaledObject so, line 1)".into() }
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Resolves a trigger of `source` with `metadata` and an `authenticationRef` to `auth` (if any).
fn resolve_with(
    yaml: &str,
    source: Source,
    metadata: &[(&str, &str)],
    auth: Option<AuthRef>,
) -> (Result<Option<Resolved>, ConvertError>, Connections) {
    let metadata = pairs(metadata);
    let view = TriggerView {
        source,
        field: "spec.triggers[0]".into(),
        metadata: &metadata,
        auth_ref: auth.as_ref(),
        namespace: Some("shop"),
        user: "ScaledObject shop/so spec.triggers[0]".into(),
    };
    let mut connections = Connections::default();
    let resolved = resolve(&view, &index(yaml), &mut connections, &doc());
    (resolved, connections)
}

fn named(name: &str) -> Option<AuthRef> {
    Some(AuthRef { name: name.into(), cluster: false })
}

const BEARER: &str = "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {name: thanos, namespace: shop}\n\
                      spec:\n  secretTargetRef:\n    - {parameter: bearerToken, name: thanos-token, key: token}\n    \
                      - {parameter: ca, name: thanos-token, key: ca.crt}\n";

#[test]
fn a_bearer_token_becomes_a_token_file_from_the_same_secret() {
    let (resolved, connections) = resolve_with(BEARER, Source::Prometheus, &[("authModes", "bearer")], named("thanos"));
    let resolved = resolved.expect("resolves").expect("a connection");
    assert_eq!(resolved.connection, Some(("prometheusConnection", "thanos".to_string())));
    assert!(resolved.consumed.contains(&"authModes"));
    let Connection::Prometheus(c) = &connections.entries[0].connection else { panic!("a Prometheus connection") };
    let token = c.bearer_token.as_ref().expect("token");
    assert_eq!(path("thanos", token), "/var/run/secrets/spinscale/thanos/token");
    let mount =
        Mount { config_map: false, namespace: Some("shop".into()), name: "thanos-token".into(), key: "token".into() };
    assert_eq!(token.from, mount);
    assert_eq!(c.ca.as_ref().map(|f| f.from.key.as_str()), Some("ca.crt"));
}

#[test]
fn the_same_trigger_authentication_twice_is_one_connection_and_another_gets_its_own_name() {
    let metadata = pairs(&[("authModes", "bearer")]);
    let reference = named("thanos");
    let view = |field: &str| TriggerView {
        source: Source::Prometheus,
        field: field.into(),
        metadata: &metadata,
        auth_ref: reference.as_ref(),
        namespace: Some("shop"),
        user: format!("ScaledObject shop/so {field}"),
    };
    let index = index(BEARER);
    let mut connections = Connections::default();
    for field in ["spec.triggers[0]", "spec.triggers[1]"] {
        resolve(&view(field), &index, &mut connections, &doc()).expect("resolves");
    }
    assert_eq!(connections.entries.len(), 1);
    assert_eq!(connections.entries[0].users.len(), 2);
    let other = Connection::Kafka(kafka::KafkaConnection {
        security_protocol: "SSL",
        sasl_mechanism: None,
        username: None,
        password: None,
        ca: None,
        cert: None,
        key: None,
        summary: String::new(),
    });
    let auth = TriggerAuth {
        label: "TriggerAuthentication kafka/thanos".into(),
        name: "thanos".into(),
        namespace: Some("kafka".into()),
        params: BTreeMap::new(),
        pod_identity: None,
    };
    let name = connections.add("thanos", other, &auth, "x".into(), vec!["kafka:9092".into()]);
    assert_eq!(name, "thanos-2");
}

#[test]
fn a_connection_is_for_its_triggers_addresses_and_its_trigger_authentications_namespace() {
    let index = index(BEARER);
    let reference = named("thanos");
    let mut connections = Connections::default();
    for (i, address) in
        ["https://thanos.shop:9091/", "https://thanos.shop:9091", "https://thanos-2.shop"].iter().enumerate()
    {
        let metadata = pairs(&[("authModes", "bearer"), ("serverAddress", address)]);
        let view = TriggerView {
            source: Source::Prometheus,
            field: format!("spec.triggers[{i}]"),
            metadata: &metadata,
            auth_ref: reference.as_ref(),
            namespace: Some("shop"),
            user: format!("ScaledObject shop/so spec.triggers[{i}]"),
        };
        resolve(&view, &index, &mut connections, &doc()).expect("resolves");
    }
    assert_eq!(connections.entries.len(), 1);
    let entry = &connections.entries[0];
    assert_eq!(entry.addresses, ["https://thanos.shop:9091", "https://thanos-2.shop"]);
    assert_eq!(entry.namespace.as_deref(), Some("shop"));
    let (_, kafka) =
        resolve_with(METHOD_1, Source::Kafka, &[("bootstrapServers", "b-0.cc:9092, b-1.cc:9092")], named("confluent"));
    assert_eq!(kafka.entries[0].addresses, ["b-0.cc:9092", "b-1.cc:9092"]);

    let skeleton = render(&connections, "spinscale").expect("a skeleton");
    assert!(
        skeleton.contains(
            "    # where it may be used: the triggers' serverAddress, from namespace shop, as its TriggerAuthentication in \
             KEDA\n    \
             addresses:\n    - https://thanos.shop:9091\n    - https://thanos-2.shop\n    namespaces:\n    - shop\n"
        ),
        "{skeleton}"
    );
    let skeleton = render(&kafka, "spinscale").expect("a skeleton");
    assert!(skeleton.contains("    bootstrapServers:\n    - b-0.cc:9092\n    - b-1.cc:9092\n"), "{skeleton}");
}

#[test]
fn credentials_over_plain_http_are_refused_and_a_ca_alone_is_not_a_secret() {
    let plain = [("authModes", "bearer"), ("serverAddress", "http://thanos.monitoring:9090")];
    let (resolved, _) = resolve_with(BEARER, Source::Prometheus, &plain, named("thanos"));
    let err = resolved.err().expect("refused");
    assert_eq!(err.field, "spec.triggers[0].metadata.serverAddress");
    assert!(
        err.message.starts_with(
            "http://thanos.monitoring:9090 is plain http, and TriggerAuthentication shop/thanos gives credentials"
        ),
        "{err}"
    );
    let (resolved, connections) = resolve_with(
        BEARER,
        Source::Prometheus,
        &[("serverAddress", "http://thanos.monitoring:9090")],
        named("thanos"),
    );
    assert!(resolved.expect("resolves").is_some_and(|r| r.connection.is_some()), "the CA alone carries over");
    assert_eq!(connections.entries[0].addresses, ["http://thanos.monitoring:9090"]);
}

const METHOD_1: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: cc, namespace: shop}\n\
                        data: {sasl: cGxhaW50ZXh0, tls: ZW5hYmxl, username: a2V5, password: c2VjcmV0}\n---\n\
                        apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {name: confluent, namespace: shop}\n\
                        spec:\n  secretTargetRef:\n    - {parameter: sasl, name: cc, key: sasl}\n    \
                        - {parameter: tls, name: cc, key: tls}\n    - {parameter: username, name: cc, key: username}\n    \
                        - {parameter: password, name: cc, key: password}\n";

#[test]
fn kafka_modes_are_read_from_the_secret_in_the_input() {
    let (resolved, connections) = resolve_with(METHOD_1, Source::Kafka, &[], named("confluent"));
    let resolved = resolved.expect("resolves").expect("a connection");
    assert_eq!(resolved.connection, Some(("kafkaConnection", "confluent".to_string())));
    let Connection::Kafka(c) = &connections.entries[0].connection else { panic!("a Kafka connection") };
    assert_eq!((c.security_protocol, c.sasl_mechanism), ("SASL_SSL", Some("PLAIN")));
    assert_eq!(c.username.as_ref().map(|f| f.file), Some("username"));
    assert!(c.ca.is_none(), "Confluent Cloud's brokers have public certificates");

    // The modes in the trigger (KEDA's Method 2) work without the Secret.
    let method_2 = METHOD_1
        .split("---\n")
        .nth(1)
        .expect("the TriggerAuthentication")
        .replace("    - {parameter: sasl, name: cc, key: sasl}\n    - {parameter: tls, name: cc, key: tls}\n", "");
    let (resolved, connections) =
        resolve_with(&method_2, Source::Kafka, &[("sasl", "scram_sha512"), ("tls", "enable")], named("confluent"));
    assert!(resolved.expect("resolves").is_some());
    let Connection::Kafka(c) = &connections.entries[0].connection else { panic!("a Kafka connection") };
    assert_eq!((c.security_protocol, c.sasl_mechanism), ("SASL_SSL", Some("SCRAM-SHA-512")));
}

#[test]
fn credentials_convert_cannot_carry_are_refused_naming_the_trigger_and_the_reference() {
    let without_secret = METHOD_1.split("---\n").nth(1).expect("the TriggerAuthentication").to_string();
    let vault = BEARER.replace(
        "  secretTargetRef:\n    - {parameter: bearerToken, name: thanos-token, key: token}\n    - {parameter: ca, name: thanos-token, key: ca.crt}\n",
        "  hashiCorpVault:\n    address: https://vault:8200\n    secrets:\n      - {parameter: bearerToken, path: secret/thanos, key: token}\n",
    );
    let identity = "apiVersion: keda.sh/v1alpha1\nkind: TriggerAuthentication\nmetadata: {name: pi, namespace: shop}\n\
                    spec:\n  podIdentity: {provider: azure}\n";
    let cases = [
        (
            without_secret.as_str(),
            Source::Kafka,
            vec![],
            "confluent",
            "comes from Secret cc, which is not in this input",
        ),
        (METHOD_1, Source::Kafka, vec![("sasl", "plaintext")], "confluent", "sasl is set in both"),
        (&vault, Source::Prometheus, vec![("authModes", "bearer")], "thanos", "comes from HashiCorp Vault"),
        (identity, Source::Prometheus, vec![], "pi", "podIdentity.provider \"azure\""),
        (identity, Source::Kafka, vec![], "pi", "no cloud identity"),
        (BEARER, Source::Prometheus, vec![("authModes", "basic")], "thanos", "no parameter username"),
        (BEARER, Source::Prometheus, vec![("authModes", "oauth")], "thanos", "authModes \"oauth\""),
        (BEARER, Source::Prometheus, vec![("authModes", "bearer")], "missing", "is not in this input"),
    ];
    for (yaml, source, metadata, name, wanted) in cases {
        let (resolved, _) = resolve_with(yaml, source, &metadata, named(name));
        let err = resolved.err().unwrap_or_else(|| panic!("{wanted}: not refused"));
        assert_eq!(err.document, doc().label);
        assert_eq!(err.field, "spec.triggers[0].authenticationRef", "{wanted}");
        assert!(err.message.contains(wanted), "{err}\nwanted: {wanted}");
    }
}

#[test]
fn cloud_identities_become_sigv4_or_a_token_file_kept_by_a_sidecar() {
    let auth = |provider: &str| {
        format!(
            "apiVersion: keda.sh/v1alpha1\nkind: ClusterTriggerAuthentication\nmetadata: {{name: cloud}}\n\
             spec:\n  podIdentity: {{provider: {provider}, roleArn: \"arn:aws:iam::123456789012:role/amp-query\"}}\n"
        )
    };
    let cluster = Some(AuthRef { name: "cloud".into(), cluster: true });
    let amp = [("serverAddress", "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1")];
    let (resolved, connections) = resolve_with(&auth("aws"), Source::Prometheus, &amp, cluster.clone());
    assert!(resolved.expect("resolves").is_some());
    let Connection::Prometheus(c) = &connections.entries[0].connection else { panic!("Prometheus") };
    let sigv4 = c.sigv4.as_ref().expect("sigv4");
    assert_eq!(
        (sigv4.region.as_str(), sigv4.role_arn.as_deref()),
        ("eu-west-1", Some("arn:aws:iam::123456789012:role/amp-query"))
    );
    for provider in ["azure-workload", "gcp"] {
        let (resolved, connections) = resolve_with(&auth(provider), Source::Prometheus, &[], cluster.clone());
        assert!(resolved.expect("resolves").is_some(), "{provider}");
        let Connection::Prometheus(c) = &connections.entries[0].connection else { panic!("Prometheus") };
        assert!(c.platform.is_some() && c.bearer_token.is_none() && c.files().is_empty(), "{provider}");
    }
    // A namespaced reference does not find a ClusterTriggerAuthentication of the same name.
    let (resolved, _) = resolve_with(&auth("gcp"), Source::Prometheus, &[], named("cloud"));
    assert!(resolved.is_err());
}

#[test]
fn a_trigger_authentication_keda_does_not_use_is_dropped_with_a_note() {
    let (resolved, connections) = resolve_with(
        BEARER.replace("    - {parameter: ca, name: thanos-token, key: ca.crt}\n", "").as_str(),
        Source::Prometheus,
        &[],
        named("thanos"),
    );
    let resolved = resolved.expect("resolves").expect("notes");
    assert!(resolved.connection.is_none() && connections.entries.is_empty());
    assert!(
        resolved.notes[0].contains("authenticationRef (TriggerAuthentication shop/thanos): dropped"),
        "{:?}",
        resolved.notes
    );
    assert!(resolved.notes.iter().any(|n| n.contains("parameter bearerToken dropped")), "{:?}", resolved.notes);
}

#[test]
fn connection_names_are_dns_labels() {
    assert_eq!(dns_label("Kafka.Prod_creds"), "kafka-prod-creds");
    assert_eq!(dns_label("--"), "connection");
}
