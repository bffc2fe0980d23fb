//! What must hold in the database and at the sink after the outage.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tally::metrics::{BACKLOG_ROWS, BOUNDARY_FLUSH_FAILURES, FAILED_FLUSHES, ROWS_WRITTEN, STORE_UP};
use time::OffsetDateTime;

use crate::common::scrape::{Metrics, scrape_all};

use super::load::Acked;
pub use crate::common::db::{SnapshotRow, snapshots};
use crate::common::db::{assert_boundary_exact, assert_sessions_exact, counted_boundary, stored_sessions};
use crate::common::sink::Sink;

/// Every replica, scraped before the database goes away, has its store up
/// and no failed flush; `when` names that moment in the messages.
pub fn all_healthy(scrapes: &[Metrics], when: &str) {
    for (i, s) in scrapes.iter().enumerate() {
        assert_eq!(s.get(STORE_UP, &[]), 1.0, "replica {i} {when}: {s:?}");
        assert_eq!(s.get(FAILED_FLUSHES, &[]), 0.0, "replica {i} {when}: {s:?}");
        assert_eq!(
            s.get(BOUNDARY_FLUSH_FAILURES, &[]),
            0.0,
            "replica {i} {when}: {s:?}"
        );
    }
}

/// An insights read of the last hour from `server`, started now, with the
/// time it took to answer: for a read while the store is down.
pub fn start_read(
    client: &reqwest::Client,
    server: &crate::common::Server,
) -> tokio::task::JoinHandle<(reqwest::StatusCode, String, Duration)> {
    let now = OffsetDateTime::now_utc();
    let url = server.url(&crate::common::insights_path(now - time::Duration::hours(1), now));
    let client = client.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let r = client
            .get(url)
            .bearer_auth(crate::common::READER)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.text().await.unwrap(), started.elapsed())
    })
}

/// The read of [`start_read`] failed clearly (503, "retry later") and in
/// less than `within`.
pub async fn refused_within(
    read: tokio::task::JoinHandle<(reqwest::StatusCode, String, Duration)>,
    within: Duration,
) {
    let (status, body, took) = read.await.unwrap();
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("retry later"), "{body}");
    assert!(took < within, "a read took {took:?} to fail");
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
    let counted = counted_boundary(pool, rows).await;
    assert_boundary_exact(counted, (acked.allowed, acked.denied), rows);

    assert_sessions_exact(&stored_sessions(pool).await, &acked.sessions);
}

/// Each snapshot in the outbox reached the sink, under its own idempotency
/// key; a delivery repeated after an ambiguous timeout (at-least-once)
/// carries the same key and body. Returns how many were repeated.
pub fn delivered(sink: &Sink, rows: &[SnapshotRow]) -> usize {
    let received = std::mem::take(&mut *sink.received.lock());
    let mut seen: HashMap<String, serde_json::Value> = HashMap::new();
    let mut repeats = 0;
    for (key, body) in received.accepted {
        assert_eq!(body["id"], key.as_str(), "{body}");
        if let Some(first) = seen.get(&key) {
            assert_eq!(*first, body, "snapshot {key} delivered with two bodies");
            repeats += 1;
        } else {
            seen.insert(key, body);
        }
    }
    for r in rows {
        assert!(
            seen.contains_key(&r.id.to_string()),
            "snapshot {} never reached the sink",
            r.id
        );
    }
    assert_eq!(
        seen.len(),
        rows.len(),
        "the sink got a snapshot not in the outbox"
    );
    repeats
}

/// Waits until a period that started at or after `after` (the end of the
/// load: the snapshots then hold everything) is closed and every snapshot
/// is published. On a
/// timeout the outbox is shown, claims included.
pub async fn published_after(
    pool: &sqlx::PgPool,
    after: OffsetDateTime,
    within: Duration,
) -> Vec<SnapshotRow> {
    let deadline = std::time::Instant::now() + within;
    loop {
        let rows = snapshots(pool).await;
        let closed_after = rows.iter().any(|r| r.period_start >= after);
        if closed_after && rows.iter().all(|r| r.published) {
            for r in &rows {
                assert_eq!(r.claimed_by, None, "a published snapshot still claimed: {r:#?}");
                assert_eq!(r.claimed_until, None, "{r:#?}");
            }
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for a period after {after}, and every snapshot, published; \
             at {}, the outbox: {rows:#?}",
            OffsetDateTime::now_utc()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops every replica with SIGTERM: each exits 0 after a complete
/// shutdown, without a panic or an ERROR line (the HTTP trace's line for a
/// deliberate 5xx aside). Returns their logs.
pub async fn stop_cleanly(servers: Vec<crate::common::Server>) -> Vec<String> {
    let mut logs = Vec::new();
    for (i, server) in servers.into_iter().enumerate() {
        server.signal("-TERM");
        let (status, log) = tokio::task::spawn_blocking(move || server.wait(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(status.code(), Some(0), "replica {i}:\n{log}");
        assert!(log.contains("shutdown complete"), "replica {i}:\n{log}");
        assert!(!log.contains("panicked"), "replica {i}:\n{log}");
        let errors = log
            .lines()
            .filter(|l| l.contains(" ERROR ") && !l.contains("tower_http::trace::on_failure"));
        assert_eq!(errors.count(), 0, "replica {i}:\n{log}");
        logs.push(log);
    }
    logs
}

/// Waits until every replica has the store back, no app stat rows waiting,
/// and has written rows since `during` was scraped; returns that scrape.
pub async fn drained(
    client: &reqwest::Client,
    servers: &[crate::common::Server],
    during: &[Metrics],
    within: Duration,
) -> Vec<Metrics> {
    assert_eq!(
        during.len(),
        servers.len(),
        "no scrape of every replica during the outage to compare with"
    );
    crate::common::eventually(within, "the backlog to drain", || async move {
        let now = scrape_all(client, servers.iter().map(|s| s.addr)).await;
        let ok = now.iter().zip(during).all(|(s, d)| {
            s.get(BACKLOG_ROWS, &[]) == 0.0
                && s.get(STORE_UP, &[]) == 1.0
                && s.get(ROWS_WRITTEN, &[]) > d.get(ROWS_WRITTEN, &[])
        });
        ok.then_some(now)
    })
    .await
}
