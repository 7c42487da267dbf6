//! Wake-ups through the activator. Each target has its own host and a backend port that refuses
//! connections; KEDA's side holds one `StreamIsActive` per target on one connection.
//! 1. One request per target on a warm keep-alive connection, until `true` on its stream; the
//!    baseline is a poller calling `IsActive` every 500 ms at its own phase per target (the KEDA
//!    HTTP add-on's scaler polls its interceptors that often), watching the same requests.
//! 2. Then each backend starts listening, until the held response is at the client; the baseline
//!    is Knative's activator, which probes every 200 ms: the next probe tick after the backend is
//!    ready (at a random phase per target), plus the forward time measured here (a second request
//!    on the same connection, once the backend is up).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpSocket;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::super::percentile;
use super::super::report::{Report, ms, ms_value};
use super::web::{self, Sender};
use super::{Rng, Under, goal, reserve_ports, schedule};
use spinscale::grpc::scaled_object_ref;
use spinscale::proto::ScaledObjectRef;
use spinscale::proto::external_scaler_client::ExternalScalerClient;

/// The KEDA HTTP add-on's scaler polls its interceptors this often.
pub const ADDON_POLL: Duration = Duration::from_millis(500);
/// Knative's activator probes a revision's endpoints this often.
pub const KNATIVE_PROBE: Duration = Duration::from_millis(200);
/// Requests are held far longer than the bench takes.
const HOLD_TIMEOUT: &str = "300s";

type Client = ExternalScalerClient<Channel>;

#[derive(Clone, Copy, Debug)]
pub struct WakePlan {
    pub wakeups: usize,
    pub spread: Duration,
}

/// What happened to one target.
#[derive(Clone, Default)]
struct Wake {
    sent: Option<Instant>,
    pushed: Option<Instant>,
    polled: Option<Instant>,
    ready: Option<Instant>,
    responded: Option<Instant>,
    /// A second request once the backend is up: the activator's forward alone.
    forward: Option<Duration>,
    failed: Option<String>,
}

type Wakes = Arc<Mutex<Vec<Wake>>>;

fn update(wakes: &Wakes, i: usize, change: impl FnOnce(&mut Wake)) {
    if let Ok(mut w) = wakes.lock() {
        change(&mut w[i]);
    }
}

fn host(i: usize) -> String {
    format!("wake-{i}.bench")
}

pub async fn run(under: &Under, plan: &WakePlan, report: &mut Report) -> anyhow::Result<()> {
    let n = plan.wakeups;
    let sockets = reserve_ports(n)?;
    let refs: Vec<ScaledObjectRef> = sockets.iter().enumerate().map(|(i, (_, port))| target(i, *port)).collect();
    let client = ExternalScalerClient::new(Endpoint::from_shared(under.grpc.clone())?.connect().await?);
    for r in &refs {
        client.clone().get_metric_spec(r.clone()).await?;
    }
    let wakes: Wakes = Arc::new(Mutex::new(vec![Wake::default(); n]));
    let mut tasks = watch_streams(&client, &refs, &wakes).await?;
    let pollers = start_pollers(&client, &refs, &wakes);
    let senders = open_connections(under, n).await?;
    let epoch = Instant::now();
    tasks.extend(send_requests(senders, &wakes, plan).await);
    wait_for(&wakes, plan.spread + ADDON_POLL + Duration::from_secs(5), |w| w.pushed.is_some() && w.polled.is_some())
        .await;
    pollers.iter().for_each(tokio::task::JoinHandle::abort);
    tasks.extend(start_backends(sockets, &wakes, plan).await?);
    wait_for(&wakes, plan.spread + Duration::from_secs(5), |w| w.forward.is_some() || w.failed.is_some()).await;
    tasks.iter().for_each(tokio::task::JoinHandle::abort);
    let wakes = wakes.lock().map_err(|_| anyhow::anyhow!("wake-up records poisoned"))?.clone();
    summarize(&wakes, epoch, report);
    Ok(())
}

