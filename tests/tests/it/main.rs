//! The store conformance suite, run against each store in one test binary.

mod memory;
mod postgres;
