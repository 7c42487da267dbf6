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
//! never the content.

pub mod sigv4;
mod tls;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderName, HeaderValue};
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
    signer: Option<sigv4::Signer>,
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
        let signer = settings.sigv4.as_ref().map(|s| sigv4::Signer::new(name, s, sigv4::process_env()));
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

    /// The client requests go through: the connection's own when it has `tls` (rebuilt when one
    /// of its files changed), else `shared`.
    pub fn client(&self, shared: &reqwest::Client) -> Result<reqwest::Client, String> {
        let Some(files) = &self.settings.tls else { return Ok(shared.clone()) };
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
    /// (fetching credentials through `http` when needed). `client` is the one `request` was built
    /// on ([`Self::client`]).
    pub async fn authorize(
        &self,
        client: &reqwest::Client,
        mut request: reqwest::RequestBuilder,
        http: &reqwest::Client,
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
            signer.sign(&mut request, http).await?;
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
    use spinscale_core::spec::prometheus_connection::{BasicAuth, HeaderFile};

    use super::*;

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
        let http = reqwest::Client::new();
        let client = connection.client(&http).unwrap();
        let request = client.get("http://127.0.0.1:1/api/v1/query").header("x-scope-orgid", "from-trigger");
        let request = connection.authorize(&client, request, &http).await.unwrap().build().unwrap();
        let headers = request.headers();
        assert_eq!(headers["x-scope-orgid"], "team-a", "the connection's value wins");
        assert_eq!(headers.get_all("x-scope-orgid").iter().count(), 1);
        // base64("svc:pa55-w0rd")
        assert_eq!(headers["authorization"], "Basic c3ZjOnBhNTUtdzByZA==");
        assert!(headers["authorization"].is_sensitive() && headers["x-scope-orgid"].is_sensitive());
        assert!(!format!("{request:?}").contains("team-a"), "Debug hides sensitive values");
    }
}
