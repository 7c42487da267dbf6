//! Live config: the mounted file or the ConfigMap, re-read and applied without a restart.
//!
//! A change is parsed and validated whole, then checked against every live target
//! ([`Registry::reload`]); if anything is wrong nothing changes, a log line names the key, and
//! `spinscale_config_reload_total{result="rejected"}` counts it.
//!
//! Within the crate it may use [`config`](crate::config), [`registry`](crate::registry) and
//! [`telemetry`](crate::telemetry); nothing else.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{WatchEvent, WatchParams};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::registry::{Registry, Reloaded};
use crate::telemetry::ReloadResult;

/// The key of the ConfigMap that holds the config file.
pub const CONFIGMAP_KEY: &str = "config.yaml";

/// How often the mounted file is re-read. Reading a small file beats inotify here: the kubelet
/// swaps a `..data` symlink in the directory, which a watch on the file itself never sees.
pub const FILE_POLL: Duration = Duration::from_millis(500);

/// Where the live config comes from.
#[derive(Clone)]
pub enum ConfigSource {
    /// A mounted file (`--config`), re-read every [`FILE_POLL`].
    File(PathBuf),
    /// `namespace/name` of a ConfigMap with a `config.yaml` key, watched through the API.
    ConfigMap {
        /// The Kubernetes client the ConfigMap is read and watched with.
        client: kube::Client,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
}

/// Parses `text` and applies it, counting and logging the outcome. `origin` names the source in logs.
pub fn apply(registry: &Registry, text: &str, origin: &str) -> Result<Reloaded, String> {
    let config = Config::parse(text).map_err(|e| e.to_string());
    if config.as_ref().is_ok_and(|c| *registry.config() == *c) {
        debug!(origin, "config unchanged");
        return Ok(Reloaded { targets_changed: 0, collectors_restarted: false });
    }
    let outcome = config.and_then(|config| registry.reload(config).map_err(|e| e.to_string()));
    match &outcome {
        Ok(r) => {
            registry.telemetry().count_reload(ReloadResult::Success);
            info!(
                origin,
                targets_changed = r.targets_changed,
                collectors_restarted = r.collectors_restarted,
                "config applied"
            );
        }
        Err(reason) => {
            registry.telemetry().count_reload(ReloadResult::Rejected);
            error!(origin, %reason, "config rejected; the previous config stays");
        }
    }
    outcome
}

/// Follows `source` until `shutdown`, applying every change.
pub async fn follow(source: ConfigSource, registry: Arc<Registry>, shutdown: CancellationToken) {
    match source {
        ConfigSource::File(path) => tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = follow_file(path, &registry) => {}
        },
        ConfigSource::ConfigMap { client, namespace, name } => tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = follow_configmap(Api::namespaced(client, &namespace), &name, &registry) => {}
        },
    }
}

async fn follow_file(path: PathBuf, registry: &Registry) {
    let origin = path.display().to_string();
    let mut last = tokio::fs::read(&path).await.ok();
    let mut ticker = tokio::time::interval(FILE_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match tokio::fs::read(&path).await {
            Ok(bytes) if last.as_ref() != Some(&bytes) => {
                match std::str::from_utf8(&bytes) {
                    Ok(text) => {
                        let _ = apply(registry, text, &origin);
                    }
                    Err(e) => {
                        registry.telemetry().count_reload(ReloadResult::Rejected);
                        error!(origin, "config rejected: not UTF-8 ({e}); the previous config stays");
                    }
                }
                last = Some(bytes);
            }
            Ok(_) => {}
            // Mid-swap or removed: keep the config, try again.
            Err(e) => {
                if last.take().is_some() {
                    warn!(origin, "config file unreadable ({e}); the previous config stays");
                }
            }
        }
    }
}

/// Reads the ConfigMap once, then watches it, re-reading after every break in the watch.
async fn follow_configmap(api: Api<ConfigMap>, name: &str, registry: &Registry) {
    let origin = format!("configmap {name}");
    let mut last: Option<String> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        match watch_once(&api, name, registry, &origin, &mut last).await {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                warn!(origin, "watching the config ConfigMap failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn watch_once(
    api: &Api<ConfigMap>,
    name: &str,
    registry: &Registry,
    origin: &str,
    last: &mut Option<String>,
) -> Result<(), kube::Error> {
    let mut version = "0".to_string();
    match api.get_opt(name).await? {
        Some(cm) => {
            version = cm.metadata.resource_version.clone().unwrap_or(version);
            take(&cm, registry, origin, last);
        }
        None => warn!(origin, "the config ConfigMap does not exist; the current config stays"),
    }
    let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(290);
    let mut events = std::pin::pin!(api.watch(&params, &version).await?);
    while let Some(event) = events.try_next().await? {
        match event {
            WatchEvent::Added(cm) | WatchEvent::Modified(cm) => take(&cm, registry, origin, last),
            WatchEvent::Deleted(_) => warn!(origin, "the config ConfigMap was deleted; the current config stays"),
            WatchEvent::Bookmark(_) => {}
            // Usually 410 Gone (the version expired): read it again and watch from there.
            WatchEvent::Error(status) => {
                warn!(origin, code = status.code, "watch ended: {}", status.message);
                return Ok(());
            }
        }
    }
    Ok(())
}

fn take(cm: &ConfigMap, registry: &Registry, origin: &str, last: &mut Option<String>) {
    let text = cm.data.as_ref().and_then(|d| d.get(CONFIGMAP_KEY)).cloned();
    let Some(text) = text else {
        registry.telemetry().count_reload(ReloadResult::Rejected);
        error!(origin, "config rejected: the ConfigMap has no {CONFIGMAP_KEY:?} key; the previous config stays");
        return;
    };
    if last.as_deref() != Some(text.as_str()) {
        let _ = apply(registry, &text, origin);
        *last = Some(text);
    }
}

/// Reads the ConfigMap's config once (at start, before serving).
pub async fn fetch_configmap(client: kube::Client, namespace: &str, name: &str) -> anyhow::Result<Config> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let cm = api.get(name).await.map_err(|e| anyhow::anyhow!("reading ConfigMap {namespace}/{name}: {e}"))?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(CONFIGMAP_KEY))
        .ok_or_else(|| anyhow::anyhow!("ConfigMap {namespace}/{name} has no {CONFIGMAP_KEY:?} key"))?;
    Config::parse(text).map_err(|e| anyhow::anyhow!("ConfigMap {namespace}/{name}: {e}"))
}
