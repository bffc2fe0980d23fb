//! Reading what the replicas wrote to PostgreSQL, for the multi-replica tests.

use std::collections::HashMap;

use sqlx::Row as _;
use time::OffsetDateTime;
use uuid::Uuid;

/// One row of the snapshot outbox.
#[derive(Debug)]
pub struct SnapshotRow {
    pub id: Uuid,
    pub period_start: OffsetDateTime,
    pub period_end: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub unique_workspaces: i64,
    pub unique_users: i64,
    pub allowed: i64,
    pub denied: i64,
    pub replicas: i64,
    pub published: bool,
    pub published_at: Option<OffsetDateTime>,
    pub attempts: i32,
    /// The replica holding a claim on it, and until when.
    pub claimed_by: Option<Uuid>,
    pub claimed_until: Option<OffsetDateTime>,
}

/// Every snapshot, oldest period first.
pub async fn snapshots(pool: &sqlx::PgPool) -> Vec<SnapshotRow> {
    sqlx::query(
        "SELECT id, period_start, period_end, created_at, unique_workspaces, unique_users, allowed_requests, \
         denied_requests, replicas, published_at IS NOT NULL AS published, published_at, publish_attempts, \
         claimed_by, claimed_until FROM telemetry_snapshots ORDER BY period_end",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| SnapshotRow {
        id: r.get("id"),
        period_start: r.get("period_start"),
        period_end: r.get("period_end"),
        created_at: r.get("created_at"),
        unique_workspaces: r.get("unique_workspaces"),
        unique_users: r.get("unique_users"),
        allowed: r.get("allowed_requests"),
        denied: r.get("denied_requests"),
        replicas: r.get("replicas"),
        published: r.get("published"),
        published_at: r.get("published_at"),
        attempts: r.get("publish_attempts"),
        claimed_by: r.get("claimed_by"),
        claimed_until: r.get("claimed_until"),
    })
    .collect()
}

/// Allowed and denied decisions flushed by replicas but in no snapshot yet.
pub async fn unclosed_boundary(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(SUM(allowed_requests), 0)::bigint, COALESCE(SUM(denied_requests), 0)::bigint \
         FROM boundary_usage_replicas",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Boundary decisions counted, (allowed, denied): those in `snapshots` plus
/// those not yet closed into one.
pub async fn counted_boundary(pool: &sqlx::PgPool, snapshots: &[SnapshotRow]) -> (u64, u64) {
    let (rest_allowed, rest_denied) = unclosed_boundary(pool).await;
    let allowed: i64 = snapshots.iter().map(|r| r.allowed).sum::<i64>() + rest_allowed;
    let denied: i64 = snapshots.iter().map(|r| r.denied).sum::<i64>() + rest_denied;
    (allowed as u64, denied as u64)
}

/// The decisions [`counted_boundary`] found are the acknowledged ones,
/// exactly (`snapshots` for the message).
pub fn assert_boundary_exact(counted: (u64, u64), acked: (u64, u64), snapshots: &[SnapshotRow]) {
    assert_eq!(counted.0, acked.0, "allowed decisions; snapshots: {snapshots:#?}");
    assert_eq!(counted.1, acked.1, "denied decisions; snapshots: {snapshots:#?}");
}

/// The stored app stats sessions: request count by session id.
pub async fn stored_sessions(pool: &sqlx::PgPool) -> HashMap<Uuid, i64> {
    sqlx::query("SELECT session_id, requests FROM workspace_app_stats")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get("session_id"), r.get("requests")))
        .collect()
}

/// Exactly the acknowledged sessions are stored, each with the highest
/// request count acknowledged for it.
pub fn assert_sessions_exact(stored: &HashMap<Uuid, i64>, acked: &HashMap<Uuid, u64>) {
    assert_eq!(stored.len(), acked.len(), "sessions stored vs acknowledged");
    for (session, &want) in acked {
        assert_eq!(
            stored.get(session).copied(),
            Some(want as i64),
            "session {session}: stored vs acknowledged"
        );
    }
}
