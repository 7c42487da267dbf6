//! `spinscale demo --activator` end to end: a burst at zero is held, the app is woken by the
//! pushed `true`, and every request is answered exactly once (the demo exits non-zero otherwise).

use std::process::Command;

#[test]
fn the_http_demo_wakes_the_app_and_loses_no_request() {
    let output = Command::new(env!("CARGO_BIN_EXE_spinscale"))
        .args(["demo", "--activator", "--duration", "4s"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("the spinscale binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("activator"), "the demo printed its timeline:\n{stdout}");
}
