//! The store conformance suite, run against each store in one test binary,
//! and the checks that the docs and their links hold together.

mod docs;
mod memory;
mod postgres;
