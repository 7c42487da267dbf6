//! How spinscale authenticates to a Prometheus-compatible API: a named connection in the config,
//! with the secrets in files (a mounted Secret, or a token the platform keeps fresh). KEDA does not
//! forward a TriggerAuthentication to an external scaler (keda#2571), so trigger metadata only
//! names the connection (`prometheusConnection`).
//!
//! This holds the settings only: paths, a region, a server name. Reading the files (again when
//! they change), signing and building TLS clients is the server's (`signals::prometheus_auth`).
//! The secrets go nowhere but into requests: not into `Debug`, errors, logs, `/status` or
//! `/metrics`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// One entry of the config's `prometheusConnections`. Paths only: the secrets stay in their files.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusConnection {
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
        let problems = parse("sigv4: {region: EU, service: \"\", roleArn: admin}\n").problems("s");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(serde_yaml_ng::from_str::<PrometheusConnection>("bearerToken: abc\n").is_err(), "unknown fields");
    }

    #[test]
    fn a_valid_connection_has_no_problem_and_sigv4_defaults_to_aps() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "t").unwrap();
        let yaml = format!(
            "basicAuth: {{usernameFile: {f}, passwordFile: {f}}}\ntls: {{caFile: {f}, serverName: prometheus.svc}}\n\
             headers:\n  X-Scope-OrgID: {{valueFile: {f}}}\n",
            f = file.display()
        );
        let connection = parse(&yaml);
        assert_eq!(connection.problems("ok"), Vec::<String>::new());
        assert_eq!(connection.files().len(), 4);
        assert_eq!(parse("sigv4: {region: us-east-1}\n").sigv4.unwrap().service, "aps");
        assert!(parse("sigv4: {region: us-east-1}\n").problems("amp").is_empty());
    }
}
