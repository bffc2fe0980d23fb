//! Shared test support for tally: the PostgreSQL harness and the store
//! conformance suite, used by the tests in `tests/tests/` and by other crates'
//! tests and benchmarks.

pub mod conformance;
pub mod pg;

use std::sync::Arc;

use tally_domain::ports::Store;

/// A store for one test, with whatever keeps it alive (a throwaway database).
pub struct StoreUnderTest {
    pub store: Arc<dyn Store>,
    /// Dropped with the test: removes the test's database, if any.
    pub guard: Box<dyn std::any::Any + Send>,
}
