//! The store conformance suite, run against each store (and the domain's
//! test fake) in one test binary, and the checks that the docs and their links hold together.

mod docs;
mod fake;
mod memory;
mod postgres;
