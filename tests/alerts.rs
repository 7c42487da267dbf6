//! The shipped alerts (`deploy/base/prometheusrule.yaml`) under `promtool test rules`, fed with the
//! series the real exporter produces.
//!
//! A spinscale server runs in-process, following a mounted config file. Its `/metrics` is scraped
//! right after start, with a healthy Prometheus source, after that source stops listening, with a
//! source nothing ever listened on, after a target activated with no stream open, and after a
//! rejected and an applied config change. The series names, label sets and values read from those
//! scrapes become the input series of a promtool unit test, laid out on a minute timeline. The
//! rules file is the PrometheusRule's `spec.groups`, written out unchanged, so the shipped rules
//! are what runs.
//!
//! | alert | fires for | stays silent for |
//! |---|---|---|
//! | `SpinscaleSourceDown` | a source down 2 min (stopped, or never answered) | a healthy source; a source down under 2 min |
//! | `SpinscaleSignalStale` | a reading older than 60 s for 2 min (a stopped source) | a healthy source; a never-answered source (no age series) |
//! | `SpinscalePushesFailing` | an activation without a stream every minute for 5 min | no failures; one failure alone; 5 min after they stop |
//! | `SpinscaleConfigRejected` | the first rejected config (0 → 1), for 10 min | applied configs; the same counter once 10 min have passed |
//!
//! Prometheus attaches the scrape target's labels; the alerts' annotations use one (`pod`). The
//! input series carry the labels the ServiceMonitor's scrape adds, after checking that none of them
//! collides with (and so would rename) an exporter label.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde_json::{Value as Json, json};
use spinscale::config::Config;
use spinscale::reload::ConfigSource;
use spinscale::server::Server;
use support::{components_required, connect, poll_until, so_ref, start_server};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const PROMETHEUS_RULE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base/prometheusrule.yaml");

/// Labels the Prometheus Operator's ServiceMonitor scrape (deploy/base/servicemonitor.yaml, port
/// `http` of Service `spinscale`) attaches to every series of one pod.
const SCRAPE_TARGET: &[(&str, &str)] = &[
    ("job", "spinscale"),
    ("namespace", "spinscale"),
    ("service", "spinscale"),
    ("endpoint", "http"),
    ("container", "spinscale"),
    ("pod", "spinscale-6b8f9d7c5-q4m2x"),
    ("instance", "10.244.1.17:9501"),
];

/// A query with quotes, braces, commas and `=`: the `source` label carries it, so it tests every
/// escape on the way from the exposition to promtool.
const QUERY: &str = r#"sum(rate(http_requests_total{job="web",code=~"2.."}[1m]))"#;

const BASE: &str =
    "collectors:\n  prometheusInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n";
/// The `web` profile, used by a live target.
const FITS: &str = "profiles:\n  web:\n    targetRps: \"10\"\n";
/// Drops the `web` profile: valid alone, but the live target needs it.
const MISFIT: &str = "";
/// Changes the `web` profile: applies.
const CHANGED: &str = "profiles:\n  web:\n    targetRps: \"20\"\n";

// === the exporter ===

type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

/// One `GET /metrics`, parsed.
struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    async fn of(server: &Server) -> Self {
        let response = reqwest::get(format!("http://{}/metrics", server.http_addr)).await.expect("GET /metrics");
        assert!(response.status().is_success(), "/metrics answers {}", response.status());
        let text = response.text().await.expect("body");
        let samples = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| parse_sample(l).unwrap_or_else(|| panic!("not an OpenMetrics sample line: {l:?}\n{text}")))
            .collect();
        Self { text, samples }
    }

    /// The sample named `name` whose labels include `labels`, if exactly one is.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        let mut found = self
            .samples
            .iter()
            .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)));
        let first = found.next();
        assert!(found.next().is_none(), "more than one {name} with {labels:?}:\n{}", self.text);
        first
    }

    fn one(&self, name: &str, labels: &[(&str, &str)]) -> &Sample {
        self.get(name, labels).unwrap_or_else(|| panic!("no {name} with {labels:?} in /metrics:\n{}", self.text))
    }

    /// The sample of a source family for the source at `address` (its `source` label names it).
    fn source(&self, name: &str, address: &str) -> Option<&Sample> {
        let mut found = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels.get("source").is_some_and(|v| v.contains(address)));
        let first = found.next();
        assert!(found.next().is_none(), "more than one {name} for {address}:\n{}", self.text);
        first
    }
}

