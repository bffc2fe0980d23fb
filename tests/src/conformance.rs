//! The store conformance suite: the one statement of how a store behaves,
//! written once and run against every store, the domain's test fake included.
//!
//! Each case is a `pub async fn case(store: Arc<dyn Store>)` that panics when
//! the store behaves differently from what the ports promise. Every case
//! expects a fresh, empty store. [`conformance_suite!`](crate::conformance_suite)
//! turns them all into tests for one adapter:
//!
//! ```ignore
//! async fn fresh_store() -> tally_tests::StoreUnderTest { /* ... */ }
//! tally_tests::conformance_suite!(fresh_store);
//! ```
//!
//! A store of only the boundary and period ports (the domain's
//! `testing::fake_store::FakeStore`) runs the cases of those ports:
//!
//! ```ignore
//! async fn fresh_fake() -> std::sync::Arc<FakeStore> { /* ... */ }
//! tally_tests::conformance_suite!(boundary_ports: fresh_fake);
//! ```
//!
//! The precise semantics checked here (where the port docs leave room) are
//! written down in the `tally-adapters-memory` crate docs.

mod access;
mod appstats;
mod boundary;
mod concurrency;
mod fixtures;
mod insights;
mod outbox;
mod telemetry;
mod usage;

pub use access::*;
pub use appstats::*;
pub use boundary::*;
pub use concurrency::*;
pub use fixtures::write_of;
pub use insights::*;
pub use outbox::*;
pub use telemetry::*;
pub use usage::*;

use tally_domain::ports::{BoundaryUsageStore, TelemetryStore};

/// The ports the boundary, period and outbox cases need. Those cases take any
/// such store, so a store implementing only these runs them too.
pub trait BoundaryPorts: BoundaryUsageStore + TelemetryStore {}

impl<T: BoundaryUsageStore + TelemetryStore + ?Sized> BoundaryPorts for T {}

/// Expands to one `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` per conformance case;
/// each test calls `$factory().await` to get a fresh `StoreUnderTest`.
///
/// The calling crate needs `tokio` (with the `macros` and `rt-multi-thread`
/// features) as a dependency.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:path) => {
        $crate::conformance_suite!(@store $factory;
            each_column_moves_forward_on_its_own,
            a_handoff_keeps_the_close_requests_in_either_order,
            write_order_does_not_matter,
            replaying_a_write_changes_nothing,
            batch_boundaries_write_every_row_and_bump_every_workspace,
            duplicates_in_one_write_are_refused_whole,
            invalid_writes_change_nothing,
            last_used_moves_forward_only,
            timestamps_are_stored_to_the_microsecond,
            app_usage_counts_distinct_minutes_users_sessions_and_requests,
            app_stats_lists_overlapping_rows_oldest_first,
            access_control_refuses_and_leaves_the_store_untouched,
            access_control_lets_each_subject_do_its_job,
            concurrent_writes_of_the_same_rows_converge,
            the_rollup_answers_after_a_tick,
            sessions_count_every_row_once,
            export_streams_rows_started_in_the_range,
            retention_purges_in_bounded_rounds_after_rolling_up,
            a_late_write_for_a_purged_hour_changes_no_figure,
            retention_skips_empty_history,
            retention_deletes_published_snapshots_only,
            the_rollup_is_the_reference_after_random_writes_replays_and_ticks,
        );
        $crate::conformance_suite!(@boundary_cases @store $factory);
    };
    // Only the cases of the boundary and period ports ([`BoundaryPorts`]):
    // `$factory().await` gives an `Arc` of a fresh store.
    (boundary_ports: $factory:path) => {
        $crate::conformance_suite!(@boundary_cases @ports $factory);
    };
    (@boundary_cases @$kind:ident $factory:path) => {
        $crate::conformance_suite!(@$kind $factory;
            boundary_deltas_add_up_with_exact_uniques_across_replicas,
            a_replayed_delta_is_counted_once,
            deleting_a_replica_forgets_its_counters_and_seq,
            invalid_deltas_change_nothing,
            a_period_is_closed_once,
            closing_a_period_snapshots_and_resets_it,
            an_empty_period_gets_a_zero_snapshot,
            outbox_claims_leases_publishes_and_retries,
            a_claimer_takes_back_its_own_claims,
            marking_published_is_idempotent_and_clears_the_claim,
            unknown_snapshots_are_ignored,
            pruning_locks_keeps_later_periods_closed,
            period_switch_is_atomic_against_flushes,
            replicas_flush_while_periods_close,
        );
    };
    (@store $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let under_test: $crate::StoreUnderTest = $factory().await;
                $crate::conformance::$case(::std::sync::Arc::clone(&under_test.store)).await;
                // The guard (a throwaway database) outlives the case.
                drop(under_test);
            }
        )*
    };
    (@ports $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case($factory().await).await;
            }
        )*
    };
}
