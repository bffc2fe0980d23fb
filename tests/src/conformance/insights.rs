//! The read side: app usage over a range, stored rows over a range.

use std::sync::Arc;

use tally_domain::appstats::AccessMethod::{self, Path, Subdomain, Terminal};
use tally_domain::ports::{AppUsage, Store, TimeRange};
use uuid::Uuid;

use super::fixtures::*;

fn usage(
    method: AccessMethod,
    slug: &str,
    users: u64,
    sessions: u64,
    requests: u64,
    minutes: u64,
) -> AppUsage {
    AppUsage {
        access_method: method,
        slug_or_port: slug.to_owned(),
        unique_users: users,
        sessions,
        requests,
        session_micros: minutes * 60_000_000,
    }
}

/// Per-app numbers over the sessions overlapping a range, time clipped to
/// it; most users first, then most time, then method name and slug (byte
/// order: "B" before "a").
pub async fn app_usage_counts_users_sessions_requests_and_clipped_time(store: Arc<dyn Store>) {
    let store = &*store;
    let range = TimeRange::new(T0 + mins(60), T0 + mins(120)).unwrap();
    let (from, to) = (range.from, range.to);
    let [u1, u2, u3] = [Who::new(), Who::new(), Who::new()];
    let rows = vec![
        // code: u1 twice, u2 once; one of u1's started before the range,
        // u2's ends after it.
        row(u1, Path, "code", from - mins(10), from + mins(20), 10),
        row(u1, Path, "code", from + mins(30), from + mins(40), 5),
        row(u2, Path, "code", from + mins(50), to + mins(30), 7),
        // 8080: as many users as code but more time; u3's session ends
        // exactly where the range begins: it counts, with no time.
        row(u1, Subdomain, "8080", from, from + mins(50), 1),
        row(u3, Subdomain, "8080", from - mins(120), from, 3),
        // One user, five minutes each: ordered by method, then slug bytes.
        row(u3, Path, "b", from + mins(1), from + mins(6), 1),
        row(u3, Path, "a", from + mins(2), from + mins(7), 1),
        row(u3, Path, "B", from + mins(4), from + mins(9), 1),
        row(u3, Subdomain, "a", from + mins(3), from + mins(8), 1),
        row(u2, Terminal, "", from + mins(10), from + mins(15), 2),
        // Outside the range: ended just before it, started at its end.
        row(
            u1,
            Path,
            "gone",
            from - mins(60),
            from - time::Duration::microseconds(1),
            100,
        ),
        row(u1, Path, "later", to, to + mins(10), 100),
        row(u3, Path, "code", to + mins(1), to + mins(2), 100),
    ];
    store.write_app_stats(&write_of(rows, 5)).await.unwrap();

    let want = vec![
        usage(Subdomain, "8080", 2, 2, 4, 50),
        usage(Path, "code", 2, 3, 22, 40),
        usage(Path, "B", 1, 1, 1, 5),
        usage(Path, "a", 1, 1, 1, 5),
        usage(Path, "b", 1, 1, 1, 5),
        usage(Subdomain, "a", 1, 1, 1, 5),
        usage(Terminal, "", 1, 1, 2, 5),
    ];
    assert_eq!(store.app_usage(range).await.unwrap(), want);

    // The next hour sees u2's long session, u3's later one and "later".
    let next = TimeRange::new(to, to + mins(60)).unwrap();
    let want = vec![
        usage(Path, "code", 2, 2, 107, 31),
        usage(Path, "later", 1, 1, 100, 10),
    ];
    assert_eq!(store.app_usage(next).await.unwrap(), want);

    // A range with nothing in it.
    let empty = TimeRange::new(T0 - mins(600), T0 - mins(500)).unwrap();
    assert_eq!(store.app_usage(empty).await.unwrap(), vec![]);

    // Range bounds are exact (nanoseconds) against stored microseconds, so
    // they act as if rounded up to a whole microsecond; clipped time is
    // whole microseconds.
    let start = T0 + mins(1000);
    let who = Who::new();
    let short = row(who, Terminal, "clip", start, start + mins(1), 1);
    store.write_app_stats(&write_of(vec![short], 5)).await.unwrap();
    let ns = time::Duration::nanoseconds;
    let clip = |from, to| async move {
        let got = store.app_usage(TimeRange::new(from, to).unwrap()).await.unwrap();
        assert!(got.len() <= 1, "{got:?}");
        got.first().map(|u| u.session_micros)
    };
    let end = start + mins(1);
    assert_eq!(
        clip(end - ns(1_500), end + mins(1)).await,
        Some(1),
        "starts 1.5 µs before the end"
    );
    assert_eq!(
        clip(end + ns(1), end + mins(1)).await,
        None,
        "starts 1 ns after the end"
    );
    assert_eq!(clip(end, end + mins(1)).await, Some(0), "starts at the end");
    assert_eq!(
        clip(start - mins(1), start + ns(500)).await,
        Some(1),
        "ends 500 ns after the start"
    );
    assert_eq!(clip(start - mins(1), start).await, None, "ends at the start");
}

/// Stored rows of sessions overlapping a range: oldest start first, then by
/// session id, user id and agent id; at most `limit`.
pub async fn app_stats_lists_overlapping_rows_oldest_first(store: Arc<dyn Store>) {
    let store = &*store;
    let range = TimeRange::new(T0, T0 + mins(60)).unwrap();
    let with_session = |mut r: tally_domain::appstats::StatsReport, id: u128| {
        r.session_id = Uuid::from_u128(id);
        r
    };
    let (low, high) = (Uuid::from_u128(1), Uuid::from_u128(2));
    let user = |id| Who {
        user: id,
        ..Who::new()
    };
    let rows = vec![
        with_session(row(Who::new(), Path, "a", T0 + mins(2), T0 + mins(3), 1), 10),
        with_session(row(Who::new(), Path, "a", T0 + mins(1), T0 + mins(3), 2), 30),
        with_session(row(Who::new(), Path, "a", T0 + mins(1), T0 + mins(3), 3), 20),
        with_session(row(user(high), Path, "a", T0 - mins(5), T0, 4), 40),
        with_session(row(user(low), Path, "a", T0 - mins(5), T0, 5), 40),
        // Outside: ends before, starts at the end.
        with_session(row(Who::new(), Path, "a", T0 - mins(5), T0 - secs(1), 6), 50),
        with_session(row(Who::new(), Path, "a", T0 + mins(60), T0 + mins(61), 7), 60),
    ];
    store.write_app_stats(&write_of(rows.clone(), 3)).await.unwrap();

    let want: Vec<_> = [4, 3, 2, 1, 0].iter().map(|&i| stored(&rows[i])).collect();
    assert_eq!(store.app_stats(range, 100).await.unwrap(), want);
    assert_eq!(store.app_stats(range, 2).await.unwrap(), want[..2].to_vec());
    assert_eq!(store.app_stats(range, 0).await.unwrap(), vec![]);
}
