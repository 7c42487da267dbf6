//! Steady-state proxying: small `GET`s from a closed loop of keep-alive connections, direct to a
//! fast backend, through spinscale's activator and through nginx, one arm after the other.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::super::percentile;
use super::super::report::{Report, ms, ms_value};
use super::nginx::Nginx;
use super::web::{self, Backend, Sender};
use super::{ActivatorPlan, Under, cpu_time, goal};
use spinscale::grpc::scaled_object_ref;
use spinscale::proto::external_scaler_client::ExternalScalerClient;

const HOST: &str = "steady.bench";

/// What one arm's closed loop got.
#[derive(Debug, Default)]
pub struct Load {
    /// Latencies of the `200`s, sorted.
    pub latencies: Vec<Duration>,
    pub errors: u64,
    pub elapsed: Duration,
    /// CPU time the proxy's processes used meanwhile (zero for the direct arm).
    pub proxy_cpu: Duration,
    /// CPU time this process (load generator and backend) used meanwhile.
    pub bench_cpu: Duration,
}

impl Load {
    pub fn per_s(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// CPU microseconds per answered request.
    fn per_request(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / (self.latencies.len() as f64).max(1.0)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.latencies.len(), "errors": self.errors, "requests_per_s": self.per_s(),
            "p50_ms": ms_value(percentile(&self.latencies, 0.5)), "p99_ms": ms_value(percentile(&self.latencies, 0.99)),
            "proxy_cpu_us_per_request": self.per_request(self.proxy_cpu),
            "bench_cpu_us_per_request": self.per_request(self.bench_cpu),
        })
    }
}

pub async fn run(under: &Under, nginx: &Path, plan: &ActivatorPlan, report: &mut Report) -> anyhow::Result<()> {
    let backend = Backend::start().await?;
    // Registered as KEDA would, with its stream kept open for the run.
    let mut client = ExternalScalerClient::connect(under.grpc.clone()).await?;
    let backend_url = format!("http://{}", backend.addr);
    let meta = [("scalerAddress", "bench"), ("hosts", HOST), ("backend", backend_url.as_str())];
    let r = scaled_object_ref("bench", "steady", &meta);
    client.get_metric_spec(r.clone()).await?;
    let _stream = client.stream_is_active(r).await?;
    let proxy = Nginx::start(nginx, backend.addr, plan.connections).await?;

    let mut arms = Vec::new();
    let ours: Vec<u32> = under.pid.into_iter().collect();
    for (name, addr, pids) in
        [("direct", backend.addr, vec![]), ("spinscale", under.activator, ours), ("nginx", proxy.addr, proxy.pids())]
    {
        eprintln!("bench: proxying, {name}");
        closed_loop(addr, plan.connections, plan.arm.mul_f64(0.2)).await?;
        let (proxy_before, bench_before) = (cpu_time(&pids), cpu_time(&[std::process::id()]));
        let mut load = closed_loop(addr, plan.connections, plan.arm).await?;
        load.proxy_cpu = cpu_time(&pids).saturating_sub(proxy_before);
        load.bench_cpu = cpu_time(&[std::process::id()]).saturating_sub(bench_before);
        arms.push(load);
    }
    drop(proxy);
    let [direct, ours, nginx] = <[Load; 3]>::try_from(arms).map_err(|_| anyhow::anyhow!("three arms"))?;
    summarize(plan, [&direct, &ours, &nginx], report);
    Ok(())
}

