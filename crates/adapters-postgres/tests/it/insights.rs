use tally_domain::appstats::AccessMethod;
use tally_domain::ports::{AppStatsStore, AppStatsWrite, InsightsStore, TimeRange, UsageStore};
use tally_domain::usage::Intervals;
use time::Duration;

use super::{T0, fixture, id, session};

#[tokio::test]
async fn app_usage_counts_distinct_minutes_from_the_rollup() {
    let f = fixture().await;
    let s = &f.store;
    let mut rows = vec![
        session(id(1), id(10), "code", 0, 600, 5),      // [0, 600]
        session(id(1), id(10), "code", 100, 100, 1),    // same user, same minutes
        session(id(2), id(11), "code", -300, 400, 2),   // starts an hour before
        session(id(3), id(12), "jupyter", 500, 900, 7), // ends after the range
        session(id(4), id(13), "late", 1000, 10, 9),    // starts at `to`
        session(id(5), id(14), "early", -100, 100, 9),  // ends at `from`
    ];
    rows[3].access_method = AccessMethod::Subdomain;
    s.write_app_stats(&AppStatsWrite {
        rows,
        batch_size: 2,
        last_used: vec![],
    })
    .await
    .unwrap();
    let range = TimeRange::new(T0, T0 + Duration::seconds(1000)).unwrap();
    // The rollup answers once a tick has run; the range is widened to the
    // 17 minutes it touches.
    let minutes = Intervals::covering(range).unwrap();
    assert_eq!(s.app_usage_by_interval(&minutes).await.unwrap(), vec![]);
    s.tick_usage_rollup().await.unwrap();
    let usage = s.app_usage_by_interval(&minutes).await.unwrap();
    let figures: Vec<_> = usage
        .iter()
        .map(|a| {
            let t = a.total;
            (
                a.access_method,
                a.slug_or_port.as_str(),
                t.unique_users,
                t.sessions,
                t.requests,
                t.usage_seconds / 60,
            )
        })
        .collect();
    // code: user 1's minutes 0..10 once for both sessions, user 2's minutes
    // 0 and 1 (its session and requests count in the hour it started);
    // jupyter: minutes 8..17; "late" starts in minute 16, which the range
    // touches; "early" ends where the range starts.
    assert_eq!(
        figures,
        vec![
            (AccessMethod::Path, "code", 2, 2, 6, 12),
            (AccessMethod::Subdomain, "jupyter", 1, 1, 7, 9),
            (AccessMethod::Path, "late", 1, 1, 9, 1),
        ]
    );

    let stats = s.app_stats(range, 10).await.unwrap();
    let starts: Vec<_> = stats.iter().map(|r| r.session_started_at - T0).collect();
    assert_eq!(
        starts,
        [-300, -100, 0, 100, 500].map(Duration::seconds).to_vec(),
        "oldest start first, `to` excluded"
    );
    assert_eq!(s.app_stats(range, 2).await.unwrap(), stats[..2].to_vec());
    assert!(s.workspace_last_used(id(999)).await.unwrap().is_none());
}

