//! Wake-ups: an event on an idle source (a Kafka record, a counter increase on a scraped endpoint)
//! until `StreamIsActive` says `true`, against a KEDA-style poller that calls `IsActive` every
//! `poll` seconds at its own phase, both watching the same events in the same run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tonic::transport::Channel;

use super::report::{Report, ms, ms_value};
use super::server::ServerProcess;
use super::{Plan, Rng, percentile, schedule};
use spinscale::grpc::scaled_object_ref;
use spinscale::proto::ScaledObjectRef;
use spinscale::proto::external_scaler_client::ExternalScalerClient;
use spinscale_testkit::Exposition;

type Client = ExternalScalerClient<Channel>;

/// One idle target and what happened to it.
struct Wake {
    r: ScaledObjectRef,
    event: Option<Instant>,
    pushed: Option<Instant>,
    polled: Option<Instant>,
}

type Wakes = Arc<Mutex<Vec<Wake>>>;

pub async fn run(server: &ServerProcess, plan: &Plan, poll: Duration, report: &mut Report) -> anyhow::Result<()> {
    let kafka = MockCluster::new(1).context("mock Kafka cluster")?;
    let bootstrap = kafka.bootstrap_servers();
    let n = plan.wakeups;
    for i in 0..n {
        kafka.create_topic(&format!("wake-{i}"), 1, 1)?;
    }
    let mut endpoints = Vec::with_capacity(n);
    for _ in 0..n {
        endpoints.push(Exposition::start("requests_total 0\n").await?);
    }
    let endpoints = Arc::new(endpoints);

    let mut targets = Vec::with_capacity(2 * n);
    for i in 0..n {
        let (topic, group) = (format!("wake-{i}"), format!("group-{i}"));
        // A new topic and a new group: with `earliest`, the lag is the whole (empty) log.
        let meta = [
            ("scalerAddress", "bench"),
            ("bootstrapServers", &bootstrap),
            ("consumerGroup", &group),
            ("topic", &topic),
            ("offsetResetPolicy", "earliest"),
        ];
        targets.push(scaled_object_ref("bench", &format!("kafka-{i}"), &meta));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let url = format!("http://{}/metrics", e.addr);
        let meta = [("scalerAddress", "bench"), ("scrapeUrl", url.as_str()), ("scrapeMetric", "requests_total")];
        targets.push(scaled_object_ref("bench", &format!("scrape-{i}"), &meta));
    }
    let client = server.connect().await?;
    wait_idle(&client, &targets).await?;
    let wakes: Wakes = Arc::new(Mutex::new(
        targets.into_iter().map(|r| Wake { r, event: None, pushed: None, polled: None }).collect(),
    ));
    let watchers = watch_streams(&client, &wakes).await?;
    let pollers = start_pollers(&client, &wakes, poll);
    // Let every source see its group idle once more, so its tail watch is assigned.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let traffic = keep_counting(endpoints.clone(), wakes.clone());
    fire_events(&wakes, plan, &bootstrap, &endpoints).await?;
    let deadline = Instant::now() + poll + Duration::from_secs(10);
    while Instant::now() < deadline && !all_seen(&wakes) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watchers.iter().for_each(tokio::task::JoinHandle::abort);
    pollers.iter().for_each(tokio::task::JoinHandle::abort);
    traffic.abort();
    let wakes = wakes.lock().map_err(|_| anyhow::anyhow!("wake-up records poisoned"))?;
    summarize("Kafka record", &wakes[..n], poll, report, "kafka");
    summarize("scraped counter +1", &wakes[n..], poll, report, "scrape");
    report.add_note(format!(
        "wake-ups: {n} idle Kafka topics (mock cluster; offsets poll 1 s, tail watch fetch wait 20 ms) and {n} scraped \
         endpoints (scrape interval 1 s, the default), events spread over {:?}; baseline: IsActive every {:?} per target at a \
         random phase, as KEDA's scale loop polls",
        plan.spread, poll
    ));
    drop(kafka);
    Ok(())
}

