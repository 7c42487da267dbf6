//! Server memory with many routes and many held requests: the resident set of a fresh
//! `spinscale serve` at start, with the routes registered (and KEDA's streams open), and with
//! the requests held. Each held request is a raw TCP connection that sent one `GET` (cheap on
//! this side), spread over the routes; every backend refuses connections, so all stay held.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;

use super::super::report::Report;
use super::super::server::ServerProcess;
use super::{ActivatorPlan, goal, reserve_ports};
use spinscale::grpc::scaled_object_ref;
use spinscale::proto::ScaledObjectRef;

/// Let the server settle (allocations freed, tasks parked) before reading its memory.
const SETTLE: Duration = Duration::from_secs(1);

fn host(i: usize) -> String {
    format!("{PREFIX}-{i}.bench")
}

/// The names and hosts of this phase's targets.
const PREFIX: &str = "mem";

pub async fn run(server: &ServerProcess, plan: &ActivatorPlan, report: &mut Report) -> anyhow::Result<()> {
    let activator = server.activator.context("the server was started without its activator")?;
    tokio::time::sleep(SETTLE).await;
    let at_start = server.rss_mib()?;
    // One refusing port for every backend: the routes differ by host.
    let (_refusing, port) = reserve_ports(1)?.pop().context("no port reserved")?;
    let refs = targets(plan, port);
    let (woken, streams) = register(server, &refs).await?;
    tokio::time::sleep(SETTLE).await;
    let with_routes = server.rss_mib()?;

    let (routes, held) = (plan.routes, plan.held);
    let connections = tokio::task::spawn_blocking(move || hold(activator, held, routes)).await??;
    tokio::time::sleep(SETTLE * 2).await;
    let with_held = server.rss_mib()?;
    let answered = tokio::task::spawn_blocking(move || answered(&connections)).await?;
    streams.iter().for_each(tokio::task::JoinHandle::abort);
    let woken = woken.load(Ordering::Relaxed);

    let kib_each = |mib: f64, n: usize| mib * 1024.0 / n.max(1) as f64;
    report.row(
        &format!("server RSS: {routes} routes, {held} held requests"),
        format!("{with_held:.1} MiB ({:.1} KiB per held request)", kib_each(with_held - with_routes, held)),
        format!(
            "{at_start:.1} MiB at start, {with_routes:.1} MiB with the routes ({:.1} KiB per route)",
            kib_each(with_routes - at_start, routes)
        ),
        None,
    );
    report.add_note(format!(
        "activator memory: {held} raw connections, one GET each, spread over {routes} routes whose backends refuse \
         connections; {answered} answered while they should have been held; {woken} of {routes} targets pushed true"
    ));
    const GOAL: &str = "≤ 100 MiB RSS at 1,000 routes and 10,000 held";
    if held >= 10_000 && routes >= 1_000 {
        goal(report, GOAL, with_held <= 100.0, format!("{with_held:.1} MiB"));
    } else {
        report
            .add_note(format!("goal {GOAL}: measured by the full run only ({with_held:.1} MiB with {held} held here)"));
    }
    report.figure(
        "activator_memory",
        serde_json::json!({
            "routes": routes, "held": held, "answered_while_held": answered, "targets_woken": woken,
            "rss_start_mib": at_start, "rss_routes_mib": with_routes, "rss_held_mib": with_held,
        }),
    );
    Ok(())
}

fn targets(plan: &ActivatorPlan, port: u16) -> Vec<ScaledObjectRef> {
    held_targets(PREFIX, plan.routes, plan.held.div_ceil(plan.routes).max(1), port)
}

/// `routes` targets named `PREFIX-i`, each routing its own host `PREFIX-i.bench` to the backend at
/// `port` (which never answers) and holding up to `max_held` requests for 300 s.
pub(super) fn held_targets(prefix: &str, routes: usize, max_held: usize, port: u16) -> Vec<ScaledObjectRef> {
    let backend = format!("http://127.0.0.1:{port}");
    let max_held = max_held.to_string();
    (0..routes)
        .map(|i| {
            let host = format!("{prefix}-{i}.bench");
            let meta = [
                ("scalerAddress", "bench"),
                ("hosts", &host),
                ("backend", &backend),
                ("maxHeld", &max_held),
                ("holdTimeout", "300s"),
            ];
            scaled_object_ref("bench", &format!("{prefix}-{i}"), &meta)
        })
        .collect()
}

/// Registers each target and opens its stream on one connection, as KEDA does; counts the
/// targets whose stream says `true`.
pub(super) async fn register(
    server: &ServerProcess,
    refs: &[ScaledObjectRef],
) -> anyhow::Result<(Arc<AtomicUsize>, Vec<JoinHandle<()>>)> {
    let client = server.connect().await?;
    let woken = Arc::new(AtomicUsize::new(0));
    let mut streams = Vec::with_capacity(refs.len());
    for r in refs {
        client.clone().get_metric_spec(r.clone()).await?;
        let mut stream = client.clone().stream_is_active(r.clone()).await?.into_inner();
        let woken = woken.clone();
        streams.push(tokio::spawn(async move {
            if let Ok(Some(m)) = stream.message().await
                && m.result
            {
                woken.fetch_add(1, Ordering::Relaxed);
            }
            std::future::pending::<()>().await;
        }));
    }
    Ok((woken, streams))
}

/// `n` connections to the activator, request `i` for route `i % routes`.
fn hold(activator: SocketAddr, n: usize, routes: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut connections = Vec::with_capacity(n);
    for i in 0..n {
        let mut stream = TcpStream::connect(activator).with_context(|| format!("held connection {i}"))?;
        write!(stream, "GET / HTTP/1.1\r\nHost: {}\r\n\r\n", host(i % routes))?;
        stream.set_nonblocking(true)?;
        connections.push(stream);
    }
    Ok(connections)
}

/// How many of the connections got anything back (or were closed): none should have.
fn answered(connections: &[TcpStream]) -> usize {
    let mut buf = [0u8; 1];
    connections
        .iter()
        .filter(|c| {
            let mut c: &TcpStream = c;
            !matches!(c.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
        })
        .count()
}
