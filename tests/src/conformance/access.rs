//! Access control through `tally_domain::authz::Authorized` around the real store.

use std::sync::Arc;

use tally_domain::appstats::AccessMethod;
use tally_domain::authz::{Authorized, Role, Subject};
use tally_domain::boundary::{BoundaryUsageSummary, FlushOutcome};
use tally_domain::error::StoreError;
use tally_domain::ports::{
    AppStatsStore, BoundaryUsageStore, InsightsStore, Store, TelemetryStore, UsageStore,
};
use tally_domain::telemetry::PeriodCloseOutcome;
use uuid::Uuid;

use super::fixtures::*;

fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, StoreError>, subject: Subject, what: &str) {
    match result {
        Err(StoreError::Forbidden(f)) => assert_eq!(f.subject, subject, "{what}"),
        other => panic!("{subject} {what}: expected StoreError::Forbidden, got {other:?}"),
    }
}

const USERS: [Subject; 3] = [
    Subject::User(Role::Member),
    Subject::User(Role::Auditor),
    Subject::User(Role::Admin),
];

/// No user role touches boundary usage (read, update, delete, period
/// close); agents and proxies read nothing; users, agents and the tracker
/// write no app stats. Refused calls never reach the store.
pub async fn access_control_refuses_and_leaves_the_store_untouched(store: Arc<dyn Store>) {
    let replica = Uuid::new_v4();
    let w = ids(1);
    let d = delta(replica, 1, (4, 1), &w, &w, (T0, T0 + mins(1)));
    let stats = write_of(
        vec![row(Who::new(), AccessMethod::Path, "code", T0, T0 + secs(5), 3)],
        8,
    );
    let workspace = stats.last_used[0].0;

    let mut not_tracker: Vec<Subject> = USERS.to_vec();
    not_tracker.extend([
        Subject::WorkspaceAgent,
        Subject::WorkspaceProxy,
        Subject::SystemRestricted,
    ]);
    for subject in not_tracker {
        let as_subject = Authorized::new(Arc::clone(&store), subject);
        assert_forbidden(
            as_subject.flush_boundary_usage(&d).await,
            subject,
            "flush boundary usage",
        );
        assert_forbidden(
            as_subject.boundary_usage_summary().await,
            subject,
            "read boundary usage",
        );
        assert_forbidden(
            as_subject.delete_boundary_usage_by_replica(replica).await,
            subject,
            "delete boundary usage",
        );
        assert_forbidden(
            as_subject.close_period(&close_of(1, replica)).await,
            subject,
            "close a period",
        );
    }
    for subject in USERS
        .into_iter()
        .chain([Subject::WorkspaceAgent, Subject::BoundaryUsageTracker])
    {
        let as_subject = Authorized::new(Arc::clone(&store), subject);
        assert_forbidden(
            as_subject.write_app_stats(&stats).await,
            subject,
            "write app stats",
        );
    }
    for subject in [
        Subject::WorkspaceAgent,
        Subject::WorkspaceProxy,
        Subject::User(Role::Member),
    ] {
        let as_subject = Authorized::new(Arc::clone(&store), subject);
        assert_forbidden(
            as_subject.app_usage_by_interval(&around_t0()).await,
            subject,
            "read app usage",
        );
        assert_forbidden(
            as_subject.app_stats(all_time(), 10).await,
            subject,
            "read app stats",
        );
        assert_forbidden(
            as_subject.workspace_last_used(workspace).await,
            subject,
            "read last used",
        );
        assert_forbidden(as_subject.list_snapshots(10).await, subject, "read snapshots");
        assert_forbidden(
            as_subject
                .claim_unpublished_snapshots(replica, T0, secs(60), 10)
                .await,
            subject,
            "claim snapshots",
        );
        assert_forbidden(as_subject.prune_telemetry_locks(T0).await, subject, "prune locks");
    }

    // Nothing reached the store: no counters, no rows, no snapshot, no lock,
    // and the refused flush did not use up its seq.
    let store = &*store;
    assert_eq!(
        store.boundary_usage_summary().await.unwrap(),
        BoundaryUsageSummary::default()
    );
    assert_eq!(all_rows(store).await, vec![]);
    assert_eq!(store.workspace_last_used(workspace).await.unwrap(), None);
    assert_eq!(store.list_snapshots(10).await.unwrap(), vec![]);
    assert_eq!(
        store.flush_boundary_usage(&d).await.unwrap(),
        FlushOutcome::Applied
    );
    assert!(matches!(
        store.close_period(&close_of(1, replica)).await.unwrap(),
        PeriodCloseOutcome::Closed(_)
    ));
}

/// The allowed paths work through the wrapper: the tracker owns boundary
/// usage and the period switch, the restricted system subject writes app
/// stats and runs the outbox chores, readers read.
pub async fn access_control_lets_each_subject_do_its_job(store: Arc<dyn Store>) {
    let tracker = Authorized::new(Arc::clone(&store), Subject::BoundaryUsageTracker);
    let system = Authorized::new(Arc::clone(&store), Subject::SystemRestricted);
    let auditor = Authorized::new(Arc::clone(&store), Subject::User(Role::Auditor));

    let replica = Uuid::new_v4();
    let w = ids(1);
    let d = delta(replica, 1, (4, 1), &w, &w, (T0, T0 + mins(1)));
    assert_eq!(
        tracker.flush_boundary_usage(&d).await.unwrap(),
        FlushOutcome::Applied
    );
    assert_eq!(
        tracker.boundary_usage_summary().await.unwrap().allowed_requests,
        4
    );
    let PeriodCloseOutcome::Closed(snapshot) = tracker.close_period(&close_of(1, replica)).await.unwrap()
    else {
        panic!("the tracker could not close a fresh period");
    };
    assert_eq!(snapshot.usage.allowed_requests, 4);
    assert_eq!(
        tracker.delete_boundary_usage_by_replica(replica).await.unwrap(),
        1
    );

    let stats = write_of(
        vec![row(Who::new(), AccessMethod::Path, "code", T0, T0 + secs(5), 3)],
        8,
    );
    system.write_app_stats(&stats).await.unwrap();
    assert_eq!(auditor.app_stats(all_time(), 10).await.unwrap().len(), 1);
    assert!(!system.tick_usage_rollup().await.unwrap().skipped);
    assert_eq!(
        auditor.app_usage_by_interval(&around_t0()).await.unwrap().len(),
        1
    );
    assert_eq!(
        auditor.workspace_last_used(stats.last_used[0].0).await.unwrap(),
        Some(T0 + secs(5))
    );
    assert_eq!(auditor.list_snapshots(10).await.unwrap(), vec![snapshot.clone()]);

    let claimed = system
        .claim_unpublished_snapshots(replica, T0 + mins(60), secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed, vec![snapshot.clone()]);
    system
        .mark_snapshot_published(snapshot.id, replica, T0 + mins(61))
        .await
        .unwrap();
    assert_eq!(system.prune_telemetry_locks(T0 + mins(600)).await.unwrap(), 1);
}