/// A target with only an activator route: its own host, a backend on a reserved port.
fn target(i: usize, port: u16) -> ScaledObjectRef {
    let backend = format!("http://127.0.0.1:{port}");
    let meta = [("scalerAddress", "bench"), ("hosts", &host(i)), ("backend", &backend), ("holdTimeout", HOLD_TIMEOUT)];
    scaled_object_ref("bench", &format!("wake-{i}"), &meta)
}

async fn watch_streams(
    client: &Client,
    refs: &[ScaledObjectRef],
    wakes: &Wakes,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::with_capacity(refs.len());
    for (i, r) in refs.iter().enumerate() {
        let mut stream = client.clone().stream_is_active(r.clone()).await?.into_inner();
        let wakes = wakes.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                if message.result {
                    let now = Instant::now();
                    update(&wakes, i, |w| {
                        w.pushed.get_or_insert(now);
                    });
                }
            }
        }));
    }
    Ok(tasks)
}

/// `IsActive` every [`ADDON_POLL`] per target, each at its own random phase.
fn start_pollers(client: &Client, refs: &[ScaledObjectRef], wakes: &Wakes) -> Vec<JoinHandle<()>> {
    let mut rng = Rng(0x0add_0500);
    refs.iter()
        .enumerate()
        .map(|(i, r)| {
            let (mut client, r, wakes) = (client.clone(), r.clone(), wakes.clone());
            let phase = ADDON_POLL.mul_f64(rng.unit());
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, ADDON_POLL);
                loop {
                    ticker.tick().await;
                    if client.is_active(r.clone()).await.is_ok_and(|a| a.into_inner().result) {
                        let now = Instant::now();
                        update(&wakes, i, |w| {
                            w.polled.get_or_insert(now);
                        });
                    }
                }
            })
        })
        .collect()
}

/// One connection per target, each used once already (a `404` for an unknown host), as an
/// Ingress keeps its connections to the activator warm.
async fn open_connections(under: &Under, n: usize) -> anyhow::Result<Vec<Sender>> {
    let mut senders = Vec::with_capacity(n);
    for _ in 0..n {
        let mut sender = web::connect(under.activator).await?;
        let status = web::get(&mut sender, "unknown.bench").await?;
        anyhow::ensure!(status == 404, "an unknown host got {status} from the activator, not 404");
        senders.push(sender);
    }
    Ok(senders)
}

/// Each target's request at its time in the schedule; each task then waits for the response.
async fn send_requests(senders: Vec<Sender>, wakes: &Wakes, plan: &WakePlan) -> Vec<JoinHandle<()>> {
    let mut senders: Vec<Option<Sender>> = senders.into_iter().map(Some).collect();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(senders.len());
    for (at, i) in schedule(senders.len(), plan.spread, 0xfeed_0001) {
        tokio::time::sleep_until(start + at).await;
        let Some(sender) = senders[i].take() else { continue };
        tasks.push(tokio::spawn(request_and_forward(sender, i, wakes.clone())));
    }
    tasks
}

/// The held request, then a second one on the same connection to time the forward alone.
async fn request_and_forward(mut sender: Sender, i: usize, wakes: Wakes) {
    let sent = Instant::now();
    update(&wakes, i, |w| w.sent = Some(sent));
    match web::get(&mut sender, &host(i)).await {
        Ok(200) => {
            let now = Instant::now();
            update(&wakes, i, |w| w.responded = Some(now));
        }
        Ok(status) => return update(&wakes, i, |w| w.failed = Some(format!("held request got {status}"))),
        Err(e) => return update(&wakes, i, |w| w.failed = Some(format!("held request: {e}"))),
    }
    let started = Instant::now();
    match web::get(&mut sender, &host(i)).await {
        Ok(200) => update(&wakes, i, |w| w.forward = Some(started.elapsed())),
        Ok(status) => update(&wakes, i, |w| w.failed = Some(format!("forwarded request got {status}"))),
        Err(e) => update(&wakes, i, |w| w.failed = Some(format!("forwarded request: {e}"))),
    }
}

