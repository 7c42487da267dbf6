//! The decision engine: pure code, no I/O and no clock of its own.
//!
//! The server and (later) the simulator feed it readings; it answers with a [`Decision`].

pub mod decision;
pub mod lag;

pub use decision::{Decision, Inputs, Reason, decide};
pub use lag::{LagSummary, PartitionOffsets};
