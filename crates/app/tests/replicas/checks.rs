//! Checks shared by the replica scenarios.

use std::collections::HashMap;

use sqlx::Row as _;
use tally::http::{APP_STATS_PATH, BOUNDARY_LOGS_PATH};
use tally::metrics as m;
use uuid::Uuid;

use crate::load::{Acked, ReplicaAcked};
use crate::scrape::Metrics;

/// A replica's ingest counters show exactly what the driver saw it
/// acknowledge, and it holds no backlog.
pub fn replica_metrics(i: usize, mx: &Metrics, want: ReplicaAcked) {
    let tracked = |d| mx.count(m::BOUNDARY_TRACKED, &[("decision", d)]);
    assert_eq!(
        tracked("allowed"),
        want.allowed,
        "replica {i}: allowed decisions tracked"
    );
    assert_eq!(
        tracked("denied"),
        want.denied,
        "replica {i}: denied decisions tracked"
    );
    for (route, posts) in [
        (BOUNDARY_LOGS_PATH, want.boundary_posts),
        (APP_STATS_PATH, want.app_posts),
    ] {
        let post = [("method", "POST"), ("route", route)];
        let ok = [post[0], post[1], ("status", "204")];
        assert_eq!(
            mx.count(m::HTTP_REQUESTS, &ok),
            posts,
            "replica {i}: POST {route} → 204"
        );
        assert_eq!(
            mx.count(m::HTTP_REQUESTS, &post),
            posts,
            "replica {i}: POST {route} answered other than 204"
        );
    }
    // A report whose acknowledgement the client lost would be counted too.
    let collected = mx.count(m::REPORTS_COLLECTED, &[]);
    assert!(
        collected >= want.app_reports,
        "replica {i}: {collected} app stat reports collected < {} acknowledged",
        want.app_reports
    );
    for (name, what) in [
        (m::BACKLOG_ROWS, "app stat rows in the backlog"),
        (m::REPORTS_REFUSED, "app stat reports refused"),
        (m::DROPPED, "app stat reports dropped"),
        (m::FAILED_FLUSHES, "failed app stats flushes"),
        (m::BOUNDARY_FLUSH_FAILURES, "failed boundary flushes"),
    ] {
        assert_eq!(mx.count(name, &[]), 0, "replica {i}: {what}");
    }
}

/// The stored app stats sessions, by session id.
pub async fn stored_sessions(pool: &sqlx::PgPool) -> HashMap<Uuid, i64> {
    sqlx::query("SELECT session_id, requests FROM workspace_app_stats")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get("session_id"), r.get("requests")))
        .collect()
}

/// With no replica stopped early, every session holds exactly the highest
/// count acknowledged for it, replays included.
pub async fn app_stats_exact(pool: &sqlx::PgPool, acked: &Acked) {
    let stored = stored_sessions(pool).await;
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
