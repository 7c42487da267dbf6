//! Operating spinscale: the live config (a kubelet-style mounted file, and a ConfigMap watched
//! through the API, served from recorded API responses), the `/metrics` exporter, `/status`,
//! and `check-config`.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use spinscale::config::Config;
use spinscale::reload::{self, ConfigSource};
use support::kube::RecordedApi;
use support::{Kafka, connect, kafka_meta, poll_until, so_ref, start_server, until};

const FAST: &str = "collectors:\n  kafkaInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n";

/// A topic whose group lags by 5 records: active exactly when `activationLagThreshold` < 5.
fn lagging_by_five() -> Kafka {
    let kafka = Kafka::new(&[("orders", 1)]);
    kafka.produce("orders", 0, 5);
    kafka.commit("billing", "orders", 0, 0);
    kafka
}

/// Writes the config as the kubelet updates a ConfigMap volume: a new timestamped directory, then
/// an atomic swap of the `..data` symlink that `config.yaml` points through.
fn kubelet_write(dir: &Path, generation: u32, text: &str) {
    let data = dir.join(format!("..2026_11_25_{generation:06}"));
    std::fs::create_dir(&data).expect("data dir");
    std::fs::write(data.join("config.yaml"), text).expect("write config");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(data.file_name().expect("name"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    let link = dir.join("config.yaml");
    if !link.exists() {
        std::os::unix::fs::symlink("..data/config.yaml", &link).expect("config.yaml link");
    }
}

async fn metrics(server: &spinscale::server::Server) -> prometheus_parse::Scrape {
    let text = reqwest::get(format!("http://{}/metrics", server.http_addr))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition parses")
}

/// The value of one sample, matched by name and a subset of its labels.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(
        |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        },
    )
}

async fn reloads(server: &spinscale::server::Server, result: &str) -> f64 {
    value(&metrics(server).await, "spinscale_config_reload_total", &[("result", result)]).unwrap_or(0.0)
}

