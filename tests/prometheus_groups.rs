//! Grouped Prometheus queries against the real `prometheus` server: targets whose queries differ
//! only in the `app` label share one query per interval, and every app still reads exactly what
//! its own query reads: its value, an empty result, NaN, several series; KEDA's rules applied with
//! its own `ignoreNullValues`. Queries are counted by Prometheus itself
//! (`prometheus_http_requests_total{handler="/api/v1/query"}` on its `/metrics`).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use spinscale::config::Config;
use spinscale::signals::grouping::{self, PlanMember, QUERY_BUDGET};
use spinscale::signals::prometheus::{self, QueryError};
use spinscale_core::spec::PrometheusSource;
use spinscale_testkit::Exposition;
use support::*;
use tonic::Code;

/// Counters rising at these rates per second, by (app, namespace, pod, code).
const COUNTERS: [(&str, &str, &str, &str, f64); 8] = [
    ("a", "prod", "p1", "200", 4.0),
    ("a", "prod", "p2", "200", 2.0),
    ("b", "prod", "p1", "200", 8.0),
    ("b", "dev", "p1", "200", 100.0),
    ("c.d", "prod", "p1", "500", 3.0),
    // Matched by `c.d` if the dot were not escaped.
    ("cxd", "prod", "p1", "200", 50.0),
    ("q(1", "prod", "p1", "200", 1.0),
    ("nan", "prod", "p1", "200", f64::NAN),
];

const GAUGES: &str = "# TYPE app_rps gauge\n\
    app_rps{app=\"a\",namespace=\"prod\",pod=\"p1\"} 10\n\
    app_rps{app=\"a\",namespace=\"prod\",pod=\"p2\"} 5\n\
    app_rps{app=\"b\",namespace=\"prod\",pod=\"p1\"} 20\n\
    app_rps{app=\"b\",namespace=\"dev\",pod=\"p1\"} 1000\n\
    app_rps{app=\"c.d\",namespace=\"prod\",pod=\"p1\"} 7.25\n\
    app_rps{app=\"cxd\",namespace=\"prod\",pod=\"p1\"} 99\n\
    app_rps{app=\"q(1\",namespace=\"prod\",pod=\"p1\"} 3\n\
    app_rps{app=\"nan\",namespace=\"prod\",pod=\"p1\"} NaN\n";

/// The apps the targets are for: `missing` has no series at all.
const APPS: [&str; 6] = ["a", "b", "c.d", "q(1", "nan", "missing"];

/// The exposition `seconds` after the start: the gauges, and the counters at that time.
fn exposition_text(seconds: f64) -> String {
    let mut text = String::from(GAUGES);
    text.push_str("# TYPE http_requests_total counter\n");
    for (app, namespace, pod, code, rate) in COUNTERS {
        text.push_str(&format!(
            "http_requests_total{{app=\"{app}\",namespace=\"{namespace}\",pod=\"{pod}\",code=\"{code}\"}} {}\n",
            rate * seconds
        ));
    }
    text
}

/// An exposition whose counters rise, and the task that moves them (stopped on drop).
struct Counting {
    exposition: Arc<Exposition>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn counting() -> Counting {
    let exposition = Arc::new(Exposition::start(&exposition_text(0.0)).await.unwrap());
    let moving = exposition.clone();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            moving.set(exposition_text(started.elapsed().as_secs_f64()));
        }
    });
    Counting { exposition, task }
}

fn source(address: &str, query: &str, ignore_null_values: bool) -> PrometheusSource {
    PrometheusSource {
        address: address.to_string(),
        query: query.to_string(),
        ignore_null_values,
        timeout: None,
        headers: Vec::new(),
        query_parameters: Vec::new(),
        namespace: None,
        query_interval: None,
        connection: None,
        auth: None,
    }
}

/// `query`'s answer under KEDA's rules, as one query of its own, at Unix time `at` (or now).
async fn own_answer(address: &str, query: &str, ignore_null_values: bool, at: Option<f64>) -> Result<f64, QueryError> {
    let mut own = source(address, query, ignore_null_values);
    if let Some(at) = at {
        own.query_parameters.push(("time".into(), format!("{at:.3}")));
    }
    let answer =
        prometheus::fetch_query(&reqwest::Client::new(), &own, query, Duration::from_secs(10), 1 << 20).await?;
    prometheus::read(&answer, ignore_null_values)
}

