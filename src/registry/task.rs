//! A target's task: it evaluates the engine on every reading, tick and held request, publishes
//! the state, and learns the target's past from Prometheus when it starts.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::time::MissedTickBehavior;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::WatchStream;
use tracing::{Instrument, info, info_span, warn};

use super::{Limits, Registry, Setup, Shared, SourceProblem, Target, TargetKey, TargetState, target_sources};
use crate::config::Config;
use crate::history::History;
use crate::signals::prometheus::{self, QueryError};
use crate::signals::{Reading, SourceView};
use crate::telemetry::Telemetry;
use spinscale_activator::Activator;
use spinscale_core::duration;
use spinscale_core::engine::{Inputs, Now, TargetEngine, lag};
use spinscale_core::spec::{PredictiveMode, TargetSpec};

impl Registry {
    pub(super) fn setup(&self, spec: Arc<TargetSpec>, config: &Config) -> Setup {
        let collectors = target_sources(&spec).iter().map(|s| self.hub.subscribe(s)).collect();
        Setup {
            spec,
            collectors,
            tick: config.targets.tick.0,
            limits: Limits::of(config),
            engine: config.engine.clone(),
            backfill: config.targets.backfill.0,
            max_response_bytes: config.limits.max_response_bytes.bytes(),
            rate_window: config.collectors.scrape_window.0,
        }
    }
    pub(super) fn start(&self, key: TargetKey, setup: Setup, now_ms: u64) -> Target {
        let engine = TargetEngine::for_spec(&setup.spec, &setup.engine);
        let shared = Arc::new(Shared {
            last_seen_ms: AtomicU64::new(now_ms),
            open_streams: AtomicUsize::new(0),
            all_streams: self.open_streams.clone(),
            forecast: AtomicU64::new(0),
            learned_gaps: AtomicU32::new(0),
            cold_starts: AtomicU64::new(0),
            demand: Notify::new(),
            peer_held_until: Mutex::new(None),
            history: Mutex::new(History::default()),
        });
        let activator = setup.spec.http.as_ref().and(self.activator.get().cloned()).map(|a| (a, key.to_string()));
        let mut evaluation = Evaluation {
            engine,
            epoch: self.epoch,
            telemetry: self.telemetry.clone(),
            activator,
            shared: shared.clone(),
        };
        let initial = evaluation.evaluate(&setup, Instant::now());
        let (tx, rx) = watch::channel(initial);
        let (setup_tx, setup_rx) = watch::channel(Arc::new(setup));
        let span = info_span!("target", target = %key);
        let http = self.hub.http().clone();
        let task = tokio::spawn(run_target(setup_rx, evaluation, tx, shared.clone(), http).instrument(span));
        Target { key, setup: setup_tx, state: rx, shared, task }
    }
}

async fn run_target(
    mut setup_rx: watch::Receiver<Arc<Setup>>,
    mut evaluation: Evaluation,
    tx: watch::Sender<TargetState>,
    shared: Arc<Shared>,
    http: reqwest::Client,
) {
    let mut setup = setup_rx.borrow_and_update().clone();
    let mut backfill = backfill(&setup, &http);
    'setup: loop {
        let mut readings = StreamMap::new();
        for (i, c) in setup.collectors.iter().enumerate() {
            readings.insert(i, WatchStream::from_changes(c.subscribe()));
        }
        let mut ticker = tokio::time::interval(setup.tick);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            let state = evaluation.evaluate(&setup, Instant::now());
            shared.record(&state, &evaluation.engine);
            let was_active = tx.borrow().decision.active;
            if state.decision.active && !was_active {
                if state.decision.reason.is_signal() {
                    shared.cold_starts.fetch_add(1, Ordering::Relaxed);
                }
                if shared.open_streams.load(Ordering::Relaxed) == 0 {
                    evaluation.telemetry.push_failures.inc();
                }
            }
            tx.send_if_modified(|current| {
                let changed = !current.same_outcome(&state);
                *current = state;
                changed
            });
            tokio::select! {
                _ = ticker.tick() => {}
                Some(_) = readings.next() => {}
                _ = shared.demand.notified() => {}
                Some(past) = async { Some(backfill.as_mut()?.await) }, if backfill.is_some() => {
                    backfill = None;
                    match past {
                        Ok(points) => {
                            let learned = evaluation.learn_past(&setup, &points);
                            info!(points = points.len(), gaps = learned, "learned the past from Prometheus");
                        }
                        Err(e) => warn!("no backfill from Prometheus ({e}); the engine learns from now on"),
                    }
                }
                changed = setup_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let next = setup_rx.borrow_and_update().clone();
                    if next.spec != setup.spec || next.engine != setup.engine {
                        // A different trigger or engine: the learned history does not carry over.
                        evaluation.engine = TargetEngine::for_spec(&next.spec, &next.engine);
                        backfill = self::backfill(&next, &http);
                    }
                    setup = next;
                    continue 'setup;
                }
            }
        }
    }
}

/// Engine time starts this long before the registry's epoch, so the backfilled past has room.
const ENGINE_ORIGIN: Duration = Duration::from_secs(8 * 24 * 3600);

