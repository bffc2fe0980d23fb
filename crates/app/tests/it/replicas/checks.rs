//! Checks shared by the replica scenarios.

use std::collections::HashMap;
use std::time::Duration;

use tally::http::{APP_STATS_PATH, BOUNDARY_LOGS_PATH};
use tally::metrics as m;
use time::OffsetDateTime;
use uuid::Uuid;

use super::load::{Acked, ReplicaAcked};
use crate::common::db::SnapshotRow;
use crate::common::db::{assert_sessions_exact, stored_sessions};
use crate::common::scrape::Metrics;

/// Deliveries one publish makes: `HttpSink`'s first try and 3 retries
/// (`crates/app/src/sink.rs`); a failed publish is that many refusals.
const SINK_TRIES: u64 = 4;

/// A replica's ingest counters show exactly what the driver saw it
/// acknowledge, and it holds no backlog (scrape it with `scrape::settled`).
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
    if collected != want.app_reports {
        eprintln!(
            "replica {i}: {collected} app stat reports collected, {} acknowledged",
            want.app_reports
        );
    }
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

/// With no replica stopped early, every session holds exactly the highest
/// count acknowledged for it, replays included.
pub async fn app_stats_exact(pool: &sqlx::PgPool, acked: &Acked) {
    assert_sessions_exact(&stored_sessions(pool).await, &acked.sessions);
}

/// Each snapshot reached the sink once, with its figures; the outage made
/// several wait at once, and each failed publish is `SINK_TRIES` refusals.
pub fn sink_outage(
    rows: &[SnapshotRow],
    received: &crate::common::sink::Received,
    outage_end: OffsetDateTime,
    max_waiting: i64,
    interval: Duration,
) {
    let mut delivered: HashMap<Uuid, OffsetDateTime> = HashMap::new();
    let mut order = Vec::new();
    for ((key, body), &at) in received.accepted.iter().zip(&received.accepted_at) {
        let id: Uuid = key.parse().unwrap_or_else(|_| panic!("Idempotency-Key {key:?}"));
        assert_eq!(body["id"], key.as_str(), "{body}");
        assert!(
            delivered.insert(id, at).is_none(),
            "snapshot {id} delivered twice"
        );
        let row = rows
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("the sink got snapshot {id}, not in the outbox"));
        assert_eq!(body["allowed_requests"], row.allowed, "{body}");
        assert_eq!(body["denied_requests"], row.denied, "{body}");
        assert_eq!(body["unique_workspaces"], row.unique_workspaces, "{body}");
        assert_eq!(body["unique_users"], row.unique_users, "{body}");
        order.push(row.period_end);
    }
    let mut waited = 0;
    let mut refused_known = 0;
    // `published_at` is when the publishing round began, not the delivery.
    let mut stamp_lag: f64 = 0.0;
    for r in rows {
        let at = delivered
            .get(&r.id)
            .unwrap_or_else(|| panic!("snapshot {} never reached the sink", r.id));
        if let Some(p) = r.published_at {
            stamp_lag = stamp_lag.max((*at - p).as_seconds_f64());
        }
        if r.created_at < outage_end && *at >= outage_end {
            waited += 1;
        }
        let refused = received.refused_keys.get(&r.id.to_string()).copied().unwrap_or(0);
        let failed = r.attempts as u64;
        refused_known += refused;
        assert!(
            (SINK_TRIES * failed..SINK_TRIES * (failed + 1)).contains(&refused),
            "snapshot {}: {refused} refused deliveries for {failed} failed publishes",
            r.id
        );
    }
    assert_eq!(
        refused_known, received.refused,
        "refused deliveries of snapshots not in the outbox"
    );
    let failed: i32 = rows.iter().map(|r| r.attempts).sum();
    assert!(failed > 0, "the outage made no publish fail");
    // The publisher claims oldest first but promises no delivery order: a
    // round goes on past a snapshot that failed, so after an outage a later
    // period may arrive first. Reported, not asserted.
    let first = rows.first().map(|r| r.period_end);
    let order: Vec<i64> = order
        .iter()
        .map(|end| ((*end - first.unwrap()).whole_milliseconds() / interval.as_millis() as i128) as i64)
        .collect();
    let drained = rows
        .iter()
        .filter(|r| r.created_at < outage_end)
        .filter_map(|r| delivered.get(&r.id))
        .max()
        .map(|&last| (last - outage_end).as_seconds_f64());
    eprintln!(
        "sink: {} snapshots delivered once each, in period order {order:?}; {waited} were waiting when it \
         recovered, the last of them delivered {:.1} s after; published_at up to {stamp_lag:.1} s before the delivery",
        rows.len(),
        drained.unwrap_or_default(),
    );
    assert!(waited >= 2, "only {waited} snapshots waited through the outage");
    assert!(
        max_waiting >= 2,
        "the outbox never held several snapshots at once"
    );
}
