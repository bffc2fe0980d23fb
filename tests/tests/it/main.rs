//! The store conformance suite, run against each store in one test binary.

mod fake;
mod memory;
mod postgres;
