//! Kafka connections with TLS and SASL: credentials come from files named by a connection of the
//! config, never from trigger metadata, and never show up in answers, logs, `/status` or `/metrics`.
//!
//! librdkafka's mock cluster speaks neither TLS nor SASL, so these tests drive the failure paths
//! for real (a TLS handshake and a SASL handshake a plaintext broker refuses) and check what
//! spinscale says about them.

mod support;

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
    let config = Config::parse(&format!(
        "collectors:\n  kafkaInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n\
         kafkaConnections:\n  prod:\n    securityProtocol: SASL_PLAINTEXT\n    saslMechanism: SCRAM-SHA-512\n    \
         usernameFile: {dir}/username\n    passwordFile: {dir}/password\n  tls:\n    securityProtocol: SSL\n",
        dir = dir.path().display()
    ))
    .expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();

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

#[tokio::test]
async fn credentials_in_metadata_are_refused_and_unknown_connections_named() {
    let kafka = Kafka::new(&[("orders", 1)]);
    let config = Config::parse("kafkaConnections:\n  prod:\n    securityProtocol: SSL\n").expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();

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
         usernameFile: /nonexistent/user\n",
    )
    .expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains("kafkaConnections.prod.passwordFile: is required"), "{text}");
    assert!(text.contains("kafkaConnections.prod.usernameFile: /nonexistent/user"), "{text}");
}
