//! nginx as a plain reverse proxy with keep-alive to the backend: the proxying baseline. The bench
//! writes its config into a temporary directory, starts it in the foreground and stops it at the end.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use spinscale_testkit::free_port;

/// Where nginx may be when it is not on the `PATH` (Debian's is `/usr/sbin/nginx`, which a
/// non-root `PATH` often lacks).
const SBIN: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"];

/// The nginx binary, or why the bench cannot run.
pub fn find() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_in(std::env::split_paths(&path).chain(SBIN.iter().map(PathBuf::from)))
}

fn find_in(dirs: impl Iterator<Item = PathBuf>) -> anyhow::Result<PathBuf> {
    dirs.map(|dir| dir.join("nginx")).find(|candidate| candidate.is_file()).context(
        "`spinscale bench --activator` compares the activator with nginx, and no `nginx` was found on the PATH \
             or in /usr/sbin: install it with `apt-get install nginx` (Debian/Ubuntu)",
    )
}

/// A minimal reverse-proxy config: all of nginx's files under `dir`, keep-alive both ways, the
/// same forwarding headers spinscale's activator sets.
pub fn config(dir: &Path, listen: SocketAddr, backend: SocketAddr, keepalive: usize) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream backend {{
        server {backend};
        keepalive {keepalive};
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
}}
"
    )
}

/// A running nginx, stopped on drop.
pub struct Nginx {
    child: Child,
    binary: PathBuf,
    conf: PathBuf,
    dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Nginx {
    pub async fn start(binary: &Path, backend: SocketAddr, keepalive: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        // nginx opens `<prefix>/logs/error.log` before it reads the config.
        std::fs::create_dir_all(dir.path().join("logs"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), addr, backend, keepalive))?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut nginx = Self { child, binary: binary.to_path_buf(), conf, dir, addr };
        nginx.wait_ready().await?;
        Ok(nginx)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("nginx exited ({status}) at start: {}", self.error_log());
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("nginx not listening on {} after 10 s: {}", self.addr, self.error_log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap_or_default();
        std::iter::once(master).chain(children.split_whitespace().filter_map(|p| p.parse().ok())).collect()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default().trim().to_string()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // `-s stop` signals the master, which takes its workers with it (a killed master would
        // leave them running).
        let stopped = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf)
            .arg("-p")
            .arg(self.dir.path())
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(3);
        while stopped && Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_keeps_everything_in_its_directory_and_connections_alive() {
        let listen = SocketAddr::from(([127, 0, 0, 1], 8080));
        let backend = SocketAddr::from(([127, 0, 0, 1], 9090));
        let text = config(Path::new("/tmp/x"), listen, backend, 64);
        for expected in [
            "daemon off;",
            "pid /tmp/x/nginx.pid;",
            "error_log /tmp/x/error.log warn;",
            "server 127.0.0.1:9090;",
            "keepalive 64;",
            "listen 127.0.0.1:8080;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "access_log off;",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        let opened = text.matches('{').count();
        assert_eq!(opened, text.matches('}').count(), "balanced braces");
        assert!(!text.lines().any(|l| l.contains("/tmp/x") && !l.trim_end().ends_with(';')), "{text}");
    }

    #[test]
    fn a_missing_nginx_says_how_to_install_it() {
        let empty = tempfile::tempdir().expect("dir");
        let e = find_in([empty.path().to_path_buf()].into_iter()).expect_err("no nginx there");
        assert!(e.to_string().contains("apt-get install nginx"), "{e}");
        std::fs::write(empty.path().join("nginx"), "").expect("file");
        assert_eq!(find_in([empty.path().to_path_buf()].into_iter()).expect("found"), empty.path().join("nginx"));
    }
}
