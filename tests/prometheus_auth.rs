//! Prometheus connections: bearer tokens, basic auth, headers from files and TLS client
//! certificates come from a connection of the config that a trigger names
//! (`prometheusConnection`), are read again when their files change, and never show up in
//! answers, logs, `/status` or `/metrics`. A connection goes only to its `addresses` (and
//! `namespaces`): a trigger naming it for another address is refused and nothing is sent there,
//! and a redirect is not followed. Also the per-trigger `queryInterval`.
//!
//! The endpoints that demand each scheme are local, over TLS (a connection sends a secret only
//! over TLS); the mTLS one is the real `prometheus` binary with `client_auth_type:
//! RequireAndVerifyClientCert`. SigV4 is in `tests/prometheus_sigv4.rs`.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use rcgen::ExtendedKeyUsagePurpose;
use spinscale::config::Config;
use spinscale::proto::ScaledObjectRef;
use spinscale_testkit::{PrometheusProcess, WebTls};
use support::pki::Pki;
use support::{Client, capture_logs, components_required, connect, keda_poll, so_ref, start_server};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::CertificateDer, pki_types::PrivateKeyDer, pki_types::pem::PemObject};
use tonic::Code;

const TOKEN: &str = "tok-5d1e8a7c03b9f246";
const NEW_TOKEN: &str = "tok-rotated-9a04c7e1b2";
const WRONG_TOKEN: &str = "tok-wrong-77c0ffee41";
const USERNAME: &str = "reader-3f9e21";
const PASSWORD: &str = "pw-0b8d6c4a2e1f";
const ORG: &str = "org-8c2f4e6a";

/// What the local endpoint demands, by path prefix, and what it saw.
#[derive(Default)]
struct Demands {
    bearer: Mutex<String>,
    /// Requests per path prefix, and those with the rotated token.
    seen: Mutex<HashMap<String, usize>>,
    rotated: AtomicUsize,
    /// Where `/redirect/...` sends its requests.
    redirect_to: Mutex<String>,
}

/// `base64` of `text` (the standard alphabet, padded).
fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            let c = if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i) & 63) as usize] } else { b'=' };
            out.push(char::from(c));
        }
    }
    out
}

/// `/{scheme}/api/v1/query` answers a vector of one series when the request carries what
/// `scheme` demands (a different value each), else `401`:
/// `bearer` the token, `basic` the pair, `tenant` the token and `X-Scope-OrgID`, `open` nothing;
/// `redirect` answers `307` to `Demands::redirect_to`.
fn demanding_app(demands: Arc<Demands>) -> Router {
    async fn query(
        State(demands): State<Arc<Demands>>,
        UrlPath(scheme): UrlPath<String>,
        headers: HeaderMap,
    ) -> Response {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let bearer = format!("Bearer {}", demands.bearer.lock().unwrap());
        if header("authorization") == format!("Bearer {NEW_TOKEN}") {
            demands.rotated.fetch_add(1, Ordering::Relaxed);
        }
        *demands.seen.lock().unwrap().entry(scheme.clone()).or_default() += 1;
        let (allowed, value) = match scheme.as_str() {
            "bearer" => (header("authorization") == bearer, 11),
            "basic" => (header("authorization") == format!("Basic {}", base64(&format!("{USERNAME}:{PASSWORD}"))), 22),
            "tenant" => (header("authorization") == bearer && header("x-scope-orgid") == ORG, 33),
            "redirect" => {
                let to = format!("{}/api/v1/query", demands.redirect_to.lock().unwrap());
                return (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response();
            }
            _ => (true, 44),
        };
        if !allowed {
            return (StatusCode::UNAUTHORIZED, [("content-type", "text/plain")], "unauthorized").into_response();
        }
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{value}"]}}]}}}}"#
        );
        (StatusCode::OK, [("content-type", "application/json")], body).into_response()
    }
    Router::new().route("/{scheme}/api/v1/query", any(query)).with_state(demands)
}

