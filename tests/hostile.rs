//! Hostile trigger input over real gRPC, as KEDA would pass it from any tenant's ScaledObject:
//! every case is refused naming the key, or bounded, and never shows an upstream's content.
//!
//! | input | outcome |
//! |---|---|
//! | `partitionLimitation: 0-2147483647` | accepted as one range; the server's memory does not grow |
//! | `serverAddress` / `bootstrapServers` / `scrapeUrl` at `169.254.169.254` | `INVALID_ARGUMENT` naming the key |
//! | a source outside `limits.allowedSources` | `INVALID_ARGUMENT` naming the key and the setting |
//! | `backend` at the metadata address or another namespace's Service | `INVALID_ARGUMENT` naming `backend` |
//! | `hosts` not given to the namespace by `activator.allowedHosts` | `INVALID_ARGUMENT` naming `hosts` |
//! | a scrape endpoint answering credentials JSON | `UNAVAILABLE` with status, type and length, not the content |
//! | a Prometheus answering an endless body | `UNAVAILABLE` naming `limits.maxResponseBytes` |
//! | a Kafka "broker" whose 14-byte answer claims 2^31 - 1 API versions | a decode error; nothing of that size is allocated |

mod support;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use spinscale::config::Config;
use spinscale::server::{Options, Server};
use support::{Client, connect, keda_poll, so_ref, start_server};
use tokio::net::TcpListener;
use tonic::Code;

const SECRET: &str = "AKIAHOSTILETESTSECRET";

fn config(extra: &str) -> Config {
    Config::parse(&format!(
        "collectors:\n  prometheusInterval: 200ms\n  scrapeInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\n\
         targets:\n  tick: 100ms\n{extra}"
    ))
    .expect("test config is valid")
}

/// A server with the activator on (triggers with `hosts` need it).
async fn start_with_activator(config: Config) -> Server {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let activator = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let options = Options { activator: Some(activator), ..Options::default() };
    Server::start_with(config, grpc, http, options).await.expect("server")
}

async fn refused(client: &mut Client, metadata: &[(&str, &str)]) -> tonic::Status {
    let status = keda_poll(client, &so_ref("hostile", metadata)).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    status
}

