//! Routes and the table that maps a request's host and path to the app routed there.
//!
//! Exact hosts are one `HashMap` lookup whatever the number of routes; a `*.suffix` pattern is
//! looked up once per label of the request's host (most specific suffix first), so lookups never
//! scan the table.

use std::collections::HashMap;
use std::time::Duration;

/// Requests for these hosts (and path prefixes) go to `backend`, held while it is not ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The routed app's id: its ScaledObject's `namespace/name`.
    pub target: String,
    /// Exact host names or `*.suffix` patterns, matched on the `Host` without its port,
    /// case-insensitively. `*.example.com` matches `a.example.com` and `a.b.example.com`, not
    /// `example.com`.
    pub hosts: Vec<String>,
    /// Path prefixes, matched on whole segments (`/api` matches `/api` and `/api/x`, not
    /// `/apix`); the longest one wins. Empty means `/`.
    pub path_prefixes: Vec<String>,
    /// The app's Service URL; only its scheme (`http`) and authority are used.
    pub backend: http::Uri,
    /// How long a request waits for a ready backend before a `504`.
    pub hold_timeout: Duration,
    /// How many requests may wait at once for this app; more get a `503`.
    pub max_held: usize,
    /// Adds `x-spinscale-cold-start: <ms held>` to responses of held requests.
    pub cold_start_header: bool,
    /// How requests reach the backend: HTTP/1.1, or HTTP/2 with prior knowledge (gRPC apps).
    pub backend_protocol: BackendProtocol,
}

/// The protocol between the activator and an app's backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendProtocol {
    /// HTTP/1.1 (keep-alive, upgrades such as WebSocket).
    #[default]
    Http1,
    /// HTTP/2 without TLS, with prior knowledge: trailers (gRPC's status) pass through.
    H2c,
}

impl Route {
    /// How long a request waits for a ready backend unless the route says otherwise.
    pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(20);
    /// How many requests may wait at once unless the route says otherwise.
    pub const DEFAULT_MAX_HELD: usize = 1000;

    /// A route with the default knobs (20 s hold, 1,000 held, cold-start header on).
    pub fn new(target: impl Into<String>, hosts: Vec<String>, backend: http::Uri) -> Self {
        Self {
            target: target.into(),
            hosts,
            path_prefixes: Vec::new(),
            backend,
            hold_timeout: Self::DEFAULT_HOLD_TIMEOUT,
            max_held: Self::DEFAULT_MAX_HELD,
            cold_start_header: true,
            backend_protocol: BackendProtocol::Http1,
        }
    }
}

/// Why [`Activator::set_route`](super::Activator::set_route) refused a route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Another app already holds one of the route's host/prefix pairs.
    #[error(transparent)]
    Conflict(#[from] RouteConflict),
    /// The route cannot be served as written.
    #[error("route for {target}: {reason}")]
    Invalid {
        /// The route's app id.
        target: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Two apps claim the same host pattern and path prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host {host:?} path prefix {prefix:?} is already routed to {existing}; {requested} cannot take it")]
pub struct RouteConflict {
    /// The host pattern both claim, normalized.
    pub host: String,
    /// The path prefix both claim, normalized.
    pub prefix: String,
    /// The app that holds the route.
    pub existing: String,
    /// The app that asked for it.
    pub requested: String,
}

/// A host pattern and prefixes, normalized: lower-case hosts without a trailing dot, prefixes
/// without a trailing slash (except `/`), longest first, no duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Patterns {
    /// Exact hosts and `*.suffix` patterns.
    pub hosts: Vec<String>,
    /// Path prefixes; `/` when the route names none.
    pub prefixes: Vec<String>,
}

impl Patterns {
    /// The route's patterns, normalized; refuses hosts and prefixes that cannot match.
    pub fn of(route: &Route) -> Result<Self, RouteError> {
        let invalid = |reason: String| RouteError::Invalid { target: route.target.clone(), reason };
        if route.hosts.is_empty() {
            return Err(invalid("no hosts".into()));
        }
        let mut hosts = Vec::with_capacity(route.hosts.len());
        for host in &route.hosts {
            let host = normalize_host_pattern(host).map_err(|reason| invalid(format!("host {host:?}: {reason}")))?;
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
        let mut prefixes: Vec<String> = Vec::new();
        for prefix in &route.path_prefixes {
            if !prefix.starts_with('/') {
                return Err(invalid(format!("path prefix {prefix:?} does not start with /")));
            }
            let prefix = normalize_prefix(prefix);
            if !prefixes.contains(&prefix) {
                prefixes.push(prefix);
            }
        }
        if prefixes.is_empty() {
            prefixes.push("/".into());
        }
        Ok(Self { hosts, prefixes })
    }
}

fn normalize_host_pattern(host: &str) -> Result<String, &'static str> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    if name.is_empty() {
        return Err("empty");
    }
    if name.contains('*') {
        return Err("a wildcard may only be a leading `*.`");
    }
    if name.contains(['/', ':', ' ']) {
        return Err("a host pattern has no scheme, port or path");
    }
    Ok(host)
}

