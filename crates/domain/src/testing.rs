//! Test and benchmark support, behind the `testing` feature (and in the
//! crate's own unit tests): not part of what tally runs.
//!
//! - [`fake_store::FakeStore`]: an in-memory store of the boundary and period
//!   ports with fault injection and a log of applied deltas, for tests of the
//!   tracker, the snapshot step and the publisher. The store conformance
//!   suite (`tally-tests`) runs its boundary, period and outbox cases against
//!   it, so it behaves as the real stores do.
//! - [`fleet::Fleet`]: the seeded app-session fleet the benchmarks and the
//!   `rollup_memory` example feed the rollup.

pub mod fake_store;
pub mod fleet;

#[cfg(test)]
pub(crate) mod fixtures;
