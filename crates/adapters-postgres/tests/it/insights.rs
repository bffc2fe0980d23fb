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
