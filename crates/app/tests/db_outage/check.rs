//! What must hold in the database and at the sink after the outage.

use std::collections::HashSet;

pub use crate::common::db::{SnapshotRow, snapshots};
use crate::common::db::{stored_sessions, unclosed_boundary};
use crate::load::Acked;
use crate::sink::Sink;

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
    let (rest_allowed, rest_denied) = unclosed_boundary(pool).await;
    let allowed: i64 = rows.iter().map(|r| r.allowed).sum::<i64>() + rest_allowed;
    let denied: i64 = rows.iter().map(|r| r.denied).sum::<i64>() + rest_denied;
    assert_eq!(
        allowed as u64, acked.allowed,
        "allowed decisions; snapshots: {rows:#?}"
    );
    assert_eq!(
        denied as u64, acked.denied,
        "denied decisions; snapshots: {rows:#?}"
    );

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