/// One sample line of the text format: name, labels (with `\\`, `\"` and `\n` escapes) and value.
/// (`prometheus-parse` splits labels on `,` and `=` and keeps escapes, which the `source` label
/// defeats.)
fn parse_sample(line: &str) -> Option<Sample> {
    let split = line.find(['{', ' '])?;
    let (name, mut rest) = line.split_at(split);
    let mut labels = Labels::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' if key.trim().is_empty() => break i + 1,
                ',' if key.trim().is_empty() => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            c => value.push(c),
                        }
                    }
                    labels.insert(std::mem::take(&mut key).trim().to_string(), value);
                }
                c => key.push(c),
            }
        };
        rest = &inner[end..];
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample { name: name.to_string(), labels, value })
}

/// Scrapes until `done` holds (5 s at most), and returns that scrape.
async fn scrape_until(server: &Server, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let scrape = Scrape::of(server).await;
        if done(&scrape) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "{what}: not seen within 5 s; last /metrics:\n{}", scrape.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Prometheus HTTP API that answers every query with one series at 35, until stopped; then
/// nothing listens on its port.
struct FakePrometheus {
    addr: SocketAddr,
    running: Option<(CancellationToken, JoinHandle<()>)>,
}

impl FakePrometheus {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let answer =
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"35"]}]}}"#;
        let app = Router::new().route("/api/v1/query", get(move || async move { answer }));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned()).await;
        });
        Self { addr, running: Some((stop, task)) }
    }

    fn address(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            stop.cancel();
            tokio::time::timeout(Duration::from_secs(5), task).await.expect("stops").expect("joins");
        }
    }
}

/// An address where nothing listens.
async fn nothing_listens() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    format!("http://{}", listener.local_addr().expect("address"))
}

fn prometheus_meta<'a>(address: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut meta =
        vec![("scalerAddress", "spinscale:9500"), ("serverAddress", address), ("query", QUERY), ("threshold", "10")];
    meta.extend_from_slice(extra);
    meta
}

/// Replaces the mounted file at once, as the kubelet's symlink swap does: never half written.
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, path).expect("replace config");
}

/// What the exporter showed, for the alerts' series.
struct Observed {
    /// `spinscale_source_up` and `spinscale_source_reading_age_seconds` of a source that stays up.
    steady_up: Sample,
    steady_age: Sample,
    /// The same of a source that answered, then stopped listening.
    stopped_up_before: Sample,
    stopped_age_before: Sample,
    stopped_up_after: Sample,
    /// Of a source nothing ever listened on (it has no age series).
    dead_up: Sample,
    /// `spinscale_push_failures_total` at start, and after one activation without a stream.
    push_failures_start: Sample,
    push_failures_after_one: Sample,
    /// `spinscale_config_reload_total` by result, at start and after one rejected and one applied change.
    rejected_start: Sample,
    rejected_after: Sample,
    success_start: Sample,
    success_after: Sample,
}

