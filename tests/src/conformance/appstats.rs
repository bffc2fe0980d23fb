//! App stats writes: the upsert's merge, write order, batches, duplicates, atomicity, last used.

use std::sync::Arc;

use tally_domain::appstats::AccessMethod::{Path, Subdomain, Terminal};
use tally_domain::error::StoreError;
use tally_domain::ports::{AppStatsWrite, Store};
use uuid::Uuid;

use super::fixtures::*;

/// End time and requests each move forward on their own: a later write
/// takes the later of the two ends and the larger of the two counts, not
/// "only if not older and not smaller" (docs/rules.md#row-merge); the row's
/// other columns are never rewritten.
pub async fn each_column_moves_forward_on_its_own(store: Arc<dyn Store>) {
    let store = &*store;
    let who = Who::new();
    let first = row(who, Path, "code", T0, T0 + secs(10), 5);
    let write = |r: &tally_domain::appstats::StatsReport| write_of(vec![r.clone()], 16);
    let expect = |end, requests| vec![stored(&later(&first, end, requests))];

    store.write_app_stats(&write(&first)).await.unwrap();
    assert_eq!(all_rows(store).await, expect(T0 + secs(10), 5), "first write");

    let steps = [
        ((20, 7), (20, 7), "a later end with more requests: both move"),
        (
            (15, 9),
            (20, 9),
            "an older end with more requests: the requests move",
        ),
        ((30, 6), (30, 9), "a later end with fewer requests: the end moves"),
        (
            (25, 8),
            (30, 9),
            "an older end with fewer requests: nothing moves",
        ),
        ((30, 9), (30, 9), "the same again: nothing moves"),
        ((30, 10), (30, 10), "same end, more requests"),
        ((35, 10), (35, 10), "later end, same requests"),
    ];
    for ((end, requests), (want_end, want_requests), what) in steps {
        store
            .write_app_stats(&write(&later(&first, T0 + secs(end), requests)))
            .await
            .unwrap();
        assert_eq!(
            all_rows(store).await,
            expect(T0 + secs(want_end), want_requests),
            "{what}"
        );
    }

    // Same (user, agent, session) but other columns changed: they are kept.
    let moved = tally_domain::appstats::StatsReport {
        workspace_id: Uuid::new_v4(),
        access_method: Subdomain,
        slug_or_port: "8080".into(),
        session_started_at: T0 + secs(1),
        ..later(&first, T0 + secs(40), 9)
    };
    store.write_app_stats(&write(&moved)).await.unwrap();
    assert_eq!(
        all_rows(store).await,
        expect(T0 + secs(40), 10),
        "only end and requests change"
    );

    // A different agent or user makes a different row.
    let other_agent = tally_domain::appstats::StatsReport {
        agent_id: Uuid::new_v4(),
        ..first.clone()
    };
    store.write_app_stats(&write(&other_agent)).await.unwrap();
    assert_eq!(
        all_rows(store).await.len(),
        2,
        "(user, agent, session) is the key"
    );
}

/// The replica handoff: replica A saw a session open (3 requests) and, at
/// its flush or shutdown, reported it with that time as provisional end;
/// replica B saw the real close, earlier, with 8 requests. In either order
/// the row keeps B's requests (a "not older and not smaller" rule lost
/// them when A's row came first) and the later end, A's: the documented
/// cost is session time overstated by up to A's report interval
/// (docs/rules.md#row-merge).
pub async fn a_handoff_keeps_the_close_requests_in_either_order(store: Arc<dyn Store>) {
    let store = &*store;
    let who = Who::new();
    for provisional_first in [true, false] {
        let session = row(who, Terminal, "", T0, T0, 0);
        let provisional = later(&session, T0 + mins(5), 3);
        let close = later(&session, T0 + mins(2), 8);
        let order = if provisional_first {
            [provisional, close]
        } else {
            [close, provisional]
        };
        for r in order {
            store.write_app_stats(&write_of(vec![r], 16)).await.unwrap();
        }
        let got: Vec<_> = all_rows(store)
            .await
            .into_iter()
            .filter(|r| r.session_id == session.session_id)
            .collect();
        assert_eq!(
            got,
            vec![stored(&later(&session, T0 + mins(5), 8))],
            "provisional first: {provisional_first}"
        );
    }
    assert_eq!(
        store.workspace_last_used(who.workspace).await.unwrap(),
        Some(T0 + mins(5))
    );
    let usage = store.app_usage(all_time()).await.unwrap();
    assert_eq!(usage.len(), 1);
    assert_eq!((usage[0].sessions, usage[0].requests), (2, 16), "no request lost");
    assert_eq!(
        usage[0].session_micros,
        2 * 5 * 60 * 1_000_000,
        "the later, provisional end counts"
    );
}

