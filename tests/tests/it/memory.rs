//! The store conformance suite against the in-memory store.

use std::sync::Arc;

use tally_adapters_memory::MemoryStore;
use tally_tests::StoreUnderTest;

async fn fresh_store() -> StoreUnderTest {
    StoreUnderTest::unguarded(Arc::new(MemoryStore::new()))
}

tally_tests::conformance_suite!(fresh_store);
