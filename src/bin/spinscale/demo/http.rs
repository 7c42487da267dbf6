//! `spinscale demo --activator`: the seed's HTTP function scaling from zero through the
//! activator, everything in one process. Bursts of requests arrive while the app is at zero;
//! the activator holds them and pushes `true` to a KEDA-like controller, which "starts a pod"
//! (the app's HTTP server) after a pod's start delay; every held request is then answered. Idle
//! between bursts, the controller scales back to zero. The run fails if any request fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::routing::any;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use spinscale::config::Config;
use spinscale::grpc::scaled_object_ref;
use spinscale::proto::external_scaler_client::ExternalScalerClient;
use spinscale::server::{Options, Server};
use spinscale::sim::report::percentile;
use spinscale_testkit::free_port;

const HOST: &str = "hooks.example.com";
/// From "scale to 1" to the app accepting connections: pod scheduling plus a Wasm start.
const POD_START: Duration = Duration::from_millis(150);
/// The controller scales to zero after the target has been inactive this long (KEDA's cooldown).
const COOLDOWN: Duration = Duration::from_secs(3);
const BURST: usize = 40;
const BURST_EVERY: Duration = Duration::from_secs(10);
/// Short windows, so a quiet app goes back to zero within a burst cycle.
/// The demo's app listens on loopback, which the operator allows (a trigger's backend is otherwise
/// a Service of the ScaledObject's namespace); no load balancer to drain at the end.
const CONFIG: &str = "collectors:\n  scrapeWindow: 2s\ntargets:\n  tick: 100ms\n\
                      activator:\n  allowedBackends: ['http://127.0.0.1:*']\n  drainPeriod: 0s\n";

/// The app: answers every request, counting them; stops when its pod is removed.
struct App {
    port: u16,
    served: Arc<AtomicUsize>,
    running: Option<CancellationToken>,
}

impl App {
    async fn start(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.context("the app's port")?;
        let served = self.served.clone();
        let router = Router::new().fallback(any(move || {
            served.fetch_add(1, Ordering::Relaxed);
            async { "webhook accepted\n" }
        }));
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(
            async move { axum::serve(listener, router).with_graceful_shutdown(until.cancelled_owned()).await },
        );
        self.running = Some(stop);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(stop) = self.running.take() {
            stop.cancel();
        }
    }
}

struct Timeline(Instant);

impl Timeline {
    fn say(&self, text: impl AsRef<str>) {
        println!("{:>6.2}s  {}", self.0.elapsed().as_secs_f64(), text.as_ref());
    }
}

