//! Applies a named Prometheus connection (`prometheusConnections` in the config) to requests:
//! header values, the bearer token and basic-auth pair read from their files (again whenever a
//! file changes, so rotated tokens apply on the next query), a TLS client of the connection's own
//! ([`tls`], rebuilt when its files change) and SigV4 signatures ([`sigv4`]).
//!
//! A [`Connection`] is kept per connection name and settings for the whole process, so collectors,
//! query groups and backfills that use the same connection share its client and cached
//! credentials whichever of them asks; a changed connection (a config reload) is another key, and
//! one nobody used for [`FORGET_AFTER`] is dropped.
//!
//! Secrets go nowhere but into requests, marked sensitive: errors name the field and the file,
//! never the content. Requests through a connection (and its STS calls) never follow a redirect:
//! reqwest would carry `headers` values and `x-amz-security-token` to another host (it strips only
//! `Authorization` and `Cookie`), so a redirect is an answer like any other non-2xx one.

pub mod sigv4;
mod tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderName, HeaderValue};
use spinscale_core::duration;
use spinscale_core::spec::prometheus_connection::PrometheusConnection;
use tracing::info;

/// A connection nobody asked for this long is forgotten (its client and credentials dropped).
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A connection ready for requests.
pub struct Connection {
    name: String,
    settings: PrometheusConnection,
    /// The connection's own client when it has `tls`, with the stamps of the files it was built from.
    client: Mutex<Option<(Vec<Stamp>, reqwest::Client)>>,
    /// Secret file contents by path, with the stamp they were read at.
    secrets: Mutex<HashMap<PathBuf, (Stamp, Arc<str>)>>,
    signer: Option<Arc<sigv4::Signer>>,
}

/// What tells a changed file from the one read before: its modification time and length.
/// A Kubernetes Secret or token volume swaps in a new file, with a new modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(Option<SystemTime>, u64);

impl Stamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Stamp(meta.modified().ok(), meta.len()))
    }
}

/// The client of connections without `tls`, and of STS: the shared client's settings (pooled, the
/// system's CA roots or the bundled ones), but redirects are not followed.
fn no_redirect_client() -> Result<reqwest::Client, String> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let built = crate::outbound::client(|| {
        reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
    })
    .map_err(|e| format!("HTTP client: {}", super::error_chain(&e)))?;
    Ok(CLIENT.get_or_init(|| built).clone())
}

/// The process's connections by name and settings, with when each was last asked for.
type Connections = Mutex<HashMap<(String, PrometheusConnection), (Arc<Connection>, Instant)>>;

fn connections() -> &'static Connections {
    static CONNECTIONS: OnceLock<Connections> = OnceLock::new();
    CONNECTIONS.get_or_init(Mutex::default)
}

/// The connection `name` with `settings`: the one already in use, or a new one.
pub fn connection(name: &str, settings: &PrometheusConnection) -> Arc<Connection> {
    let mut all = connections().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    all.retain(|_, (c, used)| Arc::strong_count(c) > 1 || now.duration_since(*used) < FORGET_AFTER);
    let key = (name.to_string(), settings.clone());
    let (connection, used) = all.entry(key).or_insert_with(|| {
        let signer = settings.sigv4.as_ref().map(|s| Arc::new(sigv4::Signer::new(name, s, sigv4::process_env())));
        let connection = Connection {
            name: name.to_string(),
            settings: settings.clone(),
            client: Mutex::default(),
            secrets: Mutex::default(),
            signer,
        };
        (Arc::new(connection), now)
    });
    *used = now;
    connection.clone()
}

impl Connection {
    /// `prometheusConnections.NAME.field`, for errors.
    fn field(&self, field: &str) -> String {
        format!("prometheusConnections.{}.{field}", self.name)
    }