/// Four writes of the same rows, in each of the 24 orders (each order on
/// rows of its own, three per write at batch size 2), leave the same rows:
/// the latest end and the most requests, though no single write holds
/// both. Replaying any prefix afterwards changes nothing.
pub async fn write_order_does_not_matter(store: Arc<dyn Store>) {
    let store = &*store;
    // (end seconds, requests): the newest end and the most requests are in
    // different writes, and one write is newer than some and smaller.
    let writes: [(i64, u64); 4] = [(30, 8), (90, 3), (60, 8), (45, 12)];
    let want = (90, 12);
    let orders = permutations(writes.len());
    assert_eq!(orders.len(), 24);
    let who = Who::new();
    let rows_of_order: Vec<Vec<_>> = orders
        .iter()
        .map(|_| (0..3).map(|_| row(who, Path, "code", T0, T0, 0)).collect())
        .collect();
    // Row `k` of a write: the write's values shifted by k, so rows differ.
    let write_for = |rows: &[tally_domain::appstats::StatsReport], (end, requests): (i64, u64)| {
        let rows = rows
            .iter()
            .enumerate()
            .map(|(k, r)| later(r, T0 + secs(end + k as i64), requests + k as u64))
            .collect();
        write_of(rows, 2)
    };
    for (order, rows) in orders.iter().zip(&rows_of_order) {
        for &w in order {
            store.write_app_stats(&write_for(rows, writes[w])).await.unwrap();
        }
    }
    let expected: Vec<_> = rows_of_order
        .iter()
        .flat_map(|rows| {
            rows.iter()
                .enumerate()
                .map(|(k, r)| stored(&later(r, T0 + secs(want.0 + k as i64), want.1 + k as u64)))
        })
        .collect();
    assert_eq!(by_key(all_rows(store).await), by_key(expected.clone()));

    for prefix in 1..=writes.len() {
        for rows in &rows_of_order {
            for &w in &writes[..prefix] {
                store.write_app_stats(&write_for(rows, w)).await.unwrap();
            }
        }
        assert_eq!(
            by_key(all_rows(store).await),
            by_key(expected.clone()),
            "replaying the first {prefix} writes changed the store"
        );
    }
}

/// Every order of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for rest in permutations(n - 1) {
        for at in 0..=rest.len() {
            let mut order = rest.clone();
            order.insert(at, n - 1);
            out.push(order);
        }
    }
    out
}

/// Writing the same thing twice leaves the store as the first write did.
pub async fn replaying_a_write_changes_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let people: Vec<Who> = (0..10).map(|_| Who::new()).collect();
    let rows: Vec<_> = (0..50)
        .map(|i| {
            let start = T0 + secs(7 * i);
            let method = [Path, Subdomain, Terminal][i as usize % 3];
            row(
                people[i as usize % 10],
                method,
                &format!("app{}", i % 4),
                start,
                start + secs(90),
                i as u64,
            )
        })
        .collect();
    let write = write_of(rows, 8);

    store.write_app_stats(&write).await.unwrap();
    let before = observe(store, &people).await;
    assert_eq!(before.0, by_key(write.rows.iter().map(stored).collect()));

    store.write_app_stats(&write).await.unwrap();
    store.write_app_stats(&write).await.unwrap();
    assert_eq!(
        observe(store, &people).await,
        before,
        "a replayed write changed the store"
    );
}

type Observed = (
    Vec<tally_domain::appstats::StatsReport>,
    Vec<tally_domain::ports::AppUsage>,
    Vec<Option<time::OffsetDateTime>>,
);

/// Everything a reader can see of these people's app stats.
async fn observe(store: &dyn Store, people: &[Who]) -> Observed {
    let mut last_used = Vec::new();
    for who in people {
        last_used.push(store.workspace_last_used(who.workspace).await.unwrap());
    }
    let usage = store.app_usage(all_time()).await.unwrap();
    (by_key(all_rows(store).await), usage, last_used)
}