async fn observe() -> Observed {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yaml");
    write_config(&path, &format!("{BASE}{FITS}"));
    let mut server = start_server(Config::load(&path).expect("config")).await;
    server.follow_config(ConfigSource::File(path.clone()));

    // Right after start: every reload result and the push failures exist, at 0.
    let start = Scrape::of(&server).await;
    let rejected_start = start.one("spinscale_config_reload_total", &[("result", "rejected")]).clone();
    let success_start = start.one("spinscale_config_reload_total", &[("result", "success")]).clone();
    let push_failures_start = start.one("spinscale_push_failures_total", &[]).clone();
    assert_eq!(rejected_start.value, 0.0, "the rejected counter is exported at 0 from start:\n{}", start.text);
    assert_eq!(success_start.value, 0.0);
    assert_eq!(push_failures_start.value, 0.0);
    assert_eq!(rejected_start.labels, Labels::from([("result".into(), "rejected".into())]));
    assert!(push_failures_start.labels.is_empty(), "{push_failures_start:?}");
    assert!(start.get("spinscale_source_up", &[]).is_none(), "no source before a target:\n{}", start.text);

    // Targets polled as KEDA's `external` trigger does: IsActive, no stream open.
    let steady = FakePrometheus::start().await;
    let mut stopped = FakePrometheus::start().await;
    let dead = nothing_listens().await;
    let (steady_address, stopped_address) = (steady.address(), stopped.address());
    let mut client = connect(&server).await;
    let active = |p: &Result<support::Poll, tonic::Status>| p.as_ref().is_ok_and(|p| p.active);
    let r = so_ref("steady", &prometheus_meta(&steady_address, &[("profile", "web")]));
    poll_until(&mut client, &r, Duration::from_secs(5), active).await.expect("steady is active");
    let one = Scrape::of(&server).await;
    let push_failures_after_one = one.one("spinscale_push_failures_total", &[]).clone();
    assert_eq!(push_failures_after_one.value, 1.0, "one activation, no stream to push it on:\n{}", one.text);
    let r = so_ref("stopped", &prometheus_meta(&stopped_address, &[]));
    poll_until(&mut client, &r, Duration::from_secs(5), active).await.expect("stopped is active");
    let status = client.is_active(so_ref("dead", &prometheus_meta(&dead, &[]))).await.expect_err("nothing listens");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    let healthy = scrape_until(&server, "both sources up, the dead one down", |s| {
        s.source("spinscale_source_up", &steady_address).is_some_and(|u| u.value == 1.0)
            && s.source("spinscale_source_up", &stopped_address).is_some_and(|u| u.value == 1.0)
            && s.source("spinscale_source_up", &dead).is_some_and(|u| u.value == 0.0)
    })
    .await;
    assert_eq!(healthy.one("spinscale_push_failures_total", &[]).value, 2.0, "one per activation:\n{}", healthy.text);
    let steady_up = healthy.source("spinscale_source_up", &steady_address).cloned().expect("steady up");
    let stopped_up_before = healthy.source("spinscale_source_up", &stopped_address).cloned().expect("stopped up");
    let dead_up = healthy.source("spinscale_source_up", &dead).cloned().expect("dead up");
    let steady_age = healthy.source("spinscale_source_reading_age_seconds", &steady_address).cloned().expect("age");
    let stopped_age_before =
        healthy.source("spinscale_source_reading_age_seconds", &stopped_address).cloned().expect("age");
    for (sample, address) in [(&steady_up, &steady_address), (&dead_up, &dead)] {
        let source = &sample.labels["source"];
        assert_eq!(sample.labels.len(), 2, "kind and source: {sample:?}");
        assert_eq!(sample.labels["kind"], "prometheus");
        assert_eq!(*source, format!("prometheus {address} query {QUERY:?}"), "the label keeps the query verbatim");
    }
    for (age, up) in [(&steady_age, &steady_up), (&stopped_age_before, &stopped_up_before)] {
        assert!(age.value > 0.0 && age.value < 3.0, "a fresh reading: {age:?}");
        assert_eq!(age.labels, up.labels, "the age and up series of a source share their labels");
    }
    assert!(
        healthy.source("spinscale_source_reading_age_seconds", &dead).is_none(),
        "a source that never answered has no reading, so no age series:\n{}",
        healthy.text
    );

    // The stopped source: down, and its reading ages by the second; the others unchanged.
    stopped.stop().await;
    let down = scrape_until(&server, "the stopped source down", |s| {
        s.source("spinscale_source_up", &stopped_address).is_some_and(|u| u.value == 0.0)
    })
    .await;
    let first_age = down.source("spinscale_source_reading_age_seconds", &stopped_address).expect("age stays").value;
    let first_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = Scrape::of(&server).await;
    let elapsed = first_at.elapsed().as_secs_f64();
    let later_age = later.source("spinscale_source_reading_age_seconds", &stopped_address).expect("age").value;
    assert!(
        (later_age - first_age - elapsed).abs() < 0.3,
        "the age grows with the clock: {first_age} then {later_age} after {elapsed} s"
    );
    let stopped_up_after = later.source("spinscale_source_up", &stopped_address).cloned().expect("stopped up");
    assert_eq!(stopped_up_after.value, 0.0);
    assert_eq!(stopped_up_after.labels, stopped_up_before.labels, "the same series, now 0");
    assert_eq!(later.source("spinscale_source_up", &steady_address).map(|s| s.value), Some(1.0));
    assert!(later.source("spinscale_source_reading_age_seconds", &steady_address).is_some_and(|a| a.value < 3.0));
    assert_eq!(later.source("spinscale_source_up", &dead).map(|s| s.value), Some(0.0));
    assert!(later.source("spinscale_source_reading_age_seconds", &dead).is_none());

    // The mounted file: a change that no longer fits the live `steady` target (its profile would
    // vanish) is rejected and counted; then one that fits is applied.
    write_config(&path, &format!("{BASE}{MISFIT}"));
    let rejected = scrape_until(&server, "the rejected reload counted", |s| {
        s.get("spinscale_config_reload_total", &[("result", "rejected")]).is_some_and(|c| c.value >= 1.0)
    })
    .await;
    assert!(server.registry.config().profiles.contains_key("web"), "the previous config stays");
    write_config(&path, &format!("{BASE}{CHANGED}"));
    let applied = scrape_until(&server, "the applied reload counted", |s| {
        s.get("spinscale_config_reload_total", &[("result", "success")]).is_some_and(|c| c.value >= 1.0)
    })
    .await;
    assert_eq!(server.registry.config().profiles["web"]["targetRps"], "20");
    let rejected_after = applied.one("spinscale_config_reload_total", &[("result", "rejected")]).clone();
    let success_after = applied.one("spinscale_config_reload_total", &[("result", "success")]).clone();
    assert_eq!(rejected.one("spinscale_config_reload_total", &[("result", "rejected")]).value, 1.0);
    assert_eq!((rejected_after.value, success_after.value), (1.0, 1.0), "{}", applied.text);
    assert_eq!(rejected_after.labels, rejected_start.labels, "the series exported at 0 is the one that counts");

    drop(client);
    server.shutdown().await.expect("shutdown");
    Observed {
        steady_up,
        steady_age,
        stopped_up_before,
        stopped_age_before,
        stopped_up_after,
        dead_up,
        push_failures_start,
        push_failures_after_one,
        rejected_start,
        rejected_after,
        success_start,
        success_after,
    }
}

