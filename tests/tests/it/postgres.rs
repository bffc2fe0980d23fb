//! The store conformance suite against the PostgreSQL store, each case on a
//! fresh database of the harness's throwaway server.

use std::sync::Arc;

use tally_adapters_postgres::PgStore;

async fn fresh_store() -> tally_tests::StoreUnderTest {
    let db = tally_tests::pg::fresh_database().await;
    let store = PgStore::connect(&db.url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test database {}: {e}", db.name));
    tally_tests::StoreUnderTest {
        store: Arc::new(store),
        guard: Box::new(db),
    }
}

tally_tests::conformance_suite!(fresh_store);