/// `/api/` → `/api`; `/` (and the empty prefix) → `/`.
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() { "/".into() } else { trimmed.into() }
}

/// Whether `prefix` (normalized) covers `path` on whole segments.
pub fn covers(prefix: &str, path: &str) -> bool {
    prefix == "/" || (path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/')))
}

/// One host pattern's route for one prefix.
struct Entry<T> {
    prefix: String,
    /// The id of the app that holds it.
    target: String,
    value: T,
}

/// host pattern → prefixes (longest first) → the app's value.
pub(super) struct RouteTable<T> {
    exact: HashMap<String, Vec<Entry<T>>>,
    /// Keyed by the suffix without its `*.`.
    wildcard: HashMap<String, Vec<Entry<T>>>,
    /// The patterns each app holds, to replace or remove them.
    owned: HashMap<String, Patterns>,
}

impl<T: Clone> RouteTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self { exact: HashMap::new(), wildcard: HashMap::new(), owned: HashMap::new() }
    }

    /// Installs `patterns` for the app `target`, replacing what it held; nothing changes on a conflict.
    /// The value stays the one first installed while the patterns do not change.
    pub fn insert(&mut self, target: &str, patterns: Patterns, value: T) -> Result<(), RouteConflict> {
        if self.owned.get(target) == Some(&patterns) {
            return Ok(());
        }
        for host in &patterns.hosts {
            let Some(entries) = self.entries(host) else { continue };
            for entry in entries {
                if entry.target != target && patterns.prefixes.contains(&entry.prefix) {
                    return Err(RouteConflict {
                        host: host.clone(),
                        prefix: entry.prefix.clone(),
                        existing: entry.target.clone(),
                        requested: target.to_string(),
                    });
                }
            }
        }
        self.remove(target);
        for host in &patterns.hosts {
            let (map, key) = match host.strip_prefix("*.") {
                Some(suffix) => (&mut self.wildcard, suffix),
                None => (&mut self.exact, host.as_str()),
            };
            let entries = map.entry(key.to_string()).or_default();
            for prefix in &patterns.prefixes {
                entries.push(Entry { prefix: prefix.clone(), target: target.to_string(), value: value.clone() });
            }
            entries.sort_by_key(|e| std::cmp::Reverse(e.prefix.len()));
        }
        self.owned.insert(target.to_string(), patterns);
        Ok(())
    }

    /// Removes every route of the app `target`.
    pub fn remove(&mut self, target: &str) {
        let Some(patterns) = self.owned.remove(target) else { return };
        for host in &patterns.hosts {
            let (map, key) = match host.strip_prefix("*.") {
                Some(suffix) => (&mut self.wildcard, suffix),
                None => (&mut self.exact, host.as_str()),
            };
            if let Some(entries) = map.get_mut(key) {
                entries.retain(|e| e.target != target);
                if entries.is_empty() {
                    map.remove(key);
                }
            }
        }
    }

    fn entries(&self, pattern: &str) -> Option<&Vec<Entry<T>>> {
        match pattern.strip_prefix("*.") {
            Some(suffix) => self.wildcard.get(suffix),
            None => self.exact.get(pattern),
        }
    }

    /// The value routed for `host` (lower-case, no port) and `path`: an exact host first, then
    /// the most specific wildcard; within a host, the longest prefix.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&T> {
        fn pick<'t, T>(entries: &'t [Entry<T>], path: &str) -> Option<&'t T> {
            entries.iter().find(|e| covers(&e.prefix, path)).map(|e| &e.value)
        }
        if let Some(found) = self.exact.get(host).and_then(|e| pick(e, path)) {
            return Some(found);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(found) = self.wildcard.get(rest).and_then(|e| pick(e, path)) {
                return Some(found);
            }
        }
        None
    }
}

/// The host a request is for, lower-case, without port or trailing dot: the URI's authority
/// (HTTP/2, absolute-form) or else the `Host` header.
pub(super) fn request_host<B>(request: &http::Request<B>) -> Option<std::borrow::Cow<'_, str>> {
    let raw = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request.headers().get(http::header::HOST)?.to_str().ok()?,
    };
    let host = strip_port(raw).trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    Some(if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    })
}