pub async fn run(duration: Duration) -> anyhow::Result<()> {
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let activator = Some(TcpListener::bind("127.0.0.1:0").await?);
    let server =
        Server::start_with(Config::parse(CONFIG)?, grpc, http, Options { activator, ..Options::default() }).await?;
    let activator_addr = server.activator_addr.context("activator address")?;
    let port = free_port()?;
    let backend = format!("http://127.0.0.1:{port}");
    let meta = [("hosts", HOST), ("backend", backend.as_str()), ("scalerAddress", "spinscale:9500")];
    let r = scaled_object_ref("default", "webhook-handler", &meta);
    println!(
        "spinscale demo --activator: the seed's webhook-handler scaling from zero, for {}",
        spinscale_core::duration::format(duration)
    );
    println!("  activator  http://{activator_addr} (Host: {HOST}) → the app at {backend} once it runs");
    println!(
        "  KEDA-like  StreamIsActive open; a pushed `true` scales 0 → 1 (the app starts {} ms later);",
        POD_START.as_millis()
    );
    println!("             inactive for {} s → scaled to 0", COOLDOWN.as_secs());
    println!(
        "  load       a burst of {BURST} POSTs every {} s, each while the app is at zero\n",
        BURST_EVERY.as_secs()
    );

    let t = Arc::new(Timeline(Instant::now()));
    let served = Arc::new(AtomicUsize::new(0));
    let app = Arc::new(tokio::sync::Mutex::new(App { port, served: served.clone(), running: None }));
    let mut keda = ExternalScalerClient::connect(format!("http://{}", server.grpc_addr)).await?;
    let mut stream = keda.stream_is_active(r.clone()).await?.into_inner();
    let scaled_up = Arc::new(AtomicBool::new(false));
    let stop = CancellationToken::new();
    let controller = {
        let (t, app, scaled_up, stop, mut keda, r) =
            (t.clone(), app.clone(), scaled_up.clone(), stop.clone(), keda.clone(), r.clone());
        tokio::spawn(async move {
            let mut inactive_since: Option<Instant> = None;
            let mut poll = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    message = stream.message() => match message {
                        Ok(Some(m)) if m.result && !scaled_up.swap(true, Ordering::SeqCst) => {
                            t.say("KEDA   <- true pushed: scale webhook-handler 0 → 1");
                            let (t, app) = (t.clone(), app.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(POD_START).await;
                                match app.lock().await.start().await {
                                    Ok(()) => t.say("app    pod ready, listening"),
                                    Err(e) => t.say(format!("app    could not start: {e:#}")),
                                }
                            });
                        }
                        Ok(Some(_)) => {}
                        _ => return,
                    },
                    _ = poll.tick() => {
                        let active = keda.is_active(r.clone()).await.map(|a| a.into_inner().result).unwrap_or(true);
                        if active || !scaled_up.load(Ordering::SeqCst) {
                            inactive_since = None;
                        } else if inactive_since.get_or_insert_with(Instant::now).elapsed() >= COOLDOWN {
                            app.lock().await.stop();
                            scaled_up.store(false, Ordering::SeqCst);
                            inactive_since = None;
                            t.say("KEDA   inactive through the cooldown: scale 1 → 0 (app stopped)");
                        }
                    }
                }
            }
        })
    };

    let client = reqwest::Client::new();
    let (mut sent, mut ok, mut failed) = (0usize, 0usize, 0usize);
    let mut latencies = Vec::new();
    let mut cold_starts = Vec::new();
    let started = Instant::now();
    let mut burst = 0;
    while started.elapsed() + Duration::from_secs(2) < duration {
        burst += 1;
        let at_zero = !scaled_up.load(Ordering::SeqCst);
        t.say(format!("load   burst {burst}: {BURST} POSTs{}", if at_zero { " while the app is at zero" } else { "" }));
        let mut requests = JoinSet::new();
        for i in 0..BURST {
            let request = client
                .post(format!("http://{activator_addr}/hooks/github"))
                .header("host", HOST)
                .body(format!("{{\"delivery\": {burst}-{i}}}"));
            requests.spawn(async move {
                let sent = Instant::now();
                let response = request.send().await;
                (response, sent.elapsed())
            });
        }
        sent += BURST;
        let mut burst_cold = Vec::new();
        while let Some(done) = requests.join_next().await {
            match done {
                Ok((Ok(response), took)) if response.status().is_success() => {
                    ok += 1;
                    latencies.push(took);
                    let cold = response.headers().get("x-spinscale-cold-start").and_then(|v| v.to_str().ok());
                    if let Some(ms) = cold.and_then(|v| v.parse::<u64>().ok()) {
                        burst_cold.push(Duration::from_millis(ms));
                    }
                }
                Ok((Ok(response), _)) => {
                    failed += 1;
                    t.say(format!("load   a request failed: HTTP {}", response.status()));
                }
                other => {
                    failed += 1;
                    t.say(format!("load   a request failed: {other:?}"));
                }
            }
        }
        burst_cold.sort();
        t.say(format!(
            "load   burst {burst}: {BURST}/{BURST} answered by the app; {} were held (cold start p50 {} ms, max {} ms)",
            burst_cold.len(),
            percentile(&burst_cold, 0.5).as_millis(),
            burst_cold.last().map_or(0, std::time::Duration::as_millis)
        ));
        cold_starts.extend(burst_cold);
        let next = started + BURST_EVERY * burst as u32;
        let remaining = duration.saturating_sub(started.elapsed());
        tokio::time::sleep(next.saturating_duration_since(Instant::now()).min(remaining)).await;
    }
    stop.cancel();
    let _ = controller.await;
    app.lock().await.stop();
    server.shutdown().await?;

    latencies.sort();
    cold_starts.sort();
    println!("\nSummary");
    println!("  requests   {sent} sent, {ok} answered by the app, {failed} failed");
    println!("  app        served {} requests: each exactly once", served.load(Ordering::Relaxed));
    println!(
        "  latency    p50 {:.1} ms, p99 {:.1} ms (held requests included)",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "  held       {} requests; cold start p50 {} ms, max {} ms (the app's start delay is {} ms)",
        cold_starts.len(),
        percentile(&cold_starts, 0.5).as_millis(),
        cold_starts.last().map_or(0, std::time::Duration::as_millis),
        POD_START.as_millis()
    );
    if failed > 0 || served.load(Ordering::Relaxed) != ok {
        bail!("{failed} requests failed; the app served {} of {ok}", served.load(Ordering::Relaxed));
    }
    Ok(())
}