/// Serves `app` on a loopback port; its base URL.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The resident set of this process (the server runs in it), from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS");
    kib.trim().trim_end_matches(" kB").trim().parse::<u64>().expect("a number") * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_range_over_the_whole_id_space_costs_nothing() {
    let server = start_server(config("")).await;
    let mut client = connect(&server).await;
    let before = rss_bytes();
    for i in 0..3 {
        let group = format!("g{i}");
        let meta = [
            ("bootstrapServers", "127.0.0.1:9"),
            ("consumerGroup", group.as_str()),
            ("topic", "events"),
            ("partitionLimitation", "0-2147483647"),
        ];
        // The broker does not exist: the call fails as a source, never as a crash or an OOM.
        let status = keda_poll(&mut client, &so_ref(&group, &meta)).await.expect_err("no broker");
        assert_ne!(status.code(), Code::InvalidArgument, "a valid range: {status:?}");
    }
    // Expanded into ids, one such range is 8 GiB; as a range it is a few bytes (the growth
    // measured here is the Kafka clients of three targets).
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("3 targets with partitionLimitation 0-2147483647: RSS +{} KiB", grown / 1024);
    assert!(grown < 256 * 1024 * 1024, "three targets with the whole id space grew the server by {grown} bytes");
    assert_eq!(server.registry.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_addresses_are_refused_as_sources() {
    let server = start_server(config("")).await;
    let mut client = connect(&server).await;
    let cases = [
        ("serverAddress", vec![("serverAddress", "http://169.254.169.254"), ("query", "up")]),
        ("prometheusAddress", vec![("prometheusAddress", "http://[fd00:ec2::254]/"), ("query", "up")]),
        (
            "bootstrapServers",
            vec![("bootstrapServers", "kafka:9092,169.254.169.254:9092"), ("consumerGroup", "g"), ("topic", "t")],
        ),
        (
            "scrapeUrl",
            vec![("scrapeUrl", "http://metadata.google.internal/computeMetadata/v1/"), ("scrapeMetric", "x")],
        ),
    ];
    for (key, meta) in cases {
        let status = refused(&mut client, &meta).await;
        assert!(status.message().contains(key), "names {key}: {}", status.message());
        assert!(status.message().contains("metadata address"), "{}", status.message());
    }
    assert_eq!(server.registry.len(), 0, "nothing was registered, nothing polled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_sources_narrow_what_a_trigger_may_poll() {
    let server =
        start_server(config("limits:\n  allowedSources: ['http://*.monitoring.svc:*', 'kafka-*:9092']\n")).await;
    let mut client = connect(&server).await;
    let status = refused(&mut client, &[("serverAddress", "http://10.0.0.9:9090"), ("query", "up")]).await;
    assert!(status.message().contains("serverAddress") && status.message().contains("limits.allowedSources"));
    let status =
        refused(&mut client, &[("bootstrapServers", "evil:9092"), ("consumerGroup", "g"), ("topic", "t")]).await;
    assert!(status.message().contains("bootstrapServers"), "{}", status.message());
    // Allowed addresses register (and fail as sources, since nothing listens there).
    let meta = [("serverAddress", "http://prometheus.monitoring.svc:9090"), ("query", "up")];
    let status = keda_poll(&mut client, &so_ref("allowed", &meta)).await.expect_err("nothing listens");
    assert_ne!(status.code(), Code::InvalidArgument, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_must_be_services_of_the_scaled_objects_namespace() {
    let server = start_with_activator(config("")).await;
    let mut client = connect(&server).await;
    for backend in ["http://169.254.169.254", "http://payments.billing.svc:80", "http://10.0.0.7:8080"] {
        let status = refused(&mut client, &[("hosts", "shop.example.com"), ("backend", backend)]).await;
        assert!(status.message().contains("backend") && status.message().contains(backend), "{}", status.message());
    }
    // so_ref puts the ScaledObject in `default`: its own Services are fine.
    let own = [("hosts", "shop.example.com"), ("backend", "http://shop.default.svc.cluster.local:8080")];
    keda_poll(&mut client, &so_ref("shop", &own)).await.expect("its own namespace's Service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_claimed_only_where_the_operator_gives_them() {
    let given = "activator:\n  allowedHosts:\n    default: ['*.default.example.com']\n    shop: ['shop.example.com']\n";
    let server = start_with_activator(config(given)).await;
    let mut client = connect(&server).await;
    let backend = "http://app.default.svc:80";
    let status = refused(&mut client, &[("hosts", "shop.example.com"), ("backend", backend)]).await;
    assert!(status.message().contains("hosts") && status.message().contains("allowedHosts"), "{}", status.message());
    let own = [("hosts", "api.default.example.com"), ("backend", backend)];
    keda_poll(&mut client, &so_ref("api", &own)).await.expect("a host given to its namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_content_never_reaches_the_error() {
    let credentials = format!(r#"{{"Code":"Success","AccessKeyId":"{SECRET}","SecretAccessKey":"x"}}"#);
    let body = credentials.clone();
    let base = serve(Router::new().route("/{*path}", get(move || async move { body.clone() }))).await;
    let server = start_server(config("")).await;
    let mut client = connect(&server).await;
    let scrape = format!("{base}/latest/meta-data/iam/security-credentials/node");
    let prometheus = base.clone();
    let cases: [Vec<(&str, &str)>; 2] = [
        vec![("scrapeUrl", scrape.as_str()), ("scrapeMetric", "requests_total")],
        vec![("serverAddress", prometheus.as_str()), ("query", "up"), ("ignoreNullValues", "false")],
    ];
    for (i, meta) in cases.iter().enumerate() {
        let r = so_ref(&format!("leak{i}"), meta);
        let status = support::poll_until(&mut client, &r, Duration::from_secs(30), |a| {
            a.as_ref().is_err_and(|s| s.code() == Code::Unavailable && s.message().contains("bytes"))
        })
        .await
        .expect_err("unavailable");
        assert!(!status.message().contains(SECRET), "the content leaked: {}", status.message());
        assert!(status.message().contains(&format!("{} bytes", credentials.len())), "{}", status.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_fails_the_source_at_the_limit() {
    let endless = || async {
        let chunks = futures_util::stream::repeat_with(|| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]));
        Body::from_stream(chunks)
    };
    let base = serve(Router::new().route("/api/v1/query", get(endless))).await;
    let server = start_server(config("limits:\n  maxResponseBytes: 1Mi\n")).await;
    let mut client = connect(&server).await;
    let r = so_ref("endless", &[("serverAddress", base.as_str()), ("query", "up")]);
    let before = rss_bytes();
    let status = support::poll_until(&mut client, &r, Duration::from_secs(30), |a| {
        a.as_ref().is_err_and(|s| s.code() == Code::Unavailable && s.message().contains("maxResponseBytes"))
    })
    .await
    .expect_err("unavailable");
    assert!(status.message().contains("1048576 bytes"), "{}", status.message());
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("an endless Prometheus body, maxResponseBytes 1Mi: RSS +{} KiB", grown / 1024);
    assert!(grown < 64 * 1024 * 1024, "an endless body grew the server by {grown} bytes");
}

/// A tenant may name a broker of its own in `bootstrapServers`. Its answers are decoded by
/// spinscale's own Kafka requests (offsets, log ends, tail), and a count that the frame cannot
/// hold would size an allocation of hundreds of GiB, whose failure aborts the whole server
/// (vendor/kafka-protocol/PATCHED.md). The count is refused instead.
#[tokio::test]
async fn a_broker_answer_claiming_billions_of_elements_is_a_decode_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request: its size, then its header (API key, version, correlation id).
                let Ok(size) = tcp.read_i32().await else { return };
                let mut request = vec![0; usize::try_from(size).unwrap_or(0)];
                if tcp.read_exact(&mut request).await.is_err() || request.len() < 8 {
                    return;
                }
                // ApiVersions v0: the correlation id, error 0, then an array of i32::MAX versions.
                let mut answer = Vec::new();
                answer.extend_from_slice(&10_i32.to_be_bytes());
                answer.extend_from_slice(&request[4..8]);
                answer.extend_from_slice(&0_i16.to_be_bytes());
                answer.extend_from_slice(&i32::MAX.to_be_bytes());
                let _ = tcp.write_all(&answer).await;
                let _ = tcp.read_i32().await;
            });
        }
    });
    let opened =
        spinscale::signals::kafka_wire::BrokerConnection::open(&address, "hostile-test", None, Duration::from_secs(10))
            .await;
    let error = opened.err().expect("a malformed answer is an error");
    assert!(error.contains("Array length 2147483647 is more than the 0 bytes left"), "{error}");
}
