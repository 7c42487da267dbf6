//! The operator's policy on the addresses a trigger names: every trigger is tenant input, and an
//! address in it makes spinscale connect somewhere (a source it polls, a backend it proxies to).
//!
//! - Link-local and cloud metadata addresses (`169.254.0.0/16`, `fe80::/10`, `fd00:ec2::254`,
//!   `metadata.google.internal`, ...) are refused as sources and backends unless the operator
//!   lists that exact address: they hand out the node's cloud credentials.
//! - `limits.allowedSources`, when set, narrows the sources (`serverAddress`, `scrapeUrl`,
//!   `bootstrapServers`) to its patterns.
//! - A `backend` must be a Service of the ScaledObject's own namespace
//!   (`http://NAME.NAMESPACE.svc[.cluster.local][:PORT]`) unless `activator.allowedBackends`
//!   lists a pattern it matches.
//!
//! - A `hosts` claim must be the namespace's own: listed for it in `activator.allowedHosts`, or
//!   (with `--watch-ingresses`) served by an Ingress or HTTPRoute of that namespace.
//!
//! Patterns are matched against the whole URL, `host:port` and the host; `*` matches any run of
//! characters (`http://*.monitoring.svc:*`, `http://127.0.0.1:*`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use crate::spec::{
    BACKEND, BOOTSTRAP_SERVERS, HOSTS, InvalidMetadata, PROMETHEUS_ADDRESS, Problem, SCRAPE_URL, TargetSpec,
    written_key,
};

/// Host names of cloud metadata services (besides the link-local addresses).
const METADATA_HOSTS: [&str; 5] =
    ["metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"];

/// What the operator allows triggers to name.
#[derive(Clone, Copy, Default)]
pub struct AddressPolicy<'a> {
    /// `limits.allowedSources`: when not empty, every source must match one of these.
    pub allowed_sources: &'a [String],
    /// `activator.allowedBackends`: backends allowed besides the namespace's own Services.
    pub allowed_backends: &'a [String],
    /// Who may claim a host for the activator; `None`: any namespace any host (single tenant).
    pub hosts: Option<&'a dyn HostOwnership>,
}

/// Whether a namespace may claim a host: from the operator's `activator.allowedHosts`, or from the
/// Ingresses and HTTPRoutes each namespace has.
pub trait HostOwnership {
    /// `Ok(())` when `namespace` may route `host` through the activator; otherwise why not.
    fn may_claim(&self, namespace: &str, host: &str) -> Result<(), String>;
}

/// `activator.allowedHosts`: namespace → host patterns (`*.shop.example.com`).
impl HostOwnership for std::collections::BTreeMap<String, Vec<String>> {
    fn may_claim(&self, namespace: &str, host: &str) -> Result<(), String> {
        let patterns = self.get(namespace).map(Vec::as_slice).unwrap_or_default();
        match patterns.iter().any(|p| glob(p, host)) {
            true => Ok(()),
            false => Err(format!("activator.allowedHosts does not give {host:?} to namespace {namespace:?}")),
        }
    }
}

/// One address as patterns see it.
struct Address<'a> {
    /// As written: a URL or `host:port`.
    written: &'a str,
    /// The host, without brackets for IPv6.
    host: String,
    /// `host:port` when a port is known.
    host_port: Option<String>,
}

impl Address<'_> {
    fn matches(&self, pattern: &str) -> bool {
        glob(pattern, self.written)
            || glob(pattern, &self.host)
            || self.host_port.as_deref().is_some_and(|hp| glob(pattern, hp))
    }

    fn listed_exactly(&self, patterns: &[String]) -> bool {
        patterns.iter().filter(|p| !p.contains('*')).any(|p| self.matches(p))
    }
}

fn url_address(url: &str) -> Option<Address<'_>> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let host_port = uri.port_u16().map(|p| format!("{}:{p}", uri.host().unwrap_or_default()));
    Some(Address { written: url, host, host_port })
}

fn server_address(server: &str) -> Address<'_> {
    let (host, port) = match server.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => (host, Some(port)),
        _ => (server, None),
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    Address { written: server, host: bare, host_port: port.map(|p| format!("{host}:{p}")) }
}

/// Whether `host` is a link-local address or a cloud metadata service's name.
pub fn is_metadata_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => {
            let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
            let aws = ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
            link_local || aws || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
        Err(_) => METADATA_HOSTS.contains(&host.as_str()),
    }
}

