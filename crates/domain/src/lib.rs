//! The pure domain of tally.
//!
//! Everything here is deterministic given its inputs: time comes from an
//! injected [`Clock`], storage and delivery go through the [`ports`] traits,
//! and no module performs I/O. The app crate wires adapters into these ports.

pub mod appstats;
pub mod authz;
pub mod boundary;
pub mod clock;
pub mod error;
pub mod ports;
pub mod retry;
pub mod schema;
pub mod telemetry;
pub mod usage;
