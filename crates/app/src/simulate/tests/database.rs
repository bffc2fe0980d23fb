//! Whole runs over a database that may hold earlier runs: PostgreSQL (a
//! throwaway database from the test harness) and the in-memory store.

use std::sync::Arc;

use indicatif::ProgressBar;
use tally_adapters_memory::MemoryStore;
use tally_adapters_postgres::PgStore;
use tally_domain::authz::{Authorized, Subject};
use tally_domain::boundary::tracker::BoundaryTracker;
use tally_domain::clock::ManualClock;
use tally_domain::ports::Store;
use time::Duration;
use uuid::Uuid;

use super::{simulate, small};
use crate::simulate::{DEFAULT_START, SimConfig, start_after_earlier_runs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_postgresql_conserve_everything_and_a_rerun_starts_after_the_last() {
    let db = tally_tests::pg::fresh_database().await;
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&db.url).await.unwrap());
    let config = SimConfig {
        duration: Duration::hours(1),
        ..small(21)
    };
    let first = simulate(&config, store.clone(), &ProgressBar::hidden())
        .await
        .unwrap();
    let verdict = first.conservation();
    assert!(verdict.ok, "{}\n{:#?}", verdict.line, verdict.problems);
    let insights = &first.insights;
    assert!(insights.ok, "{}\n{:#?}", insights.line, insights.problems);
    assert!(
        verdict.line.contains("uniques exact in 2/2 periods"),
        "{}",
        verdict.line
    );
    assert_eq!(first.published.len(), 2);

    // Same database, same seed: the run moves past the periods already
    // closed and uses fresh session ids, and checks only its own rows.
    let start = start_after_earlier_runs(&store, DEFAULT_START, config.snapshot_interval)
        .await
        .unwrap();
    assert_eq!(start, DEFAULT_START + Duration::hours(1));
    let second = simulate(&SimConfig { start, ..config }, store, &ProgressBar::hidden())
        .await
        .unwrap();
    let verdict = second.conservation();
    assert!(verdict.ok, "{}\n{:#?}", verdict.line, verdict.problems);
    let insights = &second.insights;
    assert!(insights.ok, "{}\n{:#?}", insights.line, insights.problems);
    assert_eq!(second.published.len(), 2);
    assert!(second.published.iter().all(|s| s.period_start >= start));
}

#[tokio::test]
async fn a_store_with_boundary_usage_of_an_open_period_is_refused() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let tracker = BoundaryTracker::new(Uuid::new_v4(), Arc::new(ManualClock::new(DEFAULT_START)));
    tracker.track(Uuid::new_v4(), Uuid::new_v4(), 3, 1);
    tracker
        .flush(&Authorized::new(store.clone(), Subject::BoundaryUsageTracker))
        .await
        .unwrap();
    let err = start_after_earlier_runs(&store, DEFAULT_START, Duration::minutes(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty database"), "{err}");
}
