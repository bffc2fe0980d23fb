//! Whole runs over a store that fails now and then.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use indicatif::ProgressBar;
use tally_adapters_memory::MemoryStore;
use tally_domain::error::StoreError;
use tally_domain::ports::{CallInfo, Layer, Layered, Store};

use super::{simulate, small};

/// How a failing write fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Nothing applied: a refused connection.
    Before,
    /// Applied, but the answer is lost: a timeout after commit.
    After,
}

/// Fails every `every`-th write (app stats, boundary flush, period close);
/// reads and outbox chores pass through.
#[derive(Debug)]
struct Flaky {
    every: u64,
    failure: Failure,
    calls: AtomicU64,
}

impl Flaky {
    /// A memory store behind the fault.
    fn store(every: u64, failure: Failure) -> Layered<MemoryStore, Flaky> {
        let flaky = Self {
            every,
            failure,
            calls: AtomicU64::new(0),
        };
        Layered::new(MemoryStore::new(), flaky)
    }
}

impl Layer for Flaky {
    async fn around<T, F>(&self, info: &'static CallInfo, call: F) -> Result<T, StoreError>
    where
        T: Send,
        F: Future<Output = Result<T, StoreError>> + Send,
    {
        if !matches!(
            info.name,
            "write_app_stats" | "flush_boundary_usage" | "close_period"
        ) {
            return call.await;
        }
        let fails = (self.calls.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(self.every);
        if fails && self.failure == Failure::Before {
            return Err(StoreError::unavailable("injected: connection refused"));
        }
        let result = call.await;
        if fails {
            return Err(StoreError::unavailable("injected: timed out after commit"));
        }
        result
    }
}

#[tokio::test]
async fn refused_writes_are_retried_and_everything_is_conserved_exactly() {
    let store: Arc<dyn Store> = Arc::new(Flaky::store(7, Failure::Before));
    let outcome = simulate(&small(11), store, &ProgressBar::hidden()).await.unwrap();
    let verdict = outcome.conservation();
    assert!(verdict.ok, "{}\n{:#?}", verdict.line, verdict.problems);
    let insights = &outcome.insights;
    assert!(insights.ok, "{}\n{:#?}", insights.line, insights.problems);
    let f = outcome.faults;
    assert!(f.collector_flushes > 0 && f.tracker_flushes > 0, "{f:?}");
    assert_eq!((f.unrecovered, f.acks_lost), (0, 0));
    assert!(
        verdict.line.contains("uniques exact in 4/4 periods"),
        "{}",
        verdict.line
    );
}

#[tokio::test]
async fn lost_acknowledgements_change_no_total() {
    let store: Arc<dyn Store> = Arc::new(Flaky::store(5, Failure::After));
    let outcome = simulate(&small(12), store, &ProgressBar::hidden()).await.unwrap();
    let verdict = outcome.conservation();
    // Writes are idempotent and deltas numbered: replays count once.
    assert!(verdict.ok, "{}\n{:#?}", verdict.line, verdict.problems);
    let insights = &outcome.insights;
    assert!(insights.ok, "{}\n{:#?}", insights.line, insights.problems);
    assert!(outcome.faults.acks_lost > 0, "{:?}", outcome.faults);
    assert_eq!(outcome.published.len(), 4);
}
