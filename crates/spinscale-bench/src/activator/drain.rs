//! Drain under steady load: a server with `activator.drainPeriod`, a ready backend, and steady
//! load through the activator, half of it on fresh connections and half on keep-alive ones. Then
//! SIGTERM, as the kubelet sends it, and the load goes on until the process exits:
//! - the balanced load imitates a load balancer that watches `/readyz`: it stops sending a while
//!   (`lb_delay`) after `/readyz` first answers `503`. Every request it sent must be served;
//! - a thin client unaware of readiness keeps sending until the process is gone: every request
//!   it sends within the drain period must be served; the refusals after the listener closed are
//!   counted apart (they show when it closed).
//!
//! Figures: requests served and refused (or failed), when `/readyz` failed, the listener last
//! accepted and first refused a connection, and the process exited after SIGTERM, and its exit code.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinSet;

use super::super::report::{Report, ms, ms_value};
use super::super::server::{CONFIG, ServerProcess};
use super::goal;
use super::web::{self, Backend, Sender};
use spinscale::grpc::scaled_object_ref;

const HOST: &str = "drain.bench";
/// Workers of the balanced load; even ones open a connection per request, odd ones keep theirs.
const BALANCED_WORKERS: usize = 16;
/// Each of the unaware client's two workers (one fresh, one keep-alive) sends this often.
const UNAWARE_EVERY: Duration = Duration::from_millis(50);
/// How often `/readyz` and the process are looked at.
const WATCH_EVERY: Duration = Duration::from_millis(5);
/// The listener counts as open for the whole drain period when a probe was accepted this close to
/// its end (probes are a few milliseconds apart).
const PROBE_SLACK: Duration = Duration::from_millis(50);
/// A request not answered by then failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after SIGTERM the process may take beyond its drain period (the server's own drain
/// deadline for connections is 5 s).
const EXIT_SLACK: Duration = Duration::from_secs(15);

