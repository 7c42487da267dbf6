//! How spinscale authenticates to a Prometheus-compatible API: a named connection in the config,
//! with the secrets in files (a mounted Secret, or a token the platform keeps fresh). KEDA does not
//! forward a TriggerAuthentication to an external scaler (keda#2571), so trigger metadata only
//! names the connection (`prometheusConnection`).
//!
//! This holds the settings only: paths, a region, a server name. Reading the files (again when
//! they change), signing and building TLS clients is the server's (`signals::prometheus_auth`).
//! The secrets go nowhere but into requests: not into `Debug`, errors, logs, `/status` or
//! `/metrics`. Every trigger is tenant input, so a connection also says where it may be used:
//! `addresses` (required) and `namespaces`. The config matches a trigger's address against them
//! (`Config::resolve_connection`, with the URL parser requests use); this checks their form.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// One entry of the config's `prometheusConnections`. Paths only: the secrets stay in their files.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusConnection {
    /// `addresses`: the Prometheus URLs this connection is for (required). A trigger's
    /// `serverAddress` must be one of them or lie under one: same scheme, host and port, the path
    /// extended at a `/`. `http://` is refused when the connection sends a secret.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `namespaces`: the namespaces whose ScaledObjects may use this connection. Empty: any.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// `bearerTokenFile`: sent as `Authorization: Bearer <content>`. Also the way to Azure Monitor
    /// and Google Managed Prometheus: a file their workload-identity sidecar keeps fresh.
    pub bearer_token_file: Option<PathBuf>,
    /// `basicAuth`: sent as `Authorization: Basic …`.
    pub basic_auth: Option<BasicAuth>,
    /// `tls`: the CA that signed the server's certificate, a client certificate (mTLS), the name
    /// the certificate is checked against.
    pub tls: Option<TlsFiles>,
    /// `headers`: request headers whose values are files (`X-Scope-OrgID` and friends).
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderFile>,
    /// `sigv4`: AWS Signature Version 4 (Amazon Managed Prometheus), credentials from the
    /// environment or the web-identity token file (IRSA).
    pub sigv4: Option<SigV4>,
}

/// `basicAuth`: both halves in files.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// `usernameFile`: the file holding the username.
    pub username_file: PathBuf,
    /// `passwordFile`: the file holding the password.
    pub password_file: PathBuf,
}

/// `tls`: every part optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFiles {
    /// `caFile`: PEM CA bundle that signed the server's certificate (default: the bundled
    /// Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// `certFile`: PEM client certificate, for servers that require mTLS.
    pub cert_file: Option<PathBuf>,
    /// `keyFile`: PEM private key of `certFile`; the two go together.
    pub key_file: Option<PathBuf>,
    /// `serverName`: the name the server's certificate must carry, when the address uses another
    /// (an IP, a Service alias). Default: the address's host.
    pub server_name: Option<String>,
}

/// One entry of `headers`: the value is a file's content.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderFile {
    /// `valueFile`: the file holding the header's value.
    pub value_file: PathBuf,
}

/// `sigv4`: what the signature is scoped to, and an optional role to assume.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigV4 {
    /// `region`: the workspace's AWS region, e.g. `eu-west-1`.
    pub region: String,
    /// `service`: the signing name. Default `aps` (Amazon Managed Prometheus).
    #[serde(default = "SigV4::default_service")]
    pub service: String,
    /// `roleArn`: a role to assume (`sts:AssumeRole`) with the credentials found, e.g. a
    /// workspace's role in another account.
    pub role_arn: Option<String>,
}

impl SigV4 {
    /// Amazon Managed Prometheus's signing name.
    pub const DEFAULT_SERVICE: &str = "aps";

    fn default_service() -> String {
        Self::DEFAULT_SERVICE.to_string()
    }
}

/// Headers a connection may not set through `headers`: the ones it sets itself, or that the
/// transport owns.
const RESERVED_HEADERS: [&str; 6] =
    ["authorization", "host", "content-length", "content-type", "x-amz-date", "x-amz-security-token"];

impl PrometheusConnection {
    /// What requests need of this connection: it without `addresses` and `namespaces`, which only
    /// decide who may use it. A trigger's source carries this, so widening where a connection may
    /// be used restarts no collector and drops no cached credential.
    pub fn for_requests(&self) -> Self {
        Self { addresses: Vec::new(), namespaces: Vec::new(), ..self.clone() }
    }

    /// Whether requests carry a secret an eavesdropper could use: a bearer token, a basic-auth pair
    /// or header values. (SigV4 sends a signature of one request, never its secret key; a client
    /// certificate's key never leaves spinscale.)
    pub fn sends_secrets(&self) -> bool {
        self.bearer_token_file.is_some() || self.basic_auth.is_some() || !self.headers.is_empty()
    }

    /// Whether a ScaledObject of `namespace` may use this connection.
    pub fn serves_namespace(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }

