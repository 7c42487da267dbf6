//! The status page in a real browser: headless Chromium (Debian package `chromium`) loads `/status`
//! from a running server; the test reads the rendered DOM and keeps a screenshot.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use spinscale::config::Config;
use support::{Kafka, components_required, connect, kafka_meta, poll_until, so_ref, start_server};

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().map(PathBuf::from).find(|p| p.exists())
}

/// Chromium as root in a sandbox-less container, kept off the network it cannot reach.
fn headless(binary: &PathBuf, profile: &std::path::Path) -> Command {
    let mut command = Command::new(binary);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

#[tokio::test]
async fn chromium_renders_the_status_page_with_a_row_and_chart_per_target() {
    let Some(binary) = chromium() else {
        assert!(!components_required(), "the `chromium` binary is required (apt-get install chromium)");
        eprintln!("SKIPPED: no chromium (apt-get install chromium)");
        return;
    };
    let kafka = Kafka::new(&[("orders", 1)]);
    kafka.produce("orders", 0, 5);
    kafka.commit("billing", "orders", 0, 0);
    let config = Config::parse(
        "collectors:\n  kafkaInterval: 200ms\n  timeout: 1s\n  staleAfter: 3s\ntargets:\n  tick: 100ms\n",
    );
    let server = start_server(config.expect("config")).await;
    let mut client = connect(&server).await;
    let bootstrap = kafka.bootstrap();
    let mut meta = kafka_meta(&bootstrap, "billing", "orders");
    meta.push(("activationLagThreshold", "2"));
    let orders = so_ref("orders", &meta);
    poll_until(&mut client, &orders, Duration::from_secs(3), |p| matches!(p, Ok(p) if p.active)).await.expect("poll");
    let payments = so_ref("payments", &kafka_meta("127.0.0.1:1", "payments", "charges"));
    assert!(client.is_active(payments).await.is_err(), "an unreachable broker is UNAVAILABLE");
    // A few seconds of history for the chart.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let url = format!("http://{}/status", server.http_addr);
    let profile = tempfile::tempdir().expect("profile dir");
    let dom = tokio::task::spawn_blocking({
        let (binary, url, profile) = (binary.clone(), url.clone(), profile.path().to_path_buf());
        move || headless(&binary, &profile).args(["--dump-dom", &url]).output()
    })
    .await
    .expect("join")
    .expect("chromium runs");
    assert!(dom.status.success(), "chromium failed: {}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<title>spinscale status</title>"), "{dom}");
    assert!(dom.contains("2 targets; 1 active"), "{dom}");
    let row = |name: &str| {
        let start = dom.find(&format!("data-name=\"{name}\"")).unwrap_or_else(|| panic!("no row for {name}: {dom}"));
        let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
        dom[start..end].to_string()
    };
    let orders_row = row("orders");
    assert!(orders_row.contains("class=\"decision active\"") && orders_row.contains("(lag)"), "{orders_row}");
    assert!(orders_row.contains("<svg class=\"chart\"") && orders_row.contains("<polyline"), "{orders_row}");
    assert!(orders_row.contains("class=\"band\""), "the active band is drawn: {orders_row}");
    let payments_row = row("payments");
    assert!(payments_row.contains("class=\"failed\"") && payments_row.contains("127.0.0.1:1"), "{payments_row}");

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let taken = tokio::task::spawn_blocking({
        let (binary, shot, profile) = (binary, shot.clone(), profile.path().to_path_buf());
        move || {
            headless(&binary, &profile)
                .arg(format!("--screenshot={}", shot.display()))
                .args(["--window-size=1400,500", &url])
                .output()
        }
    })
    .await
    .expect("join")
    .expect("chromium runs");
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "a real picture: {} bytes", png.len());
    println!("screenshot: {}", shot.display());
    server.shutdown().await.expect("shutdown");
}