/// `text` matches `pattern`, where `*` stands for any run of characters (case-insensitive).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Whether `backend` is a Service of `namespace`: `http://NAME.NAMESPACE.svc[.cluster.local][:PORT]`.
pub fn is_namespace_service(backend: &http::Uri, namespace: &str) -> bool {
    let Some(host) = backend.host() else { return false };
    let host = host.to_ascii_lowercase();
    let service = host.strip_suffix(".svc.cluster.local").or_else(|| host.strip_suffix(".svc"));
    let path_is_root = matches!(backend.path(), "" | "/");
    match service.and_then(|s| s.split_once('.')) {
        Some((name, ns)) => !name.is_empty() && !name.contains('.') && ns == namespace && path_is_root,
        None => false,
    }
}

/// Checks every address `spec` names against `policy`, for a ScaledObject in `namespace`; the
/// error names each offending key and value.
pub fn check(
    spec: &TargetSpec,
    metadata: &HashMap<String, String>,
    namespace: &str,
    policy: &AddressPolicy,
) -> Result<(), InvalidMetadata> {
    let mut problems = Vec::new();
    let mut source = |key: &str, address: Option<Address>| {
        let Some(address) = address else { return };
        let key = written_key(key, metadata);
        let exact = address.listed_exactly(policy.allowed_sources);
        if is_metadata_host(&address.host) && !exact {
            problems.push(Problem {
                key: key.into(),
                message: format!(
                    "{:?} is a link-local or cloud metadata address; list it exactly in limits.allowedSources to use it",
                    address.written
                ),
            });
        } else if !policy.allowed_sources.is_empty() && !policy.allowed_sources.iter().any(|p| address.matches(p)) {
            problems.push(Problem {
                key: key.into(),
                message: format!(
                    "{:?} is not allowed by limits.allowedSources ({})",
                    address.written,
                    policy.allowed_sources.join(", ")
                ),
            });
        }
    };
    if let Some(p) = &spec.prometheus {
        source(PROMETHEUS_ADDRESS, url_address(&p.address));
    }
    if let Some(s) = &spec.scrape {
        for url in &s.urls {
            source(SCRAPE_URL, url_address(url));
        }
    }
    if let Some(k) = &spec.kafka {
        for server in k.bootstrap_servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            source(BOOTSTRAP_SERVERS, Some(server_address(server)));
        }
    }
    if let (Some(http), Some(hosts)) = (&spec.http, policy.hosts) {
        for host in &http.hosts {
            if let Err(why) = hosts.may_claim(namespace, host) {
                problems.push(Problem { key: HOSTS.into(), message: why });
            }
        }
    }
    if let Some(http) = &spec.http {
        let written = http.backend.to_string();
        let written = written.trim_end_matches('/');
        if let Some(address) = url_address(written) {
            let metadata = is_metadata_host(&address.host);
            let allowed = match metadata {
                true => address.listed_exactly(policy.allowed_backends),
                false => {
                    is_namespace_service(&http.backend, namespace)
                        || policy.allowed_backends.iter().any(|p| address.matches(p))
                }
            };
            if !allowed {
                let why = match metadata {
                    true => "is a link-local or cloud metadata address; list it exactly in activator.allowedBackends"
                        .to_string(),
                    false => format!(
                        "is not a Service of namespace {namespace:?} (http://NAME.{namespace}.svc[:PORT]) \
                         and activator.allowedBackends does not list it"
                    ),
                };
                problems.push(Problem { key: BACKEND.into(), message: format!("{written:?} {why}") });
            }
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(InvalidMetadata { problems, hints: Vec::new() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_addresses_are_recognised() {
        for host in
            ["169.254.169.254", "169.254.0.1", "fe80::1", "fd00:ec2::254", "metadata.google.internal", "METADATA"]
        {
            assert!(is_metadata_host(host), "{host}");
        }
        for host in ["10.0.0.1", "prometheus.monitoring", "::1", "fd00::1", "192.168.1.1"] {
            assert!(!is_metadata_host(host), "{host}");
        }
    }

    #[test]
    fn globs_match_whole_texts() {
        assert!(glob("http://127.0.0.1:*", "http://127.0.0.1:8080"));
        assert!(glob("http://*.monitoring.svc:*", "http://prometheus.monitoring.svc:9090"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("http://127.0.0.1:*", "http://127.0.0.2:8080"));
        assert!(!glob("a*b", "ab-extra"));
        assert!(!glob("exact", "exactly"));
    }

    #[test]
    fn namespace_services() {
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        assert!(is_namespace_service(&uri("http://checkout.shop.svc"), "shop"));
        assert!(is_namespace_service(&uri("http://checkout.shop.svc.cluster.local:8080"), "shop"));
        assert!(!is_namespace_service(&uri("http://checkout.other.svc:80"), "shop"));
        assert!(!is_namespace_service(&uri("http://checkout.shop:80"), "shop"));
        assert!(!is_namespace_service(&uri("http://a.b.shop.svc:80"), "shop"));
        assert!(!is_namespace_service(&uri("http://10.0.0.7:80"), "shop"));
    }
}
