//! The container image: `scripts/image.sh` builds the Dockerfile's runtime stage offline with
//! buildah; the image runs `spinscale serve` as user 65532, answers `/healthz`, the standard gRPC
//! health check and KEDA's ExternalScaler service, and stays within 80 MB.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use spinscale_testkit::free_port;
use support::{components_required, until};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const MAX_IMAGE_BYTES: u64 = 80 * 1000 * 1000;

/// buildah with the storage driver scripts/image.sh uses (vfs unless STORAGE_DRIVER says otherwise).
fn buildah() -> Command {
    let mut command = Command::new("buildah");
    let driver = std::env::var("STORAGE_DRIVER").unwrap_or_else(|_| "vfs".to_owned());
    command.args(["--storage-driver", &driver]);
    command
}

fn checked(mut command: Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(output.status.success(), "{command:?}: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    output
}

/// A working container of the image, removed on drop.
struct Container(String);

impl Container {
    fn from(image: &str) -> Self {
        let mut command = buildah();
        command.args(["from", "--pull=never", image]);
        Self(String::from_utf8(checked(command).stdout).unwrap().trim().to_owned())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = buildah().args(["rm", &self.0]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// `buildah run` in its own process group: on drop, the group (buildah and the containerised
/// spinscale under it) is killed, and the spinscale process itself if it left the group.
struct Running {
    buildah: Child,
    log: tempfile::NamedTempFile,
    argv: Vec<String>,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// The containerised process: the one whose command line is exactly `argv` (buildah's own
    /// command line holds the same words after its options).
    fn pid(&self) -> Option<u32> {
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
            (args.len() == self.argv.len() && args.iter().zip(&self.argv).all(|(a, b)| *a == b.as_bytes()))
                .then_some(pid)
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let group = format!("-{}", self.buildah.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.buildah.wait();
    }
}

fn field<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| &v[*key])
}

/// The `Uid:` or `Gid:` line of a process: real, effective, saved and filesystem ids.
fn ids(pid: u32, which: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|l| l.starts_with(which)).expect("id line");
    line[which.len()..].split_whitespace().map(|id| id.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_builds_offline_and_serves_as_nonroot_within_80_mb() {
    if !Command::new("buildah").arg("--version").output().is_ok_and(|o| o.status.success()) {
        assert!(
            !components_required(),
            "buildah is required to build and run the image: scripts/install-buildah.sh installs it"
        );
        eprintln!("SKIPPED: no `buildah` on PATH (scripts/install-buildah.sh installs it)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));

    // The build: scripts/image.sh, which prints the image reference last.
    let started = Instant::now();
    let mut build = Command::new("bash");
    build.arg(root.join("scripts/image.sh")).current_dir(root);
    let output = checked(build);
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let image = stdout.lines().last().expect("image.sh prints the image reference").trim().to_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(image, format!("localhost/spinscale:{version}"));
    eprintln!("scripts/image.sh took {:.1} s", started.elapsed().as_secs_f64());

    // The image's config, as the Dockerfile's runtime stage sets it.
    let mut inspect = buildah();
    inspect.args(["inspect", "--type", "image", &image]);
    let inspected: Value = serde_json::from_slice(&checked(inspect).stdout).expect("inspect JSON");
    let config = field(&inspected, &["OCIv1", "config"]);
    assert_eq!(config["User"], "65532:65532", "{config:#}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/spinscale"]), "{config:#}");
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]), "{config:#}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version, "the Dockerfile's version label: {labels:#}");
    assert_eq!(labels["org.opencontainers.image.licenses"], env!("CARGO_PKG_LICENSE"), "{labels:#}");
    assert_eq!(labels["org.opencontainers.image.source"], env!("CARGO_PKG_REPOSITORY"), "{labels:#}");
    for label in ["title", "description"] {
        assert!(labels[format!("org.opencontainers.image.{label}")].is_string(), "{labels:#}");
    }

    // Its size: the layers as stored, uncompressed.
    let manifest: Value =
        serde_json::from_str(inspected["Manifest"].as_str().expect("manifest")).expect("manifest JSON");
    let layers = manifest["layers"].as_array().expect("layers");
    let size: u64 = layers.iter().map(|l| l["size"].as_u64().expect("layer size")).sum();
    eprintln!("image {image}: {} layers, {:.1} MB", layers.len(), size as f64 / 1e6);
    assert!(size <= MAX_IMAGE_BYTES, "image is {size} bytes, more than {MAX_IMAGE_BYTES}");

    // Run it: the entrypoint, then `serve` on free loopback ports of the host network.
    let container = Container::from(&image);
    let (grpc, http) = (free_port().unwrap(), free_port().unwrap());
    let mut argv: Vec<String> =
        config["Entrypoint"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    argv.extend(
        ["serve", "--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{http}")]
            .map(str::to_owned),
    );
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut run = buildah();
    run.args(["run", "--isolation", "chroot", "--network", "host", &container.0, "--"])
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(log.reopen().unwrap())
        .stderr(log.reopen().unwrap());
    std::os::unix::process::CommandExt::process_group(&mut run, 0);
    let mut running = Running { buildah: run.spawn().expect("spawn buildah run"), log, argv };

    let healthz = format!("http://127.0.0.1:{http}/healthz");
    let started = Instant::now();
    loop {
        if reqwest::get(&healthz).await.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
            break;
        }
        if let Some(status) = running.buildah.try_wait().unwrap() {
            panic!("the container exited with {status} before /healthz answered:\n{}", running.log());
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no 200 from {healthz} within 60 s:\n{}", running.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("/healthz answered 200 {:.1} s after `buildah run`", started.elapsed().as_secs_f64());

    // The process runs as the image's user, not as root.
    let mut pid = None;
    assert!(
        until(Duration::from_secs(5), || {
            pid = running.pid();
            pid.is_some()
        })
        .await,
        "no containerised process"
    );
    let pid = pid.unwrap();
    assert_eq!(ids(pid, "Uid:"), [65532; 4], "uids of the containerised spinscale");
    assert_eq!(ids(pid, "Gid:"), [65532; 4], "gids of the containerised spinscale");

    // gRPC: the standard health check, as a kubelet grpc probe or KEDA's tooling would ask.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connect");
    let mut health = HealthClient::new(channel.clone());
    let answer = health.check(HealthCheckRequest { service: String::new() }).await.expect("health check");
    assert_eq!(answer.into_inner().status(), ServingStatus::Serving);

    // KEDA's ExternalScaler service: a trigger without any source is refused with the cause.
    let mut scaler = support::Client::new(channel);
    let refused = scaler
        .get_metric_spec(support::so_ref("no-source", &[("scalerAddress", "spinscale:9500")]))
        .await
        .expect_err("a trigger without a source has no metric spec");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    drop(running);
    drop(container);
}