/// Each target's backend starts listening at its time in a second schedule.
async fn start_backends(
    sockets: Vec<(TcpSocket, u16)>,
    wakes: &Wakes,
    plan: &WakePlan,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut sockets: Vec<Option<TcpSocket>> = sockets.into_iter().map(|(s, _)| Some(s)).collect();
    let start = tokio::time::Instant::now();
    let mut backends = Vec::with_capacity(sockets.len());
    for (at, i) in schedule(sockets.len(), plan.spread, 0xfeed_0002) {
        tokio::time::sleep_until(start + at).await;
        let Some(socket) = sockets[i].take() else { continue };
        let listener = socket.listen(1024)?;
        let ready = Instant::now();
        update(wakes, i, |w| w.ready = Some(ready));
        backends.push(web::serve(listener));
    }
    Ok(backends)
}

async fn wait_for(wakes: &Wakes, at_most: Duration, done: fn(&Wake) -> bool) {
    let deadline = Instant::now() + at_most;
    while Instant::now() < deadline && !wakes.lock().is_ok_and(|w| w.iter().all(done)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// From `ready` (a time since `epoch`) to the next tick of a prober that ticks every `period`
/// from `epoch + phase`.
fn to_next_tick(ready: Duration, phase: Duration, period: Duration) -> Duration {
    if ready <= phase {
        return phase - ready;
    }
    let since_tick = (ready - phase).as_nanos() % period.as_nanos();
    if since_tick == 0 { Duration::ZERO } else { period - Duration::from_nanos(since_tick as u64) }
}

/// Knative's figure for each ready backend: its next probe tick, then the measured forward.
fn knative_baseline(wakes: &[Wake], epoch: Instant) -> Vec<Duration> {
    let mut rng = Rng(0x0c0f_fee0);
    let mut all: Vec<Duration> = wakes
        .iter()
        .filter_map(|w| {
            let phase = KNATIVE_PROBE.mul_f64(rng.unit());
            let ready = w.ready?.checked_duration_since(epoch)?;
            Some(to_next_tick(ready, phase, KNATIVE_PROBE) + w.forward?)
        })
        .collect();
    all.sort();
    all
}

fn between(wakes: &[Wake], from: fn(&Wake) -> Option<Instant>, to: fn(&Wake) -> Option<Instant>) -> Vec<Duration> {
    let mut all: Vec<Duration> =
        wakes.iter().filter_map(|w| Some(to(w)?.saturating_duration_since(from(w)?))).collect();
    all.sort();
    all
}

fn summarize(wakes: &[Wake], epoch: Instant, report: &mut Report) {
    let pushed = between(wakes, |w| w.sent, |w| w.pushed);
    let polled = between(wakes, |w| w.sent, |w| w.polled);
    let delivered = between(wakes, |w| w.ready, |w| w.responded);
    let knative = knative_baseline(wakes, epoch);
    let mut forwards: Vec<Duration> = wakes.iter().filter_map(|w| w.forward).collect();
    forwards.sort();
    let n = wakes.len();
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        let (ours, theirs) = (percentile(&pushed, p), percentile(&polled, p));
        report.row(
            &format!("HTTP request at zero → stream true ({n} wake-ups), {name}"),
            ms(ours),
            format!("{} (IsActive poll every 500 ms: HTTP add-on)", ms(theirs)),
            Some(theirs.as_secs_f64() / ours.as_secs_f64().max(1e-6)),
        );
    }
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        let (ours, theirs) = (percentile(&delivered, p), percentile(&knative, p));
        report.row(
            &format!("backend listening → held response at the client, {name}"),
            ms(ours),
            format!("{} (200 ms probe + forward: Knative)", ms(theirs)),
            Some(theirs.as_secs_f64() / ours.as_secs_f64().max(1e-6)),
        );
    }
    let failures: Vec<&String> = wakes.iter().filter_map(|w| w.failed.as_ref()).collect();
    let responded = wakes.iter().filter(|w| w.responded.is_some()).count();
    report.row(
        "held requests answered 200 / sent",
        format!("{responded} / {}", wakes.iter().filter(|w| w.sent.is_some()).count()),
        "-".into(),
        None,
    );
    if let Some(first) = failures.first() {
        report.add_note(format!("activator wake-ups: {} failed; the first: {first}", failures.len()));
    }
    report.add_note(format!(
        "activator wake-ups: {n} targets, each with its own host and backend port, one request each on a warm \
         keep-alive connection (timed from the client's send); then each backend calls listen() (timed to the \
         client's complete response); forward alone (a second request, backend up): p50 {}, p99 {}",
        ms(percentile(&forwards, 0.5)),
        ms(percentile(&forwards, 0.99))
    ));
    let push_p99 = percentile(&pushed, 0.99);
    goal(report, "request → push p99 ≤ 1 ms", push_p99 <= Duration::from_millis(1), ms(push_p99));
    let ready_p99 = percentile(&delivered, 0.99);
    goal(report, "backend ready → held response p99 ≤ 15 ms", ready_p99 <= Duration::from_millis(15), ms(ready_p99));
    report.figure(
        "activator_wakeup",
        serde_json::json!({
            "wakeups": n, "pushed": pushed.len(), "polled": polled.len(), "responded": responded,
            "failed": failures.len(),
            "push_p50_ms": ms_value(percentile(&pushed, 0.5)), "push_p99_ms": ms_value(percentile(&pushed, 0.99)),
            "push_max_ms": ms_value(pushed.last().copied().unwrap_or_default()),
            "addon_poll_p50_ms": ms_value(percentile(&polled, 0.5)),
            "addon_poll_p99_ms": ms_value(percentile(&polled, 0.99)),
            "ready_to_response_p50_ms": ms_value(percentile(&delivered, 0.5)),
            "ready_to_response_p99_ms": ms_value(percentile(&delivered, 0.99)),
            "ready_to_response_max_ms": ms_value(delivered.last().copied().unwrap_or_default()),
            "knative_p50_ms": ms_value(percentile(&knative, 0.5)),
            "knative_p99_ms": ms_value(percentile(&knative, 0.99)),
            "forward_p50_ms": ms_value(percentile(&forwards, 0.5)),
            "forward_p99_ms": ms_value(percentile(&forwards, 0.99)),
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BenchArgs;
    use spinscale::config::Config;
    use spinscale::server::{Options, Server};
    use tokio::net::TcpListener;

    #[test]
    fn the_next_probe_tick_follows_ready() {
        let ms = Duration::from_millis;
        assert_eq!(to_next_tick(ms(30), ms(50), ms(200)), ms(20), "before the first tick");
        assert_eq!(to_next_tick(ms(50), ms(50), ms(200)), ms(0), "on a tick");
        assert_eq!(to_next_tick(ms(60), ms(50), ms(200)), ms(190));
        assert_eq!(to_next_tick(ms(449), ms(50), ms(200)), ms(1));
        assert_eq!(to_next_tick(ms(450), ms(50), ms(200)), ms(0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tiny_run_wakes_every_target_and_delivers_every_held_response() {
        let (grpc, http, activator) = (bind().await, bind().await, bind().await);
        let activator_addr = activator.local_addr().expect("addr");
        let options = Options { activator: Some(activator), ..Options::default() };
        let mut config = Config::default();
        config.activator.allowed_backends = vec!["http://127.0.0.1:*".into()];
        config.activator.drain_period = spinscale_core::duration::Dur(Duration::ZERO);
        let server = Server::start_with(config, grpc, http, options).await.expect("server");
        let under = Under { grpc: format!("http://{}", server.grpc_addr), activator: activator_addr, pid: None };
        let args = BenchArgs {
            quick: true,
            poll: ADDON_POLL,
            json: None,
            overload: false,
            activator: true,
            fleet: false,
            tail_fetch_wait: None,
        };
        let mut report = Report::new(&args);
        let plan = WakePlan { wakeups: 5, spread: Duration::from_millis(200) };
        run(&under, &plan, &mut report).await.expect("bench");
        let json: serde_json::Value = serde_json::from_str(&report.to_json().expect("json")).expect("parse");
        let figures = &json["activator_wakeup"];
        assert_eq!(figures["pushed"], 5, "{figures}");
        assert_eq!(figures["polled"], 5, "{figures}");
        assert_eq!(figures["responded"], 5, "{figures}");
        assert_eq!(figures["failed"], 0, "{figures}");
        server.shutdown().await.expect("shutdown");
    }

    async fn bind() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.expect("bind")
    }
}