type Backfill = Option<Pin<Box<dyn Future<Output = Result<Vec<(f64, f64)>, QueryError>> + Send>>>;

/// The query for a predictive target's past, when it has a Prometheus query and backfill is on.
fn backfill(setup: &Setup, http: &reqwest::Client) -> Backfill {
    let source = setup.spec.prometheus.clone()?;
    if setup.spec.predictive.mode == PredictiveMode::Off || setup.backfill.is_zero() {
        return None;
    }
    let (http, end) = (http.clone(), wall_secs());
    let start = end - setup.backfill.as_secs_f64();
    let timeout = source.timeout.unwrap_or(Duration::from_secs(10)).max(Duration::from_secs(10));
    let max_body = setup.max_response_bytes;
    Some(Box::pin(async move { prometheus::query_range(&http, &source, start, end, 60.0, timeout, max_body).await }))
}

/// A target's engine and what evaluating it needs besides the setup.
struct Evaluation {
    engine: TargetEngine,
    epoch: Instant,
    telemetry: Arc<Telemetry>,
    /// The activator and this target's id in it, for targets with `hosts`.
    activator: Option<(Arc<Activator>, String)>,
    shared: Arc<Shared>,
}

impl Evaluation {
    fn mono(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch) + ENGINE_ORIGIN
    }

    /// Starts the engine over from `points` (`(unix seconds, requests/s)`, oldest first): the
    /// target's past as Prometheus recorded it. Returns the idle gaps learned.
    fn learn_past(&mut self, setup: &Setup, points: &[(f64, f64)]) -> u32 {
        let mut engine = TargetEngine::for_spec(&setup.spec, &setup.engine);
        let (mono, wall) = (self.mono(Instant::now()), wall_secs());
        for &(at, rps) in points {
            let ago = Duration::from_secs_f64((wall - at).max(0.0));
            let Some(then) = mono.checked_sub(ago) else { continue };
            engine.step(Now { mono: then, wall_secs: at }, &Inputs { rps: Some(rps), ..Inputs::default() });
        }
        self.engine = engine;
        self.engine.idle_model().histogram().total()
    }

    /// Feeds the fresh readings to the engine and names the first source that has none.
    fn evaluate(&mut self, setup: &Setup, now: Instant) -> TargetState {
        let stale_after = setup.limits.stale_after;
        let mut inputs = Inputs::default();
        let mut problem: Option<SourceProblem> = None;
        let mut observed_at: Option<Instant> = None;
        for c in &setup.collectors {
            let state = c.borrow();
            let source = || c.key.to_string();
            if let Some((_, at)) = &state.last_good {
                observed_at = observed_at.max(Some(*at));
            }
            let found = match state.view(now, stale_after) {
                // A query and a scrape both measure the request rate: the higher one never under-scales.
                SourceView::Fresh(Reading::Rate(rps)) => {
                    inputs.rps = Some(inputs.rps.map_or(*rps, |other| other.max(*rps)));
                    None
                }
                SourceView::Fresh(Reading::Offsets(partitions)) => {
                    inputs.lag = Some(lag::summarize(partitions, &setup.spec.lag, setup.limits.persistent_lag_after));
                    None
                }
                SourceView::Pending => Some(SourceProblem::Pending { signal: source() }),
                SourceView::Failed(cause) => Some(SourceProblem::Failed { signal: source(), cause: cause.to_string() }),
                SourceView::Stale(age) => Some(SourceProblem::Stale {
                    signal: source(),
                    age: duration::format(age),
                    limit: duration::format(stale_after),
                }),
            };
            if let Some(found) = found
                && problem.as_ref().is_none_or(|p| found.rank() < p.rank())
            {
                problem = Some(found);
            }
        }
        // The activator counts every request exactly: a rate that is never stale, and held demand.
        if let Some((activator, id)) = &self.activator
            && let Some(stats) = activator.stats(id)
        {
            let rps = activator.rate(id, setup.rate_window).unwrap_or(0.0);
            inputs.rps = Some(inputs.rps.map_or(rps, |other| other.max(rps)));
            let peer_held = self
                .shared
                .peer_held_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|u| u > now);
            if stats.held > 0 || peer_held {
                inputs.held = true;
                observed_at = Some(now);
            }
        }
        // The engine measures gaps on the monotonic clock; the time-of-day model and schedules need the wall clock.
        let decision = match &problem {
            // Without every signal the engine would learn the outage as quiet: decide, don't learn.
            Some(_) => self.engine.reactive(&inputs),
            None => self.engine.step(Now { mono: self.mono(now), wall_secs: wall_secs() }, &inputs),
        };
        TargetState { decision, problem, observed_at }
    }
}

fn wall_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl Shared {
    fn record(&self, state: &TargetState, engine: &TargetEngine) {
        let forecast = engine.forecast();
        self.forecast.store(forecast.to_bits(), Ordering::Relaxed);
        self.learned_gaps.store(engine.idle_model().histogram().total(), Ordering::Relaxed);
        let d = &state.decision;
        self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner).observe(
            wall_secs(),
            d.rps,
            d.lag,
            forecast,
            d.active,
        );
    }
}
