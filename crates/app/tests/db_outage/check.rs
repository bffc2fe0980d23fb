//! What must hold in the database and at the sink after the outage.

use std::collections::{HashMap, HashSet};

use sqlx::Row as _;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::load::Acked;
use crate::sink::Sink;

#[derive(Debug)]
pub struct SnapshotRow {
    pub id: Uuid,
    pub period_start: OffsetDateTime,
    pub period_end: OffsetDateTime,
    pub allowed: i64,
    pub denied: i64,
    pub published: bool,
}

pub async fn snapshots(pool: &sqlx::PgPool) -> Vec<SnapshotRow> {
    sqlx::query(
        "SELECT id, period_start, period_end, allowed_requests, denied_requests, \
         published_at IS NOT NULL AS published FROM telemetry_snapshots ORDER BY period_end",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| SnapshotRow {
        id: r.get("id"),
        period_start: r.get("period_start"),
        period_end: r.get("period_end"),
        allowed: r.get("allowed_requests"),
        denied: r.get("denied_requests"),
        published: r.get("published"),
    })
    .collect()
}

/// No two snapshots for one period.
pub fn one_snapshot_per_period(rows: &[SnapshotRow]) {
    let mut ends = HashSet::new();
    for r in rows {
        assert!(
            ends.insert(r.period_end),
            "two snapshots for {}: {rows:#?}",
            r.period_end
        );
    }
}

/// Every acknowledged boundary decision is in a snapshot or still unclosed,
/// exactly; every acknowledged session is stored with its highest
/// acknowledged count, and nothing else is.
pub async fn nothing_lost(pool: &sqlx::PgPool, acked: &Acked, rows: &[SnapshotRow]) {
    let rest = sqlx::query(
        "SELECT COALESCE(SUM(allowed_requests), 0)::bigint AS a, COALESCE(SUM(denied_requests), 0)::bigint AS d \
         FROM boundary_usage_replicas",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let allowed: i64 = rows.iter().map(|r| r.allowed).sum::<i64>() + rest.get::<i64, _>("a");
    let denied: i64 = rows.iter().map(|r| r.denied).sum::<i64>() + rest.get::<i64, _>("d");
    assert_eq!(
        allowed as u64, acked.allowed,
        "allowed decisions; snapshots: {rows:#?}"
    );
    assert_eq!(
        denied as u64, acked.denied,
        "denied decisions; snapshots: {rows:#?}"
    );

    let stored: HashMap<Uuid, i64> = sqlx::query("SELECT session_id, requests FROM workspace_app_stats")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get("session_id"), r.get("requests")))
        .collect();
    assert_eq!(
        stored.len(),
        acked.sessions.len(),
        "sessions stored vs acknowledged"
    );
    for (session, &want) in &acked.sessions {
        assert_eq!(
            stored.get(session).copied(),
            Some(want as i64),
            "session {session}"
        );
    }
}

/// Each snapshot in the outbox reached the sink, once.
pub fn delivered_once(sink: &Sink, rows: &[SnapshotRow]) {
    let received = std::mem::take(&mut *sink.received.lock());
    let mut seen = HashSet::new();
    for (key, body) in &received.accepted {
        assert!(seen.insert(key.clone()), "snapshot {key} delivered twice");
        assert_eq!(body["id"], key.as_str(), "{body}");
    }
    for r in rows {
        assert!(
            seen.contains(&r.id.to_string()),
            "snapshot {} never reached the sink",
            r.id
        );
    }
    assert_eq!(
        seen.len(),
        rows.len(),
        "the sink got a snapshot not in the outbox"
    );
}
