//! SigV4 for Amazon Managed Prometheus, checked by an independent implementation: botocore (the
//! AWS SDK for Python's core, from PyPI) verifies every signature spinscale sends, in a stand-in
//! for Amazon Managed Prometheus and STS (`tests/fixtures/prometheus_auth/aws.py`).
//!
//! spinscale runs as its own process here, the way a pod gets AWS credentials: from the
//! environment (`AWS_ACCESS_KEY_ID`...), or from a web-identity token file and a role (IRSA), then
//! optionally a role assumed on top (`roleArn`). Secrets never show up in answers, logs, `/status`
//! or `/metrics`.
//!
//! `scripts/install-botocore.sh` installs botocore into `target/botocore-venv`; without it this
//! test skips (and fails where `SPINSCALE_REQUIRE_COMPONENTS` or `CI` is set).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use spinscale::proto::external_scaler_client::ExternalScalerClient;
use support::{Client, components_required, keda_poll, so_ref};
use tonic::Code;

const REGION: &str = "eu-west-1";
const ENV_KEY: (&str, &str) = ("AKIAENVEXAMPLE01", "env-secret-6c1f0a9b8e7d");
const IRSA_KEY: (&str, &str, &str) = ("ASIAIRSAEXAMPLE2", "irsa-secret-2b7e4d1a9c", "irsa-session-token-5f3a");
const ROLE_KEY: (&str, &str, &str) = ("ASIAROLEEXAMPLE3", "role-secret-8d0c6e2f4a", "role-session-token-1e9b");
const WEB_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.web-identity-token-7a6b";
const IRSA_ROLE: &str = "arn:aws:iam::111122223333:role/spinscale-irsa";
const READER_ROLE: &str = "arn:aws:iam::444455556666:role/amp-reader";
const WRONG_SECRET: &str = "wrong-secret-0d9c8b7a6f";
const SECRETS: [&str; 7] = [ENV_KEY.1, IRSA_KEY.1, IRSA_KEY.2, ROLE_KEY.1, ROLE_KEY.2, WEB_TOKEN, WRONG_SECRET];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The python of scripts/install-botocore.sh's virtualenv, if botocore loads in it.
fn botocore_python() -> Option<PathBuf> {
    let python = match std::env::var_os("SPINSCALE_BOTOCORE_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => repo().join("target/botocore-venv/bin/python"),
    };
    let loads = Command::new(&python).args(["-c", "import botocore.auth"]).output().is_ok_and(|o| o.status.success());
    if loads {
        return Some(python);
    }
    assert!(!components_required(), "botocore is required: run scripts/install-botocore.sh");
    eprintln!("SKIPPED: no botocore at {} (run scripts/install-botocore.sh)", python.display());
    None
}

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The stand-in for Amazon Managed Prometheus and STS, and its base URL.
fn aws(python: &Path, dir: &Path) -> (Running, String) {
    let config = json!({
        "region": REGION,
        "keys": {
            ENV_KEY.0: {"secret": ENV_KEY.1, "token": null, "value": "1"},
            IRSA_KEY.0: {"secret": IRSA_KEY.1, "token": IRSA_KEY.2, "value": "2"},
            ROLE_KEY.0: {"secret": ROLE_KEY.1, "token": ROLE_KEY.2, "value": "3"},
        },
        "web_identity": {"token": WEB_TOKEN, "role_arn": IRSA_ROLE, "issue": IRSA_KEY.0},
        "assume_role": {"role_arn": READER_ROLE, "issue": ROLE_KEY.0},
    });
    std::fs::write(dir.join("aws.json"), config.to_string()).unwrap();
    let mut child = Command::new(python)
        .arg(repo().join("tests/fixtures/prometheus_auth/aws.py"))
        .arg(dir.join("aws.json"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the AWS stand-in");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("its port");
    let port = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("unexpected: {line:?}"));
    (Running(child), format!("http://127.0.0.1:{port}"))
}

async fn calls(base: &str) -> Value {
    let text = reqwest::get(format!("{base}/calls")).await.expect("calls").text().await.expect("body");
    serde_json::from_str(&text).expect("json")
}

/// `spinscale serve` with `config` and `env`, its output in `dir/NAME.log`.
async fn spinscale(dir: &Path, name: &str, config: &str, env: &[(&str, &str)]) -> (Running, Client, String) {
    let config_file = dir.join(format!("{name}.yaml"));
    std::fs::write(&config_file, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let (grpc, http) = (spinscale_testkit::free_port().unwrap(), spinscale_testkit::free_port().unwrap());
    let mut command = Command::new(env!("CARGO_BIN_EXE_spinscale"));
    command
        .args(["serve", "--grpc-listen", &format!("127.0.0.1:{grpc}"), "--http-listen", &format!("127.0.0.1:{http}")])
        .arg("--config")
        .arg(&config_file)
        .env("RUST_LOG", "debug,h2=info,hyper=info,tower=info")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE"] {
        command.env_remove(name);
    }
    for name in ["AWS_ROLE_ARN", "AWS_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_STS"] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let child = Running(command.spawn().expect("start spinscale"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = loop {
        match ExternalScalerClient::connect(format!("http://127.0.0.1:{grpc}")).await {
            Ok(client) => break client,
            Err(e) => assert!(Instant::now() < deadline, "spinscale did not start: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    (child, client, format!("http://127.0.0.1:{http}"))
}

const COLLECTORS: &str = "collectors:\n  prometheusInterval: 200ms\n  timeout: 2s\n  staleAfter: 5s\n\
                          targets:\n  tick: 100ms\n";

fn meta<'a>(address: &'a str, query: &'a str, connection: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("scalerAddress", "spinscale:9500"),
        ("serverAddress", address),
        ("query", query),
        ("metrics", "separate"),
        ("prometheusConnection", connection),
    ]
}

async fn until_rps(client: &mut Client, name: &str, metadata: &[(&str, &str)], rps: f64) {
    let r = so_ref(name, metadata);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = keda_poll(client, &r).await;
        if answer.as_ref().is_ok_and(|p| p.values.get("spinscale-rps") == Some(&rps)) {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: no rate {rps}; last answer {answer:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every secret stays out of the pages, the answers `messages` and the process's log.
async fn assert_no_secret(base: &str, log: &Path, mut messages: Vec<String>) {
    for page in ["/status", "/status.json", "/metrics"] {
        messages.push(reqwest::get(format!("{base}{page}")).await.expect("get").text().await.expect("body"));
    }
    let logged = std::fs::read_to_string(log).expect("log");
    assert!(logged.contains("target registered"), "the log was captured");
    messages.push(logged);
    for (text, secret) in messages.iter().flat_map(|m| SECRETS.map(|s| (m, s))) {
        assert!(!text.contains(secret), "{secret} leaked into: {}", &text[..text.len().min(400)]);
    }
}

#[tokio::test]
async fn sigv4_signatures_pass_an_independent_check_with_environment_and_web_identity_credentials() {
    let Some(python) = botocore_python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_aws, base) = aws(&python, dir.path());
    let workspace = format!("{base}/workspaces/ws-0a1b2c3d");

    // 1. Keys from the environment; a single query (GET) and a query group long enough to POST.
    let config = format!(
        "{COLLECTORS}prometheusConnections:\n  amp:\n    sigv4: {{region: {REGION}}}\n    addresses: [\"{workspace}\"]\n"
    );
    let env = [("AWS_ACCESS_KEY_ID", ENV_KEY.0), ("AWS_SECRET_ACCESS_KEY", ENV_KEY.1)];
    let (process, mut client, http) = spinscale(dir.path(), "environment", &config, &env).await;
    until_rps(&mut client, "single", &meta(&workspace, "vector(1)", "amp"), 1.0).await;
    let apps: Vec<String> = (0..40).map(|i| format!("checkout-service-in-the-long-named-namespace-{i:03}")).collect();
    let queries: Vec<String> =
        apps.iter().map(|app| format!(r#"sum(rate(http_requests_total{{app="{app}"}}[1m]))"#)).collect();
    for (app, query) in apps.iter().zip(&queries) {
        until_rps(&mut client, app, &meta(&workspace, query, "amp"), 1.0).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls(&base).await["post_ok"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no grouped POST was signed and accepted: {}", calls(&base).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counted = calls(&base).await;
    println!("environment credentials: {counted}");
    assert!(counted["get_ok"].as_u64() > Some(0), "{counted}");
    assert!(counted.get("query_refused").is_none(), "every signature verified: {counted}");
    assert_no_secret(&http, &dir.path().join("environment.log"), Vec::new()).await;
    drop(process);

    // 2. Web identity (IRSA), then a role assumed with it; a wrong signing name is refused.
    std::fs::write(dir.path().join("token"), format!("{WEB_TOKEN}\n")).unwrap();
    let token_file = dir.path().join("token").display().to_string();
    let config = format!(
        "{COLLECTORS}prometheusConnections:\n  irsa:\n    sigv4: {{region: {REGION}}}\n    addresses: [\"{base}\"]\n  \
         reader:\n    sigv4: {{region: {REGION}, roleArn: \"{READER_ROLE}\"}}\n    addresses: [\"{base}\"]\n  \
         misnamed:\n    sigv4: {{region: {REGION}, service: execute-api}}\n    addresses: [\"{base}\"]\n"
    );
    let env = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.as_str()),
        ("AWS_ROLE_ARN", IRSA_ROLE),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL_STS", base.as_str()),
    ];
    let (process, mut client, http) = spinscale(dir.path(), "web-identity", &config, &env).await;
    until_rps(&mut client, "irsa", &meta(&workspace, "vector(1)", "irsa"), 2.0).await;
    until_rps(&mut client, "reader", &meta(&workspace, "vector(1)", "reader"), 3.0).await;
    let misnamed = so_ref("misnamed", &meta(&workspace, "vector(1)", "misnamed"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match client.is_active(misnamed.clone()).await {
            Err(status) if status.code() == Code::Unavailable && status.message().contains("HTTP 403") => break status,
            other => assert!(Instant::now() < deadline, "misnamed: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("a signature for another service: {}", refused.message());
    let counted = calls(&base).await;
    println!("web identity: {counted}");
    // Kept until they near expiry: one exchange per connection, not one per query.
    assert_eq!(counted["web_identity"].as_u64(), Some(3), "{counted}");
    assert_eq!(counted["assume_role"].as_u64(), Some(1), "{counted}");
    assert!(counted.get("web_identity_refused").is_none() && counted.get("assume_role_refused").is_none());
    assert_no_secret(&http, &dir.path().join("web-identity.log"), vec![refused.message().to_string()]).await;
    drop(process);

    // 3. The right key with the wrong secret: botocore's signature differs, the query is refused.
    let config = format!(
        "{COLLECTORS}prometheusConnections:\n  amp:\n    sigv4: {{region: {REGION}}}\n    addresses: [\"{workspace}\"]\n"
    );
    let env = [("AWS_ACCESS_KEY_ID", ENV_KEY.0), ("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)];
    let refused_before = calls(&base).await["query_refused"].as_u64().unwrap_or(0);
    let (_process, mut client, http) = spinscale(dir.path(), "wrong-secret", &config, &env).await;
    let wrong = so_ref("wrong", &meta(&workspace, "vector(1)", "amp"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match client.is_active(wrong.clone()).await {
            Err(status) if status.code() == Code::Unavailable && status.message().contains("HTTP 403") => break status,
            other => assert!(Instant::now() < deadline, "wrong secret: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let counted = calls(&base).await;
    assert!(counted["query_refused"].as_u64() > Some(refused_before), "botocore refused it: {counted}");
    assert_no_secret(&http, &dir.path().join("wrong-secret.log"), vec![refused.message().to_string()]).await;
}