/// Row counts that are exact multiples of the batch size, one over, one
/// under, and batch size 1: every row lands and every workspace is bumped
/// (docs/rules.md#last-used; batching must not lose any of them).
pub async fn batch_boundaries_write_every_row_and_bump_every_workspace(store: Arc<dyn Store>) {
    let store = &*store;
    let mut expected = Vec::new();
    let cases = [
        (4, 8),
        (4, 9),
        (4, 4),
        (4, 3),
        (1, 1),
        (1, 5),
        (1024, 2048),
        (1024, 1025),
    ];
    for (case, (batch_size, n)) in cases.into_iter().enumerate() {
        let start = T0 + mins(case as i64);
        let rows: Vec<_> = (0..n)
            .map(|i| {
                row(
                    Who::new(),
                    Path,
                    "code",
                    start,
                    start + secs(1 + i as i64 % 50),
                    1 + i as u64,
                )
            })
            .collect();
        let write = write_of(rows, batch_size);
        assert_eq!(write.last_used.len(), n);
        store.write_app_stats(&write).await.unwrap();
        for &(workspace, at) in &write.last_used {
            assert_eq!(
                store.workspace_last_used(workspace).await.unwrap(),
                Some(micros(at)),
                "batch size {batch_size}, {n} rows: a workspace's last-used time was not set"
            );
        }
        expected.extend(write.rows.iter().map(stored));
        assert_eq!(
            by_key(all_rows(store).await),
            by_key(expected.clone()),
            "batch size {batch_size}, {n} rows"
        );
    }
}

/// Two rows with the same key in one write are refused whole, naming both
/// rows, and change nothing: PostgreSQL cannot upsert a key twice in one
/// statement, so the reporter merges duplicates before writing.
pub async fn duplicates_in_one_write_are_refused_whole(store: Arc<dyn Store>) {
    let store = &*store;
    for batch_size in [1, 2, 16] {
        let start = T0 + mins(batch_size as i64);
        let e = |s| start + secs(s);
        let existing = row(Who::new(), Path, "d", start, e(2), 10);
        store
            .write_app_stats(&write_of(vec![existing.clone()], batch_size))
            .await
            .unwrap();
        let fresh = row(Who::new(), Path, "a", start, e(2), 5);
        let rows = vec![
            fresh.clone(),
            later(&existing, e(5), 15),
            row(Who::new(), Path, "b", start, e(3), 4),
            later(&existing, e(6), 16),
        ];
        let err = store
            .write_app_stats(&write_of(rows, batch_size))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
        assert!(text.contains("rows 1 and 3"), "{text}");
        assert!(text.contains("same (user, agent, session)"), "{text}");

        let got = by_key(
            all_rows(store)
                .await
                .into_iter()
                .filter(|r| r.session_started_at == start)
                .collect(),
        );
        assert_eq!(got, by_key(vec![stored(&existing)]), "batch size {batch_size}");
    }
}

/// A write with one bad row is refused whole, naming the problem, and
/// changes nothing: not the rows before it, not the last-used times.
pub async fn invalid_writes_change_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let existing = row(Who::new(), Path, "code", T0, T0 + secs(10), 5);
    store
        .write_app_stats(&write_of(vec![existing.clone()], 4))
        .await
        .unwrap();
    let before_rows = all_rows(store).await;
    let existing_used = store.workspace_last_used(existing.workspace_id).await.unwrap();

    let fresh = row(Who::new(), Subdomain, "8080", T0, T0 + secs(30), 3);
    let bump = later(&existing, T0 + mins(5), 50);
    let start = T0 + mins(1);
    let mut open = row(Who::new(), Path, "x", start, start, 1);
    open.session_ended_at = None;
    let backwards = row(Who::new(), Path, "x", start, start - secs(1), 1);
    let huge = row(Who::new(), Path, "x", start, start + secs(1), i64::MAX as u64 + 1);

    let cases = [
        (open, 1, "session_ended_at", "a row without an end time"),
        (backwards, 1, "session_ended_at", "a row ending before it starts"),
        (huge, 1, "requests", "a request count above i64::MAX"),
        (fresh.clone(), 0, "batch_size", "batch size 0"),
    ];
    for (bad, batch_size, field, what) in cases {
        // Valid rows first, so earlier batches would have landed already.
        let write = write_of(vec![fresh.clone(), bump.clone(), bad], batch_size);
        assert_invalid(store.write_app_stats(&write).await, field, what);
        assert_eq!(all_rows(store).await, before_rows, "{what}: rows changed");
        assert_eq!(
            store.workspace_last_used(existing.workspace_id).await.unwrap(),
            existing_used,
            "{what}: last used moved"
        );
        assert_eq!(
            store.workspace_last_used(fresh.workspace_id).await.unwrap(),
            None,
            "{what}: last used set"
        );
    }

    // The edges are valid: a zero-length session, and i64::MAX requests.
    let zero = row(Who::new(), Path, "zero", start, start, 0);
    let max = row(Who::new(), Path, "max", start, start + secs(1), i64::MAX as u64);
    store
        .write_app_stats(&write_of(vec![zero.clone(), max.clone()], 1))
        .await
        .unwrap();
    let mut want = before_rows;
    want.extend([stored(&zero), stored(&max)]);
    assert_eq!(by_key(all_rows(store).await), by_key(want));
}