    /// Every file this connection reads, with its field (`basicAuth.passwordFile`).
    pub fn files(&self) -> Vec<(String, &PathBuf)> {
        let mut files = Vec::new();
        if let Some(path) = &self.bearer_token_file {
            files.push(("bearerTokenFile".to_string(), path));
        }
        if let Some(basic) = &self.basic_auth {
            files.push(("basicAuth.usernameFile".to_string(), &basic.username_file));
            files.push(("basicAuth.passwordFile".to_string(), &basic.password_file));
        }
        if let Some(tls) = &self.tls {
            for (field, path) in [("caFile", &tls.ca_file), ("certFile", &tls.cert_file), ("keyFile", &tls.key_file)] {
                if let Some(path) = path {
                    files.push((format!("tls.{field}"), path));
                }
            }
        }
        for (name, header) in &self.headers {
            files.push((format!("headers.{name}.valueFile"), &header.value_file));
        }
        files
    }

    /// Every problem with this entry, each naming its field (`prometheusConnections.NAME.field`).
    pub fn problems(&self, name: &str) -> Vec<String> {
        let field = |f: &str| format!("prometheusConnections.{name}.{f}");
        let mut problems = Vec::new();
        if self.addresses.is_empty() {
            problems.push(format!(
                "{}: is required: the Prometheus URLs this connection is for (a trigger's serverAddress must be \
                 one of them or under one; every trigger is tenant input)",
                field("addresses")
            ));
        }
        for (i, address) in self.addresses.iter().enumerate() {
            if let Err(e) = check_address(address, self.sends_secrets()) {
                problems.push(format!("{}: {address:?} {e}", field(&format!("addresses[{i}]"))));
            }
        }
        problems.extend(namespace_problems(&self.namespaces, &field("namespaces")));
        let authorizations: Vec<&str> = [
            (self.bearer_token_file.is_some(), "bearerTokenFile"),
            (self.basic_auth.is_some(), "basicAuth"),
            (self.sigv4.is_some(), "sigv4"),
        ]
        .into_iter()
        .filter_map(|(set, f)| set.then_some(f))
        .collect();
        if authorizations.len() > 1 {
            problems.push(format!(
                "{}: {} each set the Authorization header; choose one",
                field(authorizations[0]),
                authorizations.join(" and ")
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                problems.push(format!("{}: certFile and keyFile go together", field("tls.certFile")));
            }
            if let Some(server_name) = &tls.server_name
                && !is_server_name(server_name)
            {
                problems
                    .push(format!("{}: {server_name:?} is not a DNS name or an IP address", field("tls.serverName")));
            }
        }
        for header in self.headers.keys() {
            if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.push(format!("{}: not a valid HTTP header name", field(&format!("headers.{header}"))));
            } else if RESERVED_HEADERS.contains(&header.to_ascii_lowercase().as_str()) {
                problems.push(format!(
                    "{}: spinscale sets this header itself (use bearerTokenFile, basicAuth or sigv4 for \
                     Authorization)",
                    field(&format!("headers.{header}"))
                ));
            }
        }
        if let Some(sigv4) = &self.sigv4 {
            if !is_region(&sigv4.region) {
                problems.push(format!(
                    "{}: {:?} is not an AWS region (e.g. eu-west-1)",
                    field("sigv4.region"),
                    sigv4.region
                ));
            }
            if sigv4.service.is_empty() || !sigv4.service.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                problems.push(format!(
                    "{}: {:?} is not a signing name (e.g. aps)",
                    field("sigv4.service"),
                    sigv4.service
                ));
            }
            if let Some(role) = &sigv4.role_arn
                && !(role.starts_with("arn:") && role.contains(":role/"))
            {
                problems.push(format!(
                    "{}: {role:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                    field("sigv4.roleArn")
                ));
            }
        }
        for (f, path) in self.files() {
            if let Err(e) = std::fs::metadata(path) {
                problems.push(format!("{}: {}: {e}", field(&f), path.display()));
            }
        }
        problems
    }
}

/// An entry of `addresses`: an `http://` or `https://` URL with a host, without user info, query
/// or fragment; `https://` when `secrets` travel with it.
fn check_address(address: &str, secrets: bool) -> Result<(), String> {
    let (scheme, rest) = address.split_once("://").ok_or("is not an http:// or https:// URL")?;
    if scheme != "http" && scheme != "https" {
        return Err("is not an http:// or https:// URL".into());
    }
    if rest.split(['/', '?', '#']).next().unwrap_or_default().contains('@') {
        return Err("has user info: put credentials in the connection's files".into());
    }
    if rest.contains(['?', '#']) {
        return Err("has a query or fragment: give the base URL the API paths go under".into());
    }
    let uri: http::Uri = address.parse().map_err(|e| format!("is not a URL: {e}"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if scheme == "http" && secrets {
        return Err("is plain http: the connection sends a secret (bearerTokenFile, basicAuth or headers), which \
                    anyone on the path could read; use the server's https:// address (TLS)"
            .into());
    }
    Ok(())
}

/// Problems of a `namespaces` list (`field`): each a Kubernetes namespace name.
pub(super) fn namespace_problems(namespaces: &[String], field: &str) -> Vec<String> {
    let is_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 63
            && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-')
            && !n.ends_with('-')
    };
    namespaces
        .iter()
        .enumerate()
        .filter(|(_, n)| !is_name(n))
        .map(|(i, n)| format!("{field}[{i}]: {n:?} is not a namespace name"))
        .collect()
}

/// A DNS name (letters, digits, `-`, dot-separated labels) or an IP address.
fn is_server_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.parse::<std::net::IpAddr>().is_ok() || (name.len() <= 253 && name.split('.').all(label))
}

