//! The activator past its budget: a server with `limits.maxHeldRequests` set, many routes whose
//! backends never become ready, and several times that many requests flooding in, one per
//! keep-alive connection. The activator must hold the budget's worth and answer every other
//! request `503` with `Retry-After` at once; those clients retry on the same connection when
//! `Retry-After` says, so the flood goes on while it is measured. Figures: the server's resident
//! memory at rest and while flooded, the requests held and refused, and gRPC unary latency
//! (`IsActive` on the registered targets, concurrent callers on one connection) while the
//! activator is at its limit against the same calls at rest.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::super::report::{Report, ms, ms_value};
use super::super::server::{CONFIG, ServerProcess};
use super::super::{Rng, percentile};
use super::memory::{held_targets, register};
use super::web::{self, Sender};
use super::{goal, reserve_ports};
use spinscale::proto::ScaledObjectRef;
use spinscale::proto::external_scaler_client::ExternalScalerClient;

/// Let the server settle (allocations freed, tasks parked) before reading its memory.
const SETTLE: Duration = Duration::from_secs(1);
/// Concurrent unary callers on one connection, in a closed loop (KEDA's operator calls on one).
const UNARY_CALLERS: usize = 16;
/// Unmeasured unary calls first, so the connection and the server's caches are warm.
const UNARY_WARM_UP: Duration = Duration::from_millis(500);
/// What the activator's `503` says when its limit for all apps (not a route's `maxHeld`) is hit.
const OVER_BUDGET: &str = "requests of all apps";
/// A client that gets no `Retry-After` retries after this.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);

/// The sizes of one flood.
#[derive(Clone, Copy, Debug)]
pub struct FloodPlan {
    /// `limits.maxHeldRequests` of the server.
    pub budget: usize,
    /// Requests (and connections) in the flood, a multiple of the budget.
    pub requests: usize,
    /// Routes the requests are spread over, each with a backend that refuses connections.
    pub routes: usize,
    /// How long each unary phase (at rest, at the limit) is measured.
    pub unary_for: Duration,
}

fn host(i: usize) -> String {
    format!("{PREFIX}-{i}.bench")
}

/// The names and hosts of this phase's targets.
const PREFIX: &str = "flood";

/// What the flood's connections got back; every count field counts requests.
#[derive(Default)]
struct Tally {
    /// How long opening every connection (each sending its request at once) took, once done.
    opened_in: OnceLock<Duration>,
    /// Connections open, each with its first request sent.
    opened: AtomicUsize,
    /// Connections that could not be opened, or whose request failed without an answer.
    errors: AtomicUsize,
    /// First requests answered `503` naming the activator's limit for all apps.
    refused: AtomicUsize,
    /// First requests answered anything else (a route's `maxHeld`, a `200`, a `504`...).
    other: AtomicUsize,
    /// `503`s (first or retried) that came without `Retry-After`.
    no_retry_after: AtomicUsize,
    /// Retries sent after a `503`, how many of them were refused again, and how many failed
    /// without an answer (or could not reconnect).
    retries: AtomicUsize,
    retries_refused: AtomicUsize,
    retry_errors: AtomicUsize,
    /// Send to `503` of every first request refused (while the connections are being opened).
    refusal_latencies: Mutex<Vec<Duration>>,
    /// Send to `503` of every retry refused (the flood in its steady state).
    retry_latencies: Mutex<Vec<Duration>>,
}

impl Tally {
    fn answered(&self) -> usize {
        self.refused.load(Ordering::Relaxed) + self.other.load(Ordering::Relaxed)
    }

    /// Connections whose first request is still waiting for an answer: held.
    fn held(&self) -> usize {
        self.opened.load(Ordering::Relaxed).saturating_sub(self.answered() + self.errors.load(Ordering::Relaxed))
    }
}