/// A workspace's last-used time never moves backwards, and an unknown
/// workspace has none.
pub async fn last_used_moves_forward_only(store: Arc<dyn Store>) {
    let store = &*store;
    let who = Who::new();
    let bump = |at: time::OffsetDateTime, also: Vec<(Uuid, time::OffsetDateTime)>| {
        let mut last_used = vec![(who.workspace, at)];
        last_used.extend(also);
        AppStatsWrite {
            rows: vec![row(who, Path, "code", T0, at, 1)],
            batch_size: 16,
            last_used,
        }
    };
    let used = || store.workspace_last_used(who.workspace);
    assert_eq!(used().await.unwrap(), None, "never used");

    store.write_app_stats(&bump(T0 + mins(20), vec![])).await.unwrap();
    assert_eq!(used().await.unwrap(), Some(T0 + mins(20)));
    store.write_app_stats(&bump(T0 + mins(10), vec![])).await.unwrap();
    assert_eq!(used().await.unwrap(), Some(T0 + mins(20)), "moved backwards");
    store.write_app_stats(&bump(T0 + mins(30), vec![])).await.unwrap();
    assert_eq!(used().await.unwrap(), Some(T0 + mins(30)), "did not move forward");
    store.write_app_stats(&bump(T0 + mins(30), vec![])).await.unwrap();
    assert_eq!(used().await.unwrap(), Some(T0 + mins(30)));

    // Listed twice in one write: the later time wins, in either order.
    let twice = bump(T0 + mins(50), vec![(who.workspace, T0 + mins(40))]);
    store.write_app_stats(&twice).await.unwrap();
    assert_eq!(used().await.unwrap(), Some(T0 + mins(50)));
    let twice = bump(T0 + mins(55), vec![(who.workspace, T0 + mins(60))]);
    store.write_app_stats(&twice).await.unwrap();
    assert_eq!(used().await.unwrap(), Some(T0 + mins(60)));

    assert_eq!(store.workspace_last_used(Uuid::new_v4()).await.unwrap(), None);
}

/// Timestamps keep whole microseconds (PostgreSQL's precision); digits
/// below that are dropped before the merge compares them.
pub async fn timestamps_are_stored_to_the_microsecond(store: Arc<dyn Store>) {
    let store = &*store;
    let start = T0 + time::Duration::nanoseconds(1_123_456_789);
    let end = T0 + time::Duration::nanoseconds(2_000_000_999);
    let first = row(Who::new(), Terminal, "", start, end, 4);
    store
        .write_app_stats(&write_of(vec![first.clone()], 16))
        .await
        .unwrap();
    let rows = all_rows(store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].session_started_at,
        T0 + time::Duration::microseconds(1_123_456)
    );
    assert_eq!(rows[0].session_ended_at, Some(T0 + secs(2)));
    assert_eq!(
        store.workspace_last_used(first.workspace_id).await.unwrap(),
        Some(T0 + secs(2))
    );

    // The same untruncated end again, more requests: the incoming end is
    // truncated before the two are compared, so the end stays at 2 s.
    let replay = later(&first, end, 6);
    store.write_app_stats(&write_of(vec![replay], 16)).await.unwrap();
    let rows = all_rows(store).await;
    assert_eq!(
        (rows[0].session_ended_at, rows[0].requests),
        (Some(T0 + secs(2)), 6)
    );
}
