//! Real components for spinscale's tests, demo and bench, run in-process or as child
//! processes: a `prometheus` server from `PATH`, exposition endpoints it scrapes, and free
//! loopback ports. Not part of the product: nothing here runs in a deployed scaler.

#![deny(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

/// An HTTP endpoint serving `/metrics` with whatever text it currently holds.
pub struct Exposition {
    /// Where it listens, on `127.0.0.1`.
    pub addr: SocketAddr,
    body: Arc<RwLock<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Exposition {
    /// Serves `initial` at `http://127.0.0.1:<port>/metrics`.
    pub async fn start(initial: &str) -> anyhow::Result<Self> {
        Self::serve(initial, false).await
    }

    /// The same, with the body gzip-compressed (`content-encoding: gzip`), as many exporters answer.
    pub async fn start_gzip(initial: &str) -> anyhow::Result<Self> {
        Self::serve(initial, true).await
    }

    async fn serve(initial: &str, gzip: bool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let body = Arc::new(RwLock::new(initial.to_string()));
        let served = body.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let text = served.read().map(|b| b.clone()).unwrap_or_default();
                async move {
                    let content_type = ("content-type", "text/plain; version=0.0.4");
                    if gzip {
                        ([content_type, ("content-encoding", "gzip")], gzipped(text.as_bytes()))
                    } else {
                        ([content_type, ("x-content-encoding", "identity")], text.into_bytes())
                    }
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, body, task })
    }

    /// Replaces the exposition text.
    pub fn set(&self, text: impl Into<String>) {
        if let Ok(mut body) = self.body.write() {
            *body = text.into();
        }
    }
}

impl Drop for Exposition {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `prometheus` server (the real binary) scraping some targets every second.
pub struct PrometheusProcess {
    /// Its base URL, `http://127.0.0.1:<port>` (`https://` with [`WebTls`]).
    pub address: String,
    child: Child,
    dir: tempfile::TempDir,
    binary: PathBuf,
    port: u16,
}

/// TLS for Prometheus's own web server (its `--web.config.file`), PEM files.
#[derive(Clone, Debug)]
pub struct WebTls {
    /// The server's certificate.
    pub cert_file: PathBuf,
    /// Its private key.
    pub key_file: PathBuf,
    /// With a CA, every client must present a certificate it signed
    /// (`client_auth_type: RequireAndVerifyClientCert`).
    pub client_ca_file: Option<PathBuf>,
}

impl PrometheusProcess {
    /// The `prometheus` binary: `$SPINSCALE_PROMETHEUS_BIN`, or the first on `PATH`.
    pub fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("SPINSCALE_PROMETHEUS_BIN") {
            return Some(PathBuf::from(path)).filter(|p| p.is_file());
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).map(|dir| dir.join("prometheus")).find(|p| p.is_file())
    }

    /// Starts Prometheus on a free loopback port, scraping `targets` every `scrape_interval`,
    /// and waits until it is ready.
    pub async fn start(targets: &[SocketAddr], scrape_interval: Duration) -> anyhow::Result<Self> {
        Self::start_with_history(targets, scrape_interval, None).await
    }

    /// As [`Self::start`], holding `history` (OpenMetrics text with timestamps, ending in `# EOF`)
    /// from before it started: written into its storage with `promtool tsdb create-blocks-from`.
    pub async fn start_with_history(
        targets: &[SocketAddr],
        scrape_interval: Duration,
        history: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::start_with(targets, scrape_interval, history, None).await
    }

    /// As [`Self::start`], serving HTTPS as `tls` says (its address is then `https://`). Readiness
    /// is read from its log, since a client certificate may be required.
    pub async fn start_tls(targets: &[SocketAddr], scrape_interval: Duration, tls: &WebTls) -> anyhow::Result<Self> {
        Self::start_with(targets, scrape_interval, None, Some(tls)).await
    }

    async fn start_with(
        targets: &[SocketAddr],
        scrape_interval: Duration,
        history: Option<&str>,
        tls: Option<&WebTls>,
    ) -> anyhow::Result<Self> {
        let binary = Self::binary().context("no `prometheus` binary on PATH (Debian: apt-get install prometheus)")?;
        let dir = tempfile::tempdir()?;
        if let Some(history) = history {
            let promtool = binary.with_file_name("promtool");
            let input = dir.path().join("history.om");
            std::fs::write(&input, history)?;
            let out = Command::new(&promtool)
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(&input)
                .arg(dir.path().join("data"))
                .output()
                .with_context(|| format!("cannot run {}", promtool.display()))?;
            if !out.status.success() {
                bail!("promtool could not import the history: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let interval = format!("{}ms", scrape_interval.as_millis());
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
             scrape_configs:\n  - job_name: spinscale-embedded\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.path().join("prometheus.yml"), config)?;
        if let Some(tls) = tls {
            let mut web = format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                tls.cert_file.display(),
                tls.key_file.display()
            );
            if let Some(ca) = &tls.client_ca_file {
                web.push_str(&format!(
                    "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\n",
                    ca.display()
                ));
            }
            std::fs::write(dir.path().join("web.yml"), web)?;
        }
        let port = free_port()?;
        let child = spawn(&binary, dir.path(), port)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut process = Self { address: format!("{scheme}://127.0.0.1:{port}"), child, dir, binary, port };
        process.wait_ready(Duration::from_secs(20)).await?;
        Ok(process)
    }

    /// Starts a stopped server again on the same port, with the same config and data (as a restart
    /// after an outage would), and waits until it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.child = spawn(&self.binary, self.dir.path(), self.port)?;
        self.wait_ready(Duration::from_secs(20)).await
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
                bail!("prometheus exited with {status}: {}", log.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
            }
            if self.address.starts_with("https://") {
                let log = std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
                if log.contains("Server is ready to receive web requests") {
                    return Ok(());
                }
            } else {
                let ready =
                    http.get(format!("{}/-/ready", self.address)).timeout(Duration::from_millis(500)).send().await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("prometheus at {} not ready after {limit:?}", self.address)
    }

    /// The process id of the running server (for its CPU and memory in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server (as an outage would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `binary` with the config in `dir`, its data in `dir/data`, its log in `dir/prometheus.log`,
/// and its web config in `dir/web.yml` when there is one.
fn spawn(binary: &std::path::Path, dir: &std::path::Path, port: u16) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let mut command = Command::new(binary);
    if dir.join("web.yml").is_file() {
        command.arg(format!("--web.config.file={}", dir.join("web.yml").display()));
    }
    command
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

fn gzipped(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// The `tansu` broker binary: `$SPINSCALE_TANSU_BIN`, else the first on `PATH` or in
/// `~/.cargo/bin` (where `cargo install tansu` puts it).
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SPINSCALE_TANSU_BIN") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    std::env::split_paths(&path).chain(home).map(|dir| dir.join("tansu")).find(|p| p.is_file())
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