/// The sizes of one drain run.
#[derive(Clone, Copy, Debug)]
pub struct DrainPlan {
    /// `activator.drainPeriod` of the server.
    pub period: Duration,
    /// Requests per second of the balanced load.
    pub rate: f64,
    /// Load before SIGTERM.
    pub lead: Duration,
    /// The balanced load stops this long after `/readyz` first answers `503`.
    pub lb_delay: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Balanced,
    Unaware,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Served,
    /// Answered, but not `200`.
    Status(u16),
    /// The connection was refused: the listener is closed.
    Refused,
    /// Reset, closed before the answer, or no answer in time.
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Sent {
    at: Instant,
    client: Client,
    outcome: Outcome,
}

#[derive(Default)]
struct Shared {
    sent: Mutex<Vec<Sent>>,
    /// When `/readyz` first answered `503`.
    unready: Mutex<Option<Instant>>,
    /// Every worker stops (the process is gone).
    stop: AtomicBool,
}

impl Shared {
    fn unready(&self) -> Option<Instant> {
        self.unready.lock().ok().and_then(|u| *u)
    }
}

pub async fn run(plan: &DrainPlan, report: &mut Report) -> anyhow::Result<()> {
    let settings = format!("  drainPeriod: {}ms\n", plan.period.as_millis());
    let mut server = ServerProcess::start_with_activator_settings(CONFIG, &settings).await?;
    let activator = server.activator.context("the server was started without its activator")?;
    let backend = Backend::start().await?;
    // Registered as KEDA would, with its stream kept open.
    let mut client = server.connect().await?;
    let backend_url = format!("http://{}", backend.addr);
    let meta = [("scalerAddress", "bench"), ("hosts", HOST), ("backend", backend_url.as_str())];
    let target = scaled_object_ref("bench", "drain", &meta);
    client.get_metric_spec(target.clone()).await?;
    let _stream = client.stream_is_active(target).await?;
    warm_up(activator).await?;

    let shared = Arc::new(Shared::default());
    let mut workers = JoinSet::new();
    let start = Instant::now();
    let period = Duration::from_secs_f64(BALANCED_WORKERS as f64 / plan.rate.max(1e-3));
    for k in 0..BALANCED_WORKERS {
        let first = start + period.mul_f64(k as f64 / BALANCED_WORKERS as f64);
        let worker = Worker { addr: activator, client: Client::Balanced, fresh: k % 2 == 0, first, period };
        workers.spawn(worker.run(shared.clone(), plan.lb_delay));
    }
    for (k, fresh) in [true, false].into_iter().enumerate() {
        let first = start + UNAWARE_EVERY.mul_f64(k as f64 / 2.0);
        let worker = Worker { addr: activator, client: Client::Unaware, fresh, first, period: UNAWARE_EVERY };
        workers.spawn(worker.run(shared.clone(), plan.lb_delay));
    }
    let readiness = tokio::spawn(watch_readyz(server.readyz.clone(), shared.clone()));
    tokio::time::sleep(plan.lead).await;

    let term = Instant::now();
    server.terminate()?;
    let mut exited: Option<(Instant, ExitStatus)> = None;
    let mut listener = Listener::default();
    while term.elapsed() < plan.period + EXIT_SLACK {
        if let Some(status) = server.try_wait()? {
            exited = Some((Instant::now(), status));
            break;
        }
        listener.probe(activator).await;
        tokio::time::sleep(WATCH_EVERY).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    readiness.abort();
    let _ = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(1), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    workers.abort_all();
    drop(server);

    let sent = shared.sent.lock().map_err(|_| anyhow::anyhow!("records poisoned"))?.clone();
    let figures = Figures { plan, sent: &sent, term, unready: shared.unready(), listener, exited };
    figures.report(report);
    Ok(())
}

/// The backend is ready and the activator forwards: one `200` (the first request may be held
/// while the activator learns that the backend listens).
async fn warm_up(activator: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sender = web::connect(activator).await?;
    loop {
        match web::get(&mut sender, HOST).await {
            Ok(200) => return Ok(()),
            answer if Instant::now() > deadline => anyhow::bail!("the drain backend never answered: {answer:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        if sender.is_closed() {
            sender = web::connect(activator).await?;
        }
    }
}

/// Asks `/readyz` until it first answers `503`, and notes when.
async fn watch_readyz(url: String, shared: Arc<Shared>) {
    let Ok(http) = reqwest::Client::builder().timeout(Duration::from_secs(1)).build() else { return };
    loop {
        if let Ok(response) = http.get(&url).send().await
            && response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
        {
            let now = Instant::now();
            if let Ok(mut unready) = shared.unready.lock() {
                unready.get_or_insert(now);
            }
            return;
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// One sender of the load: a request every `period` from `first`, open loop (a turn missed while
/// a request is out is skipped).
struct Worker {
    addr: SocketAddr,
    client: Client,
    /// A connection per request; otherwise one keep-alive connection (a new one when it closes).
    fresh: bool,
    first: Instant,
    period: Duration,
}

impl Worker {
    async fn run(self, shared: Arc<Shared>, lb_delay: Duration) {
        let mut kept: Option<Sender> = None;
        let mut turn = self.first;
        loop {
            tokio::time::sleep_until(turn.into()).await;
            let now = Instant::now();
            let balancer_left = shared.unready().is_some_and(|unready| now >= unready + lb_delay);
            if shared.stop.load(Ordering::Relaxed) || (self.client == Client::Balanced && balancer_left) {
                return;
            }
            let outcome = tokio::time::timeout(REQUEST_TIMEOUT, self.one(&mut kept)).await.unwrap_or(Outcome::Failed);
            if let Ok(mut sent) = shared.sent.lock() {
                sent.push(Sent { at: now, client: self.client, outcome });
            }
            while turn <= Instant::now() {
                turn += self.period;
            }
        }
    }

    async fn one(&self, kept: &mut Option<Sender>) -> Outcome {
        let reuse = kept.take().filter(|s| !self.fresh && !s.is_closed());
        let mut sender = match reuse {
            Some(sender) => sender,
            None => match web::connect(self.addr).await {
                Ok(sender) => sender,
                Err(e) if refused(&e) => return Outcome::Refused,
                Err(_) => return Outcome::Failed,
            },
        };
        let outcome = match web::get(&mut sender, HOST).await {
            Ok(200) => Outcome::Served,
            Ok(status) => Outcome::Status(status),
            Err(_) => Outcome::Failed,
        };
        if !self.fresh {
            *kept = Some(sender);
        }
        outcome
    }
}

/// What a TCP probe of the activator's port saw after SIGTERM (a connection it accepts is closed
/// at once). The process may exit within one probe interval of closing its listener: then the
/// last accepted connection bounds when it closed.
#[derive(Clone, Copy, Debug, Default)]
struct Listener {
    last_accepted: Option<Instant>,
    first_refused: Option<Instant>,
}

impl Listener {
    async fn probe(&mut self, addr: SocketAddr) {
        if self.first_refused.is_some() {
            return;
        }
        let connected = tokio::time::timeout(Duration::from_millis(100), tokio::net::TcpStream::connect(addr)).await;
        match connected {
            Ok(Ok(_)) => self.last_accepted = Some(Instant::now()),
            Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => self.first_refused = Some(Instant::now()),
            _ => {}
        }
    }
}

fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == ErrorKind::ConnectionRefused))
}

/// Requests of one kind, by outcome.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    sent: usize,
    served: usize,
    other_status: usize,
    refused: usize,
    failed: usize,
    /// The first status other than `200`, if any.
    first_other: Option<u16>,
}

impl Counts {
    fn of<'a>(sent: impl Iterator<Item = &'a Sent>) -> Self {
        let mut counts = Self::default();
        for s in sent {
            counts.sent += 1;
            match s.outcome {
                Outcome::Served => counts.served += 1,
                Outcome::Status(status) => {
                    counts.other_status += 1;
                    counts.first_other.get_or_insert(status);
                }
                Outcome::Refused => counts.refused += 1,
                Outcome::Failed => counts.failed += 1,
            }
        }
        counts
    }

    fn not_served(&self) -> usize {
        self.sent - self.served
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "sent": self.sent, "served": self.served, "other_status": self.other_status,
            "refused": self.refused, "failed": self.failed, "first_other_status": self.first_other,
        })
    }
}