    /// The client requests go through, which follows no redirect: the connection's own when it has
    /// `tls` (rebuilt when one of its files changed), else one that all such connections share.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let Some(files) = &self.settings.tls else { return no_redirect_client() };
        let paths = [&files.ca_file, &files.cert_file, &files.key_file];
        let mut stamps = Vec::with_capacity(paths.len());
        for (field, path) in ["tls.caFile", "tls.certFile", "tls.keyFile"].into_iter().zip(paths) {
            if let Some(path) = path {
                stamps.push(Stamp::of(path).map_err(|e| format!("{} {}: {e}", self.field(field), path.display()))?);
            }
        }
        let mut client = self.client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((built_from, client)) = client.as_ref()
            && *built_from == stamps
        {
            return Ok(client.clone());
        }
        if client.is_some() {
            info!(connection = %self.name, "TLS files changed; the connection's client is rebuilt");
        }
        let built = tls::client(files).map_err(|e| format!("{}: {e}", self.field("tls")))?;
        *client = Some((stamps, built.clone()));
        Ok(built)
    }

    /// Adds the connection's headers and authorization to `request`, and signs it under `sigv4`
    /// (fetching credentials from STS when needed). `client` is the one `request` was built on
    /// ([`Self::client`]).
    ///
    /// The request's timeout bounds the whole: waiting for credentials included, and the request
    /// keeps what is left of it. A query that gives up on STS leaves the exchange running, to
    /// finish (or fail, remembered for a while) for the queries after it.
    pub async fn authorize(
        &self,
        client: &reqwest::Client,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, String> {
        if let Some(path) = &self.settings.bearer_token_file {
            request = request.bearer_auth(self.secret("bearerTokenFile", path)?);
        }
        if let Some(basic) = &self.settings.basic_auth {
            let username = self.secret("basicAuth.usernameFile", &basic.username_file)?;
            let password = self.secret("basicAuth.passwordFile", &basic.password_file)?;
            request = request.basic_auth(username, Some(password));
        }
        let mut request = request.build().map_err(|e| format!("request: {}", super::error_chain(&e.without_url())))?;
        for (name, header) in &self.settings.headers {
            let field = format!("headers.{name}.valueFile");
            let value = self.secret(&field, &header.value_file)?;
            let mut value = HeaderValue::from_str(&value).map_err(|_| {
                format!("{} {}: not a valid header value", self.field(&field), header.value_file.display())
            })?;
            value.set_sensitive(true);
            let name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{}: {e}", self.field("headers")))?;
            // The operator's value wins over a trigger's `customHeaders` of the same name.
            request.headers_mut().insert(name, value);
        }
        if let Some(signer) = &self.signer {
            let started = tokio::time::Instant::now();
            let limit = request.timeout().copied();
            let sts = no_redirect_client()?;
            let timed_out = |limit: Duration| {
                format!(
                    "{}: no AWS credentials within the query's timeout ({}): STS is slow or unreachable",
                    self.field("sigv4"),
                    duration::format(limit)
                )
            };
            match limit {
                None => signer.sign(&mut request, &sts).await?,
                Some(limit) => {
                    tokio::time::timeout(limit, signer.sign(&mut request, &sts))
                        .await
                        .map_err(|_| timed_out(limit))??;
                    let left = limit.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Err(timed_out(limit));
                    }
                    *request.timeout_mut() = Some(left);
                }
            }
        }
        Ok(reqwest::RequestBuilder::from_parts(client.clone(), request))
    }

    /// A secret file's content without its trailing newline: the cached one while the file is
    /// unchanged, else read now. Errors name the field and the file, never the content.
    fn secret(&self, field: &str, path: &Path) -> Result<Arc<str>, String> {
        let failed = |e: std::io::Error| format!("{} {}: {e}", self.field(field), path.display());
        let stamp = Stamp::of(path).map_err(failed)?;
        let mut secrets = self.secrets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((read_at, value)) = secrets.get(path)
            && *read_at == stamp
        {
            return Ok(value.clone());
        }
        let text = std::fs::read_to_string(path).map_err(failed)?;
        let value = text.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return Err(format!("{} {}: the file is empty", self.field(field), path.display()));
        }
        let value: Arc<str> = value.into();
        secrets.insert(path.to_path_buf(), (stamp, value.clone()));
        Ok(value)
    }
}