fn summarize(plan: &ActivatorPlan, [direct, ours, nginx]: [&Load; 3], report: &mut Report) {
    let c = plan.connections;
    report.row(
        &format!("proxied GET, {c} connections: throughput"),
        format!("{:.0} req/s", ours.per_s()),
        format!("{:.0} req/s nginx ({:.0} direct)", nginx.per_s(), direct.per_s()),
        Some(ours.per_s() / nginx.per_s().max(1e-9)),
    );
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        let (o, n, d) =
            (percentile(&ours.latencies, p), percentile(&nginx.latencies, p), percentile(&direct.latencies, p));
        report.row(
            &format!("proxied GET, {c} connections: latency {name}"),
            ms(o),
            format!("{} nginx ({} direct)", ms(n), ms(d)),
            Some(n.as_secs_f64() / o.as_secs_f64().max(1e-9)),
        );
    }
    let (ours_cpu, nginx_cpu) = (ours.per_request(ours.proxy_cpu), nginx.per_request(nginx.proxy_cpu));
    report.row(
        "proxied GET: proxy CPU per request (user + system)",
        format!("{ours_cpu:.1} µs"),
        format!("{nginx_cpu:.1} µs nginx"),
        Some(nginx_cpu / ours_cpu.max(1e-9)),
    );
    let errors = direct.errors + ours.errors + nginx.errors;
    report.add_note(format!(
        "proxying: {c} keep-alive HTTP/1.1 connections in a closed loop for {:?} per arm (after {:?} unmeasured), \
         `GET /` answered `ok` by an in-process hyper backend; nginx: Debian package, `worker_processes auto`, \
         upstream keepalive {c}. The load generator, the backend, the proxy under test (and the idle other proxy) \
         share this machine's cores, arms run one after another; errors (all arms): {errors}; this process (load and \
         backend) used {:.1} / {:.1} / {:.1} µs CPU per request direct / spinscale / nginx",
        plan.arm,
        plan.arm.mul_f64(0.2),
        direct.per_request(direct.bench_cpu),
        ours.per_request(ours.bench_cpu),
        nginx.per_request(nginx.bench_cpu),
    ));
    goal(
        report,
        "throughput ≥ nginx's",
        ours.per_s() >= nginx.per_s(),
        format!("{:.0} vs {:.0} req/s", ours.per_s(), nginx.per_s()),
    );
    let (o99, n99) = (percentile(&ours.latencies, 0.99), percentile(&nginx.latencies, 0.99));
    goal(report, "p99 ≤ nginx's", o99 <= n99, format!("{} vs {}", ms(o99), ms(n99)));
    report.figure(
        "activator_proxying",
        serde_json::json!({
            "connections": c, "seconds_per_arm": plan.arm.as_secs_f64(),
            "direct": direct.json(), "spinscale": ours.json(), "nginx": nginx.json(),
        }),
    );
}

/// `connections` keep-alive connections to `addr`, each sending `GET /` for `HOST` one after
/// the other for `time`.
pub async fn closed_loop(addr: SocketAddr, connections: usize, time: Duration) -> anyhow::Result<Load> {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(web::connect(addr).await?);
    }
    let started = Instant::now();
    let until = started + time;
    let mut loops = JoinSet::new();
    for sender in senders {
        loops.spawn(one_connection(sender, addr, until));
    }
    let mut load = Load::default();
    while let Some(one) = loops.join_next().await {
        let one = one?;
        load.latencies.extend(one.latencies);
        load.errors += one.errors;
    }
    load.elapsed = started.elapsed();
    load.latencies.sort();
    Ok(load)
}

async fn one_connection(mut sender: Sender, addr: SocketAddr, until: Instant) -> Load {
    let mut load = Load::default();
    while Instant::now() < until {
        // A proxy may close a keep-alive connection (a request limit): open another, as a client would.
        if sender.is_closed() {
            match web::connect(addr).await {
                Ok(fresh) => sender = fresh,
                Err(_) => {
                    load.errors += 1;
                    break;
                }
            }
        }
        let started = Instant::now();
        match web::get(&mut sender, HOST).await {
            Ok(200) => load.latencies.push(started.elapsed()),
            _ => load.errors += 1,
        }
    }
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_closed_loop_counts_answers_and_errors() {
        let backend = Backend::start().await.expect("backend");
        let load = closed_loop(backend.addr, 4, Duration::from_millis(200)).await.expect("load");
        assert!(load.latencies.len() > 10, "{load:?}");
        assert_eq!(load.errors, 0);
        assert!(load.latencies.windows(2).all(|w| w[0] <= w[1]), "sorted");
        assert!(load.per_s() > 0.0);
    }
}
