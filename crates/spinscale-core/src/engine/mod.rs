//! The decision engine: pure code, no I/O and no clock of its own.
//!
//! The server and the simulator feed it readings and the time; it answers with a [`Decision`].
//! [`decide`] is the reactive floor; [`TargetEngine`] adds the predictive parts on top of it:
//! the idle-time model ([`idle`]), the rate forecast ([`forecast`]) and known wake times ([`crate::spec::schedule`]).

pub mod decision;
pub mod forecast;
pub mod idle;
pub mod lag;
pub mod predictive;

pub use decision::{Decision, Inputs, Reason, decide};
pub use lag::{LagSummary, PartitionOffsets};
pub use predictive::{EngineParams, EngineSettings, Now, TargetEngine};
