//! spinscale's pure core: what a trigger asks for and how the engine decides.
//!
//! The flow a newcomer should see: a KEDA trigger's metadata becomes a [`spec::TargetSpec`]
//! (typed, validated, every key documented); the [`engine`] turns signal readings and the time
//! into a [`engine::Decision`]. Nothing here does I/O, spawns a task or reads a clock, so the
//! server and the trace simulator run exactly the same code.
//!
//! - [`spec`]: trigger metadata → a validated spec (keys, defaults, schedules, Kafka connections);
//! - [`engine`]: the reactive floor, the idle-time model, the rate forecast, KEDA's lag rules;
//! - [`policy`]: the operator's rules on the addresses a trigger names (sources, backends);
//! - [`duration`], [`quantity`]: Go durations and Kubernetes quantities as users write them.
//!
//! Arrows point one way: `engine` uses `spec`, `duration` and `quantity`; `spec` uses the last two.

#![deny(missing_docs)]

pub mod duration;
pub mod engine;
pub mod policy;
pub mod quantity;
pub mod spec;
