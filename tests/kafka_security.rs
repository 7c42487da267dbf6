//! Kafka connections with TLS and SASL: credentials come from files named by a connection of the
//! config, never from trigger metadata, and never show up in answers, logs, `/status` or `/metrics`.
//!
//! librdkafka's mock cluster speaks neither TLS nor SASL, so these tests drive the failure paths
//! for real (a TLS handshake and a SASL handshake a plaintext broker refuses) and check what
//! spinscale says about them. A connection goes only to its `bootstrapServers`: a trigger naming it
//! with a broker of its own is refused, and that broker hears nothing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use spinscale::config::Config;
use support::{Kafka, capture_logs, connect, kafka_meta, so_ref, start_server};
use tonic::Code;

const PASSWORD: &str = "pw-7f3a9c1e5b2d";
const USERNAME: &str = "user-4e8b0d6a2c";

#[tokio::test]
async fn secrets_stay_in_their_files_whatever_fails() {
    let logs = capture_logs();
    let kafka = Kafka::new(&[("orders", 1)]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("username"), format!("{USERNAME}\n")).unwrap();
    std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
    let bootstrap = kafka.bootstrap();
    let config = Config::parse(&format!(
        "collectors:\n  kafkaInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n\
         kafkaConnections:\n  prod:\n    securityProtocol: SASL_PLAINTEXT\n    saslMechanism: SCRAM-SHA-512\n    \
         usernameFile: {dir}/username\n    passwordFile: {dir}/password\n    bootstrapServers: {brokers}\n  \
         tls:\n    securityProtocol: SSL\n    bootstrapServers: {brokers}\n",
        dir = dir.path().display(),
        brokers = yaml_list(&bootstrap),
    ))
    .expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;

    for (name, connection) in [("sasl", "prod"), ("tls", "tls")] {
        let mut meta = kafka_meta(&bootstrap, "billing", "orders");
        meta.push(("kafkaConnection", connection));
        let r = so_ref(name, &meta);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let status = loop {
            match client.is_active(r.clone()).await {
                // The handshake's failure, not the wait for a first reading.
                Err(status) if status.code() == Code::Unavailable && !status.message().contains("no reading yet") => {
                    break status;
                }
                other => {
                    assert!(std::time::Instant::now() < deadline, "{connection}: still {other:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        println!("{connection}: {}", status.message());
        assert!(status.message().contains(&format!("via connection \"{connection}\"")), "{status:?}");
        assert!(!status.message().contains(PASSWORD) && !status.message().contains(USERNAME), "{status:?}");
    }

    let base = format!("http://{}", server.http_addr);
    for page in ["/status", "/status.json", "/metrics"] {
        let body = reqwest::get(format!("{base}{page}")).await.expect("get").text().await.expect("body");
        assert!(body.contains("via connection"), "{page} shows the source");
        assert!(!body.contains(PASSWORD) && !body.contains(USERNAME), "{page} leaks a secret");
    }
    server.shutdown().await.expect("shutdown");
    let logged = logs.text();
    assert!(logged.contains("target registered"), "logs were captured");
    assert!(!logged.contains(PASSWORD) && !logged.contains(USERNAME), "the logs leak a secret");
}

/// A comma list of brokers as a YAML flow list.
fn yaml_list(servers: &str) -> String {
    let quoted: Vec<String> = servers.split(',').map(|s| format!("\"{}\"", s.trim())).collect();
    format!("[{}]", quoted.join(", "))
}

#[tokio::test]
async fn a_trigger_naming_a_connection_for_another_broker_is_refused_and_nothing_is_sent_there() {
    let kafka = Kafka::new(&[("orders", 1)]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("username"), format!("{USERNAME}\n")).unwrap();
    std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
    // The tenant's "broker": it counts whoever connects.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tenant_broker = listener.local_addr().expect("address").to_string();
    let connected = Arc::new(AtomicUsize::new(0));
    let counted = connected.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    let bootstrap = kafka.bootstrap();
    let config = Config::parse(&format!(
        "collectors:\n  kafkaInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n\
         kafkaConnections:\n  prod:\n    securityProtocol: SASL_PLAINTEXT\n    saslMechanism: PLAIN\n    \
         usernameFile: {dir}/username\n    passwordFile: {dir}/password\n    bootstrapServers: {brokers}\n  \
         billing:\n    bootstrapServers: {brokers}\n    namespaces: [billing]\n",
        dir = dir.path().display(),
        brokers = yaml_list(&bootstrap),
    ))
    .expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;

    let mixed = format!("{bootstrap},{tenant_broker}");
    for (name, servers) in [("stolen", tenant_broker.as_str()), ("mixed", mixed.as_str())] {
        let mut meta = kafka_meta(servers, "billing", "orders");
        meta.push(("kafkaConnection", "prod"));
        let r = so_ref(name, &meta);
        for status in [
            client.get_metric_spec(r.clone()).await.expect_err("refused"),
            client.is_active(r.clone()).await.expect_err("refused"),
        ] {
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
            let wanted = format!(
                "kafkaConnection: connection \"prod\" is not for {tenant_broker}: kafkaConnections.prod.bootstrapServers \
                 allows {}",
                bootstrap.split(',').map(str::trim).collect::<Vec<_>>().join(", ")
            );
            assert!(status.message().contains(&wanted), "{name}: {status:?}");
        }
    }
    // A connection limited to a namespace, named from another one.
    let mut meta = kafka_meta(&bootstrap, "billing", "orders");
    meta.push(("kafkaConnection", "billing"));
    let status = client.get_metric_spec(so_ref("elsewhere", &meta)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("kafkaConnection: connection \"billing\" is not for namespace \"default\""),
        "{status:?}"
    );
    let r = spinscale::grpc::scaled_object_ref("billing", "billing-app", &meta);
    client.get_metric_spec(r).await.expect("its own namespace may use it");

    // Five offset intervals later, nobody connected to the tenant's broker.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(connected.load(Ordering::SeqCst), 0);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn credentials_in_metadata_are_refused_and_unknown_connections_named() {
    let kafka = Kafka::new(&[("orders", 1)]);
    let bootstrap = kafka.bootstrap();
    let config = Config::parse(&format!(
        "kafkaConnections:\n  prod:\n    securityProtocol: SSL\n    bootstrapServers: {}\n",
        yaml_list(&bootstrap)
    ))
    .expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;

    let mut meta = kafka_meta(&bootstrap, "billing", "orders");
    meta.extend([("sasl", "scram_sha512"), ("tls", "enable")]);
    let status = client.get_metric_spec(so_ref("inline", &meta)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("sasl: value \"scram_sha512\" needs credentials"), "{status:?}");
    assert!(status.message().contains("`kafkaConnection`"), "{status:?}");

    let mut meta = kafka_meta(&bootstrap, "billing", "orders");
    meta.push(("kafkaConnection", "staging"));
    let status = client.get_metric_spec(so_ref("unknown", &meta)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("kafkaConnection: \"staging\" is not a connection: the config's kafkaConnections defines prod"),
        "{status:?}"
    );
    server.shutdown().await.expect("shutdown");
}

#[test]
fn a_connection_naming_missing_files_is_a_config_error() {
    let err = Config::parse(
        "kafkaConnections:\n  prod:\n    securityProtocol: SASL_SSL\n    saslMechanism: PLAIN\n    \
         usernameFile: /nonexistent/user\n    bootstrapServers: [\"kafka:9092\"]\n",
    )
    .expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("kafkaConnections.prod.passwordFile: is required"), "{text}");
    assert!(text.contains("kafkaConnections.prod.usernameFile: /nonexistent/user"), "{text}");
}
