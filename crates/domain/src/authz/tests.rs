use super::*;
use crate::boundary::BoundaryUsageSummary;
use crate::ports::{BoundaryUsageStore, TelemetryStore};
use crate::ports::{MockBoundaryUsageStore, MockTelemetryStore};
use crate::telemetry::PeriodClose;
use crate::telemetry::{BOUNDARY_USAGE_EVENT, Period};
use time::Duration;
use time::macros::datetime;
use uuid::Uuid;

const ALL_SUBJECTS: [Subject; 7] = [
    Subject::BoundaryUsageTracker,
    Subject::SystemRestricted,
    Subject::WorkspaceProxy,
    Subject::WorkspaceAgent,
    Subject::User(Role::Member),
    Subject::User(Role::Auditor),
    Subject::User(Role::Admin),
];
const ALL_ACTIONS: [Action; 4] = [Action::Create, Action::Read, Action::Update, Action::Delete];

#[test]
fn boundary_usage_is_reachable_only_by_the_tracker() {
    for subject in ALL_SUBJECTS {
        for action in ALL_ACTIONS {
            let result = authorize(subject, action, Resource::BoundaryUsage);
            assert_eq!(
                result.is_ok(),
                subject == Subject::BoundaryUsageTracker,
                "{subject} {action} boundary usage"
            );
        }
    }
}

#[test]
fn no_user_role_touches_boundary_usage_or_writes_app_stats() {
    for role in [Role::Member, Role::Auditor, Role::Admin] {
        for action in ALL_ACTIONS {
            assert!(authorize(Subject::User(role), action, Resource::BoundaryUsage).is_err());
            assert!(authorize(Subject::User(role), action, Resource::TelemetryLock).is_err());
        }
        assert!(authorize(Subject::User(role), Action::Create, Resource::WorkspaceAppStats).is_err());
    }
}

#[test]
fn inserting_app_stats_is_a_restricted_system_action() {
    assert!(
        authorize(
            Subject::SystemRestricted,
            Action::Create,
            Resource::WorkspaceAppStats
        )
        .is_ok()
    );
    assert!(authorize(Subject::SystemRestricted, Action::Update, Resource::Workspace).is_ok());
    assert!(
        authorize(
            Subject::BoundaryUsageTracker,
            Action::Create,
            Resource::WorkspaceAppStats
        )
        .is_err()
    );
    assert!(
        authorize(
            Subject::WorkspaceAgent,
            Action::Create,
            Resource::WorkspaceAppStats
        )
        .is_err()
    );
}

#[test]
fn readers_read_insights_and_snapshots_members_do_not() {
    for resource in [
        Resource::WorkspaceAppStats,
        Resource::Workspace,
        Resource::TelemetrySnapshot,
    ] {
        assert!(authorize(Subject::User(Role::Admin), Action::Read, resource).is_ok());
        assert!(authorize(Subject::User(Role::Auditor), Action::Read, resource).is_ok());
        assert!(authorize(Subject::User(Role::Member), Action::Read, resource).is_err());
    }
}

#[test]
fn agents_and_proxies_only_submit_their_own_input() {
    assert!(authorize(Subject::WorkspaceAgent, Action::Create, Resource::BoundaryLog).is_ok());
    assert!(authorize(Subject::WorkspaceProxy, Action::Create, Resource::BoundaryLog).is_err());
    assert!(
        authorize(
            Subject::WorkspaceProxy,
            Action::Create,
            Resource::WorkspaceAppStats
        )
        .is_ok()
    );
    for subject in [Subject::WorkspaceAgent, Subject::WorkspaceProxy] {
        assert!(authorize(subject, Action::Read, Resource::WorkspaceAppStats).is_err());
        assert!(authorize(subject, Action::Read, Resource::TelemetrySnapshot).is_err());
    }
}

#[test]
fn forbidden_names_subject_action_and_resource() {
    let err = authorize(
        Subject::User(Role::Admin),
        Action::Delete,
        Resource::BoundaryUsage,
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "user:admin may not delete boundary usage");
}

#[tokio::test]
async fn wrapper_refuses_before_reaching_the_store() {
    // A mock with no expectations panics if it is called at all.
    let store = Authorized::new(MockBoundaryUsageStore::new(), Subject::User(Role::Admin));
    let err = store.boundary_usage_summary().await.unwrap_err();
    assert!(matches!(
        err,
        StoreError::Forbidden(Forbidden {
            resource: Resource::BoundaryUsage,
            action: Action::Read,
            ..
        })
    ));
    assert!(store.delete_boundary_usage_by_replica(Uuid::nil()).await.is_err());

    let telemetry = Authorized::new(MockTelemetryStore::new(), Subject::SystemRestricted);
    let close = PeriodClose {
        event_type: BOUNDARY_USAGE_EVENT.into(),
        period: Period::last_ended(datetime!(2026-11-25 10:00 UTC), Duration::minutes(30)),
        snapshot_id: Uuid::nil(),
        replica_id: Uuid::nil(),
        now: datetime!(2026-11-25 10:00 UTC),
    };
    assert!(matches!(
        telemetry.close_period(&close).await,
        Err(StoreError::Forbidden(_))
    ));
}

#[tokio::test]
async fn wrapper_passes_the_tracker_through() {
    let mut inner = MockBoundaryUsageStore::new();
    inner
        .expect_boundary_usage_summary()
        .times(1)
        .returning(|| Ok(BoundaryUsageSummary::default()));
    let store = Authorized::new(inner, Subject::BoundaryUsageTracker);
    assert_eq!(
        store.boundary_usage_summary().await.unwrap(),
        BoundaryUsageSummary::default()
    );
}