/// `application/x-www-form-urlencoded` with every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`)
/// percent-encoded: also SigV4's canonical encoding, so a signed query string is sent as signed.
pub fn form_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3 / 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use spinscale_core::spec::prometheus_connection::{BasicAuth, HeaderFile, SigV4};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A local HTTP/1.1 server answering every request with `answer` after `delay`: its port, and
    /// how many connections it accepted.
    async fn server(delay: Duration, answer: String) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    let _ = stream.read(&mut buffer).await;
                    tokio::time::sleep(delay).await;
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        (port, accepted)
    }

    fn response(status: &str, headers: &str, body: &str) -> String {
        format!("HTTP/1.1 {status}\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
    }

    #[test]
    fn a_rotated_file_is_read_again_and_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "first-token\n").unwrap();
        let settings = PrometheusConnection { bearer_token_file: Some(token.clone()), ..Default::default() };
        let connection = connection("rotating", &settings);
        assert_eq!(&*connection.secret("bearerTokenFile", &token).unwrap(), "first-token");
        // A new file swapped in, as the kubelet does (a longer one: the stamp differs even when
        // the clock's granularity is coarse).
        let next = dir.path().join("token.next");
        std::fs::write(&next, "second-token-longer\n").unwrap();
        std::fs::rename(&next, &token).unwrap();
        assert_eq!(&*connection.secret("bearerTokenFile", &token).unwrap(), "second-token-longer");
        std::fs::write(&token, "").unwrap();
        let err = connection.secret("bearerTokenFile", &token).unwrap_err();
        assert!(
            err.starts_with("prometheusConnections.rotating.bearerTokenFile ") && err.ends_with("the file is empty")
        );
        std::fs::remove_file(&token).unwrap();
        let err = connection.secret("bearerTokenFile", &token).unwrap_err();
        assert!(err.contains("No such file"), "{err}");
        assert!(Arc::ptr_eq(&connection, &self::connection("rotating", &settings)), "one per name and settings");
    }

    #[tokio::test]
    async fn headers_and_basic_auth_are_added_marked_sensitive() {
        let dir = tempfile::tempdir().unwrap();
        for (file, text) in [("user", "svc\n"), ("pass", "pa55-w0rd\n"), ("org", "team-a\n")] {
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        let settings = PrometheusConnection {
            basic_auth: Some(BasicAuth {
                username_file: dir.path().join("user"),
                password_file: dir.path().join("pass"),
            }),
            headers: [("X-Scope-OrgID".to_string(), HeaderFile { value_file: dir.path().join("org") })].into(),
            ..Default::default()
        };
        let connection = connection("basic", &settings);
        let client = connection.client().unwrap();
        let request = client.get("http://127.0.0.1:1/api/v1/query").header("x-scope-orgid", "from-trigger");
        let request = connection.authorize(&client, request).await.unwrap().build().unwrap();
        let headers = request.headers();
        assert_eq!(headers["x-scope-orgid"], "team-a", "the connection's value wins");
        assert_eq!(headers.get_all("x-scope-orgid").iter().count(), 1);
        // base64("svc:pa55-w0rd")
        assert_eq!(headers["authorization"], "Basic c3ZjOnBhNTUtdzByZA==");
        assert!(headers["authorization"].is_sensitive() && headers["x-scope-orgid"].is_sensitive());
        assert!(!format!("{request:?}").contains("team-a"), "Debug hides sensitive values");
    }

    #[tokio::test]
    async fn a_redirect_is_an_answer_and_the_secrets_do_not_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "redirect-token").unwrap();
        std::fs::write(dir.path().join("org"), "redirect-org").unwrap();
        let (elsewhere, reached) = server(Duration::ZERO, response("200 OK", "", "{}")).await;
        let location = format!("location: http://localhost:{elsewhere}/api/v1/query\r\n");
        let (port, _) = server(Duration::ZERO, response("307 Temporary Redirect", &location, "")).await;
        let settings = PrometheusConnection {
            bearer_token_file: Some(dir.path().join("token")),
            headers: [("X-Scope-OrgID".to_string(), HeaderFile { value_file: dir.path().join("org") })].into(),
            ..Default::default()
        };
        let connection = connection("redirected", &settings);
        let client = connection.client().unwrap();
        let request = client.get(format!("http://127.0.0.1:{port}/api/v1/query")).timeout(Duration::from_secs(5));
        let answer = connection.authorize(&client, request).await.unwrap().send().await.unwrap();
        assert_eq!(answer.status(), 307, "the redirect comes back as the answer");
        assert_eq!(reached.load(Ordering::SeqCst), 0, "nothing went to the other host");
    }

    #[tokio::test]
    async fn a_query_waits_for_sts_only_within_its_timeout_and_the_exchange_finishes_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "web-token").unwrap();
        let credentials = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
                           <AccessKeyId>ASIASLOW</AccessKeyId><SecretAccessKey>slow-secret</SecretAccessKey>\
                           <SessionToken>slow-session</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>\
                           </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        let (sts, asked) =
            server(Duration::from_millis(800), response("200 OK", "content-type: text/xml\r\n", credentials)).await;
        let pairs = [
            ("AWS_WEB_IDENTITY_TOKEN_FILE".to_string(), token.display().to_string()),
            ("AWS_ROLE_ARN".to_string(), "arn:aws:iam::111122223333:role/r".to_string()),
            ("AWS_ENDPOINT_URL_STS".to_string(), format!("http://127.0.0.1:{sts}")),
        ];
        let env: sigv4::Env = Arc::new(move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()));
        let sigv4 = SigV4 { region: "eu-west-1".into(), service: "aps".into(), role_arn: None };
        let connection = Connection {
            name: "slow".into(),
            settings: PrometheusConnection { sigv4: Some(sigv4.clone()), ..Default::default() },
            client: Mutex::default(),
            secrets: Mutex::default(),
            signer: Some(Arc::new(sigv4::Signer::new("slow", &sigv4, env))),
        };
        let client = connection.client().unwrap();
        let query = || client.get("http://127.0.0.1:1/api/v1/query").timeout(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = connection.authorize(&client, query()).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(700), "{:?}", started.elapsed());
        assert_eq!(
            err,
            "prometheusConnections.slow.sigv4: no AWS credentials within the query's timeout (300ms): STS is slow \
             or unreachable"
        );
        // The exchange was not cancelled with the query: it finishes, and the next query signs.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let request = connection.authorize(&client, query()).await.unwrap().build().unwrap();
        assert!(request.headers()["authorization"].to_str().unwrap().contains("Credential=ASIASLOW/"));
        let left = request.timeout().copied().unwrap();
        assert!(left <= Duration::from_millis(300) && left > Duration::from_millis(200), "{left:?}");
        assert_eq!(asked.load(Ordering::SeqCst), 1, "one STS call");
    }
}
