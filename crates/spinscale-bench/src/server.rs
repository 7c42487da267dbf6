//! The server under test: `spinscale serve` as a child process with a bench config.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
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
    /// `/readyz` on the HTTP port: `503` from SIGTERM on.
    pub readyz: String,
    /// `/metrics` on the HTTP port: the server's own counters.
    pub metrics: String,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(CONFIG).await
    }

    /// The server with this config file.
    pub async fn start_with(config_text: &str) -> anyhow::Result<Self> {
        Self::spawn(config_text, None).await
    }

    /// The server with this config file and the HTTP activator on a free loopback port.
    pub async fn start_with_activator(config_text: &str) -> anyhow::Result<Self> {
        Self::spawn(config_text, Some("")).await
    }

    /// Same, with more keys of the config's `activator` section (lines indented by two spaces,
    /// e.g. `"  drainPeriod: 3s\n"`): `config_text` must not have that section.
    pub async fn start_with_activator_settings(config_text: &str, settings: &str) -> anyhow::Result<Self> {
        Self::spawn(config_text, Some(settings)).await
    }

    async fn spawn(config_text: &str, activator_settings: Option<&str>) -> anyhow::Result<Self> {
        let with_activator = activator_settings.is_some();
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("config.yaml");
        // The bench's backends listen on loopback, which the operator must allow.
        let activator_section = activator_settings
            .map(|more| format!("\nactivator:\n  allowedBackends: ['http://127.0.0.1:*']\n{more}"))
            .unwrap_or_default();
        std::fs::write(&config, format!("{config_text}{activator_section}"))?;
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
        let readyz = format!("http://127.0.0.1:{http}/readyz");
        let metrics = format!("http://127.0.0.1:{http}/metrics");
        let server = Self { child, grpc: format!("http://127.0.0.1:{grpc}"), activator, readyz, metrics, _dir: dir };
        let started = Instant::now();
        while !reqwest::get(&server.readyz).await.is_ok_and(|r| r.status().is_success()) {
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

    /// Sends SIGTERM, as the kubelet does to stop a pod.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().context("cannot run `kill`")?;
        ensure!(status.success(), "`kill -TERM {pid}` failed ({status})");
        Ok(())
    }

    /// The exit status once the process has exited, without waiting.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
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
        rss_mib_of(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `spinscale` binary built next to this one (`cargo build --release` builds both).
/// Resident memory of process `pid` (`VmRSS` of `/proc/PID/status`), in MiB.
pub fn rss_mib_of(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kib / 1024.0)
}

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