/// `eu-west-1`, `us-gov-west-1`, `cn-north-1`: lowercase letters, digits and dashes.
fn is_region(region: &str) -> bool {
    !region.is_empty()
        && region.contains('-')
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> PrometheusConnection {
        serde_yaml_ng::from_str(yaml).expect("valid entry")
    }

    #[test]
    fn each_mistake_names_its_field() {
        let problems = parse("bearerTokenFile: /nonexistent/token\nsigv4: {region: eu-west-1}\n").problems("amp");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("prometheusConnections.amp.bearerTokenFile: bearerTokenFile and sigv4")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("amp.bearerTokenFile: /nonexistent/token")), "{problems:?}");
        let problems = parse("tls: {certFile: /nonexistent/c.pem, serverName: \"prom etheus\"}\n").problems("x");
        assert!(
            problems.iter().any(|p| p.contains("x.tls.certFile: certFile and keyFile go together")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("x.tls.serverName: \"prom etheus\"")), "{problems:?}");
        let problems =
            parse("headers:\n  Authorization: {valueFile: /etc/hostname}\n  \"a b\": {valueFile: /etc/hostname}\n")
                .problems("h");
        assert!(problems.iter().any(|p| p.contains("h.headers.Authorization: spinscale sets")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("h.headers.a b: not a valid HTTP header name")), "{problems:?}");
        let problems =
            parse("addresses: [https://p]\nsigv4: {region: EU, service: \"\", roleArn: admin}\n").problems("s");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(serde_yaml_ng::from_str::<PrometheusConnection>("bearerToken: abc\n").is_err(), "unknown fields");
    }

    #[test]
    fn a_valid_connection_has_no_problem_and_sigv4_defaults_to_aps() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t").unwrap();
        let yaml = format!(
            "addresses: [https://mimir.example/prometheus]\nnamespaces: [shop]\n\
             basicAuth: {{usernameFile: {f}, passwordFile: {f}}}\ntls: {{caFile: {f}, serverName: prometheus.svc}}\n\
             headers:\n  X-Scope-OrgID: {{valueFile: {f}}}\n",
            f = file.display()
        );
        let connection = parse(&yaml);
        assert_eq!(connection.problems("ok"), Vec::<String>::new());
        assert_eq!(connection.files().len(), 4);
        let amp = "addresses: [\"https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1\"]\n\
                   sigv4: {region: us-east-1}\n";
        assert_eq!(parse(amp).sigv4.unwrap().service, "aps");
        assert!(parse(amp).problems("amp").is_empty());
    }

    #[test]
    fn addresses_are_required_and_plain_http_is_refused_where_a_secret_travels() {
        let problems = parse("tls: {serverName: p.svc}\n").problems("bare");
        assert!(problems.iter().any(|p| p.starts_with("prometheusConnections.bare.addresses: is required")));
        let problems = parse(
            "bearerTokenFile: /etc/hostname\naddresses: [\"http://prometheus:9090\", \"ftp://p\", \
             \"https://u:p@p\", \"https://p/x?tenant=a\", \"https:///x\"]\nnamespaces: [Shop]\n",
        )
        .problems("thanos");
        let wanted = [
            "thanos.addresses[0]: \"http://prometheus:9090\" is plain http: the connection sends a secret",
            "thanos.addresses[1]: \"ftp://p\" is not an http:// or https:// URL",
            "thanos.addresses[2]: \"https://u:p@p\" has user info",
            "thanos.addresses[3]: \"https://p/x?tenant=a\" has a query or fragment",
            "thanos.addresses[4]: \"https:///x\"",
            "thanos.namespaces[0]: \"Shop\" is not a namespace name",
        ];
        for wanted in wanted {
            assert!(problems.iter().any(|p| p.contains(wanted)), "{wanted}: {problems:?}");
        }
        assert_eq!(problems.len(), wanted.len(), "{problems:?}");
        // Without a secret (a CA only, or SigV4's signatures), an in-cluster http:// address is fine.
        assert!(
            parse("addresses: [\"http://prometheus.monitoring:9090\"]\nsigv4: {region: eu-west-1}\n")
                .problems("amp")
                .is_empty()
        );
    }

    #[test]
    fn requests_carry_a_connection_without_where_it_may_be_used() {
        let connection = parse("addresses: [https://p]\nnamespaces: [shop]\nsigv4: {region: eu-west-1}\n");
        let settings = connection.for_requests();
        assert!(settings.addresses.is_empty() && settings.namespaces.is_empty());
        assert_eq!(settings.sigv4, connection.sigv4);
        assert!(connection.serves_namespace("shop") && !connection.serves_namespace("other"));
        assert!(settings.serves_namespace("other"), "no namespaces: any");
    }
}