/// The demanding endpoint over plain HTTP: its base URL.
async fn demanding_endpoint(demands: Arc<Demands>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, demanding_app(demands)).await });
    address
}

/// An endpoint that answers every request `404` and counts them (and the secrets they carried):
/// where a tenant would like the operator's credentials to go.
#[derive(Default)]
struct Recorder {
    requests: AtomicUsize,
    headers: Mutex<Vec<String>>,
}

async fn recording_endpoint(recorder: Arc<Recorder>) -> String {
    async fn record(State(recorder): State<Arc<Recorder>>, headers: HeaderMap) -> StatusCode {
        recorder.requests.fetch_add(1, Ordering::SeqCst);
        recorder.headers.lock().unwrap().extend(headers.iter().map(|(k, v)| format!("{k}: {v:?}")));
        StatusCode::NOT_FOUND
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let app = Router::new().fallback(any(record)).with_state(recorder);
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

/// A TCP listener that completes a TLS handshake before handing a connection to axum.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The demanding endpoint over TLS, with a certificate for `prometheus.test` from a CA written to
/// `dir/ca.crt`: its base URL (`https://127.0.0.1:PORT`) and the connection's `tls` setting.
async fn demanding_tls_endpoint(demands: Arc<Demands>, dir: &Path) -> (String, String) {
    let pki = Pki::new("test CA");
    write(&dir.join("ca.crt"), &pki.ca);
    let (cert, key) = leaf_files(&pki, dir, "endpoint", &["prometheus.test"], ExtendedKeyUsagePurpose::ServerAuth);
    let chain = CertificateDer::pem_file_iter(&cert).and_then(Iterator::collect::<Result<Vec<_>, _>>).expect("chain");
    let key = PrivateKeyDer::from_pem_file(&key).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = format!("https://{}", tcp.local_addr().expect("address"));
    let listener = TlsListener { tcp, acceptor: TlsAcceptor::from(Arc::new(config)) };
    tokio::spawn(async move { axum::serve(listener, demanding_app(demands)).await });
    let tls = format!("{{caFile: {}/ca.crt, serverName: prometheus.test}}", dir.display());
    (address, tls)
}

fn write(path: &Path, text: &str) {
    // A new file swapped in, as the kubelet updates a mounted Secret.
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write");
    std::fs::rename(&next, path).expect("rename");
}

/// Trigger metadata reading `query` at `address` in its own metric (`spinscale-rps`).
fn meta<'a>(address: &'a str, query: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut meta = vec![
        ("scalerAddress", "spinscale:9500"),
        ("serverAddress", address),
        ("query", query),
        ("metrics", "separate"),
    ];
    meta.extend_from_slice(extra);
    meta
}

/// Polls as KEDA does until the rate is `rps`, or panics with the last answer.
async fn until_rps(client: &mut Client, name: &str, metadata: &[(&str, &str)], rps: f64) {
    until_rps_of(client, &so_ref(name, metadata), rps).await;
}

/// [`until_rps`] for a ScaledObject given whole (another namespace).
async fn until_rps_of(client: &mut Client, r: &ScaledObjectRef, rps: f64) {
    let name = &r.name;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = keda_poll(client, r).await;
        if answer.as_ref().is_ok_and(|p| p.values.get("spinscale-rps") == Some(&rps)) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: no rate {rps}; last answer {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until the target fails for a reason other than waiting for its first reading.
async fn until_unavailable(client: &mut Client, name: &str, metadata: &[(&str, &str)]) -> tonic::Status {
    let r = so_ref(name, metadata);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.is_active(r.clone()).await {
            Err(status) if status.code() == Code::Unavailable && !status.message().contains("no reading yet") => {
                return status;
            }
            other => {
                assert!(Instant::now() < deadline, "{name}: still {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test]
async fn bearer_basic_and_header_connections_reach_what_demands_them_and_secrets_stay_in_their_files() {
    let logs = capture_logs();
    let demands = Arc::new(Demands { bearer: Mutex::new(TOKEN.into()), ..Demands::default() });
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, tls) = demanding_tls_endpoint(demands.clone(), dir.path()).await;
    let file = |name: &str| dir.path().join(name);
    for (name, text) in [
        ("token", format!("{TOKEN}\n")),
        ("wrong", WRONG_TOKEN.into()),
        ("gone", TOKEN.into()),
        ("username", USERNAME.into()),
        ("password", format!("{PASSWORD}\n")),
        ("org", ORG.into()),
    ] {
        std::fs::write(file(name), text).unwrap();
    }
    let config = Config::parse(&format!(
        "collectors:\n  prometheusInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n\
         prometheusConnections:\n\
         \x20 bearer: {{bearerTokenFile: {d}/token, tls: {tls}, addresses: [\"{e}/bearer\"]}}\n\
         \x20 basic:\n    basicAuth: {{usernameFile: {d}/username, passwordFile: {d}/password}}\n    \
         tls: {tls}\n    addresses: [\"{e}/basic\"]\n\
         \x20 tenant:\n    bearerTokenFile: {d}/token\n    headers: {{X-Scope-OrgID: {{valueFile: {d}/org}}}}\n    \
         tls: {tls}\n    addresses: [\"{e}/tenant\"]\n\
         \x20 wrong: {{bearerTokenFile: {d}/wrong, tls: {tls}, addresses: [\"{e}\"]}}\n\
         \x20 gone: {{bearerTokenFile: {d}/gone, tls: {tls}, addresses: [\"{e}\"]}}\n\
         \x20 anonymous: {{tls: {tls}, addresses: [\"{e}\"]}}\n",
        d = dir.path().display(),
        e = endpoint,
    ))
    .expect("config");
    std::fs::remove_file(file("gone")).unwrap();
    let server = start_server(config).await;
    let mut client = connect(&server).await;

    let bearer = format!("{endpoint}/bearer");
    let basic = format!("{endpoint}/basic");
    let tenant = format!("{endpoint}/tenant");
    let grouped = r#"sum(rate(http_requests_total{app="checkout"}[1m]))"#;
    let cases = [
        ("bearer", meta(&bearer, "vector(1)", &[("prometheusConnection", "bearer")]), 11.0),
        ("basic", meta(&basic, "vector(1)", &[("prometheusConnection", "basic")]), 22.0),
        // A groupable query goes through its query group, with the connection all the same.
        ("tenant", meta(&tenant, grouped, &[("prometheusConnection", "tenant"), ("authModes", "bearer")]), 33.0),
    ];
    for (name, metadata, rps) in &cases {
        until_rps(&mut client, name, metadata, *rps).await;
    }
    // With the same TLS but no credentials, the same address refuses the query: the credentials did it.
    let anonymous = meta(&bearer, "vector(2)", &[("prometheusConnection", "anonymous")]);
    let status = until_unavailable(&mut client, "anonymous", &anonymous).await;
    assert!(status.message().contains("HTTP 401"), "{status:?}");

    // The token rotates: the new one is read on the next query, and the endpoint demands it now.
    write(&file("token"), &format!("{NEW_TOKEN}\n"));
    *demands.bearer.lock().unwrap() = NEW_TOKEN.into();
    assert!(support::until(Duration::from_secs(5), || demands.rotated.load(Ordering::Relaxed) >= 4).await);
    for (name, metadata, rps) in &cases {
        if *name != "basic" {
            until_rps(&mut client, name, metadata, *rps).await;
        }
    }

    let mut messages = Vec::new();
    let status =
        until_unavailable(&mut client, "wrong", &meta(&bearer, "vector(1)", &[("prometheusConnection", "wrong")]))
            .await;
    assert!(
        status.message().contains("via connection \"wrong\"") && status.message().contains("HTTP 401"),
        "{status:?}"
    );
    messages.push(status.message().to_string());
    let status =
        until_unavailable(&mut client, "gone", &meta(&bearer, "vector(1)", &[("prometheusConnection", "gone")])).await;
    let named = format!("prometheusConnections.gone.bearerTokenFile {}", file("gone").display());
    assert!(status.message().contains(&named), "{status:?}");
    messages.push(status.message().to_string());

    let secrets = [TOKEN, NEW_TOKEN, WRONG_TOKEN, USERNAME, PASSWORD, ORG];
    let base = format!("http://{}", server.http_addr);
    for page in ["/status", "/status.json", "/metrics"] {
        let body = reqwest::get(format!("{base}{page}")).await.expect("get").text().await.expect("body");
        messages.push(body);
    }
    server.shutdown().await.expect("shutdown");
    let logged = logs.text();
    assert!(logged.contains("target registered"), "logs were captured");
    messages.push(logged);
    assert!(messages[2].contains("via connection"), "/status shows the connection");
    for (text, secret) in messages.iter().flat_map(|m| secrets.map(|s| (m, s))) {
        assert!(!text.contains(secret), "{secret} leaked into: {}", &text[..text.len().min(400)]);
    }
}

#[tokio::test]
async fn credentials_in_metadata_are_refused_and_unknown_connections_named() {
    let config =
        Config::parse("prometheusConnections:\n  thanos: {addresses: [\"http://127.0.0.1:9\"]}\n").expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let status = client
        .get_metric_spec(so_ref("inline", &meta("http://127.0.0.1:9", "up", &[("authModes", "bearer")])))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("authModes: value \"bearer\" needs credentials"), "{status:?}");
    assert!(status.message().contains("`prometheusConnection`"), "{status:?}");

    let status = client
        .get_metric_spec(so_ref("unknown", &meta("http://127.0.0.1:9", "up", &[("prometheusConnection", "amp")])))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains(
            "prometheusConnection: \"amp\" is not a connection: the config's prometheusConnections defines thanos"
        ),
        "{status:?}"
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_query_interval_makes_an_expensive_query_run_less_often() {
    let demands = Arc::new(Demands::default());
    let endpoint = demanding_endpoint(demands.clone()).await;
    let server = start_server(support::fast_config()).await;
    let mut client = connect(&server).await;
    let (slow, fast) = (format!("{endpoint}/slow"), format!("{endpoint}/fast"));
    until_rps(&mut client, "slow", &meta(&slow, "vector(1)", &[("queryInterval", "1s")]), 44.0).await;
    until_rps(&mut client, "fast", &meta(&fast, "vector(1)", &[]), 44.0).await;
    let ran = |window: Duration| {
        let demands = demands.clone();
        async move {
            let before = demands.seen.lock().unwrap().clone();
            tokio::time::sleep(window).await;
            let after = demands.seen.lock().unwrap().clone();
            move |path: &str| after.get(path).copied().unwrap_or(0) - before.get(path).copied().unwrap_or(0)
        }
    };
    // 1 s against the config's 200 ms: about 3 queries in 3 s against about 15.
    let counts = ran(Duration::from_secs(3)).await;
    assert!(counts("slow") <= 5, "slow ran {}", counts("slow"));
    assert!(counts("fast") >= 8, "fast ran {}", counts("fast"));
    // The same query at the same address at the default interval is a source of its own: it
    // does not wait for the slow one's query.
    until_rps(&mut client, "fast-too", &meta(&slow, "vector(1)", &[("queryInterval", "200ms")]), 44.0).await;
    let counts = ran(Duration::from_secs(3)).await;
    assert!(counts("slow") >= 10, "slow and fast-too ran {}", counts("slow"));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_trigger_naming_a_connection_for_another_address_is_refused_and_nothing_is_sent_there() {
    let demands = Arc::new(Demands { bearer: Mutex::new(TOKEN.into()), ..Demands::default() });
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, tls) = demanding_tls_endpoint(demands.clone(), dir.path()).await;
    let recorder = Arc::new(Recorder::default());
    let tenant_address = recording_endpoint(recorder.clone()).await;
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("org"), ORG).unwrap();
    let config = Config::parse(&format!(
        "collectors:\n  prometheusInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n\
         prometheusConnections:\n\
         \x20 thanos:\n    bearerTokenFile: {d}/token\n    headers: {{X-Scope-OrgID: {{valueFile: {d}/org}}}}\n    \
         tls: {tls}\n    addresses: [\"{endpoint}/tenant\"]\n\
         \x20 shop:\n    bearerTokenFile: {d}/token\n    headers: {{X-Scope-OrgID: {{valueFile: {d}/org}}}}\n    \
         tls: {tls}\n    addresses: [\"{endpoint}/tenant\"]\n    namespaces: [shop]\n",
        d = dir.path().display()
    ))
    .expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;

    // The operator's address works, from any namespace (thanos) or from its own (shop).
    let own = format!("{endpoint}/tenant");
    until_rps(&mut client, "own", &meta(&own, "vector(1)", &[("prometheusConnection", "thanos")]), 33.0).await;
    let shop = meta(&own, "vector(1)", &[("prometheusConnection", "shop")]);
    until_rps_of(&mut client, &spinscale::grpc::scaled_object_ref("shop", "shop-app", &shop), 33.0).await;

    // A tenant's own address, one beside the allowed path, one out of it through `..`.
    let beside = format!("{endpoint}/tenantx");
    let escaped = format!("{endpoint}/tenant/../open");
    for (name, address) in [("stolen", tenant_address.as_str()), ("beside", &beside), ("escaped", &escaped)] {
        let r = so_ref(name, &meta(address, "vector(1)", &[("prometheusConnection", "thanos")]));
        for status in [
            client.get_metric_spec(r.clone()).await.expect_err("refused"),
            client.is_active(r.clone()).await.expect_err("refused"),
        ] {
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
            let wanted = format!(
                "prometheusConnection: connection \"thanos\" is not for {address}: prometheusConnections.thanos.addresses \
                 allows {endpoint}/tenant"
            );
            assert!(status.message().contains(&wanted), "{name}: {status:?}");
            assert!(!status.message().contains(TOKEN) && !status.message().contains(ORG), "{status:?}");
        }
    }
    // A connection limited to a namespace, named from another one.
    let status = client.get_metric_spec(so_ref("elsewhere", &shop)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("prometheusConnection: connection \"shop\" is not for namespace \"default\""),
        "{status:?}"
    );

    // Five query intervals later, nothing reached the tenant's endpoint or the other paths.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(recorder.requests.load(Ordering::SeqCst), 0, "{:?}", recorder.headers.lock().unwrap());
    let seen = demands.seen.lock().unwrap().clone();
    assert!(seen.keys().all(|path| path == "tenant"), "{seen:?}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_no_secret_reaches_another_host() {
    let demands = Arc::new(Demands::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let (endpoint, tls) = demanding_tls_endpoint(demands.clone(), dir.path()).await;
    let recorder = Arc::new(Recorder::default());
    *demands.redirect_to.lock().unwrap() = recording_endpoint(recorder.clone()).await;
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("org"), ORG).unwrap();
    let config = Config::parse(&format!(
        "collectors:\n  prometheusInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n\
         prometheusConnections:\n  moved:\n    bearerTokenFile: {d}/token\n    \
         headers: {{X-Scope-OrgID: {{valueFile: {d}/org}}}}\n    tls: {tls}\n    addresses: [\"{endpoint}\"]\n",
        d = dir.path().display()
    ))
    .expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let redirected = format!("{endpoint}/redirect");
    let metadata = meta(&redirected, "vector(1)", &[("prometheusConnection", "moved")]);
    let status = until_unavailable(&mut client, "moved", &metadata).await;
    assert!(status.message().contains("HTTP 307"), "the redirect is the answer: {status:?}");
    assert!(demands.seen.lock().unwrap().get("redirect").copied().unwrap_or(0) >= 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(recorder.requests.load(Ordering::SeqCst), 0, "{:?}", recorder.headers.lock().unwrap());
    server.shutdown().await.expect("shutdown");
}

// === mTLS against the real Prometheus ===

/// A certificate for `names` signed by `pki`, with its key, written to `dir/{stem}.crt` and
/// `dir/{stem}.key`.
fn leaf_files(pki: &Pki, dir: &Path, stem: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (PathBuf, PathBuf) {
    let leaf = pki.leaf(names, usage);
    let (cert_file, key_file) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    write(&cert_file, &leaf.cert);
    write(&key_file, &leaf.key);
    (cert_file, key_file)
}

#[tokio::test]
async fn mtls_to_a_real_prometheus_with_the_server_name_checked_and_rotated_client_certificates() {
    if PrometheusProcess::binary().is_none() {
        assert!(!components_required(), "the `prometheus` binary is required (apt-get install prometheus)");
        eprintln!("SKIPPED: no `prometheus` binary on PATH (apt-get install prometheus)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let pki = Pki::new("monitoring CA");
    std::fs::write(d.join("ca.crt"), &pki.ca).unwrap();
    let (server_cert, server_key) =
        leaf_files(&pki, d, "server", &["prometheus.test"], ExtendedKeyUsagePurpose::ServerAuth);
    leaf_files(&pki, d, "client", &["spinscale"], ExtendedKeyUsagePurpose::ClientAuth);
    let tls = WebTls { cert_file: server_cert, key_file: server_key, client_ca_file: Some(d.join("ca.crt")) };
    let prometheus =
        PrometheusProcess::start_tls(&[], Duration::from_millis(200), &tls).await.expect("prometheus starts");
    let config = Config::parse(&format!(
        "collectors:\n  prometheusInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n\
         prometheusConnections:\n\
         \x20 mtls: {{addresses: [\"{a}\"], tls: {{caFile: {d}/ca.crt, certFile: {d}/client.crt, keyFile: {d}/client.key, serverName: prometheus.test}}}}\n\
         \x20 nocert: {{addresses: [\"{a}\"], tls: {{caFile: {d}/ca.crt, serverName: prometheus.test}}}}\n\
         \x20 wrongname: {{addresses: [\"{a}\"], tls: {{caFile: {d}/ca.crt, certFile: {d}/client.crt, keyFile: {d}/client.key}}}}\n",
        d = d.display(),
        a = prometheus.address,
    ))
    .expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let address = prometheus.address.as_str();
    assert!(address.starts_with("https://127.0.0.1:"), "{address}");

    let mtls = meta(address, "vector(7)", &[("prometheusConnection", "mtls"), ("authModes", "tls")]);
    until_rps(&mut client, "mtls", &mtls, 7.0).await;
    let status =
        until_unavailable(&mut client, "nocert", &meta(address, "vector(7)", &[("prometheusConnection", "nocert")]))
            .await;
    println!("without a client certificate: {}", status.message());
    assert!(status.message().contains("via connection \"nocert\""), "{status:?}");
    let status = until_unavailable(
        &mut client,
        "wrongname",
        &meta(address, "vector(7)", &[("prometheusConnection", "wrongname")]),
    )
    .await;
    println!("checked against the address's host: {}", status.message());
    assert!(status.message().contains("certificate") || status.message().contains("Certificate"), "{status:?}");

    // A certificate from another CA replaces the client's: the client is rebuilt and refused.
    leaf_files(&Pki::new("rogue CA"), d, "client", &["spinscale"], ExtendedKeyUsagePurpose::ClientAuth);
    until_unavailable(&mut client, "mtls", &mtls).await;
    // A renewed certificate of the right CA: queries work again, without a restart.
    leaf_files(&pki, d, "client", &["spinscale"], ExtendedKeyUsagePurpose::ClientAuth);
    until_rps(&mut client, "mtls", &mtls, 7.0).await;
    server.shutdown().await.expect("shutdown");
}
