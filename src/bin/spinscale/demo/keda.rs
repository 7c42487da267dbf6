//! The demo's KEDA: a stream that waits for pushes, a poll loop and an HPA loop, over real gRPC.

use super::*;

/// Calls spinscale as KEDA's operator and the HPA do, and scales the simulated replicas.
#[derive(Clone)]
pub(super) struct Keda {
    pub(super) client: ExternalScalerClient<Channel>,
    pub(super) so: ScaledObjectRef,
    pub(super) shared: Arc<Shared>,
}

/// A failed call and which one.
struct CallFailed {
    call: &'static str,
    status: Status,
}

fn failed(call: &'static str) -> impl FnOnce(Status) -> CallFailed {
    move |status| CallFailed { call, status }
}

impl Keda {
    /// Keeps `StreamIsActive` open, reconnecting with KEDA's backoff (2 s, doubled, reset after an OK end).
    pub(super) async fn watch_stream(self, done: CancellationToken) {
        let mut backoff = Duration::from_secs(2);
        loop {
            match self.stream_once().await {
                Ok(()) => {
                    self.shared.event("StreamIsActive ended with status OK (KEDA reconnects after 2 s)");
                    self.shared.log().stream_ends.push("OK".into());
                    backoff = Duration::from_secs(2);
                }
                Err(status) => {
                    self.error(CallFailed { call: "StreamIsActive", status });
                    self.shared.log().stream_ends.push("error".into());
                }
            }
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }

    async fn stream_once(&self) -> Result<(), Status> {
        let mut stream = self.client.clone().stream_is_active(self.so.clone()).await?.into_inner();
        while let Some(message) = stream.message().await? {
            if message.result {
                self.on_push();
            }
        }
        Ok(())
    }

    /// As KEDA's `RequestScale(active=true)`: 0 → 1 at once, otherwise refresh "last active".
    fn on_push(&self) {
        let latency = self.shared.take_burst_start().map(|at| at.elapsed().as_millis() as u64);
        {
            let mut log = self.shared.log();
            log.pushes += 1;
            log.last_active = Some(Instant::now());
            log.push_latencies_ms.extend(latency);
        }
        match latency {
            Some(ms) => self.shared.event(format!("push: true, {ms} ms after the first record of the burst")),
            None => self.shared.event("push: true (no new burst since the last push)"),
        }
        self.shared.scale(0, 1, "by the pushed `true` (KEDA's RequestScale)");
    }

    pub(super) async fn poll_loop(self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(POLLING_INTERVAL);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => self.poll_once().await,
            }
        }
    }

    /// One scale-loop round: errors keep the replicas; inactive past the cooldown scales to zero.
    async fn poll_once(&self) {
        match self.poll_active().await {
            Err(e) => self.error(e),
            Ok(true) => {
                self.shared.mark_active();
                self.shared.scale(0, 1, "by the poll (IsActive true)");
            }
            Ok(false) => {
                let last_active = self.shared.log().last_active;
                let current = self.shared.replicas();
                if current > 0 && last_active.is_none_or(|at| at.elapsed() >= COOLDOWN_PERIOD) {
                    let idle = last_active.map_or(0.0, |at| at.elapsed().as_secs_f64());
                    let cooldown = spinscale_core::duration::format(COOLDOWN_PERIOD);
                    let why =
                        format!("by the poll: inactive, last seen active {idle:.1} s ago (cooldownPeriod {cooldown})");
                    self.shared.scale(current, 0, &why);
                }
            }
        }
    }

    /// `GetMetricSpec`, then `GetMetrics` + `IsActive` for each spec, as KEDA's `checkScalers`.
    async fn poll_active(&self) -> Result<bool, CallFailed> {
        let mut client = self.client.clone();
        let mut active = false;
        for spec in self.metric_specs().await? {
            client.get_metrics(self.metrics_request(&spec)).await.map_err(failed("GetMetrics"))?;
            active |= client.is_active(self.so.clone()).await.map_err(failed("IsActive"))?.into_inner().result;
        }
        Ok(active)
    }

    pub(super) async fn hpa_loop(self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + HPA_INTERVAL, HPA_INTERVAL);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => self.hpa_once().await,
            }
        }
    }

    /// The HPA only acts while the app runs; it never scales to or from zero.
    async fn hpa_once(&self) {
        let current = self.shared.replicas();
        if current == 0 {
            return;
        }
        match self.hpa_desired().await {
            Err(e) => self.error(e),
            Ok((desired, shown)) => {
                self.shared.scale(current, desired, &format!("by the HPA ({shown})"));
            }
        }
    }

    /// The max over metrics of clamp(ceil(value / target), 1, max), as the HPA with AverageValue targets.
    async fn hpa_desired(&self) -> Result<(u32, String), CallFailed> {
        let mut client = self.client.clone();
        let mut desired = 1;
        let mut shown = Vec::new();
        for spec in self.metric_specs().await? {
            let response = client.get_metrics(self.metrics_request(&spec)).await.map_err(failed("GetMetrics"))?;
            // KEDA: the float when > 0, else the int; several values are summed.
            let value: f64 = response
                .into_inner()
                .metric_values
                .iter()
                .map(|v| if v.metric_value_float > 0.0 { v.metric_value_float } else { v.metric_value as f64 })
                .sum();
            let target = if spec.target_size_float > 0.0 { spec.target_size_float } else { spec.target_size as f64 };
            desired = desired.max((value / target).ceil().clamp(1.0, f64::from(MAX_REPLICAS)) as u32);
            shown.push(format!("{} {value:.2}, target {target}", spec.metric_name));
        }
        Ok((desired, shown.join("; ")))
    }

    async fn metric_specs(&self) -> Result<Vec<MetricSpec>, CallFailed> {
        let response = self.client.clone().get_metric_spec(self.so.clone()).await.map_err(failed("GetMetricSpec"))?;
        Ok(response.into_inner().metric_specs)
    }

    fn metrics_request(&self, spec: &MetricSpec) -> GetMetricsRequest {
        GetMetricsRequest { scaled_object_ref: Some(self.so.clone()), metric_name: spec.metric_name.clone() }
    }

    /// Counted and shown (the message only when it changes); never read as 0 or inactive.
    fn error(&self, e: CallFailed) {
        let seen = ErrorSeen {
            at: self.shared.secs(),
            call: e.call,
            code: e.status.code(),
            message: e.status.message().to_string(),
        };
        let mut log = self.shared.log();
        let repeated = log.errors.last().is_some_and(|last| last.message == seen.message);
        let detail = if repeated { " (same message)".to_string() } else { format!(": {}", seen.message) };
        let text = format!("gRPC error: {} {:?}, replicas kept as KEDA does{detail}", seen.call, seen.code);
        log.errors.push(seen);
        drop(log);
        self.shared.event(text);
    }
}

// === output ===
