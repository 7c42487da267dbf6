//! The HTTP activator (`--activator`), each figure against its baseline in the same run:
//! - a request for a target at zero → `true` on its stream, against a poller calling `IsActive`
//!   every 500 ms (the KEDA HTTP add-on's scaler polls its interceptors that often);
//! - its backend listening → the held response at the client, against Knative's activator,
//!   which probes every 200 ms;
//! - small requests proxied at 64 connections: spinscale's activator against nginx and direct;
//! - server memory with many routes and many held requests;
//! - a flood past `limits.maxHeldRequests`: requests held and refused, server memory, and gRPC
//!   unary latency with the activator at its limit against at rest;
//! - SIGTERM under steady load with `activator.drainPeriod`: requests served and refused, when
//!   `/readyz` fails, the listener closes and the process exits.
//!
//! The server under test is a `spinscale serve --activator-listen` child process; nginx is started
//! from its Debian package with a config written here. Backends and load run in this process.

mod drain;
mod flood;
mod memory;
mod nginx;
mod steady;
mod wake;
mod web;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpSocket;

use super::report::Report;
use super::server::{CONFIG, ServerProcess};
use super::{Rng, schedule};

/// The sizes of one activator run.
#[derive(Clone, Copy, Debug)]
pub struct ActivatorPlan {
    /// Targets woken, each by one request, each with its own backend.
    pub wakeups: usize,
    /// Requests (then backend starts) are spread over this window.
    pub spread: Duration,
    /// Keep-alive connections of the steady-state load.
    pub connections: usize,
    /// How long each steady-state arm is measured (after a shorter warm-up).
    pub arm: Duration,
    /// Routes registered for the memory figure.
    pub routes: usize,
    /// Requests held at once, spread over those routes.
    pub held: usize,
    /// The flood past the activator's budget of held requests.
    pub flood: flood::FloodPlan,
    /// SIGTERM under steady load.
    pub drain: drain::DrainPlan,
}

impl ActivatorPlan {
    pub fn of(quick: bool) -> Self {
        let full = Self {
            wakeups: 200,
            spread: Duration::from_secs(4),
            connections: 64,
            arm: Duration::from_secs(10),
            routes: 1_000,
            held: 10_000,
            flood: flood::FloodPlan { budget: 2_000, requests: 6_000, routes: 200, unary_for: Duration::from_secs(5) },
            drain: drain::DrainPlan {
                period: Duration::from_secs(10),
                rate: 200.0,
                lead: Duration::from_secs(3),
                lb_delay: Duration::from_secs(1),
            },
        };
        if quick {
            Self {
                wakeups: 100,
                spread: Duration::from_secs(2),
                arm: Duration::from_secs(3),
                held: 2_000,
                flood: flood::FloodPlan { unary_for: Duration::from_secs(2), ..full.flood },
                drain: drain::DrainPlan { period: Duration::from_secs(3), lead: Duration::from_secs(1), ..full.drain },
                ..full
            }
        } else {
            full
        }
    }
}

/// Where the server under test listens, and its process when it runs as a child.
pub struct Under {
    pub grpc: String,
    pub activator: SocketAddr,
    pub pid: Option<u32>,
}

impl Under {
    fn of(server: &ServerProcess) -> anyhow::Result<Self> {
        let activator = server.activator.context("the server was started without its activator")?;
        Ok(Self { grpc: server.grpc.clone(), activator, pid: Some(server.pid()) })
    }
}

pub async fn run(plan: &ActivatorPlan, report: &mut Report) -> anyhow::Result<()> {
    let nginx = nginx::find()?;
    check_open_files(plan.held.max(plan.flood.requests) + plan.wakeups + 1_000)?;

    eprintln!("bench: activator wake-ups ({} targets over {:?})", plan.wakeups, plan.spread);
    let server = ServerProcess::start_with_activator(CONFIG).await?;
    wake::run(&Under::of(&server)?, &wake::WakePlan { wakeups: plan.wakeups, spread: plan.spread }, report).await?;
    drop(server);

    eprintln!("bench: proxying at {} connections, {:?} per arm (direct, spinscale, nginx)", plan.connections, plan.arm);
    let server = ServerProcess::start_with_activator(CONFIG).await?;
    steady::run(&Under::of(&server)?, &nginx, plan, report).await?;
    drop(server);

    eprintln!("bench: activator memory ({} routes, {} held requests)", plan.routes, plan.held);
    let server = ServerProcess::start_with_activator(CONFIG).await?;
    memory::run(&server, plan, report).await?;
    drop(server);

    let f = &plan.flood;
    eprintln!(
        "bench: activator flood ({} requests past maxHeldRequests {}, {} routes)",
        f.requests, f.budget, f.routes
    );
    flood::run(f, report).await?;

    let d = &plan.drain;
    eprintln!("bench: activator drain (SIGTERM at {:.0} req/s, drainPeriod {:?})", d.rate, d.period);
    drain::run(d, report).await?;
    Ok(())
}

/// Each held request is a socket on both ends: this process needs one per held request.
fn check_open_files(needed: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let Some(soft) = open_files_limit(&limits) else { return Ok(()) };
    anyhow::ensure!(
        soft >= needed as u64,
        "the activator bench needs about {needed} open files, this process may open {soft}: raise it with `ulimit -n {needed}`"
    );
    Ok(())
}

/// The soft `Max open files` of a `/proc/PID/limits` text.
fn open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
}

/// CPU time (user and system) the processes have used so far; processes that are gone count zero.
fn cpu_time(pids: &[u32]) -> Duration {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| cpu_ticks(&stat))
        // Linux reports in clock ticks of 1/100 s (USER_HZ) on every common architecture.
        .map(|ticks| Duration::from_millis(ticks * 10))
        .sum()
}

/// `utime + stime` of a `/proc/PID/stat` line: fields 14 and 15, counted after the command name
/// (which may contain spaces and parentheses, so from its last `)`).
pub(crate) fn cpu_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `n` loopback ports, each bound but not listening: connections are refused until `listen()`
/// (the moment a backend becomes ready), and no other process can take the port meanwhile.
fn reserve_ports(n: usize) -> anyhow::Result<Vec<(TcpSocket, u16)>> {
    (0..n)
        .map(|_| {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
            let port = socket.local_addr()?.port();
            Ok((socket, port))
        })
        .collect()
}

/// A note with one of the goals and where this run landed.
fn goal(report: &mut Report, goal: &str, met: bool, landed: String) {
    let verdict = if met { "met" } else { "NOT met" };
    report.add_note(format!("goal {goal}: {verdict} ({landed})"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_files_limit_is_read() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max processes             unlimited            unlimited            processes\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(open_files_limit(limits), Some(1024));
        assert_eq!(open_files_limit("nothing"), None);
    }

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let stat = "4242 (tokio (worker) 1) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 4 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(cpu_ticks("4242 (short"), None);
        assert!(cpu_time(&[std::process::id()]) < Duration::from_secs(3600));
    }

    #[test]
    fn the_schedule_covers_every_index_in_order_within_the_spread() {
        let order = schedule(50, Duration::from_secs(1), 7);
        assert!(order.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(order.iter().all(|(at, _)| *at < Duration::from_secs(1)));
        let mut seen: Vec<usize> = order.iter().map(|(_, i)| *i).collect();
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_reserved_port_refuses_until_it_listens() {
        let mut ports = reserve_ports(1).expect("reserve");
        let (socket, port) = ports.remove(0);
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "refused before listen()");
        let _listener = socket.listen(16).expect("listen");
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok(), "accepted after listen()");
    }
}
