//! `--fleet`: many apps of every kind on one `spinscale serve`, each upstream counting what it is
//! asked, against what KEDA's own scalers would ask in the same time (one query or one offsets
//! read per ScaledObject per `pollingInterval`):
//! - Prometheus apps written as the seed writes them (`sum(rate(http_requests_total{app="X"}[1m]))`,
//!   grouped) and apps whose queries cannot group (`app=~"X"`), against a real Prometheus that
//!   scrapes one endpoint holding every app's counter; queries/s by Prometheus's own counter;
//! - apps scraped directly (`scrapeUrl`), requests/s by the endpoint's own counter;
//! - Kafka apps, each with its own topic and group, on the real tansu broker behind a relay that
//!   counts Kafka requests (librdkafka's mock cluster where tansu is missing);
//! - spinscale's threads, memory and CPU with all of them, as KEDA runs them (a stream open per
//!   ScaledObject, IsActive and GetMetrics every `pollingInterval`);
//! - then Kafka apps alone at a larger count ([`alone`]), and record → push on tansu with idle
//!   apps ([`wake`]).

mod alone;
mod kafka;
mod keda;
mod probe;
mod upstreams;
mod wake;

use std::time::{Duration, Instant};

use serde_json::json;
use spinscale::grpc::scaled_object_ref;
use spinscale::proto::ScaledObjectRef;
use spinscale_testkit::PrometheusProcess;

use super::report::Report;
use super::server::ServerProcess;
use kafka::Kafka;
use keda::{Client, Pollers, Streams};
use probe::Usage;
use upstreams::{Upstreams, rate_of};

/// The sizes of one fleet run.
#[derive(Clone, Copy, Debug)]
pub struct FleetPlan {
    /// Prometheus apps of the seed's shape (their queries group); the first `goal_grouped` of
    /// them are measured on their own first.
    pub grouped: usize,
    pub goal_grouped: usize,
    /// Prometheus apps whose queries cannot group.
    pub ungrouped: usize,
    /// Apps scraped directly.
    pub scraped: usize,
    /// Kafka apps in the fleet.
    pub kafka: usize,
    /// Kafka apps on one cluster, alone on a fresh server.
    pub kafka_alone: usize,
    /// Idle Kafka apps on tansu while records wake some of them.
    pub idle: usize,
    /// Records produced, each to another idle app.
    pub wakeups: usize,
    /// The records are spread over this window.
    pub spread: Duration,
    /// How long each figure is counted.
    pub window: Duration,
    /// KEDA's `pollingInterval`.
    pub poll: Duration,
    /// `collectors.tailFetchWait` given to the server, if not its default.
    pub tail_fetch_wait: Option<Duration>,
}

impl FleetPlan {
    pub fn of(quick: bool, poll: Duration, tail_fetch_wait: Option<Duration>) -> Self {
        // 2,500 ungroupable queries (1,250 queries/s) took Prometheus to 0.8 of a core on this
        // 2-core machine, and with the rest of the fleet its queries began to time out: 500 of them.
        let full = Self {
            grouped: 4_500,
            goal_grouped: 1_000,
            ungrouped: 500,
            scraped: 2_500,
            kafka: 2_500,
            kafka_alone: 10_000,
            idle: 500,
            wakeups: 200,
            spread: Duration::from_secs(20),
            window: Duration::from_secs(20),
            poll,
            tail_fetch_wait,
        };
        if quick {
            Self {
                grouped: 450,
                goal_grouped: 100,
                ungrouped: 50,
                scraped: 250,
                kafka: 250,
                kafka_alone: 1_000,
                idle: 50,
                wakeups: 20,
                spread: Duration::from_secs(5),
                window: Duration::from_secs(8),
                ..full
            }
        } else {
            full
        }
    }

    /// The server's config: the defaults, but for the tail watch's fetch wait when one is given.
    fn config(&self) -> String {
        self.tail_fetch_wait.map(|w| format!("collectors:\n  tailFetchWait: {}ms\n", w.as_millis())).unwrap_or_default()
    }

    /// The tail watch's fetch wait the server runs with.
    fn fetch_wait(&self) -> Duration {
        self.tail_fetch_wait.unwrap_or(spinscale::config::Config::default().collectors.tail_fetch_wait.0)
    }