/// Registers every target (as KEDA's first poll does) and waits until each answers `false`.
async fn wait_idle(client: &Client, targets: &[ScaledObjectRef]) -> anyhow::Result<()> {
    let waits = targets.iter().map(|r| async {
        let started = Instant::now();
        let mut c = client.clone();
        c.get_metric_spec(r.clone()).await?;
        loop {
            let answer = c.is_active(r.clone()).await.map(|a| a.into_inner().result);
            if matches!(answer, Ok(false)) {
                return Ok(());
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "target {} never idle: {answer:?}", r.name);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    futures_util::future::try_join_all(waits).await?;
    Ok(())
}

async fn watch_streams(client: &Client, wakes: &Wakes) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let refs: Vec<ScaledObjectRef> =
        wakes.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.iter().map(|w| w.r.clone()).collect();
    let mut tasks = Vec::with_capacity(refs.len());
    for (i, r) in refs.into_iter().enumerate() {
        let mut stream = client.clone().stream_is_active(r).await?.into_inner();
        let wakes = wakes.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                if message.result {
                    let now = Instant::now();
                    if let Ok(mut w) = wakes.lock() {
                        w[i].pushed.get_or_insert(now);
                    }
                }
            }
        }));
    }
    Ok(tasks)
}

fn start_pollers(client: &Client, wakes: &Wakes, poll: Duration) -> Vec<tokio::task::JoinHandle<()>> {
    let refs: Vec<ScaledObjectRef> = wakes.lock().map(|w| w.iter().map(|w| w.r.clone()).collect()).unwrap_or_default();
    let mut rng = Rng(0x5eed_1234);
    refs.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let (mut client, wakes) = (client.clone(), wakes.clone());
            let phase = poll.mul_f64(rng.unit());
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, poll);
                loop {
                    ticker.tick().await;
                    let active = client.is_active(r.clone()).await.is_ok_and(|a| a.into_inner().result);
                    let now = Instant::now();
                    if let Ok(mut w) = wakes.lock()
                        && active
                        && w[i].event.is_some()
                    {
                        w[i].polled.get_or_insert(now);
                    }
                }
            })
        })
        .collect()
}

/// Fires each target's event once, in a shuffled order spread over the plan's window.
async fn fire_events(wakes: &Wakes, plan: &Plan, bootstrap: &str, endpoints: &[Exposition]) -> anyhow::Result<()> {
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "0").create()?;
    let n = plan.wakeups;
    let start = tokio::time::Instant::now();
    for (at, i) in schedule(2 * n, plan.spread, 0xfeed_beef) {
        tokio::time::sleep_until(start + at).await;
        let now = Instant::now();
        if i < n {
            producer
                .send(BaseRecord::<(), _>::to(&format!("wake-{i}")).payload("wake up"))
                .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        } else {
            endpoints[i - n].set("requests_total 1\n");
        }
        if let Ok(mut w) = wakes.lock() {
            w[i].event = Some(now);
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(5))?;
    Ok(())
}

/// Requests go on after the first one: a woken endpoint's counter keeps rising, so a poller that
/// looks later than the rate window still finds the app busy (as it would be).
fn keep_counting(endpoints: Arc<Vec<Exposition>>, wakes: Wakes) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let n = endpoints.len();
        for count in 2u64.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let woken: Vec<bool> =
                wakes.lock().map(|w| w[n..].iter().map(|w| w.event.is_some()).collect()).unwrap_or_default();
            for (endpoint, _) in endpoints.iter().zip(woken).filter(|(_, woken)| *woken) {
                endpoint.set(format!("requests_total {count}\n"));
            }
        }
    })
}

fn all_seen(wakes: &Wakes) -> bool {
    wakes.lock().is_ok_and(|w| w.iter().all(|w| w.pushed.is_some() && w.polled.is_some()))
}

fn summarize(what: &str, wakes: &[Wake], poll: Duration, report: &mut Report, key: &str) {
    let latencies = |pick: fn(&Wake) -> Option<Instant>| {
        let mut l: Vec<Duration> =
            wakes.iter().filter_map(|w| Some(pick(w)?.saturating_duration_since(w.event?))).collect();
        l.sort();
        l
    };
    let pushed = latencies(|w| w.pushed);
    let polled = latencies(|w| w.polled);
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        let (ours, theirs) = (percentile(&pushed, p), percentile(&polled, p));
        let ratio = theirs.as_secs_f64() / ours.as_secs_f64().max(1e-6);
        report.row(
            &format!("{what} → stream true, {name}"),
            ms(ours),
            format!("{} (poll {poll:?})", ms(theirs)),
            Some(ratio),
        );
    }
    report.figure(
        &format!("{key}_wakeup"),
        serde_json::json!({
            "events": wakes.len(),
            "pushed": pushed.len(),
            "polled": polled.len(),
            "push_p50_ms": ms_value(percentile(&pushed, 0.5)),
            "push_p99_ms": ms_value(percentile(&pushed, 0.99)),
            "push_max_ms": ms_value(pushed.last().copied().unwrap_or_default()),
            "poll_p50_ms": ms_value(percentile(&polled, 0.5)),
            "poll_p99_ms": ms_value(percentile(&polled, 0.99)),
        }),
    );
}