pub async fn run(plan: &FloodPlan, report: &mut Report) -> anyhow::Result<()> {
    let config = format!("{CONFIG}limits:\n  maxHeldRequests: {}\n", plan.budget);
    let server = ServerProcess::start_with_activator(&config).await?;
    let activator = server.activator.context("the server was started without its activator")?;
    // One refusing port for every backend: the routes differ by host.
    let (_refusing, port) = reserve_ports(1)?.pop().context("no port reserved")?;
    let refs = Arc::new(targets(plan, port));
    let (_woken, streams) = register(&server, &refs).await?;
    let channel = server.channel().await?;
    let client = ExternalScalerClient::new(channel);
    unary(&client, &refs, UNARY_WARM_UP).await?;
    let at_rest = unary(&client, &refs, plan.unary_for).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_rest = server.rss_mib()?;

    let tally = Arc::new(Tally::default());
    let flooding = Arc::new(AtomicBool::new(true));
    let clients = {
        let (tally, flooding, plan) = (tally.clone(), flooding.clone(), *plan);
        std::thread::Builder::new()
            .name("flood".into())
            .spawn(move || flood_clients(activator, plan, &tally, &flooding))?
    };
    // Every connection open, and every request answered or held: the budget held, the rest refused.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (tally.opened_in.get().is_none()
        || tally.answered() + tally.errors.load(Ordering::Relaxed) + plan.budget < plan.requests)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let rss_flooded = server.rss_mib()?;
    let retries_before = tally.retries.load(Ordering::Relaxed);
    let measuring = Instant::now();
    let at_limit = unary(&client, &refs, plan.unary_for).await?;
    let retry_rate =
        (tally.retries.load(Ordering::Relaxed) - retries_before) as f64 / measuring.elapsed().as_secs_f64();
    let held = tally.held();

    flooding.store(false, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || clients.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the flood's clients panicked"))??;
    tokio::time::sleep(SETTLE).await;
    let rss_after = server.rss_mib()?;
    streams.iter().for_each(tokio::task::JoinHandle::abort);
    drop(server);

    let sorted = |all: &Mutex<Vec<Duration>>| {
        let mut all = all.lock().map_err(|_| anyhow::anyhow!("tally poisoned"))?.clone();
        all.sort();
        anyhow::Ok(all)
    };
    let (refusals, retry_refusals) = (sorted(&tally.refusal_latencies)?, sorted(&tally.retry_latencies)?);
    let opened_in = tally.opened_in.get().copied().unwrap_or_default();
    let figures =
        Figures { plan, tally: &tally, held, refusals, retry_refusals, opened_in, retry_rate, at_rest, at_limit };
    figures.report(report, [rss_rest, rss_flooded, rss_after]);
    Ok(())
}

