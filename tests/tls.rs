//! gRPC over TLS and mTLS, as KEDA connects with `caCert`, `tlsClientCert` and `tlsClientKey`,
//! with certificates replaced on disk while serving.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::ExtendedKeyUsagePurpose;
use spinscale::config::Config;
use spinscale::proto::external_scaler_client::ExternalScalerClient;
use spinscale::server::{Options, Server};
use spinscale::tls::TlsFiles;
use support::pki::{Leaf, Pki};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn write_server(dir: &Path, leaf: &Leaf) {
    std::fs::write(dir.join("tls.crt"), &leaf.cert).expect("cert");
    std::fs::write(dir.join("tls.key"), &leaf.key).expect("key");
}

async fn start(dir: &Path, client_ca: Option<&str>) -> anyhow::Result<Server> {
    if let Some(ca) = client_ca {
        std::fs::write(dir.join("client-ca.crt"), ca)?;
    }
    let tls = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: client_ca.map(|_| dir.join("client-ca.crt")),
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    Server::start_with(Config::default(), grpc, http, Options { tls: Some(tls), ..Options::default() }).await
}

/// KEDA's side: trusts `ca`, optionally presents a client certificate.
async fn connect(server: &Server, ca: &str, identity: Option<&Leaf>) -> Result<ExternalScalerClient<Channel>, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
    }
    let endpoint = Channel::from_shared(format!("https://{}", server.grpc_addr)).map_err(|e| e.to_string())?;
    let channel = endpoint
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(ExternalScalerClient::new(channel))
}

/// A call that reaches the service: invalid metadata comes back as INVALID_ARGUMENT from spinscale.
async fn reaches_service(client: &mut ExternalScalerClient<Channel>) -> Result<(), String> {
    let r = spinscale::grpc::scaled_object_ref("default", "so", &[("lagThreshold", "-1")]);
    match client.get_metric_spec(r).await {
        Err(status) if status.code() == tonic::Code::InvalidArgument => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca_and_picks_up_a_replaced_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Pki::new("first CA");
    write_server(dir.path(), &first.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth));
    let server = start(dir.path(), None).await.expect("server");

    let mut client = connect(&server, &first.ca, None).await.expect("TLS connect");
    reaches_service(&mut client).await.expect("a call over TLS");
    let plain = ExternalScalerClient::connect(format!("http://{}", server.grpc_addr)).await;
    let plain_call = match plain {
        Ok(mut c) => reaches_service(&mut c).await,
        Err(e) => Err(e.to_string()),
    };
    assert!(plain_call.is_err(), "plain text is not served on a TLS port");

    // The Secret is rotated to a certificate from another CA.
    let second = Pki::new("second CA");
    write_server(dir.path(), &second.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth));
    let rotated = Instant::now();
    let mut fresh = loop {
        match connect(&server, &second.ca, None).await {
            Ok(c) => break c,
            Err(e) if rotated.elapsed() > Duration::from_secs(3) => panic!("the new certificate was not served: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    println!("certificate rotation picked up after {} ms", rotated.elapsed().as_millis());
    reaches_service(&mut fresh).await.expect("a call with the new certificate");
    reaches_service(&mut client).await.expect("the established connection keeps working");
    assert!(connect(&server, &first.ca, None).await.is_err(), "new connections no longer use the old certificate");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_client_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = Pki::new("server CA");
    let clients = Pki::new("client CA");
    write_server(dir.path(), &servers.leaf(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth));
    let server = start(dir.path(), Some(&clients.ca)).await.expect("server");

    let keda = clients.leaf(&["keda-operator"], ExtendedKeyUsagePurpose::ClientAuth);
    let mut client = connect(&server, &servers.ca, Some(&keda)).await.expect("mTLS connect");
    reaches_service(&mut client).await.expect("a call with a client certificate");

    let anonymous = match connect(&server, &servers.ca, None).await {
        Ok(mut c) => reaches_service(&mut c).await,
        Err(e) => Err(e),
    };
    assert!(anonymous.is_err(), "no client certificate, no service");
    let stranger = servers.leaf(&["stranger"], ExtendedKeyUsagePurpose::ClientAuth);
    let foreign = match connect(&server, &servers.ca, Some(&stranger)).await {
        Ok(mut c) => reaches_service(&mut c).await,
        Err(e) => Err(e),
    };
    assert!(foreign.is_err(), "a client certificate from another CA is refused");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_certificate_files_are_named_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    let err = start(dir.path(), None).await.err().expect("refused").to_string();
    assert!(err.contains("--tls-cert") && err.contains("tls.crt"), "{err}");
    let missing = TlsFiles { cert: dir.path().join("absent.crt"), key: dir.path().join("tls.key"), client_ca: None };
    let err = missing.load().expect_err("refused").to_string();
    assert!(err.contains("--tls-cert") && err.contains("absent.crt"), "{err}");
}
