//! The direct scrape signal against real HTTP endpoints: rate maths (resets, series that come and
//! go, several URLs summed), OpenMetrics and gzip, activation on the first increase, and outages.

mod support;

use std::time::{Duration, Instant};

use spinscale_testkit::Exposition;
use support::*;
use tonic::Code;

fn scrape_config() -> spinscale::config::Config {
    let mut config = fast_config();
    config.collectors.scrape_interval.0 = Duration::from_millis(100);
    config.collectors.scrape_window.0 = Duration::from_secs(1);
    config
}

fn scrape_meta<'a>(urls: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut meta = vec![("scalerAddress", "spinscale:9500"), ("scrapeUrl", urls), ("scrapeMetric", "requests_total")];
    meta.push(("metrics", "separate"));
    meta.extend_from_slice(extra);
    meta
}

fn counters(series: &[(&str, u64)]) -> String {
    let mut text = String::from("# TYPE requests_total counter\n");
    for (labels, value) in series {
        text.push_str(&format!("requests_total{{{labels}}} {value}\n"));
    }
    text
}

/// Keeps `series` counting at `per_second` each on `exposition` until the returned guard drops.
fn count(exposition: std::sync::Arc<Exposition>, series: Vec<(&'static str, u64)>, per_second: u64) -> Abort {
    Abort(tokio::spawn(async move {
        let started = Instant::now();
        loop {
            let elapsed = started.elapsed().as_secs_f64();
            let now: Vec<(&str, u64)> =
                series.iter().map(|(l, base)| (*l, base + (elapsed * per_second as f64) as u64)).collect();
            exposition.set(counters(&now));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }))
}

struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn rps_near(client: &mut Client, r: &spinscale::proto::ScaledObjectRef, want: f64) -> bool {
    let poll = poll_until(client, r, Duration::from_secs(30), |p| {
        p.as_ref().is_ok_and(|p| (p.values["spinscale-rps"] - want).abs() <= want * 0.2)
    })
    .await
    .unwrap();
    poll.active
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_of_matching_series_summed_over_urls() {
    let a = std::sync::Arc::new(Exposition::start(&counters(&[])).await.unwrap());
    let b = std::sync::Arc::new(Exposition::start(&counters(&[])).await.unwrap());
    let server = start_server(scrape_config()).await;
    let mut client = connect(&server).await;
    let urls = format!("http://{}/metrics,http://{}/metrics", a.addr, b.addr);
    let _a =
        count(a.clone(), vec![("app=\"web\",code=\"200\"", 0), ("app=\"web\",code=\"500\"", 0), ("app=\"db\"", 0)], 10);
    let _b = count(b.clone(), vec![("app=\"web\",code=\"200\"", 1000)], 10);
    // 2 web series on a, 1 on b: 30 req/s; the db series is filtered out by scrapeLabels.
    let r = so_ref("web", &scrape_meta(&urls, &[("scrapeLabels", "app=web")]));
    assert!(rps_near(&mut client, &r, 30.0).await);
    let all = so_ref("all", &scrape_meta(&urls, &[]));
    assert!(rps_near(&mut client, &all, 40.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_resets_and_vanishing_series_never_read_negative() {
    let endpoint =
        std::sync::Arc::new(Exposition::start(&counters(&[("pod=\"a\"", 500), ("pod=\"b\"", 70)])).await.unwrap());
    let server = start_server(scrape_config()).await;
    let mut client = connect(&server).await;
    let r = so_ref("so", &scrape_meta(&format!("http://{}/metrics", endpoint.addr), &[]));
    assert!(!rps_near(&mut client, &r, 0.0).await, "flat counters: no rate");

    // Pod a restarts (its counter starts again from 0) and pod b goes away.
    let started = Instant::now();
    let guard = count(endpoint.clone(), vec![("pod=\"a\"", 0)], 20);
    let mut lowest = f64::MAX;
    while started.elapsed() < Duration::from_secs(2) {
        let poll = keda_poll(&mut client, &r).await.unwrap();
        lowest = lowest.min(poll.values["spinscale-rps"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lowest >= 0.0);
    assert!(rps_near(&mut client, &r, 20.0).await);
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_metrics_and_gzip_bodies_are_read() {
    let body = |n: u64| {
        format!(
            "# TYPE requests counter\nrequests_total{{app=\"a\"}} {n}\nrequests_created{{app=\"a\"}} 1.7e9\n# EOF\n"
        )
    };
    let endpoint = std::sync::Arc::new(Exposition::start_gzip(&body(0)).await.unwrap());
    let server = start_server(scrape_config()).await;
    let mut client = connect(&server).await;
    let url = format!("http://{}/metrics", endpoint.addr);
    let mut meta = scrape_meta(&url, &[]);
    meta.retain(|(k, _)| *k != "scrapeMetric");
    meta.push(("scrapeMetric", "requests"));
    let r = so_ref("so", &meta);
    let feeding = endpoint.clone();
    let _load = Abort(tokio::spawn(async move {
        for i in 0u64.. {
            feeding.set(body(i * 5));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));
    assert!(rps_near(&mut client, &r, 50.0).await);
}

/// Pushed, not polled: the client makes no call while it waits, and targets re-evaluate on a 1 h
/// tick, so the `true` can only come from the step that took in the scrape showing the increase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_request_after_idleness_is_pushed_from_the_next_scrape() {
    let endpoint = Exposition::start(&counters(&[("app=\"a\"", 41)])).await.unwrap();
    let mut config = scrape_config();
    config.targets.tick.0 = Duration::from_secs(3600);
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let r = so_ref("so", &scrape_meta(&format!("http://{}/metrics", endpoint.addr), &[]));
    assert!(!keda_poll(&mut client, &r).await.unwrap().active);
    let mut stream = client.stream_is_active(r).await.unwrap().into_inner();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let request = Instant::now();
    endpoint.set(counters(&[("app=\"a\"", 42)]));
    let pushed = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("pushed");
    assert_eq!(pushed.unwrap().map(|m| m.result), Some(true));
    eprintln!("one request → push: {:?}", request.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_unavailable_naming_its_url() {
    let good = Exposition::start(&counters(&[("app=\"a\"", 1)])).await.unwrap();
    let port = spinscale_testkit::free_port().unwrap();
    let server = start_server(scrape_config()).await;
    let mut client = connect(&server).await;
    let dead = format!("http://127.0.0.1:{port}/metrics");
    let urls = format!("http://{}/metrics,{dead}", good.addr);
    let status = keda_poll(&mut client, &so_ref("so", &scrape_meta(&urls, &[]))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains(&dead), "{status:?}");

    let gauge = Exposition::start("# TYPE requests_total gauge\nrequests_total 3\n").await.unwrap();
    let status =
        keda_poll(&mut client, &so_ref("gauge", &scrape_meta(&format!("http://{}/metrics", gauge.addr), &[]))).await;
    let status = status.unwrap_err();
    assert!(status.message().contains("is a gauge, not a counter"), "{status:?}");
}