// === the rules and the promtool test ===

/// One alerting rule of the PrometheusRule.
struct Rule {
    alert: String,
    labels: Labels,
    annotations: Labels,
}

/// The PrometheusRule's `spec.groups` as a plain rules file, and its alerting rules.
fn shipped_rules() -> (String, Vec<Rule>) {
    let text = std::fs::read_to_string(PROMETHEUS_RULE).expect("read the PrometheusRule");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("the PrometheusRule is YAML");
    assert_eq!(doc["kind"].as_str(), Some("PrometheusRule"));
    let groups = doc["spec"]["groups"].clone();
    let strings = |v: &serde_yaml_ng::Value| -> Labels {
        serde_yaml_ng::from_value::<Option<Labels>>(v.clone()).expect("a map of strings").unwrap_or_default()
    };
    let mut rules = Vec::new();
    for group in groups.as_sequence().expect("spec.groups is a list") {
        for rule in group["rules"].as_sequence().expect("rules is a list") {
            if let Some(alert) = rule["alert"].as_str() {
                rules.push(Rule {
                    alert: alert.to_string(),
                    labels: strings(&rule["labels"]),
                    annotations: strings(&rule["annotations"]),
                });
            }
        }
    }
    let file = serde_yaml_ng::to_string(&BTreeMap::from([("groups", groups)])).expect("rules file");
    (file, rules)
}

/// A series selector in PromQL notation, label values escaped.
fn selector(name: &str, labels: &Labels) -> String {
    let escape = |v: &str| v.replace('\\', r"\\").replace('"', r#"\""#).replace('\n', r"\n");
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    format!("{name}{{{}}}", pairs.join(","))
}

/// The labels Prometheus stores for an exported series: the exporter's, plus the scrape target's.
fn scraped(sample: &Sample) -> Labels {
    let mut labels = sample.labels.clone();
    for (k, v) in SCRAPE_TARGET {
        assert!(
            labels.insert((*k).to_string(), (*v).to_string()).is_none(),
            "{} has a `{k}` label: the scrape would rename it to exported_{k}, and the alert would not see it",
            sample.name
        );
    }
    labels
}

/// Expands `{{ $labels.NAME }}` as Prometheus does (a missing label expands to nothing).
fn render(template: &str, labels: &Labels) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let close = rest[open..].find("}}").map(|c| open + c).expect("an unclosed {{ in an annotation");
        let inner = rest[open + 2..close].trim();
        let name = inner
            .strip_prefix("$labels.")
            .unwrap_or_else(|| panic!("annotation template {{{{ {inner} }}}}: render() knows only $labels.NAME"));
        out.push_str(labels.get(name).map_or("", String::as_str));
        rest = &rest[close + 2..];
    }
    out.push_str(rest);
    out
}

struct Series {
    sample: Sample,
    values: String,
}

/// At `minute`, `alert` fires exactly for these series (their observed samples).
struct Check {
    minute: u32,
    alert: &'static str,
    firing: Vec<Sample>,
}

struct Group {
    name: &'static str,
    series: Vec<Series>,
    checks: Vec<Check>,
}

