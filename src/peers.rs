//! Demand between spinscale replicas. KEDA may hold a target's stream on one replica while the
//! request arrives at another's activator: the replica that holds the request tells the others at
//! once (`POST /peer/demand` on their HTTP port), and they treat the target as held too.
//!
//! Peers authenticate with a shared token (`activator.peerTokenFile`, read on every use so a
//! rotated Secret applies at once): `Authorization: Bearer <token>`. A demand without it wakes nothing.
//!
//! Peers are a fixed list (`--peers`) or every address of a headless Service (`--peer-service`),
//! resolved when demand is announced (cached for a few seconds). A replica ignores its own
//! announcements, so a Service that includes it is fine.
//!
//! Within the crate it may use no other module (a leaf).

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

/// How long resolved peer addresses are reused.
const DNS_CACHE: Duration = Duration::from_secs(5);
/// An announcement that takes longer than this is given up (the peer is gone or overloaded).
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(2);

/// Who the peers are.
#[derive(Clone, Debug)]
pub enum PeerList {
    /// `host:port` of each peer's HTTP port.
    Static(Vec<String>),
    /// A headless Service's DNS name and the HTTP port: every address it resolves to.
    Service {
        /// The Service's DNS name, e.g. `spinscale.spinscale.svc.cluster.local`.
        name: String,
        /// The peers' HTTP port.
        port: u16,
    },
}

/// One announcement: `target` has a request held at the sender.
#[derive(Debug, Serialize, Deserialize)]
pub struct Demand {
    /// The target's ScaledObject, `namespace/name`.
    pub target: String,
    /// The sending replica, so it can ignore its own announcement.
    pub sender: u64,
}

/// This replica's side of the peer protocol.
pub struct Peers {
    list: PeerList,
    /// Random per process.
    pub id: u64,
    http: reqwest::Client,
    token_file: PathBuf,
    resolved: Mutex<Option<(Instant, Vec<String>)>>,
}

impl Peers {
    /// This replica's side, calling through `http`, with a fresh random id; peers are resolved on
    /// each announcement.
    pub fn new(list: PeerList, token_file: PathBuf, http: reqwest::Client) -> Arc<Self> {
        // RandomState is seeded randomly per process: a hash from it is an id no other replica has.
        let id = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        Arc::new(Self { list, id, http, token_file, resolved: Mutex::new(None) })
    }

    /// Tells every peer that `target` has a request held here. Returns at once.
    pub fn announce(self: &Arc<Self>, target: &str) {
        let (this, target) = (self.clone(), target.to_string());
        tokio::spawn(async move {
            let demand = Demand { target, sender: this.id };
            let Ok(body) = serde_json::to_vec(&demand) else { return };
            let token = match read_token(&this.token_file) {
                Ok(token) => token,
                Err(e) => return warn!(target = %demand.target, "demand not announced: {e}"),
            };
            for peer in this.addresses().await {
                let request = this
                    .http
                    .post(format!("http://{peer}/peer/demand"))
                    .header("content-type", "application/json")
                    .bearer_auth(&token)
                    .body(body.clone())
                    .timeout(ANNOUNCE_TIMEOUT);
                let target = demand.target.clone();
                tokio::spawn(async move {
                    match request.send().await {
                        Ok(r) if r.status().is_success() => debug!(%peer, %target, "demand announced"),
                        Ok(r) => warn!(%peer, %target, status = %r.status(), "a peer refused the demand"),
                        Err(e) => warn!(%peer, %target, "a peer did not take the demand: {e}"),
                    }
                });
            }
        });
    }

    async fn addresses(&self) -> Vec<String> {
        let (name, port) = match &self.list {
            PeerList::Static(peers) => return peers.clone(),
            PeerList::Service { name, port } => (name, *port),
        };
        if let Some((at, cached)) = self.resolved.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref()
            && at.elapsed() < DNS_CACHE
        {
            return cached.clone();
        }
        let resolved: Vec<String> = match tokio::net::lookup_host((name.as_str(), port)).await {
            Ok(addrs) => addrs.map(|a: SocketAddr| a.to_string()).collect(),
            Err(e) => {
                warn!(service = %name, "cannot resolve the peers: {e}");
                Vec::new()
            }
        };
        *self.resolved.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), resolved.clone()));
        resolved
    }
}

/// The peer token in `path`, without surrounding whitespace; an error names the file (never the token).
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("peer token file {}: {e}", path.display()))?;
    let token = text.trim();
    match token.len() {
        0 => Err(format!("peer token file {} is empty", path.display())),
        _ => Ok(token.to_string()),
    }
}

/// Whether an `Authorization` header value carries `token` (compared in constant time).
pub fn authorized(header: &str, token: &str) -> bool {
    let Some(given) = header.strip_prefix("Bearer ") else { return false };
    let (given, token) = (given.trim().as_bytes(), token.as_bytes());
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Parses `--peer-service NAME:PORT`.
pub fn parse_service(text: &str) -> Result<PeerList, String> {
    let (name, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not NAME:PORT"))?;
    let port = port.parse().map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has no name"));
    }
    Ok(PeerList::Service { name: name.to_string(), port })
}