    fn total(&self) -> usize {
        self.grouped + self.ungrouped + self.scraped + self.kafka
    }
}

/// How long an app may take to answer its first IsActive.
const REGISTER_LIMIT: Duration = Duration::from_secs(120);
/// Prometheus's scrape interval of the apps' counters.
const PROMETHEUS_SCRAPE: Duration = Duration::from_secs(5);
/// After apps join, this long before counting: every collector has run a few intervals.
const SETTLE: Duration = Duration::from_secs(6);
/// The seed's `threshold`: a Prometheus or scraped app's `spinscale-replicas` is its rate / 10.
const THRESHOLD: f64 = 10.0;

pub async fn run(plan: &FleetPlan, report: &mut Report) -> anyhow::Result<()> {
    report.add_note(format!(
        "fleet: load average {:.1} at start; KEDA's side: one StreamIsActive per app, IsActive + GetMetrics every {:?} \
         per app at a random phase, all on one gRPC connection",
        probe::load_average(),
        plan.poll
    ));
    fleet(plan, report).await?;
    alone::run(plan, report).await?;
    wake::run(plan, report).await?;
    report.add_note(format!("fleet: load average {:.1} at the end", probe::load_average()));
    Ok(())
}

/// The apps KEDA has registered so far, with their open streams and polls.
struct Fleet {
    client: Client,
    refs: Vec<ScaledObjectRef>,
    streams: Vec<Streams>,
    pollers: Vec<Pollers>,
    poll: Duration,
    /// How long the last apps added took to register (their first IsActive answered).
    registered_in: Duration,
}

impl Fleet {
    /// Registers `refs` as KEDA would, opens their streams and starts polling them.
    async fn add(&mut self, refs: Vec<ScaledObjectRef>) -> anyhow::Result<()> {
        let started = Instant::now();
        keda::register(&self.client, &refs, REGISTER_LIMIT).await?;
        self.registered_in = started.elapsed();
        self.streams.push(Streams::open(&self.client, &refs).await?);
        self.pollers.push(Pollers::start(&self.client, &refs, self.poll, 0x5eed_0000 + self.refs.len() as u64));
        self.refs.extend(refs);
        tokio::time::sleep(SETTLE).await;
        Ok(())
    }

    /// A window of `probes`, with the KEDA calls made and failed in it.
    async fn window(&self, probes: &Probes<'_>, length: Duration) -> anyhow::Result<Window> {
        let (calls, failed) = self.polls();
        let mut w = probes.window(length).await?;
        let (calls_after, failed_after) = self.polls();
        w.keda = (calls_after - calls, failed_after - failed);
        w.registered_in = self.registered_in;
        Ok(w)
    }

    fn polls(&self) -> (u64, u64) {
        self.pollers.iter().fold((0, 0), |(c, f), p| {
            (
                c + p.calls.load(std::sync::atomic::Ordering::Relaxed),
                f + p.failed.load(std::sync::atomic::Ordering::Relaxed),
            )
        })
    }
}

/// What the upstreams and the server counted in one window.
struct Window {
    seconds: f64,
    queries: f64,
    query_ranges: f64,
    scrapes: u64,
    kafka: u64,
    kafka_by_api: Vec<(&'static str, u64)>,
    before: Usage,
    after: Usage,
    /// CPU of the upstream processes over the window, in cores: Prometheus, tansu.
    upstream_cores: Vec<(&'static str, f64)>,
    /// KEDA's calls in the window, and how many failed.
    keda: (u64, u64),
    /// How long the apps added before the window took to register.
    registered_in: Duration,
}

impl Window {
    fn per_s(&self, n: f64) -> f64 {
        n / self.seconds
    }

    /// The server's CPU use over the window, in cores (1.0: one core all the time).
    fn cores(&self) -> f64 {
        (self.after.cpu_s - self.before.cpu_s) / self.seconds
    }

    /// `; NAME x % of a core` for an upstream process measured in the window.
    fn upstream_cpu(&self, name: &str) -> String {
        self.upstream_cores
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, c)| format!("; {n} CPU {:.0} % of a core", 100.0 * c))
            .unwrap_or_default()
    }

    /// `; N of M KEDA calls failed` when any did: the figure is of a fleet not all served.
    fn failures(&self) -> String {
        match self.keda {
            (_, 0) => String::new(),
            (calls, failed) => format!("; {failed} of {calls} KEDA calls failed"),
        }
    }