fn check(minute: u32, alert: &'static str, firing: &[&Sample]) -> Check {
    Check { minute, alert, firing: firing.iter().map(|s| (*s).clone()).collect() }
}

fn series(sample: &Sample, values: String) -> Series {
    Series { sample: sample.clone(), values }
}

/// The timelines (one sample a minute): every value and label set is one the exporter showed.
fn groups(o: &Observed) -> Vec<Group> {
    let (up, down) = (o.stopped_up_before.value, o.stopped_up_after.value);
    let dead = o.dead_up.value;
    let steady = o.steady_up.value;
    // The stopped source's last good reading is the one the minute-4 scrape saw, `fresh` old; from
    // then on its age grows with the clock, as observed: 60 s a minute.
    let fresh = o.stopped_age_before.value;
    let p0 = o.push_failures_start.value;
    let p1 = o.push_failures_after_one.value;
    let step = p1 - p0;
    let (r0, r1) = (o.rejected_start.value, o.rejected_after.value);
    let (s0, s1) = (o.success_start.value, o.success_after.value);
    const DOWN: &str = "SpinscaleSourceDown";
    const STALE: &str = "SpinscaleSignalStale";
    const PUSHES: &str = "SpinscalePushesFailing";
    const REJECTED: &str = "SpinscaleConfigRejected";
    vec![
        Group {
            name: "sources: one stays up, one stops listening at minute 5, one never answered",
            series: vec![
                series(&o.steady_up, format!("{steady}x20")),
                series(&o.steady_age, format!("{}x20", o.steady_age.value)),
                series(&o.stopped_up_before, format!("{up}x4 {down}x15")),
                series(&o.stopped_age_before, format!("{fresh}x4 {}+60x15", fresh + 60.0)),
                // No age series: the exporter has none for a source without a good reading.
                series(&o.dead_up, format!("{dead}x20")),
            ],
            checks: vec![
                check(1, DOWN, &[]),
                check(2, DOWN, &[&o.dead_up]),
                check(6, DOWN, &[&o.dead_up]),
                check(7, DOWN, &[&o.dead_up, &o.stopped_up_before]),
                check(20, DOWN, &[&o.dead_up, &o.stopped_up_before]),
                check(4, STALE, &[]),
                check(6, STALE, &[]),
                check(7, STALE, &[&o.stopped_age_before]),
                check(20, STALE, &[&o.stopped_age_before]),
            ],
        },
        Group {
            name: "pushes: no activation without a stream",
            series: vec![series(&o.push_failures_start, format!("{p0}x30"))],
            checks: vec![check(5, PUSHES, &[]), check(10, PUSHES, &[]), check(30, PUSHES, &[])],
        },
        Group {
            name: "pushes: one activation without a stream, at minute 5",
            series: vec![series(&o.push_failures_start, format!("{p0}x4 {p1}x25"))],
            checks: vec![check(5, PUSHES, &[]), check(9, PUSHES, &[]), check(10, PUSHES, &[]), check(15, PUSHES, &[])],
        },
        Group {
            name: "pushes: an activation without a stream every minute from minute 5 to 15",
            series: vec![series(&o.push_failures_start, format!("{p0}x4 {p1}+{step}x10 {}x15", p1 + 10.0 * step))],
            checks: vec![
                check(9, PUSHES, &[]),
                check(10, PUSHES, &[&o.push_failures_start]),
                check(14, PUSHES, &[&o.push_failures_start]),
                check(21, PUSHES, &[]),
            ],
        },
        Group {
            name: "config: the first change rejected at minute 5, one applied at minute 10",
            series: vec![
                series(&o.rejected_start, format!("{r0}x4 {r1}x25")),
                series(&o.success_start, format!("{s0}x9 {s1}x20")),
            ],
            checks: vec![
                check(4, REJECTED, &[]),
                check(5, REJECTED, &[&o.rejected_start]),
                check(10, REJECTED, &[&o.rejected_start]),
                check(13, REJECTED, &[&o.rejected_start]),
                check(16, REJECTED, &[]),
                check(29, REJECTED, &[]),
            ],
        },
        Group {
            name: "config: only applied changes",
            series: vec![
                series(&o.rejected_start, format!("{r0}x30")),
                series(&o.success_start, format!("{s0}x4 {s1}+{}x25", s1 - s0)),
            ],
            checks: vec![check(5, REJECTED, &[]), check(10, REJECTED, &[]), check(30, REJECTED, &[])],
        },
    ]
}

