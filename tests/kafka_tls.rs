//! spinscale's own Kafka connections (committed offsets, log ends, the tail) over TLS: a broker
//! that demands a client certificate is reached with `caFile`, `certFile` and `keyFile`, and a
//! foreign CA, a missing client certificate or an unreadable key fails with the field named.
//!
//! The broker is a TLS listener that answers ApiVersions as a broker does (the first request of
//! every connection); librdkafka's mock cluster speaks no TLS.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, FetchRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use rcgen::ExtendedKeyUsagePurpose;
use spinscale::signals::kafka_wire::BrokerConnection;
use spinscale_core::spec::kafka_connection::{KafkaConnection, Protocol};
use support::pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A broker on 127.0.0.1 that demands a client certificate signed by `pki`, and answers each
/// connection's ApiVersions with Fetch v4 to v11. Its address.
async fn mtls_broker(pki: &Pki, dir: &Path) -> String {
    let leaf = pki.leaf(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let chain = CertificateDer::pem_slice_iter(leaf.cert.as_bytes()).collect::<Result<Vec<_>, _>>().expect("chain");
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key");
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).expect("CA")).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let clients =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().expect("verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::fs::write(dir.join("ca.crt"), &pki.ca).expect("write");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let Ok(length) = tls.read_i32().await else { return };
                let mut frame = vec![0; usize::try_from(length).unwrap_or(0)];
                if tls.read_exact(&mut frame).await.is_err() {
                    return;
                }
                let mut frame = bytes::Bytes::from(frame);
                let header = RequestHeader::decode(&mut frame, 1).expect("ApiVersions v0 header");
                assert_eq!(header.request_api_key, ApiKey::ApiVersions as i16);
                let answer = ApiVersionsResponse::default().with_api_keys(vec![
                    ApiVersion::default().with_api_key(ApiKey::Fetch as i16).with_min_version(4).with_max_version(11),
                ]);
                let mut body = BytesMut::new();
                ResponseHeader::default()
                    .with_correlation_id(header.correlation_id)
                    .encode(&mut body, 0)
                    .expect("header");
                answer.encode(&mut body, 0).expect("answer");
                let mut out = BytesMut::new();
                out.put_i32(i32::try_from(body.len()).expect("length"));
                out.put(body.chunk());
                let _ = tls.write_all(&out).await;
                let _ = tls.flush().await;
                // Held open until the client goes.
                let _ = tls.read_i32().await;
            });
        }
    });
    address
}

fn client_files(pki: &Pki, dir: &Path) -> (PathBuf, PathBuf) {
    let leaf = pki.leaf(&["spinscale"], ExtendedKeyUsagePurpose::ClientAuth);
    let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
    std::fs::write(&cert, leaf.cert).expect("write");
    std::fs::write(&key, leaf.key).expect("write");
    (cert, key)
}

fn ssl(ca_file: PathBuf, client: Option<(PathBuf, PathBuf)>) -> KafkaConnection {
    let (cert_file, key_file) = client.map_or((None, None), |(c, k)| (Some(c), Some(k)));
    KafkaConnection {
        security_protocol: Protocol::Ssl,
        ca_file: Some(ca_file),
        cert_file,
        key_file,
        ..KafkaConnection::default()
    }
}

#[tokio::test]
async fn a_broker_that_demands_a_client_certificate_is_reached_with_the_connections_files() {
    let dir = tempfile::tempdir().expect("dir");
    let pki = Pki::new("Kafka CA");
    let broker = mtls_broker(&pki, dir.path()).await;
    let client = client_files(&pki, dir.path());

    let security = ssl(dir.path().join("ca.crt"), Some(client.clone()));
    let connection = BrokerConnection::open(&broker, "test", Some(&security), TIMEOUT).await.expect("mTLS");
    assert_eq!(connection.version::<FetchRequest>(4..=11), Some(11), "ApiVersions read over TLS");

    let foreign = dir.path().join("foreign.crt");
    std::fs::write(&foreign, Pki::new("another CA").ca).expect("write");
    let refused = BrokerConnection::open(&broker, "test", Some(&ssl(foreign, Some(client.clone()))), TIMEOUT).await;
    assert!(refused.as_ref().is_err_and(|e| e.contains("TLS handshake with")), "{:?}", refused.err());

    let anonymous = BrokerConnection::open(&broker, "test", Some(&ssl(dir.path().join("ca.crt"), None)), TIMEOUT).await;
    assert!(anonymous.is_err(), "the broker demands a client certificate");

    let no_key = (client.0, dir.path().join("missing.key"));
    let unreadable =
        BrokerConnection::open(&broker, "test", Some(&ssl(dir.path().join("ca.crt"), Some(no_key))), TIMEOUT).await;
    assert!(unreadable.as_ref().is_err_and(|e| e.starts_with("keyFile ")), "{:?}", unreadable.err());
}
