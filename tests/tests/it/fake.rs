//! The conformance cases of the boundary and period ports against the
//! domain's test fake, so the tracker, snapshot and publisher unit tests run
//! on a store that behaves as the real ones do.

use std::sync::Arc;

use tally_domain::testing::fake_store::FakeStore;

async fn fresh_fake() -> Arc<FakeStore> {
    Arc::new(FakeStore::new())
}

tally_tests::conformance_suite!(boundary_ports: fresh_fake);