/// The flood's clients, on a runtime of their own on this thread (so the unary callers measured
/// meanwhile do not queue behind thousands of client tasks in the bench's scheduler): opens the
/// connections one after another, each sending its request at once, and keeps them (retrying)
/// until `flooding` ends; then closes them all.
fn flood_clients(
    activator: SocketAddr,
    plan: FloodPlan,
    tally: &Arc<Tally>,
    flooding: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let mut connections = JoinSet::new();
        for i in 0..plan.requests {
            match web::open(activator).await {
                Ok((sender, connection)) => {
                    tally.opened.fetch_add(1, Ordering::Relaxed);
                    let (tally, flooding, host) = (tally.clone(), flooding.clone(), host(i % plan.routes));
                    connections.spawn(async move {
                        tokio::select! {
                            _ = connection => {}
                            () = flood_one(sender, host, activator, &tally, &flooding) => {}
                        }
                    });
                }
                Err(_) => {
                    tally.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let _ = tally.opened_in.set(started.elapsed());
        while flooding.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    });
    Ok(())
}

/// Every route's own `maxHeld` is above its share of the flood, so only the budget for all apps
/// refuses.
fn targets(plan: &FloodPlan, port: u16) -> Vec<ScaledObjectRef> {
    held_targets(PREFIX, plan.routes, plan.requests.div_ceil(plan.routes) * 2, port)
}

/// One flooding client: its request, then, while refused, the same request again on the same
/// connection (a new one if the activator closed it) when `Retry-After` says.
async fn flood_one(mut sender: Sender, host: String, activator: SocketAddr, tally: &Tally, flooding: &AtomicBool) {
    let mut first = true;
    loop {
        let failed = if first { &tally.errors } else { &tally.retry_errors };
        if sender.is_closed() {
            match web::connect(activator).await {
                Ok(fresh) => sender = fresh,
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        let sent = Instant::now();
        let answer = web::get_answer(&mut sender, &host).await;
        let latency = sent.elapsed();
        let Ok(answer) = answer else {
            failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let refused = answer.status == 503 && String::from_utf8_lossy(&answer.body).contains(OVER_BUDGET);
        if answer.status == 503 && answer.retry_after.is_none() {
            tally.no_retry_after.fetch_add(1, Ordering::Relaxed);
        }
        match (first, refused) {
            (true, true) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut all) = tally.refusal_latencies.lock() {
                    all.push(latency);
                }
            }
            (true, false) => {
                tally.other.fetch_add(1, Ordering::Relaxed);
            }
            (false, true) => {
                tally.retries_refused.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut all) = tally.retry_latencies.lock() {
                    all.push(latency);
                }
            }
            (false, false) => {}
        }
        if answer.status != 503 || !flooding.load(Ordering::Relaxed) {
            return;
        }
        first = false;
        let pause = answer.retry_after.map_or(DEFAULT_RETRY, Duration::from_secs);
        tokio::time::sleep(pause).await;
        if !flooding.load(Ordering::Relaxed) {
            return;
        }
        tally.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// `UNARY_CALLERS` callers on one connection, each calling `IsActive` on random registered
/// targets one after another for `time`: every call's latency, sorted.
async fn unary(
    client: &ExternalScalerClient<Channel>,
    refs: &Arc<Vec<ScaledObjectRef>>,
    time: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let until = Instant::now() + time;
    let mut callers = JoinSet::new();
    for c in 0..UNARY_CALLERS {
        let (mut client, refs) = (client.clone(), refs.clone());
        callers.spawn(async move {
            let mut rng = Rng(0x0f10_0d00 + c as u64);
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let r = &refs[(rng.unit() * refs.len() as f64) as usize % refs.len()];
                let started = Instant::now();
                client.is_active(r.clone()).await?;
                latencies.push(started.elapsed());
            }
            Ok::<_, tonic::Status>(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(one) = callers.join_next().await {
        all.extend(one??);
    }
    all.sort();
    Ok(all)
}

struct Figures<'a> {
    plan: &'a FloodPlan,
    tally: &'a Tally,
    /// First requests still unanswered at the end of the flooded unary phase.
    held: usize,
    /// Send to `503` of the first requests refused, and of the retries refused, sorted.
    refusals: Vec<Duration>,
    retry_refusals: Vec<Duration>,
    /// How long opening the connections (each sending its request at once) took.
    opened_in: Duration,
    /// Retries per second while the unary calls were measured at the limit.
    retry_rate: f64,
    at_rest: Vec<Duration>,
    at_limit: Vec<Duration>,
}

impl Figures<'_> {
    fn report(&self, report: &mut Report, [rss_rest, rss_flooded, rss_after]: [f64; 3]) {
        let (plan, tally) = (self.plan, self.tally);
        let (budget, n, routes) = (plan.budget, plan.requests, plan.routes);
        let count = |a: &AtomicUsize| a.load(Ordering::Relaxed);
        let (refused, other, errors) = (count(&tally.refused), count(&tally.other), count(&tally.errors));
        let (retries, retries_refused) = (count(&tally.retries), count(&tally.retries_refused));
        let retry_errors = count(&tally.retry_errors);
        let no_retry_after = count(&tally.no_retry_after);
        let (r50, r99) = (percentile(&self.refusals, 0.5), percentile(&self.refusals, 0.99));
        report.row(
            &format!("flood: {n} requests past maxHeldRequests {budget}, held / 503 at once"),
            format!("{} / {refused} (503 in {} p50, {} p99)", self.held, ms(r50), ms(r99)),
            format!("{budget} / {} expected", n.saturating_sub(budget)),
            None,
        );
        let (t50, t99) = (percentile(&self.retry_refusals, 0.5), percentile(&self.retry_refusals, 0.99));
        report.row(
            &format!("flood: a retry past maxHeldRequests {budget} → 503 (steady flood)"),
            format!("{} p50, {} p99", ms(t50), ms(t99)),
            format!("{} retries refused, {:.0} per second", self.retry_refusals.len(), self.retry_rate),
            None,
        );
        let kib_each = (rss_flooded - rss_rest) * 1024.0 / n.max(1) as f64;
        report.row(
            &format!("server RSS: {budget} held + {} refused keep-alive connections", n.saturating_sub(budget)),
            format!("{rss_flooded:.1} MiB ({kib_each:.1} KiB per connection)"),
            format!("{rss_rest:.1} MiB at rest with {routes} routes; {rss_after:.1} MiB after the flood"),
            None,
        );
        for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
            let (ours, base) = (percentile(&self.at_limit, p), percentile(&self.at_rest, p));
            report.row(
                &format!("unary IsActive, {UNARY_CALLERS} callers, activator at its limit, {name}"),
                ms(ours),
                format!("{} at rest", ms(base)),
                Some(base.as_secs_f64() / ours.as_secs_f64().max(1e-9)),
            );
        }
        report.add_note(format!(
            "activator flood: a server with limits.maxHeldRequests {budget} and {routes} routes whose backends \
             refuse connections (each route's maxHeld above its share); {n} keep-alive connections opened one after \
             another in {:.1} s, each sending one GET at once (`503 in`: from the send, while the others open), by \
             a thread of their own; a refused client retries on its connection when Retry-After says ({retries} \
             retries, {retries_refused} refused again, {retry_errors} failed, {:.0} per second while the unary calls \
             ran); {other} first requests got another answer, {errors} failed, {no_retry_after} 503s came without \
             Retry-After; unary: IsActive on random routes' targets, {UNARY_CALLERS} callers on one connection for \
             {:?} at rest, then as long with the activator at its limit; the flood's clients, the unary callers and \
             the server share this machine's cores",
            self.opened_in.as_secs_f64(),
            self.retry_rate,
            plan.unary_for,
        ));
        let exact = self.held == budget && refused == n.saturating_sub(budget) && other + errors == 0;
        goal(
            report,
            "past maxHeldRequests every request 503 with Retry-After at once, the budget held",
            exact && no_retry_after == 0,
            format!("{} held, {refused} refused of {n}, 503 p99 {}", self.held, ms(r99)),
        );
        let (rest99, limit99) = (percentile(&self.at_rest, 0.99), percentile(&self.at_limit, 0.99));
        report.figure(
            "activator_flood",
            serde_json::json!({
                "max_held_requests": budget, "requests": n, "routes": routes,
                "held": self.held, "refused_at_once": refused, "other_answers": other, "errors": errors,
                "no_retry_after": no_retry_after, "retries": retries, "retries_refused": retries_refused,
                "retry_errors": retry_errors,
                "retries_per_s_at_limit": self.retry_rate, "opened_s": self.opened_in.as_secs_f64(),
                "refusal_p50_ms": ms_value(r50), "refusal_p99_ms": ms_value(r99),
                "refusal_max_ms": ms_value(self.refusals.last().copied().unwrap_or_default()),
                "retry_refusal_p50_ms": ms_value(t50), "retry_refusal_p99_ms": ms_value(t99),
                "rss_rest_mib": rss_rest, "rss_flooded_mib": rss_flooded, "rss_after_mib": rss_after,
                "unary_callers": UNARY_CALLERS, "unary_seconds": plan.unary_for.as_secs_f64(),
                "unary_calls_rest": self.at_rest.len(), "unary_calls_at_limit": self.at_limit.len(),
                "unary_rest_p50_ms": ms_value(percentile(&self.at_rest, 0.5)),
                "unary_rest_p99_ms": ms_value(rest99),
                "unary_at_limit_p50_ms": ms_value(percentile(&self.at_limit, 0.5)),
                "unary_at_limit_p99_ms": ms_value(limit99),
                "unary_p99_at_limit_over_rest": limit99.as_secs_f64() / rest99.as_secs_f64().max(1e-9),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_holds_more_than_its_share_of_the_flood() {
        let plan = FloodPlan { budget: 20, requests: 60, routes: 7, unary_for: Duration::from_secs(1) };
        let refs = targets(&plan, 9);
        assert_eq!(refs.len(), 7);
        for (i, r) in refs.iter().enumerate() {
            let max_held: usize = r.scaler_metadata["maxHeld"].parse().expect("maxHeld");
            assert!(max_held > plan.requests.div_ceil(plan.routes), "{max_held}");
            assert_eq!(r.scaler_metadata["backend"], "http://127.0.0.1:9");
            assert_eq!(r.scaler_metadata["hosts"], host(i), "the flood's requests name this host");
        }
    }

    #[test]
    fn held_are_the_open_connections_neither_answered_nor_failed() {
        let tally = Tally::default();
        tally.opened.store(10, Ordering::Relaxed);
        tally.refused.store(5, Ordering::Relaxed);
        tally.other.store(1, Ordering::Relaxed);
        tally.errors.store(1, Ordering::Relaxed);
        assert_eq!(tally.held(), 3);
    }
}
