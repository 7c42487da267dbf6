//! The server under test: `spinscale serve` as a child process with a bench config.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tonic::transport::Channel;

use spinscale::proto::external_scaler_client::ExternalScalerClient;
use spinscale_testkit::free_port;

/// Collector settings of the run: the defaults, but for the tail watch's fetch wait, since
/// librdkafka's mock broker answers a waiting fetch only when the wait ends (a real broker answers
/// as soon as a record arrives).
pub const CONFIG: &str = "collectors:\n  tailFetchWait: 20ms\n";

pub struct ServerProcess {
    child: Child,
    pub grpc: String,
    /// Where the HTTP activator listens, when started with it.
    pub activator: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(CONFIG).await
    }

    /// The server with this config file.
    pub async fn start_with(config_text: &str) -> anyhow::Result<Self> {
        Self::spawn(config_text, false).await
    }

    /// The server with this config file and the HTTP activator on a free loopback port.
    pub async fn start_with_activator(config_text: &str) -> anyhow::Result<Self> {
        Self::spawn(config_text, true).await
    }

    async fn spawn(config_text: &str, with_activator: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("config.yaml");
        // The bench's backends listen on loopback, which the operator must allow.
        let loopback = if with_activator { "\nactivator:\n  allowedBackends: ['http://127.0.0.1:*']\n" } else { "" };
        std::fs::write(&config, format!("{config_text}{loopback}"))?;
        let (grpc, http) = (free_port()?, free_port()?);
        let activator =
            with_activator.then(free_port).transpose()?.map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
        let mut command = Command::new(spinscale_binary()?);
        command
            .args(["serve", "--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}"), "--config"])
            .arg(&config);
        if let Some(addr) = activator {
            command.arg("--activator-listen").arg(addr.to_string());
        }
        let child = command
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `spinscale serve`")?;
        let server = Self { child, grpc: format!("http://127.0.0.1:{grpc}"), activator, _dir: dir };
        let ready = format!("http://127.0.0.1:{http}/readyz");
        let started = Instant::now();
        while !reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()) {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("`spinscale serve` not ready after 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One HTTP/2 connection, shared by every call and stream, as KEDA shares one.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(tonic::transport::Endpoint::from_shared(self.grpc.clone())?.connect().await?)
    }

    pub async fn connect(&self) -> anyhow::Result<ExternalScalerClient<Channel>> {
        Ok(ExternalScalerClient::new(self.channel().await?))
    }

    /// Resident memory of the server process, in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS in /proc/PID/status")?;
        Ok(kib / 1024.0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `spinscale` binary built next to this one (`cargo build --release` builds both).
fn spinscale_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name("spinscale");
    anyhow::ensure!(
        sibling.is_file(),
        "{} not found: build it first (`cargo build --release` builds both binaries)",
        sibling.display()
    );
    Ok(sibling)
}