    fn kafka_detail(&self) -> String {
        let shares: Vec<String> = self
            .kafka_by_api
            .iter()
            .filter(|(_, n)| self.per_s(*n as f64) >= 0.05)
            .map(|(api, n)| format!("{api} {:.1}", self.per_s(*n as f64)))
            .collect();
        shares.join(", ")
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "seconds": self.seconds, "prometheus_queries_per_s": self.per_s(self.queries),
            "prometheus_query_ranges_per_s": self.per_s(self.query_ranges),
            "scrapes_per_s": self.per_s(self.scrapes as f64), "kafka_requests_per_s": self.per_s(self.kafka as f64),
            "kafka_by_api_per_s": self.kafka_by_api.iter().map(|(a, n)| (a.to_string(), json!(self.per_s(*n as f64))))
                .collect::<serde_json::Map<_, _>>(),
            "threads": self.after.threads, "rss_mib": self.after.rss_mib, "cpu_cores": self.cores(),
            "keda_calls": self.keda.0, "keda_failed": self.keda.1,
            "registration_s": self.registered_in.as_secs_f64(),
            "upstream_cpu_cores": self.upstream_cores.iter().map(|(n, c)| (n.to_string(), json!(c)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

/// Where one window's counts come from.
struct Probes<'a> {
    pid: u32,
    http: &'a reqwest::Client,
    prometheus: Option<&'a str>,
    upstreams: Option<&'a Upstreams>,
    kafka: Option<&'a Kafka>,
    /// Other processes whose CPU each window reads: Prometheus, tansu.
    upstream_pids: Vec<(&'static str, u32)>,
}

impl<'a> Probes<'a> {
    /// Probes of a server whose only upstream is the Kafka cluster `kafka`.
    fn kafka_only(pid: u32, http: &'a reqwest::Client, kafka: &'a Kafka) -> Self {
        let upstream_pids = kafka.pid().map(|p| ("tansu", p)).into_iter().collect();
        Probes { pid, http, prometheus: None, upstreams: None, kafka: Some(kafka), upstream_pids }
    }
    async fn window(&self, length: Duration) -> anyhow::Result<Window> {
        let (q0, s0, k0, u0) = (self.queries().await?, self.scrapes(), self.kafka_counts(), self.upstream_cpu()?);
        let (before, started) = (probe::usage(self.pid)?, Instant::now());
        tokio::time::sleep(length).await;
        let (after, seconds) = (probe::usage(self.pid)?, started.elapsed().as_secs_f64());
        let (q1, s1, k1, u1) = (self.queries().await?, self.scrapes(), self.kafka_counts(), self.upstream_cpu()?);
        let upstream_cores =
            self.upstream_pids.iter().zip(u0.iter().zip(u1)).map(|((name, _), (a, b))| (*name, (b - a) / seconds));
        let (kafka, kafka_by_api) = kafka::spinscale_requests(&k0, &k1);
        Ok(Window {
            seconds,
            queries: q1.0 - q0.0,
            query_ranges: q1.1 - q0.1,
            scrapes: s1 - s0,
            kafka,
            kafka_by_api,
            before,
            after,
            upstream_cores: upstream_cores.collect(),
            keda: (0, 0),
            registered_in: Duration::ZERO,
        })
    }

    async fn queries(&self) -> anyhow::Result<(f64, f64)> {
        match self.prometheus {
            Some(address) => upstreams::prometheus_queries(self.http, address).await,
            None => Ok((0.0, 0.0)),
        }
    }

    fn scrapes(&self) -> u64 {
        self.upstreams.map_or(0, Upstreams::scrape_requests)
    }

    fn kafka_counts(&self) -> kafka::Counts {
        self.kafka.map(Kafka::counts).unwrap_or_default()
    }

    fn upstream_cpu(&self) -> anyhow::Result<Vec<f64>> {
        self.upstream_pids.iter().map(|(_, pid)| Ok(probe::usage(*pid)?.cpu_s)).collect()
    }
}

/// The seed-style app names: 20 characters, as `webhook-handler` apps are named.
fn app_name(i: usize) -> String {
    format!("webhook-handler-{i:04}")
}

fn prometheus_ref(name: &str, prometheus: &str, query: &str) -> ScaledObjectRef {
    let meta = [("scalerAddress", "bench"), ("serverAddress", prometheus), ("query", query), ("threshold", "10")];
    scaled_object_ref("fleet", name, &meta)
}

fn grouped_query(app: &str) -> String {
    format!("sum(rate(http_requests_total{{app=\"{app}\"}}[1m]))")
}

/// The same series, but a regex matcher: the grouping leaves it alone.
fn ungrouped_query(app: &str) -> String {
    format!("sum(rate(http_requests_total{{app=~\"{app}\"}}[1m]))")
}

pub fn kafka_ref(name: &str, bootstrap: &str, group: &str, topic: &str) -> ScaledObjectRef {
    let meta = [
        ("scalerAddress", "bench"),
        ("bootstrapServers", bootstrap),
        ("consumerGroup", group),
        ("topic", topic),
        ("lagThreshold", "5"),
        // A new group on an empty topic: no lag, the app idle and its partition tailed.
        ("offsetResetPolicy", "earliest"),
    ];
    scaled_object_ref("fleet", name, &meta)
}

/// A queries- or requests-per-second row against KEDA's one per app per poll.
fn rate_row(report: &mut Report, what: &str, ours: f64, apps: usize, poll: Duration, unit: &str, extra: &str) {
    let keda = apps as f64 / poll.as_secs_f64();
    report.row(
        what,
        format!("{ours:.1} {unit}/s{extra}"),
        format!("{keda:.1} {unit}/s (KEDA: 1 per app per {}s)", poll.as_secs()),
        Some(keda / ours.max(1e-9)),
    );
}

async fn fleet(plan: &FleetPlan, report: &mut Report) -> anyhow::Result<()> {
    let prometheus_apps: Vec<String> = (0..plan.grouped + plan.ungrouped).map(app_name).collect();
    let upstreams = Upstreams::start(prometheus_apps.clone(), plan.scraped).await?;
    eprintln!("bench: fleet: Prometheus, {} Kafka topics", plan.kafka);
    let prometheus = PrometheusProcess::start(&[upstreams.addr], PROMETHEUS_SCRAPE).await?;
    let kafka = match Kafka::tansu().await? {
        Some(tansu) => tansu,
        None => Kafka::mock()?,
    };
    let topics: Vec<String> = (0..plan.kafka).map(|i| format!("fleet-{i}")).collect();
    kafka.create_topics(&topics).await?;
    let server = ServerProcess::start_with(&plan.config()).await?;
    let http = reqwest::Client::new();
    let probes = Probes {
        pid: server.pid(),
        http: &http,
        prometheus: Some(&prometheus.address),
        upstreams: Some(&upstreams),
        kafka: Some(&kafka),
        upstream_pids: [("Prometheus", Some(prometheus.pid())), ("tansu", kafka.pid())]
            .into_iter()
            .filter_map(|(name, pid)| Some((name, pid?)))
            .collect(),
    };
    let at_start = probe::usage(server.pid())?;
    let mut fleet = Fleet {
        client: server.connect().await?,
        refs: Vec::new(),
        streams: Vec::new(),
        pollers: Vec::new(),
        poll: plan.poll,
        registered_in: Duration::ZERO,
    };
    let mut figures = serde_json::Map::new();
    let poll = plan.poll;

    // Prometheus: the goal's count of seed-style apps first, then the rest, then the ungroupable.
    let grouped: Vec<ScaledObjectRef> = prometheus_apps[..plan.grouped]
        .iter()
        .map(|app| prometheus_ref(&format!("grouped-{app}"), &prometheus.address, &grouped_query(app)))
        .collect();
    let ungrouped: Vec<ScaledObjectRef> = prometheus_apps[plan.grouped..]
        .iter()
        .map(|app| prometheus_ref(&format!("ungrouped-{app}"), &prometheus.address, &ungrouped_query(app)))
        .collect();
    eprintln!("bench: fleet: {} seed-style Prometheus apps", plan.goal_grouped);
    fleet.add(grouped[..plan.goal_grouped].to_vec()).await?;
    let w = fleet.window(&probes, plan.window).await?;
    let what = format!("Prometheus queries/s, {} seed-style apps (grouped)", plan.goal_grouped);
    let extra = format!("{}{}", w.upstream_cpu("Prometheus"), w.failures());
    rate_row(report, &what, w.per_s(w.queries), plan.goal_grouped, poll, "queries", &extra);
    figures.insert("prometheus_goal_grouped".into(), w.json());

    eprintln!("bench: fleet: {} seed-style Prometheus apps", plan.grouped);
    fleet.add(grouped[plan.goal_grouped..].to_vec()).await?;
    let w = fleet.window(&probes, plan.window).await?;
    let grouped_rate = w.per_s(w.queries);
    let what = format!("Prometheus queries/s, {} seed-style apps (grouped)", plan.grouped);
    let extra = format!("{}{}", w.upstream_cpu("Prometheus"), w.failures());
    rate_row(report, &what, grouped_rate, plan.grouped, poll, "queries", &extra);
    figures.insert("prometheus_grouped".into(), w.json());

    eprintln!("bench: fleet: + {} ungroupable Prometheus apps", plan.ungrouped);
    fleet.add(ungrouped.clone()).await?;
    let w = fleet.window(&probes, plan.window).await?;
    let what = format!("Prometheus queries/s, + {} ungroupable apps (`app=~`), their share", plan.ungrouped);
    let all = w.per_s(w.queries);
    let extra = format!(" ({all:.1}/s in all{}{})", w.upstream_cpu("Prometheus"), w.failures());
    rate_row(report, &what, all - grouped_rate, plan.ungrouped, poll, "queries", &extra);
    figures.insert("prometheus_all".into(), w.json());

    eprintln!("bench: fleet: + {} scraped apps", plan.scraped);
    let scraped: Vec<ScaledObjectRef> = (0..plan.scraped)
        .map(|i| {
            let url = upstreams.scrape_url(i);
            let meta = [
                ("scalerAddress", "bench"),
                ("scrapeUrl", &url),
                ("scrapeMetric", "requests_total"),
                ("threshold", "10"),
            ];
            scaled_object_ref("fleet", &format!("scraped-{i}"), &meta)
        })
        .collect();
    fleet.add(scraped.clone()).await?;
    let w = fleet.window(&probes, plan.window).await?;
    let what = format!("scrape requests/s, {} apps scraped directly", plan.scraped);
    rate_row(report, &what, w.per_s(w.scrapes as f64), plan.scraped, poll, "requests", &w.failures());
    figures.insert("scrape".into(), w.json());

    eprintln!("bench: fleet: + {} Kafka apps on the {}", plan.kafka, kafka.name());
    let kafka_refs: Vec<ScaledObjectRef> = (0..plan.kafka)
        .map(|i| kafka_ref(&format!("kafka-{i}"), &kafka.bootstrap, &format!("fleet-group-{i}"), &topics[i]))
        .collect();
    fleet.add(kafka_refs).await?;
    let w = fleet.window(&probes, plan.window).await?;
    kafka_rows(report, &w, plan.kafka, &kafka, poll, &format!("{} Kafka apps in the fleet", plan.kafka));
    figures.insert("kafka".into(), w.json());

    let n = plan.total();
    report.row(
        &format!("whole fleet ({n} apps, {n} streams): threads / RSS / CPU"),
        format!("{} / {:.0} MiB / {:.0} % of a core", w.after.threads, w.after.rss_mib, 100.0 * w.cores()),
        format!("{} / {:.0} MiB at start, no apps", at_start.threads, at_start.rss_mib),
        None,
    );
    figures.insert("fleet_at_start".into(), json!({"threads": at_start.threads, "rss_mib": at_start.rss_mib}));

    let checked = spot_check(&fleet.client, &http, &prometheus.address, plan, [&grouped, &ungrouped, &scraped]).await?;
    let (good, total) = (checked.iter().filter(|c| c.agrees()).count(), checked.len());
    let failed = checked.iter().filter(|c| c.read.is_err()).count();
    report.row(
        "spot check: apps whose rate equals their own query's (or the counter's)",
        if failed == 0 {
            format!("{good} of {total}")
        } else {
            format!("{good} of {total} ({failed} could not be read)")
        },
        "Prometheus asked each app's own query; the counters' known rates".into(),
        None,
    );
    figures.insert("spot_check".into(), json!(checked.iter().map(SpotCheck::json).collect::<Vec<_>>()));
    let (calls, failed) = fleet.polls();
    report.add_note(format!(
        "fleet: Prometheus {} (scrape interval {:?}), one endpoint with all {} counters, {}-character app names; \
         KEDA polls {calls} calls, {failed} failed",
        "2.42",
        PROMETHEUS_SCRAPE,
        prometheus_apps.len(),
        app_name(0).len(),
    ));
    report.figure("fleet", serde_json::Value::Object(figures));
    drop(fleet);
    drop(server);
    Ok(())
}

/// The rows of a Kafka window: requests/s against KEDA's (one Metadata, OffsetFetch and
/// ListOffsets per app per poll, as its kafka scaler reads an app's lag); or, without a relay,
/// the offsets reads spinscale's own cycle metric counts.
fn kafka_rows(report: &mut Report, w: &Window, apps: usize, kafka: &Kafka, poll: Duration, what: &str) {
    let keda = 3.0 * apps as f64 / poll.as_secs_f64();
    let baseline =
        format!("{keda:.1} requests/s (KEDA: Metadata + OffsetFetch + ListOffsets per app per {}s)", poll.as_secs());
    if kafka.tally.is_some() {
        let ours = w.per_s(w.kafka as f64);
        report.row(
            &format!("Kafka requests/s, {what} ({})", kafka.name()),
            format!("{ours:.1} requests/s ({}{}{})", w.kafka_detail(), w.upstream_cpu("tansu"), w.failures()),
            baseline,
            Some(keda / ours.max(1e-9)),
        );
    } else {
        report.row(
            &format!("Kafka requests/s, {what} ({})", kafka.name()),
            "not counted (no relay in front of the mock cluster)".into(),
            baseline,
            None,
        );
    }
}

struct SpotCheck {
    app: String,
    /// The two rates, or why one could not be read.
    read: Result<(f64, f64), String>,
}

impl SpotCheck {
    fn new(app: String, spinscale: anyhow::Result<f64>, reference: anyhow::Result<f64>) -> Self {
        let read = match (spinscale, reference) {
            (Ok(ours), Ok(theirs)) => Ok((ours, theirs)),
            (Err(e), _) | (_, Err(e)) => Err(format!("{e:#}")),
        };
        Self { app, read }
    }

    /// Within 0.02/s and 2 % of each other.
    fn agrees(&self) -> bool {
        self.read.as_ref().is_ok_and(|(ours, theirs)| (ours - theirs).abs() <= 0.02 + 0.02 * theirs.abs())
    }

    fn json(&self) -> serde_json::Value {
        match &self.read {
            Ok((ours, theirs)) => {
                json!({"app": self.app, "spinscale_rps": ours, "reference_rps": theirs, "agrees": self.agrees()})
            }
            Err(e) => json!({"app": self.app, "error": e, "agrees": false}),
        }
    }
}

/// Ten apps of each kind, spread over the kind: the rate spinscale gives KEDA (replicas × the
/// threshold) against Prometheus's answer to the app's own query (or, for a scraped app, the rate
/// its counter rises at).
async fn spot_check(
    client: &Client,
    http: &reqwest::Client,
    prometheus: &str,
    plan: &FleetPlan,
    [grouped, ungrouped, scraped]: [&Vec<ScaledObjectRef>; 3],
) -> anyhow::Result<Vec<SpotCheck>> {
    let sample = |n: usize| (0..10).map(move |k| k * n / 10).collect::<Vec<_>>();
    let mut checks = Vec::new();
    for (refs, offset, query) in
        [(grouped, 0, grouped_query as fn(&str) -> String), (ungrouped, plan.grouped, ungrouped_query)]
    {
        for i in sample(refs.len()) {
            let app = app_name(offset + i);
            let ours = keda::replicas(client, &refs[i]).await.map(|r| r * THRESHOLD);
            let theirs = upstreams::prometheus_value(http, prometheus, &query(&app)).await;
            checks.push(SpotCheck::new(app, ours, theirs.map(|v| v.unwrap_or(f64::NAN))));
        }
    }
    for i in sample(scraped.len()) {
        let ours = keda::replicas(client, &scraped[i]).await.map(|r| r * THRESHOLD);
        checks.push(SpotCheck::new(format!("scraped-{i}"), ours, Ok(rate_of(i))));
    }
    Ok(checks)
}
