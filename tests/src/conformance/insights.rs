//! The read side: app usage over a range (from the rollup), stored rows over
//! a range.

use std::sync::Arc;

use futures::TryStreamExt;
use tally_domain::appstats::AccessMethod::{self, Path, Subdomain, Terminal};
use tally_domain::ports::{Store, TimeRange};
use tally_domain::usage::export::export_app_stats;
use tally_domain::usage::{AppUsageSeries, Intervals, UsageFigures, reference};
use uuid::Uuid;

use super::fixtures::*;

/// An app's figures over the range: (method, slug, users, sessions,
/// requests, distinct user-minutes).
fn figures(app: &AppUsageSeries) -> (AccessMethod, &str, u64, u64, u64, u64) {
    let UsageFigures {
        usage_seconds,
        sessions,
        requests,
        unique_users,
    } = app.total;
    (
        app.access_method,
        app.slug_or_port.as_str(),
        unique_users,
        sessions,
        requests,
        usage_seconds / 60,
    )
}

/// App usage over one range, after a tick, checked against the reference
/// over the stored rows as well.
async fn usage_over(store: &dyn Store, range: TimeRange) -> Vec<AppUsageSeries> {
    let iv = Intervals::covering(range).unwrap();
    let got = store.app_usage_by_interval(&iv).await.unwrap();
    let wide = TimeRange::new(range.from - mins(24 * 60), range.to).unwrap();
    let rows: Vec<_> = export_app_stats(store, wide).try_collect().await.unwrap();
    assert_eq!(got, reference::app_usage(&rows, &iv), "{range:?}");
    got
}

/// Per-app figures over a range: a minute counts once per user however many
/// sessions touch it, and only inside the range; sessions and requests count
/// in the range that holds the UTC hour their session started in; most users
/// first, then most usage, then method name and slug (byte order: "B"
/// before "a").
pub async fn app_usage_counts_distinct_minutes_users_sessions_and_requests(store: Arc<dyn Store>) {
    let store = &*store;
    let range = TimeRange::new(T0 + mins(60), T0 + mins(120)).unwrap();
    let (from, to) = (range.from, range.to);
    let [u1, u2, u3] = [Who::new(), Who::new(), Who::new()];
    let rows = vec![
        // code: u1 twice, u2 once; one of u1's started in the hour before
        // (its minutes count here, its session and requests there), u2's
        // ends after the range.
        row(u1, Path, "code", from - mins(10), from + mins(20), 10),
        row(u1, Path, "code", from + mins(30), from + mins(40), 5),
        row(u2, Path, "code", from + mins(50), to + mins(30), 7),
        // u1 again, in a second tab over minutes already counted: no minute
        // more, one session more.
        row(u1, Path, "code", from + mins(32), from + mins(38), 1),
        // 8080: fewer users than code but more time; u3's session ends
        // exactly where the range begins: no minute in it, and it started
        // in an earlier hour, so it does not count.
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
    let whole = Intervals::single(range).unwrap();
    assert_eq!(
        store.app_usage_by_interval(&whole).await.unwrap(),
        vec![],
        "before a tick"
    );
    store.tick_usage_rollup().await.unwrap();

    let got = usage_over(store, range).await;
    assert_eq!(
        got.iter().map(figures).collect::<Vec<_>>(),
        vec![
            (Path, "code", 2, 3, 13, 40),
            (Subdomain, "8080", 1, 1, 1, 50),
            (Path, "B", 1, 1, 1, 5),
            (Path, "a", 1, 1, 1, 5),
            (Path, "b", 1, 1, 1, 5),
            (Subdomain, "a", 1, 1, 1, 5),
            (Terminal, "", 1, 1, 2, 5),
        ]
    );

    // The next hour sees the rest of u2's long session (its session counted
    // in the hour before), u3's later one and "later".
    let next = TimeRange::new(to, to + mins(60)).unwrap();
    let got = usage_over(store, next).await;
    assert_eq!(
        got.iter().map(figures).collect::<Vec<_>>(),
        vec![(Path, "code", 2, 1, 100, 31), (Path, "later", 1, 1, 100, 10)]
    );

    // A range with nothing in it.
    let empty = TimeRange::new(T0 - mins(600), T0 - mins(500)).unwrap();
    assert_eq!(usage_over(store, empty).await, vec![]);

    // A range off whole minutes counts the whole minutes it touches.
    let start = T0 + mins(1000);
    let who = Who::new();
    let short = row(who, Terminal, "clip", start, start + mins(1), 1);
    store.write_app_stats(&write_of(vec![short], 5)).await.unwrap();
    store.tick_usage_rollup().await.unwrap();
    let ns = time::Duration::nanoseconds;
    let minutes_in = |from, to| async move {
        let got = usage_over(store, TimeRange::new(from, to).unwrap()).await;
        assert!(got.len() <= 1, "{got:?}");
        got.first().map(|u| u.total.usage_seconds / 60)
    };
    let end = start + mins(1);
    assert_eq!(
        minutes_in(end - ns(1_500), end + mins(1)).await,
        Some(1),
        "starts 1.5 µs before the end: touches the session's minute"
    );
    assert_eq!(
        minutes_in(end + ns(1), end + mins(1)).await,
        None,
        "starts after the end"
    );
    assert_eq!(
        minutes_in(start - mins(1), start + ns(500)).await,
        Some(1),
        "ends 500 ns after the start"
    );
    assert_eq!(
        minutes_in(start - mins(1), start).await,
        None,
        "ends at the start"
    );
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
