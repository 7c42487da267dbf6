//! KEDA's side of the fleet, on one gRPC connection as KEDA shares one per scaler address: each
//! ScaledObject registered (GetMetricSpec, then its first IsActive), one `StreamIsActive` kept
//! open per ScaledObject (an `external-push` trigger), and the scale loop's poll (IsActive and
//! GetMetrics) every `pollingInterval` at its own phase.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use tonic::transport::Channel;

use super::super::Rng;
use spinscale::proto::external_scaler_client::ExternalScalerClient;
use spinscale::proto::{GetMetricsRequest, ScaledObjectRef};

pub type Client = ExternalScalerClient<Channel>;

/// ScaledObjects registered at once.
const REGISTERING: usize = 128;

/// Registers every app as KEDA does when a ScaledObject appears: GetMetricSpec, then IsActive,
/// asked again every 500 ms until it answers (a new source may not have its first reading yet).
pub async fn register(client: &Client, refs: &[ScaledObjectRef], limit: Duration) -> anyhow::Result<()> {
    futures_util::stream::iter(refs)
        .map(|r| async move {
            let mut c = client.clone();
            c.get_metric_spec(r.clone()).await?;
            let started = Instant::now();
            loop {
                match c.is_active(r.clone()).await {
                    Ok(_) => return Ok(()),
                    Err(e) if started.elapsed() > limit => {
                        anyhow::bail!("{}: no answer within {limit:?}: {}", r.name, e.message())
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        })
        .buffer_unordered(REGISTERING)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The open `StreamIsActive` streams of some apps, and when each first said `true`.
pub struct Streams {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub first_true: Arc<Vec<OnceLock<Instant>>>,
}

impl Streams {
    /// Opens one stream per app (64 opening at once) and reads every message.
    pub async fn open(client: &Client, refs: &[ScaledObjectRef]) -> anyhow::Result<Self> {
        let first_true: Arc<Vec<OnceLock<Instant>>> = Arc::new(refs.iter().map(|_| OnceLock::new()).collect());
        let tasks = futures_util::stream::iter(refs.iter().enumerate())
            .map(|(i, r)| {
                let (mut c, first_true) = (client.clone(), first_true.clone());
                async move {
                    let mut stream = c.stream_is_active(r.clone()).await?.into_inner();
                    Ok::<_, tonic::Status>(tokio::spawn(async move {
                        while let Ok(Some(message)) = stream.message().await {
                            if message.result {
                                let _ = first_true[i].set(Instant::now());
                            }
                        }
                    }))
                }
            })
            .buffer_unordered(64)
            .try_collect()
            .await?;
        Ok(Self { tasks, first_true })
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// KEDA's scale loop: every app asked IsActive, then GetMetrics, every `period`, each at its own
/// random phase; when each first answered active, and how many calls failed.
pub struct Pollers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub first_active: Arc<Vec<OnceLock<Instant>>>,
    pub calls: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

impl Pollers {
    pub fn start(client: &Client, refs: &[ScaledObjectRef], period: Duration, seed: u64) -> Self {
        let first_active: Arc<Vec<OnceLock<Instant>>> = Arc::new(refs.iter().map(|_| OnceLock::new()).collect());
        let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut rng = Rng(seed);
        let tasks = refs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (mut c, r) = (client.clone(), r.clone());
                let (first_active, calls, failed) = (first_active.clone(), calls.clone(), failed.clone());
                let phase = period.mul_f64(rng.unit());
                tokio::spawn(async move {
                    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let request = GetMetricsRequest {
                        scaled_object_ref: Some(r.clone()),
                        metric_name: "spinscale-replicas".into(),
                    };
                    loop {
                        ticker.tick().await;
                        let active = c.is_active(r.clone()).await.map(|a| a.into_inner().result);
                        if matches!(active, Ok(true)) {
                            let _ = first_active[i].set(Instant::now());
                        }
                        let metrics = c.get_metrics(request.clone()).await;
                        calls.fetch_add(2, Ordering::Relaxed);
                        failed.fetch_add(u64::from(active.is_err()) + u64::from(metrics.is_err()), Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self { tasks, first_active, calls, failed }
    }
}

impl Drop for Pollers {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// The value of `spinscale-replicas` GetMetrics gives `r` now.
pub async fn replicas(client: &Client, r: &ScaledObjectRef) -> anyhow::Result<f64> {
    let request = GetMetricsRequest { scaled_object_ref: Some(r.clone()), metric_name: "spinscale-replicas".into() };
    let answer = client.clone().get_metrics(request).await?.into_inner();
    Ok(answer.metric_values.first().map_or(f64::NAN, |v| v.metric_value_float))
}