/// Every `/api/v1/query` request Prometheus has answered (any method, any status).
async fn queries_served(address: &str) -> f64 {
    let text = reqwest::get(format!("{address}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("prometheus_http_requests_total{") && l.contains(r#"handler="/api/v1/query""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until Prometheus holds a few seconds of every counter.
async fn history(address: &str) {
    let started = Instant::now();
    loop {
        let enough = own_answer(address, r#"count(count_over_time(http_requests_total[10s]) > 20)"#, false, None).await;
        if enough == Ok(COUNTERS.len() as f64) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no history after 60 s: {enough:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_groupable_shape_answers_each_app_exactly_as_its_own_query() {
    let counting = counting().await;
    let Some(prometheus) = prometheus(&[counting.exposition.addr]).await else { return };
    let address = prometheus.address.as_str();
    history(address).await;
    // One instant for every query, grouped or not, so that the answers must be equal to the bit.
    let at = unix_now() - 1.0;
    let templates = [
        r#"sum(rate(http_requests_total{app="{}", namespace="prod"}[2s]))"#,
        r#"sum by (pod) (irate(http_requests_total{app="{}"}[2s]))"#,
        r#"sum by (app) (increase(http_requests_total{namespace="prod", app="{}"}[3s]))"#,
        r#"sum by (namespace) (rate(http_requests_total{app="{}"}[2s]))"#,
        r#"sum without (pod) (rate(http_requests_total{app="{}", namespace="prod"}[2s]))"#,
        r#"sum without (pod, app, code) (rate(http_requests_total{app="{}", namespace="prod"}[2s]))"#,
        r#"sum without (app) (rate(http_requests_total{app="{}", namespace="prod"}[2s]))"#,
        r#"sum(rate(http_requests_total{app="{}", code=~"2.."}[2s] offset 1s))"#,
        r#"sum(app_rps{app="{}", namespace="prod"})"#,
        r#"avg(app_rps{app="{}"})"#,
        r#"max(app_rps{app="{}", namespace!="dev"})"#,
        r#"min by (pod) (app_rps{app="{}"})"#,
        r#"count(rate(http_requests_total{app="{}"}[2s]))"#,
    ];
    let mut compared = BTreeMap::new();
    for template in templates {
        let queries: Vec<String> = APPS.iter().map(|app| template.replace("{}", app)).collect();
        let found: Vec<_> = queries.iter().map(|q| grouping::recognise(q).expect(q)).collect();
        let members: Vec<PlanMember> =
            queries.iter().zip(&found).map(|(q, r)| PlanMember { query: q, values: &r.values }).collect();
        let batches = grouping::plan(&found[0].shape, &members, QUERY_BUDGET);
        assert_eq!(batches.len(), 1, "{template}: one query for all apps");
        let batch = &batches[0];
        assert_eq!(batch.split.as_deref(), Some("app"), "{template}: grouped");
        let mut grouped = source(address, &batch.query, false);
        grouped.query_parameters.push(("time".into(), format!("{at:.3}")));
        let answer =
            prometheus::fetch_query(&reqwest::Client::new(), &grouped, &batch.query, Duration::from_secs(10), 1 << 20)
                .await
                .unwrap();
        let split = grouping::split(&answer.body, "app").unwrap();
        for (i, app) in &batch.members {
            for ignore_null in [true, false] {
                let own = own_answer(address, &queries[*i], ignore_null, Some(at)).await;
                let mine = grouping::member_value(&split, app, ignore_null);
                assert_eq!(mine, own, "{} (ignoreNullValues {ignore_null}) in {}", queries[*i], batch.query);
                *compared.entry(format!("{:?}", own.map(|_| "a value"))).or_insert(0) += 1;
            }
        }
    }
    // A long grouped query (sent as a POST form) answers the same.
    let template = r#"sum by (pod) (rate(http_requests_total{app="{}"}[2s]))"#;
    let absent: Vec<String> = (0..250).map(|i| format!("absent-{i:03}")).collect();
    let apps: Vec<&str> = APPS.iter().copied().chain(absent.iter().map(String::as_str)).collect();
    let queries: Vec<String> = apps.iter().map(|app| template.replace("{}", app)).collect();
    let found: Vec<_> = queries.iter().map(|q| grouping::recognise(q).expect(q)).collect();
    let members: Vec<PlanMember> =
        queries.iter().zip(&found).map(|(q, r)| PlanMember { query: q, values: &r.values }).collect();
    let batches = grouping::plan(&found[0].shape, &members, QUERY_BUDGET);
    assert_eq!(batches.len(), 1, "{} apps in one query", apps.len());
    assert!(batches[0].query.len() > 2500, "long: {} bytes", batches[0].query.len());
    let mut grouped = source(address, &batches[0].query, false);
    grouped.query_parameters.push(("time".into(), format!("{at:.3}")));
    let answer =
        prometheus::fetch_query(&reqwest::Client::new(), &grouped, &batches[0].query, Duration::from_secs(10), 1 << 20)
            .await
            .unwrap();
    let split = grouping::split(&answer.body, "app").unwrap();
    for (i, app) in batches[0].members.iter().filter(|(i, _)| *i < APPS.len()) {
        let own = own_answer(address, &queries[*i], false, Some(at)).await;
        assert_eq!(grouping::member_value(&split, app, false), own, "{}", queries[*i]);
    }

    // The cases that matter were all met: values, empty results, NaN, several series.
    for kind in ["Ok(\"a value\")", "Err(Empty)", "Err(NotFinite(\"NaN\"))", "Err(MultipleSeries(2))"] {
        assert!(compared.contains_key(kind), "{kind} never compared: {compared:?}");
    }
}

fn target<'a>(address: &'a str, query: &'a str, ignore_null: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("scalerAddress", "spinscale:9500"),
        ("serverAddress", address),
        ("query", query),
        ("threshold", "10"),
        ("metrics", "separate"),
        ("ignoreNullValues", ignore_null),
    ]
}

/// Checks one KEDA poll of a target against the answer of its own query.
fn agrees(poll: &Result<Poll, tonic::Status>, own: &Result<f64, QueryError>, app: &str) -> bool {
    match (poll, own) {
        (Ok(poll), Ok(value)) => (poll.values["spinscale-rps"] - value.max(0.0)).abs() < 1e-9,
        (Err(status), Err(e)) => {
            status.code() == Code::Unavailable
                && status.message().contains(&e.to_string())
                && status.message().contains("grouped query sum by (app)")
                && status.message().contains(&format!("for app=\"{app}\""))
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_read_their_own_share_and_prometheus_gets_one_query_per_group_and_interval() {
    let counting = counting().await;
    let Some(prometheus) = prometheus(&[counting.exposition.addr]).await else { return };
    let address = prometheus.address.clone();
    history(&address).await;
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;

    // One group of gauges (each app twice: lenient and strict about empty and NaN results) ...
    let gauge = r#"sum(app_rps{namespace="prod", app="{}"})"#;
    let mut gauges = Vec::new();
    for app in APPS {
        for ignore_null in ["true", "false"] {
            let query = gauge.replace("{}", app);
            let own = own_answer(&address, &query, ignore_null == "true", None).await;
            let r = so_ref(&format!("gauge-{}-{ignore_null}", gauges.len()), &target(&address, &query, ignore_null));
            gauges.push((app, r, own));
        }
    }
    // ... and one of rates.
    let rate = r#"sum(rate(http_requests_total{app="{}"}[2s]))"#;
    let rates = [("a", 6.0), ("b", 108.0), ("q(1", 1.0)];
    let mut rated = Vec::new();
    for (i, (app, _)) in rates.iter().enumerate() {
        rated.push(so_ref(&format!("rate-{i}"), &target(&address, &rate.replace("{}", app), "false")));
    }

    for (app, r, own) in &gauges {
        let _ = poll_until(&mut client, r, Duration::from_secs(20), |p| agrees(p, own, app)).await;
    }
    for (r, (_, per_second)) in rated.iter().zip(rates) {
        let near = |p: &Result<Poll, tonic::Status>| {
            p.as_ref().is_ok_and(|p| (p.values["spinscale-rps"] - per_second).abs() <= per_second * 0.3)
        };
        poll_until(&mut client, r, Duration::from_secs(20), near).await.unwrap();
    }

    // Every target is live: count what Prometheus gets from here, while KEDA keeps polling.
    let interval = Duration::from_millis(200);
    let (before, started) = (queries_served(&address).await, Instant::now());
    while started.elapsed() < Duration::from_secs(3) {
        for (app, r, own) in &gauges {
            let poll = keda_poll(&mut client, r).await;
            assert!(agrees(&poll, own, app), "{app}: {poll:?}, its own query: {own:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queries = queries_served(&address).await - before;
    let intervals = started.elapsed().as_secs_f64() / interval.as_secs_f64();
    let targets = gauges.len() + rated.len();
    eprintln!("{targets} targets in 2 groups: {queries} queries in {intervals:.1} intervals");
    assert!(queries >= 2.0, "both groups poll: {queries}");
    assert!(
        queries <= 2.0 * (intervals.ceil() + 2.0),
        "at most one query per group and interval: {queries} in {intervals:.1} intervals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_fails_together_names_its_query_and_recovers_together() {
    let counting = counting().await;
    let Some(mut prometheus) = prometheus(&[counting.exposition.addr]).await else { return };
    let address = prometheus.address.clone();
    history(&address).await;
    let server = start_server(fast_config()).await;
    let mut client = connect(&server).await;
    let gauge = r#"sum(app_rps{namespace="prod", app="{}"})"#;
    let mut targets = Vec::new();
    for (i, app) in APPS.iter().enumerate() {
        let query = gauge.replace("{}", app);
        let own = own_answer(&address, &query, true, None).await;
        let r = so_ref(&format!("gauge-{i}"), &target(&address, &query, "true"));
        poll_until(&mut client, &r, Duration::from_secs(20), |p| agrees(p, &own, app)).await.unwrap();
        targets.push((app, r, own));
    }

    prometheus.stop();
    for (app, r, _) in &targets {
        let down = poll_until(&mut client, r, Duration::from_secs(10), Result::is_err).await.unwrap_err();
        assert_eq!(down.code(), Code::Unavailable, "{down:?}");
        let message = down.message();
        assert!(message.contains("grouped query sum by (app) (app_rps{app=~\""), "names the group's query: {message}");
        assert!(message.contains(&format!("for app=\"{app}\"")), "names the app: {message}");
        assert!(message.contains("Connection refused") || message.contains("connect"), "{message}");
    }

    prometheus.restart().await.unwrap();
    for (app, r, own) in &targets {
        let back = poll_until(&mut client, r, Duration::from_secs(20), |p| agrees(p, own, app)).await;
        assert!(agrees(&back, own, app), "{app}: {back:?}");
    }
}

/// How many `/api/v1/query` requests Prometheus gets from one target per query in `queries`,
/// once all have a reading, and in how many seconds.
async fn query_rate(address: &str, config: &str, queries: &[String]) -> (f64, f64) {
    let server = start_server(Config::parse(config).unwrap()).await;
    let mut client = connect(&server).await;
    let refs: Vec<_> =
        queries.iter().enumerate().map(|(i, q)| so_ref(&format!("app-{i}"), &target(address, q, "false"))).collect();
    for r in &refs {
        poll_until(&mut client, r, Duration::from_secs(30), std::result::Result::is_ok).await.unwrap();
    }
    let (before, started) = (queries_served(address).await, Instant::now());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let counted = (queries_served(address).await - before, started.elapsed().as_secs_f64());
    server.shutdown().await.unwrap();
    counted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_apps_cost_one_query_per_interval_instead_of_two_hundred() {
    const APPS: usize = 200;
    let gauges: String = (0..APPS).map(|i| format!("app_rps{{app=\"app-{i:03}\"}} {i}\n")).collect();
    let exposition = Exposition::start(&format!("# TYPE app_rps gauge\n{gauges}")).await.unwrap();
    let Some(prometheus) = prometheus(&[exposition.addr]).await else { return };
    let address = prometheus.address.as_str();
    let started = Instant::now();
    while own_answer(address, "count(app_rps)", false, None).await != Ok(APPS as f64) {
        assert!(started.elapsed() < Duration::from_secs(30), "not scraped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = "collectors:\n  prometheusInterval: 1s\n  timeout: 5s\n  staleAfter: 10s\ntargets:\n  tick: 100ms\n";
    // Equality matchers group; the same queries written with a regex matcher never do.
    let grouped: Vec<String> = (0..APPS).map(|i| format!(r#"sum(app_rps{{app="app-{i:03}"}})"#)).collect();
    let alone: Vec<String> = (0..APPS).map(|i| format!(r#"sum(app_rps{{app=~"app-{i:03}"}})"#)).collect();
    assert!(grouping::recognise(&grouped[0]).is_some() && grouping::recognise(&alone[0]).is_none());
    let (grouped_queries, grouped_seconds) = query_rate(address, config, &grouped).await;
    let (alone_queries, alone_seconds) = query_rate(address, config, &alone).await;
    eprintln!(
        "{APPS} apps, prometheusInterval 1s: grouped {grouped_queries} queries in {grouped_seconds:.2} s \
         ({:.1}/s), alone {alone_queries} in {alone_seconds:.2} s ({:.1}/s)",
        grouped_queries / grouped_seconds,
        alone_queries / alone_seconds
    );
    // The 200 fit in one query: at most one per interval (the window may hold one tick more).
    assert!(grouped_queries >= 1.0 && grouped_queries <= grouped_seconds.ceil() + 1.0, "{grouped_queries}");
    assert!(alone_queries >= 10.0 * grouped_queries, "{alone_queries} alone vs {grouped_queries} grouped");
}