/// The promtool unit test file (YAML) for `groups` against `rules`, read from `rules_file`.
fn unit_test(rules_file: &str, rules: &[Rule], groups: &[Group]) -> String {
    let rule = |alert: &str| {
        rules.iter().find(|r| r.alert == alert).unwrap_or_else(|| panic!("no alert {alert} in {PROMETHEUS_RULE}"))
    };
    let tests: Vec<Json> = groups
        .iter()
        .map(|g| {
            let input: Vec<Json> = g
                .series
                .iter()
                .map(|s| json!({ "series": selector(&s.sample.name, &scraped(&s.sample)), "values": s.values }))
                .collect();
            let checks: Vec<Json> = g
                .checks
                .iter()
                .map(|c| {
                    let r = rule(c.alert);
                    let alerts: Vec<Json> = c
                        .firing
                        .iter()
                        .map(|s| {
                            let series_labels = scraped(s);
                            let mut labels = series_labels.clone();
                            labels.extend(r.labels.clone());
                            let annotations: Labels =
                                r.annotations.iter().map(|(k, t)| (k.clone(), render(t, &series_labels))).collect();
                            json!({ "exp_labels": labels, "exp_annotations": annotations })
                        })
                        .collect();
                    json!({ "eval_time": format!("{}m", c.minute), "alertname": c.alert, "exp_alerts": alerts })
                })
                .collect();
            json!({ "name": g.name, "interval": "1m", "input_series": input, "alert_rule_test": checks })
        })
        .collect();
    let file = json!({ "rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests });
    serde_yaml_ng::to_string(&file).expect("unit test YAML")
}

/// `promtool` on PATH (Debian's `prometheus` package ships it).
fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("promtool")).find(|p| p.is_file())
}

fn run(promtool: &Path, args: &[&str], dir: &Path, shown: &[(&str, &str)]) {
    let out = Command::new(promtool).args(args).current_dir(dir).output().expect("run promtool");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let files: Vec<String> = shown.iter().map(|(name, text)| format!("--- {name}\n{text}")).collect();
        panic!("promtool {} failed:\n{report}\n{}", args.join(" "), files.join("\n"));
    }
    println!("promtool {}:\n{report}", args.join(" "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_alert_fires_and_stays_silent_on_the_series_the_exporter_produces() {
    let Some(promtool) = promtool() else {
        assert!(
            !components_required(),
            "`promtool` is required (Debian package `prometheus`; scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: no `promtool` on PATH (Debian package `prometheus`; scripts/test.sh installs it)");
        return;
    };
    let (rules_file, rules) = shipped_rules();
    let observed = observe().await;
    let groups = groups(&observed);

    // Every shipped alert is tested both firing and silent; every tested alert is shipped.
    for r in &rules {
        let checks: Vec<&Check> = groups.iter().flat_map(|g| &g.checks).filter(|c| c.alert == r.alert).collect();
        assert!(checks.iter().any(|c| !c.firing.is_empty()), "{} is never tested firing", r.alert);
        assert!(checks.iter().any(|c| c.firing.is_empty()), "{} is never tested silent", r.alert);
    }
    for c in groups.iter().flat_map(|g| &g.checks) {
        assert!(rules.iter().any(|r| r.alert == c.alert), "{} is not in {PROMETHEUS_RULE}", c.alert);
    }
    // Every label an annotation names is on the alerted series (the exporter's or the scrape's).
    for c in groups.iter().flat_map(|g| &g.checks) {
        let r = rules.iter().find(|r| r.alert == c.alert).expect("shipped");
        for s in &c.firing {
            let labels = scraped(s);
            for (key, template) in &r.annotations {
                for name in template.split("$labels.").skip(1) {
                    let name: String = name.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    assert!(labels.contains_key(&name), "{}'s {key} names `{name}`, which {} lacks", r.alert, s.name);
                }
            }
        }
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let test = unit_test("rules.yaml", &rules, &groups);
    std::fs::write(dir.path().join("rules.yaml"), &rules_file).expect("write rules");
    std::fs::write(dir.path().join("alerts.test.yaml"), &test).expect("write test");
    println!("--- alerts.test.yaml\n{test}");
    let shown = [("rules.yaml", rules_file.as_str()), ("alerts.test.yaml", test.as_str())];
    run(&promtool, &["check", "rules", "rules.yaml"], dir.path(), &shown);
    run(&promtool, &["test", "rules", "alerts.test.yaml"], dir.path(), &shown);
}