struct Figures<'a> {
    plan: &'a DrainPlan,
    sent: &'a [Sent],
    term: Instant,
    unready: Option<Instant>,
    listener: Listener,
    exited: Option<(Instant, ExitStatus)>,
}

impl Figures<'_> {
    fn report(&self, report: &mut Report) {
        let (plan, term) = (self.plan, self.term);
        let after = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(term));
        let of = |client: Client| self.sent.iter().filter(move |s| s.client == client);
        let balanced = Counts::of(of(Client::Balanced));
        let balanced_drain = Counts::of(of(Client::Balanced).filter(|s| s.at >= term));
        let drain_end = term + plan.period;
        let unaware_within = Counts::of(of(Client::Unaware).filter(|s| s.at >= term && s.at < drain_end));
        let unaware_after = Counts::of(of(Client::Unaware).filter(|s| s.at >= drain_end));
        let (accepted, closed) = (after(self.listener.last_accepted), after(self.listener.first_refused));
        let last_balanced = after(of(Client::Balanced).map(|s| s.at).max());
        let (unready, exit_after) = (after(self.unready), after(self.exited.map(|(at, _)| at)));
        let status = self.exited.map(|(_, status)| status);
        let exit_code = status.and_then(|s| s.code());
        let exit_text = match status {
            Some(s) => {
                s.code().map_or_else(|| format!("killed by signal {}", s.signal().unwrap_or(0)), |c| c.to_string())
            }
            None => format!("still running {:?} after SIGTERM (killed)", plan.period + EXIT_SLACK),
        };
        let secs = |d: Option<Duration>| d.map_or_else(|| "never".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
        let rate = plan.rate;

        report.row(
            &format!(
                "drain: {rate:.0} req/s, SIGTERM, load stops {:?} after /readyz fails: served / sent",
                plan.lb_delay
            ),
            format!(
                "{} / {} ({} after SIGTERM); {} refused, {} failed, {} other status",
                balanced.served,
                balanced.sent,
                balanced_drain.served,
                balanced.refused,
                balanced.failed,
                balanced.other_status
            ),
            "every one served".into(),
            None,
        );
        report.row(
            "drain: SIGTERM → /readyz 503 / listener last accepted, first refused / process exit",
            format!(
                "{} / {}, {} / {} (exit code {exit_text})",
                unready.map_or_else(|| "never".into(), ms),
                secs(accepted),
                secs(closed),
                secs(exit_after)
            ),
            format!("drainPeriod {:?}", plan.period),
            None,
        );
        report.row(
            "drain: a client unaware of /readyz, within drainPeriod: served / sent; after it: refused",
            format!(
                "{} / {}; {} refused, {} failed, {} served",
                unaware_within.served,
                unaware_within.sent,
                unaware_after.refused,
                unaware_after.failed,
                unaware_after.served
            ),
            "every one served within drainPeriod".into(),
            None,
        );
        report.add_note(format!(
            "activator drain: a server with activator.drainPeriod {:?}, a ready in-process backend, {rate:.0} req/s \
             through the activator from {BALANCED_WORKERS} open-loop workers (half a fresh connection per request, \
             half keep-alive) for {:?}; then SIGTERM (`kill -TERM`). That load imitates a load balancer: it stops \
             sending {:?} after /readyz (asked every {WATCH_EVERY:?}) first answers 503 (its last request {} after \
             SIGTERM); a client unaware of readiness sends {:.0} req/s more (a fresh and a keep-alive connection, each \
             every {UNAWARE_EVERY:?}) until the process exits; the listener is probed with a TCP connection every \
             {WATCH_EVERY:?} after SIGTERM (`never` refused: the process exited within one probe of closing it)",
            plan.period,
            plan.lead,
            plan.lb_delay,
            secs(last_balanced),
            2.0 / UNAWARE_EVERY.as_secs_f64(),
        ));
        goal(
            report,
            "drain: every request of a load balancer that follows /readyz is served",
            balanced.sent > 0 && balanced.not_served() == 0,
            format!("{} / {} served, {} after SIGTERM", balanced.served, balanced.sent, balanced_drain.served),
        );
        let open_throughout = unaware_within.sent > 0
            && unaware_within.not_served() == 0
            && accepted.is_some_and(|a| a + PROBE_SLACK >= plan.period)
            && closed.is_none_or(|c| c >= plan.period);
        goal(
            report,
            "drain: the activator accepts and serves for the whole drainPeriod, then exits 0",
            open_throughout && exit_code == Some(0),
            format!(
                "{} / {} served within it, listener last accepted after {}, first refused after {}, exit code \
                 {exit_text}",
                unaware_within.served,
                unaware_within.sent,
                secs(accepted),
                secs(closed)
            ),
        );
        let opt_ms = |d: Option<Duration>| d.map_or(serde_json::Value::Null, ms_value);
        report.figure(
            "activator_drain",
            serde_json::json!({
                "drain_period_s": plan.period.as_secs_f64(), "rate_per_s": rate, "lead_s": plan.lead.as_secs_f64(),
                "lb_delay_s": plan.lb_delay.as_secs_f64(),
                "balanced": balanced.json(), "balanced_after_sigterm": balanced_drain.json(),
                "unaware_within_drain_period": unaware_within.json(),
                "unaware_after_drain_period": unaware_after.json(),
                "readyz_503_after_ms": opt_ms(unready), "last_balanced_request_after_ms": opt_ms(last_balanced),
                "listener_last_accepted_after_ms": opt_ms(accepted), "listener_first_refused_after_ms": opt_ms(closed),
                "exit_after_ms": opt_ms(exit_after),
                "exit_code": exit_code, "exit_signal": status.and_then(|s| s.signal()),
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::reserve_ports;
    use super::*;

    #[test]
    fn counts_sort_requests_by_outcome() {
        let at = Instant::now();
        let sent: Vec<Sent> =
            [Outcome::Served, Outcome::Served, Outcome::Status(503), Outcome::Refused, Outcome::Failed]
                .into_iter()
                .map(|outcome| Sent { at, client: Client::Balanced, outcome })
                .collect();
        let counts = Counts::of(sent.iter());
        assert_eq!((counts.sent, counts.served, counts.other_status), (5, 2, 1));
        assert_eq!((counts.refused, counts.failed, counts.first_other), (1, 1, Some(503)));
        assert_eq!(counts.not_served(), 3);
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_and_an_open_one_accepted() {
        let (socket, port) = reserve_ports(1).expect("reserve").remove(0);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let e = web::connect(addr).await.expect_err("nothing listens");
        assert!(refused(&e), "{e:#}");
        let mut listener = Listener::default();
        listener.probe(addr).await;
        assert!(listener.first_refused.is_some() && listener.last_accepted.is_none(), "{listener:?}");

        let _listening = socket.listen(16).expect("listen");
        let mut listener = Listener::default();
        listener.probe(addr).await;
        assert!(listener.last_accepted.is_some() && listener.first_refused.is_none(), "{listener:?}");
    }
}