/// Users get dense ordinals from 0, once each, whatever the ticks; packed
/// rows dropped and their days marked (what the migration that adds them
/// does) are rebuilt by the next tick to the same figures.
#[tokio::test]
async fn packed_day_rows_are_rebuilt_for_marked_days_with_dense_ordinals() {
    let f = fixture().await;
    let s = &f.store;
    let day = |d: i64| T0 + Duration::days(d);
    let range = TimeRange::new(day(0) - Duration::hours(10), day(3) - Duration::hours(10)).unwrap();
    let iv = tally_domain::usage::interval::intervals(range, tally_domain::usage::IntervalKind::Day).unwrap();
    for d in 0..3 {
        let rows: Vec<_> = (0..4u128)
            .map(|u| {
                session(
                    id(1 + u),
                    id(20 + u),
                    "code",
                    d * 86_400 + 600 * u as i64,
                    3000,
                    4,
                )
            })
            .collect();
        s.write_app_stats(&AppStatsWrite {
            rows,
            batch_size: 3,
            last_used: vec![],
        })
        .await
        .unwrap();
        s.tick_usage_rollup().await.unwrap();
    }
    let (lo, hi, n): (i32, i32, i64) =
        sqlx::query_as("SELECT min(ordinal), max(ordinal), count(*) FROM app_usage_users")
            .fetch_one(s.pool())
            .await
            .unwrap();
    assert_eq!((lo, hi, n), (0, 3, 4));
    let usage = s.app_usage_by_interval(&iv).await.unwrap();
    let active = s.active_users(&iv).await.unwrap();
    let top = s.user_activity(range, 10).await.unwrap();
    assert_eq!(usage[0].total.unique_users, 4);
    assert_eq!(active.intervals, vec![4, 4, 4]);

    for sql in [
        "DELETE FROM app_usage_app_days",
        "DELETE FROM app_usage_fleet_days",
        "INSERT INTO app_usage_packed_dirty (day) SELECT DISTINCT date_trunc('day', hour, 'UTC') FROM app_usage_hours",
    ] {
        sqlx::query(sql).execute(s.pool()).await.unwrap();
    }
    assert_eq!(s.active_users(&iv).await.unwrap().total, 0, "no packed rows");
    s.tick_usage_rollup().await.unwrap();
    assert_eq!(s.app_usage_by_interval(&iv).await.unwrap(), usage);
    assert_eq!(s.active_users(&iv).await.unwrap(), active);
    assert_eq!(s.user_activity(range, 10).await.unwrap(), top);
}

/// User activity over ranges that cut days on and off the quarter grid is
/// the reference, from the fleet days' detail; a fleet day without detail
/// (as packed before it existed, until the tick after the migration
/// rebuilds it) gives the same figures from its hourly rows.
#[tokio::test]
async fn user_activity_over_cut_days_needs_no_detail_from_an_older_schema() {
    let f = fixture().await;
    let s = &f.store;
    let at = |d: i64, m: i64| T0 + Duration::days(d) + Duration::minutes(m);
    let rows: Vec<_> = (0..3i64)
        .flat_map(|d| {
            (0..5u128).map(move |u| {
                let mut r = session(
                    id(1 + u),
                    id(20 + u),
                    "code",
                    d * 86_400 + 420 * u as i64,
                    2500,
                    4,
                );
                r.sessions = 1 + u as u64;
                r
            })
        })
        .collect();
    s.write_app_stats(&AppStatsWrite {
        rows,
        batch_size: 4,
        last_used: vec![],
    })
    .await
    .unwrap();
    s.tick_usage_rollup().await.unwrap();
    let stored = s
        .app_stats_started_in(TimeRange::new(at(-1, 0), at(4, 0)).unwrap())
        .await
        .unwrap();
    let ranges = [
        // Quarter hours inside the sessions' hours, and whole days between.
        TimeRange::new(at(0, 15), at(2, 45)).unwrap(),
        // Off the quarter grid: the cut hours come from the hourly rows.
        TimeRange::new(at(0, 7), at(1, 37)).unwrap(),
        TimeRange::new(at(1, -600), at(2, -600)).unwrap(),
    ];
    let mut want = Vec::new();
    for r in ranges {
        let iv = Intervals::single(r).unwrap();
        let got = s.user_activity(r, 10).await.unwrap();
        assert_eq!(
            got,
            tally_domain::usage::reference::user_activity(&stored, &iv, 10),
            "{r:?}"
        );
        assert!(!got.is_empty());
        want.push(got);
    }
    sqlx::query("UPDATE app_usage_fleet_days SET detail = NULL")
        .execute(s.pool())
        .await
        .unwrap();
    for (r, want) in ranges.into_iter().zip(want) {
        assert_eq!(
            s.user_activity(r, 10).await.unwrap(),
            want,
            "{r:?} without detail"
        );
    }
}
