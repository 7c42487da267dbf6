//! No panic at start, ever: a machine without a CA store still serves (bundled roots), and an
//! unreadable config or a port in use stops `spinscale serve` with a clear error and exit code ≠ 0.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spinscale_testkit::free_port;

fn serve() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_spinscale"));
    command.arg("serve").env("RUST_LOG", "warn");
    command
}

/// `GET /healthz` on a connected socket answers 200.
fn healthz(mut socket: std::net::TcpStream) -> bool {
    use std::io::{Read, Write};
    let request = b"GET /healthz HTTP/1.1\r\nhost: spinscale\r\nconnection: close\r\n\r\n";
    let mut answer = String::new();
    socket.write_all(request).is_ok()
        && socket.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

#[test]
fn without_a_ca_store_the_server_starts_with_the_bundled_roots() {
    let (grpc, http) = (free_port().expect("port"), free_port().expect("port"));
    let dir = tempfile::tempdir().expect("tempdir");
    // The system roots are read from these when set: an empty directory is a store with no CA,
    // as in a minimal image without /etc/ssl.
    let mut child = serve()
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{http}")])
        .env("SSL_CERT_FILE", dir.path().join("none.pem"))
        .env("SSL_CERT_DIR", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let started = Instant::now();
    let healthy = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Err(format!("exited with {status}"));
        }
        if std::net::TcpStream::connect(("127.0.0.1", http)).is_ok_and(healthz) {
            break Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            break Err("no /healthz within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(healthy, Ok(()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("using the bundled Mozilla roots"), "the fallback was taken: {stderr}");
}

#[test]
fn an_unreadable_config_and_a_port_in_use_are_named_errors() {
    let output = serve().args(["--config", "/nonexistent/spinscale.yaml"]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("/nonexistent/spinscale.yaml"), "names the file: {stderr}");

    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let output = serve()
        .args(["--grpc-listen", &format!("127.0.0.1:{port}"), "--http-listen", "127.0.0.1:0"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("--grpc-listen") && stderr.contains(&port.to_string()), "names the flag: {stderr}");
}