fn strip_port(authority: &str) -> &str {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_on_whole_segments() {
        assert!(covers("/", "/api"));
        assert!(covers("/api", "/api/v1"));
        assert!(covers("/api", "/api"));
        assert!(!covers("/api", "/apix"));
        assert_eq!(normalize_prefix("/api/"), "/api");
        assert_eq!(normalize_prefix("/"), "/");
        assert_eq!(normalize_prefix(""), "/");
    }

    fn route(target: &str, hosts: &[&str], prefixes: &[&str]) -> Route {
        let mut route = Route::new(
            target,
            hosts.iter().map(std::string::ToString::to_string).collect(),
            "http://b:80".parse().unwrap(),
        );
        route.path_prefixes = prefixes.iter().map(std::string::ToString::to_string).collect();
        route
    }

    fn table(routes: &[Route]) -> RouteTable<String> {
        let mut table = RouteTable::new();
        for r in routes {
            table.insert(&r.target, Patterns::of(r).unwrap(), r.target.clone()).unwrap();
        }
        table
    }

    #[test]
    fn longest_prefix_on_whole_segments() {
        let t = table(&[route("ns/root", &["a.com"], &[]), route("ns/api", &["a.com"], &["/api/"])]);
        assert_eq!(t.lookup("a.com", "/api").map(String::as_str), Some("ns/api"));
        assert_eq!(t.lookup("a.com", "/api/v1").map(String::as_str), Some("ns/api"));
        assert_eq!(t.lookup("a.com", "/apix").map(String::as_str), Some("ns/root"));
        assert_eq!(t.lookup("b.com", "/"), None);
    }

    #[test]
    fn exact_before_wildcard_and_most_specific_wildcard() {
        let t = table(&[
            route("ns/any", &["*.example.com"], &[]),
            route("ns/deep", &["*.b.example.com"], &[]),
            route("ns/exact", &["x.b.example.com"], &["/only"]),
        ]);
        assert_eq!(t.lookup("a.example.com", "/").map(String::as_str), Some("ns/any"));
        assert_eq!(t.lookup("y.b.example.com", "/").map(String::as_str), Some("ns/deep"));
        assert_eq!(t.lookup("x.b.example.com", "/only/1").map(String::as_str), Some("ns/exact"));
        assert_eq!(t.lookup("x.b.example.com", "/other").map(String::as_str), Some("ns/deep"));
        assert_eq!(t.lookup("example.com", "/"), None);
    }

    #[test]
    fn conflicts_name_both_and_change_nothing() {
        let mut t = table(&[route("ns/a", &["A.com."], &["/x"])]);
        let b = route("ns/b", &["c.com", "a.com"], &["/x/"]);
        let err = t.insert("ns/b", Patterns::of(&b).unwrap(), "ns/b".into()).unwrap_err();
        assert_eq!((err.existing.as_str(), err.requested.as_str()), ("ns/a", "ns/b"));
        assert_eq!((err.host.as_str(), err.prefix.as_str()), ("a.com", "/x"));
        assert_eq!(t.lookup("c.com", "/x"), None);
        // The same app may replace its own route; the old patterns go.
        let a2 = route("ns/a", &["d.com"], &[]);
        t.insert("ns/a", Patterns::of(&a2).unwrap(), "ns/a".into()).unwrap();
        assert_eq!(t.lookup("a.com", "/x"), None);
        assert_eq!(t.lookup("d.com", "/x").map(String::as_str), Some("ns/a"));
        t.remove("ns/a");
        assert_eq!(t.lookup("d.com", "/x"), None);
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for (hosts, prefixes) in [(&[][..], &[][..]), (&["a*.com"][..], &[][..]), (&["a.com:80"][..], &[][..])] {
            assert!(Patterns::of(&route("ns/a", hosts, prefixes)).is_err(), "{hosts:?}");
        }
        assert!(Patterns::of(&route("ns/a", &["a.com"], &["api"])).is_err());
    }

    #[test]
    fn host_from_header_or_authority() {
        let req = |uri: &str, host: Option<&str>| {
            let mut b = http::Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            b.body(()).unwrap()
        };
        assert_eq!(request_host(&req("/", Some("API.Example.com:8080"))).as_deref(), Some("api.example.com"));
        assert_eq!(request_host(&req("/", Some("[::1]:80"))).as_deref(), Some("[::1]"));
        assert_eq!(request_host(&req("http://h2.example.com/x", None)).as_deref(), Some("h2.example.com"));
        assert_eq!(request_host(&req("/", None)), None);
    }
}
