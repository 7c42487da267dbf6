//! Restarts and replicas: a restarted spinscale learns a target's past from a real Prometheus
//! (`query_range`), and two replicas fed the same sources answer the same (KEDA spreads its calls
//! over them).

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use spinscale::config::Config;
use spinscale_testkit::PrometheusProcess;
use support::{Kafka, components_required, connect, kafka_meta, keda_poll, poll_until, so_ref, start_server};

/// Three hours of a counter at one sample a minute: two busy minutes (10 requests/s) every 15.
fn three_hours_of_bursts(now: u64) -> String {
    let start = now - 3 * 3600;
    let mut total = 0u64;
    let mut text = String::from("# HELP app_requests Requests served.\n# TYPE app_requests counter\n");
    for minute in 0..180 {
        if minute % 15 < 2 {
            total += 600;
        }
        text.push_str(&format!("app_requests_total {total} {}\n", start + minute * 60));
    }
    text.push_str("# EOF\n");
    text
}

async fn learned_gaps(server: &spinscale::server::Server) -> Option<u64> {
    let url = format!("http://{}/status.json", server.http_addr);
    let body = reqwest::get(url).await.ok()?.text().await.ok()?;
    let rows: serde_json::Value = serde_json::from_str(&body).ok()?;
    rows[0]["learned_gaps"].as_u64()
}

#[tokio::test]
async fn a_restarted_server_learns_the_targets_past_from_prometheus() {
    if PrometheusProcess::binary().is_none() {
        assert!(!components_required(), "the `prometheus` binary is required (apt-get install prometheus)");
        eprintln!("SKIPPED: no `prometheus` binary on PATH");
        return;
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let history = three_hours_of_bursts(now);
    let prometheus = PrometheusProcess::start_with_history(&[], Duration::from_secs(1), Some(&history))
        .await
        .expect("prometheus with three hours of history");
    let meta = [
        ("prometheusAddress", prometheus.address.as_str()),
        ("query", "sum(rate(app_requests_total[2m]))"),
        ("ignoreNullValues", "true"),
        ("predictive", "idle"),
    ];
    let fast = "collectors:\n  prometheusInterval: 200ms\n  timeout: 2s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n";
    for (backfill, expect_gaps) in [("24h", true), ("0s", false)] {
        let config = Config::parse(&format!("{fast}  backfill: {backfill}\n")).expect("config");
        let server = start_server(config).await;
        let mut client = connect(&server).await;
        let r = so_ref("api", &meta);
        poll_until(&mut client, &r, Duration::from_secs(5), std::result::Result::is_ok).await.expect("poll");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut gaps = learned_gaps(&server).await;
        while expect_gaps && gaps.unwrap_or(0) < 10 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            gaps = learned_gaps(&server).await;
        }
        let gaps = gaps.expect("learned_gaps on /status.json");
        if expect_gaps {
            // Twelve bursts, so eleven gaps of 13 minutes between them (the last is still open).
            assert!((10..=12).contains(&gaps), "backfill {backfill}: {gaps} gaps learned");
        } else {
            assert_eq!(gaps, 0, "without backfill the engine starts empty");
        }
        println!("backfill {backfill}: {gaps} idle gaps learned at start");
        server.shutdown().await.expect("shutdown");
    }
}

#[tokio::test]
async fn two_replicas_fed_the_same_sources_give_the_same_answers() {
    let kafka = Kafka::new(&[("orders", 3)]);
    for p in 0..3 {
        kafka.commit("billing", "orders", p, 0);
    }
    kafka.produce("orders", 0, 7);
    kafka.produce("orders", 2, 30);
    let config = || {
        Config::parse("collectors:\n  kafkaInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n")
    };
    let (a, b) = (start_server(config().expect("config")).await, start_server(config().expect("config")).await);
    let (mut ca, mut cb) = (connect(&a).await, connect(&b).await);
    let bootstrap = kafka.bootstrap();
    let mut meta = kafka_meta(&bootstrap, "billing", "orders");
    meta.extend([("lagThreshold", "50"), ("metrics", "separate")]);
    let r = so_ref("orders", &meta);
    let settled =
        |p: &Result<support::Poll, tonic::Status>| p.as_ref().is_ok_and(|p| p.values["spinscale-lag"] == 37.0);
    let pa = poll_until(&mut ca, &r, Duration::from_secs(5), settled).await.expect("replica a");
    let pb = poll_until(&mut cb, &r, Duration::from_secs(5), settled).await.expect("replica b");
    assert_eq!(pa, pb, "the same answers from both replicas");
    // KEDA's round-robin: alternate calls see no flapping.
    for i in 0..10 {
        let client = if i % 2 == 0 { &mut ca } else { &mut cb };
        assert_eq!(keda_poll(client, &r).await.expect("poll"), pa);
    }
    kafka.commit("billing", "orders", 2, 30);
    let caught_up =
        |p: &Result<support::Poll, tonic::Status>| p.as_ref().is_ok_and(|p| p.values["spinscale-lag"] == 7.0);
    let pa = poll_until(&mut ca, &r, Duration::from_secs(5), caught_up).await.expect("replica a");
    let pb = poll_until(&mut cb, &r, Duration::from_secs(5), caught_up).await.expect("replica b");
    assert_eq!(pa, pb);
    a.shutdown().await.expect("shutdown a");
    b.shutdown().await.expect("shutdown b");
}
