//! The metrics that describe the present, read from the registry at scrape time.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Registry;

#[derive(Debug)]
pub(super) struct Live {
    pub(super) registry: Weak<Registry>,
}

/// One ScaledObject: its triggers folded together (the highest of each value, active if any is).
#[derive(Default)]
struct ScaledObject {
    active: bool,
    healthy: bool,
    desired: f64,
    rps: f64,
    lag: f64,
    forecast: f64,
    cold_starts: u64,
    reasons: Vec<&'static str>,
}

type Labels<'a> = [(&'static str, &'a str); 2];

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(registry) = self.registry.upgrade() else { return Ok(()) };
        let targets = registry.targets();
        let streams = registry.open_streams();
        gauge(&mut encoder, "spinscale_targets", "Live targets (triggers KEDA asks about)", targets.len() as f64)?;
        gauge(
            &mut encoder,
            "spinscale_open_streams",
            "Open StreamIsActive and StreamMetricSpec streams",
            streams as f64,
        )?;

        let mut objects: BTreeMap<(String, String), ScaledObject> = BTreeMap::new();
        for t in &targets {
            let state = t.state();
            let d = &state.decision;
            let o = objects
                .entry((t.key.namespace.clone(), t.key.name.clone()))
                .or_insert_with(|| ScaledObject { healthy: true, ..ScaledObject::default() });
            o.active |= d.active;
            o.healthy &= state.problem.is_none();
            o.desired = o.desired.max(d.desired_replicas);
            o.rps = o.rps.max(d.rps);
            o.lag = o.lag.max(d.lag);
            o.forecast = o.forecast.max(t.forecast());
            // Each trigger counts its own wakes; the ScaledObject shows the most any of them counted.
            o.cold_starts = o.cold_starts.max(t.cold_starts());
            if !o.reasons.contains(&d.reason.as_str()) {
                o.reasons.push(d.reason.as_str());
            }
        }
        let per_object = |encoder: &mut DescriptorEncoder,
                          name: &str,
                          help: &str,
                          value: &dyn Fn(&ScaledObject) -> f64|
         -> Result<(), std::fmt::Error> {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for ((namespace, so), o) in &objects {
                let labels: Labels = [("namespace", namespace), ("scaledobject", so)];
                ConstGauge::new(value(o)).encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        };
        {
            let mut family = encoder.encode_descriptor(
                "spinscale_target_cold_starts",
                "Times a signal made the target active while it was inactive: traffic found the app at zero",
                None,
                MetricType::Counter,
            )?;
            for ((namespace, so), o) in &objects {
                let labels: Labels = [("namespace", namespace), ("scaledobject", so)];
                ConstCounter::new(o.cold_starts).encode(family.encode_family(&labels)?)?;
            }
        }
        per_object(&mut encoder, "spinscale_target_active", "1 while the target is active", &|o| flag(o.active))?;
        per_object(&mut encoder, "spinscale_target_healthy", "1 while every source has a fresh reading", &|o| {
            flag(o.healthy)
        })?;
        per_object(&mut encoder, "spinscale_target_desired_replicas", "Replicas the target wants", &|o| o.desired)?;
        per_object(&mut encoder, "spinscale_target_forecast", "Forecast request rate within the lead time", &|o| {
            o.forecast
        })?;
        {
            let mut family = encoder.encode_descriptor(
                "spinscale_target_signal",
                "The target's signals: rps (requests/s), lag (capped consumer lag)",
                None,
                MetricType::Gauge,
            )?;
            for ((namespace, so), o) in &objects {
                for (signal, value) in [("rps", o.rps), ("lag", o.lag)] {
                    let labels = [("namespace", namespace.as_str()), ("scaledobject", so), ("signal", signal)];
                    ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "spinscale_target_reason",
                "1 for each reason behind the target's current decision",
                None,
                MetricType::Gauge,
            )?;
            for ((namespace, so), o) in &objects {
                for reason in &o.reasons {
                    let labels = [("namespace", namespace.as_str()), ("scaledobject", so), ("reason", reason)];
                    ConstGauge::new(1.0).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        sources(&mut encoder, &registry)
    }
}

fn sources(encoder: &mut DescriptorEncoder, registry: &Registry) -> Result<(), std::fmt::Error> {
    let now = Instant::now();
    let collectors = registry.hub().live();
    let rows: Vec<(&'static str, String, bool, Option<f64>, u64)> = collectors
        .iter()
        .map(|c| {
            let state = c.borrow();
            let age = state.last_good.as_ref().map(|(_, at)| now.saturating_duration_since(*at).as_secs_f64());
            (c.key.kind(), c.key.to_string(), state.error.is_none() && age.is_some(), age, state.errors)
        })
        .collect();
    let mut up = encoder.encode_descriptor(
        "spinscale_source_up",
        "1 while the source's last poll succeeded",
        None,
        MetricType::Gauge,
    )?;
    for (kind, source, ok, _, _) in &rows {
        ConstGauge::new(flag(*ok)).encode(up.encode_family(&[("kind", *kind), ("source", source.as_str())])?)?;
    }
    let mut age = encoder.encode_descriptor(
        "spinscale_source_reading_age_seconds",
        "Age of the source's last good reading",
        None,
        MetricType::Gauge,
    )?;
    for (kind, source, _, seconds, _) in &rows {
        if let Some(seconds) = seconds {
            ConstGauge::new(*seconds).encode(age.encode_family(&[("kind", *kind), ("source", source.as_str())])?)?;
        }
    }
    let mut errors = encoder.encode_descriptor(
        "spinscale_source_errors",
        "Failed polls of the source",
        None,
        MetricType::Counter,
    )?;
    for (kind, source, _, _, count) in &rows {
        ConstCounter::new(*count).encode(errors.encode_family(&[("kind", *kind), ("source", source.as_str())])?)?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn flag(on: bool) -> f64 {
    if on { 1.0 } else { 0.0 }
}
