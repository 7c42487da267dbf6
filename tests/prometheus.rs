//! The Prometheus signal against the real `prometheus` server (Debian's package), scraping an
//! exposition endpoint the test controls: values, KEDA's result rules, and an outage.

mod support;

use std::time::Duration;

use spinscale_testkit::Exposition;
use support::*;
use tonic::Code;

const SERIES: &str = "# TYPE rps_gauge gauge\nrps_gauge 35\n\
                      # TYPE nan_gauge gauge\nnan_gauge NaN\n\
                      # TYPE multi gauge\nmulti{i=\"1\"} 1\nmulti{i=\"2\"} 2\n";

fn query_meta<'a>(address: &'a str, query: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut meta =
        vec![("scalerAddress", "spinscale:9500"), ("serverAddress", address), ("query", query), ("threshold", "10")];
    meta.extend_from_slice(extra);
    meta
}

/// Prometheus has scraped the endpoint once `rps_gauge` answers through spinscale.
async fn scraped(client: &mut Client, address: &str) {
    let r = so_ref("ready", &query_meta(address, "rps_gauge", &[]));
    poll_until(client, &r, Duration::from_secs(40), |p| p.as_ref().is_ok_and(|p| p.active)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_values_drive_replicas_and_activity() {
    let exposition = Exposition::start(SERIES).await.unwrap();
    let Some(prometheus) = prometheus(&[exposition.addr]).await else { return };
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    scraped(&mut client, &prometheus.address).await;

    let gauge =
        keda_poll(&mut client, &so_ref("gauge", &query_meta(&prometheus.address, "rps_gauge", &[]))).await.unwrap();
    assert_eq!(gauge.values["spinscale-replicas"], 3.5);
    assert!(gauge.active);

    let meta = query_meta(&prometheus.address, "rps_gauge", &[("activationThreshold", "35"), ("metrics", "separate")]);
    let at_threshold = keda_poll(&mut client, &so_ref("strict", &meta)).await.unwrap();
    assert_eq!(at_threshold.values["spinscale-rps"], 35.0);
    assert!(!at_threshold.active, "activation is strictly above the threshold");

    // A counter rising at 40/s, read through rate() as users write it.
    let counting = tokio::spawn(async move {
        for i in 1u64.. {
            exposition.set(format!("{SERIES}# TYPE requests_total counter\nrequests_total {}\n", i * 4));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let rate = so_ref("rate", &query_meta(&prometheus.address, "sum(rate(requests_total[2s]))", &[]));
    let poll = poll_until(&mut client, &rate, Duration::from_secs(20), |p| {
        p.as_ref().is_ok_and(|p| (3.0..=5.0).contains(&p.values["spinscale-replicas"]))
    })
    .await
    .unwrap();
    assert!(poll.active);
    counting.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_result_rules_for_empty_nan_and_several_series() {
    let exposition = Exposition::start(SERIES).await.unwrap();
    let Some(prometheus) = prometheus(&[exposition.addr]).await else { return };
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    scraped(&mut client, &prometheus.address).await;
    let address = prometheus.address.as_str();

    // (query, ignoreNullValues, Ok(replicas) or Err(message part))
    let cases: [(&str, &str, Result<f64, &str>); 6] = [
        ("no_such_metric", "true", Ok(0.0)),
        ("no_such_metric", "false", Err("the result is empty")),
        ("nan_gauge", "true", Ok(0.0)),
        ("nan_gauge", "false", Err("\"NaN\" is not a finite number")),
        ("multi", "true", Err("returned 2 series")),
        ("sum(multi)", "false", Ok(0.3)),
    ];
    for (i, (query, ignore, expected)) in cases.into_iter().enumerate() {
        let r = so_ref(&format!("case-{i}"), &query_meta(address, query, &[("ignoreNullValues", ignore)]));
        match (keda_poll(&mut client, &r).await, expected) {
            (Ok(poll), Ok(replicas)) => {
                assert!((poll.values["spinscale-replicas"] - replicas).abs() < 1e-9, "{query}: {poll:?}");
                assert_eq!(poll.active, replicas > 0.0, "{query}");
            }
            (Err(status), Err(part)) => {
                assert_eq!(status.code(), Code::Unavailable, "{query}: {status:?}");
                assert!(status.message().contains(part), "{query}: {status:?}");
                assert!(status.message().contains(address), "names the source: {status:?}");
            }
            (got, expected) => panic!("{query} (ignoreNullValues {ignore}): got {got:?}, expected {expected:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_down_is_unavailable_never_a_silent_zero() {
    let exposition = Exposition::start(SERIES).await.unwrap();
    let Some(mut prometheus) = prometheus(&[exposition.addr]).await else { return };
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    scraped(&mut client, &prometheus.address).await;
    let r = so_ref("ready", &query_meta(&prometheus.address, "rps_gauge", &[]));

    prometheus.stop();
    let down = poll_until(&mut client, &r, Duration::from_secs(5), std::result::Result::is_err).await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert!(down.message().contains(&format!("prometheus {}", prometheus.address)), "{down:?}");
    assert!(down.message().contains("Connection refused") || down.message().contains("connect"), "{down:?}");
    let active = client.is_active(r).await.unwrap_err();
    assert_eq!(active.code(), Code::Unavailable, "never a silent false");
}