#[tokio::test]
async fn a_mounted_config_change_applies_live_and_a_bad_one_is_rejected_whole() {
    let kafka = lagging_by_five();
    let dir = tempfile::tempdir().expect("tempdir");
    kubelet_write(dir.path(), 1, &format!("{FAST}defaults:\n  activationLagThreshold: \"10\"\n"));
    let path = dir.path().join("config.yaml");
    let mut server = start_server(Config::load(&path).expect("config")).await;
    server.follow_config(ConfigSource::File(path.clone()));
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    let r = so_ref("orders", &kafka_meta(&bootstrap, "billing", "orders"));
    let first = poll_until(&mut client, &r, Duration::from_secs(5), std::result::Result::is_ok).await.expect("poll");
    assert!(!first.active, "lag 5 is not above the default activation threshold 10");
    let mut stream = client.stream_is_active(r.clone()).await.expect("stream").into_inner();

    // Rejected as a whole: a typo, and a config valid alone that no longer fits the live target.
    kubelet_write(dir.path(), 2, &format!("{FAST}collectors:\n  kafkaIntervall: 1s\n"));
    let until = Instant::now() + Duration::from_secs(3);
    while reloads(&server, "rejected").await < 1.0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reloads(&server, "rejected").await, 1.0, "the typo is counted as rejected");
    let misfit = Config::parse("defaults:\n  lagThreshold: \"10\"\n").expect("valid alone");
    let meta: HashMap<String, String> = [
        ("profile", "batch"),
        ("bootstrapServers", bootstrap.as_str()),
        ("consumerGroup", "billing"),
        ("topic", "orders"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let with_profile = Config::parse(&format!(
        "{FAST}defaults:\n  activationLagThreshold: \"10\"\nprofiles:\n  batch:\n    lagThreshold: \"50\"\n"
    ))
    .expect("valid");
    server.registry.reload(with_profile).expect("fits");
    server.registry.target("default", "batch-job", &meta).expect("the profile exists now");
    let rejected = server.registry.reload(misfit).expect_err("the live target's profile would vanish");
    let text = rejected.to_string();
    assert!(
        text.contains("target default/batch-job") && text.contains("profile: \"batch\" is not a profile"),
        "{text}"
    );
    assert_eq!(server.registry.config().profiles.len(), 1, "the previous config stays");

    // A good change reaches the open stream: no restart, no reconnect.
    let changed_at = Instant::now();
    let good = "defaults:\n  activationLagThreshold: \"2\"\nprofiles:\n  batch:\n    lagThreshold: \"50\"\n";
    kubelet_write(dir.path(), 3, &format!("{FAST}{good}"));
    let pushed = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
    let took = changed_at.elapsed();
    assert!(matches!(pushed, Ok(Ok(Some(ref m))) if m.result), "true on the same stream within 2 s: {pushed:?}");
    assert!(reloads(&server, "success").await >= 1.0);
    println!("mounted config change → true on the open stream: {} ms", took.as_millis());
    let now = poll_until(&mut client, &r, Duration::from_secs(2), |p| matches!(p, Ok(p) if p.active)).await;
    assert!(now.expect("poll").active);

    // New collector settings: every target moves to new collectors, still on the same stream.
    let slower = Config::parse(
        &FAST.replace("kafkaInterval: 200ms", "kafkaInterval: 300ms").replace("targets:", &format!("{good}targets:")),
    );
    let reloaded = server.registry.reload(slower.expect("valid")).expect("fits");
    assert!(reloaded.collectors_restarted && reloaded.targets_changed == 2, "{reloaded:?}");
    let after = poll_until(&mut client, &r, Duration::from_secs(2), |p| matches!(p, Ok(p) if p.active)).await;
    assert!(after.expect("poll after new collectors").active);
    assert_eq!(server.registry.collectors(), 1, "the two targets share one new collector; the old one stopped");
    server.shutdown().await.expect("shutdown");
}

const CONFIGMAP: &str = "/api/v1/namespaces/spinscale/configmaps/spinscale-config";

/// The recorded API serving the spinscale ConfigMap.
fn configmap_api() -> RecordedApi {
    let api = RecordedApi::default();
    api.answer(CONFIGMAP, serde_json::from_str(include_str!("fixtures/kube/configmap.json")).expect("fixture"));
    api
}

/// Sends a recorded watch event; unless it is an error, its object is what a GET reads from now on.
fn send(api: &RecordedApi, event: &str) {
    let parsed: serde_json::Value = serde_json::from_str(event).expect("event fixture");
    if parsed["type"] != "ERROR" {
        api.answer(CONFIGMAP, parsed["object"].clone());
    }
    api.send(event);
}

#[tokio::test]
async fn a_watched_configmap_applies_changes_rejects_bad_ones_and_rewatches_after_expiry() {
    let api = configmap_api();
    let client = api.client().await;
    let initial = reload::fetch_configmap(client.clone(), "spinscale", "spinscale-config").await.expect("initial");
    assert_eq!(initial.defaults["activationLagThreshold"], "10");

    let kafka = lagging_by_five();
    let mut server = start_server(initial).await;
    server.follow_config(ConfigSource::ConfigMap {
        client,
        namespace: "spinscale".into(),
        name: "spinscale-config".into(),
    });
    assert!(until(Duration::from_secs(3), || api.watches() == 1).await);
    let watch = api.requests().into_iter().find(|r| r.contains("watch=true")).expect("a watch");
    assert!(watch.contains("fieldSelector=metadata.name%3Dspinscale-config"), "{watch}");
    assert!(watch.contains("resourceVersion=48213"), "watches from the version it read: {watch}");

    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    let r = so_ref("orders", &kafka_meta(&bootstrap, "billing", "orders"));
    let first = poll_until(&mut client, &r, Duration::from_secs(5), std::result::Result::is_ok).await.expect("poll");
    assert!(!first.active);
    let mut stream = client.stream_is_active(r.clone()).await.expect("stream").into_inner();

    send(&api, include_str!("fixtures/kube/watch-modified-invalid.json"));
    let deadline = Instant::now() + Duration::from_secs(2);
    while reloads(&server, "rejected").await < 1.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reloads(&server, "rejected").await, 1.0);
    assert_eq!(server.registry.config().defaults["activationLagThreshold"], "10", "the previous config stays");

    let sent = Instant::now();
    send(&api, include_str!("fixtures/kube/watch-modified.json"));
    let pushed = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
    assert!(matches!(pushed, Ok(Ok(Some(ref m))) if m.result), "{pushed:?}");
    println!("ConfigMap event → true on the open stream: {} ms", sent.elapsed().as_millis());

    // 410 Gone: read again, watch again from the new version; the config stays as applied.
    send(&api, include_str!("fixtures/kube/watch-gone.json"));
    assert!(until(Duration::from_secs(3), || api.watches() == 2).await, "{:?}", api.requests());
    let rewatch = api.requests().into_iter().rfind(|r| r.contains("watch=true")).expect("rewatch");
    assert!(rewatch.contains("resourceVersion=48377"), "{rewatch}");
    assert_eq!(server.registry.config().defaults["activationLagThreshold"], "2");
    assert_eq!(reloads(&server, "success").await, 1.0, "re-reading the same ConfigMap applies nothing");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_exporter_shows_targets_sources_calls_and_pushes_and_forgets_dropped_targets() {
    let kafka = lagging_by_five();
    let config = Config::parse(
        "collectors:\n  kafkaInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n  idleTimeout: 1s\n",
    )
    .expect("config");
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    let mut meta = kafka_meta(&bootstrap, "billing", "orders");
    meta.push(("activationLagThreshold", "2"));
    let r = so_ref("orders", &meta);
    let mut stream = client.stream_is_active(r.clone()).await.expect("stream").into_inner();
    let first = tokio::time::timeout(Duration::from_secs(3), stream.message()).await;
    assert!(matches!(first, Ok(Ok(Some(ref m))) if m.result), "{first:?}");
    poll_until(&mut client, &r, Duration::from_secs(3), |p| matches!(p, Ok(p) if p.active)).await.expect("poll");
    let bad = so_ref("broken", &[("lagThreshold", "-1")]);
    assert!(client.is_active(bad).await.is_err());

    let m = metrics(&server).await;
    let so = [("namespace", "default"), ("scaledobject", "orders")];
    assert_eq!(value(&m, "spinscale_target_active", &so), Some(1.0));
    assert_eq!(value(&m, "spinscale_target_healthy", &so), Some(1.0));
    let lag = [("namespace", "default"), ("scaledobject", "orders"), ("signal", "lag")];
    assert_eq!(value(&m, "spinscale_target_signal", &lag), Some(5.0));
    assert_eq!(value(&m, "spinscale_target_desired_replicas", &so), Some(0.5), "lag 5 / lagThreshold 10");
    assert_eq!(value(&m, "spinscale_target_cold_starts_total", &so), Some(1.0), "the lag found it inactive once");
    assert_eq!(value(&m, "spinscale_target_reason", &[("scaledobject", "orders"), ("reason", "lag")]), Some(1.0));
    assert_eq!(value(&m, "spinscale_targets", &[]), Some(1.0));
    assert_eq!(value(&m, "spinscale_open_streams", &[]), Some(1.0));
    assert_eq!(value(&m, "spinscale_source_up", &[("kind", "kafka")]), Some(1.0));
    assert!(value(&m, "spinscale_source_reading_age_seconds", &[("kind", "kafka")]).is_some_and(|a| a < 3.0));
    assert_eq!(value(&m, "spinscale_source_errors_total", &[("kind", "kafka")]), Some(0.0));
    assert!(value(&m, "spinscale_source_cycle_seconds_count", &[("kind", "kafka")]).is_some_and(|n| n >= 1.0));
    assert_eq!(value(&m, "spinscale_pushes_total", &[]), Some(1.0));
    assert_eq!(value(&m, "spinscale_push_latency_seconds_count", &[]), Some(1.0), "the first true, caused by lag");
    assert_eq!(value(&m, "spinscale_push_failures_total", &[]), Some(0.0), "a stream was open to carry it");
    assert!(
        value(&m, "spinscale_grpc_requests_total", &[("method", "IsActive"), ("code", "OK")]).is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        value(&m, "spinscale_grpc_requests_total", &[("method", "IsActive"), ("code", "InvalidArgument")]),
        Some(1.0)
    );
    assert!(
        value(&m, "spinscale_grpc_request_duration_seconds_count", &[("method", "GetMetrics")])
            .is_some_and(|n| n >= 1.0)
    );
    assert!(value(&m, "spinscale_build_info", &[("version", env!("CARGO_PKG_VERSION"))]).is_some());

    // Dropped from the registry → gone from the exporter.
    drop(stream);
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.registry.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = metrics(&server).await;
    assert_eq!(value(&m, "spinscale_target_active", &so), None, "no series left for a dropped target");
    assert_eq!(value(&m, "spinscale_source_up", &[("kind", "kafka")]), None, "nor for its source");
    assert_eq!(value(&m, "spinscale_targets", &[]), Some(0.0));
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn status_json_and_page_show_each_target_with_its_sources_and_decision() {
    let kafka = lagging_by_five();
    let server = start_server(Config::parse(FAST).expect("config")).await;
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    let mut meta = kafka_meta(&bootstrap, "billing", "orders");
    meta.push(("activationLagThreshold", "2"));
    let r = so_ref("orders", &meta);
    poll_until(&mut client, &r, Duration::from_secs(3), |p| matches!(p, Ok(p) if p.active)).await.expect("poll");
    let down = so_ref("payments", &kafka_meta("127.0.0.1:1", "payments", "charges"));
    assert!(client.is_active(down).await.is_err());

    let base = format!("http://{}", server.http_addr);
    let body = reqwest::get(format!("{base}/status.json")).await.expect("get").text().await.expect("body");
    let rows: serde_json::Value = serde_json::from_str(&body).expect("json");
    let rows = rows.as_array().expect("an array of targets");
    assert_eq!(rows.len(), 2);
    let orders = &rows[0];
    assert_eq!((orders["scaled_object"].as_str(), orders["active"].as_bool()), (Some("orders"), Some(true)));
    assert_eq!((orders["reason"].as_str(), orders["lag"].as_f64()), (Some("lag"), Some(5.0)));
    assert_eq!(orders["sources"][0]["state"], "ok");
    assert!(orders["history"].as_array().is_some_and(|h| !h.is_empty()));
    let payments = &rows[1];
    assert_eq!(payments["sources"][0]["state"], "failed");
    assert!(payments["problem"].as_str().is_some_and(|p| p.contains("127.0.0.1:1")), "{payments}");

    let page = reqwest::get(format!("{base}/status")).await.expect("get").text().await.expect("text");
    assert!(page.contains("data-name=\"orders\"") && page.contains("<svg class=\"chart\""), "{page}");
    assert!(page.contains("class=\"decision active\""));
    server.shutdown().await.expect("shutdown");
}

#[test]
fn check_config_accepts_a_good_file_and_names_every_problem_of_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "defaults:\n  lagThreshold: \"20\"\nprofiles:\n  batch:\n    lagThreshold: \"500\"\n")
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spinscale")).args(["check-config"]).arg(&good).output();
    let out = out.expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (1 default keys, 1 profiles)"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "defaults:\n  lagThreshold: \"0\"\ncollectors:\n  kafkaInterval: 5ms\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spinscale")).args(["check-config"]).arg(&bad).output();
    let out = out.expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("defaults.lagThreshold") && stderr.contains("collectors.kafkaInterval"), "{stderr}");
}
